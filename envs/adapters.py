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
            return env.action_size

        def action_space(self, params=None):
            if env.continuous_actions:
                return spaces.Box(-1.0, 1.0, (env.action_size,), jnp.float32)
            return spaces.Discrete(env.action_size)

        def observation_space(self, params=None):
            return spaces.Box(-jnp.inf, jnp.inf, (env.observation_size,), jnp.float32)

    return GymnaxTaskEnv()


def to_brax(env: TaskEnv):
    """Wraps `env` as a brax `Env` (`reset(rng) -> State`, `step(state, action) -> State`) that draws
    a new task at every reset, for `brax.training`'s agents and wrappers.

    The time limit is reported in `info['truncation']` (brax's convention) and never in `done`.
    brax's agents act with continuous vectors: a continuous env takes them as they are; for a
    discrete env the action vector has one entry per discrete action and the env takes its argmax. Note that brax's `AutoResetWrapper` restarts an
    episode from its *first* state, so each env copy then keeps its first task.
    """
    from brax.envs.base import Env as BraxEnv
    from brax.envs.base import State as BraxState

    class BraxTaskEnv(BraxEnv):
        def reset(self, rng):
            task_key, reset_key = jax.random.split(rng)
            task = env.sample_task(task_key)
            state = env.reset(task, reset_key)
            return BraxState(
                pipeline_state=FlatState(task=task, env_state=state, time=state.time), obs=state.obs,
                reward=state.reward, done=jnp.zeros(()), metrics={},
                info={"truncation": jnp.zeros(()), "rng": rng},
            )

        def step(self, state, action):
            inner = state.pipeline_state
            step_key, rng = jax.random.split(state.info["rng"])
            if not env.continuous_actions:
                action = jnp.argmax(action, axis=-1)
            stepped = env.step(inner.task, inner.env_state, action, step_key)
            info = dict(state.info, truncation=stepped.truncated.astype(jnp.float32), rng=rng)
            return state.replace(
                pipeline_state=FlatState(task=inner.task, env_state=stepped, time=stepped.time),
                obs=stepped.obs, reward=stepped.reward, done=stepped.terminated.astype(jnp.float32),
                info=info,
            )

        @property
        def observation_size(self):
            return env.observation_size

        @property
        def action_size(self):
            return env.action_size

        @property
        def backend(self):
            return "jax"

    return BraxTaskEnv()
