"""2D moving bandits (MLSH paper, section 6.1; `MovementBandits` in the original code).

A 400x400 world. The agent starts at the centre and moves 20 units per step with 5 discrete actions
(stay, +x, -x, +y, -y); its position is not clipped to the world, as in the original code. Two goal
points are drawn uniformly in the world at every episode reset; the *task* says which of the two is
the correct one and is hidden from the agent. Reward 1 per step while the agent is within distance
50 of the correct goal, else 0. Observation: agent position and both goals, scaled by 1/400.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.base import TaskEnv

WORLD_SIZE = 400.0
STEP_SIZE = 20.0
GOAL_RADIUS = 50.0
# Displacement of each action, in world units: stay, +x, -x, +y, -y.
ACTION_MOVES = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], np.float32) * STEP_SIZE


@struct.dataclass
class MovingBanditsTask:
    """Which goal slot is rewarded: `correct_goal`, int32 [] in {0, 1}."""

    correct_goal: jax.Array


@struct.dataclass
class MovingBanditsInner:
    """Agent `position` [2] and the episode's two `goals` [2, 2], in world units."""

    position: jax.Array
    goals: jax.Array


class MovingBandits(TaskEnv):
    """The moving-bandits task distribution (2 tasks: which goal slot pays)."""

    name = "moving_bandits"
    observation_size = 6
    action_size = 5

    def __init__(self, episode_length: int = 50):
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length

    def sample_task(self, key: jax.Array) -> MovingBanditsTask:
        return MovingBanditsTask(correct_goal=jax.random.randint(key, (), 0, 2, jnp.int32))

    def _reset(self, task, key):
        inner = MovingBanditsInner(
            position=jnp.full((2,), WORLD_SIZE / 2, jnp.float32),
            goals=jax.random.uniform(key, (2, 2), minval=0.0, maxval=WORLD_SIZE),
        )
        return inner, self.observe(inner)

    def _transition(self, task, inner, action, key):
        position = inner.position + jnp.asarray(ACTION_MOVES)[action]
        inner = inner.replace(position=position)
        distance = jnp.linalg.norm(position - inner.goals[task.correct_goal])
        reward = (distance < GOAL_RADIUS).astype(jnp.float32)
        return inner, self.observe(inner), reward, jnp.zeros((), bool)

    @staticmethod
    def observe(inner: MovingBanditsInner) -> jax.Array:
        """Observation [6]: (x, y, goal0 x, goal0 y, goal1 x, goal1 y) / 400."""
        return jnp.concatenate([inner.position, inner.goals.reshape(-1)]) / WORLD_SIZE
