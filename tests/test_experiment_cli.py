"""The moving-bandits experiment end to end (smoke preset), its run contract, loading a run back,
and bad input: exit code 2 with a clear message before any compile or file write."""

import csv
import json
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from experiments import common, moving_bandits
from mlsh_jax import RunLoadError, load_run
from mlsh_jax.config import MLSHConfig
from tests.helpers.messages import user_message


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    summary = moving_bandits.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    return out, summary


def test_smoke_run_writes_the_run_contract(smoke_run):
    out, summary = smoke_run
    for name in ("config.json", "metrics.csv", "summary.json", "learning_curve.png", "subpolicies.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]
    config = MLSHConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config == moving_bandits.PRESETS["smoke"]()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["update"]) for r in rows] == [1, 2, 3]
    for column in ("env_steps", "wall_s", "mean_return", "mean_return_post_warmup", "sub_usage_0"):
        assert column in rows[0]
    assert int(rows[-1]["env_steps"]) == 3 * config.env_steps_per_update
    saved = json.loads((out / "summary.json").read_text())
    assert "subpolicy_behaviour" in saved and "baseline_shared" in saved
    assert len(saved["subpolicy_behaviour"]["fraction_ending_at_goal_slot"]) == config.num_subpolicies
    assert (out / "baseline_shared" / "metrics.csv").is_file()
    # The baseline, trained after MLSH in the same process, times itself: its clock starts at its own
    # training call, so the time before its first update is shorter than the whole MLSH run.
    shared_first = next(csv.DictReader(open(out / "baseline_shared" / "metrics.csv")))
    assert 0 <= float(shared_first["wall_s"]) - float(shared_first["interval_s"]) < float(rows[-1]["wall_s"])


def test_load_run_gives_config_and_a_policy(smoke_run):
    out, _ = smoke_run
    run = load_run(out)
    assert run.update == 3 and run.config.num_subpolicies == 2
    obs = np.array([[0.5, 0.5, 0.1, 0.2, 0.9, 0.8], [0.4, 0.6, 0.3, 0.3, 0.7, 0.1]], np.float32)
    result = run.act(obs, sub_index=1)
    assert result.action.shape == (2,) and result.master_choice.shape == (2,)
    assert set(np.asarray(result.action).tolist()) <= set(range(5))
    assert set(np.asarray(result.master_choice).tolist()) <= {0, 1}
    # The restored state is the trained one, not a fresh initialisation...
    fresh = run.trainer.init(jax.random.PRNGKey(run.config.seed))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(fresh.subs.params),
                                                      jax.tree.leaves(run.state.subs.params)))
    # ...and `act` is that state's sub-policy 1, greedy.
    sub_1 = jax.tree.map(lambda x: x[1], run.state.subs.params)
    logits = run.trainer.sub_model.apply(sub_1, run.trainer.normalize(run.state.obs_stats, obs))[0]
    np.testing.assert_array_equal(result.action, np.argmax(logits, -1))
    sampled = run.act(obs, sub_index=[0, 1], key=jax.random.PRNGKey(0))
    assert sampled.action.shape == (2,)
    with pytest.raises(ValueError, match="sub_index"):
        run.act(obs, sub_index=2)
    shared = load_run(out / "baseline_shared")
    assert shared.act(obs, sub_index=0).master_choice is None


