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

With `--workers 2` (the default on a CPU with >= 2 cores) every training run of steps 1, 2 and 4
(one job per study variant, one per four-rooms seed) and the two adaptations (each as soon as the
runs it adapts are done) run first as parallel processes (`experiments.parallel`, logs in OUT/logs,
the longest chain of work first); the steps above then find them finished and only read them back
and draw the figures. `--workers 1` runs everything in
this process, in the order above. Both give the same runs.

A call on an existing OUT continues: finished runs and studies are reused, interrupted runs and
adaptations resume, finished adaptations are kept (a stopped step prints this command to resume).
Writes OUT/figures.json: each figure's PNG, the numbers the paper reports next to its levels, and
the wall time of every step and in total.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

from experiments import adapt, common, four_rooms, moving_bandits_studies, usage
from experiments.moving_bandits_studies import slug
from experiments.parallel import Job, JobsFailed, default_workers, run_jobs
from mlsh_jax.config import MLSHConfig
from mlsh_jax.files import write_json
from mlsh_jax.run import SUMMARY_FILE


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
    "fast": FigureSettings("fast", 50, 100, 10, 50, "original", 50),
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
    parser.add_argument("--workers", type=int, default=None,
                        help="runs trained side by side as separate processes (default: 2 on a CPU with >= 2 "
                             "cores, 1 on an accelerator; 1: everything in this process)")
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


@dataclasses.dataclass(frozen=True)
class Steps:
    """The command lines of every step of one `discrete_figures` call (each step's own CLI)."""

    settings: FigureSettings
    out: pathlib.Path
    seeds: int
    quiet: tuple[str, ...]

    def study(self, study: str, *extra: str) -> list[str]:
        """`moving_bandits_studies STUDY ...`; the sweep copies the ablations' runs of its configurations."""
        s = self.settings
        reuse = ["--reuse-runs-from", str(self.out / "bandit_ablations")] if study == "sweep" else []
        return [study, "--out", str(self.out / f"bandit_{study}"), "--seeds", str(self.seeds), "--updates",
                str(s.bandit_updates), "--slots", str(s.bandit_slots), "--preset", s.bandit_preset, *reuse,
                *extra, *self.quiet]

    def study_runs(self, study: str) -> dict[str, list[tuple[int, MLSHConfig]]]:
        """Each variant's (seed, configuration) runs."""
        s, runs = self.settings, {}
        for label, seed, config in moving_bandits_studies.variant_configs(
                study, self.seeds, s.bandit_updates, s.bandit_slots, s.bandit_preset):
            runs.setdefault(label, []).append((seed, config))
        return runs

    def job_name(self, directory: pathlib.Path) -> str:
        """The parallel job that trains into `directory` is named by its path under OUT."""
        return directory.relative_to(self.out).as_posix()

    def four_rooms_run(self, seed: int) -> pathlib.Path:
        return self.out / "four_rooms" / f"s{seed}"

    def four_rooms(self, seed: int) -> list[str]:
        s, run = self.settings, self.four_rooms_run(seed)
        return (["--out", str(run), "--seed", str(seed), "--preset", s.four_rooms_preset, "--no-baseline",
                 "--set", f"num_updates={s.four_rooms_updates}", "--set", f"env={s.four_rooms_env}", *self.quiet]
                + resume_if_started(run))

    def four_rooms_config(self) -> MLSHConfig:
        s = self.settings
        return dataclasses.replace(four_rooms.PRESETS[s.four_rooms_preset](), num_updates=s.four_rooms_updates,
                                   env=s.four_rooms_env)

    def bandit_runs(self) -> list[pathlib.Path]:
        return [self.out / "bandit_ablations" / slug("MLSH") / f"s{seed}" for seed in range(self.seeds)]

    def adapt_bandits(self) -> list[str]:
        out = self.out / "adapt_bandits"
        return ([arg for run in self.bandit_runs() for arg in ("--run", str(run))]
                + ["--shared-from", str(self.out / "bandit_ablations" / slug("shared policy") / "s0"),
                   "--out", str(out), *self._adapt_sizes(), *resume_if_started(out)])

    def adapt_four_rooms(self) -> list[str]:
        out = self.out / "adapt_four_rooms"
        return ([arg for seed in range(self.seeds) for arg in ("--run", str(self.four_rooms_run(seed)))]
                + ["--split", self.settings.four_rooms_split, "--out", str(out), *self._adapt_sizes(),
                   *resume_if_started(out)])

    def _adapt_sizes(self) -> list[str]:
        return ["--updates", str(self.settings.adapt_updates), "--slots", str(self.settings.adapt_slots), *self.quiet]


def training_cost(config: MLSHConfig) -> float:
    """Rough work of a run (samples its PPO epochs go through), to start the costliest jobs first."""
    master_samples = config.num_slots / config.macro_duration if config.hierarchical else 0.0
    return config.num_updates * config.steps_per_slot * (config.joint_slot_capacity + master_samples)


