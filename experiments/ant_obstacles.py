"""Ant obstacle course (sparse reward) solved by transfer: masters over a finished run's frozen
sub-policies, vs flat PPO from scratch on the same env-step budget.

    python -m experiments.ant_obstacles --subs-from runs/ant_twowalk_auto_s0
    python -m experiments.ant_obstacles --subs-from RUN --preset smoke --no-baseline

Only masters learn (one per task slot, each an independent try on the one course; a master lives
for the whole run); the sub-policies and their observation statistics come from --subs-from (an
ant twowalk or ant maze run; it must be finished and its sub-policies must fit this env).
The flat-PPO baseline (a single policy from scratch, trained by every slot) goes to OUT/flat_ppo.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import jax
import numpy as np

from envs.ant_obstacles import GOAL
from experiments import ant_family, common, plots
from mlsh_jax.distributed import is_main_process
from mlsh_jax.evaluation import run_hierarchy, run_subpolicy
from mlsh_jax.files import write_json
from mlsh_jax.loading import RunLoadError, load_config
from mlsh_jax.trainer import Trainer
from mlsh_jax.transfer import TransferError, load_subpolicies, with_subpolicies


def course_settings(**changes):
    """Master-only training on the 2000-step course; K and network sizes come from the source run."""
    config = ant_family.paper_settings("ant_obstacles", 2, episode_length=2000, train_subpolicies=False,
                                       joint_updates=0)
    config = dataclasses.replace(config, **changes)
    return dataclasses.replace(config, warmup_updates=config.num_updates)


PRESETS = {
    "auto": lambda: course_settings(num_slots=8, num_updates=150),
    "paper": lambda: course_settings(num_slots=10, num_updates=500),
    "smoke": lambda: dataclasses.replace(
        ant_family.smoke_settings("ant_obstacles", 2, episode_length=40, train_subpolicies=False,
                                  joint_updates=0), warmup_updates=2),
}


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


def masters_progress(result) -> dict:
    """Each slot's trained master over the transferred sub-policies, one sampled episode."""
    state = result.state
    key = jax.random.PRNGKey(result.trainer.config.seed + 1)
    trajectory, _ = run_hierarchy(result.trainer, state, state.slots.master.params, state.slots.task, key)
    return course_progress(trajectory.obs, trajectory.reward[1:])


def flat_progress(result, episodes: int) -> dict:
    """The flat policy, `episodes` sampled episodes."""
    key = jax.random.PRNGKey(result.trainer.config.seed + 1)
    tasks = jax.vmap(result.trainer.env.sample_task)(jax.random.split(key, episodes))
    trajectory = run_subpolicy(result.trainer, result.state, 0, tasks, key)
    return course_progress(trajectory.obs, trajectory.reward[1:])


def flat_ppo(config):
    """Flat PPO from scratch on the same budget: one policy trained on every slot's steps (its env
    copies live, like the masters, for the whole run: W = num_updates)."""
    return dataclasses.replace(config, algorithm="shared", num_subpolicies=1, train_subpolicies=True)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0], PRESETS, default_preset="auto")
    parser.add_argument("--subs-from", type=pathlib.Path, required=True, help="finished run to take sub-policies from")
    parser.add_argument("--no-baseline", action="store_true", help="skip flat PPO from scratch")
    args = parser.parse_args(argv)
    try:
        try:
            source = load_config(args.subs_from)
        except RunLoadError as error:
            raise TransferError(f"--subs-from {args.subs_from}: {error}") from None
        args.overrides = [f"num_subpolicies={source.num_subpolicies}",
                          f"hidden_sizes={','.join(map(str, source.hidden_sizes))}"] + list(args.overrides)
        config, out = common.resolve_run("ant_obstacles", args, PRESETS)
        trainer = Trainer(config)
        transferred = load_subpolicies(args.subs_from, trainer)
        baseline_out = out / "flat_ppo"
        resume_baseline = args.resume and common.can_resume(baseline_out)
    except common.INPUT_ERRORS + (TransferError,) as error:
        common.exit_with_usage_error(str(error))

    print(f"Ant obstacle course: {config.num_slots} masters over the sub-policies of {args.subs_from}, "
          f"{ant_family.run_time_estimate(config)} -> {out}", flush=True)
    module = "experiments.ant_obstacles"
    mlsh = common.train_or_exit(module, config, out, resume=args.resume, trainer=trainer,
                                progress=not args.no_progress, description="masters over transferred subs",
                                prepare_state=lambda state: with_subpolicies(trainer, state, transferred))
    single_process = jax.process_count() == 1  # the progress episodes need every slot's master here
    summary = dict(mlsh.summary, subs_from=str(args.subs_from),
                   progress=masters_progress(mlsh) if single_process else None)
    curves = {"MLSH transfer": mlsh.rows}
    if not args.no_baseline:
        flat = common.train_or_exit(module, flat_ppo(config), baseline_out, resume=resume_baseline,
                                    progress=not args.no_progress, description="flat PPO")
        curves["flat PPO from scratch"] = flat.rows
        summary["baseline_flat_ppo"] = dict({k: flat.summary[k] for k in ("mean_return", "wall_s")},
                                            progress=flat_progress(flat, config.num_slots) if single_process else None)
    if is_main_process():
        write_json(out / "summary.json", summary)
        plots.plot_learning_curves(curves, out / "learning_curve.png", title="Ant obstacle course", smooth=5)
        print(json.dumps({k: summary[k] for k in ("mean_return", "wall_s", "progress")}
                         | {k: summary[k] for k in ("baseline_flat_ppo",) if k in summary}))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
