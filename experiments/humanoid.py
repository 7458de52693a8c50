"""Humanoid walk / crawl (paper Figure 7 right): MLSH vs the shared policy; does one sub-policy keep
the torso high and the other low?

    python -m experiments.humanoid                  # preset `auto`: sized to the devices present
    python -m experiments.humanoid --preset cpu     # 16 task slots, a long run on a 2-core CPU
    python -m experiments.humanoid --preset paper   # the paper's 10 task slots
    python -m experiments.humanoid --preset smoke   # seconds plus compile, for tests

Paper settings: 1000-step episodes, N=200, W=20, U=40, K=2 (the paper does not state K). Writes the
run contract into --out, the shared-policy baseline into --out/baseline_shared, and in summary.json
`subpolicy_postures`: each sub-policy run alone on both objectives, its mean torso height and how
far it moves along x.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from envs.humanoid import CRAWL, HEALTHY_Z, WALK, WalkCrawlTask
from experiments import brax_family, common
from mlsh_jax.evaluation import run_subpolicy

K = 2
# Walking pays ~5 per step: rewards are scaled by 0.1 in the PPO targets (as Brax's humanoid PPO does).
# The two objectives pay at different levels (walking 5 per upright step, crawling nothing for
# staying up) and the sub-policies' value nets cannot tell them apart from the body's state, so
# advantages are standardised per task slot and sub-policy (as the original standardised per worker,
# i.e. per task), not pooled over walk and crawl slots.
TASK = dict(reward_scale=0.1, sub_advantage_normalization="slot")
PRESET_NOTES = brax_family.PRESET_NOTES
PRESETS = brax_family.presets("humanoid_walkcrawl", K, cpu_updates=240, body="humanoid", **TASK)


def subpolicy_postures(trainer, state, key, episodes: int = 8) -> dict:
    """Each sub-policy alone for one episode on each objective (`episodes` copies, sampled actions,
    no reset at a fall): mean torso height over the episode and over its first macro step (what a
    master's one choice gets: a walker that falls later still stood through it), the share of steps
    with the torso at or above the walk task's healthy height, and mean x displacement."""
    result = {}
    for k in range(trainer.config.num_subpolicies):
        per_objective = {}
        for name, objective in (("walk", WALK), ("crawl", CRAWL)):
            tasks = WalkCrawlTask(objective=jnp.full((episodes,), objective, jnp.int32))
            trajectory = run_subpolicy(trainer, state, k, tasks, jax.random.fold_in(key, 2 * k + objective))
            obs = np.asarray(trajectory.obs)                       # [T + 1, n, 246]: torso z first, x at -2
            height = obs[..., 0]
            per_objective[name] = {
                "mean_torso_height": round(float(height.mean()), 3),
                "mean_torso_height_first_macro_step": round(float(height[:trainer.config.macro_duration].mean()), 3),
                "upright_fraction": round(float((height >= HEALTHY_Z).mean()), 3),
                "mean_x_displacement": round(float((obs[-1, :, -2] - obs[0, :, -2]).mean()), 3)}
        result[f"subpolicy_{k}"] = per_objective
    return result


def analyse(result, out) -> dict:
    trainer, state = result.trainer, common.shared_part_on_host(result.state)
    return {"subpolicy_postures": subpolicy_postures(trainer, state, jax.random.PRNGKey(trainer.config.seed + 1))}


def main(argv=None) -> dict:
    return brax_family.run_experiment("experiments.humanoid", "Humanoid walk / crawl", PRESETS, argv, analyse)


if __name__ == "__main__":
    main(sys.argv[1:])
