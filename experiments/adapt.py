"""Fast adaptation on unseen tasks (paper Figure 4 middle and right): fresh masters over a finished
run's frozen sub-policies, against a single policy from scratch and the shared policy fine-tuned,
each trained separately on every unseen task (one task per slot, many in parallel).

    python -m experiments.adapt --run runs/four_rooms_fast_s0 --out runs/adapt_four_rooms
    python -m experiments.adapt --run runs/moving_bandits_fast_s0 --out DIR2 --updates 10 --slots 100
    python -m experiments.adapt --run RUN --out DIR2 --goal-cells 3,17,40     # four rooms: these goals
    python -m experiments.adapt --run RUN --out DIR2 --no-baselines           # MLSH only

Unseen tasks: envs with a held-out split (four rooms: goal cells, ant mazes: layouts) draw from
`--split` (default "heldout"); moving bandits and key-door draw fresh goal positions every episode,
so every task is new. The baselines (discrete-action envs) are the same trainer: with K = number of
actions, N = 1 and frozen "sub-policies" that each always take one action, a slot's master is a flat
policy over the env's actions (`mlsh_jax.transfer.primitive_subpolicies`); "single policy" starts
it from scratch, "shared policy fine-tuned" from the shared-policy baseline of --run
(RUN/baseline_shared, or --shared-from). Both are trained with the run's sub-policy PPO settings.

Writes DIR2/mlsh, DIR2/single_policy, DIR2/shared_finetuned (each the run contract), and
DIR2/adapt.json (mean and spread over tasks of the return after each update, per update and per
env step of one task) with DIR2/adapt.png.
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

from envs import env_class
from experiments import common, plots
from mlsh_jax.config import MLSHConfig
from mlsh_jax.files import write_json
from mlsh_jax.loading import RunLoadError, load_config
from mlsh_jax.trainer import Trainer
from mlsh_jax.transfer import (TransferError, check_compatible, load_shared_policy, load_subpolicies,
                               primitive_subpolicies, with_master_params, with_subpolicies)

MODULE = "experiments.adapt"
# The paper's adaptation curves, where it gives them (MLSH_SPEC.md section 4).
PAPER_LEVELS = {
    "moving_bandits": {"MLSH after 8 updates": 26.0, "shared fine-tuned": 20.0, "single policy": 2.0},
    "four_rooms": {"MLSH by 10k steps": 80.0},
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=pathlib.Path, required=True, help="finished MLSH run whose sub-policies to use")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="directory to create (must not exist or be empty)")
    parser.add_argument("--split", default=None, help="which held-out tasks (envs that have splits; default heldout)")
    parser.add_argument("--goal-cells", default=None, help="four rooms: comma-separated goal cell indices instead of a split")
    parser.add_argument("--updates", type=int, default=15, help="master updates on each unseen task (default 15)")
    parser.add_argument("--slots", type=int, default=100, help="unseen tasks trained in parallel (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared-from", type=pathlib.Path, default=None,
                        help="shared-policy run to fine-tune (default RUN/baseline_shared when it exists)")
    parser.add_argument("--no-baselines", action="store_true", help="MLSH only")
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
            raise common.UsageError(f"--goal-cells: {source.env} has no goal cells (four_rooms has)")
        try:
            kwargs["goal_cells"] = tuple(int(c) for c in goal_cells.split(","))
        except ValueError:
            raise common.UsageError(f"--goal-cells must be comma-separated integers, got {goal_cells!r}") from None
        description = f"goal cells {goal_cells}"
    elif "split" in accepts:
        kwargs["split"] = split or "heldout"
        description = f"split {kwargs['split']}"
    elif split is not None:
        raise common.UsageError(f"--split: {source.env} has no held-out split (every episode draws new goals)")
    else:
        description = "fresh draws"
    try:
        return cls(**kwargs), description
    except ValueError as error:
        raise common.UsageError(str(error)) from None


def adapt_settings(source: MLSHConfig, slots: int, updates: int, seed: int) -> MLSHConfig:
    """Fresh masters over frozen sub-policies, one lifetime of `updates` updates, `slots` tasks."""
    return dataclasses.replace(source, num_slots=slots, num_updates=updates, warmup_updates=updates, joint_updates=0,
                               train_subpolicies=False, seed=seed, checkpoint_every=0)


def flat_settings(source: MLSHConfig, num_actions: int, slots: int, updates: int, seed: int) -> MLSHConfig:
    """A flat policy per slot: the master over `num_actions` primitive sub-policies, N = 1, no
    exploration mixture, trained with the run's sub-policy PPO settings."""
    return dataclasses.replace(adapt_settings(source, slots, updates, seed), num_subpolicies=num_actions,
                               macro_duration=1, random_master_action_prob=0.0, master=source.sub)


