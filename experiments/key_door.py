"""Key-door (paper section 6.1): MLSH vs the shared-policy baseline.

    python -m experiments.key_door                     # preset `fast`: 100 task slots
    python -m experiments.key_door --preset paper      # 10 task slots
    python -m experiments.key_door --preset smoke      # seconds, for tests

Settings (the paper gives none of its own for this task; those of moving bandits with 100-step
episodes): K=3 (fetch the key, go to either door), N=10, W=9, U=1, D=2000 (20 env copies x 100
steps). summary.json `subpolicy_behaviour`: for each sub-policy run alone, the fraction of episodes
in which it picks up the key and in which it ends near door 0 / door 1.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np

from envs.moving_bandits import GOAL_RADIUS
from experiments import common
from mlsh_jax.config import MLSHConfig, PPOConfig
from mlsh_jax.evaluation import run_subpolicy


def paper_settings(**changes) -> MLSHConfig:
    """Key-door settings with 10 task slots."""
    config = MLSHConfig(env="key_door", episode_length=100, num_subpolicies=3, macro_duration=10, warmup_updates=9,
                        joint_updates=1, num_slots=10, steps_per_slot=2000, envs_per_slot=20, num_updates=300,
                        checkpoint_every=50)
    return dataclasses.replace(config, **changes)


PRESETS = {
    "paper": paper_settings,
    "fast": lambda: paper_settings(num_slots=100, num_updates=150, checkpoint_every=25),
    "smoke": lambda: paper_settings(
        num_slots=4, steps_per_slot=200, envs_per_slot=2, num_updates=3, checkpoint_every=2,
        sub=PPOConfig(learning_rate=3e-4, num_minibatches=4, epochs=2),
        master=PPOConfig(learning_rate=0.01, num_minibatches=2, epochs=2)),
}


def subpolicy_behaviour(trainer, state, key, episodes: int = 200) -> dict:
    """Each sub-policy alone for one episode on `episodes` random draws (sampled actions)."""
    tasks = jax.vmap(trainer.env.sample_task)(jax.random.split(key, episodes))
    result = {}
    for k in range(trainer.config.num_subpolicies):
        inner = run_subpolicy(trainer, state, k, tasks, jax.random.fold_in(key, k)).inner
        final, doors = np.asarray(inner.position[-1]), np.asarray(inner.doors[-1])
        near = np.linalg.norm(final[:, None, :] - doors, axis=-1) < GOAL_RADIUS          # [n, 2]
        result[f"subpolicy_{k}"] = {"picks_up_key": float(np.asarray(inner.has_key[-1]).mean()),
                                    "ends_near_door": near.mean(axis=0).round(3).tolist()}
    return result


def analyse(result, out) -> dict:
    state = common.shared_part_on_host(result.state)
    key = jax.random.PRNGKey(result.trainer.config.seed + 1)
    return {"subpolicy_behaviour": subpolicy_behaviour(result.trainer, state, key)}


def main(argv=None) -> dict:
    return common.run_with_shared_baseline("experiments.key_door", "Key-door", PRESETS, argv, analyse,
                                           default_preset="fast")


if __name__ == "__main__":
    main(sys.argv[1:])
