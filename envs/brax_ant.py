"""Brax's own ant (`brax.envs.ant.Ant`, its reward and episode end) as a one-task distribution, so
that this project's learner and `brax.training`'s PPO train on the very same env object.

Reward (Brax's): forward velocity of the torso + 1 per healthy step (torso z in [0.2, 1]) - 0.5
|a|^2; the episode terminates when the torso leaves that height range. Observation (27): q[2:] and
qd, as this project's ant body view. Actions: 8 torques in [-1, 1]. Backend: `spring` by default,
as the project's ant tasks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.base import TaskEnv


@struct.dataclass
class OnlyTask:
    """The single task (a placeholder leaf, so that tasks stack and vmap like any other)."""

    index: jax.Array


class BraxAnt(TaskEnv):
    """Brax's ant: walk forward (+x) as fast as possible without falling."""

    name = "brax_ant"
    observation_size = 27
    action_size = 8
    continuous_actions = True

    def __init__(self, episode_length: int = 1000, backend: str = "spring"):
        from brax import envs as brax_envs

        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.brax_env = brax_envs.get_environment("ant", backend=backend)
        self.dt = float(self.brax_env.dt)

    def sample_task(self, key):
        return OnlyTask(index=jnp.zeros((), jnp.int32))

    def _reset(self, task, key):
        state = self.brax_env.reset(key)
        return state, state.obs

    def _transition(self, task, inner, action, key):
        state = self.brax_env.step(inner, jnp.clip(action, -1.0, 1.0))
        return state, state.obs, state.reward, state.done > 0

    @staticmethod
    def torso_xy(inner) -> jax.Array:
        """The torso's (x, y) [..., 2] of an inner (brax) state."""
        return inner.pipeline_state.x.pos[..., 0, :2]
