"""What the transfer courses share (ant obstacle course, humanoid course): masters trained over a
finished run's frozen sub-policies, against baselines trained on the same env-step budget.

Only masters learn (one per task slot, each an independent try on the one course; a master lives for
the whole run); the sub-policies and their observation statistics come from `--subs-from` (it must be
finished and its sub-policies must fit the course). Each baseline goes to OUT/<its name>.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Callable

import jax

from experiments import brax_family, common, plots
from experiments.usage import config_fields
from mlsh_jax.config import MLSHConfig
from mlsh_jax.distributed import is_main_process
from mlsh_jax.evaluation import run_hierarchy, run_subpolicy
from mlsh_jax.files import write_json
from mlsh_jax.loading import RunLoadError, load_config
from mlsh_jax.trainer import Trainer
from mlsh_jax.transfer import TransferError, load_subpolicies, with_subpolicies

# progress(observations [T + 1, n, obs], rewards [T, n]) -> dict: how far one episode per policy got.
Progress = Callable[..., dict]


def course_settings(env: str, episode_length: int, **changes) -> MLSHConfig:
    """Master-only training on a course (warmup = the whole run, no sub-policy update); K, network
    sizes and what the sub-policies see come from the source run."""
    config = brax_family.paper_settings(env, 2, episode_length=episode_length, train_subpolicies=False,
                                        joint_updates=0)
    config = dataclasses.replace(config, **changes)
    return dataclasses.replace(config, warmup_updates=config.num_updates)


def smoke_course_settings(env: str, **changes) -> MLSHConfig:
    """Seconds of master-only training, for tests."""
    return dataclasses.replace(brax_family.smoke_settings(env, 2, episode_length=40, train_subpolicies=False,
                                                          joint_updates=0, **changes), warmup_updates=2)


def flat_ppo(config: MLSHConfig) -> MLSHConfig:
    """One flat policy on the same budget: trained on every slot's steps (its env copies live, like
    the masters, for the whole run: W = num_updates); it sees the whole observation."""
    return dataclasses.replace(common.shared_baseline(config), train_subpolicies=True)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A policy trained on the course on the masters' budget, into OUT/`name`.

    `from_shared_policy`: it starts from the --subs-from run's shared-policy baseline
    (SUBS_FROM/baseline_shared) instead of from scratch."""

    label: str
    name: str
    from_shared_policy: bool = False


# What the courses' `auto` preset means, for --help (their other presets: `usage.PRESET_NOTES`).
PRESET_NOTES = {"auto": "8 task slots (masters) on any device"}

SINGLE_POLICY = Baseline("single policy from scratch", "flat_ppo")
SHARED_TRANSFER = Baseline("shared policy transferred", "shared_transfer", from_shared_policy=True)


def masters_progress(result, progress: Progress) -> dict:
    """Each slot's trained master over the transferred sub-policies, one sampled episode on the
    task's own reward (no shaping)."""
    state = result.state
    key = jax.random.PRNGKey(result.trainer.config.seed + 1)
    trajectory, _ = run_hierarchy(result.trainer, state, state.slots.master.params, state.slots.task, key,
                                  env=common.original_task_env(result.trainer.config))
    return progress(trajectory.obs, trajectory.reward[1:])


def policy_progress(result, episodes: int, progress: Progress) -> dict:
    """A flat policy (the one sub-policy of a shared run), `episodes` sampled episodes on the task's
    own reward."""
    key = jax.random.PRNGKey(result.trainer.config.seed + 1)
    tasks = jax.vmap(result.trainer.env.sample_task)(jax.random.split(key, episodes))
    trajectory = run_subpolicy(result.trainer, result.state, 0, tasks, key,
                               env=common.original_task_env(result.trainer.config))
    return progress(trajectory.obs, trajectory.reward[1:])


