"""Ant twowalk (the original code's AntBandits; paper Figure 7): walk to one of two goals.

The task is which goal pays: (5, 0) or (0, 5); it is not observed. Reward per step is
-sqrt(distance to the goal) / 3000 as in the original, so an ant that stays at the start earns about
-0.75 per 1000-step episode. No walls, no early end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.ant import AntTaskEnv

GOALS = ((5.0, 0.0), (0.0, 5.0))


@struct.dataclass
class TwoWalkTask:
    """`goal`: int32 [] in {0, 1}, index into GOALS."""

    goal: jax.Array


class AntTwoWalk(AntTaskEnv):
    """Two tasks: walk to (5, 0) or to (0, 5)."""

    name = "ant_twowalk"
    task_kinds = tuple(f"goal ({x:g}, {y:g})" for x, y in GOALS)

    def __init__(self, episode_length: int = 1000, backend: str = "spring", **shaping):
        super().__init__(episode_length, boxes=(), backend=backend, **shaping)

    def sample_task(self, key):
        return TwoWalkTask(goal=jax.random.randint(key, (), 0, len(GOALS), jnp.int32))

    def task_kind(self, task):
        return task.goal

    def goal_xy(self, task) -> jax.Array:
        """The rewarded goal (x, y) [2]."""
        return jnp.asarray(GOALS, jnp.float32)[task.goal]

    def reward(self, task, before, after, action, extra):
        distance = jnp.linalg.norm(self.torso_xy(after) - self.goal_xy(task))
        return -jnp.sqrt(distance) / 3000.0
