"""Tiny task distributions whose every transition is known by hand, for reference tests and probes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.base import TaskEnv


@struct.dataclass
class CounterTask:
    """`end`: the episode terminates at its `end`-th step (int32 []; 0: only the time limit ends it)."""

    end: jax.Array


class Counter(TaskEnv):
    """Observation [t] (steps taken in the episode), reward t + 1 for the step taken at t, so a
    stretch of steps sums to a known number; actions (2, discrete) change nothing."""

    name = "counter"
    observation_size = 1
    action_size = 2

    def __init__(self, episode_length: int = 8):
        self.episode_length = episode_length

    def sample_task(self, key):
        return CounterTask(end=jnp.zeros((), jnp.int32))

    def _reset(self, task, key):
        return jnp.zeros((), jnp.int32), jnp.zeros((1,))

    def _transition(self, task, t, action, key):
        return t + 1, (t + 1).astype(jnp.float32)[None], (t + 1).astype(jnp.float32), t + 1 == task.end


@struct.dataclass
class ChoiceTask:
    """`good`: the action that pays 1 (int32 []); `bonus`: paid at every step on top (float32 [])."""

    good: jax.Array
    bonus: jax.Array


class Choice(TaskEnv):
    """A constant observation; reward 1 for the task's good action (of 2) plus the task's bonus."""

    name = "choice"
    observation_size = 1
    action_size = 2
    episode_length = 10

    def sample_task(self, key):
        return ChoiceTask(good=jax.random.randint(key, (), 0, 2, jnp.int32), bonus=jnp.zeros(()))

    def _reset(self, task, key):
        return (), jnp.zeros((1,))

    def _transition(self, task, inner, action, key):
        return inner, jnp.zeros((1,)), (action == task.good).astype(jnp.float32) + task.bonus, False


@struct.dataclass
class TargetTask:
    """`target`: where the point must go, float32 []."""

    target: jax.Array


class PointMass(TaskEnv):
    """A point on a line starting at 0 and moving `SPEED` x action (continuous, clipped to [-1, 1]) per
    step towards a target at -`distance` or +`distance` (the task, default 0.5). Observation
    [x, target]; reward -|x - target| after the move. Sub-policies see only x: under a master, only
    the master knows where to go.

    At distance 0.5, the best return over an episode of 10 steps is -(0.4 + 0.3 + 0.2 + 0.1) = -1.0. A
    policy that ignores the observation follows one path x_t for both targets, and |x_t - 0.5| +
    |x_t + 0.5| >= 1, so its expected return is at most -10 x 0.5 = -5.0.
    """

    name = "point_mass"
    observation_size = 2
    subpolicy_observation_size = 1
    action_size = 1
    continuous_actions = True
    episode_length = 10
    SPEED = 0.1

    def __init__(self, distance: float = 0.5):
        self.distance = distance

    def sample_task(self, key):
        return TargetTask(target=jnp.where(jax.random.bernoulli(key), self.distance, -self.distance))

    def _reset(self, task, key):
        return jnp.zeros(()), jnp.stack([jnp.zeros(()), task.target])

    def _transition(self, task, x, action, key):
        x = x + self.SPEED * jnp.clip(action[0], -1.0, 1.0)
        return x, jnp.stack([x, task.target]), -jnp.abs(x - task.target), False
