"""Moving-bandits ablations and hyperparameter sweep over seeds (paper Figure 4 left and the K/W
plot), one command each:

    python -m experiments.moving_bandits_studies ablations --out runs/bandit_ablations
    python -m experiments.moving_bandits_studies sweep --out runs/bandit_sweep --seeds 3 --updates 50

`ablations`: MLSH, MLSH without warmup (W=0, U=10: the same lifetime, sub-policies trained from a
fresh master's first update), MLSH on the same timescale (N=1), the shared policy.
`sweep`: K in {1, 2, 4} at W=9 and W in {1, 20} at K=2 (U=1 throughout, as in the paper).
Every variant starts from the `fast` preset (100 task slots; `--preset smoke` for a quick check) and runs once per seed into
OUT/<variant>/s<seed> (the seeds of a variant share one compiled update; a run directory each: an interrupted study continues where it stopped
when called again with the same arguments). `--reuse-runs-from OTHER_STUDY` copies in, instead of
training again, every finished run of another study with the same configuration (the sweep's
"K=2, W=9" is the ablations' "MLSH"). Writes OUT/study.json (per variant: each seed's mean
post-warmup return over the last 10% of updates, their mean and std) and OUT/study.png (mean +- std
over seeds per update).

    python -m experiments.moving_bandits_studies separation --out runs/bandit_separation --seeds 10

`separation`: how often the sub-policies separate, per credit rule of the sub-policy update
(`mlsh_jax.credit`; `--methods` picks some by name). Every `--check-every` updates (and at the end)
each sub-policy runs alone on 200 random tasks; a run has separated when every goal slot is the one
some sub-policy ends within distance 50 of in >= 90% of episodes (for K=2: the two go to different
slots). OUT/study.json gives per method the share of seeds that separated, each seed's post-warmup
return (last 10% of updates), and the update from which it stayed separated; OUT/study.png draws them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import shutil
import sys

import jax
import numpy as np

from experiments import common, plots, usage
from experiments.moving_bandits import PRESETS, subpolicy_goal_fractions
from mlsh_jax.config import PAPER_CREDIT, CreditConfig
from mlsh_jax.files import write_json
from mlsh_jax.loading import RunLoadError, load_config
from mlsh_jax.run import SUMMARY_FILE
from mlsh_jax.trainer import Trainer

MODULE = "experiments.moving_bandits_studies"


def _mlsh(**changes):
    return lambda config: dataclasses.replace(config, **changes)


STUDIES = {
    "ablations": {
        "MLSH": _mlsh(),
        "MLSH, no warmup (W=0)": _mlsh(warmup_updates=0, joint_updates=10),
        "MLSH, same timescale (N=1)": _mlsh(macro_duration=1),
        "shared policy": common.shared_baseline,
    },
    "sweep": {
        "K=1": _mlsh(num_subpolicies=1),
        "K=2, W=9": _mlsh(),
        "K=4": _mlsh(num_subpolicies=4),
        "W=1": _mlsh(warmup_updates=1),
        "W=20": _mlsh(warmup_updates=20),
    },
    "separation": {
        "paper rule": _mlsh(credit=PAPER_CREDIT),
        "responsibility": _mlsh(credit=CreditConfig(handover_update=0)),
        "responsibility, handover at 30": _mlsh(credit=CreditConfig(handover_update=30)),
        "responsibility, balanced": _mlsh(credit=CreditConfig(balance_iterations=5, handover_update=0)),
        "responsibility, annealed": _mlsh(credit=CreditConfig(temperature=0.3, final_temperature=3.0,
                                                              anneal_updates=50, handover_update=0)),
        "responsibility, soft (T=3)": _mlsh(credit=CreditConfig(temperature=3.0, final_temperature=3.0,
                                                                handover_update=0)),
        "staged unfreezing": _mlsh(credit=CreditConfig(rule="paper", unfreeze_interval=10)),
        "paper rule, K=3": _mlsh(credit=PAPER_CREDIT, num_subpolicies=3),
        "paper rule, K=4": _mlsh(credit=PAPER_CREDIT, num_subpolicies=4),
    },
}
# What the paper reports (docs/algorithm.md, "The paper's numbers").
PAPER_LEVELS = {
    "ablations": {"MLSH": 40.0, "shared policy": 25.0},
    "sweep": {"K=2": 34.0, "W=1": 23.0},
    "separation": {},
}


def slug(label: str) -> str:
    """A directory name for a variant label."""
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_").replace("__", "_")


def variant_configs(study: str, seeds: int, updates: int, slots: int, preset: str = "fast"):
    """(label, seed, configuration) for every run of `study`, from the moving-bandits `preset`."""
    base = dataclasses.replace(PRESETS[preset](), num_updates=updates, num_slots=slots)
    for label, change in STUDIES[study].items():
        for seed in range(seeds):
            yield label, seed, dataclasses.replace(change(base), seed=seed).validate()


def final_return(rows) -> float:
    """Mean post-warmup return over the last 10% of updates (NaN rows skipped)."""
    tail = [r["mean_return_post_warmup"] for r in rows[-max(1, len(rows) // 10):]]
    finite = [v for v in tail if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _nan_stat(stat, values: np.ndarray) -> np.ndarray:
    """stat over seeds (axis 0) ignoring NaNs, NaN where every seed is NaN (no warning)."""
    out = np.full(values.shape[1:], np.nan)
    seen = np.isfinite(values).any(axis=0)
    out[seen] = stat(values[:, seen], axis=0)
    return out


def _rounded(value: float) -> float | None:
    """2 decimals; None for NaN (no post-warmup episode in the window)."""
    return round(float(value), 2) if math.isfinite(value) else None


class SeparationLog:
    """`after_update` hook of a separation-study run: every `every` updates (and at the last one) runs
    each sub-policy alone on 200 random tasks and appends what it found to RUN/separation.jsonl (kept
    across a resume of the run)."""

    FILE = "separation.jsonl"

    def __init__(self, trainer: Trainer, out: pathlib.Path, every: int):
        self.trainer, self.path, self.every = trainer, out / self.FILE, every
        self.key = jax.random.PRNGKey(trainer.config.seed + 1)

    def __call__(self, update: int, state) -> None:
        if update % self.every and update != self.trainer.config.num_updates:
            return
        behaviour = subpolicy_goal_fractions(self.trainer, common.shared_part_on_host(state), self.key)
        with open(self.path, "a") as file:
            file.write(json.dumps({"update": update, **behaviour}) + "\n")

    @classmethod
    def read(cls, out: pathlib.Path) -> list[dict]:
        """The checks of the run in `out`, one per update (the newest where a resume repeated one)."""
        path = out / cls.FILE
        checks = {}
        for line in path.read_text().splitlines() if path.is_file() else []:
            entry = json.loads(line)
            checks[entry["update"]] = entry
        return [checks[u] for u in sorted(checks)]


def separation_outcome(checks: list[dict]) -> dict:
    """A run's separation: whether its last check covered every goal, from which checked update on it
    stayed so (None if it did not end separated), and each sub-policy's share of episodes at its goal."""
    if not checks:
        return {"separated": None, "separated_from_update": None, "share_at_preferred_goal": None}
    separated = checks[-1]["covers_every_goal"]
    since = None
    for entry in reversed(checks):
        if not entry["covers_every_goal"]:
            break
        since = entry["update"]
    return {"separated": separated, "separated_from_update": since,
            "share_at_preferred_goal": [round(max(f), 3) for f in checks[-1]["fraction_ending_at_goal_slot"]]}


