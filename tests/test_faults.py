"""Faults a run must survive or report clearly: NaNs, corrupt or foreign checkpoints, logging."""

import pathlib
import shutil
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlsh_jax import RunLoadError, load_run
from mlsh_jax.checkpoint import CheckpointError, fingerprint
from mlsh_jax.faults import NonFiniteError, describe_non_finite
from mlsh_jax.resume import find_resume_point
from mlsh_jax.run import train
from mlsh_jax.trainer import Trainer
from tests.helpers.messages import user_message

ROOT = pathlib.Path(__file__).resolve().parents[1]


class NaNLossAtUpdate(Trainer):
    """Multiplies every PPO loss (masters and sub-policies) by NaN during update `bad_update`."""

    def __init__(self, config, bad_update: int):
        self.bad_update = bad_update
        super().__init__(config)

    def update_step(self, state):
        self._poison = jnp.where(state.update + 1 == self.bad_update, jnp.nan, 1.0)
        return super().update_step(state)

    def _loss_fn(self, model, ppo, num_learners=None):
        loss_fn = Trainer._loss_fn(model, ppo, num_learners)

        def poisoned(params, batch, weights):
            loss, metrics = loss_fn(params, batch, weights)
            return loss * self._poison, dict(metrics, loss=loss * self._poison)
        return poisoned


def test_nan_in_the_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny):
    config = tiny(num_updates=8, checkpoint_every=2)
    out = tmp_path / "run"
    # Update 4 is a checkpoint update: its NaN state must not be saved.
    with pytest.raises(NonFiniteError) as error:
        train(config, out, trainer=NaNLossAtUpdate(config, bad_update=4), progress=False)
    message = str(error.value)
    assert "non-finite values at update 4" in message
    assert "master loss terms of slots 0, 1" in message and "master parameters of slots 0, 1" in message
    assert "sub-policy loss terms" in message
    assert f"{out / 'checkpoints' / '2'} (update 2), holds the last good state" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2"]
    run = load_run(out)  # restores, and the fingerprint matches
    assert run.update == 2
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(run.state.subs.params))
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # the faulty update is logged, nothing after it


def test_describe_non_finite_names_update_quantity_and_index():
    ok = {"experience": [True, True, True], "master_loss": [True] * 3, "master_params": [True] * 3,
          "sub_loss": [True, True], "sub_params": [True, True], "obs_stats": True}
    assert describe_non_finite(ok, 7) is None
    bad = dict(ok, experience=[True, False, True], sub_params=[True, False], obs_stats=False)
    assert describe_non_finite(bad, 7) == (
        "non-finite values at update 7: observations or rewards of slot 1; "
        "sub-policy parameters of sub-policy 1; observation statistics")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import tiny_config

    config = tiny_config(num_updates=4, checkpoint_every=2)
    out = tmp_path_factory.mktemp("runs") / "run"
    train(config, out, progress=False)
    return out, config


def data_files(checkpoint_dir):
    return sorted((p for p in (checkpoint_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
                  key=lambda p: p.stat().st_size)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def random_bytes(path):
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def flip_one_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, expected", [
    (lambda ckpt: truncate(data_files(ckpt)[-1]), "is unreadable"),
    (lambda ckpt: random_bytes(data_files(ckpt)[-1]), "is unreadable"),
    (lambda ckpt: random_bytes(ckpt / "meta" / "metadata"), "is unreadable"),
    (lambda ckpt: shutil.rmtree(ckpt / "state"), "is unreadable"),
])
def test_damaged_checkpoints_are_rejected_with_a_clear_message(tmp_path, finished_run, damage, expected):
    source, config = finished_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    damage(run / "checkpoints" / "4")
    with pytest.raises(CheckpointError, match=expected) as error:
        find_resume_point(run, config)
    assert "checkpoints/4" in str(error.value)
    assert "earlier checkpoints: 2" in str(error.value)
    with pytest.raises(RunLoadError):
        load_run(run)


