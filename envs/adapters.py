"""Thin adapters that let flat-PPO libraries train on a `TaskEnv` (a fresh task every episode).

`to_gymnax(env)` gives a gymnax `Environment` (used by rejax). gymnax itself only knows `done`, so a
library on top of it cannot tell a time limit from a termination; that is the library's limitation,
not the env's. gymnax is imported lazily: it is only needed by the benchmark extra.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.base import EnvState, TaskEnv


@struct.dataclass
class FlatState:
    """gymnax state of an adapted env: the task of the current episode and the env state."""

    task: object
    env_state: EnvState
    time: jax.Array


def to_gymnax(env: TaskEnv):
    """Wraps `env` as a gymnax `Environment` that draws a new task at every episode reset."""
    from gymnax.environments import environment, spaces

    @struct.dataclass
    class Params(environment.EnvParams):
        max_steps_in_episode: int = env.episode_length

    class GymnaxTaskEnv(environment.Environment):
        @property
        def default_params(self):
            return Params()

        def reset_env(self, key, params):
            task_key, reset_key = jax.random.split(key)
            task = env.sample_task(task_key)
            state = env.reset(task, reset_key)
            return state.obs, FlatState(task=task, env_state=state, time=state.time)

        def step_env(self, key, state, action, params):
            stepped = env.step(state.task, state.env_state, action, key)
            done = stepped.terminated | stepped.truncated
            info = {"truncated": stepped.truncated}
            next_state = FlatState(task=state.task, env_state=stepped, time=stepped.time)
            return stepped.obs, next_state, stepped.reward, done, info

        @property
        def name(self):
            return env.name

        @property
        def num_actions(self):
            return env.num_actions

        def action_space(self, params=None):
            return spaces.Discrete(env.num_actions)

        def observation_space(self, params=None):
            return spaces.Box(-jnp.inf, jnp.inf, (env.observation_size,), jnp.float32)

    return GymnaxTaskEnv()