def _summarise_separation(report: dict) -> None:
    """Adds per-method rates and medians to a separation report (in place)."""
    for entry in report.values():
        outcomes = [s["separated"] for s in entry["seeds"] if s["separated"] is not None]
        returns = [s["post_warmup_return"] for s in entry["seeds"] if s["post_warmup_return"] is not None]
        entry["separated_seeds"] = f"{sum(outcomes)}/{len(outcomes)}"
        entry["separation_rate"] = _rounded(np.mean(outcomes)) if outcomes else None
        entry["median_post_warmup_return"] = _rounded(np.median(returns)) if returns else None
        entry["mean_post_warmup_return"] = _rounded(np.mean(returns)) if returns else None


def parse_args(argv):
    presets = usage.config_preset_descriptions("experiments.moving_bandits", PRESETS, sizes=False)  # --slots, --updates
    parser = usage.usage_parser(MODULE, lambda: usage.describe_presets(
        presets, "fast", heading="presets (--preset NAME: the moving-bandits presets the variants start from)"))
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="directory of the study's runs (called again with the same arguments, it continues)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    parser.add_argument("--updates", type=int, default=50,
                        help="updates per run (default 50: the paper reads its bandit levels at ~50)")
    parser.add_argument("--slots", type=int, default=100, help="task slots per run (default 100)")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                        help="moving-bandits preset the variants start from (default fast)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated variant names (as directory names, e.g. paper_rule,responsibility) "
                             "to run instead of all of the study's")
    parser.add_argument("--check-every", type=int, default=5,
                        help="separation: updates between two checks of the sub-policies (default 5)")
    parser.add_argument("--reuse-runs-from", type=pathlib.Path, action="append", default=[], metavar="STUDY_DIR",
                        help="another study's --out: its finished runs with the same configuration as one of this "
                             "study's are copied in instead of trained again (repeatable)")
    parser.add_argument("--runs-only", action="store_true",
                        help="train the runs only, write no study.json / study.png (parallel jobs over "
                             "--methods subsets: call again without it, it then reads the finished runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def chosen_runs(args) -> list[tuple[str, int, object]]:
    """The (label, seed, configuration) runs of the command line; raises UsageError for bad input."""
    if args.seeds < 1 or args.updates < 1 or args.slots < 1 or args.check_every < 1:
        raise common.UsageError("--seeds, --updates, --slots and --check-every must be >= 1")
    labels = {slug(label): label for label in STUDIES[args.study]}
    wanted = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted or [] if m not in labels]
    if unknown or wanted == []:
        raise common.UsageError(f"unknown --methods {', '.join(unknown) or '(none given)'}; "
                                f"allowed for {args.study}: {', '.join(labels)}")
    runs = [run for run in variant_configs(args.study, args.seeds, args.updates, args.slots, args.preset)
            if wanted is None or slug(run[0]) in wanted]
    for label, seed, config in runs:
        out = args.out / slug(label) / f"s{seed}"
        if common.can_resume(out) and load_config(out) != config:
            raise common.UsageError(f"{out} holds a run with other settings; use another --out")
    for source in args.reuse_runs_from:
        if not source.is_dir():
            raise common.UsageError(f"--reuse-runs-from {source}: no such directory (give another study's --out)")
        if source.resolve() == args.out.resolve():
            raise common.UsageError(f"--reuse-runs-from {source} is this study's own --out; give another study's")
    return runs


