"""Continuing runs, checked against runs that were never interrupted: a resume under changed settings
(`num_updates`, `checkpoint_every`, `keep_checkpoints`) and a resumed transfer run (which must not
apply the transfer again); and frozen transferred sub-policies, which must act exactly as in their
source run however the new task's observations differ."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mlsh_jax import Trainer
from mlsh_jax.evaluation import run_subpolicy
from mlsh_jax.metrics_log import TIMING_COLUMNS
from mlsh_jax.run import train
from mlsh_jax.transfer import TransferredSubpolicies, with_subpolicies
from tests.helpers.toy_envs import PointMass, TargetTask


@pytest.fixture(scope="module")
def trainer():
    """One trainer for every run below (runs may differ in seed and the resumable fields)."""
    return Trainer(tiny_config(num_updates=6))


def assert_same_runs(resumed, uninterrupted):
    """The same metrics (timings aside) for every update, and the same final state, bit for bit."""
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]
    assert len(resumed.rows) == len(uninterrupted.rows)
    np.testing.assert_equal(strip(resumed.rows), strip(uninterrupted.rows))
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(uninterrupted.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_resumed_with_other_settings_continues_the_uninterrupted_run(trainer, tmp_path):
    config = tiny_config(num_updates=6)
    uninterrupted = train(config, tmp_path / "whole", trainer=trainer, progress=False, tensorboard=False)
    train(dataclasses.replace(config, num_updates=3, keep_checkpoints=3), tmp_path / "run", trainer=trainer,
          progress=False, tensorboard=False)
    changed = dataclasses.replace(config, checkpoint_every=2, keep_checkpoints=1)
    resumed = train(changed, tmp_path / "run", resume=True, trainer=trainer, progress=False, tensorboard=False)
    assert resumed.resumed_from == 3
    assert_same_runs(resumed, uninterrupted)


def test_a_resumed_transfer_run_does_not_apply_the_transfer_again(trainer, tmp_path):
    """Transferred sub-policies that go on training: applying the transfer again at the resume would
    put the source's parameters (and statistics) back over three updates of training."""
    source = train(tiny_config(num_updates=3, seed=5), tmp_path / "source", trainer=trainer, progress=False,
                   tensorboard=False).state
    transferred = TransferredSubpolicies(params=jax.device_get(source.subs.params),
                                         obs_stats=jax.device_get(source.obs_stats))
    prepare = lambda state: with_subpolicies(trainer, state, transferred)
    config = tiny_config(num_updates=6, seed=1)
    run = lambda cfg, out, **kw: train(cfg, tmp_path / out, trainer=trainer, progress=False, tensorboard=False,
                                       prepare_state=prepare, **kw)
    uninterrupted = run(config, "whole")
    run(dataclasses.replace(config, num_updates=3), "run")
    assert_same_runs(run(config, "run", resume=True), uninterrupted)


def test_frozen_transferred_subpolicies_act_exactly_as_in_their_source_run():
    """Sub-policies trained on a point mass whose targets are +-0.5, transferred frozen to one whose
    targets are +-0.9: after three updates there (whose observations move the masters' statistics),
    each sub-policy, run alone on the same tasks with the same key, takes the same path as it does
    in its source run."""
    config = tiny_config(episode_length=10, macro_duration=5, num_slots=2, steps_per_slot=40, envs_per_slot=4,
                         warmup_updates=1, joint_updates=1)
    source_trainer = Trainer(config, env=PointMass())
    source = source_trainer.init(jax.random.PRNGKey(0))
    for _ in range(3):
        source, _ = source_trainer.update(source)
    # Device arrays, as `load_subpolicies` restores them.
    transferred = TransferredSubpolicies(params=source.subs.params, obs_stats=source.obs_stats)
    frozen = dataclasses.replace(config, train_subpolicies=False, warmup_updates=3, joint_updates=0)
    target_trainer = Trainer(frozen, env=PointMass(distance=0.9))
    target = with_subpolicies(target_trainer, target_trainer.init(jax.random.PRNGKey(1)), transferred)
    for _ in range(3):
        target, _ = target_trainer.update(target)
    # The new task's observations did move the running statistics (what the masters see).
    assert not np.allclose(np.asarray(target.obs_stats.mean), np.asarray(transferred.obs_stats.mean))
    tasks = TargetTask(target=jnp.array([0.5, -0.5]))
    for k in range(config.num_subpolicies):
        paths = [np.asarray(run_subpolicy(t, s, k, tasks, jax.random.PRNGKey(2), greedy=True).obs)
                 for t, s in ((source_trainer, source), (target_trainer, target))]
        np.testing.assert_allclose(paths[1], paths[0], atol=1e-6)
        assert np.abs(paths[0][-1, :, 0]).max() > 0     # the sub-policy does move the point
