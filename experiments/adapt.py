"""Fast adaptation on unseen tasks (paper Figure 4 middle and right): fresh masters over a finished
run's frozen sub-policies, against a single policy from scratch and the shared policy fine-tuned,
each trained separately on every unseen task (one task per slot, many in parallel).

    python -m experiments.adapt --run runs/four_rooms_fast_s0 --out runs/adapt_four_rooms
    python -m experiments.adapt --run runs/moving_bandits_fast_s0 --out DIR2 --updates 10 --slots 100
    python -m experiments.adapt --run RUN --out DIR2 --goal-cells 3,17,40     # four rooms: these goals
    python -m experiments.adapt --run RUN --out DIR2 --no-baseline            # MLSH only
    python -m experiments.adapt --run RUN --out DIR2 --set master.learning_rate=1e-3   # master settings
    python -m experiments.adapt --run RUN --out DIR2 --set help               # the masters' settings
    python -m experiments.adapt --run RUN --out DIR2 --resume    # continue a stopped one: same arguments

Unseen tasks: envs with a held-out split (four rooms: goal cells, ant mazes: layouts) draw from
`--split` (default "heldout"); moving bandits and key-door draw fresh goal positions every episode,
so every task is new. The baselines (discrete-action envs) are the same trainer: with K = number of
actions, N = 1 and frozen "sub-policies" that each always take one action, a slot's master is a flat
policy over the env's actions (`mlsh_jax.transfer.primitive_subpolicies`); "single policy" starts
it from scratch, "shared policy fine-tuned" from the shared-policy baseline of --run
(RUN/baseline_shared, or --shared-from). Both are trained with the run's sub-policy PPO settings.

Writes DIR2/mlsh, DIR2/single_policy, DIR2/shared_finetuned (each the run contract; with several
--run, under DIR2/<run name>/), and DIR2/adapt.json (the return after each update, per update and
per env step of one task: mean, spread over tasks, spread over runs) with DIR2/adapt.png.

    python -m experiments.adapt --run runs/mb_s0 --run runs/mb_s1 --run runs/mb_s2 --out DIR2   # 3 seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import pathlib
import sys

import jax
import numpy as np

from envs import env_class
from experiments import common, plots, usage
from mlsh_jax.config import MLSHConfig, config_differences
from mlsh_jax.files import write_json
from mlsh_jax.loading import RunLoadError, load_config
from mlsh_jax.trainer import Trainer
from mlsh_jax.transfer import (TransferError, TransferredSubpolicies, check_compatible, load_shared_policy,
                               load_subpolicies, primitive_subpolicies, with_master_params, with_subpolicies)

MODULE = "experiments.adapt"
# The paper's adaptation curves, where it gives them (docs/algorithm.md, "The paper's numbers").
PAPER_LEVELS = {
    "moving_bandits": {"MLSH after 8 updates": 26.0, "shared fine-tuned": 20.0, "single policy": 2.0},
    # The paper's four-rooms level is for its own task set (goals in the bottom-right room).
    "four_rooms_paper": {"MLSH by 10k steps": 80.0},
}


def parse_args(argv):
    parser = usage.usage_parser(MODULE)
    parser.add_argument("--run", type=pathlib.Path, required=True, action="append",
                        help="finished MLSH run whose sub-policies to use; repeat for several runs (e.g. seeds): "
                             "each adapts into OUT/<run name>, adapt.json has the mean and spread over runs")
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="directory to create (must not exist or be empty; with --resume, the one to continue)")
    parser.add_argument("--split", default=None,
                        help="envs with splits (four rooms: goal cells of the run's task set; ant mazes: layouts): "
                             "which tasks to draw, one of heldout (default), train, all")
    parser.add_argument("--goal-cells", default=None,
                        help="four rooms: comma-separated goal cells instead of a split, each a free-cell index "
                             "0..103 or row:col (e.g. 3,17,11:11)")
    parser.add_argument("--updates", type=int, default=15, help="master updates on each unseen task (default 15)")
    parser.add_argument("--slots", type=int, default=100, help="unseen tasks trained in parallel (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run's adaptation (+1 per run)")
    parser.add_argument("--shared-from", type=pathlib.Path, default=None,
                        help="shared-policy run to fine-tune (default RUN/baseline_shared when it exists)")
    parser.add_argument("--no-baseline", action="store_true", help="MLSH only, no baselines")
    parser.add_argument("--no-baselines", dest="no_baseline", action="store_true", help=argparse.SUPPRESS)  # old name
    parser.add_argument("--resume", action="store_true",
                        help="continue the adaptation in --out (given the same arguments): finished parts are kept, "
                             "a stopped one continues from its checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a setting of the fresh masters: master.<PPO field> or random_master_action_prob "
                             "(repeatable; the baselines keep the run's settings); --set help lists them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def unseen_task_env(source: MLSHConfig, split: str | None, goal_cells: str | None):
    """(the run's env restricted to unseen tasks, a description of them); raises UsageError for a
    split or goal cells the env does not have."""
    cls = env_class(source.env)
    accepts = inspect.signature(cls.__init__).parameters
    kwargs = {"episode_length": source.episode_length}
    if goal_cells is not None:
        if "goal_cells" not in accepts:
            raise common.UsageError(f"--goal-cells: {source.env} has no goal cells (the four_rooms envs have)")
        try:
            kwargs["goal_cells"] = cls.parse_goal_cells(goal_cells)
        except ValueError as error:
            raise common.UsageError(f"--goal-cells: {error}") from None
        description = f"goal cells {goal_cells}"
    elif "split" in accepts:
        kwargs["split"] = split or "heldout"
        description = f"split {kwargs['split']}"
    elif split is not None:
        raise common.UsageError(f"--split: {source.env} has no held-out split (every episode draws new goals)")
    else:
        description = "fresh draws"
    try:
        env = cls(**kwargs)
    except ValueError as error:
        raise common.UsageError(str(error)) from None
    if goal_cells is None and hasattr(env, "task_set"):
        description += f" of task set {env.task_set}"
    return env, description


MASTER_SETTINGS = ("master.", "random_master_action_prob")


def adapt_settings(source: MLSHConfig, slots: int, updates: int, seed: int, overrides=()) -> MLSHConfig:
    """Fresh masters over frozen sub-policies, one lifetime of `updates` updates, `slots` tasks;
    `overrides` ("FIELD=VALUE") may change the masters' settings only (raises UsageError otherwise)."""
    for override in overrides:
        if not override.startswith(MASTER_SETTINGS):
            raise common.UsageError(f"--set {override}: adapt changes only the masters' settings "
                                    "(master.<field>, random_master_action_prob)")
    config = dataclasses.replace(source, num_slots=slots, num_updates=updates, warmup_updates=updates, joint_updates=0,
                                 train_subpolicies=False, seed=seed, checkpoint_every=0)
    return common.apply_overrides(config, list(overrides))


def flat_settings(source: MLSHConfig, num_actions: int, slots: int, updates: int, seed: int) -> MLSHConfig:
    """A flat policy per slot: the master over `num_actions` primitive sub-policies, N = 1, no
    exploration mixture, trained with the run's sub-policy PPO settings."""
    return dataclasses.replace(adapt_settings(source, slots, updates, seed), num_subpolicies=num_actions,
                               macro_duration=1, random_master_action_prob=0.0, master=source.sub)


def _finite_or_none(values) -> list:
    return [None if not math.isfinite(v) else round(float(v), 4) for v in values]


@dataclasses.dataclass
class AdaptPlan:
    """Everything one source run's adaptation needs, checked before anything trains."""

    run: pathlib.Path
    out: pathlib.Path
    mlsh: tuple[MLSHConfig, TransferredSubpolicies]
    flat: MLSHConfig | None            # the flat-policy baselines' configuration (discrete envs)
    shared: TransferredSubpolicies | None
    optimal_return: float | None       # the best mean return on the unseen tasks, where the env knows it


def plan(run: pathlib.Path, out: pathlib.Path, seed: int, args, trainers: dict) -> tuple[AdaptPlan, str]:
    """Checks `run` and builds (or reuses from `trainers`: one compile for every run) what its
    adaptation trains. Returns the plan and a description of the unseen tasks. Raises the
    command's input errors."""
    source = source_config(run)
    if source.algorithm != "mlsh":
        raise common.UsageError(f"--run {run} trained a {source.algorithm!r} policy; adapt needs an MLSH run")
    env, tasks = unseen_task_env(source, args.split, args.goal_cells)
    if not args.resume:
        common.check_out_dir(out)
    mlsh_config = adapt_settings(source, args.slots, args.updates, seed, args.overrides).validate()
    trainer = _shared_trainer(trainers, "MLSH", mlsh_config, env, run)
    check_compatible(run, trainer)
    flat, shared = None, None
    if not args.no_baseline and not env.continuous_actions:
        flat = flat_settings(source, env.action_size, args.slots, args.updates, seed).validate()
        flat_trainer = _shared_trainer(trainers, "flat", flat, env, run)
        shared_run = args.shared_from or run / common.BASELINE_DIR
        if args.shared_from is not None or (shared_run / "config.json").is_file():
            shared = load_shared_policy(shared_run, flat_trainer)
        else:
            print(f"note: no shared-policy run at {shared_run}: the fine-tuned baseline is skipped", flush=True)
    optimum = env.optimal_mean_return() if hasattr(env, "optimal_mean_return") else None
    return AdaptPlan(run, out, (mlsh_config, load_subpolicies(run, trainer)), flat, shared, optimum), tasks


def source_config(run: pathlib.Path) -> MLSHConfig:
    """The configuration of a --run; raises TransferError naming it when it has none."""
    try:
        return load_config(run)
    except RunLoadError as error:
        raise TransferError(f"--run {run}: {error}") from None


def _shared_trainer(trainers: dict, name: str, config: MLSHConfig, env, run) -> Trainer:
    """trainers[name], built on first use; later runs must need the same one (seeds may differ)."""
    if name not in trainers:
        trainers[name] = Trainer(config, env=env)
    differences = sorted(set(config_differences(trainers[name].config, config)) - {"seed"})
    if differences:
        raise common.UsageError(f"--run {run} differs from the first --run in {', '.join(differences)}; "
                                f"adapt runs of one configuration together")
    return trainers[name]


def execute(adapt_plan: AdaptPlan, trainers: dict, progress: bool, resume: bool, resume_args: list) -> dict:
    """Trains the plan's MLSH masters and baselines (with `resume`, each part already in the plan's
    directory continues from its checkpoint, or is kept when finished); returns label -> metrics
    rows. A preempted part prints `python -m experiments.adapt` + `resume_args`."""
    config, transferred = adapt_plan.mlsh
    mlsh = trainers["MLSH"]
    runs = {"MLSH": (config, mlsh, "mlsh", lambda state: with_subpolicies(mlsh, state, transferred))}
    if adapt_plan.flat is not None:
        flat = trainers["flat"]
        runs["single policy"] = (adapt_plan.flat, flat, "single_policy", _flat_start(flat, None))
        if adapt_plan.shared is not None:
            runs["shared policy fine-tuned"] = (adapt_plan.flat, flat, "shared_finetuned",
                                                _flat_start(flat, adapt_plan.shared))
    rows = {}
    for label, (run_config, trainer, name, prepare) in runs.items():
        part = adapt_plan.out / name
        rows[label] = common.train_or_exit(MODULE, run_config, part, resume=resume and common.can_resume(part),
                                           trainer=trainer, resume_args=resume_args, progress=progress,
                                           description=f"{label} ({adapt_plan.run.name})", prepare_state=prepare).rows
    return rows


def combine(per_run: list[dict]) -> dict:
    """label -> {mean, mean_over_updates, std_over_tasks (mean over runs), std_over_runs (None for
    one run), per_run}
    from every run's label -> metrics rows."""
    curves = {}
    for label in per_run[0]:
        means = np.array([[r["mean_return"] for r in rows[label]] for rows in per_run], dtype=float)
        spreads = np.array([[r["return_std_over_slots"] for r in rows[label]] for rows in per_run], dtype=float)
        mean = means.mean(axis=0)
        curves[label] = {"mean": _finite_or_none(mean),
                         # area under the curve per update (= per env step): the mean over updates
                         "mean_over_updates": _finite_or_none([np.nanmean(mean)])[0] if np.isfinite(mean).any()
                         else None,
                         "std_over_tasks": _finite_or_none(spreads.mean(axis=0)),
                         "std_over_runs": _finite_or_none(means.std(axis=0)) if len(per_run) > 1 else None,
                         "per_run": [_finite_or_none(m) for m in means]}
    return curves


def check_adapt_out(out: pathlib.Path, resume: bool) -> None:
    """Raises an input error unless `out` can take a new adaptation (or, with `resume`, holds one)."""
    if resume and not common.can_resume(out):
        raise common.UsageError(f"nothing to resume: {out} holds no adaptation (drop --resume to start one)")
    if not resume and common.can_resume(out):
        raise common.UsageError(f"{out} already holds files; pass --resume (with the same arguments) to continue "
                                "the adaptation there, or choose another --out (nothing is overwritten)")
    if not resume:
        common.check_out_dir(out)


def print_master_fields(args) -> None:
    """`--set help`: the settings of the fresh masters that --set may change, as adapting the first
    --run would use them."""
    config = adapt_settings(source_config(args.run[0]), args.slots, args.updates, args.seed,
                            [o for o in args.overrides if o != "help"])
    print(usage.describe_fields(config, f"the fresh masters' settings for --run {args.run[0]}", only=MASTER_SETTINGS))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    trainers, plans = {}, []
    try:
        if "help" in args.overrides:
            print_master_fields(args)
            raise SystemExit(0)
        if args.updates < 1 or args.slots < 1:
            raise common.UsageError("--updates and --slots must be >= 1")
        names = [run.name for run in args.run]
        if len(set(names)) < len(names):
            raise common.UsageError(f"the --run directories need distinct names (they name the outputs): {names}")
        check_adapt_out(args.out, args.resume)
        for i, run in enumerate(args.run):
            out = args.out if len(args.run) == 1 else args.out / run.name
            plans.append(plan(run, out, args.seed + i, args, trainers))
    except common.INPUT_ERRORS + (TransferError,) as error:
        common.exit_with_usage_error(str(error))

    env_name, tasks = plans[0][0].mlsh[0].env, plans[0][1]
    steps = plans[0][0].mlsh[0].steps_per_slot
    print(f"adapt{', resuming' if args.resume else ''}: {len(plans)} run(s) x {args.slots} unseen {env_name} tasks ({tasks}) x {args.updates} updates, "
          f"{steps} env steps per task per update: {', '.join(['MLSH'] + [k for k in trainers if k != 'MLSH'])}"
          f" -> {args.out}", flush=True)
    resume_args = [a for a in argv if a != "--resume"] + ["--resume"]
    try:
        per_run = [execute(adapt_plan, trainers, not args.no_progress, args.resume, resume_args)
                   for adapt_plan, _ in plans]
    except common.INPUT_ERRORS as error:   # a part that cannot resume: refused before it trains
        common.exit_with_usage_error(str(error))
    report = {
        "runs": [str(run) for run in args.run], "env": env_name, "tasks": tasks, "slots": args.slots,
        "updates": list(range(1, args.updates + 1)),
        "env_steps_per_task": [steps * u for u in range(1, args.updates + 1)],
        "curves": combine(per_run),
        "optimal_mean_return": plans[0][0].optimal_return,
    }
    write_json(args.out / "adapt.json", report)
    spread = "std_over_runs" if len(plans) > 1 else "std_over_tasks"
    plots.plot_mean_and_spread(
        report["env_steps_per_task"],
        {label: ([math.nan if v is None else v for v in c["mean"]], [math.nan if v is None else v for v in c[spread]])
         for label, c in report["curves"].items()},
        args.out / "adapt.png", xlabel="env steps on the task", paper_levels=PAPER_LEVELS.get(env_name),
        references=None if report["optimal_mean_return"] is None else {"optimum": report["optimal_mean_return"]},
        title=f"{env_name}: unseen tasks ({len(plans)} run(s) x {args.slots} tasks; band: {spread.replace('_', ' ')})")
    print(json.dumps({label: {"first": c["mean"][0], "last": c["mean"][-1]} for label, c in report["curves"].items()}))
    return report


def _flat_start(trainer: Trainer, shared):
    """prepare_state of a flat-policy baseline: primitive sub-policies; the shared policy's
    parameters in every slot's master when fine-tuning."""
    def prepare(state):
        stats = shared.obs_stats if shared is not None else state.obs_stats
        state = with_subpolicies(trainer, state, primitive_subpolicies(trainer, stats))
        if shared is not None:
            state = with_master_params(trainer, state, _first(shared.params))
        return state
    return prepare


def _first(stacked):
    return jax.tree.map(lambda x: x[0], stacked)


if __name__ == "__main__":
    main(sys.argv[1:])
