"""Shared small configurations (tests keep shapes tiny: compile time dominates)."""

import dataclasses

import pytest

from mlsh_jax.config import MLSHConfig, PPOConfig


def tiny_config(**overrides) -> MLSHConfig:
    """A moving-bandits configuration small enough to compile and run in seconds."""
    base = MLSHConfig(
        num_slots=2, steps_per_slot=100, envs_per_slot=2, num_updates=4, warmup_updates=2,
        joint_updates=1, checkpoint_every=0,
        master=PPOConfig(learning_rate=0.01, epochs=2, num_minibatches=2),
        sub=PPOConfig(learning_rate=3e-4, epochs=2, num_minibatches=2),
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def tiny():
    return tiny_config
