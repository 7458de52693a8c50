"""Continuing a run from its newest checkpoint, exactly.

Everything a run carries between updates is in its `TrainState` checkpoint, so a resumed run
computes the same updates, bit for bit on the same machine, as one that was never interrupted.
Checked before anything is compiled or written: the directory is a run, the requested
configuration differs from the run's only in `RESUMABLE_FIELDS`, the checkpoint is readable, was
written by this run and matches its fingerprint, and metrics.csv holds every update up to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any


from mlsh_jax import checkpoint
from mlsh_jax.checkpoint import CheckpointError
from mlsh_jax.distributed import to_host
from mlsh_jax.files import write_json
from mlsh_jax.loading import CONFIG_FILE, ENV_FILE, RunLoadError, env_record, load_config
from mlsh_jax.config import RESUMABLE_FIELDS, ConfigError, MLSHConfig, config_differences
from mlsh_jax.metrics_log import METRICS_FILE, read_rows
from mlsh_jax.trainer import Trainer, TrainState

RESUME_LOG = "resumes.jsonl"


class ResumeError(ValueError):
    """The run cannot be resumed as asked (message says why and what to do instead)."""


@dataclasses.dataclass
class ResumePoint:
    """Where a resumed run continues from.

    Attributes:
      update: the checkpoint's update number (updates already done).
      state: the restored `TrainState`.
      rows: metrics.csv rows of updates 1..update.
      dropped_rows: rows metrics.csv holds beyond the checkpoint (they will be recomputed).
      changes: allowed configuration changes, `{field: (run's value, new value)}`.
    """

    update: int
    state: TrainState
    rows: list[dict[str, float]]
    dropped_rows: int
    changes: dict[str, tuple[Any, Any]]


def read_run_config(run_dir: pathlib.Path) -> MLSHConfig:
    """The configuration stored in `RUN/config.json` (`loading.load_config`); raises ResumeError
    when there is none."""
    if not run_dir.is_dir():
        raise ResumeError(f"nothing to resume: {run_dir} does not exist (drop --resume to start a new run)")
    try:
        return load_config(run_dir)
    except RunLoadError as error:
        raise ResumeError(str(error)) from None


def format_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """`{field: (old, new)}` as one line: `field: old -> new; ...`."""
    return "; ".join(f"{field}: {old!r} -> {new!r}" for field, (old, new) in changes.items())


def refused_changes(stored: MLSHConfig, config: MLSHConfig) -> dict[str, tuple[Any, Any]]:
    """The fields in which `config` differs from the `stored` run's configuration and that a resume
    may not change (every field but RESUMABLE_FIELDS), as `{field: (stored value, new value)}`."""
    return {field: change for field, change in config_differences(stored, config).items()
            if field not in RESUMABLE_FIELDS}


def find_resume_point(run_dir: str | pathlib.Path, config: MLSHConfig, trainer: Trainer | None = None
                      ) -> ResumePoint:
    """Checks that `run_dir` can continue under `config` and restores its newest checkpoint.

    Writes nothing. Raises ResumeError or CheckpointError with a message saying what is wrong.
    """
    run = pathlib.Path(run_dir)
    stored = read_run_config(run)
    changes = config_differences(stored, config)
    refused = refused_changes(stored, config)
    if refused:
        raise ResumeError(
            f"cannot resume {run} with a different configuration ({format_changes(refused)}); "
            f"only {', '.join(RESUMABLE_FIELDS)} may change on resume: start a new run with another --out "
            "to change the rest")
    if not os.access(run, os.W_OK):
        raise ResumeError(f"cannot resume {run}: the directory is not writable")
    if not (run / checkpoint.CHECKPOINT_DIR).is_dir():
        raise ResumeError(f"cannot resume {run}: it has no checkpoint yet (it stopped before its first save); "
                          "start it again with another --out")
    trainer = trainer or Trainer(config)
    manager = checkpoint.checkpoint_manager(run, create=False)
    try:
        available = checkpoint.steps(manager)
        if not available:
            raise ResumeError(f"cannot resume {run}: it has no complete checkpoint yet; start it again "
                              "with another --out")
        update = available[-1]
        if update > config.num_updates:
            raise ResumeError(f"{run} has already done {update} updates, more than num_updates="
                              f"{config.num_updates}; pass --set num_updates=N with N >= {update}")
        state = _restore(run, manager, available, stored, trainer)
    finally:
        manager.close()
    saved_update = int(to_host(state.update))
    if saved_update != update:
        raise CheckpointError(f"checkpoint {run / checkpoint.CHECKPOINT_DIR / str(update)} holds the state of "
                              f"update {saved_update}, not {update}")
    all_rows = read_rows(run / METRICS_FILE)
    rows = [row for row in all_rows if row["update"] <= update]
    if [int(row["update"]) for row in rows] != list(range(1, update + 1)):
        raise ResumeError(f"cannot resume {run}: {METRICS_FILE} does not hold one row for each of updates "
                          f"1..{update} (the checkpoint's update)")
    return ResumePoint(update=update, state=state, rows=rows, dropped_rows=len(all_rows) - len(rows),
                       changes=changes)


def _check_written_by(run: pathlib.Path, stored: MLSHConfig, meta: dict[str, Any], update: int) -> None:
    """Refuses a checkpoint whose configuration differs from the run's in more than RESUMABLE_FIELDS."""
    try:
        foreign = refused_changes(MLSHConfig.from_dict(meta["config"]), stored)
    except (ValueError, TypeError, KeyError):
        foreign = {"config": ("unreadable", "this run's")}
    if foreign or meta.get("update") != update:
        raise CheckpointError(f"checkpoint {run / checkpoint.CHECKPOINT_DIR / str(update)} was not written by "
                              f"this run ({format_changes(foreign) or 'its update number differs'})")


def _restore(run: pathlib.Path, manager, available: list[int], stored: MLSHConfig, trainer: Trainer) -> TrainState:
    """Restores the newest of the `available` checkpoints, checking it was written by this run."""
    update = available[-1]
    abstract = trainer.abstract_state()
    try:
        _check_written_by(run, stored, checkpoint.read_meta(manager, update), update)
        state, _ = checkpoint.restore(manager, update, abstract)
        return state
    except CheckpointError as error:
        earlier = available[:-1]
        hint = (f"; earlier checkpoints: {', '.join(map(str, earlier))}: move "
                f"{pathlib.Path(manager.directory) / str(update)} out of the run directory to resume from "
                f"update {earlier[-1]}" if earlier else "; there is no earlier checkpoint")
        raise CheckpointError(str(error) + hint) from None


def record_resume(run_dir: pathlib.Path, point: ResumePoint, config: MLSHConfig, when: float) -> None:
    """Writes the configuration now in effect to config.json (and the env's revision, already checked
    to be the run's, to env.json) and appends the resume to resumes.jsonl."""
    write_json(run_dir / CONFIG_FILE, config.to_dict())
    write_json(run_dir / ENV_FILE, env_record(config.env))
    entry = {"time": when, "from_update": point.update, "dropped_metric_rows": point.dropped_rows,
             "changes": {field: list(change) for field, change in point.changes.items()}}
    with open(run_dir / RESUME_LOG, "a") as file:
        file.write(json.dumps(entry) + "\n")


__all__ = ["ConfigError", "CheckpointError", "ResumeError", "ResumePoint", "find_resume_point",
           "read_run_config", "record_resume"]
