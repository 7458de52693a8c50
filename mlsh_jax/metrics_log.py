"""Where a run's per-update figures go: metrics.csv, TensorBoard event files and a progress bar.

The training loop hands over host copies of each update's metrics (fetched one update late, so the
jitted loop never waits for logging). On resume, metrics.csv is cut back to the rows of the
checkpoint being resumed and TensorBoard's later events are purged, so both read as one run.
"""

from __future__ import annotations

import csv
import math
import pathlib
import statistics
import time
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from mlsh_jax.config import MLSHConfig

METRICS_FILE = "metrics.csv"
ESTIMATE_AFTER = 3   # updates timed (after the first, which compiles) before the run estimates its time
TENSORBOARD_DIR = "tensorboard"
TIMING_COLUMNS = ("wall_s", "interval_s", "env_steps_per_s")


def flatten_metrics(metrics: dict[str, Any], prefix: str = "", sep: str = "_") -> dict[str, float]:
    """Nested metrics of one update -> flat columns; vectors become `name_i`, per-slot tables
    (2-D and larger) are left out (they stay available to callers)."""
    flat = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, prefix=f"{key}{sep}", sep=sep))
            continue
        value = np.asarray(value)
        if value.ndim == 0:
            flat[key] = float(value)
        elif value.ndim == 1:
            flat.update({f"{key}_{i}": float(v) for i, v in enumerate(value)})
    return flat


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_rows(path: pathlib.Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as numbers, as they were written (an absent file has none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as file:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(file)]


class MetricsLog:
    """Writes one row per update to metrics.csv and TensorBoard, and drives the progress bar.

    Args:
      out: the run directory.
      config: the run's configuration (for env steps per update and the bar's total).
      started: `time.time()` when this training call began (`wall_s` counts from it: building the
        trainer and compiling included).
      previous_rows: rows of the updates already done (resume); metrics.csv is rewritten to them.
      progress: show a progress bar with ETA.
      description: the bar's label.
      tensorboard: also write TensorBoard event files into RUN/tensorboard/.
      on_metrics: called with each new row.
      write_files: write metrics.csv and TensorBoard files (only process 0 of a cluster does; the
        others keep the rows in memory).
    """

    def __init__(self, out: pathlib.Path, config: MLSHConfig, started: float, *,
                 previous_rows: list[dict[str, float]] = (), progress: bool = True,
                 description: str | None = None, tensorboard: bool = True,
                 on_metrics: Callable[[dict[str, float]], None] | None = None, write_files: bool = True):
        self.config = config
        self.started = started
        self.rows = list(previous_rows)
        self.on_metrics = on_metrics
        self._last_time = time.time()
        self._new_rows, self._estimated = 0, False
        self._path = out / METRICS_FILE
        self._fieldnames = list(self.rows[0]) if self.rows else None
        self._file = self._writer = self._tensorboard = None
        if write_files and self.rows:
            self._rewrite()
        if write_files:
            self._open(append=bool(self.rows))
        if tensorboard and write_files:
            from tensorboardX import SummaryWriter  # imported here: only runs that log need it

            self._tensorboard = SummaryWriter(str(out / TENSORBOARD_DIR), flush_secs=30,
                                              purge_step=len(self.rows) + 1 if self.rows else None)
        self._bar = tqdm(total=config.num_updates, initial=len(self.rows), desc=description or config.algorithm,
                         unit="update", disable=not progress, dynamic_ncols=True)

    def _rewrite(self) -> None:
        """metrics.csv anew from `self.rows` (a column a row lacks reads "nan")."""
        tmp = self._path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self._fieldnames, restval="nan")
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self._path)

    def _open(self, append: bool) -> None:
        self._file = open(self._path, "a" if append else "w", newline="")
        self._writer = (csv.DictWriter(self._file, fieldnames=self._fieldnames, restval="nan")
                        if append else None)

    def record(self, update: int, metrics: dict[str, Any]) -> dict[str, float]:
        """Logs the host metrics of update number `update` (1-based); returns its CSV row."""
        now = time.time()
        steps_per_update = self.config.env_steps_per_update
        row = {"update": update, "env_steps": update * steps_per_update,
               "wall_s": now - self.started, "interval_s": now - self._last_time}
        row["env_steps_per_s"] = steps_per_update / max(row["interval_s"], 1e-9)
        row.update(flatten_metrics(metrics))
        self._last_time = now
        if self._file is not None:
            self._write_csv(row)
        self.rows.append(row)
        self._new_rows += 1
        self._write_tensorboard(update, row, metrics)
        self._bar.update(1)
        self._bar.set_postfix(steps_per_s=f"{row['env_steps_per_s']:.0f}", ret=self._latest("mean_return"),
                              ret_post=self._latest("mean_return_post_warmup"))
        self._announce_estimate()
        if self.on_metrics is not None:
            self.on_metrics(row)
        return row

    def _announce_estimate(self) -> None:
        """Once, after this process's first `ESTIMATE_AFTER` + 1 updates: the run time left at the
        median pace of those updates, the first (the compile) left out. A line, not only the bar's
        ETA: logs of runs without a terminal keep it."""
        timed = self.rows[len(self.rows) - self._new_rows:][1:]
        if self._estimated or len(timed) < ESTIMATE_AFTER:
            return
        self._estimated = True
        left = self.config.num_updates - int(self.rows[-1]["update"])
        if left <= 0:
            return
        seconds = statistics.median(row["interval_s"] for row in timed)
        rate = self.config.env_steps_per_update / max(seconds, 1e-9)
        tqdm.write(f"measured over updates {int(timed[0]['update'])}-{int(timed[-1]['update'])}: "
                   f"{rate:,.0f} env steps/s, {seconds:.2f} s per update; about "
                   f"{math.ceil(left * seconds / 60)} min for the {left} updates left")

    def _latest(self, column: str) -> str:
        """The progress bar's figure for `column`: its newest finite value (an update in which no
        episode ended logs NaN, e.g. 1000-step episodes over 200 steps per env copy), "-" before any."""
        for row in reversed(self.rows):
            value = row.get(column, math.nan)
            if math.isfinite(value):
                return f"{value:.1f}"
        return "-"

    def _write_csv(self, row: dict[str, float]) -> None:
        if self._writer is None:
            self._fieldnames = list(row)
            self._writer = csv.DictWriter(self._file, fieldnames=self._fieldnames, restval="nan")
            self._writer.writeheader()
        new_columns = [c for c in row if c not in self._fieldnames]
        if new_columns:  # a run resumed by a newer version that logs more: widen the file
            self._file.close()
            self._fieldnames += new_columns
            self._rewrite()
            self._open(append=True)
        self._writer.writerow(row)
        self._file.flush()

    def _write_tensorboard(self, update: int, row: dict[str, float], metrics: dict[str, Any]) -> None:
        if self._tensorboard is None:
            return
        scalars = {"run/env_steps_per_s": row["env_steps_per_s"], "run/env_steps": row["env_steps"]}
        scalars.update(flatten_metrics(metrics, sep="/"))
        for tag, value in scalars.items():
            if math.isfinite(value):
                self._tensorboard.add_scalar(tag if "/" in tag else f"episodes/{tag}", value, update)
        usage = metrics.get("sub_usage_per_slot")
        if usage is not None:
            for k in range(usage.shape[-1]):
                self._tensorboard.add_histogram(f"sub_usage_per_slot/sub_{k}", np.asarray(usage[:, k]), update)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._bar.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
