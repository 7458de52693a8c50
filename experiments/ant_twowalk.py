"""Ant twowalk (paper Figure 7 left): MLSH vs the shared policy; do the sub-policies walk apart?

    python -m experiments.ant_twowalk                  # preset `auto`: sized to the devices present
    python -m experiments.ant_twowalk --preset cpu     # ~1 hour on a 2-core CPU
    python -m experiments.ant_twowalk --preset paper   # the paper's 10 task slots
    python -m experiments.ant_twowalk --preset smoke   # seconds plus compile, for tests

Writes the run contract into --out, the shared-policy baseline into --out/baseline_shared, and in
summary.json `subpolicy_headings`: where each sub-policy, run alone, takes the ant (the two
should head in directions at least 60 degrees apart).
"""

from __future__ import annotations

import sys

import jax

from experiments import brax_family, common

K = 2
# The reward (-sqrt(distance to goal) / 3000 per step, ~1e-3) is scaled by 100 in the PPO targets so
# that value errors at the networks' initial scale (~1) do not drown the advantages. The sub-policies
# see the ant's position, as in the original code: the reward is a function of it. Measured (CPU
# preset, seed 0): position-blind sub-policies headed 35 deg apart at -0.724; seeing it, 68 deg
# apart at -0.665 (README, "Ant family").
TASK = dict(reward_scale=100.0, subpolicy_observation="full")
PRESETS = brax_family.presets("ant_twowalk", K, cpu_updates=400, **TASK)


def analyse(result, out) -> dict:
    """Each sub-policy alone on 16 episodes: heading and distance (the task does not matter)."""
    trainer, state = result.trainer, common.shared_part_on_host(result.state)
    key = jax.random.PRNGKey(trainer.config.seed + 1)
    tasks = jax.vmap(trainer.env.sample_task)(jax.random.split(key, 16))
    return {"subpolicy_headings": brax_family.subpolicy_headings(trainer, state, tasks, key)}


def main(argv=None) -> dict:
    return brax_family.run_experiment("experiments.ant_twowalk", "Ant twowalk", PRESETS, argv, analyse)


if __name__ == "__main__":
    main(sys.argv[1:])
