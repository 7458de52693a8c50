"""Policy and value networks: separate tanh MLPs, categorical policy over discrete actions."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """tanh MLP with a linear output layer whose weights start at scale `output_scale`."""

    hidden_sizes: Sequence[int]
    output_size: int
    output_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_sizes:
            x = nn.tanh(nn.Dense(size, kernel_init=nn.initializers.orthogonal(jnp.sqrt(2.0)))(x))
        return nn.Dense(self.output_size, kernel_init=nn.initializers.orthogonal(self.output_scale))(x)


class ActorCritic(nn.Module):
    """A categorical policy and a state-value function with no shared layers.

    `__call__(obs [..., obs_size])` returns `(logits [..., num_actions], value [...])`.
    """

    num_actions: int
    hidden_sizes: Sequence[int] = (64, 64)

    def setup(self):
        # A small last policy layer starts the policy near uniform.
        self.policy = MLP(self.hidden_sizes, self.num_actions, output_scale=0.01)
        self.value = MLP(self.hidden_sizes, 1, output_scale=1.0)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.policy(obs), self.value(obs)[..., 0]

    def logits(self, obs: jax.Array) -> jax.Array:
        """Policy logits [..., num_actions] alone (no value network evaluated)."""
        return self.policy(obs)

    def state_value(self, obs: jax.Array) -> jax.Array:
        """State value [...] alone (no policy network evaluated)."""
        return self.value(obs)[..., 0]


def log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    """Log-probability of integer `action` [...] under categorical `logits` [..., A]."""
    log_p = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy(logits: jax.Array) -> jax.Array:
    """Entropy [...] of categorical `logits` [..., A]."""
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
