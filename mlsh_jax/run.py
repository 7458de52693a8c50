"""Running a configuration to completion and writing the run contract into a directory.

RUN/config.json (resolved configuration), RUN/metrics.csv (one row per update), RUN/summary.json
(final figures) and RUN/checkpoints/ (orbax). Metrics of update u are fetched from the device while
update u+1 runs, so logging never stalls the jitted loop.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from mlsh_jax import checkpoint
from mlsh_jax.config import MLSHConfig
from mlsh_jax.trainer import Trainer, TrainState

PROCESS_START = time.time()


class RunDirectoryError(ValueError):
    """The output directory cannot be used (it exists with content, or cannot be written)."""


@dataclasses.dataclass
class RunResult:
    """What `train` returns: the trainer, the final state, every metrics row and the summary."""

    trainer: Trainer
    state: TrainState
    rows: list[dict[str, float]]
    summary: dict[str, Any]


def check_run_dir(out_dir: str | pathlib.Path) -> pathlib.Path:
    """Raises RunDirectoryError unless `out_dir` is absent or empty and can be created; writes nothing."""
    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirectoryError(
            f"output directory {out} already exists and is not empty; choose another --out "
            "(an existing run is never overwritten)"
        )
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise RunDirectoryError(f"cannot create output directory {out}: {parent} is not writable")
    return out


def prepare_run_dir(out_dir: str | pathlib.Path) -> pathlib.Path:
    """Creates `out_dir`; refuses one that already holds files (never overwrites a run)."""
    out = check_run_dir(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunDirectoryError(f"cannot write to output directory {out}: {error.strerror}") from None
    return out


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics of one update -> flat CSV columns; vectors become `name_i`, per-slot tables are
    left out (they stay available to callers)."""
    flat = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, prefix=f"{key}_"))
            continue
        value = np.asarray(value)
        if value.ndim == 0:
            flat[key] = float(value)
        elif value.ndim == 1:
            flat.update({f"{key}_{i}": float(v) for i, v in enumerate(value)})
    return flat


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Writes `data` as indented JSON (non-finite floats become null), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    tmp.replace(path)


def summarize(rows: list[dict[str, float]], config: MLSHConfig) -> dict[str, Any]:
    """Final figures: returns averaged over the last 10% of updates, sub-policy usage, speed."""
    tail = rows[-max(1, len(rows) // 10):]

    def tail_mean(column: str) -> float:
        values = [r[column] for r in tail if column in r and math.isfinite(r[column])]
        return float(np.mean(values)) if values else float("nan")

    timed = rows[1:] if len(rows) > 1 else rows
    seconds = sum(r["interval_s"] for r in timed)
    return {
        "updates": len(rows),
        "env_steps": rows[-1]["env_steps"],
        "wall_s": rows[-1]["wall_s"],
        "mean_return": tail_mean("mean_return"),
        "mean_return_post_warmup": tail_mean("mean_return_post_warmup"),
        "sub_usage": [tail_mean(f"sub_usage_{k}") for k in range(config.num_subpolicies)],
        "env_steps_per_s_after_compile": config.env_steps_per_update * len(timed) / max(seconds, 1e-9),
        "first_update_s": rows[0]["interval_s"],
    }


def train(
    config: MLSHConfig,
    out_dir: str | pathlib.Path,
    *,
    progress: bool = True,
    description: str | None = None,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
) -> RunResult:
    """Trains `config` for `config.num_updates` updates and writes the run contract into `out_dir`.

    `out_dir` must not hold a previous run (see `prepare_run_dir`). Checkpoints are written every
    `config.checkpoint_every` updates and at the end.
    """
    trainer = Trainer(config)
    out = prepare_run_dir(out_dir)
    write_json(out / "config.json", config.to_dict())
    manager = checkpoint.checkpoint_manager(out)
    state = trainer.init(jax.random.PRNGKey(config.seed))

    rows: list[dict[str, float]] = []
    bar = tqdm(total=config.num_updates, desc=description or config.algorithm, unit="update",
               disable=not progress, dynamic_ncols=True)
    with open(out / "metrics.csv", "w", newline="") as csv_file:
        writer = None
        pending = None  # (update index, device metrics) of the update still being logged
        last_time = time.time()

        def log(update_index, device_metrics):
            nonlocal writer, last_time
            host = jax.device_get(device_metrics)
            now = time.time()
            row = {"update": update_index + 1,
                   "env_steps": (update_index + 1) * config.env_steps_per_update,
                   "wall_s": now - PROCESS_START, "interval_s": now - last_time}
            row["env_steps_per_s"] = config.env_steps_per_update / max(row["interval_s"], 1e-9)
            row.update(flatten_metrics(host))
            last_time = now
            if writer is None:
                writer = csv.DictWriter(csv_file, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            csv_file.flush()
            rows.append(row)
            bar.update(1)
            bar.set_postfix(steps_per_s=f"{row['env_steps_per_s']:.0f}",
                            ret=f"{row['mean_return']:.1f}",
                            ret_post=f"{row['mean_return_post_warmup']:.1f}")
            if on_metrics is not None:
                on_metrics(row)

        for update_index in range(config.num_updates):
            save_now = update_index + 1 == config.num_updates or (
                config.checkpoint_every and (update_index + 1) % config.checkpoint_every == 0)
            state, metrics = trainer.update(state)
            if pending is not None:
                log(*pending)
            pending = (update_index, metrics)
            if save_now:
                checkpoint.save(manager, update_index + 1, state)
                manager.wait_until_finished()
        log(*pending)
    bar.close()
    manager.close()

    summary = summarize(rows, config)
    write_json(out / "summary.json", summary)
    return RunResult(trainer=trainer, state=state, rows=rows, summary=summary)