def test_load_run_rejects_non_runs(tmp_path):
    with pytest.raises(RunLoadError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunLoadError, match="no config.json"):
        load_run(tmp_path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.moving_bandits", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, field", [
    ("num_subpolicies=0", "num_subpolicies"),
    ("macro_duration=0", "macro_duration"),
    ("episode_length=45", "episode_length"),
    ("joint_updates=0", "joint_updates"),
    ("sub.learning_rate=-1", "sub.learning_rate"),
    ("master.learning_rate=0", "master.learning_rate"),
    ("num_slots=0", "num_slots"),
    ("steps_per_slot=0", "steps_per_slot"),
    ("env=nope", "env"),
    ("subpolicy_observation=body", "subpolicy_observation"),
    ("no_such_field=1", "no_such_field"),
    ("credit.rule=bogus", "credit.rule"),
    ("credit.temperature=0", "credit.temperature"),
    ("credit.final_temperature=-1", "credit.final_temperature"),
    ("credit.anneal_updates=-5", "credit.anneal_updates"),
    ("credit.balance_iterations=-1", "credit.balance_iterations"),
    ("credit.unfreeze_interval=-1", "credit.unfreeze_interval"),
])
def test_bad_configuration_exits_2_before_writing(tmp_path, override, field):
    out = tmp_path / "run"
    done = run_cli("--preset", "smoke", "--out", str(out), "--set", override)
    assert done.returncode == 2, done.stderr
    assert user_message(done.stderr).startswith("error: ") and field in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_unknown_preset_and_existing_out_dir_are_refused(tmp_path):
    done = run_cli("--preset", "huge", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "unknown preset 'huge'" in done.stderr and "smoke" in done.stderr
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    done = run_cli("--preset", "smoke", "--out", str(existing))
    assert done.returncode == 2 and "already exists" in done.stderr
    assert (existing / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_both_warmup_and_joint_zero_is_refused():
    with pytest.raises(ValueError, match="warmup_updates \\+ joint_updates"):
        MLSHConfig(warmup_updates=0, joint_updates=0).validate()


def test_mlsh_and_its_baseline_as_two_jobs_then_resume_writes_the_summary(tmp_path, smoke_run, monkeypatch, capsys):
    """`--no-baseline` and `--baseline-only` split the pair into two jobs; `--resume` of the pair then
    trains nothing more and writes the summary, equal to the one of the pair trained in one job."""
    out = tmp_path / "pair"
    refused = run_cli("--out", str(out), "--baseline-only")
    assert refused.returncode == 2 and "start that run first" in refused.stderr and not out.exists()
    moving_bandits.main(["--preset", "smoke", "--out", str(out), "--no-progress", "--no-baseline"])
    assert not (out / "baseline_shared").exists()
    assert "baseline_shared" not in json.loads((out / "summary.json").read_text())
    for bad, says in ((["--preset", "smoke"], "drop --preset"),
                      (["--set", "sub.learning_rate=0.1"], "cannot change sub.learning_rate"),
                      (["--seed", "3"], "cannot change seed"),
                      (["--no-baseline"], "not allowed with argument")):
        refused = run_cli("--out", str(out), "--baseline-only", *bad)
        assert refused.returncode == 2 and says in refused.stderr, (bad, refused.stderr)
        assert "Traceback" not in refused.stderr and not (out / "baseline_shared").exists()

    with monkeypatch.context() as patch:   # a preempted baseline job says how to resume that job
        patch.setattr(common, "train", lambda *a, **k: types.SimpleNamespace(preempted=True))
        with pytest.raises(SystemExit) as stopped:
            moving_bandits.main(["--out", str(out), "--baseline-only", "--no-progress"])
    assert stopped.value.code == 0
    assert f"to resume: python -m experiments.moving_bandits --out {out} --baseline-only --resume" in capsys.readouterr().err
    headline = moving_bandits.main(["--out", str(out), "--baseline-only", "--no-progress"])
    assert set(headline) >= {"mean_return", "wall_s"}
    assert "baseline_shared" not in json.loads((out / "summary.json").read_text())
    again = run_cli("--out", str(out), "--baseline-only")       # never overwritten
    assert again.returncode == 2 and "already exists" in again.stderr

    summary = moving_bandits.main(["--out", str(out), "--resume", "--no-progress"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["baseline_shared"]["mean_return"] == headline["mean_return"]
    one_job = json.loads((smoke_run[0] / "summary.json").read_text())
    assert summary["mean_return"] == one_job["mean_return"]
    assert saved["baseline_shared"]["mean_return"] == one_job["baseline_shared"]["mean_return"]
    assert (out / "learning_curve.png").is_file()
