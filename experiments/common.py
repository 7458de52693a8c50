"""Command-line front end shared by the experiment modules: presets, overrides, clear errors.

Every experiment accepts `--out DIR`, `--seed INT`, `--preset NAME`, `--set FIELD=VALUE`
overrides of any configuration field (dotted for PPO settings, e.g. `--set sub.learning_rate=1e-4`)
and `--resume` (continue the run in --out from its newest checkpoint; its stored configuration is
the starting point, and only `RESUMABLE_FIELDS` may be changed with --set). `--set help` (or
`--list-fields`) prints every field with its type and its value in the chosen preset; `--help` shows
the experiment's usage text and what each preset means. The experiments with a shared-policy
baseline (and the transfer courses, with theirs) also take `--no-baseline` (MLSH alone) and, the
former, `--baseline-only` (the baseline of the MLSH run in --out, as a second job beside it). A
preempted run prints a command that resumes it (`train_or_exit`). `--stall-limit SECONDS` and
`--no-stall-watchdog` set the stall watchdog (`experiments.usage.add_watchdog_flags`).
Bad input stops before any compile or file write with one message and exit code 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
import shlex
import sys
from typing import Callable, Iterator, Mapping, Sequence

import jax

from envs import ENV_REGISTRY, make_env
from mlsh_jax.checkpoint import CheckpointError
from mlsh_jax.config import RESUMABLE_FIELDS, ConfigError, MLSHConfig, config_differences
from mlsh_jax.loading import CONFIG_FILE
from mlsh_jax.resume import ResumeError, find_resume_point, read_run_config
from mlsh_jax.distributed import (ClusterError, check_slots_divide, describe_devices, initialize_cluster, slot_mesh,
                                  to_host, unused_accelerator_warning)
from mlsh_jax.faults import NonFiniteError
from mlsh_jax.run import RunDirectoryError, RunResult, check_run_dir, train
from experiments.usage import (WATCHDOG_SETTINGS, UsageError, apply_overrides, config_preset_descriptions,
                               describe_presets, exit_with_usage_error, usage_parser)


INPUT_ERRORS = (UsageError, ConfigError, RunDirectoryError, ResumeError, CheckpointError, ClusterError)


CLUSTER_TIMEOUT_S = 120       # default of --cluster-timeout

def base_parser(module: str, presets: Mapping[str, Callable[[], MLSHConfig]], default_preset: str):
    """An argparse parser with the run-contract flags every experiment takes; --help shows the usage
    text of `module` ("experiments.x") and what each preset means. `--set help` or `--list-fields`
    prints the configuration fields of the chosen preset and exits 0 (see `_ExperimentParser`)."""
    parser = usage_parser(module, lambda: describe_presets(config_preset_descriptions(module, presets), default_preset))
    parser.presets = presets
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="run directory to create (must not exist or be empty); "
                             "default runs/<experiment>_<preset>_s<seed>")
    parser.add_argument("--seed", type=int, default=None, help="PRNG seed (default 0)")
    parser.add_argument("--preset", default=None,
                        help=f"one of: {', '.join(presets)} (default {default_preset}; listed below)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest checkpoint (its configuration, "
                             f"plus --set of {', '.join(RESUMABLE_FIELDS)})")
    cluster = parser.add_argument_group("multi-host (see docs/clusters.md)")
    cluster.add_argument("--distributed", action="store_true",
                         help="join a multi-process JAX cluster (jax.distributed; detected on SLURM, Open MPI "
                              "and Cloud TPU, or given by the three flags below)")
    cluster.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    cluster.add_argument("--num-processes", type=int, default=None, help="number of processes in the cluster")
    cluster.add_argument("--process-id", type=int, default=None, help="this process's index, 0-based")
    cluster.add_argument("--cluster-timeout", type=int, default=CLUSTER_TIMEOUT_S,
                         help=f"seconds to wait for the cluster (default {CLUSTER_TIMEOUT_S})")
    parser.set_defaults(default_preset=default_preset)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a configuration field, e.g. --set num_slots=200 "
                             "--set sub.learning_rate=1e-4 (repeatable); --set help lists the fields")
    parser.add_argument("--list-fields", action="store_true",
                        help="print every configuration field with its type and its value in the chosen preset, "
                             "then exit (the same as --set help)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def resolve_config(args, presets: Mapping[str, Callable[[], MLSHConfig]],
                   stored: MLSHConfig | None = None) -> MLSHConfig:
    """Preset (or, on resume, the run's stored configuration) + seed + overrides -> a validated
    configuration; raises UsageError or ConfigError."""
    preset = args.preset or args.default_preset
    if preset not in presets:
        raise UsageError(f"unknown preset {preset!r}; allowed: {', '.join(presets)}")
    base = stored if stored is not None and args.preset is None else presets[preset]()
    seed = args.seed if args.seed is not None else (stored.seed if stored is not None else 0)
    config = apply_overrides(dataclasses.replace(base, seed=seed), args.overrides)
    return config.validate(tuple(ENV_REGISTRY))


def default_out_dir(experiment: str, args) -> pathlib.Path:
    if args.out is not None:
        return args.out
    return pathlib.Path("runs") / f"{experiment}_{args.preset or args.default_preset}_s{args.seed or 0}"


def check_out_dir(out: pathlib.Path) -> None:
    """Refuses an output directory that holds files, or one that cannot be created."""
    check_run_dir(out)


def resolve_run(experiment: str, args, presets: Mapping[str, Callable[[], MLSHConfig]]
                ) -> tuple[MLSHConfig, pathlib.Path, int]:
    """The configuration, run directory and updates already done (0 for a new run) of a command
    line, checked before anything is compiled or written: a new run needs a free --out; `--resume`
    needs a run there that can continue under the resulting configuration (its checkpoint is
    restored and verified). With `--distributed` the process joins its cluster first; the task
    slots must split evenly over all devices."""
    out = default_out_dir(experiment, args)
    join_cluster_if_asked(args)
    stored = read_run_config(out) if args.resume else None
    config = resolve_config(args, presets, stored=stored)
    check_slots_divide(config.num_slots, slot_mesh())
    if args.resume:
        return config, out, find_resume_point(out, config).update
    check_out_dir(out)
    return config, out, 0


def join_cluster_if_asked(args) -> None:
    """Joins the multi-process cluster of `--distributed`. It comes before anything else: presets
    sized to the devices present look at them (which starts JAX's backend, after which a process can
    no longer join a cluster)."""
    if args.distributed:
        initialize_cluster(args.coordinator, args.num_processes, args.process_id, timeout_s=args.cluster_timeout)
    elif any(v is not None for v in (args.coordinator, args.num_processes, args.process_id)):
        raise UsageError("--coordinator, --num-processes and --process-id need --distributed")


def resolve_baseline_only(experiment: str, args, presets: Mapping[str, Callable[[], MLSHConfig]]
                          ) -> tuple[MLSHConfig, pathlib.Path, int]:
    """`--baseline-only`: the shared-policy baseline of the MLSH run in --out, as its own job (e.g.
    beside that run on another machine). Its configuration is the MLSH run's stored one, so the two
    stay paired: --preset is refused and --set may change only RESUMABLE_FIELDS. Returns the
    baseline's configuration, directory (OUT/baseline_shared) and updates already done."""
    if args.preset is not None:
        raise UsageError("--baseline-only takes its configuration from the MLSH run in --out; drop --preset")
    out = default_out_dir(experiment, args)
    join_cluster_if_asked(args)
    if not (out / CONFIG_FILE).is_file():
        raise UsageError(f"--baseline-only needs the MLSH run it is the baseline of in {out}: start that run "
                         "first (e.g. with --no-baseline; it writes its config.json before compiling)")
    stored = read_run_config(out)
    config = resolve_config(args, presets, stored=stored)
    unpaired = sorted(set(config_differences(stored, config)) - set(RESUMABLE_FIELDS))
    if unpaired:
        raise UsageError(f"--baseline-only cannot change {', '.join(unpaired)}: the baseline must match the "
                         f"MLSH run in {out}; only {', '.join(RESUMABLE_FIELDS)} may be set")
    check_slots_divide(config.num_slots, slot_mesh())
    baseline, baseline_out = shared_baseline(config), out / BASELINE_DIR
    if args.resume:
        return baseline, baseline_out, find_resume_point(baseline_out, baseline).update
    check_out_dir(baseline_out)
    return baseline, baseline_out, 0


def announce(what: str, details: str) -> None:
    """Prints a command's first line, "WHAT on PLATFORM (DEVICES): DETAILS", and below it (stderr) a
    warning when a GPU/TPU build of JAX is installed but JAX computes on the CPU."""
    print(f"{what} on {describe_devices()}: {details}", flush=True)
    warning = unused_accelerator_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)


