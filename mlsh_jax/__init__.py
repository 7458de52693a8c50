"""mlsh_jax: Meta Learning Shared Hierarchies in JAX (jitted, vmapped over task slots)."""

from envs.third_party import import_mujoco_quietly

import_mujoco_quietly()   # before anything imports brax

from mlsh_jax.config import ConfigError, MLSHConfig, PPOConfig
from mlsh_jax.trainer import TrainState, Trainer

__all__ = ["ConfigError", "MLSHConfig", "PPOConfig", "TrainState", "Trainer"]

from mlsh_jax.loading import LoadedRun, PolicyOutput, RunLoadError, load_run  # noqa: E402

__all__ += ["LoadedRun", "PolicyOutput", "RunLoadError", "load_run"]
