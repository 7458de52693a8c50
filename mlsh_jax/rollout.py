"""Collecting experience with the hierarchy in one task slot (vmapped over slots by the trainer).

The master picks a sub-policy every `macro_duration` steps; the chosen sub-policy acts at every step.
Both levels' values are *not* computed here: the trainer evaluates them afterwards in large batches
(same parameters, so the same numbers), which keeps the scan body small.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from envs.base import EnvState, TaskEnv, auto_reset_step
from mlsh_jax.config import MLSHConfig
from mlsh_jax.networks import ActorCritic


@struct.dataclass
class SlotEnvs:
    """The E env copies of one slot: `state` [E] and the running `episode_return` [E]."""

    state: EnvState
    episode_return: jax.Array


@struct.dataclass
class Transition:
    """Transitions of one level of the hierarchy, leading axes [time, E] per slot.

    At the sub-policy timescale ([T, E]) one transition is one env step. At the master timescale
    ([M, E], M = T / N) one transition spans N env steps, or fewer when the episode ended inside it:
    `action` is the chosen sub-policy, `reward` the sum of the rewards up to the end of the episode.
    `obs` and `final_obs` are raw observations before and after (final_obs before any reset).
    """

    obs: jax.Array
    final_obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array


@struct.dataclass
class MacroProgress:
    """The master transition being built during one macro step, per env copy [E].

    Attributes:
      reward: summed reward so far; terminated / truncated: how its episode ended (if it did);
      final_obs: raw observation it ends in [E, obs]; ended: its episode has ended.
    """

    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    final_obs: jax.Array
    ended: jax.Array


@struct.dataclass
class EpisodeStats:
    """Per slot: `return_sum` and `episode_count` of the episodes that ended, `sub_steps` [K]."""

    return_sum: jax.Array
    episode_count: jax.Array
    sub_steps: jax.Array


def reset_slot_envs(env: TaskEnv, task: Any, key: jax.Array, num_envs: int, desync: bool = False) -> SlotEnvs:
    """Starts `num_envs` fresh episodes of `task`. With `desync` each copy's first episode starts at
    a uniformly drawn time step in [0, episode_length), so that its time limit (a truncation, which is
    bootstrapped) falls elsewhere than its neighbours'; later episodes run the whole length."""
    states = jax.vmap(env.reset, in_axes=(None, 0))(task, jax.random.split(key, num_envs))
    if desync:
        time_key = jax.random.fold_in(key, num_envs)
        states = states.replace(time=jax.random.randint(time_key, (num_envs,), 0, env.episode_length, jnp.int32))
    return SlotEnvs(state=states, episode_return=jnp.zeros((num_envs,), jnp.float32))


