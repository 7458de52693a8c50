"""Running learned policies outside training: one sub-policy alone, or masters with the sub-policies,
on given tasks.

Both take what they need from the state as host arrays first: a training state is laid out over
every device (slots split, the rest replicated), while the episodes here run on the default device.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import EnvState, TaskEnv
from mlsh_jax.distributed import to_host
from mlsh_jax.networks import ActorCritic
from mlsh_jax.trainer import Trainer, TrainState


def run_subpolicy(
    trainer: Trainer, state: TrainState, sub_index: int, tasks: Any, key: jax.Array, greedy: bool = False,
    env: TaskEnv | None = None,
) -> EnvState:
    """Runs sub-policy `sub_index` alone for one episode on each task (no master).

    Args:
      tasks: a batch of tasks, leading axis [n].
      greedy: take the most likely action instead of sampling.
      env: the env to run in (default the trainer's); it must observe as the trainer's does, e.g. the
        same task without the trainer's reward shaping.

    Returns:
      EnvState trajectory with leading axes [episode_length + 1, n] (index 0 is the reset state).
    """
    params = jax.tree.map(lambda x: x[sub_index], to_host(state.subs.params))
    sub_stats, tasks = to_host(Trainer.subpolicy_stats(state)), jax.device_get(tasks)
    return _subpolicy_episode(trainer, env or trainer.env, greedy)(params, sub_stats, tasks, key)


@functools.lru_cache(maxsize=16)
def _subpolicy_episode(trainer: Trainer, env: TaskEnv, greedy: bool):
    """`run_subpolicy`'s episode as one compiled program per (trainer, env, greedy): every sub-policy
    and every call with the same number of tasks reuses it."""

    @jax.jit
    def episode(params, sub_stats, tasks, key):
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        reset_key, run_key = jax.random.split(key)
        start = jax.vmap(env.reset)(tasks, jax.random.split(reset_key, num_tasks))
        distribution = trainer.sub_model.distribution

        def step(env_state, step_key):
            action_key, env_key = jax.random.split(step_key)
            obs = trainer.subpolicy_input(sub_stats, env_state.obs)
            dist_params = trainer.sub_model.apply(params, obs, method=ActorCritic.dist_params)
            action = distribution.mode(dist_params) if greedy else distribution.sample(action_key, dist_params)
            next_state = jax.vmap(env.step)(tasks, env_state, distribution.to_env(action),
                                            jax.random.split(env_key, num_tasks))
            return next_state, next_state

        _, trajectory = jax.lax.scan(step, start, jax.random.split(run_key, env.episode_length))
        return _with_start(start, trajectory)

    return episode


def run_hierarchy(
    trainer: Trainer, state: TrainState, master_params, tasks: Any, key: jax.Array, greedy: bool = False,
    env: TaskEnv | None = None,
) -> tuple[EnvState, jax.Array]:
    """Runs masters with the sub-policies for one episode per task (no random master actions).

    Args:
      master_params: one master per task, leading axis [n] (e.g. the trained slots' own masters).
      tasks: tasks with leading axis [n].
      greedy: most likely master choices and actions instead of samples.
      env: the env to run in (default the trainer's; see `run_subpolicy`).

    Returns:
      (EnvState trajectory [episode_length + 1, n] (index 0 is the reset state),
       active sub-policy [episode_length, n] int32).
    """
    networks = (jax.device_get(master_params), to_host(state.subs.params), to_host(state.obs_stats),
                to_host(Trainer.subpolicy_stats(state)))
    return _hierarchy_episode(trainer, env or trainer.env, greedy)(*networks, jax.device_get(tasks), key)


@functools.lru_cache(maxsize=16)
def _hierarchy_episode(trainer: Trainer, env: TaskEnv, greedy: bool):
    """`run_hierarchy`'s episode as one compiled program per (trainer, env, greedy)."""
    master, sub, macro_duration = trainer.master_model, trainer.sub_model, trainer.config.macro_duration

    def pick(distribution, params, pick_key):
        return distribution.mode(params) if greedy else distribution.sample(pick_key, params)

    @jax.jit
    def episode(master_params, sub_params, obs_stats, sub_stats, tasks, key):
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        reset_key, run_key = jax.random.split(key)
        start = jax.vmap(env.reset)(tasks, jax.random.split(reset_key, num_tasks))

        def step(carry, inputs):
            env_state, sub_index = carry
            t, step_key = inputs
            master_key, action_key, env_key = jax.random.split(step_key, 3)
            obs = trainer.normalize(obs_stats, env_state.obs)
            master_out = jax.vmap(lambda p, o: master.apply(p, o, method=ActorCritic.dist_params))(master_params, obs)
            sub_index = jnp.where(t % macro_duration == 0, pick(master.distribution, master_out, master_key),
                                  sub_index)
            sub_obs = trainer.subpolicy_input(sub_stats, env_state.obs)
            all_params = jax.vmap(lambda p: sub.apply(p, sub_obs, method=ActorCritic.dist_params))(sub_params)
            dist_params = jnp.take_along_axis(all_params, sub_index[None, :, None], axis=0)[0]
            action = sub.distribution.to_env(pick(sub.distribution, dist_params, action_key))
            next_state = jax.vmap(env.step)(tasks, env_state, action, jax.random.split(env_key, num_tasks))
            return (next_state, sub_index), (next_state, sub_index)

        steps = jnp.arange(env.episode_length)
        carry = (start, jnp.zeros((num_tasks,), jnp.int32))
        _, (trajectory, active) = jax.lax.scan(step, carry, (steps, jax.random.split(run_key, env.episode_length)))
        return _with_start(start, trajectory), active

    return episode


def _with_start(start: EnvState, trajectory: EnvState) -> EnvState:
    """The reset state [n] put in front of a scanned trajectory [T, n]: [T + 1, n]."""
    return jax.tree.map(lambda s, t: jnp.concatenate([s[None], t]), start, trajectory)


def episode_returns(trajectory: EnvState) -> jax.Array:
    """Return [n] of the first episode of each copy in a trajectory [T + 1, n] that does not reset:
    the rewards up to and including the step that ended it (terminated or truncated)."""
    ended = trajectory.terminated[1:] | trajectory.truncated[1:]                  # [T, n]
    ended_before = jnp.cumsum(ended, axis=0) - ended                              # ends strictly before t
    return jnp.sum(jnp.where(ended_before == 0, trajectory.reward[1:], 0.0), axis=0)


def slot_returns(trainer: Trainer, state: TrainState, key: jax.Array, env: TaskEnv | None = None,
                 episodes: int = 4) -> dict:
    """Each task slot's policy on the slot's own task for `episodes` sampled episodes in `env`
    (default the trainer's): its master with the sub-policies (MLSH), or the shared policy.

    Returns {"mean_return", "mean_return_task_balanced" (the mean over kinds of task of their
    slots' mean; the plain mean for an env without kinds), "by_kind" {kind name: mean},
    "post_warmup_mean_return" (MLSH: slots past their warmup; None if none), "episodes"}.
    """
    env = env or trainer.env
    slots = to_host(state.slots)
    tasks = jax.tree.map(lambda x: np.repeat(np.asarray(x), episodes, axis=0), slots.task)     # [B * episodes]
    if slots.master is None:
        trajectory = run_subpolicy(trainer, state, 0, tasks, key, env=env)
    else:
        masters = jax.tree.map(lambda x: np.repeat(np.asarray(x), episodes, axis=0), slots.master.params)
        trajectory, _ = run_hierarchy(trainer, state, masters, tasks, key, env=env)
    returns = np.asarray(episode_returns(trajectory)).reshape(-1, episodes).mean(axis=1)      # [B]
    kinds = np.asarray(jax.vmap(env.task_kind)(slots.task))
    by_kind = {env.task_kinds[k] if env.task_kinds else str(k): float(returns[kinds == k].mean())
               for k in np.unique(kinds)}
    post_warmup = np.asarray(slots.phase) >= trainer.config.warmup_updates
    return {"mean_return": float(returns.mean()),
            "mean_return_task_balanced": float(np.mean(list(by_kind.values()))),
            "by_kind": by_kind,
            "post_warmup_mean_return": (float(returns[post_warmup].mean())
                                        if slots.master is not None and post_warmup.any() else None),
            "episodes": int(returns.size * episodes)}
