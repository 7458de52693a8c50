"""End to end: MLSH learns moving bandits (paper settings, 100 task slots) within the test budget."""

import dataclasses

import jax
import numpy as np

from experiments.moving_bandits import PRESETS, subpolicy_goal_fractions
from mlsh_jax import Trainer


def test_mlsh_learns_moving_bandits_and_subpolicies_specialise():
    config = dataclasses.replace(PRESETS["fast"](), num_updates=30)
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    post_warmup = []
    for _ in range(config.num_updates):
        state, metrics = trainer.update(state)
        post_warmup.append(float(metrics["mean_return_post_warmup"]))
    # A random policy scores ~3; the optimum with 10% random master actions is ~40.
    assert np.mean(post_warmup[-5:]) >= 32.0, post_warmup
    behaviour = subpolicy_goal_fractions(trainer, state, jax.random.PRNGKey(1))
    assert behaviour["separated"], behaviour
