"""Running learned policies outside training: one sub-policy alone, or the hierarchy, on given tasks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from envs.base import EnvState
from mlsh_jax.networks import ActorCritic
from mlsh_jax.trainer import Trainer, TrainState


def run_subpolicy(
    trainer: Trainer, state: TrainState, sub_index: int, tasks: Any, key: jax.Array, greedy: bool = False
) -> EnvState:
    """Runs sub-policy `sub_index` alone for one episode on each task (no master).

    Args:
      tasks: a batch of tasks, leading axis [n].
      greedy: take the most likely action instead of sampling.

    Returns:
      EnvState trajectory with leading axes [episode_length + 1, n] (index 0 is the reset state).
    """
    env = trainer.env
    params = jax.tree.map(lambda x: x[sub_index], state.subs.params)
    num_tasks = jax.tree.leaves(tasks)[0].shape[0]
    reset_key, run_key = jax.random.split(key)
    start = jax.vmap(env.reset)(tasks, jax.random.split(reset_key, num_tasks))

    def step(env_state, step_key):
        action_key, env_key = jax.random.split(step_key)
        obs = trainer.normalize(state.obs_stats, env_state.obs)
        logits = trainer.sub_model.apply(params, obs, method=ActorCritic.logits)
        action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(action_key, logits)
        next_state = jax.vmap(env.step)(tasks, env_state, action, jax.random.split(env_key, num_tasks))
        return next_state, next_state

    _, trajectory = jax.lax.scan(step, start, jax.random.split(run_key, env.episode_length))
    return jax.tree.map(lambda s, t: jnp.concatenate([s[None], t]), start, trajectory)