def choose_subpolicies(
    master_model: ActorCritic, master_params, obs: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Master decision for a batch of normalised observations [E, obs].

    The master's distribution (`ExploringCategorical`) already mixes in the uniform exploratory
    choice (`config.random_master_action_prob`). Returns (sub-policy index [E] int32, its
    log-probability under that mixture [E]).
    """
    logits = master_model.apply(master_params, obs, method=ActorCritic.dist_params)
    choice = master_model.distribution.sample(key, logits)
    return choice, master_model.distribution.log_prob(logits, choice)


def subpolicy_dist_params(sub_model: ActorCritic, sub_params, obs: jax.Array, sub_index: jax.Array) -> jax.Array:
    """Distribution parameters [E, P] of the active sub-policy `sub_index` [E] for the sub-policies'
    observations [E, obs].

    `sub_params` is a stack with leading axis K; all K are evaluated (K is small) and the active
    one is selected, which keeps the computation dense.
    """
    all_params = jax.vmap(lambda p: sub_model.apply(p, obs, method=ActorCritic.dist_params))(sub_params)
    return jnp.take_along_axis(all_params, sub_index[None, :, None], axis=0)[0]


def slot_rollout(
    env: TaskEnv,
    config: MLSHConfig,
    master_model: ActorCritic,
    sub_model: ActorCritic,
    normalize,
    subpolicy_view,
    master_params,
    sub_params,
    task: Any,
    envs: SlotEnvs,
    key: jax.Array,
    sub_input=None,
) -> tuple[SlotEnvs, Transition, Transition, EpisodeStats]:
    """Runs one slot's E env copies for T steps (T / N master decisions each).

    Args:
      normalize: maps raw observations [..., obs] to the master's inputs (and the sub-policies').
      subpolicy_view: the part of normalised observations [..., obs] the sub-policies see.
      sub_input: optional map of raw observations to the sub-policies' inputs (default
        `subpolicy_view(normalize(obs))`; frozen sub-policies keep statistics of their own).
      master_params: this slot's master (ignored for the shared-policy baseline).
      sub_params: the K sub-policies, stacked on a leading axis.
      task, envs: this slot's task and env copies.

    Returns:
      (envs after the rollout, sub-policy transitions [T, E], master transitions [M, E], EpisodeStats).
      The sub-policy active at step t is the master's action of macro step t // N.
    """
    num_envs = config.envs_per_slot
    num_subs = config.num_subpolicies
    if sub_input is None:
        sub_input = lambda obs: subpolicy_view(normalize(obs))
    env_step = jax.vmap(auto_reset_step, in_axes=(None, None, 0, 0, 0))

    def one_step(carry, step_key):
        envs, sub_index, macro = carry
        action_key, env_key = jax.random.split(step_key)
        obs = envs.state.obs
        dist_params = subpolicy_dist_params(sub_model, sub_params, sub_input(obs), sub_index)
        action = sub_model.distribution.sample(action_key, dist_params)
        out = env_step(env, task, envs.state, sub_model.distribution.to_env(action),
                       jax.random.split(env_key, num_envs))
        done = out.terminated | out.truncated
        episode_return = envs.episode_return + out.reward
        record = Transition(
            obs=obs, final_obs=out.final_obs, action=action,
            log_prob=sub_model.distribution.log_prob(dist_params, action), reward=out.reward,
            terminated=out.terminated, truncated=out.truncated,
        )
        ended = (jnp.sum(jnp.where(done, episode_return, 0.0)), jnp.sum(done).astype(jnp.float32))
        # The master's transition stops at the end of the episode it started in.
        open_ = ~macro.ended
        macro = MacroProgress(
            reward=macro.reward + jnp.where(open_, out.reward, 0.0),
            terminated=macro.terminated | (open_ & out.terminated),
            truncated=macro.truncated | (open_ & out.truncated),
            final_obs=jnp.where(open_[:, None], out.final_obs, macro.final_obs),
            ended=macro.ended | done,
        )
        envs = SlotEnvs(state=out.state, episode_return=jnp.where(done, 0.0, episode_return))
        return (envs, sub_index, macro), (record, ended)

    def one_macro_step(envs, macro_key):
        choice_key, steps_key = jax.random.split(macro_key)
        obs = envs.state.obs
        if config.hierarchical:
            sub_index, choice_log_prob = choose_subpolicies(
                master_model, master_params, normalize(obs), choice_key
            )
        else:
            sub_index = jnp.zeros((num_envs,), jnp.int32)
            choice_log_prob = jnp.zeros((num_envs,))
        false = jnp.zeros((num_envs,), bool)
        macro = MacroProgress(reward=jnp.zeros((num_envs,)), terminated=false, truncated=false,
                              final_obs=obs, ended=false)
        (envs, _, macro), (records, ended) = jax.lax.scan(
            one_step, (envs, sub_index, macro), jax.random.split(steps_key, config.macro_duration)
        )
        macro_record = Transition(
            obs=obs, final_obs=macro.final_obs, action=sub_index, log_prob=choice_log_prob,
            reward=macro.reward, terminated=macro.terminated, truncated=macro.truncated,
        )
        return envs, (records, macro_record, ended)

    envs, (steps, macros, ended) = jax.lax.scan(
        one_macro_step, envs, jax.random.split(key, config.macro_steps_per_rollout)
    )
    # [M, N, E, ...] -> [T, E, ...]
    steps = jax.tree.map(lambda x: x.reshape((config.rollout_length,) + x.shape[2:]), steps)
    stats = EpisodeStats(
        return_sum=jnp.sum(ended[0]),
        episode_count=jnp.sum(ended[1]),
        sub_steps=jnp.sum(jax.nn.one_hot(macros.action, num_subs), axis=(0, 1)) * config.macro_duration,
    )
    return envs, steps, macros, stats
