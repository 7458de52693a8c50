"""The MLSH trainer: B task slots, each with its own master, updated in one jitted step.

One call of `Trainer.update` is one MLSH update of every slot:
1. every slot collects D = E x T env steps with its master and the shared sub-policies;
2. every slot's master gets a PPO update on its macro transitions (summed rewards, one per N steps);
3. the sub-policies get one PPO update on the steps of the slots that are in their joint phase,
   each step training only the sub-policy that was active at it (gradients pooled over those slots);
4. running observation statistics are updated, phases advance, and slots whose lifetime (W + U
   updates) ended start a new one: new task, freshly drawn master, fresh optimizer state, envs reset.
Slot lifetimes are staggered so that some slot is in its joint phase at every update. The
shared-policy baseline (`algorithm="shared"`) is the same step with no master and every slot training
the one policy.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from brax.training.acme import running_statistics, specs
from flax import struct
from jax.sharding import Mesh

from envs import ENV_REGISTRY, TaskEnv, make_env
from mlsh_jax.config import MLSHConfig
from mlsh_jax.credit import slot_weights
from mlsh_jax.distributed import (check_slots_divide, replicated, sample_sharded, slot_mesh, state_shardings,
                                  with_shardings)
from mlsh_jax.config import NetworkConfig
from mlsh_jax.losses import PPOBatch, compute_gae, ppo_loss, standardize
from mlsh_jax.networks import ActorCritic, ExploringCategorical, action_distribution, apply_by_group
from mlsh_jax.ppo import Learner, make_optimizer, ppo_update
from mlsh_jax.rollout import SlotEnvs, Transition, reset_slot_envs, slot_rollout


@struct.dataclass
class Slots:
    """Every task slot's own state, leading axis [B].

    Attributes:
      master: each slot's master params and optimizer state (None for the shared-policy baseline).
      task: each slot's task pytree.
      envs: each slot's E env copies, [B, E].
      phase: updates done in the current lifetime, int32 [B]; warmup while < W, joint after.
    """

    master: Learner | None
    task: Any
    envs: SlotEnvs
    phase: jax.Array


@struct.dataclass
class TrainState:
    """Everything an MLSH run carries from one update to the next.

    Attributes:
      subs: the K sub-policies (params and optimizer state stacked on a leading axis [K]).
      obs_stats: running observation mean/std (brax `RunningStatisticsState`), shared by both levels
        while the sub-policies train.
      sub_obs_stats: None while the sub-policies train; with frozen sub-policies
        (`train_subpolicies=False`) the statistics they were trained with, kept fixed (a transfer
        run: the inputs they see are standardised as in their source run), while `obs_stats`
        follows the new task for the masters.
      slots: the B task slots.
      key: PRNG key.
      update: updates done so far, int32 [].
    """

    subs: Learner
    obs_stats: running_statistics.RunningStatisticsState
    slots: Slots
    key: jax.Array
    update: jax.Array
    sub_obs_stats: running_statistics.RunningStatisticsState | None = None


def make_actor_critic(network: NetworkConfig, distribution, policy_input_size: int | None = None) -> ActorCritic:
    """The policy and value networks of one role (`network`) acting with `distribution`."""
    return ActorCritic(distribution, hidden_sizes=tuple(network.policy_hidden_sizes),
                       value_hidden_sizes=tuple(network.value_hidden_sizes), activation=network.activation,
                       initial_log_std=network.initial_log_std, policy_input_size=policy_input_size)


def switches(sub_index: jax.Array) -> jax.Array:
    """bool [C, T, E]: step t of `sub_index` [C, T, E] is followed, at t + 1 in the same window, by
    another sub-policy (the last step of a window is a cut for GAE anyway)."""
    changed = sub_index[:, 1:] != sub_index[:, :-1]
    return jnp.concatenate([changed, jnp.zeros_like(changed[:, :1])], axis=1)


def _stacked(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """The same optimizer applied independently to each entry of a stack of parameter sets."""
    return optax.GradientTransformation(jax.vmap(optimizer.init), jax.vmap(optimizer.update))


def _select(pred: jax.Array, on_true, on_false):
    """Per-entry `where` over two pytrees whose leaves share the leading axis of `pred`."""
    def pick(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - pred.ndim)), a, b)
    return jax.tree.map(pick, on_true, on_false)


def _all_finite(tree, num_axes: int) -> jax.Array:
    """True where every value of every leaf is finite, per entry of the first `num_axes` axes."""
    def finite(x):
        return jnp.all(jnp.isfinite(x).reshape(x.shape[:num_axes] + (-1,)), axis=-1)
    flags = [finite(leaf) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return functools.reduce(jnp.logical_and, flags)


def _flatten_samples(tree, num_axes: int):
    """Merges the first `num_axes` axes of every leaf into one sample axis."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[num_axes:]), tree)


