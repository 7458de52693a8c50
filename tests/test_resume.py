"""Runs that survive: a real SIGTERM mid-run, a crash during a save, and resuming to the same result.

The reference is an uninterrupted run of the same configuration; a stopped-and-resumed run must
match it bit for bit: every metrics.csv value except the timings, and the whole final TrainState.
"""

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import moving_bandits
from mlsh_jax import load_run
from mlsh_jax.metrics_log import TIMING_COLUMNS
from mlsh_jax.resume import find_resume_point
from mlsh_jax.run import train
from tests.helpers.messages import user_message

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Smoke shapes, long enough (a few ms per update) to be stopped in the middle.
NUM_UPDATES, CHECKPOINT_EVERY = 300, 100
CLI_SETTINGS = ["--preset", "smoke", "--set", f"num_updates={NUM_UPDATES}",
                "--set", f"checkpoint_every={CHECKPOINT_EVERY}", "--no-baseline", "--no-progress"]


def config():
    return dataclasses.replace(moving_bandits.PRESETS["smoke"](), num_updates=NUM_UPDATES,
                               checkpoint_every=CHECKPOINT_EVERY)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of `config()`."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(config(), out, progress=False)
    return out


def cli(*args, env=None, script=("-m", "experiments.moving_bandits")):
    return subprocess.run([sys.executable, *script, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)


def metric_rows(run):
    with open(run / "metrics.csv", newline="") as file:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(file)]