def training_jobs(steps: Steps) -> list[Job]:
    """One job per study variant (its seeds share a compile) and per four-rooms seed, for the runs
    not finished yet; the sweep's variants that the ablations train already are left out."""
    jobs, ablation_runs = [], steps.study_runs("ablations")
    trained = {(seed, config) for runs in ablation_runs.values() for seed, config in runs}
    for study, variants in (("ablations", ablation_runs), ("sweep", steps.study_runs("sweep"))):
        for label, runs in variants.items():
            if study == "sweep" and all(run in trained for run in runs):
                continue
            directory = steps.out / f"bandit_{study}" / slug(label)
            if all((directory / f"s{seed}" / SUMMARY_FILE).is_file() for seed, _ in runs):
                continue
            jobs.append(Job(steps.job_name(directory), moving_bandits_studies.MODULE,
                            tuple(steps.study(study, "--methods", slug(label), "--runs-only")),
                            cost=sum(training_cost(config) for _, config in runs)))
    for seed in range(steps.seeds):
        run = steps.four_rooms_run(seed)
        if not (run / SUMMARY_FILE).is_file():
            jobs.append(Job(steps.job_name(run), four_rooms.MODULE, tuple(steps.four_rooms(seed)),
                            cost=training_cost(steps.four_rooms_config())))
    return jobs


def adaptation_cost(settings: FigureSettings, runs: int, flat_baselines: int, config: MLSHConfig) -> float:
    """Rough work of adapting over `runs` runs of `config` in `training_cost`'s unit: the flat
    baselines train on every sample, the fresh masters on one in N."""
    samples = runs * settings.adapt_updates * settings.adapt_slots * config.steps_per_slot
    return samples * (flat_baselines + 1.0 / config.macro_duration)


def adaptation_jobs(steps: Steps) -> list[Job]:
    """The two adaptations not finished yet, each after the training jobs of the runs it adapts
    (`run_jobs` counts those not in its call, finished earlier, as done)."""
    s, jobs = steps.settings, []
    bandit_runs = [steps.job_name(steps.out / "bandit_ablations" / slug(label)) for label in ("MLSH", "shared policy")]
    four_rooms_runs = [steps.job_name(steps.four_rooms_run(seed)) for seed in range(steps.seeds)]
    bandit_config = steps.study_runs("ablations")["MLSH"][0][1]
    for name, argv, needs, cost in (
            ("adapt_bandits", steps.adapt_bandits, bandit_runs, adaptation_cost(s, steps.seeds, 2, bandit_config)),
            ("adapt_four_rooms", steps.adapt_four_rooms, four_rooms_runs,
             adaptation_cost(s, steps.seeds, 1, steps.four_rooms_config()))):
        if not check_adapt_out(steps.out / name):
            jobs.append(Job(name, adapt.MODULE, tuple(argv()), cost=cost, after=tuple(needs)))
    return jobs


def run_in_workers(steps: Steps, workers: int, wall: dict) -> None:
    """Trains every run and adapts as parallel jobs (an adaptation starts once the runs it adapts
    are done; logs in OUT/logs), the processes sharing a compilation cache in OUT/.jax_cache unless
    JAX_COMPILATION_CACHE_DIR is set."""
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(steps.out / ".jax_cache"))
    todo = training_jobs(steps) + adaptation_jobs(steps)
    if todo:
        start = time.perf_counter()
        try:
            wall["jobs"] = run_jobs(todo, workers, steps.out / "logs", env)
        except JobsFailed as error:
            sys.exit(f"error: {error}; fix the cause and call the same command again: finished runs "
                     "are kept, stopped ones continue")
        wall["parallel_jobs"] = round(time.perf_counter() - start, 1)


def make_figures(args) -> dict:
    """Runs (or continues) every step of the command line `args`; writes and returns figures.json."""
    settings = PRESETS[args.preset]
    out = args.out
    if args.seeds < 1:
        common.exit_with_usage_error("--seeds must be >= 1")
    if args.workers is not None and args.workers < 1:
        common.exit_with_usage_error("--workers must be >= 1")
    workers = default_workers() if args.workers is None else args.workers
    steps = Steps(settings, out, args.seeds, ("--no-progress",) if args.no_progress else ())
    wall = {}
    report = {"preset": args.preset, "seeds": args.seeds, "workers": workers, "settings": dataclasses.asdict(settings)}
    start = time.perf_counter()
    if workers > 1:
        run_in_workers(steps, workers, wall)
    reuse = {name: check_adapt_out(out / name) for name in ("adapt_bandits", "adapt_four_rooms")}

    for study in ("ablations", "sweep"):
        result = timed(wall, f"bandit_{study}", lambda: moving_bandits_studies.main(steps.study(study)))
        report[f"bandit_{study}"] = {"figure": str(out / f"bandit_{study}" / "study.png"), "final_post_warmup_return": result,
                                     "paper": moving_bandits_studies.PAPER_LEVELS[study]}

    if not reuse["adapt_bandits"]:
        timed(wall, "adapt_bandits", lambda: adapt.main(steps.adapt_bandits()))
    report["adapt_bandits"] = bandit_adaptation(out / "adapt_bandits")

    for seed in range(args.seeds):
        if not (steps.four_rooms_run(seed) / SUMMARY_FILE).is_file():
            timed(wall, f"four_rooms_s{seed}", lambda: four_rooms.main(steps.four_rooms(seed)))
    if not reuse["adapt_four_rooms"]:
        timed(wall, "adapt_four_rooms", lambda: adapt.main(steps.adapt_four_rooms()))
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
