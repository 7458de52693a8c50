"""Continuous-action learning probes on a 1-D point mass (`tests/helpers/toy_envs.PointMass`): move
to a target at -0.5 or +0.5 that only the observation tells. Best return -1.0 per episode; any policy
that ignores its observation gets at most -5.0, so the threshold below needs a policy that reads it.

The flat probe trains one Gaussian policy (the shared-policy path); the hierarchical one trains
MLSH with two sub-policies that see only the position, so that only the master knows the target:
it must pick the sub-policy that goes the right way, and the sub-policies must learn to go two
different ways.
"""

import dataclasses

import jax
import numpy as np

from conftest import tiny_config
from mlsh_jax import Trainer
from mlsh_jax.config import PPOConfig
from tests.helpers.toy_envs import PointMass

# Halfway between what ignoring the observation can get (-5.0) and the best return (-1.0).
THRESHOLD = -3.0
# Within 0.5 of the best return: a flat policy gets there in 30 updates (seeds 0-2: -1.18, -1.24, -1.28
# over the last 5); one trained with the policy gradient's sign flipped stalled at -2.5.
NEAR_BEST = -1.5


def train(config, updates):
    """Mean post-warmup return of each update of `config` on the point mass."""
    trainer = Trainer(config, env=PointMass())
    state = trainer.init(jax.random.PRNGKey(0))
    returns = []
    for _ in range(updates):
        state, metrics = trainer.update(state)
        returns.append(float(metrics["mean_return_post_warmup"]))
    return returns


def probe_config(**overrides):
    return dataclasses.replace(tiny_config(
        episode_length=10, macro_duration=10, num_slots=4, steps_per_slot=200, envs_per_slot=20,
        master=PPOConfig(learning_rate=0.01, epochs=4, num_minibatches=2),
        sub=PPOConfig(learning_rate=3e-3, epochs=4, num_minibatches=4)), **overrides)


def test_a_flat_gaussian_policy_learns_to_reach_the_target():
    returns = train(probe_config(algorithm="shared", num_subpolicies=1, warmup_updates=0,
                                 subpolicy_observation="full"), updates=30)
    assert np.mean(returns[:3]) < THRESHOLD and np.mean(returns[-5:]) > NEAR_BEST, returns


def test_a_master_learns_to_pick_the_subpolicy_that_goes_to_the_target():
    # Seeds 0-2 end at -1.9, -1.8, -1.7 over the last 5 updates (masters are fresh every 8 updates).
    returns = train(probe_config(num_subpolicies=2, warmup_updates=2, joint_updates=6, envs_per_slot=40,
                                 steps_per_slot=400), updates=30)
    assert np.mean(returns[:3]) < THRESHOLD < np.mean(returns[-5:]), returns
