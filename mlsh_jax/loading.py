"""Loading a finished (or checkpointed) run back, to inspect or deploy what it learned."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs import env_class
from mlsh_jax import checkpoint
from mlsh_jax.config import MLSHConfig
from mlsh_jax.networks import ActorCritic
from mlsh_jax.trainer import Trainer, TrainState


CONFIG_FILE = "config.json"
ENV_FILE = "env.json"   # the env's name and revision (`TaskEnv.revision`); a run without one: revision 1


class RunLoadError(ValueError):
    """The directory is not a run that can be loaded (message says why)."""


class PolicyOutput(NamedTuple):
    """`action` [...] of the requested sub-policy and the master's `master_choice` [...] (None for
    the shared-policy baseline, which has no master)."""

    action: jax.Array
    master_choice: jax.Array | None


@dataclasses.dataclass
class LoadedRun:
    """A run restored from its newest checkpoint.

    Attributes:
      config: the run's resolved configuration.
      trainer: networks and env rebuilt from the configuration.
      state: the restored `TrainState` (sub-policies, every slot's master, observation statistics).
      update: the update number of the checkpoint.
    """

    config: MLSHConfig
    trainer: Trainer
    state: TrainState
    update: int

    def act(self, obs, sub_index, slot: int = 0, key: jax.Array | None = None) -> PolicyOutput:
        """What the learned policies do for raw environment observations.

        Args:
          obs: raw observation(s) [..., observation_size], as the env returns them.
          sub_index: which sub-policy acts, int or int array broadcastable to obs[..., 0].
          slot: whose master to ask (masters are task-specific; each task slot has its own).
          key: sample actions with this key; None takes the most likely actions.

        Returns:
          PolicyOutput(action of sub-policy `sub_index` [...] as the env receives it (a tanh-squashed
          policy's action squashed), master choice of sub-policy [...]).
        """
        obs = jnp.asarray(obs, jnp.float32)
        normalized = self.trainer.normalize(self.state.obs_stats, obs)
        sub_index = jnp.broadcast_to(jnp.asarray(sub_index, jnp.int32), obs.shape[:-1])
        if jnp.any((sub_index < 0) | (sub_index >= self.config.num_subpolicies)):
            raise ValueError(f"sub_index must be in [0, {self.config.num_subpolicies}), got {sub_index}")
        sub_obs = self.trainer.subpolicy_input(self.trainer.subpolicy_stats(self.state), obs)
        params_of = lambda params: self.trainer.sub_model.apply(params, sub_obs, method=ActorCritic.dist_params)
        all_params = jax.vmap(params_of)(self.state.subs.params)          # [K, ..., P]
        dist_params = jnp.take_along_axis(all_params, sub_index[None, ..., None], axis=0)[0]
        master_choice, master_key = None, None
        if key is not None:
            key, master_key = jax.random.split(key)
        if self.state.slots.master is not None:
            if not 0 <= slot < self.config.num_slots:
                raise ValueError(f"slot must be in [0, {self.config.num_slots}), got {slot}")
            master_params = jax.tree.map(lambda x: x[slot], self.state.slots.master.params)
            master = self.trainer.master_model
            master_logits = master.apply(master_params, normalized, method=ActorCritic.dist_params)
            master_choice = _pick(master.distribution, master_logits, master_key)
        distribution = self.trainer.sub_model.distribution
        return PolicyOutput(action=distribution.to_env(_pick(distribution, dist_params, key)),
                            master_choice=master_choice)


def _pick(distribution, dist_params: jax.Array, key: jax.Array | None) -> jax.Array:
    return distribution.mode(dist_params) if key is None else distribution.sample(key, dist_params)


def load_config(run_dir: str | pathlib.Path) -> MLSHConfig:
    """The configuration a run was made with (`RUN/config.json`)."""
    run = pathlib.Path(run_dir)
    if not run.is_dir():
        raise RunLoadError(f"run directory {run} does not exist")
    config_path = run / CONFIG_FILE
    if not config_path.is_file():
        raise RunLoadError(f"{run} is not a run directory: it has no {CONFIG_FILE}")
    try:
        config = MLSHConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as error:
        raise RunLoadError(f"{config_path} is not a valid run configuration: {error}") from None
    check_env_revision(run, config.env)
    return config


def env_record(env_name: str) -> dict:
    """What a new run records in `RUN/env.json`: {"env": name, "revision": the env's revision}."""
    return {"env": env_name, "revision": env_class(env_name).revision}


def check_env_revision(run: pathlib.Path, env_name: str) -> None:
    """Raises RunLoadError when `run` was made with another revision of its env than this code's
    (a run without `env.json` was made with revision 1)."""
    path = run / ENV_FILE
    try:
        recorded = int(json.loads(path.read_text())["revision"]) if path.is_file() else 1
    except (ValueError, TypeError, KeyError) as error:
        raise RunLoadError(f"{path} is not a valid env record ({error!r}); it should hold "
                           f'{{"env": "{env_name}", "revision": N}}') from None
    env = env_class(env_name)
    if recorded != env.revision:
        was = env.revision_notes.get(recorded, "a definition this code does not know")
        raise RunLoadError(
            f"{run} was made with revision {recorded} of env {env_name!r} ({was}); this code's env is revision "
            f"{env.revision} ({env.revision_notes.get(env.revision, 'see its docstring')}); what the run learned "
            "does not carry over: start a new run with another --out (the old run stays as it is)")


def load_run(run_dir: str | pathlib.Path) -> LoadedRun:
    """Loads a run directory: its configuration and the state of its newest checkpoint.

    Example:
        run = load_run("runs/moving_bandits_fast_s0")
        out = run.act(obs, sub_index=1)   # out.action, out.master_choice
    """
    run = pathlib.Path(run_dir)
    config = load_config(run)
    trainer = Trainer(config)
    if not (run / checkpoint.CHECKPOINT_DIR).is_dir():
        raise RunLoadError(f"{run} has no checkpoint (no {checkpoint.CHECKPOINT_DIR}/ folder)")
    abstract = trainer.abstract_state()
    manager = checkpoint.checkpoint_manager(run, create=False)
    try:
        available = checkpoint.steps(manager)
        if not available:
            raise RunLoadError(f"{run} has no finished checkpoint yet")
        state, _ = checkpoint.restore(manager, available[-1], abstract)
    except checkpoint.CheckpointError as error:
        raise RunLoadError(str(error)) from None
    finally:
        manager.close()
    return LoadedRun(config=config, trainer=trainer, state=state, update=available[-1])
