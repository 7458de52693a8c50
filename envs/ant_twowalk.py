"""Ant twowalk (the original code's AntBandits; paper Figure 7): walk to one of two goals.

The task is which goal pays: (5, 0) or (0, 5); it is not observed. Reward per step is
-sqrt(distance to the goal) / 3000 as in the original, so an ant that stays at the start earns about
-0.75 per 1000-step episode. No walls, no early end.

`approach_weight` (a documented deviation, 0 by default) adds that weight times the speed at which
the torso approaches the goal (m/s; negative when it moves away) to every step's reward: the
original's -sqrt(distance) / 3000 changes by 7.5e-5 per step for each metre walked toward a goal 5 m
away, a slope the ant finds only by chance, where Brax's ant is paid its velocity directly.
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
    """Two tasks: walk to (5, 0) or to (0, 5).

    Args:
      approach_weight: weight of the speed toward the goal added to the reward (0: the original's).
      shaping: `AntTaskEnv`'s `alive_bonus` and `end_when_fallen` (none by default).
    """

    name = "ant_twowalk"
    task_kinds = tuple(f"goal ({x:g}, {y:g})" for x, y in GOALS)

    def __init__(self, episode_length: int = 1000, backend: str = "spring", approach_weight: float = 0.0,
                 **shaping):
        if not approach_weight >= 0:
            raise ValueError(f"approach_weight must be >= 0, got {approach_weight}")
        self.approach_weight = float(approach_weight)
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
        original = -jnp.sqrt(distance) / 3000.0
        if self.approach_weight == 0:
            return original
        approach = (jnp.linalg.norm(self.torso_xy(before) - self.goal_xy(task)) - distance) / self.dt
        return original + self.approach_weight * approach
