"""`python -m benchmarks.learner_parity`: bad input exits 2 before anything trains (default tier);
a smoke run of both learners on Brax's ant, and a rerun that continues instead of training again
(slow tier)."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "benchmarks.learner_parity", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, says", [
    (["--envs", "cheetah"], "--envs: unknown 'cheetah'"),
    (["--learners", "sb3"], "--learners: unknown 'sb3'"),
    (["--recipe", "fast"], "--recipe: unknown 'fast'"),
    (["--envs-count", "100"], "multiple of 128"),
    (["--seeds", "a"], "--seeds must be comma-separated integers"),
    (["--envs", "ant_maze", "--reward-direction", "wall"], "--reward-direction: unknown 'wall'"),
    (["--envs", "ant_twowalk", "--reward-direction", "path"], "--reward-direction path applies to ant_maze only"),
])
def test_bad_input_exits_2_naming_the_option(tmp_path, args, says):
    done = run("--out", str(tmp_path / "out"), *args, timeout=120)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_both_learners_train_on_the_same_env_and_a_rerun_continues(tmp_path):
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    args = ["--envs", "brax_ant", "--steps", "7680", "--eval-every", "2560", "--envs-count", "128",
            "--eval-episodes", "2", "--out", str(out), "--summary", str(summary)]
    first = run(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(summary.read_text())
    jobs = {job["learner"]: job for job in report["jobs"]}
    assert set(jobs) == {"ours", "brax"} and jobs["ours"]["env_steps"] == 7680
    assert [p["env_steps"] for p in jobs["ours"]["curve"]] == [0, 2560, 5120, 7680]
    assert all(p["episode_steps"] > 0 for job in jobs.values() for p in job["curve"])
    again = run(*args)
    assert again.returncode == 0 and ": training " not in again.stdout     # no job trained again
    assert json.loads(summary.read_text())["jobs"] == report["jobs"]


@pytest.mark.parametrize("env, entropy, scale, epochs, minibatches, brax_batch, unroll", [
    ("brax_ant", 1e-2, 10.0, 4, 16, 64, 5),          # brax's ant notebook: batch = envs / 4, unroll 5
    ("humanoid_walk", 1e-3, 0.1, 8, 32, 128, 10),    # brax's humanoid notebook: batch = envs / 2, unroll 10
])
def test_ours_takes_the_notebook_settings_and_brax_samples_per_iteration(env, entropy, scale, epochs, minibatches,
                                                                          brax_batch, unroll):
    from benchmarks.learner_parity import our_config

    config = our_config(env, "locomotion", seed=0, num_envs=256, steps=10 ** 7)
    assert (config.sub.entropy_coef, config.reward_scale) == (entropy, scale)
    assert (config.sub.epochs, config.sub.num_minibatches) == (epochs, minibatches)
    assert config.env == env and config.envs_per_slot * config.num_slots == 256
    # brax's iteration: `minibatches` minibatches of batch x unroll samples; ours takes as many per update
    assert config.env_steps_per_update == brax_batch * unroll * minibatches
    assert config.env_steps_per_update // config.sub.num_minibatches == brax_batch * unroll
    assert config.num_updates == 10 ** 7 // (brax_batch * unroll * minibatches)


def _stale_job(out, env="humanoid_walk"):
    """A finished job of ours under today's settings but 20-step windows, as results of older versions hold."""
    import dataclasses

    from benchmarks.learner_parity import our_config

    today = our_config(env, "locomotion", seed=0, num_envs=1024, steps=20_000_000)
    old = dataclasses.replace(today, steps_per_slot=128 * 20)
    folder = out / f"{env}_ours_s0"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"config": old.to_dict(), "curve": []}))
    return folder


def test_a_job_saved_under_other_settings_is_named_and_a_longer_budget_is_not(tmp_path):
    import types

    from benchmarks.learner_parity import Job, TaskShaping, changed_jobs

    folder = _stale_job(tmp_path)
    args = types.SimpleNamespace(out=tmp_path, recipe="locomotion", envs_count=1024, steps=20_000_000,
                                 shaping=TaskShaping())
    jobs = [Job("humanoid_walk", "ours", 0), Job("humanoid_walk", "brax", 0), Job("humanoid_walk", "ours", 1)]
    problems = changed_jobs(jobs, args)
    assert len(problems) == 1 and str(folder) in problems[0] and "steps_per_slot: 2560 -> 20480" in problems[0]
    (folder / "result.json").write_text(json.dumps({"config": json.loads((folder / "result.json").read_text())[
        "config"] | {"steps_per_slot": 20480, "num_updates": 1}, "curve": []}))
    assert changed_jobs(jobs, args) == []         # only the budget differs: the job continues


def test_the_command_refuses_a_stale_job_with_exit_2_before_writing(tmp_path):
    folder = _stale_job(tmp_path / "out")
    before = sorted(p.name for p in folder.iterdir())
    done = run("--envs", "humanoid_walk", "--learners", "ours", "--steps", "20000000", "--out", str(tmp_path / "out"),
               "--summary", str(tmp_path / "summary.json"), timeout=300)
    assert done.returncode == 2 and "steps_per_slot: 2560 -> 20480" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == before and not (tmp_path / "summary.json").exists()


def test_an_interrupted_brax_curve_is_kept_beside_the_new_attempt_never_overwritten(tmp_path):
    from benchmarks.learner_parity import _keep_interrupted_curve

    (tmp_path / "curve.json").write_text("[1]")
    _keep_interrupted_curve(tmp_path)
    (tmp_path / "curve.json").write_text("[2]")
    _keep_interrupted_curve(tmp_path)
    _keep_interrupted_curve(tmp_path)      # nothing left to keep: a no-op
    kept = sorted(path.name for path in tmp_path.iterdir())
    assert kept == ["curve.interrupted-1.json", "curve.interrupted-2.json"]
    assert [(tmp_path / name).read_text() for name in kept] == ["[1]", "[2]"]