def _baseline_plan(baseline: Baseline, config: MLSHConfig, subs_from: pathlib.Path):
    """(configuration, trainer, prepare_state or None) of a baseline; raises TransferError for a
    source without a usable shared policy."""
    baseline_config = flat_ppo(config)
    if not baseline.from_shared_policy:
        return baseline_config, None, None
    shared_run = subs_from / common.BASELINE_DIR
    if not (shared_run / "config.json").is_file():
        raise TransferError(f"--subs-from {subs_from} has no shared-policy baseline ({shared_run}); train the "
                            f"source without --no-baseline, or pass --no-baseline here")
    # It sees what the transferred policy was trained to see.
    baseline_config = dataclasses.replace(baseline_config,
                                          subpolicy_observation=load_config(shared_run).subpolicy_observation)
    trainer = Trainer(baseline_config)
    shared = load_subpolicies(shared_run, trainer, algorithm="shared")
    return baseline_config, trainer, lambda state: with_subpolicies(trainer, state, shared)


def course_parser(module: str, presets: dict):
    """The parser of a transfer course's command line: the usual run flags, `--subs-from RUN`
    (required) and `--no-baseline` (masters only)."""
    parser = common.base_parser(module, presets, default_preset="auto")
    parser.add_argument("--subs-from", type=pathlib.Path, required=True, help="finished run to take sub-policies from")
    parser.add_argument("--no-baseline", action="store_true", help="masters only, no baselines")
    return parser


def resume_args(args, out: pathlib.Path) -> list:
    """The arguments that resume a course's command line (masters and baselines) with run directory `out`."""
    return (["--subs-from", args.subs_from, "--out", out, "--resume"] + (["--no-baseline"] if args.no_baseline else [])
            + common.cluster_flags(args))


def run_course_transfer(module: str, title: str, env: str, presets: dict, argv, progress: Progress,
                        baselines: tuple[Baseline, ...]) -> dict:
    """Command line of a transfer course (`course_parser`). Writes the run contract, summary
    `progress` of the masters and of each baseline, and a learning-curve PNG with every method."""
    args = course_parser(module, presets).parse_args(argv)
    try:
        try:
            source = load_config(args.subs_from)
        except RunLoadError as error:
            raise TransferError(f"--subs-from {args.subs_from}: {error}") from None
        source_networks = [f"{name}={value}" for name, _, value in config_fields(source.sub_network, "sub_network.")]
        args.overrides = [f"num_subpolicies={source.num_subpolicies}", *source_networks,
                          f"subpolicy_observation={source.subpolicy_observation}"] + list(args.overrides)
        config, out, updates_done = common.resolve_run(env, args, presets)
        trainer = Trainer(config)
        transferred = load_subpolicies(args.subs_from, trainer)
        plans = [] if args.no_baseline else [(b, _baseline_plan(b, config, args.subs_from)) for b in baselines]
    except common.INPUT_ERRORS + (TransferError,) as error:
        common.exit_with_usage_error(str(error))

    print(f"{title}: {config.num_slots} masters over the sub-policies of {args.subs_from}, "
          f"{brax_family.run_time_estimate(config, updates_done)} -> {out}", flush=True)
    resume = resume_args(args, out)
    mlsh = common.train_or_exit(module, config, out, resume=args.resume, trainer=trainer, resume_args=resume,
                                progress=not args.no_progress, description="masters over transferred subs",
                                prepare_state=lambda state: with_subpolicies(trainer, state, transferred))
    single_process = jax.process_count() == 1  # the progress episodes need every slot's master here
    summary = dict(mlsh.summary, subs_from=str(args.subs_from),
                   progress=masters_progress(mlsh, progress) if single_process else None)
    curves = {"MLSH transfer": mlsh.rows}
    for baseline, (baseline_config, baseline_trainer, prepare) in plans:
        baseline_out = out / baseline.name
        result = common.train_or_exit(module, baseline_config, baseline_out,
                                      resume=args.resume and common.can_resume(baseline_out), trainer=baseline_trainer,
                                      resume_args=resume,
                                      progress=not args.no_progress, description=baseline.label, prepare_state=prepare)
        curves[baseline.label] = result.rows
        summary[f"baseline_{baseline.name}"] = dict(
            {k: result.summary[k] for k in ("mean_return", "wall_s")}, label=baseline.label,
            progress=policy_progress(result, config.num_slots, progress) if single_process else None)
    if is_main_process():
        write_json(out / "summary.json", summary)
        plots.plot_learning_curves(curves, out / "learning_curve.png", title=title, smooth=5)
        print(json.dumps({k: summary[k] for k in ("mean_return", "wall_s", "progress")}
                         | {k: v for k, v in summary.items() if k.startswith("baseline_")}))
    return summary
