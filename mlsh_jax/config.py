"""Configuration of an MLSH run: frozen, documented dataclasses with checks and derived sizes.

Defaults follow docs/algorithm.md ("Settings"): the paper's network size and learning rates, the original
code's PPO settings. Sizes derived from the configuration are properties (never written back), and
`validate()` rejects a bad configuration with one message naming the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlsh_jax.config_parts import (  # noqa: F401 (re-exported: mlsh_jax.config is the public path)
    ACTIVATIONS,
    ADVANTAGE_NORMALIZATIONS,
    CONTINUOUS_DISTRIBUTIONS,
    CREDIT_RULES,
    LOCOMOTION_BODIES,
    LOCOMOTION_MINIBATCH_SAMPLES,
    MAZE_REWARD_DIRECTIONS,
    PAPER_CREDIT,
    ConfigError,
    CreditConfig,
    NetworkConfig,
    PPOConfig,
    TaskShaping,
    _require,
)


@dataclasses.dataclass(frozen=True)
class MLSHConfig:
    """One MLSH (or shared-policy baseline) training run.

    Attributes:
      env: name of the task distribution (see `envs.ENV_REGISTRY`).
      episode_length: steps per episode (a time limit, reported as truncation).
      algorithm: "mlsh" (master + sub-policies) or "shared" (one flat policy on all tasks, never reset).
      num_subpolicies: K, the number of shared sub-policies (1 for "shared").
      macro_duration: N, env steps between two master decisions.
      warmup_updates: W, master-only updates at the start of each lifetime.
      joint_updates: U, master + sub-policy updates after the warmup.
      num_slots: B, task slots trained in parallel (each with its own master and task).
      steps_per_slot: D, env steps gathered per slot per update.
      envs_per_slot: E, parallel env copies per slot (D / E steps each per update).
      num_updates: updates in the whole run.
      master_network: the masters' networks (`NetworkConfig`; the paper's 2x64 tanh by default).
      sub_network: the sub-policies' (or the shared policy's) networks and action distribution.
      random_master_action_prob: probability that the master's choice is replaced by a uniform one.
      obs_clip: normalised observations are clipped to +-obs_clip.
      reward_scale: rewards are multiplied by this in the PPO targets of masters and sub-policies
        (not in logged returns); for tasks whose per-step rewards are tiny (ant twowalk: ~1e-3),
        where value errors at the network's initial scale would drown the advantages.
      master: PPO settings of the master policies.
      sub: PPO settings of the sub-policies (or of the shared policy).
      bootstrap_at_switch: the sub-policies' GAE treats a step after which the master hands over to
        another sub-policy as a cut: bootstrapped with the acting sub-policy's own value of the next
        state, not continued with another sub-policy's values and advantages.
      shaping: documented deviations of the Brax tasks' rewards (`TaskShaping`; none by default).
      desync_episode_starts: at the start of a lifetime each env copy's first episode begins at a
        random time step, so the copies' time limits do not all fall on the same step (they do
        otherwise: every copy of a slot starts together).
      credit: how the sub-policy update shares each joint slot's data among the sub-policies
        (`CreditConfig`; default the responsibility rule, `credit.rule=paper` for the paper's).
      seed: PRNG seed.
      checkpoint_every: save a checkpoint every this many updates (and at the end); 0 = only at the end.
      keep_checkpoints: how many of the newest checkpoints to keep.
      train_subpolicies: False freezes the sub-policies (transfer: only masters learn; then
        joint_updates may be 0 and a lifetime is W updates).
      subpolicy_observation: what the sub-policies see: "env", the env's sub-policy view (the Brax
        bodies: their body state without the torso's position, so skills transfer between arenas),
        or "full", the whole observation, as in the original code (ant twowalk: a sub-policy that
        knows where it is can stop at its goal, and its value net can predict a distance-based
        reward). The experiments give their shared-policy baselines the whole observation: with no
        master, nothing else tells that policy where it is.
    """

    env: str = "moving_bandits"
    episode_length: int = 50
    algorithm: str = "mlsh"
    num_subpolicies: int = 2
    macro_duration: int = 10
    warmup_updates: int = 9
    joint_updates: int = 1
    num_slots: int = 10
    steps_per_slot: int = 2000
    envs_per_slot: int = 40
    num_updates: int = 300
    master_network: NetworkConfig = NetworkConfig()
    sub_network: NetworkConfig = NetworkConfig()
    random_master_action_prob: float = 0.1
    obs_clip: float = 5.0
    reward_scale: float = 1.0
    master: PPOConfig = PPOConfig(learning_rate=0.01, num_minibatches=0, minibatch_size=64)
    sub: PPOConfig = PPOConfig(learning_rate=3e-4, num_minibatches=15)
    credit: CreditConfig = CreditConfig()
    bootstrap_at_switch: bool = False
    shaping: TaskShaping = TaskShaping()
    desync_episode_starts: bool = False
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    train_subpolicies: bool = True
    subpolicy_observation: str = "env"

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def hierarchical(self) -> bool:
        """True for MLSH, False for the shared-policy baseline."""
        return self.algorithm == "mlsh"

    @property
    def sees_whole_observation(self) -> bool:
        """True when the sub-policies (or the shared policy) see the whole observation, not only
        the env's sub-policy view."""
        return self.subpolicy_observation == "full"

    @property
    def lifetime(self) -> int:
        """Updates per master lifetime, W + U."""
        return self.warmup_updates + self.joint_updates

    @property
    def rollout_length(self) -> int:
        """T, env steps per env copy per update (D / E)."""
        return self.steps_per_slot // self.envs_per_slot

    @property
    def macro_steps_per_rollout(self) -> int:
        """Master decisions per env copy per update (T / N)."""
        return self.rollout_length // self.macro_duration

    @property
    def master_batch_size(self) -> int:
        """Master transitions per slot per update (E * T / N)."""
        return self.envs_per_slot * self.macro_steps_per_rollout

    @property
    def initial_phases(self) -> tuple[int, ...]:
        """Phase (updates into its lifetime) of every slot at update 0, spread evenly so lifetimes
        are staggered and some slot is in its joint phase at every update. With frozen sub-policies
        (`train_subpolicies=False`: transfer, adaptation) nothing needs that, and every slot starts
        a fresh lifetime at update 0."""
        if not self.train_subpolicies:
            return (0,) * self.num_slots
        return tuple((slot * self.lifetime) // self.num_slots for slot in range(self.num_slots))

    @property
    def joint_slot_capacity(self) -> int:
        """The most slots that are ever in their joint phase at one update (a static size)."""
        if not self.hierarchical:
            return self.num_slots
        return max(
            sum((phase + t) % self.lifetime >= self.warmup_updates for phase in self.initial_phases)
            for t in range(self.lifetime)
        )

    @property
    def env_steps_per_update(self) -> int:
        """B * D."""
        return self.num_slots * self.steps_per_slot

    # ---- checks --------------------------------------------------------------------------------
    def validate(self, known_envs: tuple[str, ...] | None = None) -> "MLSHConfig":
        """Raises `ConfigError` naming the first bad field; returns self when all is well."""
        if known_envs is not None:
            _require(self.env in known_envs, "env", self.env, f"one of {', '.join(sorted(known_envs))}")
        _require(self.algorithm in ("mlsh", "shared"), "algorithm", self.algorithm, "'mlsh' or 'shared'")
        _require(self.subpolicy_observation in ("env", "full"), "subpolicy_observation", self.subpolicy_observation,
                 "'env' (the env's sub-policy view) or 'full' (the whole observation)")
        _require(self.num_subpolicies >= 1, "num_subpolicies", self.num_subpolicies, "an integer >= 1")
        if not self.hierarchical:
            _require(self.num_subpolicies == 1, "num_subpolicies", self.num_subpolicies,
                     "1 when algorithm is 'shared'")
        _require(self.macro_duration >= 1, "macro_duration", self.macro_duration, "an integer >= 1")
        _require(self.episode_length >= 1, "episode_length", self.episode_length, "an integer >= 1")
        _require(self.episode_length % self.macro_duration == 0, "episode_length", self.episode_length,
                 f"a multiple of macro_duration={self.macro_duration}")
        _require(self.warmup_updates >= 0, "warmup_updates", self.warmup_updates, "an integer >= 0")
        _require(self.joint_updates >= 0, "joint_updates", self.joint_updates, "an integer >= 0")
        _require(self.lifetime >= 1, "warmup_updates + joint_updates", self.lifetime, "an integer >= 1")
        if self.hierarchical and self.train_subpolicies:
            _require(self.joint_updates >= 1, "joint_updates", self.joint_updates,
                     "an integer >= 1 (with 0 the sub-policies are never trained)")
        _require(self.num_slots >= 1, "num_slots", self.num_slots, "an integer >= 1")
        _require(self.envs_per_slot >= 1, "envs_per_slot", self.envs_per_slot, "an integer >= 1")
        _require(self.steps_per_slot >= 1, "steps_per_slot", self.steps_per_slot, "an integer >= 1")
        _require(self.steps_per_slot % self.envs_per_slot == 0, "steps_per_slot", self.steps_per_slot,
                 f"a multiple of envs_per_slot={self.envs_per_slot}")
        _require(self.rollout_length % self.macro_duration == 0, "steps_per_slot / envs_per_slot",
                 self.rollout_length, f"a multiple of macro_duration={self.macro_duration}")
        _require(self.num_updates >= 1, "num_updates", self.num_updates, "an integer >= 1")
        self.master_network.validate("master_network")
        self.sub_network.validate("sub_network")
        self.shaping.validate(self.env)
        _require(0 <= self.random_master_action_prob <= 1, "random_master_action_prob",
                 self.random_master_action_prob, "a number in [0, 1]")
        _require(self.obs_clip > 0, "obs_clip", self.obs_clip, "a number > 0")
        _require(self.reward_scale > 0, "reward_scale", self.reward_scale, "a number > 0")
        _require(self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every, "an integer >= 0")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        self.credit.validate()
        self.master.validate("master", self.master_batch_size)
        if self.train_subpolicies:
            self.sub.validate("sub", self.joint_slot_capacity * self.steps_per_slot)
        return self

    # ---- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MLSHConfig":
        """Inverse of `to_dict`; unknown keys are an error."""
        data = dict(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)} - {"hidden_sizes"}
        if unknown:
            raise ConfigError(f"unknown configuration fields: {', '.join(sorted(unknown))}")
        for level in ("master", "sub"):
            if level in data and isinstance(data[level], dict):
                data[level] = PPOConfig(**data[level])
        # A configuration stored before the credit rule existed trained with the paper's rule.
        # One stored before the handover existed never handed over.
        if isinstance(data.get("credit"), dict):
            data["credit"] = CreditConfig(**{"handover_update": 0, **data["credit"]})
        else:
            data["credit"] = PAPER_CREDIT
        # One stored before the network recipes existed used `hidden_sizes` for every tanh MLP.
        legacy_sizes = data.pop("hidden_sizes", None)
        for role in ("master_network", "sub_network"):
            if isinstance(data.get(role), dict):
                data[role] = NetworkConfig.from_dict(data[role])
            elif legacy_sizes is not None:
                data[role] = NetworkConfig(policy_hidden_sizes=tuple(legacy_sizes),
                                           value_hidden_sizes=tuple(legacy_sizes))
        if isinstance(data.get("shaping"), dict):
            data["shaping"] = TaskShaping(**data["shaping"])
        return cls(**data)


# Fields a resumed run may change: they decide how long it runs and what it writes, not what an
# update computes, so the resumed run still continues the same trajectory.
RESUMABLE_FIELDS = ("num_updates", "checkpoint_every", "keep_checkpoints")


def config_differences(old: MLSHConfig, new: MLSHConfig) -> dict[str, tuple[Any, Any]]:
    """`{field: (old value, new value)}` for every field that differs (PPO fields as `sub.x`)."""
    def flat(config):
        fields = {}
        for key, value in config.to_dict().items():
            if isinstance(value, dict):
                fields.update({f"{key}.{name}": item for name, item in value.items()})
            else:
                fields[key] = value
        return fields
    before, after = flat(old), flat(new)
    return {key: (before[key], after[key]) for key in before if before[key] != after[key]}