def env_steps_left(config: MLSHConfig, updates_done: int = 0) -> str:
    """'N env steps' of a new run, 'N env steps left of M' of one resumed after `updates_done` updates."""
    left = (config.num_updates - updates_done) * config.env_steps_per_update
    total = config.num_updates * config.env_steps_per_update
    return f"{left:,} env steps" + (f" left of {total:,}" if updates_done else "")


def command_line(module: str, argv: Sequence) -> str:
    """`python -m module ARGV...` as one shell command line (arguments quoted where needed)."""
    return shlex.join(["python", "-m", module, *map(str, argv)])


def cluster_flags(args) -> list[str]:
    """The multi-host flags given on a command line (`base_parser`), to repeat in a command that
    continues its job in the same process."""
    flags = ["--distributed"] if args.distributed else []
    for flag, value in (("--coordinator", args.coordinator), ("--num-processes", args.num_processes),
                        ("--process-id", args.process_id)):
        flags += [flag, str(value)] if value is not None else []
    return flags + (["--cluster-timeout", str(args.cluster_timeout)]
                    if args.cluster_timeout != CLUSTER_TIMEOUT_S else [])


# (module, argv) of the jobs running now, outermost first (`job`).
_JOBS: list[tuple[str, list[str]]] = []


@contextlib.contextmanager
def job(module: str, argv: Sequence) -> Iterator[None]:
    """Within it, a preempted run (`train_or_exit`) says to resume with `python -m module ARGV...`:
    for a command that runs other experiments' commands as its steps (in this process), the command
    that continues the whole job. Where jobs nest, the outermost one's command is printed."""
    _JOBS.append((module, [str(a) for a in argv]))
    try:
        yield
    finally:
        _JOBS.pop()


