"""The parts of an MLSH configuration (`mlsh_jax.config.MLSHConfig`): the PPO settings of one level
of the hierarchy, the networks of one role, the task shaping and the credit rule, each a frozen,
documented dataclass with its checks; and `ConfigError`, the error of every check. Import them from
`mlsh_jax.config`, which re-exports them.
"""

from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and what is allowed."""


# Brax PPO's notebook settings per body: (epochs, minibatches, entropy coefficient).
LOCOMOTION_BODIES = {"ant": (4, 16, 1e-2), "humanoid": (8, 32, 1e-3)}
# Samples per minibatch in brax PPO's notebook layout on 1024 env copies (its batch_size x unroll: the
# ant 256 x 5, the humanoid 512 x 10), the layout of `benchmarks.learner_parity`. The MLSH presets'
# locomotion recipe keeps this size, not the count, so that a smaller batch per update does not
# multiply the SGD steps per sample (docs/algorithm.md, "Learner recipes").
LOCOMOTION_MINIBATCH_SAMPLES = {"ant": 1280, "humanoid": 5120}


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings of one level of the hierarchy (master or sub-policies).

    Attributes:
      learning_rate: Adam step size.
      epochs: passes over the batch per update.
      num_minibatches: minibatches per epoch; 0 means "derive from minibatch_size".
      minibatch_size: samples per minibatch, used when num_minibatches is 0.
      clip_eps: PPO ratio clip.
      value_clip: clip of the value prediction around its old value (0 disables). The original code
        clips at 0.2 on unnormalised returns; on moving bandits (returns 0-40) that lets a value move
        0.2 per update and stalls learning (measured: post-warmup return 22.5 after 50 updates with
        it, 40.7 after 30 without), so it is off by default.
      entropy_coef: weight of the entropy bonus.
      value_coef: weight of the value loss.
      max_grad_norm: global-norm gradient clip (0 disables).
      discount: gamma.
      gae_lambda: GAE lambda.
      advantage_normalization: "minibatch": advantages are standardised over each minibatch (per
        sub-policy, pooled over the task slots); "slot": over each task slot's whole batch (per
        sub-policy), before minibatching, as the original normalised per worker, i.e. per task, so
        that tasks with different reward levels do not shift each other's advantages.
    """

    learning_rate: float = 3e-4
    epochs: int = 10
    num_minibatches: int = 15
    minibatch_size: int = 64
    clip_eps: float = 0.2
    value_clip: float = 0.0
    entropy_coef: float = 0.0
    value_coef: float = 1.0
    max_grad_norm: float = 0.0
    discount: float = 0.99
    gae_lambda: float = 0.98
    advantage_normalization: str = "minibatch"

    @classmethod
    def locomotion(cls, body: str = "ant") -> "PPOConfig":
        """Brax PPO's locomotion settings from its training notebook, per `body` (one of
        `LOCOMOTION_BODIES`): gamma 0.97, lambda 0.95, clip 0.3, value weight 0.5, Adam 3e-4; the
        ant 4 epochs x 16 minibatches with entropy 1e-2, the humanoid 8 x 32 with entropy 1e-3.
        (The notebook's ant uses 32 minibatches of 4096 env copies; scaled to this CPU's 1024, 16.)"""
        if body not in LOCOMOTION_BODIES:
            raise ConfigError(f"locomotion body must be one of {LOCOMOTION_BODIES}, got {body!r}")
        epochs, minibatches, entropy = LOCOMOTION_BODIES[body]
        return cls(learning_rate=3e-4, epochs=epochs, num_minibatches=minibatches, clip_eps=0.3,
                   entropy_coef=entropy, value_coef=0.5, discount=0.97, gae_lambda=0.95)

    def minibatches_for(self, batch_size: int) -> int:
        """Number of minibatches per epoch for a batch of `batch_size` samples."""
        if self.num_minibatches > 0:
            return self.num_minibatches
        return max(1, batch_size // self.minibatch_size)

    def validate(self, prefix: str, batch_size: int) -> None:
        """Checks the values; `prefix` names this config in error messages (e.g. `master`)."""
        _require(self.learning_rate > 0, f"{prefix}.learning_rate", self.learning_rate, "a number > 0")
        _require(self.epochs >= 1, f"{prefix}.epochs", self.epochs, "an integer >= 1")
        _require(self.num_minibatches >= 0, f"{prefix}.num_minibatches", self.num_minibatches,
                 "an integer >= 0 (0 = derive from minibatch_size)")
        _require(self.minibatch_size >= 1, f"{prefix}.minibatch_size", self.minibatch_size, "an integer >= 1")
        _require(self.minibatches_for(batch_size) <= batch_size, f"{prefix}.num_minibatches",
                 self.minibatches_for(batch_size), f"at most the batch size {batch_size}")
        _require(self.clip_eps > 0, f"{prefix}.clip_eps", self.clip_eps, "a number > 0")
        _require(self.value_clip >= 0, f"{prefix}.value_clip", self.value_clip, "a number >= 0")
        _require(self.entropy_coef >= 0, f"{prefix}.entropy_coef", self.entropy_coef, "a number >= 0")
        _require(self.value_coef >= 0, f"{prefix}.value_coef", self.value_coef, "a number >= 0")
        _require(self.max_grad_norm >= 0, f"{prefix}.max_grad_norm", self.max_grad_norm, "a number >= 0")
        _require(0 < self.discount <= 1, f"{prefix}.discount", self.discount, "a number in (0, 1]")
        _require(0 <= self.gae_lambda <= 1, f"{prefix}.gae_lambda", self.gae_lambda, "a number in [0, 1]")
        _require(self.advantage_normalization in ADVANTAGE_NORMALIZATIONS, f"{prefix}.advantage_normalization",
                 self.advantage_normalization, " or ".join(repr(a) for a in ADVANTAGE_NORMALIZATIONS))


ACTIVATIONS = ("tanh", "swish", "relu", "elu")
CONTINUOUS_DISTRIBUTIONS = ("gaussian", "tanh_gaussian")
ADVANTAGE_NORMALIZATIONS = ("minibatch", "slot")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The networks of one role (the masters, or the sub-policies / shared policy): a policy and a
    value MLP with no shared layers. Two recipes side by side: `NetworkConfig.paper()` (the default)
    and `NetworkConfig.locomotion()`.

    Attributes:
      policy_hidden_sizes: hidden layers of the policy MLP.
      value_hidden_sizes: hidden layers of the value MLP.
      activation: one of `ACTIVATIONS`.
      distribution: continuous actions only (the masters always choose with a categorical):
        "gaussian", a diagonal Gaussian with a state-independent learned log std, unsquashed and
        clipped by the env (the paper's PPO); "tanh_gaussian", a state-dependent std and tanh
        squashing (brax's PPO).
      initial_log_std: starting log std of "gaussian".
      value_sees_whole_observation: the sub-policies' value net sees the whole observation (e.g.
        the ant's position) while their policy sees only the env's sub-policy view; a value that
        knows where the body is can predict a position-dependent reward. No effect on masters, or
        when `MLSHConfig.subpolicy_observation` is "full" already.
    """

    policy_hidden_sizes: tuple[int, ...] = (64, 64)
    value_hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    distribution: str = "gaussian"
    initial_log_std: float = -0.5
    value_sees_whole_observation: bool = False

    @classmethod
    def paper(cls) -> "NetworkConfig":
        """The paper's networks: 2x64 tanh policy and value, unsquashed Gaussian from log std -0.5."""
        return cls()

    @classmethod
    def locomotion(cls) -> "NetworkConfig":
        """Brax PPO's locomotion networks: policy 4x32 and value 5x256, swish, tanh-squashed Gaussian."""
        return cls(policy_hidden_sizes=(32, 32, 32, 32), value_hidden_sizes=(256,) * 5, activation="swish",
                   distribution="tanh_gaussian")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        """Inverse of `dataclasses.asdict` (lists back to tuples)."""
        data = dict(data)
        for name in ("policy_hidden_sizes", "value_hidden_sizes"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)

    def validate(self, prefix: str) -> None:
        """Checks the values; `prefix` names this role in error messages (e.g. `sub_network`)."""
        for name in ("policy_hidden_sizes", "value_hidden_sizes"):
            sizes = getattr(self, name)
            _require(len(sizes) >= 1 and all(isinstance(h, int) and h >= 1 for h in sizes), f"{prefix}.{name}",
                     sizes, "one or more integers >= 1 (comma-separated)")
        _require(self.activation in ACTIVATIONS, f"{prefix}.activation", self.activation,
                 " or ".join(repr(a) for a in ACTIVATIONS))
        _require(self.distribution in CONTINUOUS_DISTRIBUTIONS, f"{prefix}.distribution", self.distribution,
                 " or ".join(repr(d) for d in CONTINUOUS_DISTRIBUTIONS))
        _require(-10 <= self.initial_log_std <= 2, f"{prefix}.initial_log_std", self.initial_log_std,
                 "a number in [-10, 2]")


@dataclasses.dataclass(frozen=True)
class TaskShaping:
    """Documented deviations of the Brax body tasks from the original's rewards, off by default and
    in every `paper` preset (the discrete envs take none).

    Attributes:
      alive_bonus: added to the reward at every step the body is upright (the ant: torso height in
        [0.2, 1.0] and not upside down, as Brax's ant pays 1 per healthy step).
      end_when_fallen: the episode ends (a termination, not a time limit) at the first step the body
        is not upright, as Brax's ant ends; a flipped ant's further samples teach nothing.
      reward_direction: ant_maze only. "goal" (the original): the velocity paid is toward the goal in a
        straight line, which crosses a block in six of the nine layouts; "path": toward the next cell
        on the corridor's shortest path (`envs.ant_maze`).
      approach_weight: ant_twowalk only. Added to every step's reward: this weight times the speed
        (m/s) at which the torso approaches the goal (`envs.ant_twowalk`); 0 (the original) by default.
    """

    alive_bonus: float = 0.0
    end_when_fallen: bool = False
    reward_direction: str = "goal"
    approach_weight: float = 0.0

    @property
    def is_default(self) -> bool:
        """True when the tasks are the original's (no shaping)."""
        return self == TaskShaping()

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a Brax body env's constructor: the fields that differ from the default
        ({} when there is no shaping)."""
        default = TaskShaping()
        return {name: value for name, value in dataclasses.asdict(self).items() if value != getattr(default, name)}

    def validate(self, env: str | None = None) -> None:
        """Checks the values (field names prefixed `shaping.`), and that `env` takes them."""
        _require(0 <= self.alive_bonus <= 100, "shaping.alive_bonus", self.alive_bonus, "a number in [0, 100]")
        _require(self.reward_direction in MAZE_REWARD_DIRECTIONS, "shaping.reward_direction", self.reward_direction,
                 f"one of {', '.join(MAZE_REWARD_DIRECTIONS)}")
        _require(0 <= self.approach_weight <= 100, "shaping.approach_weight", self.approach_weight,
                 "a number in [0, 100]")
        if env is not None:
            _require(self.is_default or env.startswith("ant_"), "shaping", self,
                     f"the default TaskShaping() for env {env!r} (shaping applies to the ant tasks)")
            _require(self.reward_direction == "goal" or env == "ant_maze", "shaping.reward_direction",
                     self.reward_direction, f"goal for env {env!r} (the path reward is ant_maze's)")
            _require(self.approach_weight == 0 or env == "ant_twowalk", "shaping.approach_weight",
                     self.approach_weight, f"0 for env {env!r} (the approach reward is ant_twowalk's)")


MAZE_REWARD_DIRECTIONS = ("goal", "path")  # envs.ant_maze.REWARD_DIRECTIONS (the config does not import the envs)


CREDIT_RULES = ("paper", "responsibility")


@dataclasses.dataclass(frozen=True)
class CreditConfig:
    """How the sub-policy update shares a joint slot's data among the sub-policies (`mlsh_jax.credit`).

    Attributes:
      rule: "paper": every step trains the sub-policy active at it, weight 1 (the paper and the
        original code; with K=2 the sub-policies end on one goal in about half of all runs);
        "responsibility": a slot's samples of sub-policy k are weighted by K softmax_k(z_ik /
        temperature), z_ik the standardised reward per step that k earned in that slot in this
        update (competitive learning: the sub-policy that does better on a task gets its data).
      temperature: softmax temperature of "responsibility" (lower: closer to winner-take-all).
      final_temperature: the temperature after annealing (used when anneal_updates > 0).
      anneal_updates: updates over which the temperature moves linearly to final_temperature
        (0: constant).
      balance_iterations: Sinkhorn iterations that even out each sub-policy's share of the joint
        slots under "responsibility" (0: none).
      unfreeze_interval: staged unfreezing under either rule: sub-policy k trains only from update
        k * unfreeze_interval on (0: all from the start).
      handover_update: "responsibility" hands over to the paper's rule at this update (default 30,
        every preset; 0: never): from it on every sample trains its sub-policy with weight 1. The
        responsibility rule breaks the sub-policies' symmetry early; after the handover each
        trains on all of its data again. No effect under "paper" (its weights are those of the
        handover already).
    """

    rule: str = "responsibility"
    temperature: float = 0.3
    final_temperature: float = 0.3
    anneal_updates: int = 0
    balance_iterations: int = 0
    unfreeze_interval: int = 0
    handover_update: int = 30

    def validate(self) -> None:
        """Checks the values (field names prefixed `credit.`)."""
        _require(self.rule in CREDIT_RULES, "credit.rule", self.rule, " or ".join(repr(r) for r in CREDIT_RULES))
        _require(0 < self.temperature <= 100, "credit.temperature", self.temperature, "a number in (0, 100]")
        _require(0 < self.final_temperature <= 100, "credit.final_temperature", self.final_temperature,
                 "a number in (0, 100]")
        _require(self.anneal_updates >= 0, "credit.anneal_updates", self.anneal_updates, "an integer >= 0")
        _require(0 <= self.balance_iterations <= 100, "credit.balance_iterations", self.balance_iterations,
                 "an integer in [0, 100]")
        _require(self.unfreeze_interval >= 0, "credit.unfreeze_interval", self.unfreeze_interval,
                 "an integer >= 0")
        _require(self.handover_update >= 0, "credit.handover_update", self.handover_update, "an integer >= 0")


# What a stored configuration written before `credit` existed trained with.
PAPER_CREDIT = CreditConfig(rule="paper")



def _require(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"invalid configuration: {field}={value!r}; allowed: {allowed}")
