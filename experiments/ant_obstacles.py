"""Ant obstacle course (sparse reward) solved by transfer: masters over a finished run's frozen
sub-policies, vs flat PPO from scratch on the same env-step budget.

    python -m experiments.ant_obstacles --subs-from runs/ant_twowalk_auto_s0
    python -m experiments.ant_obstacles --subs-from RUN --preset smoke --no-baseline

Only masters learn (one per task slot, each an independent try on the one course; a master lives
for the whole run); the sub-policies and their observation statistics come from --subs-from (an
ant twowalk or ant maze run; it must be finished and its sub-policies must fit this env).
The flat-PPO baseline (a single policy from scratch, trained by every slot) goes to OUT/flat_ppo
(`experiments.course_transfer`).
"""

from __future__ import annotations

import sys

import numpy as np

from envs.ant_obstacles import GOAL
from experiments import course_transfer

PRESETS = {
    "auto": lambda: course_transfer.course_settings("ant_obstacles", 2000, num_slots=8, num_updates=150),
    "paper": lambda: course_transfer.course_settings("ant_obstacles", 2000, num_slots=10, num_updates=500),
    "smoke": lambda: course_transfer.smoke_course_settings("ant_obstacles"),
}
# What `auto` means here, for --help (the other presets: `experiments.usage.PRESET_NOTES`).
PRESET_NOTES = course_transfer.PRESET_NOTES


def course_progress(trajectory_obs, rewards) -> dict:
    """How far the ant got, from one episode per policy: observations [T + 1, n, 29] (torso x, y
    last) and rewards [T, n]. Distances to the goal's centre in metres; the reward zone is the
    disc of radius sqrt(30) around it."""
    xy = np.asarray(trajectory_obs[..., -2:])
    distance = np.linalg.norm(xy - np.asarray(GOAL), axis=-1)                 # [T + 1, n]
    closest = distance.min(axis=0)
    return {"episodes": int(xy.shape[1]), "start_distance": round(float(distance[0].mean()), 2),
            "closest_distance_mean": round(float(closest.mean()), 2),
            "closest_distance_best": round(float(closest.min()), 2),
            "final_distance_mean": round(float(distance[-1].mean()), 2),
            "episodes_with_reward": float((np.asarray(rewards).sum(axis=0) > 0).mean()),
            "mean_return": round(float(np.asarray(rewards).sum(axis=0).mean()), 2)}


def main(argv=None) -> dict:
    return course_transfer.run_course_transfer(
        "experiments.ant_obstacles", "Ant obstacle course", "ant_obstacles", PRESETS, argv, course_progress,
        baselines=(course_transfer.SINGLE_POLICY,))


if __name__ == "__main__":
    main(sys.argv[1:])
