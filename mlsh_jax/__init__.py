"""mlsh_jax: Meta Learning Shared Hierarchies in JAX (jitted, vmapped over task slots)."""

from envs import third_party

third_party.prepare()   # before JAX computes anything and before anything imports brax

from mlsh_jax.config import ConfigError, MLSHConfig, PPOConfig
from mlsh_jax.trainer import TrainState, Trainer

__all__ = ["ConfigError", "MLSHConfig", "PPOConfig", "TrainState", "Trainer"]

from mlsh_jax.loading import LoadedRun, PolicyOutput, RunLoadError, load_run  # noqa: E402

__all__ += ["LoadedRun", "PolicyOutput", "RunLoadError", "load_run"]