def curve(rows: list[dict]) -> dict:
    """Mean and spread over tasks of the return after each update (None where no episode ended)."""
    def clean(values):
        return [None if not math.isfinite(v) else round(float(v), 4) for v in values]

    return {"mean": clean([r["mean_return"] for r in rows]),
            "std_over_tasks": clean([r["return_std_over_slots"] for r in rows]),
            "wall_s": round(float(rows[-1]["wall_s"]), 1)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        if args.updates < 1 or args.slots < 1:
            raise common.UsageError("--updates and --slots must be >= 1")
        try:
            source = load_config(args.run)
        except RunLoadError as error:
            raise TransferError(f"--run {args.run}: {error}") from None
        if source.algorithm != "mlsh":
            raise common.UsageError(f"--run {args.run} trained a {source.algorithm!r} policy; adapt needs an MLSH run")
        env, tasks = unseen_task_env(source, args.split, args.goal_cells)
        common.check_out_dir(args.out)
        mlsh_config = adapt_settings(source, args.slots, args.updates, args.seed).validate()
        trainer = Trainer(mlsh_config, env=env)
        check_compatible(args.run, trainer)
        baselines = {}
        if not args.no_baselines and not env.continuous_actions:
            flat = flat_settings(source, env.action_size, args.slots, args.updates, args.seed).validate()
            baselines["single policy"] = ("single_policy", Trainer(flat, env=env), None)
            shared_run = args.shared_from or args.run / "baseline_shared"
            if args.shared_from is not None or (shared_run / "config.json").is_file():
                flat_trainer = Trainer(flat, env=env)
                baselines["shared policy fine-tuned"] = ("shared_finetuned", flat_trainer,
                                                         load_shared_policy(shared_run, flat_trainer))
            else:
                print(f"note: no shared-policy run at {shared_run}: the fine-tuned baseline is skipped", flush=True)
        transferred = load_subpolicies(args.run, trainer)
    except common.INPUT_ERRORS + (TransferError,) as error:
        common.exit_with_usage_error(str(error))

    print(f"adapt: {args.slots} unseen {source.env} tasks ({tasks}) x {args.updates} updates, "
          f"{mlsh_config.steps_per_slot} env steps per task per update: MLSH"
          f"{''.join(', ' + name for name in baselines)} -> {args.out}", flush=True)
    results = {"MLSH": common.train_or_exit(
        MODULE, mlsh_config, args.out / "mlsh", resume=False, trainer=trainer, progress=not args.no_progress,
        description="MLSH masters", prepare_state=lambda state: with_subpolicies(trainer, state, transferred))}
    for label, (name, flat_trainer, shared) in baselines.items():
        results[label] = common.train_or_exit(
            MODULE, flat_trainer.config, args.out / name, resume=False, trainer=flat_trainer,
            progress=not args.no_progress, description=label,
            prepare_state=_flat_start(flat_trainer, shared))

    steps = mlsh_config.steps_per_slot
    report = {
        "run": str(args.run), "env": source.env, "tasks": tasks, "slots": args.slots,
        "updates": list(range(1, args.updates + 1)),
        "env_steps_per_task": [steps * u for u in range(1, args.updates + 1)],
        "curves": {label: curve(result.rows) for label, result in results.items()},
    }
    write_json(args.out / "adapt.json", report)
    plots.plot_mean_and_spread(
        report["env_steps_per_task"],
        {label: ([math.nan if v is None else v for v in c["mean"]],
                 [math.nan if v is None else v for v in c["std_over_tasks"]]) for label, c in report["curves"].items()},
        args.out / "adapt.png", title=f"{source.env}: unseen tasks ({args.slots} in parallel, mean +- std over tasks)",
        xlabel="env steps on the task", paper_levels=PAPER_LEVELS.get(source.env))
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
