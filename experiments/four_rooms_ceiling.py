"""The ceiling of a four-rooms run's hierarchy: for every goal cell of the run's task set, the best
expected return that a perfect master could get from the run's frozen sub-policies (exact dynamic
programming over the master's choices; `envs.four_rooms.hierarchy_returns`), next to the goal's
optimum, and the cell where each sub-policy, alone from the start, ends up. A fresh master in
`experiments.adapt` can at best reach this ceiling: when it is low, the sub-policies are the cause,
not the master's learning.

    python -m experiments.four_rooms_ceiling --run RUN                       # the run's own N
    python -m experiments.four_rooms_ceiling --run RUN --macro-duration 5    # a master deciding every 5 steps
    python -m experiments.four_rooms_ceiling --run RUN --out ceiling.json    # also as JSON

A four-rooms run's summary.json holds the same figures for its own N (`hierarchy_ceiling`,
`subpolicy_holds`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from envs.four_rooms import ENV_OF_TASK_SET
from experiments import four_rooms
from experiments.common import exit_with_usage_error
from mlsh_jax.files import write_json

FOUR_ROOMS_ENVS = tuple(ENV_OF_TASK_SET.values())


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.four_rooms_ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=pathlib.Path, required=True, help="a four-rooms run directory")
    parser.add_argument("--macro-duration", type=int,
                        help="steps per master decision (default: the run's own macro_duration)")
    parser.add_argument("--out", type=pathlib.Path, help="also write the report to this JSON file (must not exist)")
    return parser.parse_args(argv)


def check_inputs(args, config) -> int:
    """The macro duration to use; exits 2 on a run or flag it cannot analyse."""
    if config.env not in FOUR_ROOMS_ENVS:
        exit_with_usage_error(f"{args.run} is a {config.env} run; the ceiling is computed for "
                              f"{', '.join(FOUR_ROOMS_ENVS)} runs")
    duration = config.macro_duration if args.macro_duration is None else args.macro_duration
    if not 1 <= duration <= config.episode_length:
        exit_with_usage_error(f"--macro-duration must be in 1..{config.episode_length} (the episode length), "
                              f"got {duration}")
    if args.out is not None and args.out.exists():
        exit_with_usage_error(f"{args.out} already exists; choose another --out")
    if args.out is not None and not args.out.parent.is_dir():
        exit_with_usage_error(f"--out: the folder {args.out.parent} does not exist; create it or choose another")
    return duration


def format_report(report: dict) -> str:
    """A table: one row per goal (split, ceiling, optimum), then the means per split."""
    lines = [f"master decides every {report['hierarchy_ceiling']['macro_duration']} steps",
             f"{'goal':>6} {'split':>8} {'ceiling':>8} {'optimum':>8}"]
    for cell, row in report["hierarchy_ceiling"]["per_goal"].items():
        lines.append(f"{cell:>6} {row['split']:>8} {row['ceiling']:8.1f} {row['optimum']:8.1f}")
    for split in ("train", "heldout"):
        means = report["hierarchy_ceiling"].get(split)
        if means is None:
            continue
        lines.append(f"{split:>6} mean ceiling {means['mean_ceiling']:.1f} of optimum {means['mean_optimum']:.1f}")
    for name, hold in report["subpolicy_holds"].items():
        lines.append(f"{name} ends in {hold['cell']} with probability {hold['probability']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from mlsh_jax.loading import RunLoadError, load_config, load_run
    try:
        config = load_config(args.run)
        duration = check_inputs(args, config)
        run = load_run(args.run)
    except RunLoadError as error:
        exit_with_usage_error(str(error))
    probs = four_rooms.subpolicy_action_probs(run.trainer, run.state)
    report = {"run": str(args.run), "update": run.update,
              "hierarchy_ceiling": four_rooms.hierarchy_ceiling(probs, run.trainer.env.task_set, duration,
                                                                config.episode_length),
              "subpolicy_holds": four_rooms.subpolicy_holds(probs, config.episode_length)}
    print(format_report(report))
    if args.out is not None:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