def train_or_exit(module: str, config: MLSHConfig, out: pathlib.Path, *, resume: bool,
                  resume_args: Sequence | None = None, **train_kwargs) -> RunResult:
    """`mlsh_jax.run.train` for a command line: a preempted run prints how to resume it and exits 0;
    a run that produced NaNs prints the message and exits 1; a second stop signal or a stall ends the
    process at once, printing the same resume command (exit codes: `mlsh_jax.faults`). The resume
    command is `python -m module` + `resume_args` (by default `--out OUT --resume`: give the arguments
    that resume the whole command when `out` is one of its parts), or the outermost `job`'s command.
    The stall watchdog takes the command line's settings (`usage.WATCHDOG_SETTINGS`)."""
    resume_command = command_line(*(_JOBS[0] if _JOBS else (module, resume_args or ["--out", out, "--resume"])))
    try:
        result = train(config, out, resume=resume, resume_command=resume_command,
                       **{**WATCHDOG_SETTINGS, **train_kwargs})
    except NonFiniteError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if result.preempted:
        print(f"to resume: {resume_command}", file=sys.stderr, flush=True)
        raise SystemExit(0)
    return result


def shared_part_on_host(state):
    """A TrainState's replicated part (sub-policies, observation statistics) as host arrays, without
    the per-slot part: what evaluation and figures need, usable on any process of a cluster."""
    return state.replace(subs=to_host(state.subs), obs_stats=to_host(state.obs_stats), slots=None)


