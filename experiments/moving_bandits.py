"""2D moving bandits (paper Figure 4 left): MLSH vs the shared-policy baseline on one data budget.

    python -m experiments.moving_bandits                 # preset `fast`: 100 task slots, ~3 minutes
    python -m experiments.moving_bandits --preset paper  # the paper's 10 task slots
    python -m experiments.moving_bandits --preset smoke  # seconds, for tests
    python -m experiments.moving_bandits --out DIR --resume   # continue a stopped run

Writes the run contract into --out (config.json, metrics.csv, summary.json, checkpoints/), the
shared-policy baseline's run into --out/baseline_shared/, and two figures: learning_curve.png and
subpolicies.png (each sub-policy run alone from the start).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from envs.moving_bandits import GOAL_RADIUS, WORLD_SIZE
from experiments import common, plots
from mlsh_jax.config import MLSHConfig, PPOConfig
from mlsh_jax.evaluation import run_subpolicy
from mlsh_jax.distributed import is_main_process

# The paper's per-task settings (K=2, N=10, W=9, U=1, 50-step episodes, D=2000, lr 0.01 / 3e-4) are
# MLSHConfig's defaults; presets differ in how many task slots run at once and for how long.
PRESETS = {
    # As the authors ran it: 10 task slots (their 10 groups of 12 workers).
    "paper": lambda: MLSHConfig(num_slots=10, num_updates=300, checkpoint_every=50),
    # Many task slots, chosen by measurement on a 2-core CPU: sub-policies separate within ~30 updates.
    "fast": lambda: MLSHConfig(num_slots=100, num_updates=100, checkpoint_every=25),
    # Seconds: tiny batches, for tests and CI.
    "smoke": lambda: MLSHConfig(
        num_slots=4, steps_per_slot=200, envs_per_slot=4, num_updates=3, checkpoint_every=2,
        sub=PPOConfig(learning_rate=3e-4, num_minibatches=4, epochs=2),
        master=PPOConfig(learning_rate=0.01, num_minibatches=2, epochs=2),
    ),
}
PAPER_LEVELS = {"MLSH": 40.0, "shared policy": 25.0}
# A sub-policy "goes to" a goal slot when it ends within GOAL_RADIUS of it in this share of episodes.
SEPARATION_SHARE = 0.9


def subpolicy_goal_fractions(trainer, state, key, num_tasks: int = 200) -> dict:
    """Runs each sub-policy alone for one episode on `num_tasks` random tasks (sampled actions).

    Returns per sub-policy the fraction of episodes ending within GOAL_RADIUS of goal slot 0 and of
    goal slot 1; whether the sub-policies specialised (`separated`: each ends near one slot in >= 90%
    of episodes, and they use different slots); and whether every goal slot is some sub-policy's
    in >= 90% of episodes (`covers_every_goal`: the same as `separated` for K=2; with more
    sub-policies than goals, some may go nowhere in particular).
    """
    task_key, run_key = jax.random.split(key)
    tasks = jax.vmap(trainer.env.sample_task)(jax.random.split(task_key, num_tasks))
    fractions = []
    for k in range(trainer.config.num_subpolicies):
        trajectory = run_subpolicy(trainer, state, k, tasks, jax.random.fold_in(run_key, k))
        final = np.asarray(trajectory.inner.position[-1])            # [n, 2]
        goals = np.asarray(trajectory.inner.goals[-1])               # [n, 2, 2]
        distance = np.linalg.norm(final[:, None, :] - goals, axis=-1)  # [n, 2]
        fractions.append((distance < GOAL_RADIUS).mean(axis=0).tolist())
    best_slots = [int(np.argmax(f)) for f in fractions]
    separated = (len(fractions) >= 2 and all(max(f) >= SEPARATION_SHARE for f in fractions)
                 and len(set(best_slots)) == len(best_slots))
    covered = {int(np.argmax(f)) for f in fractions if max(f) >= SEPARATION_SHARE}
    return {"episodes": num_tasks, "fraction_ending_at_goal_slot": fractions,
            "preferred_goal_slot": best_slots, "separated": bool(separated),
            "covers_every_goal": len(covered) == len(fractions[0])}


def draw_subpolicies(trainer, state, key, path, num_examples: int = 8) -> None:
    """Figure: each sub-policy's path from the start on a few sample goal pairs."""
    task_key, run_key = jax.random.split(key)
    tasks = jax.vmap(trainer.env.sample_task)(jax.random.split(task_key, num_examples))
    positions, goals = [], None
    for k in range(trainer.config.num_subpolicies):
        trajectory = run_subpolicy(trainer, state, k, tasks, run_key)  # same key: same goal draws
        positions.append(np.swapaxes(np.asarray(trajectory.inner.position), 0, 1))
        goals = np.asarray(trajectory.inner.goals[0])
    plots.plot_bandit_subpolicies(np.stack(positions), goals, path, WORLD_SIZE, GOAL_RADIUS)


def analyse(result, out) -> dict:
    """Where each sub-policy goes when it runs alone (and subpolicies.png)."""
    key = jax.random.PRNGKey(result.trainer.config.seed + 1)
    policies = common.shared_part_on_host(result.state)
    behaviour = subpolicy_goal_fractions(result.trainer, policies, key)
    if is_main_process():
        draw_subpolicies(result.trainer, policies, key, out / "subpolicies.png")
    return {"subpolicy_behaviour": behaviour}


def main(argv: list[str] | None = None) -> dict:
    # The post-warmup series averages the joint-phase slots only (B * U / (W + U) of them): smoothed
    # over ~30 slot-updates.
    return common.run_with_shared_baseline("experiments.moving_bandits", "Moving bandits", PRESETS, argv, analyse,
                                           default_preset="fast", paper_levels=PAPER_LEVELS,
                                           smooth=lambda config: max(3, -(-30 // config.joint_slot_capacity)))


if __name__ == "__main__":
    main(sys.argv[1:])
