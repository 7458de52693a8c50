"""Humanoid course (transfer): walk forward past x = 25, then crawl backward under the ceiling,
3000 steps, with masters over the frozen sub-policies of a walk / crawl run; compared with that
run's shared policy transferred (and trained on) and with a single policy from scratch, on the same
env-step budget (paper: 14333 vs 6055 vs -643).

    python -m experiments.humanoid_course --subs-from runs/humanoid_auto_s0
    python -m experiments.humanoid_course --subs-from RUN --preset smoke --no-baseline

The shared policy comes from SUBS_FROM/baseline_shared (the walk / crawl experiment writes it);
the baselines go to OUT/shared_transfer and OUT/flat_ppo (`experiments.course_transfer`).
"""

from __future__ import annotations

import sys

import numpy as np

from envs.humanoid import TURN_X
from experiments import course_transfer

PRESETS = {
    "auto": lambda: course_transfer.course_settings("humanoid_course", 3000, num_slots=8, num_updates=150,
                                                    reward_scale=0.1),
    "paper": lambda: course_transfer.course_settings("humanoid_course", 3000, num_slots=10, num_updates=500,
                                                     reward_scale=0.1),
    "smoke": lambda: course_transfer.smoke_course_settings("humanoid_course", reward_scale=0.1),
}
# What `auto` means here, for --help (the other presets: `experiments.usage.PRESET_NOTES`).
PRESET_NOTES = course_transfer.PRESET_NOTES


def course_progress(trajectory_obs, rewards) -> dict:
    """How far the humanoid got, from one episode per policy: observations [T + 1, n, 246] (torso
    height first, x, y last) and rewards [T, n]."""
    obs = np.asarray(trajectory_obs)
    x, height = obs[..., -2], obs[..., 0]
    turned = (x > TURN_X).any(axis=0)
    return {"episodes": int(x.shape[1]), "furthest_x_mean": round(float(x.max(axis=0).mean()), 2),
            "turned_fraction": float(turned.mean()),
            "final_x_mean": round(float(x[-1].mean()), 2),
            "mean_torso_height": round(float(height.mean()), 3),
            "mean_return": round(float(np.asarray(rewards).sum(axis=0).mean()), 2)}


def main(argv=None) -> dict:
    return course_transfer.run_course_transfer(
        "experiments.humanoid_course", "Humanoid course", "humanoid_course", PRESETS, argv, course_progress,
        baselines=(course_transfer.SHARED_TRANSFER, course_transfer.SINGLE_POLICY))


if __name__ == "__main__":
    main(sys.argv[1:])