def test_a_changed_byte_never_restores_silently_wrong_data(tmp_path, finished_run):
    """Orbax restores a flipped byte inside compressed array data without complaint; the fingerprint
    catches it. A flip anywhere must give an error, or (in index bytes the read does not use) the
    exact saved state. Each damaged copy is a new directory (TensorStore caches reads by path)."""
    source, config = finished_run
    intact = jax.tree.leaves(find_resume_point(source, config).state)
    count = len(data_files(source / "checkpoints" / "4"))
    outcomes = []
    for index in range(count):
        run = tmp_path / f"run{index}"
        shutil.copytree(source, run)
        flip_one_byte(data_files(run / "checkpoints" / "4")[index])
        try:
            restored = jax.tree.leaves(find_resume_point(run, config).state)
        except CheckpointError as error:
            outcomes.append("corrupt" if "is corrupt" in str(error) else "unreadable")
            continue
        for a, b in zip(restored, intact):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        outcomes.append("unaffected")
    assert "corrupt" in outcomes, outcomes  # caught by the fingerprint alone


def test_a_checkpoint_from_another_run_is_refused(tmp_path, finished_run, tiny):
    source, config = finished_run
    other_config = tiny(num_updates=4, checkpoint_every=2, seed=5)
    other = tmp_path / "other"
    train(other_config, other, progress=False)
    shutil.rmtree(other / "checkpoints" / "4")
    shutil.copytree(source / "checkpoints" / "4", other / "checkpoints" / "4")
    with pytest.raises(CheckpointError, match="was not written by this run \\(seed: 0 -> 5\\)"):
        find_resume_point(other, other_config)


def test_corrupt_checkpoint_on_the_command_line_exits_2_without_a_traceback(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "experiments.moving_bandits", "--preset", "smoke", "--out", str(run),
            "--no-baseline", "--no-progress"]
    assert subprocess.run(args, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    random_bytes(data_files(run / "checkpoints" / "3")[-1])
    before = (run / "metrics.csv").read_bytes()
    done = subprocess.run(args[:3] + ["--out", str(run), "--resume"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert user_message(done.stderr).startswith("error: checkpoint ") and "unreadable" in done.stderr
    assert "move " in done.stderr and "resume from update 2" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert (run / "metrics.csv").read_bytes() == before


def test_fingerprint_sees_any_single_element_change():
    tree = {"w": jnp.arange(12.0).reshape(3, 4), "k": jnp.array([3, 4], jnp.uint32), "b": jnp.array([True, False])}
    base = fingerprint(tree)
    assert fingerprint(tree) == base
    assert fingerprint(dict(tree, w=tree["w"].at[2, 1].add(1e-6)))[2] != base[2]
    assert fingerprint(dict(tree, w=tree["w"][::-1]))[2] != base[2]  # same values, other places
    assert fingerprint(dict(tree, b=~tree["b"]))[0] != base[0]


def read_tensorboard(directory):
    """(tag, step, kind) of every summary value in a TensorBoard event directory."""
    from tensorboardX.proto import event_pb2

    found = []
    for path in directory.iterdir():
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12: offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found.append((value.tag, event.step, value.WhichOneof("value")))
    return found


def test_tensorboard_gets_losses_returns_usage_and_speed(finished_run):
    run, config = finished_run
    found = read_tensorboard(run / "tensorboard")
    tags = {tag for tag, _, _ in found}
    for tag in ("master/policy_loss", "master/approx_kl", "master/clip_fraction", "master/entropy",
                "sub/value_loss_0", "sub/approx_kl_1", "episodes/mean_return", "episodes/sub_usage_0",
                "run/env_steps_per_s"):
        assert tag in tags, tag
    assert {step for tag, step, _ in found if tag == "run/env_steps_per_s"} == {1, 2, 3, 4}
    histograms = {tag for tag, _, kind in found if kind == "histo"}
    assert histograms == {f"sub_usage_per_slot/sub_{k}" for k in range(config.num_subpolicies)}


def test_output_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    done = subprocess.run([sys.executable, "-m", "experiments.moving_bandits", "--preset", "smoke",
                           "--out", str(blocker / "run")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          )
    assert done.returncode == 2 and "is a file" in done.stderr and "Traceback" not in done.stderr
