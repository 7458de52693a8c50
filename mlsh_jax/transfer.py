"""Transferring a finished run's sub-policies into a new run (master-only training on a new task).

`load_subpolicies(run_dir, trainer)` checks, before anything is compiled for the new run, that the
source run is finished and that its sub-policies fit the new trainer (sub-policy observation size,
action size and kind, network sizes); `with_subpolicies(state, transferred)` then puts them into a
fresh `TrainState`.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
from brax.training.acme import running_statistics
from flax import struct

from envs import env_class
from mlsh_jax import checkpoint
from mlsh_jax.loading import RunLoadError, load_config
from mlsh_jax.trainer import Trainer, TrainState, subpolicy_observation_size


class TransferError(ValueError):
    """The source run cannot provide sub-policies for this run; the message says why."""


@struct.dataclass
class TransferredSubpolicies:
    """Sub-policy parameters (stacked [K]) and the source run's observation statistics."""

    params: dict
    obs_stats: running_statistics.RunningStatisticsState


def check_compatible(run_dir: str | pathlib.Path, trainer: Trainer, algorithm: str = "mlsh"):
    """Reads only the source run's config; raises TransferError if its sub-policies (those of an
    `algorithm` run: "mlsh", or "shared" for a shared policy as one sub-policy) cannot serve
    `trainer` (or the run is unfinished). Returns the source configuration."""
    run = pathlib.Path(run_dir)
    try:
        source = load_config(run)
    except RunLoadError as error:
        raise TransferError(f"--subs-from {run}: {error}") from None
    source_env = env_class(source.env)
    target = trainer.env
    problems = []
    if source.algorithm != algorithm:
        wanted = "MLSH sub-policies" if algorithm == "mlsh" else f"a {algorithm!r} policy"
        problems.append(f"it trained a {source.algorithm!r} policy, not {wanted}")
    if getattr(source_env, "continuous_actions", False) != target.continuous_actions:
        problems.append("its actions are of another kind (discrete vs continuous)")
    if source_env.action_size != target.action_size:
        problems.append(f"its action size is {source_env.action_size}, this env needs {target.action_size}")
    source_obs = subpolicy_observation_size(source, source_env)
    if source_obs != trainer.subpolicy_observation_size:
        problems.append(f"its sub-policies see {source_obs} observation entries, this run's see "
                        f"{trainer.subpolicy_observation_size} (subpolicy_observation: its "
                        f"{source.subpolicy_observation!r}, this run's {trainer.config.subpolicy_observation!r})")
    if source_env.observation_size != target.observation_size:
        problems.append(f"its observation size is {source_env.observation_size}, this env's is "
                        f"{target.observation_size}")
    if source.sub_network != trainer.config.sub_network:
        problems.append(f"its sub-policy networks are {_describe(source.sub_network)}, this run's are "
                        f"{_describe(trainer.config.sub_network)} (use --set sub_network.FIELD=...)")
    if source.num_subpolicies != trainer.config.num_subpolicies:
        problems.append(f"it has {source.num_subpolicies} sub-policies, this run {trainer.config.num_subpolicies} "
                        f"(use --set num_subpolicies={source.num_subpolicies})")
    if problems:
        raise TransferError(f"--subs-from {run} ({source.env}) does not fit {target.name}: " + "; ".join(problems))
    _check_finished(run, source)
    return source


def _describe(network) -> str:
    """A one-line description of a `NetworkConfig`."""
    return (f"policy {network.policy_hidden_sizes} / value {network.value_hidden_sizes} {network.activation} "
            f"{network.distribution}" + (", value sees everything" if network.value_sees_whole_observation else ""))


def _check_finished(run: pathlib.Path, source) -> None:
    manager = checkpoint.checkpoint_manager(run, create=False) if (run / checkpoint.CHECKPOINT_DIR).is_dir() else None
    try:
        done = checkpoint.steps(manager) if manager is not None else []
    finally:
        if manager is not None:
            manager.close()
    if not done or done[-1] < source.num_updates:
        last = done[-1] if done else "none"
        raise TransferError(f"{run} is not a finished run: its newest checkpoint is at update "
                            f"{last} of {source.num_updates} (finish it with --resume first)")


def load_subpolicies(run_dir: str | pathlib.Path, trainer: Trainer, algorithm: str = "mlsh") -> TransferredSubpolicies:
    """The finished run's sub-policies and observation statistics, checked against `trainer`
    (`algorithm="shared"`: a shared-policy run's one policy, for a K = 1 trainer)."""
    state = _restore_final_state(run_dir, check_compatible(run_dir, trainer, algorithm), trainer)
    return TransferredSubpolicies(params=state.subs.params, obs_stats=Trainer.subpolicy_stats(state))