# Where an experiment puts its shared-policy baseline: a run directory inside the MLSH run's.
BASELINE_DIR = "baseline_shared"


def shared_baseline(config: MLSHConfig) -> MLSHConfig:
    """The shared-policy baseline on the same data budget: one flat policy, every slot trains it. It
    sees the whole observation: with no master, nothing else tells it where it is."""
    return dataclasses.replace(config, algorithm="shared", num_subpolicies=1, subpolicy_observation="full")


def can_resume(out: pathlib.Path) -> bool:
    """Whether `out` holds a run that `--resume` should continue (rather than start afresh)."""
    return out.is_dir() and any(out.iterdir())


# The returns that an experiment prints and compares with its shared-policy baseline (the last one
# only for envs with kinds of task: `TaskEnv.task_kinds`).
HEADLINE_RETURNS = ("mean_return", "mean_return_post_warmup", "mean_return_task_balanced")


def run_with_shared_baseline(module: str, title: str, presets: Mapping[str, Callable[[], MLSHConfig]], argv,
                             analyse: Callable[[RunResult, pathlib.Path], dict], default_preset: str,
                             estimate: Callable[[MLSHConfig, int], str] | None = None,
                             paper_levels: Mapping[str, float] | None = None,
                             smooth: int | Callable[[MLSHConfig], int] = 5) -> dict:
    """The command line of an experiment that trains MLSH and then (unless --no-baseline) the
    shared-policy baseline on the same budget into OUT/baseline_shared.

    `analyse(result, out) -> dict` looks at the finished MLSH run (sub-policy behaviour, figures);
    its entries join summary.json. Writes summary.json and learning_curve.png (with
    `paper_levels` as dashed lines, except for the smoke preset); `estimate(config, updates_done)`
    adds a run-time estimate of the updates left to the first line printed; `smooth` is the curves'
    smoothing window (or a function of the configuration giving it). Returns the summary.
    """
    from experiments import plots
    from mlsh_jax.distributed import is_main_process
    from mlsh_jax.files import write_json

    parser = base_parser(module, presets, default_preset=default_preset)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-baseline", action="store_true", help="skip the shared-policy baseline")
    which.add_argument("--baseline-only", action="store_true",
                       help="train only the shared-policy baseline of the MLSH run in --out (started with "
                            "--no-baseline), as a second job beside it; then --resume writes the summary")
    args = parser.parse_args(argv)
    if args.baseline_only:
        return _baseline_only(module, title, presets, args, estimate)
    try:
        config, out, updates_done = resolve_run(module.split(".")[-1], args, presets)
        baseline_out = out / BASELINE_DIR
        resume_baseline = args.resume and can_resume(baseline_out)
        if resume_baseline:
            find_resume_point(baseline_out, shared_baseline(config))
    except INPUT_ERRORS as error:
        exit_with_usage_error(str(error))

    budget = (estimate or env_steps_left)(config, updates_done)
    announce(f"{title}{', resuming' if args.resume else ''}",
             f"{config.num_slots} task slots x {config.num_updates} updates, {budget}"
             f"{'' if args.no_baseline else ', then the shared-policy baseline on the same budget'} -> {out}")
    resume_args = ["--out", out, "--resume"] + (["--no-baseline"] if args.no_baseline else []) + cluster_flags(args)
    mlsh = train_or_exit(module, config, out, resume=args.resume, resume_args=resume_args,
                         progress=not args.no_progress, description="MLSH")
    analysis = analyse(mlsh, out) | original_task_returns(mlsh)
    summary = dict(mlsh.summary, **analysis)
    curves = {"MLSH": mlsh.rows}
    if not args.no_baseline:
        shared = train_or_exit(module, shared_baseline(config), baseline_out, resume=resume_baseline,
                               resume_args=resume_args, progress=not args.no_progress, description="shared policy")
        curves["shared policy"] = shared.rows
        summary["baseline_shared"] = _headline(shared.summary) | original_task_returns(shared)
    if not is_main_process():  # in a cluster, process 0 writes the files
        return summary
    write_json(out / "summary.json", summary)
    smoke = (args.preset or args.default_preset) == "smoke"
    plots.plot_learning_curves(curves, out / "learning_curve.png", title=f"{title} ({config.num_slots} task slots)",
                               paper_levels=None if smoke else paper_levels,
                               smooth=smooth(config) if callable(smooth) else smooth)
    headline = HEADLINE_RETURNS + ("wall_s", "baseline_shared")
    print(json.dumps({k: summary[k] for k in headline if k in summary} | analysis))
    return summary


