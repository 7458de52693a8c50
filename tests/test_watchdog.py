"""Runs that never hang unseen and can always be stopped: a stalled update or save is reported and
ends the process with exit code 75 (stacks written, the last checkpoint intact); a second SIGTERM /
SIGINT ends a process whose update hangs at once (143 / 130); a cluster whose process died or
stalled ends within the limit. Each then resumes to the uninterrupted run's result.

The stalls are made by `tests/helpers/stall.py`, which blocks the main thread at a chosen update the
way a computation hung inside XLA does. The runs that stall or are stopped are subprocesses (smoke
shapes): such a process ends with os._exit, which must not end pytest. The clusters run on the CPU
(gloo collectives).
"""

import argparse
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.usage import positive_seconds
from mlsh_jax.faults import STALL_EXIT_CODE, StallWatchdog, signal_exit_code
from mlsh_jax.resume import find_resume_point, read_run_config
from mlsh_jax.run import train
from tests.test_distributed import ONE_DEVICE, ROOT, assert_close_runs, free_port
from tests.test_distributed import single  # noqa: F401  (the fixture: 4 updates on 1 process, on the CPU)
from tests.test_resume import (CHECKPOINT_EVERY, CLI_SETTINGS, NUM_UPDATES, assert_same_run, config,  # noqa: F401
                               metric_rows,
                               reference, wait_for_rows)  # reference: the uninterrupted run (a fixture)

STALL_AT = NUM_UPDATES // 2                                          # 150 of 300 updates
LAST_SAVED = (STALL_AT - 1) // CHECKPOINT_EVERY * CHECKPOINT_EVERY   # 100: saved every 100 updates
LIMIT_S = 3.0              # --stall-limit of the stalled runs
SLACK_S = 3.0              # the watchdog looks every 0.5 s; the process then exits
MODULE = ["-m", "experiments.moving_bandits"]
STALL = [str(ROOT / "tests" / "helpers" / "stall.py"), "experiments.moving_bandits"]


def start(out, *args, stall=None, env=None):
    """The moving-bandits command (in `env`, default this process's environment) writing its stderr to
    a file beside `out` (`process.log`; a pipe nobody reads while the test waits could fill up and
    block the process); with `stall=(phase, update)` through the stall helper, blocking that phase
    ("update" or "save") of that update."""
    script, env = MODULE, dict(os.environ if env is None else env)
    if stall is not None:
        script, env = STALL, dict(env, STALL_IN=stall[0], STALL_AT_UPDATE=str(stall[1]))
    logs = sorted(out.parent.glob(f"{out.name}.stderr*"))
    log = out.parent / f"{out.name}.stderr{len(logs)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as file:
        process = subprocess.Popen([sys.executable, *script, *CLI_SETTINGS, "--out", str(out), *args], cwd=ROOT,
                                   env=env, stdout=subprocess.DEVNULL, stderr=file, text=True)
    process.log = log
    return process


def finish(process, timeout=300):
    """(exit code, stderr) of a started command."""
    process.wait(timeout=timeout)
    return process.returncode, process.log.read_text()


def wait_for_line(process, text, timeout=300):
    """Waits until `process` printed `text` on stderr."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.log.read_text():
            return
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"the process (exit code {process.poll()}) did not print {text!r}:\n"
                         + process.log.read_text()[-3000:])


def resume_command(out):
    return f"python -m experiments.moving_bandits --out {out} --resume --no-baseline"


def resume_and_compare(out, reference):
    """Resumes `out` (whose newest checkpoint is LAST_SAVED) with the printed command; its metrics and
    final state must be the reference's."""
    assert find_resume_point(out, config()).update == LAST_SAVED  # restores, fingerprint checked
    code, stderr = finish(start(out, "--resume"))
    assert code == 0, stderr[-3000:]
    assert_same_run(out, reference)


def stall_and_check_the_report(out, stall, phase, newest):
    """Runs with `--stall-limit LIMIT_S`, stalling `stall` = (phase, update); the process must exit
    with 75 within the limit, name the update and phase, write the stacks (the main thread's
    included) and leave the checkpoints up to `newest` intact."""
    process = start(out, "--stall-limit", str(LIMIT_S), stall=stall)
    at = stall[1]
    wait_for_line(process, f"stalling at update {at}")
    blocked = time.monotonic()
    code, stderr = finish(process, timeout=60)
    waited = time.monotonic() - blocked
    assert code == STALL_EXIT_CODE == 75, stderr[-3000:]
    assert waited < LIMIT_S + SLACK_S, waited
    report = out / "stall_process0.txt"
    assert f"error: update {at} of {NUM_UPDATES} stalled in its {phase}: " in stderr
    assert f"over its limit of {LIMIT_S:g} s (--stall-limit); every thread's Python stack is in {report}" in stderr
    assert f"{out / 'checkpoints' / str(newest)} (update {newest}), stays valid; to resume: {resume_command(out)}" in stderr
    stacks = report.read_text()
    assert f"update {at} of {NUM_UPDATES} stalled in its {phase}" in stacks.splitlines()[0]
    assert "in block_for_ever" in stacks and "in _updates" in stacks  # the main thread's stack, where it hangs
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == list(range(CHECKPOINT_EVERY, newest + 1,
                                                                                      CHECKPOINT_EVERY))
    assert find_resume_point(out, config()).update == newest  # restores, fingerprint checked