def assert_same_run(run, reference_run):
    assert metric_rows(run) == metric_rows(reference_run)
    a, b = load_run(run), load_run(reference_run)
    assert a.update == b.update == NUM_UPDATES
    leaves_a, leaves_b = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def wait_for_rows(path, count, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and len(path.read_text().splitlines()) > count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError(f"{path} never reached {count} rows")


def test_sigterm_stops_with_a_checkpoint_and_resume_matches_the_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "experiments.moving_bandits", *CLI_SETTINGS, "--out", str(out)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(out / "metrics.csv", 2, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "received SIGTERM" in stderr
    hint = f"to resume: python -m experiments.moving_bandits --out {out} --resume --no-baseline"
    assert hint in stderr  # the job ran without its baseline: so does its resume
    stopped_at = find_resume_point(out, config()).update
    assert 2 <= stopped_at < NUM_UPDATES
    assert len(metric_rows(out)) == stopped_at  # every update up to the checkpoint was logged
    assert not (out / "summary.json").exists()

    done = cli(*hint.split(" experiments.moving_bandits ")[1].split(), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert_same_run(out, reference)
    resumes = [json.loads(line) for line in (out / "resumes.jsonl").read_text().splitlines()]
    assert resumes == [dict(resumes[0], from_update=stopped_at, dropped_metric_rows=0, changes={})]
    assert json.loads((out / "summary.json").read_text())["updates"] == NUM_UPDATES


@pytest.mark.slow
def test_crash_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path, reference):
    out = tmp_path / "run"
    crash_env = dict(os.environ, CRASH_AT_UPDATE=str(2 * CHECKPOINT_EVERY))
    crashed = cli(*CLI_SETTINGS, "--out", str(out), env=crash_env,
                  script=(str(ROOT / "tests" / "helpers" / "crash_during_save.py"), "experiments.moving_bandits"))
    assert crashed.returncode == 3, crashed.stderr
    # The unfinished save is invisible; the previous checkpoint restores (and passes its fingerprint).
    point = find_resume_point(out, config())
    assert point.update == CHECKPOINT_EVERY
    assert point.dropped_rows > 0  # metrics logged after that checkpoint will be recomputed

    done = cli("--out", str(out), "--resume", "--no-baseline", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert_same_run(out, reference)


def test_allowed_config_change_on_resume_is_applied_and_recorded(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    longer = dataclasses.replace(config(), num_updates=NUM_UPDATES + 2)
    result = train(longer, out, resume=True, progress=False)
    assert result.resumed_from == NUM_UPDATES and int(result.state.update) == NUM_UPDATES + 2
    assert [int(r["update"]) for r in metric_rows(out)] == list(range(1, NUM_UPDATES + 3))
    assert json.loads((out / "config.json").read_text())["num_updates"] == NUM_UPDATES + 2
    entry = json.loads((out / "resumes.jsonl").read_text())
    assert entry["from_update"] == NUM_UPDATES and entry["changes"] == {"num_updates": [NUM_UPDATES, NUM_UPDATES + 2]}


def test_resuming_a_finished_run_changes_nothing(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = (out / "metrics.csv").read_text()
    result = train(config(), out, resume=True, progress=False)
    assert result.resumed_from == NUM_UPDATES and not result.preempted
    assert (out / "metrics.csv").read_text() == before
    assert not (out / "resumes.jsonl").exists()


def snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("args, expected", [
    (["--set", "sub.learning_rate=0.1"], "sub.learning_rate: 0.0003 -> 0.1"),
    (["--set", "num_slots=8"], "num_slots: 4 -> 8"),
    (["--preset", "paper"], "num_slots: 4 -> 10"),
    (["--seed", "3"], "seed: 0 -> 3"),
    (["--set", "num_updates=5"], "more than num_updates=5"),
    (["--set", "credit.rule=paper"], "credit.rule: 'responsibility' -> 'paper'"),
    (["--set", "credit.handover_update=5"], "credit.handover_update: 30 -> 5"),
    (["--set", "sub_network.activation=swish"], "sub_network.activation: 'tanh' -> 'swish'"),
    (["--set", "sub.advantage_normalization=slot"], "sub.advantage_normalization: 'minibatch' -> 'slot'"),
])
def test_resume_refuses_changes_that_alter_the_run(tmp_path, reference, args, expected):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(out)
    done = cli("--out", str(out), "--resume", "--no-progress", *args)
    assert done.returncode == 2, done.stderr
    assert user_message(done.stderr).startswith("error: ") and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(out) == before


def test_resume_without_a_run_is_refused(tmp_path):
    done = cli("--out", str(tmp_path / "missing"), "--resume")
    assert done.returncode == 2 and "nothing to resume" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "missing").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    done = cli("--out", str(tmp_path / "notes"), "--resume")
    assert done.returncode == 2 and "no config.json" in done.stderr
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["a.txt"]


def test_a_new_run_on_an_existing_run_points_at_resume(tmp_path, reference):
    done = cli("--out", str(reference), "--preset", "smoke")
    assert done.returncode == 2 and "--resume" in done.stderr


def test_a_resumed_run_that_logs_new_columns_widens_metrics_csv(tmp_path):
    """A run written by a version that logged fewer columns, resumed by one that logs more (e.g. the
    returns per kind of task): the old rows read NaN in the new columns, nothing is lost."""
    from conftest import tiny_config
    from mlsh_jax.metrics_log import MetricsLog, read_rows

    old = [{"update": u, "env_steps": u, "wall_s": float(u), "interval_s": 1.0, "env_steps_per_s": 1.0,
            "mean_return": float(u), "mean_return_post_warmup": float(u)} for u in (1, 2)]
    log = MetricsLog(tmp_path, tiny_config(), time.time(), previous_rows=old, progress=False, tensorboard=False)
    log.record(3, {"mean_return": 3.0, "mean_return_post_warmup": 3.0, "mean_return_by_task": np.array([4.0, 5.0])})
    log.record(4, {"mean_return": 6.0, "mean_return_post_warmup": 6.0, "mean_return_by_task": np.array([7.0, 8.0])})
    log.close()
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["update"] for r in rows] == [1, 2, 3, 4]
    assert [r["mean_return"] for r in rows] == [1.0, 2.0, 3.0, 6.0]
    assert np.isnan(rows[0]["mean_return_by_task_0"]) and np.isnan(rows[1]["mean_return_by_task_1"])
    assert [r["mean_return_by_task_1"] for r in rows[2:]] == [5.0, 8.0]