def original_task_returns(result: RunResult) -> dict:
    """For a run whose task reward is shaped (`MLSHConfig.shaping`): {"original_task": each slot's
    policy on its own task without the shaping, 4 sampled episodes (`evaluation.slot_returns`)}, the
    returns to compare with the task's own; {} for a run without shaping."""
    from mlsh_jax.evaluation import slot_returns

    config = result.trainer.config
    if config.shaping.is_default:
        return {}
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 7)
    return {"original_task": slot_returns(result.trainer, result.state, key, env=original_task_env(config))}


def original_task_env(config: MLSHConfig):
    """The run's task distribution without its reward shaping (`MLSHConfig.shaping`): the env the
    analyses judge a run in, so that shaped and unshaped runs are compared on the task's own reward.
    One env object per (env, episode length): the analyses' compiled episodes are cached per env."""
    return _unshaped_env(config.env, config.episode_length)


@functools.lru_cache(maxsize=8)
def _unshaped_env(name: str, episode_length: int):
    return make_env(name, episode_length=episode_length)


def _headline(summary: dict) -> dict:
    return {k: summary[k] for k in HEADLINE_RETURNS + ("wall_s",) if k in summary}


def _baseline_only(module: str, title: str, presets: Mapping[str, Callable[[], MLSHConfig]], args,
                   estimate: Callable[[MLSHConfig, int], str] | None) -> dict:
    """`--baseline-only`: trains (or resumes) OUT/baseline_shared alone; prints and returns its headline
    returns. The pair's summary.json and figure come from `--resume` of OUT once both have finished."""
    try:
        config, out, updates_done = resolve_baseline_only(module.split(".")[-1], args, presets)
    except INPUT_ERRORS as error:
        exit_with_usage_error(str(error))
    budget = (estimate or env_steps_left)(config, updates_done)
    announce(f"{title}, shared-policy baseline only{', resuming' if args.resume else ''}",
             f"{config.num_slots} task slots x {config.num_updates} updates, {budget} -> {out}")
    shared = train_or_exit(module, config, out, resume=args.resume, progress=not args.no_progress,
                           resume_args=["--out", out.parent, "--baseline-only", "--resume", *cluster_flags(args)],
                           description="shared policy")
    headline = _headline(shared.summary)
    print(json.dumps(headline))
    print(f"when the MLSH run has finished too: python -m {module} --out {out.parent} --resume", flush=True)
    return headline


__all__ = ["BASELINE_DIR", "INPUT_ERRORS", "UsageError", "apply_overrides", "base_parser", "can_resume",
           "check_out_dir", "cluster_flags", "command_line", "default_out_dir", "env_steps_left",
           "exit_with_usage_error", "job", "join_cluster_if_asked", "resolve_baseline_only", "resolve_config",
           "resolve_run", "run_with_shared_baseline", "shared_baseline", "shared_part_on_host", "train_or_exit"]
