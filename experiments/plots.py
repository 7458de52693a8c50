"""Figures of runs: learning curves (like the paper's Figure 4) and sub-policy behaviour pictures."""

from __future__ import annotations

import math
import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _column(rows: Sequence[Mapping[str, float]], name: str) -> np.ndarray:
    return np.array([r.get(name, math.nan) for r in rows], dtype=float)


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` points, ignoring NaNs."""
    out = np.full_like(values, np.nan)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        if np.isfinite(chunk).any():
            out[i] = np.nanmean(chunk)
    return out


def plot_learning_curves(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    path: pathlib.Path,
    title: str,
    paper_levels: Mapping[str, float] | None = None,
    smooth: int = 3,
) -> None:
    """Mean episode return per update for each run: post-warmup slots (solid), all slots (dashed)
    and, for envs with kinds of task, all slots with every kind weighted equally (dash-dot: the
    mean over kinds of each kind's trailing mean), each a trailing mean over `smooth` updates.

    Args:
      runs: label -> metrics rows (as written to metrics.csv).
      paper_levels: label -> the level the paper reports, drawn as a dotted horizontal line.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        updates = _column(rows, "update")
        ax.plot(updates, trailing_mean(_column(rows, "mean_return_post_warmup"), smooth), color=color,
                label=f"{label} (post-warmup slots)")
        ax.plot(updates, trailing_mean(_column(rows, "mean_return"), smooth), color=color, ls="--", alpha=0.6,
                label=f"{label} (all slots)")
        balanced = task_balanced_curve(rows, smooth)
        if balanced is not None:
            ax.plot(updates, balanced, color=color, ls="-.", label=f"{label} (all slots, task-balanced)")
    _finish_return_plot(fig, ax, path, title, "update", paper_levels)


def task_balanced_curve(rows: Sequence[Mapping[str, float]], smooth: int) -> np.ndarray | None:
    """Mean over kinds of task of each kind's trailing mean return (`mean_return_by_task_<k>`
    columns, taken from the last row: a run resumed by a version that logs them has them only from
    then on) per update [updates], NaN-aware; None when the rows have no such columns."""
    kinds = sorted(c for c in (rows[-1] if rows else {}) if c.startswith("mean_return_by_task_"))
    if not kinds:
        return None
    per_kind = np.stack([trailing_mean(_column(rows, c), smooth) for c in kinds])   # [kinds, updates]
    seen = np.isfinite(per_kind)
    return np.where(seen.any(axis=0), np.nansum(per_kind, axis=0) / np.maximum(seen.sum(axis=0), 1), np.nan)


def plot_mean_and_spread(
    x: Sequence[float],
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: pathlib.Path,
    title: str,
    xlabel: str,
    paper_levels: Mapping[str, float] | None = None,
    references: Mapping[str, float] | None = None,
) -> None:
    """One line per label with a +-1 spread band: curves maps label -> (mean [n], spread [n]).
    `paper_levels` and `references` (e.g. the optimum) are drawn as labelled horizontal lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.asarray(x, dtype=float)
    for i, (label, (mean, spread)) in enumerate(curves.items()):
        mean, spread = np.asarray(mean, dtype=float), np.asarray(spread, dtype=float)
        ax.plot(x, mean, color=f"C{i}", marker="o", ms=3, label=label)
        ax.fill_between(x, mean - spread, mean + spread, color=f"C{i}", alpha=0.2)
    _finish_return_plot(fig, ax, path, title, xlabel, paper_levels, references)


def _finish_return_plot(fig, ax, path, title: str, xlabel: str, paper_levels: Mapping[str, float] | None,
                        references: Mapping[str, float] | None = None) -> None:
    """Paper levels (dotted) and references (dashed) as labelled lines, axes, legend; saves and
    closes the figure."""
    lines = [(f"paper: {label} ~{level:g}", level, ":", "gray") for label, level in (paper_levels or {}).items()]
    lines += [(f"{label} {level:.1f}", level, "--", "black") for label, level in (references or {}).items()]
    for text, level, style, color in lines:
        ax.axhline(level, color=color, ls=style, lw=1)
        ax.text(0.01, level, f" {text}", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8, color=color)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_separation(report: Mapping[str, Mapping], path: pathlib.Path, title: str) -> None:
    """Separation study figure: per method, the share of seeds whose sub-policies separated (left)
    and each seed's post-warmup return, filled when it separated, with the median (right).
    `report` maps method -> {"separation_rate", "seeds": [{"separated", "post_warmup_return"}]}."""
    labels = list(report)
    fig, (rate_ax, return_ax) = plt.subplots(1, 2, figsize=(11, 0.6 * len(labels) + 2), sharey=True)
    y = np.arange(len(labels))
    rate_ax.barh(y, [report[m]["separation_rate"] or 0.0 for m in labels], color="C0")
    rate_ax.set_yticks(y, labels)
    rate_ax.invert_yaxis()
    rate_ax.set_xlim(0, 1)
    rate_ax.set_xlabel("share of seeds whose sub-policies separated")
    rate_ax.grid(alpha=0.3, axis="x")
    for i, label in enumerate(labels):
        seeds = [s for s in report[label]["seeds"] if s["post_warmup_return"] is not None]
        returns = np.array([s["post_warmup_return"] for s in seeds], dtype=float)
        split = np.array([bool(s["separated"]) for s in seeds], dtype=bool)
        jitter = np.linspace(-0.2, 0.2, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds))
        return_ax.scatter(returns[split], i + jitter[split], color="C2", s=18, label="separated" if i == 0 else None)
        return_ax.scatter(returns[~split], i + jitter[~split], facecolors="none", edgecolors="C3", s=18,
                          label="not separated" if i == 0 else None)
        if len(returns):
            return_ax.plot([np.median(returns)] * 2, [i - 0.3, i + 0.3], color="black", lw=2)
    return_ax.set_xlabel("post-warmup return, last 10% of updates (bar: median)")
    return_ax.grid(alpha=0.3, axis="x")
    return_ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bandit_subpolicies(
    positions: np.ndarray, goals: np.ndarray, path: pathlib.Path, world_size: float, goal_radius: float
) -> None:
    """Trajectories of each sub-policy run alone on a few sample goal pairs.

    Args:
      positions: [K, n_examples, T + 1, 2] agent positions of sub-policy k on example i.
      goals: [n_examples, 2, 2] the two goal points of each example.
    """
    num_subs, num_examples = positions.shape[:2]
    cols = min(num_examples, 4)
    rows = math.ceil(num_examples / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= num_examples:
            ax.axis("off")
            continue
        for slot, marker in enumerate(("o", "s")):
            gx, gy = goals[i, slot]
            ax.add_patch(plt.Circle((gx, gy), goal_radius, color="gold", alpha=0.3))
            ax.plot(gx, gy, marker, color="k", ms=7, label=f"goal slot {slot}" if i == 0 else None)
        for k in range(num_subs):
            ax.plot(positions[k, i, :, 0], positions[k, i, :, 1], "-", color=f"C{k}", lw=1.5,
                    label=f"sub-policy {k}" if i == 0 else None)
            ax.plot(positions[k, i, -1, 0], positions[k, i, -1, 1], ">", color=f"C{k}", ms=6)
        ax.plot(world_size / 2, world_size / 2, "k+", ms=8)
        ax.set_xlim(0, world_size)
        ax.set_ylim(0, world_size)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Each sub-policy run alone from the start (o = goal slot 0, s = goal slot 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