def subpolicy_observation_size(config: MLSHConfig, env) -> int:
    """How many observation entries the sub-policies of a `config` run see on `env` (an env or its
    class): all of them with `subpolicy_observation="full"`, else the env's sub-policy view."""
    if config.sees_whole_observation:
        return env.observation_size
    size = env.subpolicy_observation_size
    return size if isinstance(size, int) else env.observation_size  # the base class's default is a property


class Trainer:
    """Builds the networks, optimizers and the jitted update for one configuration.

    Attributes:
      config: the validated configuration.
      env: the task distribution.
      mesh: the devices the task slots are split over (default: all devices of all processes).
      state_sharding: how each `TrainState` leaf is laid out on `mesh` (slots split, rest replicated).
      init: jitted `key -> TrainState`, laid out by `state_sharding`.
      update: jitted `TrainState -> (TrainState, metrics)`; compiles once per configuration; the
        metrics come back replicated, so every process can read them.
    """

    def __init__(self, config: MLSHConfig, env: TaskEnv | None = None, mesh: Mesh | None = None):
        if env is None:
            config.validate(tuple(ENV_REGISTRY))
            env = make_env(config.env, episode_length=config.episode_length, **config.shaping.env_kwargs())
        elif env.episode_length != config.episode_length:
            raise ValueError(f"env.episode_length={env.episode_length} differs from the configuration's "
                             f"episode_length={config.episode_length}")
        self.config = config.validate()
        self.env = env
        self.subpolicy_observation_size = subpolicy_observation_size(config, env)
        # The sub-policies' networks see `sub_input_size` entries: their policy's view, or the whole
        # observation when their value sees it (the policy then reads its view's first entries).
        value_sees_more = config.sub_network.value_sees_whole_observation and not config.sees_whole_observation
        self.sub_input_size = env.observation_size if value_sees_more else self.subpolicy_observation_size
        self.master_model = make_actor_critic(
            config.master_network, ExploringCategorical(config.num_subpolicies, config.random_master_action_prob))
        self.sub_model = make_actor_critic(
            config.sub_network,
            action_distribution(self.env.action_size, self.env.continuous_actions, config.sub_network.distribution),
            policy_input_size=self.subpolicy_observation_size if value_sees_more else None)
        self.master_optimizer = make_optimizer(config.master)
        self.sub_optimizer = _stacked(make_optimizer(config.sub))
        # Task slots are split over every device (of every process); the rest is replicated.
        self.mesh = mesh if mesh is not None else slot_mesh()
        check_slots_divide(config.num_slots, self.mesh)
        self.state_sharding = state_shardings(jax.eval_shape(self.initial_state, jax.random.PRNGKey(0)),
                                              mesh=self.mesh)
        self.init = jax.jit(self.initial_state, out_shardings=self.state_sharding)
        self.update = jax.jit(self.update_step, in_shardings=(self.state_sharding,),
                              out_shardings=(self.state_sharding, replicated(self.mesh)), donate_argnums=0)

    # ---- state ---------------------------------------------------------------------------------
    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of a `TrainState` (the target of a checkpoint restore)."""
        return with_shardings(jax.eval_shape(self.initial_state, jax.random.PRNGKey(0)), self.state_sharding)

    def initial_state(self, key: jax.Array) -> TrainState:
        """Initial state (pure; `self.init` is its jitted form): K fresh sub-policies and B slots
        at staggered phases of a first lifetime."""
        cfg = self.config
        sub_key, slot_key, key = jax.random.split(key, 3)
        sub_params = jax.vmap(self.sub_model.init, in_axes=(0, None))(
            jax.random.split(sub_key, cfg.num_subpolicies), jnp.zeros((self.sub_input_size,))
        )
        master, task, envs = jax.vmap(self.new_lifetime)(jax.random.split(slot_key, cfg.num_slots))
        slots = Slots(master=master, task=task, envs=envs,
                      phase=jnp.asarray(cfg.initial_phases, jnp.int32))
        obs_stats = running_statistics.init_state(
            specs.Array((self.env.observation_size,), jnp.dtype("float32"))
        )
        subs = Learner(sub_params, self.sub_optimizer.init(sub_params))
        return TrainState(subs=subs, obs_stats=obs_stats, slots=slots, key=key,
                          update=jnp.zeros((), jnp.int32),
                          sub_obs_stats=None if cfg.train_subpolicies else obs_stats)

    def subpolicy_view(self, obs: jax.Array) -> jax.Array:
        """The sub-policies' network input [..., sub_input_size] from (normalised) observations
        [..., observation_size]: the env's sub-policy view, or everything (`sees_whole_observation`,
        or a value net that sees the whole observation)."""
        if self.sub_input_size == self.env.observation_size:
            return obs
        return self.env.subpolicy_view(obs)

    @staticmethod
    def subpolicy_stats(state: TrainState):
        """The observation statistics the sub-policies' inputs are standardised with: the frozen ones
        of a run whose sub-policies do not train, else the shared running ones."""
        return state.obs_stats if state.sub_obs_stats is None else state.sub_obs_stats

    def subpolicy_input(self, obs_stats, obs: jax.Array) -> jax.Array:
        """Raw observations [..., observation_size] -> the sub-policies' network input [..., sub_input_size]."""
        return self.subpolicy_view(self.normalize(obs_stats, obs))

    def fresh_master(self, key: jax.Array) -> Learner | None:
        """A freshly drawn master policy with a fresh optimizer state (None without a hierarchy)."""
        if not self.config.hierarchical:
            return None
        params = self.master_model.init(key, jnp.zeros((self.env.observation_size,)))
        return Learner(params, self.master_optimizer.init(params))

    def new_lifetime(self, key: jax.Array) -> tuple[Learner | None, Any, SlotEnvs]:
        """What one slot starts a lifetime with: (fresh master, new task, env copies reset)."""
        master_key, task_key, env_key = jax.random.split(key, 3)
        task = self.env.sample_task(task_key)
        envs = reset_slot_envs(self.env, task, env_key, self.config.envs_per_slot, self.config.desync_episode_starts)
        return self.fresh_master(master_key), task, envs

    def normalize(self, obs_stats, obs: jax.Array) -> jax.Array:
        """Raw observations [..., obs] -> normalised and clipped network inputs."""
        return running_statistics.normalize(obs, obs_stats, max_abs_value=self.config.obs_clip)

    # ---- the update ----------------------------------------------------------------------------
    def update_step(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """One MLSH update of every slot (pure; `self.update` is its jitted form).

        Returns (next state, metrics). Besides the logged figures, `metrics["health"]` holds
        finiteness flags: `experience` [B] (observations and rewards of each slot), `master_loss`
        and `master_params` [B] (each slot's master), `sub_loss` and `sub_params` [K], `obs_stats` [].
        """
        cfg = self.config
        key, rollout_key, master_key, sub_key, reset_key = jax.random.split(state.key, 5)
        slots = state.slots
        normalize = functools.partial(self.normalize, state.obs_stats)
        sub_input = functools.partial(self.subpolicy_input, self.subpolicy_stats(state))

        rollout = functools.partial(slot_rollout, self.env, cfg, self.master_model, self.sub_model, normalize,
                                    self.subpolicy_view, sub_input=sub_input)
        envs, steps, macros, episodes = jax.vmap(rollout, in_axes=(0, None, 0, 0, 0))(
            None if slots.master is None else slots.master.params, state.subs.params,
            slots.task, slots.envs, jax.random.split(rollout_key, cfg.num_slots),
        )

        # The shared-policy baseline has no warmup: every slot trains the one policy.
        in_joint_phase = (slots.phase >= cfg.warmup_updates) | (not cfg.hierarchical)
        metrics = {}
        health = {"experience": _all_finite((steps.obs, steps.reward), num_axes=1)}
        master = slots.master
        if cfg.hierarchical:
            master, master_metrics = self._update_masters(master, macros, normalize, master_key)
            health["master_loss"] = _all_finite(master_metrics, num_axes=1)
            health["master_params"] = _all_finite(master.params, num_axes=1)
            metrics["master"] = jax.tree.map(jnp.mean, master_metrics)
        sub_index = jnp.repeat(macros.action, cfg.macro_duration, axis=1)  # [B, T, E]
        subs = state.subs
        if cfg.train_subpolicies:
            subs, metrics["sub"] = self._update_subpolicies(
                state.subs, steps, sub_index, in_joint_phase, sub_input, sub_key, state.update)
            health["sub_loss"] = _all_finite({k: v for k, v in metrics["sub"].items() if k != "trained"},
                                             num_axes=1)
        health["sub_params"] = _all_finite(subs.params, num_axes=1)
        obs_stats = running_statistics.update(state.obs_stats, steps.obs)
        health["obs_stats"] = _all_finite(obs_stats, num_axes=0)
        metrics["health"] = health

        phase = slots.phase + 1
        lifetime_over = phase >= cfg.lifetime
        fresh_master, fresh_task, fresh_envs = jax.vmap(self.new_lifetime)(
            jax.random.split(reset_key, cfg.num_slots)
        )
        slots = Slots(
            master=_select(lifetime_over, fresh_master, master),
            task=_select(lifetime_over, fresh_task, slots.task),
            envs=_select(lifetime_over, fresh_envs, envs),
            phase=jnp.where(lifetime_over, 0, phase),
        )
        task_kind = jax.vmap(self.env.task_kind)(state.slots.task)
        metrics.update(self._episode_metrics(episodes, in_joint_phase, state.slots.phase, task_kind))
        new_state = TrainState(subs=subs, obs_stats=obs_stats, slots=slots, key=key, update=state.update + 1,
                               sub_obs_stats=state.sub_obs_stats)
        return new_state, metrics

    def _update_masters(self, masters: Learner, macros: Transition, normalize, key: jax.Array):
        """PPO on every slot's own master, from its macro transitions [B, M, E].

        Returns (updated masters, per-slot PPO metrics [B])."""
        cfg = self.config
        state_value = functools.partial(self.master_model.apply, method=ActorCritic.state_value)
        obs = normalize(macros.obs)
        values = jax.vmap(state_value)(masters.params, obs)
        next_values = jax.vmap(state_value)(masters.params, normalize(macros.final_obs))
        advantages, returns = jax.vmap(
            functools.partial(compute_gae, discount=cfg.master.discount, gae_lambda=cfg.master.gae_lambda)
        )(cfg.reward_scale * macros.reward, values, next_values, macros.terminated, macros.truncated)
        if cfg.master.advantage_normalization == "slot":   # each slot's whole batch [M, E]
            advantages = jax.vmap(standardize)(advantages, jnp.ones_like(advantages))
        batch = PPOBatch(obs=obs, actions=macros.action, log_probs=macros.log_prob, values=values,
                         advantages=advantages, returns=returns)
        batch = jax.vmap(functools.partial(_flatten_samples, num_axes=2))(batch)
        weights = jnp.ones((cfg.master_batch_size,))
        update_one = functools.partial(
            ppo_update, loss_fn=self._loss_fn(self.master_model, cfg.master), optimizer=self.master_optimizer,
            epochs=cfg.master.epochs, num_minibatches=cfg.master.minibatches_for(cfg.master_batch_size),
        )
        return jax.vmap(update_one, in_axes=(0, 0, None, 0))(
            masters, batch, weights, jax.random.split(key, cfg.num_slots)
        )

    def _update_subpolicies(self, subs: Learner, steps: Transition, sub_index: jax.Array, in_joint_phase,
                            sub_input, key, update: jax.Array):
        """PPO on the K sub-policies from the steps [B, T, E] of the slots in their joint phase;
        `sub_index` [B, T, E] says which sub-policy acted at each step; `sub_input` maps raw
        observations to the sub-policies' network input. Each step trains the sub-policy active at
        it, with the weight that `config.credit` gives that sub-policy in that slot
        (`mlsh_jax.credit.slot_weights`). With `config.bootstrap_at_switch` the GAE is cut (and
        bootstrapped) at every step after which another sub-policy takes over; with
        `sub.advantage_normalization="slot"` advantages are standardised per slot and sub-policy.

        The joint slots are gathered into a static-size block of `joint_slot_capacity` slots (the
        schedule is deterministic, so that bound is exact); unused entries get weight 0. A
        sub-policy that was active at no step keeps its parameters and optimizer state unchanged.
        """
        cfg = self.config
        capacity = cfg.joint_slot_capacity
        if cfg.hierarchical:
            joint_slots = jnp.nonzero(in_joint_phase, size=capacity, fill_value=0)[0]
            valid = jnp.arange(capacity) < jnp.sum(in_joint_phase)
            steps, sub_index = jax.tree.map(lambda x: x[joint_slots], (steps, sub_index))
        else:
            valid = jnp.ones((capacity,), bool)

        obs = sub_input(steps.obs)
        values = self._active_values(subs.params, obs, sub_index)
        next_values = self._active_values(subs.params, sub_input(steps.final_obs), sub_index)
        cuts = steps.truncated | switches(sub_index) if cfg.bootstrap_at_switch else steps.truncated
        advantages, returns = jax.vmap(
            functools.partial(compute_gae, discount=cfg.sub.discount, gae_lambda=cfg.sub.gae_lambda)
        )(cfg.reward_scale * steps.reward, values, next_values, steps.terminated, cuts)
        credit = slot_weights(cfg.credit, cfg.reward_scale * steps.reward, sub_index, valid, update,
                              cfg.num_subpolicies)                                    # [C, K]
        weights = jnp.take_along_axis(credit[:, None, None, :], sub_index[..., None], axis=-1)[..., 0]  # [C, T, E]
        if cfg.sub.advantage_normalization == "slot":
            advantages = jax.vmap(functools.partial(standardize, num_groups=cfg.num_subpolicies,
                                                    weight_floor=1e-12))(advantages, weights, sub_index)
        batch = PPOBatch(obs=obs, actions=steps.action, log_probs=steps.log_prob, values=values,
                         advantages=advantages, returns=returns, group=sub_index)
        batch, weights = _flatten_samples((batch, weights), num_axes=3)
        # Data-parallel over the devices of each process (a hint to the partitioner).
        batch, weights = jax.lax.with_sharding_constraint((batch, weights), sample_sharded(self.mesh))

        updated, metrics = ppo_update(
            subs, batch, weights, key, self._loss_fn(self.sub_model, cfg.sub, cfg.num_subpolicies),
            self.sub_optimizer, epochs=cfg.sub.epochs, num_minibatches=cfg.sub.minibatches_for(weights.shape[0]),
            minibatch_sharding=sample_sharded(self.mesh, axis=1),
        )
        weight_of = jax.ops.segment_sum(weights, batch.group, cfg.num_subpolicies)      # [K]
        trained = weight_of > 0
        metrics["trained"] = trained.astype(jnp.float32)
        # Each sub-policy's share of the joint samples' total weight (the paper's rule: its usage).
        metrics["credit_share"] = weight_of / jnp.maximum(jnp.sum(weight_of), 1e-30)
        return _select(trained, updated, subs), metrics

    def _active_values(self, sub_params, obs: jax.Array, sub_index: jax.Array) -> jax.Array:
        """Value [...] of the active sub-policy's value net for observations [..., obs]."""
        state_value = functools.partial(self.sub_model.apply, method=ActorCritic.state_value)
        flat_obs = obs.reshape((-1, obs.shape[-1]))
        values = apply_by_group(state_value, sub_params, flat_obs, sub_index.reshape(-1), self.config.num_subpolicies)
        return values.reshape(sub_index.shape)

    @staticmethod
    def _loss_fn(model: ActorCritic, ppo, num_learners: int | None = None):
        """`(params, batch, weights) -> (loss, metrics)` for one learner with `model`, or, with
        `num_learners`, for a stack of them (params [K, ...]; each sample trains `batch.group`)."""
        settings = dict(distribution=model.distribution, clip_eps=ppo.clip_eps, value_clip=ppo.value_clip,
                        entropy_coef=ppo.entropy_coef, value_coef=ppo.value_coef,
                        normalize_advantages=ppo.advantage_normalization == "minibatch")
        if num_learners is None:
            return functools.partial(ppo_loss, apply_fn=model.apply, **settings)

        def stacked_loss(params, batch: PPOBatch, weights):
            apply_fn = lambda p, obs: apply_by_group(model.apply, p, obs, batch.group, num_learners)
            return ppo_loss(params, batch, weights, apply_fn=apply_fn, num_groups=num_learners, **settings)

        return stacked_loss

    def _episode_metrics(self, episodes, in_joint_phase, phase, task_kind) -> dict[str, jax.Array]:
        """Mean returns of the episodes that ended (all slots, joint-phase slots, per phase, per
        kind of task when the env names kinds: `task_kind` [B] indexes `env.task_kinds`), their
        spread over slots (std of the per-slot mean returns, over slots where an episode ended),
        usage."""
        def mean_over_slots(values, mask):
            count = jnp.sum(mask)
            return jnp.where(count > 0, jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1), jnp.nan)

        def mean_over(mask):
            total = jnp.sum(jnp.where(mask, episodes.return_sum, 0.0))
            count = jnp.sum(jnp.where(mask, episodes.episode_count, 0.0))
            return jnp.where(count > 0, total / jnp.maximum(count, 1.0), jnp.nan)

        all_slots = jnp.ones_like(in_joint_phase)
        by_phase = jax.vmap(lambda p: mean_over(phase == p))(jnp.arange(self.config.lifetime))
        usage = episodes.sub_steps / jnp.sum(episodes.sub_steps, axis=-1, keepdims=True)
        ended = episodes.episode_count > 0
        slot_means = episodes.return_sum / jnp.maximum(episodes.episode_count, 1.0)
        spread = jnp.sqrt(mean_over_slots(jnp.square(slot_means - mean_over_slots(slot_means, ended)), ended))
        metrics = {}
        if self.env.task_kinds:
            kinds = jnp.arange(len(self.env.task_kinds))
            metrics["mean_return_by_task"] = jax.vmap(lambda kind: mean_over(task_kind == kind))(kinds)
        return metrics | {
            "mean_return": mean_over(all_slots),
            "return_std_over_slots": spread,
            "mean_return_post_warmup": mean_over(in_joint_phase),
            "mean_return_by_phase": by_phase,
            "sub_usage": jnp.mean(usage, axis=0),
            "sub_usage_per_slot": usage,
            "joint_slots": jnp.sum(in_joint_phase).astype(jnp.int32),
        }
