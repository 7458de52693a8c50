"""Task-distribution environments, in pure JAX (this package never imports `mlsh_jax`).

The Brax envs (ant, humanoid) are imported on first use (`make_env`), so that discrete experiments never load
Brax.
"""

import importlib

from envs import third_party

third_party.prepare()   # before JAX computes anything and before anything imports brax

from envs.base import AutoResetStep, EnvState, TaskEnv, auto_reset_step
from envs.moving_bandits import MovingBandits

# name -> "module:class"
ENV_REGISTRY = {
    "moving_bandits": "envs.moving_bandits:MovingBandits",
    "key_door": "envs.key_door:KeyDoor",
    "four_rooms": "envs.four_rooms:FourRooms",
    "four_rooms_paper": "envs.four_rooms:FourRoomsPaper",     # the paper task set (bottom-right room)
    "four_rooms_original": "envs.four_rooms:FourRoomsOriginal",   # the original code's four goals
    "ant_twowalk": "envs.ant_twowalk:AntTwoWalk",
    "ant_maze": "envs.ant_maze:AntMaze",
    "ant_obstacles": "envs.ant_obstacles:AntObstacleCourse",
    "brax_ant": "envs.brax_ant:BraxAnt",            # Brax's own ant, its reward: the learner's reference
    "humanoid_walkcrawl": "envs.humanoid:HumanoidWalkCrawl",
    "humanoid_course": "envs.humanoid:HumanoidCourse",
    "humanoid_walk": "envs.humanoid:HumanoidWalk",    # every task walks: the learner's humanoid reference
}


def env_class(name: str) -> type[TaskEnv]:
    """The class registered as `name` (see `ENV_REGISTRY`)."""
    if name not in ENV_REGISTRY:
        raise ValueError(f"unknown env {name!r}; known envs: {', '.join(sorted(ENV_REGISTRY))}")
    module, cls = ENV_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_env(name: str, **kwargs) -> TaskEnv:
    """Builds the task distribution registered as `name` (see `ENV_REGISTRY`)."""
    return env_class(name)(**kwargs)


__all__ = ["AutoResetStep", "EnvState", "TaskEnv", "auto_reset_step", "env_class", "make_env", "ENV_REGISTRY",
           "MovingBandits"]
