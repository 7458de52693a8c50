"""All of the paper's discrete figures in one command: Figure 4 left (moving-bandits ablations),
Figure 4 middle (moving bandits, adaptation on sampled tasks), Figure 4 right (four rooms, fresh
masters on the goals of the original code's task set) and the moving-bandits K/W plot, over several
seeds, timed:

    python -m experiments.discrete_figures --out runs/discrete_figures             # 3 seeds, 2-core CPU
    python -m experiments.discrete_figures --out DIR --preset smoke --seeds 2        # seconds, a check

It runs the commands one would run by hand (each step's outputs are that command's outputs), in one
process so that runs of one configuration share a compile:

1. `moving_bandits_studies ablations --out OUT/bandit_ablations` -> study.png (Figure 4 left)
2. `moving_bandits_studies sweep --out OUT/bandit_sweep --reuse-runs-from OUT/bandit_ablations` -> study.png
   (K/W plot; its "K=2, W=9" runs are the ablations' "MLSH" runs, copied, not trained twice)
3. `adapt --run OUT/bandit_ablations/mlsh/s<i> ... --shared-from OUT/bandit_ablations/shared_policy/s0
   --out OUT/adapt_bandits` -> adapt.png (Figure 4 middle)
4. `four_rooms --preset original --no-baseline --out OUT/four_rooms/s<i>` for each seed, then
   `adapt --run ... --split train --out OUT/adapt_four_rooms` -> adapt.png (Figure 4 right: MLSH vs
   PPO from scratch). The original code's four goals, as its figure did (its "unseen" goal was one
   of its training goals); on held-out cells the paper's N=25 cannot transfer (the hierarchy's
   ceiling, docs/results_moving_bandits.md), `python -m experiments.four_rooms` measures that.

A call on an existing OUT continues: finished runs and studies are reused, interrupted runs and
adaptations resume, finished adaptations are kept (a stopped step prints this command to resume).
Writes OUT/figures.json: each figure's PNG, the numbers the paper reports next to its levels, and
the wall time of every step and in total.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time

import numpy as np

from experiments import adapt, common, four_rooms, moving_bandits_studies, usage
from experiments.moving_bandits_studies import slug
from mlsh_jax.files import write_json


@dataclasses.dataclass(frozen=True)
class FigureSettings:
    """How big each step is."""

    bandit_preset: str        # moving-bandits preset the studies start from
    bandit_updates: int       # updates per study run
    bandit_slots: int
    adapt_updates: int        # master updates on each unseen task
    adapt_slots: int          # unseen tasks per run
    four_rooms_preset: str
    four_rooms_updates: int
    four_rooms_env: str = "four_rooms_original"   # the task set of Figure 4 right
    four_rooms_split: str = "train"               # the goals fresh masters adapt to


PRESETS = {
    # Studies as in `moving_bandits_studies`; four rooms: the paper's settings on 50 slots, one lifetime.
    "fast": FigureSettings("fast", 60, 100, 10, 100, "original", 50),
    "smoke": FigureSettings("smoke", 3, 4, 2, 4, "smoke", 3),
}
# The paper's figures read at the points its text gives (docs/algorithm.md, "The paper's numbers").
BANDIT_ADAPT_UPDATE = 8
PRESET_NOTES = {"fast": "the figures: studies as `moving_bandits_studies`, four rooms from its `original` preset",
                "smoke": "seconds per step plus compile: a check"}
MODULE = "experiments.discrete_figures"
FOUR_ROOMS_STEPS = 10_000          # "~80 by 10k steps"
FOUR_ROOMS_AUC_STEPS = 20_000      # area under the curve over the first 20k steps


def preset_description(name: str) -> str:
    """What preset `name` means and its sizes, for --help."""
    settings = PRESETS[name]
    return (f"{PRESET_NOTES[name]}\nbandit studies: preset {settings.bandit_preset}, {settings.bandit_slots} slots x "
            f"{settings.bandit_updates} updates; adaptation: {settings.adapt_slots} tasks x {settings.adapt_updates} "
            f"updates; four rooms: preset {settings.four_rooms_preset} on {settings.four_rooms_env}, "
            f"{settings.four_rooms_updates} updates, adaptation on its {settings.four_rooms_split} goals")


def parse_args(argv):
    parser = usage.usage_parser(MODULE, lambda: usage.describe_presets(
        {name: preset_description(name) for name in PRESETS}, "fast"))
    parser.add_argument("--out", type=pathlib.Path, required=True, help="directory for every run and figure")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant and per run (default 3)")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS), help="sizes (default fast)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def check_adapt_out(out: pathlib.Path) -> bool:
    """True if `out` holds a finished adaptation (reused); an unfinished one is resumed."""
    return (out / "adapt.json").is_file()


def resume_if_started(out: pathlib.Path) -> list[str]:
    """`--resume` for a step whose directory `out` already holds its unfinished work."""
    return ["--resume"] if common.can_resume(out) else []


def value_at(curve: dict, steps: list[int], at_steps: int) -> float | None:
    """Mean return after the last update with at most `at_steps` env steps on the task."""
    done = [i for i, s in enumerate(steps) if s <= at_steps]
    return curve["mean"][done[-1]] if done else None


def mean_up_to(curve: dict, steps: list[int], at_steps: int) -> float | None:
    """Area under the mean curve per update over the first `at_steps` env steps (mean of those updates)."""
    values = [v for v, s in zip(curve["mean"], steps) if s <= at_steps and v is not None]
    return round(float(np.mean(values)), 2) if values else None


def timed(wall: dict, name: str, step):
    start = time.perf_counter()
    result = step()
    wall[name] = round(time.perf_counter() - start, 1)
    print(f"[{name}: {wall[name]:.0f} s]", flush=True)
    return result


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    with common.job(MODULE, argv):     # a stopped step: calling this command again continues
        return make_figures(parse_args(argv))


def make_figures(args) -> dict:
    """Runs (or continues) every step of the command line `args`; writes and returns figures.json."""
    settings = PRESETS[args.preset]
    out = args.out
    quiet = ["--no-progress"] if args.no_progress else []
    if args.seeds < 1:
        common.exit_with_usage_error("--seeds must be >= 1")
    reuse = {name: check_adapt_out(out / name) for name in ("adapt_bandits", "adapt_four_rooms")}
    seeds = [str(args.seeds)]
    study_sizes = ["--seeds", *seeds, "--updates", str(settings.bandit_updates), "--slots", str(settings.bandit_slots),
                   "--preset", settings.bandit_preset]
    adapt_sizes = ["--updates", str(settings.adapt_updates), "--slots", str(settings.adapt_slots)]
    wall, report = {}, {"preset": args.preset, "seeds": args.seeds, "settings": dataclasses.asdict(settings)}
    start = time.perf_counter()

    for study in ("ablations", "sweep"):
        reuse_ablations = ["--reuse-runs-from", str(out / "bandit_ablations")] if study == "sweep" else []
        result = timed(wall, f"bandit_{study}", lambda: moving_bandits_studies.main(
            [study, "--out", str(out / f"bandit_{study}"), *study_sizes, *reuse_ablations, *quiet]))
        report[f"bandit_{study}"] = {"figure": str(out / f"bandit_{study}" / "study.png"), "final_post_warmup_return": result,
                                     "paper": moving_bandits_studies.PAPER_LEVELS[study]}

    ablations = out / "bandit_ablations"
    bandit_runs = [ablations / slug("MLSH") / f"s{seed}" for seed in range(args.seeds)]
    if not reuse["adapt_bandits"]:
        timed(wall, "adapt_bandits", lambda: adapt.main(
            [arg for run in bandit_runs for arg in ("--run", str(run))]
            + ["--shared-from", str(ablations / slug("shared policy") / "s0"), "--out", str(out / "adapt_bandits"),
               *adapt_sizes, *quiet, *resume_if_started(out / "adapt_bandits")]))
    report["adapt_bandits"] = bandit_adaptation(out / "adapt_bandits")

    four_rooms_runs = [out / "four_rooms" / f"s{seed}" for seed in range(args.seeds)]
    for seed, run in enumerate(four_rooms_runs):
        if not (run / "summary.json").is_file():
            timed(wall, f"four_rooms_s{seed}", lambda: four_rooms.main(
                ["--out", str(run), "--seed", str(seed), "--preset", settings.four_rooms_preset, "--no-baseline",
                 "--set", f"num_updates={settings.four_rooms_updates}", "--set", f"env={settings.four_rooms_env}",
                 *quiet]
                + resume_if_started(run)))
    if not reuse["adapt_four_rooms"]:
        timed(wall, "adapt_four_rooms", lambda: adapt.main(
            [arg for run in four_rooms_runs for arg in ("--run", str(run))]
            + ["--split", settings.four_rooms_split, "--out", str(out / "adapt_four_rooms"), *adapt_sizes, *quiet,
               *resume_if_started(out / "adapt_four_rooms")]))
    report["adapt_four_rooms"] = four_rooms_adaptation(out / "adapt_four_rooms")

    wall["total"] = round(time.perf_counter() - start, 1)
    report["wall_s"] = wall
    write_json(out / "figures.json", report)
    print(json.dumps(report["wall_s"]))
    return report


def bandit_adaptation(adapt_dir: pathlib.Path) -> dict:
    """Figure 4 middle: each method's mean return after update 8 (and after the last), paper levels."""
    result = json.loads((adapt_dir / "adapt.json").read_text())
    at = min(BANDIT_ADAPT_UPDATE, len(result["updates"])) - 1
    return {"figure": str(adapt_dir / "adapt.png"), "after_update": at + 1,
            "mean_return": {label: c["mean"][at] for label, c in result["curves"].items()},
            "last": {label: c["mean"][-1] for label, c in result["curves"].items()},
            "paper": adapt.PAPER_LEVELS["moving_bandits"]}


