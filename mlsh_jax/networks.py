"""Policy and value networks: separate MLPs, and the action distributions they drive.

A policy network outputs *distribution parameters* `[..., distribution.param_size]`: logits for a
categorical distribution over discrete actions (the master always; the sub-policies on discrete
envs), or the parameters of a Gaussian over continuous actions (the sub-policies on Brax envs):
- `DiagGaussian` (the paper's recipe): mean and a learned, state-independent log std as in PPO's
  MuJoCo setting; samples are not squashed, the env clips them;
- `TanhGaussian` (the locomotion recipe, brax's PPO): mean and a state-dependent std, samples
  squashed by tanh into (-1, 1).
Everything else (PPO loss, rollout, evaluation) goes through the distribution's `sample`,
`log_prob`, `entropy`, `mode` and `to_env` (the action the env receives), so the same code serves
every kind of action. Which networks and distribution a role (master / sub-policy) gets is its
`config.NetworkConfig`; `make_actor_critic` builds it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Categorical:
    """Categorical distribution over `num_actions` discrete actions; parameters are logits [..., A]."""

    num_actions: int

    @property
    def param_size(self) -> int:
        return self.num_actions

    def sample(self, key: jax.Array, params: jax.Array) -> jax.Array:
        """Integer actions [...] drawn from logits [..., A]."""
        return jax.random.categorical(key, params).astype(jnp.int32)

    def mode(self, params: jax.Array) -> jax.Array:
        """Most likely action [...]."""
        return jnp.argmax(params, axis=-1).astype(jnp.int32)

    def log_prob(self, params: jax.Array, action: jax.Array) -> jax.Array:
        """Log-probability [...] of integer `action` [...]."""
        log_p = jax.nn.log_softmax(params)
        return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self, params: jax.Array) -> jax.Array:
        """Entropy [...]."""
        log_p = jax.nn.log_softmax(params)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

    def to_env(self, action: jax.Array) -> jax.Array:
        """The action the env receives for a sampled `action` [...]: the same."""
        return action


@dataclasses.dataclass(frozen=True)
class ExploringCategorical(Categorical):
    """The master's distribution: with probability `uniform_prob` a uniform action, otherwise one
    drawn from the logits [..., A], i.e. the mixture (1 - p) softmax(logits) + p / A.

    Sampling, log-probabilities and entropy are all of the mixture, so PPO's importance ratio
    compares the policy that actually acted: a random choice of an action the logits give ~0
    probability has probability >= p / A here, not ~0 (with the plain softmax ratio such a sample
    gets a ratio of 1e4 and more, whose unclipped negative-advantage term blows up the update).
    """

    uniform_prob: float = 0.0

    def _log_probs(self, params: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(params)
        if self.uniform_prob == 0:
            return log_p
        if self.uniform_prob == 1:
            return jnp.full_like(log_p, -jnp.log(self.num_actions))
        return jnp.logaddexp(jnp.log1p(-self.uniform_prob) + log_p, jnp.log(self.uniform_prob / self.num_actions))

    def sample(self, key: jax.Array, params: jax.Array) -> jax.Array:
        """Integer actions [...] drawn from the mixture."""
        return jax.random.categorical(key, self._log_probs(params)).astype(jnp.int32)

    def log_prob(self, params: jax.Array, action: jax.Array) -> jax.Array:
        """Log-probability [...] of integer `action` [...] under the mixture."""
        return jnp.take_along_axis(self._log_probs(params), action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self, params: jax.Array) -> jax.Array:
        """Entropy [...] of the mixture."""
        log_p = self._log_probs(params)
        return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


@dataclasses.dataclass(frozen=True)
class DiagGaussian:
    """Diagonal Gaussian over `action_size` continuous actions; parameters are (mean, log std)
    concatenated, [..., 2 * action_size]. Samples are not squashed: the env clips them to its range."""

    action_size: int

    @property
    def param_size(self) -> int:
        return 2 * self.action_size

    def _split(self, params: jax.Array) -> tuple[jax.Array, jax.Array]:
        return params[..., : self.action_size], params[..., self.action_size:]

    def sample(self, key: jax.Array, params: jax.Array) -> jax.Array:
        """Actions [..., action_size]."""
        mean, log_std = self._split(params)
        return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)

    def mode(self, params: jax.Array) -> jax.Array:
        """The mean action [..., action_size]."""
        return self._split(params)[0]

    def log_prob(self, params: jax.Array, action: jax.Array) -> jax.Array:
        """Log-density [...] of `action` [..., action_size]."""
        mean, log_std = self._split(params)
        z = (action - mean) * jnp.exp(-log_std)
        return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

    def entropy(self, params: jax.Array) -> jax.Array:
        """Entropy [...]."""
        _, log_std = self._split(params)
        return jnp.sum(log_std + 0.5 * (1.0 + jnp.log(2 * jnp.pi)), axis=-1)

    def to_env(self, action: jax.Array) -> jax.Array:
        """The action the env receives [..., action_size]: the sample itself (the env clips it)."""
        return action


@dataclasses.dataclass(frozen=True)
class TanhGaussian:
    """Diagonal Gaussian squashed by tanh, as brax's PPO acts (`brax.training.distribution.
    NormalTanhDistribution`): parameters are (mean, raw scale) [..., 2 * action_size], the std is
    softplus(raw scale) + `min_std` and depends on the state.

    Samples, modes and log-probabilities are of the *pre-tanh* value u (what PPO stores); the env
    receives `to_env(u) = tanh(u)` in (-1, 1). `log_prob` includes the tanh Jacobian, so it is the
    density of the squashed action. `entropy` is the Gaussian's entropy plus the log-Jacobian
    log(1 - tanh(u)^2) at u = the mean (brax evaluates that term at a random sample; the mean makes
    the entropy bonus deterministic): it penalises means that saturate tanh, which no bonus on the
    Gaussian alone would.
    """

    action_size: int
    min_std: float = 0.001

    @property
    def param_size(self) -> int:
        return 2 * self.action_size

    def _mean_std(self, params: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean, raw_scale = params[..., : self.action_size], params[..., self.action_size:]
        return mean, jax.nn.softplus(raw_scale) + self.min_std

    def sample(self, key: jax.Array, params: jax.Array) -> jax.Array:
        """Pre-tanh actions [..., action_size]."""
        mean, std = self._mean_std(params)
        return mean + std * jax.random.normal(key, mean.shape)

    def mode(self, params: jax.Array) -> jax.Array:
        """The pre-tanh mean [..., action_size] (tanh of it is the squashed distribution's mode)."""
        return self._mean_std(params)[0]

    def log_prob(self, params: jax.Array, action: jax.Array) -> jax.Array:
        """Log-density [...] of the squashed action tanh(`action`), `action` [..., action_size] pre-tanh."""
        mean, std = self._mean_std(params)
        z = (action - mean) / std
        gaussian = -0.5 * jnp.square(z) - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)
        return jnp.sum(gaussian - _tanh_log_jacobian(action), axis=-1)

    def entropy(self, params: jax.Array) -> jax.Array:
        """Entropy estimate [...] (see the class docstring)."""
        mean, std = self._mean_std(params)
        return jnp.sum(jnp.log(std) + 0.5 * (1.0 + jnp.log(2 * jnp.pi)) + _tanh_log_jacobian(mean), axis=-1)

    def to_env(self, action: jax.Array) -> jax.Array:
        """The action the env receives [..., action_size]: tanh of the pre-tanh sample."""
        return jnp.tanh(action)


def _tanh_log_jacobian(u: jax.Array) -> jax.Array:
    """log |d tanh(u) / du| = log(1 - tanh(u)^2), computed stably as 2 (log 2 - u - softplus(-2u))."""
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


ActionDistribution = Categorical | DiagGaussian | TanhGaussian  # ExploringCategorical is a Categorical
CONTINUOUS_DISTRIBUTIONS = {"gaussian": DiagGaussian, "tanh_gaussian": TanhGaussian}
ACTIVATIONS = {"tanh": nn.tanh, "swish": nn.swish, "relu": nn.relu, "elu": nn.elu}


def action_distribution(action_size: int, continuous: bool, kind: str = "gaussian") -> ActionDistribution:
    """The distribution for an env's actions (`env.action_size`, `env.continuous_actions`); `kind`
    names the continuous one (`CONTINUOUS_DISTRIBUTIONS`: "gaussian" or "tanh_gaussian")."""
    return CONTINUOUS_DISTRIBUTIONS[kind](action_size) if continuous else Categorical(action_size)


class MLP(nn.Module):
    """MLP with `activation` (a name of `ACTIVATIONS`) and a linear output layer whose weights start
    at scale `output_scale`."""

    hidden_sizes: Sequence[int]
    output_size: int
    output_scale: float = 1.0
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_sizes:
            x = ACTIVATIONS[self.activation](nn.Dense(size, kernel_init=nn.initializers.orthogonal(jnp.sqrt(2.0)))(x))
        return nn.Dense(self.output_size, kernel_init=nn.initializers.orthogonal(self.output_scale))(x)


class ActorCritic(nn.Module):
    """A policy and a state-value function with no shared layers.

    `__call__(obs [..., obs_size])` returns `(distribution parameters [..., distribution.param_size],
    value [...])`. For a `DiagGaussian` policy the log std is a parameter that starts at
    `initial_log_std` for every action; a `TanhGaussian` policy outputs its scale per state (starting
    near std softplus(0) = 0.69). With `policy_input_size` the policy sees only the first that many
    entries of `obs` while the value sees all of them (a value that knows more than the policy).
    """

    distribution: ActionDistribution
    hidden_sizes: Sequence[int] = (64, 64)
    initial_log_std: float = -0.5
    value_hidden_sizes: Sequence[int] | None = None     # None: the same as `hidden_sizes`
    activation: str = "tanh"
    policy_input_size: int | None = None                 # None: the policy sees all of `obs`

    def setup(self):
        # A small last policy layer starts the policy near uniform (or near zero mean).
        if isinstance(self.distribution, DiagGaussian):
            size = self.distribution.action_size
            self.policy = MLP(self.hidden_sizes, size, output_scale=0.01, activation=self.activation)
            self.log_std = self.param("log_std", nn.initializers.constant(self.initial_log_std), (size,))
        else:
            self.policy = MLP(self.hidden_sizes, self.distribution.param_size, output_scale=0.01,
                              activation=self.activation)
        value_sizes = self.hidden_sizes if self.value_hidden_sizes is None else self.value_hidden_sizes
        self.value = MLP(value_sizes, 1, output_scale=1.0, activation=self.activation)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.dist_params(obs), self.state_value(obs)

    def dist_params(self, obs: jax.Array) -> jax.Array:
        """Distribution parameters [..., param_size] alone (no value network evaluated)."""
        if self.policy_input_size is not None:
            obs = obs[..., : self.policy_input_size]
        out = self.policy(obs)
        if isinstance(self.distribution, DiagGaussian):
            out = jnp.concatenate([out, jnp.broadcast_to(self.log_std, out.shape)], axis=-1)
        return out

    def state_value(self, obs: jax.Array) -> jax.Array:
        """State value [...] alone (no policy network evaluated)."""
        return self.value(obs)[..., 0]


def _chunk_size(num_samples: int, num_groups: int) -> int:
    """Rows per chunk of `apply_by_group`: about 1/8 of a group's fair share, a multiple of 8, so the
    padding (at most one chunk per group) stays near 1/8 of the samples."""
    size = -(-num_samples // (8 * num_groups))
    return max(8, -(-size // 8) * 8)


def apply_by_group(fn: Callable, stacked_params, inputs: jax.Array, groups: jax.Array, num_groups: int):
    """`outputs[i] = fn(params_k, inputs[i])` with `k = groups[i]`, each sample evaluated by one network.

    Evaluating every network of a stack on every sample and keeping the right one costs K times one
    network's work; here the samples are placed into fixed-size chunks, each chunk holding samples of
    one group only (a group's last chunk padded), and each chunk is evaluated with its own group's
    parameters (a batched matrix product over chunks). The padding adds at most one chunk per group
    (~1/8 of the samples), the shapes are static, and gradients flow to each sample's own network.

    Args:
      fn: `(params, x [n, ...]) -> pytree of [n, ...]`, e.g. `model.apply` (any batched function).
      stacked_params: parameters with a leading axis [K].
      inputs: [n, ...].
      groups: int [n], values in [0, num_groups).
      num_groups: K (static).

    Returns:
      `fn`'s output pytree with leading axis [n], in the order of `inputs`.
    """
    if num_groups == 1:
        return fn(jax.tree.map(lambda p: p[0], stacked_params), inputs)
    num_samples = inputs.shape[0]
    chunk = _chunk_size(num_samples, num_groups)
    num_chunks = -(-num_samples // chunk) + num_groups       # enough for any split of the samples
    member = jax.nn.one_hot(groups, num_groups, dtype=jnp.int32)                      # [n, K]
    rank_in_group = jnp.take_along_axis(jnp.cumsum(member, axis=0), groups[:, None], axis=1)[:, 0] - 1
    chunks_of_group = -(-jnp.sum(member, axis=0) // chunk)                             # [K]
    chunk_end = jnp.cumsum(chunks_of_group)
    first_row = (chunk_end - chunks_of_group) * chunk                                   # [K]
    row = first_row[groups] + rank_in_group                                             # [n]
    chunk_group = jnp.minimum(jnp.searchsorted(chunk_end, jnp.arange(num_chunks), side="right"), num_groups - 1)
    rows = jnp.zeros((num_chunks * chunk,) + inputs.shape[1:], inputs.dtype).at[row].set(inputs)
    chunk_params = jax.tree.map(lambda p: p[chunk_group], stacked_params)
    outputs = jax.vmap(fn)(chunk_params, rows.reshape((num_chunks, chunk) + inputs.shape[1:]))
    return jax.tree.map(lambda y: y.reshape((num_chunks * chunk,) + y.shape[2:])[row], outputs)