def finished_run_like(config, seed: int, sources: list[pathlib.Path]) -> pathlib.Path | None:
    """A finished run (it has its summary) of seed `seed` under one of the study directories `sources`
    (as SOURCE/<variant>/s<seed>) made with exactly `config`; None if there is none."""
    for source in sources:
        for candidate in sorted(source.glob(f"*/s{seed}")):
            try:
                if (candidate / SUMMARY_FILE).is_file() and load_config(candidate) == config:
                    return candidate
            except RunLoadError:
                continue
    return None


def reuse_finished_runs(runs, out: pathlib.Path, sources: list[pathlib.Path]) -> None:
    """Copies into OUT/<variant>/s<seed> each not yet started run of `runs` that another study in
    `sources` has already finished with the same configuration; training it then only reads it back."""
    for label, seed, config in runs:
        target = out / slug(label) / f"s{seed}"
        source = None if common.can_resume(target) else finished_run_like(config, seed, sources)
        if source is not None:
            shutil.copytree(source, target, dirs_exist_ok=True)
            print(f"{label} s{seed}: the finished run {source} has this configuration; reused", flush=True)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parse_args(argv)
    try:
        runs = chosen_runs(args)
    except common.INPUT_ERRORS as error:
        common.exit_with_usage_error(str(error))

    labels = list(dict.fromkeys(label for label, _, _ in runs))
    steps = runs[0][2].num_updates * runs[0][2].env_steps_per_update
    print(f"{args.study}: {len(labels)} variants x {args.seeds} seeds, {steps:,} env steps each "
          f"-> {args.out}", flush=True)
    reuse_finished_runs(runs, args.out, args.reuse_runs_from)
    curves, report, trainers = {}, {}, {}
    for label, seed, config in runs:
        out = args.out / slug(label) / f"s{seed}"
        trainer = trainers.setdefault(label, Trainer(config))     # the seeds of a variant share one compile
        hook = SeparationLog(trainer, out, args.check_every) if args.study == "separation" else None
        result = common.train_or_exit(MODULE, config, out, resume=common.can_resume(out), trainer=trainer,
                                      resume_args=argv, after_update=hook,  # called again, it continues
                                      progress=not args.no_progress, description=f"{label} s{seed}")
        curves.setdefault(label, []).append([r["mean_return_post_warmup"] for r in result.rows])
        entry = report.setdefault(label, {"per_seed": [], "seeds": []})
        entry["per_seed"].append(_rounded(final_return(result.rows)))
        if hook is not None:
            entry["seeds"].append({"seed": seed, "post_warmup_return": entry["per_seed"][-1],
                                   "wall_s": round(result.rows[-1]["wall_s"], 1),
                                   **separation_outcome(SeparationLog.read(out))})
    if args.runs_only:
        return report
    for label, entry in report.items():
        finite = [v for v in entry["per_seed"] if v is not None]
        entry["mean"] = _rounded(np.mean(finite)) if finite else None
        entry["std"] = _rounded(np.std(finite)) if finite else None
        if not entry["seeds"]:
            del entry["seeds"]
    if args.study == "separation":
        _summarise_separation(report)
    write_json(args.out / "study.json", {"study": args.study, "seeds": args.seeds, "updates": args.updates,
                                         "slots": args.slots, "final_post_warmup_return": report})
    if args.study == "separation":
        plots.plot_separation(report, args.out / "study.png",
                              title=f"Moving bandits: sub-policy separation ({args.slots} slots, "
                                    f"{args.updates} updates, {args.seeds} seeds)")
    else:
        _plot_curves(args, curves)
    print({label: {key: entry[key] for key in ("mean", "std", "separated_seeds") if key in entry}
           for label, entry in report.items()})
    return report


def _plot_curves(args, curves: dict) -> None:
    smoothed = {label: np.array([plots.trailing_mean(np.asarray(c, float), 3) for c in runs_of_label])
                for label, runs_of_label in curves.items()}
    plots.plot_mean_and_spread(
        np.arange(1, args.updates + 1),
        {label: (_nan_stat(np.nanmean, v), _nan_stat(np.nanstd, v)) for label, v in smoothed.items()},
        args.out / "study.png", title=f"Moving bandits {args.study} ({args.slots} slots, {args.seeds} seeds)",
        xlabel="update", paper_levels=PAPER_LEVELS[args.study])


if __name__ == "__main__":
    main(sys.argv[1:])