def four_rooms_adaptation(adapt_dir: pathlib.Path) -> dict:
    """Figure 4 right: each method's mean return by 10k env steps and its area under the curve over
    the first 20k, with the optimum of the adaptation's goals and the paper's level (on its goal
    (11, 11), optimum 94.5)."""
    result = json.loads((adapt_dir / "adapt.json").read_text())
    steps, curves = result["env_steps_per_task"], result["curves"]
    optimum = result.get("optimal_mean_return")
    by_10k = {label: value_at(c, steps, FOUR_ROOMS_STEPS) for label, c in curves.items()}
    return {"figure": str(adapt_dir / "adapt.png"),
            f"mean_return_by_{FOUR_ROOMS_STEPS}_steps": by_10k,
            f"mean_over_first_{FOUR_ROOMS_AUC_STEPS}_steps": {
                label: mean_up_to(c, steps, FOUR_ROOMS_AUC_STEPS) for label, c in curves.items()},
            "optimal_mean_return": optimum,
            "fraction_of_optimum_by_10k_steps": {
                label: None if v is None or not optimum or not math.isfinite(v) else round(v / optimum, 3)
                for label, v in by_10k.items()},
            "paper": adapt.PAPER_LEVELS["four_rooms_paper"]}


if __name__ == "__main__":
    main(sys.argv[1:])
