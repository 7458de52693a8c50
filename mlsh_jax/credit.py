"""Credit assignment of the sub-policy update: how much of a joint slot's data each sub-policy trains on.

Under the paper's rule (`credit.rule="paper"`) every step trains the sub-policy that was active at it,
with weight 1. While fresh masters are still indifferent, the K sub-policies then see statistically
identical data, get the same expected gradient, and each commits to a goal on its own: with K=2
about half of all runs end with both sub-policies on the same goal.

The responsibility rule (`credit.rule="responsibility"`, competitive learning as in mixtures of
experts) couples them: within each joint slot i, sub-policy k's samples are weighted by how much
better k did on that slot's task than the other sub-policies did, in this very update:

    r_ik = mean reward per step over the steps of slot i where k was active (undefined if none)
    z_ik = (r_ik - mean_k' r_ik') / (std_k' r_ik' + eps)        over the k' active in slot i
    p_ik = softmax_k(z_ik / temperature)                        over the k active in slot i, 0 elsewhere
    w_ik = K p_ik                                               (optionally balanced: `balance`)

Every sample of slot i at which k acted enters k's PPO loss with weight w_ik. The loss is the
weighted mean sum(w x) / sum(w) over each sub-policy's samples (`losses.ppo_loss`), so only the
relative weights within one sub-policy's data matter, never their total: a sub-policy that loses
every slot still trains as strongly as one that wins, on the slots where it lost least; with one
joint slot per update (the `paper` presets) all of a sub-policy's samples carry one weight and the
update is the paper rule's. With K=2 and a low temperature nearly all of a slot's data goes to the
sub-policy that earned more there. A slot with one active sub-policy gives it weight K; equal rates
give equal weights.

A handover (`credit.handover_update=H`, default 30 in every preset; 0: never) uses the responsibility
rule for updates 0..H-1 and the paper's rule from update H on: the weights only have to break the
symmetry while the sub-policies are still alike; once they have split, each trains on all of its
data again (kept on, they starve the ant tasks' sub-policies: docs/results_ant.md).

Staged unfreezing (`credit.unfreeze_interval=S`) composes with either rule: sub-policy k gets no
data before update k S, so the first ones commit before the next ones start to learn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlsh_jax.config import CreditConfig

# Added to the spread of the reward rates in z: rates closer than this (in scaled reward per step)
# count as a tie and split the data evenly instead of handing it to the noise.
RATE_EPSILON = 1e-3


def reward_rates(rewards: jax.Array, sub_index: jax.Array, num_subpolicies: int) -> tuple[jax.Array, jax.Array]:
    """Each sub-policy's mean reward per step in each slot.

    Args:
      rewards: [C, ...] rewards of C slots (any trailing axes: time, env copies).
      sub_index: [C, ...] int, the sub-policy active at each step.

    Returns:
      (rates [C, K], active [C, K] bool: k acted at some step of slot i; rates are 0 where not).
    """
    one_hot = jax.nn.one_hot(sub_index, num_subpolicies).reshape(sub_index.shape[0], -1, num_subpolicies)
    counts = jnp.sum(one_hot, axis=1)
    totals = jnp.einsum("cn,cnk->ck", rewards.reshape(rewards.shape[0], -1), one_hot)
    active = counts > 0
    return jnp.where(active, totals / jnp.maximum(counts, 1.0), 0.0), active


def responsibilities(rates: jax.Array, active: jax.Array, temperature: jax.Array) -> jax.Array:
    """p [C, K]: softmax over the active sub-policies of each slot of their standardised rates / temperature.

    Rows sum to 1 where any sub-policy is active (0 at inactive entries); all-zero rows otherwise."""
    count = jnp.maximum(jnp.sum(active, axis=1, keepdims=True), 1)
    mean = jnp.sum(jnp.where(active, rates, 0.0), axis=1, keepdims=True) / count
    std = jnp.sqrt(jnp.sum(jnp.where(active, jnp.square(rates - mean), 0.0), axis=1, keepdims=True) / count)
    logits = jnp.where(active, (rates - mean) / (std + RATE_EPSILON) / temperature, -jnp.inf)
    p = jnp.exp(logits - jnp.max(logits, axis=1, keepdims=True))
    p = jnp.where(active, p, 0.0)
    return p / jnp.maximum(jnp.sum(p, axis=1, keepdims=True), 1e-30)


def balance(p: jax.Array, slot_mask: jax.Array, iterations: int) -> jax.Array:
    """Sinkhorn balancing of responsibilities p [C, K] over the slots where `slot_mask` [C] is set:
    alternately scales each sub-policy's column to an equal share of the slots and each row back to 1,
    so no sub-policy is starved of data when another wins most slots. Entries that are 0 stay 0; a
    sub-policy active in no slot is left out of the shares."""
    p = jnp.where(slot_mask[:, None], p, 0.0)
    present = jnp.sum(p, axis=0) > 0
    target = jnp.sum(slot_mask) / jnp.maximum(jnp.sum(present), 1)

    def step(p, _):
        columns = jnp.sum(p, axis=0)
        p = p * jnp.where(present, target / jnp.maximum(columns, 1e-30), 1.0)[None, :]
        rows = jnp.sum(p, axis=1, keepdims=True)
        return p / jnp.maximum(rows, 1e-30), None

    p, _ = jax.lax.scan(step, p, None, length=iterations)
    return p


def temperature_at(credit: CreditConfig, update: jax.Array) -> jax.Array:
    """The responsibility temperature at `update` (int []): `temperature`, moved linearly to
    `final_temperature` over the first `anneal_updates` updates, constant after."""
    if credit.anneal_updates == 0:
        return jnp.asarray(credit.temperature, jnp.float32)
    progress = jnp.clip(update / credit.anneal_updates, 0.0, 1.0)
    return credit.temperature + progress * (credit.final_temperature - credit.temperature)


def unfrozen(credit: CreditConfig, update: jax.Array, num_subpolicies: int) -> jax.Array:
    """[K] bool: which sub-policies may train at `update` (staged unfreezing; all when the interval is 0)."""
    return update >= jnp.arange(num_subpolicies) * credit.unfreeze_interval


def slot_weights(credit: CreditConfig, rewards: jax.Array, sub_index: jax.Array, slot_mask: jax.Array,
                 update: jax.Array, num_subpolicies: int) -> jax.Array:
    """w [C, K]: the weight of every sample of slot i at which sub-policy k acted.

    Args:
      credit: the rule and its settings.
      rewards: [C, ...] (scaled) rewards of the C joint slots; sub_index: [C, ...] int, the active sub-policy.
      slot_mask: [C] bool, which of the C entries are real joint slots (the rest get weight 0).
      update: int [], updates done so far (annealing, handover, staged unfreezing).
    """
    if credit.rule == "paper":
        weights = jnp.ones(slot_mask.shape + (num_subpolicies,))
    else:
        rates, active = reward_rates(rewards, sub_index, num_subpolicies)
        p = responsibilities(rates, active, temperature_at(credit, update))
        if credit.balance_iterations:
            p = balance(p, slot_mask, credit.balance_iterations)
        weights = num_subpolicies * p
        if credit.handover_update:
            weights = jnp.where(update >= credit.handover_update, 1.0, weights)
    return weights * slot_mask[:, None] * unfrozen(credit, update, num_subpolicies)[None, :]
