"""Task-distribution environments, in pure JAX (this package never imports `mlsh_jax`)."""

from envs.base import AutoResetStep, EnvState, TaskEnv, auto_reset_step
from envs.moving_bandits import MovingBandits

ENV_REGISTRY = {"moving_bandits": MovingBandits}


def make_env(name: str, **kwargs) -> TaskEnv:
    """Builds the task distribution registered as `name` (see `ENV_REGISTRY`)."""
    if name not in ENV_REGISTRY:
        raise ValueError(f"unknown env {name!r}; known envs: {', '.join(sorted(ENV_REGISTRY))}")
    return ENV_REGISTRY[name](**kwargs)


__all__ = ["AutoResetStep", "EnvState", "TaskEnv", "auto_reset_step", "make_env", "ENV_REGISTRY", "MovingBandits"]