def test_a_stalled_update_is_reported_within_the_limit_and_the_run_resumes(tmp_path, reference):
    out = tmp_path / "run"
    stall_and_check_the_report(out, ("update", STALL_AT), "rollout and update", LAST_SAVED)
    resume_and_compare(out, reference)


def test_a_stalled_checkpoint_save_is_reported_within_the_limit(tmp_path):
    at = 2 * CHECKPOINT_EVERY
    stall_and_check_the_report(tmp_path / "run", ("save", at), "checkpoint save", at - CHECKPOINT_EVERY)


def test_a_run_stopped_for_longer_than_the_limit_and_continued_is_not_a_stall(tmp_path):
    """Ctrl-Z (here SIGSTOP) for longer than the limit, then SIGCONT: the pause is not a stall."""
    out = tmp_path / "run"
    process = start(out, "--stall-limit", str(LIMIT_S))
    wait_for_rows(out / "metrics.csv", 5, process)
    process.send_signal(signal.SIGSTOP)
    time.sleep(8.0)  # > the limit, and > the 5 s after which the watchdog sees a pause
    process.send_signal(signal.SIGCONT)
    code, stderr = finish(process)
    assert code == 0, stderr[-3000:]
    assert "stalled" not in stderr and not (out / "stall_process0.txt").exists()
    assert len(metric_rows(out)) == NUM_UPDATES


def stop_twice(out, sig):
    """Stalls a run at update STALL_AT (no watchdog) and sends `sig` twice: the first must be
    acknowledged while the main thread is blocked, the second must end the process at once with
    128 + sig and say what was saved and how to resume. Returns the process's stderr."""
    process = start(out, "--no-stall-watchdog", stall=("update", STALL_AT))
    wait_for_line(process, f"stalling at update {STALL_AT}")
    process.send_signal(sig)
    wait_for_line(process, f"received {sig.name}: saving a checkpoint after the current update")
    sent = time.monotonic()
    process.send_signal(sig)
    code, stderr = finish(process, timeout=30)
    assert time.monotonic() - sent < SLACK_S
    assert code == signal_exit_code(sig), stderr[-3000:]
    assert f"received {sig.name} again: exiting at once (exit code {code}) without finishing the current update" in stderr
    assert f"checkpoints/{LAST_SAVED} (update {LAST_SAVED}), stays valid; to resume: {resume_command(out)}" in stderr
    assert not (out / "stall_process0.txt").exists()  # the watchdog was off
    return stderr


def test_a_second_sigterm_ends_a_hung_update_at_once_and_the_run_resumes(tmp_path, reference):
    out = tmp_path / "run"
    stop_twice(out, signal.SIGTERM)
    assert signal_exit_code(signal.SIGTERM) == 143
    resume_and_compare(out, reference)


def test_a_second_ctrl_c_ends_a_hung_update_with_exit_code_130(tmp_path):
    stop_twice(tmp_path / "run", signal.SIGINT)
    assert signal_exit_code(signal.SIGINT) == 130


# The clusters run 4 updates, as the checkpoint tests of tests/test_distributed.py do: runs on 1 and
# 2 processes agree within those tests' float tolerance over so few updates. They save after every
# update: a save is written in the background, and one of a cluster may still be unfinished when a
# process is lost (it then never becomes visible); the save before it has finished by then.
CLUSTER_UPDATES, CLUSTER_STALL_AT = 4, 3
CLUSTER_LIMIT_S = 10.0     # --stall-limit of the clusters, whose saves take seconds on a busy 2-core machine