def load_shared_policy(run_dir: str | pathlib.Path, trainer: Trainer) -> TransferredSubpolicies:
    """The policy of a finished shared-policy run (`algorithm="shared"`: params with a leading axis
    of 1) and its observation statistics, to fine-tune as per-slot flat policies (see
    `primitive_subpolicies`) on `trainer`'s env."""
    run = pathlib.Path(run_dir)
    try:
        source = load_config(run)
    except RunLoadError as error:
        raise TransferError(f"{run}: {error}") from None
    if source.algorithm != "shared":
        raise TransferError(f"{run} trained {source.algorithm!r}, not a shared policy")
    # Its policy becomes every slot's master: the parameter shapes must be the masters'.
    same_shape = lambda net: (net.policy_hidden_sizes, net.value_hidden_sizes, net.activation)
    if source.env != trainer.config.env or same_shape(source.sub_network) != same_shape(trainer.config.master_network):
        raise TransferError(f"{run} ({source.env}, networks {_describe(source.sub_network)}) does not fit "
                            f"{trainer.config.env} with master networks {_describe(trainer.config.master_network)}")
    _check_finished(run, source)
    state = _restore_final_state(run, source, trainer)
    return TransferredSubpolicies(params=state.subs.params, obs_stats=Trainer.subpolicy_stats(state))


def _restore_final_state(run_dir, source, trainer: Trainer) -> TrainState:
    source_trainer = Trainer(source, mesh=trainer.mesh)
    manager = checkpoint.checkpoint_manager(pathlib.Path(run_dir), create=False)
    try:
        state, _ = checkpoint.restore(manager, checkpoint.steps(manager)[-1], source_trainer.abstract_state())
    except checkpoint.CheckpointError as error:
        raise TransferError(f"{run_dir}: {error}") from None
    finally:
        manager.close()
    return state


def primitive_subpolicies(trainer: Trainer, obs_stats) -> TransferredSubpolicies:
    """K = action_size "sub-policies" of which sub-policy k always takes discrete action k.

    With them (frozen), N = 1 and no exploration mixture, each slot's master *is* a flat policy
    over the env's actions, trained on its own task: the single-policy-from-scratch and
    fine-tuned-shared-policy baselines run in the same trainer as MLSH.
    """
    env = trainer.env
    if env.continuous_actions or trainer.config.num_subpolicies != env.action_size:
        raise TransferError(f"primitive sub-policies need discrete actions and num_subpolicies = action_size "
                            f"({env.action_size}); got {trainer.config.num_subpolicies} for {env.name}")
    template = trainer.sub_model.init(jax.random.PRNGKey(0), jnp.zeros((1, trainer.subpolicy_observation_size)))
    zeros = jax.tree.map(jnp.zeros_like, template)
    output = zeros["params"]["policy"]
    last = max((name for name in output if name.startswith("Dense_")), key=lambda name: int(name.split("_")[1]))

    def always(k):
        bias = 1e3 * jax.nn.one_hot(k, env.action_size)           # logits: only k can be drawn
        layers = dict(output, **{last: dict(output[last], bias=bias)})
        return {"params": dict(zeros["params"], policy=layers)}

    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[always(k) for k in range(env.action_size)])
    return TransferredSubpolicies(params=params, obs_stats=obs_stats)


def with_master_params(trainer: Trainer, state: TrainState, params) -> TrainState:
    """`state` with every slot's master set to `params` (one network, unstacked) and a fresh
    optimizer state: fine-tuning one policy separately on every slot's task."""
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (trainer.config.num_slots,) + x.shape), params)
    master = state.slots.master.replace(params=stacked, opt_state=jax.vmap(trainer.master_optimizer.init)(stacked))
    return jax.device_put(state.replace(slots=state.slots.replace(master=master)), trainer.state_sharding)


def with_subpolicies(trainer: Trainer, state: TrainState, transferred: TransferredSubpolicies) -> TrainState:
    """`state` with the transferred sub-policies (and a fresh optimizer state for them).

    Frozen sub-policies (`train_subpolicies=False`, the state has `sub_obs_stats`) keep the source
    run's observation statistics exactly, for good: they see their inputs standardised as they
    learned them. The running statistics the masters use (and, when the transferred policies go on
    training, theirs too) start from the source run's mean and std with the weight of one sample, so
    they move to the new task's observations (e.g. positions in a bigger arena) within the first
    update instead of being pinned by the source run's millions of samples.
    """
    # Copies: the update donates the state it is given, which must not delete the caller's arrays.
    transferred = jax.tree.map(jnp.copy, transferred)
    subs = state.subs.replace(params=transferred.params, opt_state=trainer.sub_optimizer.init(transferred.params))
    new_state = state.replace(subs=subs, obs_stats=_restarted(transferred.obs_stats))
    if state.sub_obs_stats is not None:
        # A copy: the masters' statistics above share the source's mean array, and the jitted update
        # donates its input state, which it cannot do with one buffer in two places.
        new_state = new_state.replace(sub_obs_stats=jax.tree.map(jnp.copy, transferred.obs_stats))
    return jax.device_put(new_state, trainer.state_sharding)


def _restarted(stats: running_statistics.RunningStatisticsState) -> running_statistics.RunningStatisticsState:
    """`stats`' mean and std with the weight of one sample."""
    one = jax.tree.map(lambda part: jnp.full_like(part, 0), stats.count)
    one = one.replace(lo=one.lo + 1) if hasattr(one, "lo") else one + 1  # brax counts are UInt64(hi, lo)
    return stats.replace(count=one, summed_variance=jnp.square(stats.std))
