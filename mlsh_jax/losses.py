"""Pure loss functions: GAE with bootstrap at time limits, and the one PPO loss that serves the
master and the sub-policies alike (masked by per-sample weights)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from mlsh_jax.networks import ActionDistribution


def compute_gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminations: jax.Array,
    truncations: jax.Array,
    discount: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a time-major batch.

    Unlike `brax.training.agents.ppo.losses.compute_gae` (which drops the transition at a time limit),
    this bootstraps the value of the observation reached at a time limit: `next_values[t]` is
    V(s_{t+1}) for the state the transition reached (before any reset), so a truncated step gets
    r + gamma * V(s_final) and a terminated step gets r alone. The recursion is cut at both.

    Args:
      rewards, values, next_values, terminations, truncations: shape [T, ...]; terminations and
        truncations are booleans or 0/1 floats.
      discount: gamma; gae_lambda: lambda.

    Returns:
      (advantages [T, ...], returns [T, ...]) with returns = advantages + values.
    """
    not_terminated = 1.0 - terminations.astype(values.dtype)
    continues = not_terminated * (1.0 - truncations.astype(values.dtype))
    deltas = rewards + discount * not_terminated * next_values - values

    def backward(next_advantage, inputs):
        delta, cont = inputs
        advantage = delta + discount * gae_lambda * cont * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(values[0]), (deltas, continues), reverse=True
    )
    return advantages, advantages + values


@struct.dataclass
class PPOBatch:
    """Samples for one PPO update, any leading shape [...].

    Attributes:
      obs: normalised observations [..., obs_size].
      actions: actions taken, [...] int32 (discrete) or [..., action_size] float (continuous).
      log_probs: log-probability of the action when it was taken [...].
      values: value prediction when the sample was collected [...].
      advantages: GAE advantages [...].
      returns: value targets [...].
    """

    obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    advantages: jax.Array
    returns: jax.Array


def _weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def ppo_loss(
    params,
    batch: PPOBatch,
    weights: jax.Array,
    *,
    apply_fn: Callable,
    distribution: ActionDistribution,
    clip_eps: float,
    value_clip: float,
    entropy_coef: float,
    value_coef: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped PPO loss with a clipped value loss, averaged over samples with `weights` [...].

    A sample of weight 0 contributes nothing (a sub-policy is trained only on the steps where it was
    active); advantages are normalised over the weighted samples. `apply_fn(params, obs)` returns
    `(distribution parameters, values)` for `distribution` (categorical or Gaussian).

    Returns:
      (scalar loss, metrics dict of scalars: loss, policy_loss, value_loss, entropy, approx_kl, clip_fraction).
    """
    weights = weights.astype(jnp.float32)
    dist_params, values = apply_fn(params, batch.obs)
    new_log_probs = distribution.log_prob(dist_params, batch.actions)

    adv_mean = _weighted_mean(batch.advantages, weights)
    adv_std = jnp.sqrt(_weighted_mean(jnp.square(batch.advantages - adv_mean), weights))
    advantages = (batch.advantages - adv_mean) / (adv_std + 1e-8)

    log_ratio = new_log_probs - batch.log_probs
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    policy_loss = -_weighted_mean(surrogate, weights)

    value_error = jnp.square(values - batch.returns)
    if value_clip > 0:
        clipped_values = batch.values + jnp.clip(values - batch.values, -value_clip, value_clip)
        value_error = jnp.maximum(value_error, jnp.square(clipped_values - batch.returns))
    value_loss = 0.5 * _weighted_mean(value_error, weights)

    mean_entropy = _weighted_mean(distribution.entropy(dist_params), weights)
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": mean_entropy,
        "approx_kl": _weighted_mean((ratio - 1) - log_ratio, weights),
        "clip_fraction": _weighted_mean((jnp.abs(ratio - 1) > clip_eps).astype(jnp.float32), weights),
    }
    return loss, metrics
