"""Many devices, many processes: task slots sharded over a mesh, a real 2-process cluster on
localhost (jax.distributed, gloo CPU collectives), and checkpoints moving between layouts.

Results across layouts agree within float tolerance (sums are reduced in another order), not bit
for bit.
"""

import csv
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from mlsh_jax import load_run
from mlsh_jax.metrics_log import TIMING_COLUMNS
from tests.helpers.xla_flags import xla_flags_with_host_devices

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = str(ROOT / "tests" / "helpers" / "cluster_train.py")
# These tests run on the CPU, also on a GPU machine: two forced host devices in one process, compared with
# one device and with processes joined over gloo (CPU collectives).
TWO_DEVICES = dict(os.environ, XLA_FLAGS=xla_flags_with_host_devices(2), JAX_PLATFORMS="cpu")
ONE_DEVICE = dict(os.environ, XLA_FLAGS=xla_flags_with_host_devices(None), JAX_PLATFORMS="cpu")
RTOL, ATOL = 1e-3, 1e-4  # masters train at lr 0.01: float differences grow to ~2e-5 in 4 updates
# ...for almost every weight. Adam's normalised step turns a reduction-order difference in a
# near-zero gradient into a step of up to the learning rate, so a rare weight drifts further: after
# 4 updates 1 master weight in 16384 differed by 1.7e-4 (measured). Parameters must match within
# RTOL/ATOL for >= 99.9% of their elements and within PARAM_ATOL for all; a sharding error moves
# many elements by far more.
PARAM_ATOL, PARAM_CLOSE_FRACTION = 1e-3, 0.999


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def run_helper(out, updates, *extra, env=ONE_DEVICE):
    done = subprocess.run([sys.executable, HELPER, str(out), str(updates), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_cluster(out, updates, *extra):
    """The helper as a 2-process cluster (one CPU device each); returns both outputs."""
    port = free_port()
    processes = [subprocess.Popen([sys.executable, HELPER, str(out), str(updates), *extra,
                                   "--coordinator", f"localhost:{port}", "--num-processes", "2",
                                   "--process-id", str(i)], cwd=ROOT, env=ONE_DEVICE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return [stdout for stdout, _ in outputs]


def metric_rows(run):
    with open(run / "metrics.csv", newline="") as file:
        return [{k: float(v) for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(file)]


def assert_close_runs(run, reference):
    rows, expected = metric_rows(run), metric_rows(reference)
    assert [r["update"] for r in rows] == [r["update"] for r in expected]
    for row, want in zip(rows, expected):
        assert row.keys() == want.keys()
        np.testing.assert_allclose([row[k] for k in want], list(want.values()), rtol=RTOL, atol=ATOL)
    got, want = load_run(run), load_run(reference)  # restored here on 1 device, whatever wrote them
    assert got.update == want.update
    for a, b in zip(_leaves(got.state), _leaves(want.state)):
        assert_params_close(a, b)


def assert_params_close(a, b):
    """See PARAM_ATOL: all elements within PARAM_ATOL, >= 99.9% within RTOL / ATOL."""
    np.testing.assert_allclose(a, b, rtol=0, atol=PARAM_ATOL)
    close = np.isclose(a, b, rtol=RTOL, atol=ATOL)
    assert close.mean() >= PARAM_CLOSE_FRACTION, f"{(~close).sum()} of {close.size} elements differ"


def _leaves(state):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def saved_subs(run, process):
    with np.load(run / f"subs_process{process}.npz") as data:
        return [data[k] for k in sorted(data.files, key=lambda name: int(name.split("_")[1]))]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, one device, 4 updates."""
    out = tmp_path_factory.mktemp("single") / "run"
    assert "devices 1 processes 1" in run_helper(out, 4)
    return out


def test_two_devices_match_one_device(tmp_path, single):
    out = tmp_path / "run"
    stdout = run_helper(out, 4, env=TWO_DEVICES)
    assert "devices 2 processes 1" in stdout
    assert "evaluated 4 episodes, finite True" in stdout  # policies of a state split over 2 devices
    assert_close_runs(out, single)


def test_two_process_cluster_matches_one_process(tmp_path, single):
    out = tmp_path / "run"
    outputs = run_cluster(out, 4)
    assert all("devices 2 processes 2" in stdout for stdout in outputs)
    first, second = saved_subs(out, 0), saved_subs(out, 1)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)  # both processes hold the same sub-policies
    for a, b in zip(first, saved_subs(single, 0)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    assert_close_runs(out, single)
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".npz") == [
        "checkpoints", "config.json", "env.json", "metrics.csv", "summary.json"]


@pytest.mark.slow
def test_checkpoints_move_between_one_and_two_processes(tmp_path, single):
    two_then_one = tmp_path / "two_then_one"
    run_cluster(two_then_one, 2)
    run_helper(two_then_one, 4, "--resume")
    assert_close_runs(two_then_one, single)

    one_then_two = tmp_path / "one_then_two"
    run_helper(one_then_two, 2)
    run_cluster(one_then_two, 4, "--resume")
    assert_close_runs(one_then_two, single)


def cli(*args, env=ONE_DEVICE, timeout=120):
    return subprocess.run([sys.executable, "-m", "experiments.moving_bandits", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_slots_that_do_not_divide_over_the_devices_are_refused(tmp_path):
    done = cli("--preset", "smoke", "--set", "num_slots=3", "--out", str(tmp_path / "run"), env=TWO_DEVICES)
    assert done.returncode == 2, done.stderr
    assert "num_slots=3 does not divide evenly over the 2 devices" in done.stderr
    assert "--set num_slots=2 or 4" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_unreachable_coordinator_fails_within_the_timeout(tmp_path):
    done = cli("--preset", "smoke", "--out", str(tmp_path / "run"), "--distributed", "--coordinator",
               f"localhost:{free_port()}", "--num-processes", "2", "--process-id", "1", "--cluster-timeout", "5")
    assert done.returncode == 2, done.stderr
    assert "could not join the coordinator at localhost:" in done.stderr and "within 5 s" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_processes_disagreeing_on_the_cluster_size_all_stop(tmp_path):
    port = free_port()
    common = ["-m", "experiments.moving_bandits", "--preset", "smoke", "--no-baseline", "--out", str(tmp_path / "run"),
              "--distributed", "--coordinator", f"localhost:{port}", "--cluster-timeout", "30"]
    processes = [subprocess.Popen([sys.executable, *common, "--num-processes", str(count), "--process-id", str(i)],
                                  cwd=ROOT, env=ONE_DEVICE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i, count in enumerate((2, 3))]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, stderr[-2000:]
        assert "the processes disagree on the cluster size: --num-processes per process [2, 3]" in stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--coordinator", "localhost:1234"], "need --distributed"),
    (["--distributed", "--coordinator", "localhost:1234"], "go together"),
    (["--distributed", "--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be in [0, 2)"),
])
def test_inconsistent_cluster_flags_are_refused(tmp_path, args, message):
    done = cli("--preset", "smoke", "--out", str(tmp_path / "run"), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
