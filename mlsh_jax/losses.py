"""Pure loss functions: GAE with bootstrap at time limits, and the one PPO loss that serves the
master and the sub-policies alike (per-sample weights; for a stack of learners, a group per sample)."""

from __future__ import annotations

import functools
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
      group: which learner of a stack each sample trains, int32 [...] (the active sub-policy), or
        None for a single learner.
    """

    obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    advantages: jax.Array
    returns: jax.Array
    group: jax.Array | None = None


def _weighted_mean(x: jax.Array, weights: jax.Array, group: jax.Array | None, num_groups: int,
                   floor: float = 0.0) -> jax.Array:
    """Weighted mean sum(w x) / max(sum(w), floor) of `x` [...] (a scalar), or one per group
    [num_groups] when `group` [...] is given; 0 where the weights sum to 0. With the default floor 0
    only the ratios of the weights matter, not their total."""
    terms = jnp.stack([x * weights, weights], axis=-1).reshape(-1, 2)
    if group is None:
        sums = jnp.sum(terms, axis=0)                                                 # [2]
    else:
        sums = jax.ops.segment_sum(terms, group.reshape(-1), num_groups)            # [num_groups, 2]
    total = sums[..., 1]
    return sums[..., 0] / jnp.where(total > 0, jnp.maximum(total, floor), 1.0)


def standardize(advantages: jax.Array, weights: jax.Array, group: jax.Array | None = None,
                num_groups: int = 1, weight_floor: float = 0.0) -> jax.Array:
    """Advantages [...] standardised to weighted mean 0 and std 1 over all samples, or over each
    group's samples when `group` [...] (ints in [0, num_groups)) is given; `weights` [...] >= 0.
    The weighted means divide by max(total weight, `weight_floor`): with the default 0 (the PPO
    loss's minibatch normalisation) any weights are standardised exactly, whatever their total; a
    floor of 1 standardises a group whose weights total less than 1 as if the missing weight were
    samples at 0."""
    mean = functools.partial(_weighted_mean, weights=weights.astype(advantages.dtype), group=group,
                             num_groups=num_groups, floor=weight_floor)
    per_sample = (lambda g: g) if group is None else (lambda g: g[group])
    centred = advantages - per_sample(mean(advantages))
    return centred / (per_sample(jnp.sqrt(mean(jnp.square(centred)))) + 1e-8)


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
    num_groups: int = 1,
    normalize_advantages: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped PPO loss with a clipped value loss, averaged over samples with `weights` [...].

    A sample of weight 0 contributes nothing; advantages are normalised over the weighted samples
    (unless `normalize_advantages` is False: the batch's advantages were standardised already).
    `apply_fn(params, obs)` returns `(distribution parameters, values)` for `distribution`
    (categorical or Gaussian) for every sample.

    A stack of learners (the sub-policies): when `batch.group` is set, the samples of each group
    form their own loss (weighted means and advantage normalisation over that group's samples
    only, as if each learner had its own batch), the returned loss is the sum over the
    `num_groups` groups and every metric has shape [num_groups]. `apply_fn` then evaluates each
    sample with its own group's parameters (`networks.apply_by_group`).

    Returns:
      (scalar loss, metrics dict: loss, policy_loss, value_loss, entropy, approx_kl, clip_fraction;
      scalars, or [num_groups]).
    """
    weights = weights.astype(jnp.float32)
    mean = functools.partial(_weighted_mean, weights=weights, group=batch.group, num_groups=num_groups)
    per_sample = (lambda g: g) if batch.group is None else (lambda g: g[batch.group])
    dist_params, values = apply_fn(params, batch.obs)
    new_log_probs = distribution.log_prob(dist_params, batch.actions)

    if normalize_advantages:
        advantages = standardize(batch.advantages, weights, batch.group, num_groups)
    else:
        advantages = batch.advantages

    log_ratio = new_log_probs - batch.log_probs
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    policy_loss = -mean(surrogate)

    value_error = jnp.square(values - batch.returns)
    if value_clip > 0:
        clipped_values = batch.values + jnp.clip(values - batch.values, -value_clip, value_clip)
        value_error = jnp.maximum(value_error, jnp.square(clipped_values - batch.returns))
    value_loss = 0.5 * mean(value_error)

    mean_entropy = mean(distribution.entropy(dist_params))
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": mean_entropy,
        "approx_kl": mean((ratio - 1) - log_ratio),
        "clip_fraction": mean((jnp.abs(ratio - 1) > clip_eps).astype(jnp.float32)),
    }
    return jnp.sum(loss), metrics