def lose_a_process(out, fault):
    """A 2-process cluster on the CPU whose process 1 blocks at update 3 (its rollout and update)
    and is then killed (SIGKILL; `fault` "killed") or left stalled ("stalled"). Process 0, waiting
    for it in a collective, must exit with 75 within the limit and write its report. Returns
    process 1."""
    cluster = ["--set", f"num_updates={CLUSTER_UPDATES}", "--set", "checkpoint_every=1", "--stall-limit",
               str(CLUSTER_LIMIT_S), "--distributed", "--coordinator", f"localhost:{free_port()}", "--num-processes",
               "2", "--process-id"]
    first = start(out, *cluster, "0", env=ONE_DEVICE)
    second = start(out, *cluster, "1", env=ONE_DEVICE, stall=("update", CLUSTER_STALL_AT))
    wait_for_line(second, f"stalling at update {CLUSTER_STALL_AT}")
    if fault == "killed":
        second.kill()
        second.wait()
    lost = time.monotonic()
    code, stderr = finish(first, timeout=60)
    assert time.monotonic() - lost < CLUSTER_LIMIT_S + SLACK_S
    assert code == STALL_EXIT_CODE, stderr[-3000:]
    assert "error: a collective across processes failed" in stderr or "stalled in its" in stderr, stderr[-3000:]
    assert (out / "stall_process0.txt").is_file()
    saved = find_resume_point(out, read_run_config(out)).update  # restores, fingerprint checked
    assert saved in (CLUSTER_STALL_AT - 2, CLUSTER_STALL_AT - 1)
    assert f"checkpoints/{saved} (update {saved}), stays valid; to resume: " in stderr
    return second


def test_a_cluster_whose_process_is_killed_ends_within_the_limit(tmp_path):
    """JAX raises in the next collective here (gloo: connection reset by peer) and would then wait
    for the dead process at exit until its heartbeat timeout (measured: 81 s); the run turns that
    into exit code 75 at once, its newest checkpoint restoring (checked in `lose_a_process`)."""
    lose_a_process(tmp_path / "run", "killed")


@pytest.mark.slow  # a minute; default tier: the kill above, and a two-process run's checkpoint restored on one
def test_a_cluster_whose_process_is_killed_resumes_to_the_uninterrupted_result(tmp_path, single):  # noqa: F811
    """After the kill, the run resumes on one process and matches the uninterrupted one-process run
    within float tolerance."""
    out = tmp_path / "run"
    lose_a_process(out, "killed")
    code, stderr = finish(start(out, "--resume", "--set", f"num_updates={CLUSTER_UPDATES}", env=ONE_DEVICE))
    assert code == 0, stderr[-3000:]
    assert_close_runs(out, single)


@pytest.mark.slow  # minutes; default tier: a stall in one process and a cluster whose process dies
def test_a_cluster_whose_process_stalls_ends_within_the_limit(tmp_path):
    """A stalled process keeps its heartbeats going, so JAX never ends the others (measured: still
    waiting after 300 s); the watchdogs end both."""
    out = tmp_path / "run"
    second = lose_a_process(out, "stalled")
    code, stderr = finish(second, timeout=60)
    assert code == STALL_EXIT_CODE, stderr[-3000:]
    assert f"update {CLUSTER_STALL_AT} of {CLUSTER_UPDATES} stalled in its rollout and update" in stderr
    assert (out / "stall_process1.txt").is_file()


def test_the_automatic_limit_follows_the_measured_durations(tmp_path):
    """StallWatchdog.limit_for's rule, with durations given by hand."""
    update = "rollout and update"
    automatic = StallWatchdog(None, tmp_path / "stacks.txt", total_updates=10)
    explicit = StallWatchdog(5.0, tmp_path / "stacks.txt", total_updates=10)
    try:
        assert automatic.limit_for(update)[0] == 1800.0      # it never ran: the compile's limit
        automatic.record(update, 30.0)                        # the first, compiling update
        assert automatic.limit_for(update)[0] == 300.0       # 10 x 30 s
        for seconds in (2.0, 9.0, 8.0):                       # median 8 s, the compile left out
            automatic.record(update, seconds)
        assert automatic.limit_for(update)[0] == 80.0
        for _ in range(10):                                   # median 0.1 s: the 60 s floor
            automatic.record(update, 0.1)
        assert automatic.limit_for(update)[0] == 60.0
        assert automatic.limit_for("after-update hook", measured=False)[0] == 1800.0
        explicit.record("checkpoint save", 1.0)
        assert explicit.limit_for("checkpoint save") == (5.0, "--stall-limit")
        assert explicit.limit_for(update)[0] == 1800.0       # a first time keeps the startup limit
    finally:
        automatic.close()
        explicit.close()


def test_a_non_positive_stall_limit_is_refused_before_compiling(tmp_path):
    done = subprocess.run([sys.executable, *MODULE, *CLI_SETTINGS, "--out", str(tmp_path / "run"), "--stall-limit", "0"],
                          cwd=ROOT, env=ONE_DEVICE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "error: argument --stall-limit: must be a positive number of seconds, got '0'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()
    for value in ("-1", "nan", "inf", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive number of seconds"):
            positive_seconds(value)
    assert positive_seconds("2.5") == 2.5
    with pytest.raises(ValueError, match="stall_limit_s must be a positive number of seconds, got -3"):
        train(None, tmp_path / "run", stall_limit_s=-3)
