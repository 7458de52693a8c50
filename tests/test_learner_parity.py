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
    assert again.returncode == 0 and "training" not in again.stdout
    assert json.loads(summary.read_text())["jobs"] == report["jobs"]


@pytest.mark.parametrize("env, entropy, scale, epochs, minibatches", [
    ("brax_ant", 1e-2, 10.0, 4, 16),          # brax's notebook for the ant (minibatches halved with the envs)
    ("humanoid_walk", 1e-3, 0.1, 8, 32),      # brax's notebook for the humanoid
])
def test_ours_takes_the_notebook_settings_of_the_body(env, entropy, scale, epochs, minibatches):
    from benchmarks.learner_parity import our_config

    config = our_config(env, "locomotion", seed=0, num_envs=256, steps=10 * 256 * 20)
    assert (config.sub.entropy_coef, config.reward_scale) == (entropy, scale)
    assert (config.sub.epochs, config.sub.num_minibatches) == (epochs, minibatches)
    assert config.env == env and config.num_updates == 10 and config.envs_per_slot * config.num_slots == 256


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
