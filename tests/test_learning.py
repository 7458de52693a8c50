"""End to end: MLSH learns moving bandits (paper settings, 100 task slots) and its two sub-policies
go to different goals.

Separation is what the default credit rule (`mlsh_jax.credit`, responsibility-weighted sub-policy
updates) is there to guarantee on any seed, so the default-tier test asserts it on one run; the rate
over seeds is the slow tier's (`-m slow`), and the full study is
`python -m experiments.moving_bandits_studies separation`.
"""

import dataclasses

import jax
import numpy as np
import pytest

from experiments.moving_bandits import PRESETS, subpolicy_goal_fractions
from mlsh_jax import Trainer

# A random policy scores ~3; the optimum with 10% random master actions is ~40; a run whose
# sub-policies both go to one goal stays near the shared policy's ~24.
SEPARATED_RETURN = 32.0


def train_fast_preset(trainer: Trainer, seed: int):
    """Trains the `fast` preset from `seed`; returns (final state, post-warmup return per update)."""
    state = trainer.init(jax.random.PRNGKey(seed))
    post_warmup = []
    for _ in range(trainer.config.num_updates):
        state, metrics = trainer.update(state)
        post_warmup.append(float(metrics["mean_return_post_warmup"]))
    return state, post_warmup


def test_mlsh_learns_moving_bandits_and_subpolicies_specialise():
    trainer = Trainer(dataclasses.replace(PRESETS["fast"](), num_updates=40))
    state, post_warmup = train_fast_preset(trainer, seed=0)
    behaviour = subpolicy_goal_fractions(trainer, state, jax.random.PRNGKey(1))
    assert behaviour["separated"], behaviour
    assert np.mean(post_warmup[-5:]) >= SEPARATED_RETURN, post_warmup


@pytest.mark.slow
def test_subpolicies_separate_on_at_least_four_of_five_seeds():
    trainer = Trainer(dataclasses.replace(PRESETS["fast"](), num_updates=50))
    outcomes = {}
    for seed in range(5):
        state, post_warmup = train_fast_preset(trainer, seed)
        behaviour = subpolicy_goal_fractions(trainer, state, jax.random.PRNGKey(seed + 1))
        outcomes[seed] = (behaviour["separated"], round(float(np.mean(post_warmup[-5:])), 1))
    print(f"seed: (separated, post-warmup return over the last 5 updates): {outcomes}")
    assert sum(separated for separated, _ in outcomes.values()) >= 4, outcomes
