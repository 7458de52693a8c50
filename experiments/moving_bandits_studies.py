"""Moving-bandits ablations and hyperparameter sweep over seeds (paper Figure 4 left and the K/W
plot), one command each:

    python -m experiments.moving_bandits_studies ablations --out runs/bandit_ablations
    python -m experiments.moving_bandits_studies sweep --out runs/bandit_sweep --seeds 3 --updates 60

`ablations`: MLSH, MLSH without warmup (W=0, U=10: the same lifetime, sub-policies trained from a
fresh master's first update), MLSH on the same timescale (N=1), the shared policy.
`sweep`: K in {1, 2, 4} at W=9 and W in {1, 20} at K=2 (U=1 throughout, as in the paper).
Every variant starts from the `fast` preset (100 task slots; `--preset smoke` for a quick check) and runs once per seed into
OUT/<variant>/s<seed> (the seeds of a variant share one compiled update; a run directory each: an interrupted study continues where it stopped
when called again with the same arguments). Writes OUT/study.json (per variant: each seed's mean
post-warmup return over the last 10% of updates, their mean and std) and OUT/study.png (mean +- std
over seeds per update).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import sys

import numpy as np

from experiments import common, plots
from experiments.moving_bandits import PRESETS
from mlsh_jax.files import write_json
from mlsh_jax.loading import load_config
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
}
# What the paper reports (MLSH_SPEC.md section 4).
PAPER_LEVELS = {
    "ablations": {"MLSH": 40.0, "shared policy": 25.0},
    "sweep": {"K=2": 34.0, "W=1": 23.0},
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    parser.add_argument("--updates", type=int, default=60, help="updates per run (default 60)")
    parser.add_argument("--slots", type=int, default=100, help="task slots per run (default 100)")
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS),
                        help="moving-bandits preset the variants start from (default fast)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.seeds < 1 or args.updates < 1 or args.slots < 1:
            raise common.UsageError("--seeds, --updates and --slots must be >= 1")
        runs = list(variant_configs(args.study, args.seeds, args.updates, args.slots, args.preset))
        for label, seed, config in runs:
            out = args.out / slug(label) / f"s{seed}"
            if common.can_resume(out) and load_config(out) != config:
                raise common.UsageError(f"{out} holds a run with other settings; use another --out")
    except common.INPUT_ERRORS as error:
        common.exit_with_usage_error(str(error))

    steps = runs[0][2].num_updates * runs[0][2].env_steps_per_update
    print(f"{args.study}: {len(STUDIES[args.study])} variants x {args.seeds} seeds, {steps:,} env steps each "
          f"-> {args.out}", flush=True)
    curves, report, trainers = {}, {}, {}
    for label, seed, config in runs:
        out = args.out / slug(label) / f"s{seed}"
        trainer = trainers.setdefault(label, Trainer(config))     # the seeds of a variant share one compile
        result = common.train_or_exit(MODULE, config, out, resume=common.can_resume(out), trainer=trainer,
                                      progress=not args.no_progress, description=f"{label} s{seed}")
        curves.setdefault(label, []).append([r["mean_return_post_warmup"] for r in result.rows])
        report.setdefault(label, {"per_seed": []})["per_seed"].append(_rounded(final_return(result.rows)))
    for label, entry in report.items():
        finite = [v for v in entry["per_seed"] if v is not None]
        entry["mean"] = _rounded(np.mean(finite)) if finite else None
        entry["std"] = _rounded(np.std(finite)) if finite else None
    write_json(args.out / "study.json", {"study": args.study, "seeds": args.seeds, "updates": args.updates,
                                         "slots": args.slots, "final_post_warmup_return": report})
    smoothed = {label: np.array([plots.trailing_mean(np.asarray(c, float), 3) for c in runs_of_label])
                for label, runs_of_label in curves.items()}
    plots.plot_mean_and_spread(
        np.arange(1, args.updates + 1),
        {label: (_nan_stat(np.nanmean, v), _nan_stat(np.nanstd, v)) for label, v in smoothed.items()},
        args.out / "study.png", title=f"Moving bandits {args.study} ({args.slots} slots, {args.seeds} seeds)",
        xlabel="update", paper_levels=PAPER_LEVELS[args.study])
    print({label: (entry["mean"], entry["std"]) for label, entry in report.items()})
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
