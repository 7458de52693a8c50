"""Ant mazes (the main job): MLSH over the nine-layout maze distribution, vs the shared policy.

    python -m experiments.ant_maze                  # preset `auto`: sized to the devices present
    python -m experiments.ant_maze --preset cpu     # ~1 hour on a 2-core CPU
    python -m experiments.ant_maze --preset locomotion   # cpu, sub-policies learn by the locomotion recipe
    python -m experiments.ant_maze --preset paper   # the paper's 10 task slots
    python -m experiments.ant_maze --preset smoke   # seconds plus compile, for tests

Training draws the training layouts (0-6); layouts 7 and 8 are held out (`envs.ant_maze`). Besides
the run contract, summary.json holds `success`: every slot's own master with the sub-policies, one
episode on its task, goal reached or not (all slots, and those past their warmup), and where the
sub-policies alone take the ant.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from envs.ant_maze import AntMaze
from experiments import brax_family, common
from mlsh_jax.distributed import to_host
from mlsh_jax.evaluation import run_hierarchy

K = 3
PRESETS = {
    "auto": lambda: brax_family.auto_settings("ant_maze", K, cpu_updates=400),
    "cpu": lambda: brax_family.paper_settings("ant_maze", K, num_slots=16, num_updates=400),
    "locomotion": lambda: brax_family.with_locomotion_recipe(PRESETS["cpu"]()),
    "paper": lambda: brax_family.paper_settings("ant_maze", K),
    "smoke": lambda: brax_family.smoke_settings("ant_maze", K),
}


PRESET_NOTES = brax_family.PRESET_NOTES


def slot_success(trainer, state, key) -> dict:
    """Each slot's master with the sub-policies, one greedy episode on the slot's task."""
    slots = to_host(state.slots)
    policies = common.shared_part_on_host(state)
    trajectory, _ = run_hierarchy(trainer, policies, slots.master.params, slots.task, key, greedy=True,
                                  env=common.original_task_env(trainer.config))
    reached = np.asarray(AntMaze.reached_goal(slots.task, trajectory.inner.pipeline)).any(axis=0)  # [B]
    post_warmup = np.asarray(slots.phase) >= trainer.config.warmup_updates
    layouts = np.asarray(slots.task.layout)
    return {
        "all_slots": float(reached.mean()),
        "post_warmup_slots": float(reached[post_warmup].mean()) if post_warmup.any() else None,
        "by_layout": {int(i): float(reached[layouts == i].mean()) for i in np.unique(layouts)},
    }


def analyse(result, out) -> dict:
    trainer = result.trainer
    key = jax.random.PRNGKey(trainer.config.seed + 1)
    tasks = jax.vmap(trainer.env.sample_task)(jax.random.split(key, 8))
    policies = common.shared_part_on_host(result.state)
    return {"success": slot_success(trainer, result.state, key),
            "subpolicy_headings": brax_family.subpolicy_headings(trainer, policies, tasks, key)}


def main(argv=None) -> dict:
    return brax_family.run_experiment("experiments.ant_maze", "Ant mazes", PRESETS, argv, analyse)


if __name__ == "__main__":
    main(sys.argv[1:])
