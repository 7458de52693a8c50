"""Running a configuration to completion (or to a preemption) and writing the run contract.

RUN/config.json (resolved configuration), RUN/metrics.csv (one row per update), RUN/summary.json
(final figures), RUN/checkpoints/ (orbax, see `checkpoint`), RUN/tensorboard/ (event files) and,
after a resume, RUN/resumes.jsonl (one line per resume: from which update, what changed).

The loop keeps three promises:
- logging never stalls the jitted loop: metrics of update u are fetched while update u+1 runs;
- a checkpoint is written only after the health flags of the same update were checked, so a NaN
  never reaches disk and the newest checkpoint is always a good one;
- SIGTERM / SIGINT stop the run at the next update boundary with a checkpoint; a second signal
  ends the process at once (exit code 128 + the signal), saying what was last saved;
- a stalled update (or checkpoint save, or collective) never hangs unseen: the stall watchdog
  reports it, writes every thread's stack to RUN/stall_process<I>.txt and exits with code 75
  (`faults.STALL_EXIT_CODE`), and so does a process whose peer in a cluster was lost.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from mlsh_jax import checkpoint, distributed
from mlsh_jax.config import RESUMABLE_FIELDS, MLSHConfig, config_differences
from mlsh_jax.faults import (STALL_EXIT_CODE, NonFiniteError, StallWatchdog, StopSignals, describe_non_finite,
                             exit_now)
from mlsh_jax.files import write_json
from mlsh_jax.loading import ENV_FILE, env_record
from mlsh_jax.metrics_log import MetricsLog
from mlsh_jax.resume import CONFIG_FILE, find_resume_point, record_resume
from mlsh_jax.trainer import Trainer, TrainState

SUMMARY_FILE = "summary.json"
# Phases of the training loop, as the stall watchdog names them (see `_training_loop`).
UPDATE_PHASE = "rollout and update"              # dispatching update u, fetching update u-1's metrics
HOOK_PHASE = "after-update hook"                 # the caller's `after_update` (unmeasured: see StallWatchdog)
STOP_PHASE = "stop-request collective"           # do any processes want to stop?
RESULTS_PHASE = "wait for its results before saving"
SAVE_PHASE = "checkpoint save"


class RunDirectoryError(ValueError):
    """The output directory cannot be used (it exists with content, or cannot be written)."""


@dataclasses.dataclass
class RunResult:
    """What `train` returns.

    Attributes:
      trainer, state: the trainer and the state after the last update done.
      rows: every metrics row of the run (resumed runs include the rows before the resume).
      summary: final figures (None when the run was preempted before its end).
      preempted: the run stopped early on SIGTERM / SIGINT, with a checkpoint of `state`.
      resumed_from: the checkpoint's update number when the run was resumed, else None.
    """

    trainer: Trainer
    state: TrainState
    rows: list[dict[str, float]]
    summary: dict[str, Any] | None
    preempted: bool = False
    resumed_from: int | None = None


def check_run_dir(out_dir: str | pathlib.Path) -> pathlib.Path:
    """Raises RunDirectoryError unless `out_dir` is absent or empty and can be created; writes nothing."""
    out = pathlib.Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = " or pass --resume to continue it" if (out / CONFIG_FILE).is_file() else ""
        raise RunDirectoryError(
            f"output directory {out} already exists and is not empty; choose another --out{hint} "
            "(an existing run is never overwritten)"
        )
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunDirectoryError(f"cannot create output directory {out}: {parent} is a file")
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
        **_returns_by_task(tail_mean, rows[-1]),
        "sub_usage": [tail_mean(f"sub_usage_{k}") for k in range(config.num_subpolicies)],
        "env_steps_per_s_after_compile": config.env_steps_per_update * len(timed) / max(seconds, 1e-9),
        "first_update_s": rows[0]["interval_s"],
    }


def _returns_by_task(tail_mean: Callable[[str], float], row: dict[str, float]) -> dict[str, Any]:
    """For an env with kinds of task (`TaskEnv.task_kinds`): each kind's mean return over the
    tail's updates (NaN for a kind that never ended an episode there) and their plain mean, the
    task-balanced return that a skewed draw of tasks does not move; nothing for other envs."""
    columns = sorted((c for c in row if c.startswith("mean_return_by_task_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    if not columns:
        return {}
    by_task = [tail_mean(c) for c in columns]
    seen = [v for v in by_task if math.isfinite(v)]
    return {"mean_return_by_task": by_task,
            "mean_return_task_balanced": float(np.mean(seen)) if seen else float("nan")}


def train(
    config: MLSHConfig,
    out_dir: str | pathlib.Path,
    *,
    resume: bool = False,
    trainer: Trainer | None = None,
    progress: bool = True,
    description: str | None = None,
    tensorboard: bool = True,
    on_metrics: Callable[[dict[str, float]], None] | None = None,
    prepare_state: Callable[[TrainState], TrainState] | None = None,
    after_update: Callable[[int, TrainState], None] | None = None,
    watchdog: bool = True,
    stall_limit_s: float | None = None,
    resume_command: str | None = None,
) -> RunResult:
    """Trains `config` for `config.num_updates` updates and writes the run contract into `out_dir`.

    Args:
      config: the validated configuration.
      out_dir: a new run directory, or (with `resume`) the run to continue.
      resume: continue `out_dir` from its newest checkpoint (see `resume.find_resume_point`); a run
        that is already complete is returned as it is, without training.
      trainer: a prebuilt trainer (built here when None), e.g. to share one compiled update between
        runs (seeds of one configuration: one compile); its configuration may differ from `config`
        only in `RESUMABLE_FIELDS` and `seed` (which only draws the initial state).
      progress, description: progress bar and its label.
      tensorboard: also write TensorBoard event files.
      on_metrics: called with every new metrics row.
      prepare_state: applied to the initial state of a new run (e.g. to put transferred
        sub-policies in); a resumed run continues from its checkpoint, which already holds them.
      after_update: called with (updates done, state) after every update, before the next one
        starts (e.g. to evaluate the sub-policies along the way); it must not keep the state, whose
        buffers the next update reuses.
      watchdog, stall_limit_s: watch every phase of the loop and end the process with exit code
        75 when one stalls (`faults.StallWatchdog`; `stall_limit_s` seconds > 0, or None for the
        limit measured from the run's own update times).
      resume_command: the command that continues this run, printed when the process must exit at
        once (a second stop signal, a stall); by default the advice to rerun with --resume.

    Raises:
      RunDirectoryError, resume.ResumeError, checkpoint.CheckpointError: before anything is
        compiled or written, when `out_dir` cannot be used as asked.
      faults.NonFiniteError: training produced a NaN or infinity (no checkpoint is written for it).
    """
    started = time.time()  # wall_s counts from here: building the trainer and compiling included
    if stall_limit_s is not None and not stall_limit_s > 0:
        raise ValueError(f"stall_limit_s must be a positive number of seconds, got {stall_limit_s}")
    if trainer is None:
        trainer = Trainer(config)
    mismatched = sorted(set(config_differences(trainer.config, config)) - set(RESUMABLE_FIELDS) - {"seed"})
    if mismatched:
        raise ValueError(f"the trainer was built for another configuration (differs in {', '.join(mismatched)})")
    main = distributed.is_main_process()
    resumed_from, previous_rows = None, []
    if resume:
        point = find_resume_point(out_dir, config, trainer)
        out, state, resumed_from, previous_rows = pathlib.Path(out_dir), point.state, point.update, point.rows
        if point.update == config.num_updates and not point.changes and point.dropped_rows == 0:
            return _finished(trainer, config, out, state, previous_rows, resumed_from)
        distributed.barrier("mlsh_jax.train.resume_checked")
        if main:
            record_resume(out, point, config, time.time())
    else:
        out = check_run_dir(out_dir)
        distributed.barrier("mlsh_jax.train.run_dir_checked")  # every process checked before any writes
        if main:
            prepare_run_dir(out)
            write_json(out / CONFIG_FILE, config.to_dict())
            write_json(out / ENV_FILE, env_record(config.env))
        distributed.barrier("mlsh_jax.train.run_dir_created")
        state = trainer.init(jax.random.PRNGKey(config.seed))
        if prepare_state is not None:
            state = prepare_state(state)

    log = MetricsLog(out, config, started, previous_rows=previous_rows, progress=progress and main,
                     description=description, tensorboard=tensorboard, on_metrics=on_metrics, write_files=main)
    manager = checkpoint.checkpoint_manager(out, max_to_keep=config.keep_checkpoints)
    note = functools.partial(exit_note, out, resume_command)
    watch = StallWatchdog(stall_limit_s, stall_report_file(out), config.num_updates, note) if watchdog else None
    try:
        with StopSignals(note) as stop:
            state, stopped = _training_loop(trainer, config, state, log, manager, stop, first_update=len(previous_rows),
                                            after_update=after_update, watch=watch, note=note, out=out)
    finally:
        try:
            if watch is not None:
                watch.enter(len(log.rows), SAVE_PHASE)
            manager.wait_until_finished()
        finally:
            if watch is not None:
                watch.close()  # never left watching a loop that is over
            manager.close()
            log.close()
    if stopped:
        print(f"stopped after update {len(log.rows)} of {config.num_updates}; its checkpoint is in "
              f"{out / checkpoint.CHECKPOINT_DIR}", file=sys.stderr, flush=True)
        return RunResult(trainer, state, log.rows, None, preempted=True, resumed_from=resumed_from)
    return _finished(trainer, config, out, state, log.rows, resumed_from)


def stall_report_file(out: pathlib.Path) -> pathlib.Path:
    """RUN/stall_process<I>.txt: where process I reports a stall or a lost peer (with the stacks)."""
    return out / f"stall_process{jax.process_index()}.txt"


def newest_checkpoint(out: pathlib.Path) -> int | None:
    """The update number of the newest complete checkpoint on disk (None if there is none). Orbax
    makes a checkpoint visible under its number only once it is complete."""
    folder = out / checkpoint.CHECKPOINT_DIR
    numbers = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(numbers, default=None)


def exit_note(out: pathlib.Path, resume_command: str | None) -> str:
    """What a process that exits at once says about its run: the newest checkpoint and how to resume."""
    newest = newest_checkpoint(out)
    if newest is None:
        return (f"No checkpoint of {out} had been written yet, so it cannot be resumed: start it again "
                "with another --out.")
    how = resume_command or f"the same command with --out {out} --resume"
    return (f"The newest checkpoint, {out / checkpoint.CHECKPOINT_DIR / str(newest)} (update {newest}), "
            f"stays valid; to resume: {how}")


def _training_loop(trainer: Trainer, config: MLSHConfig, state: TrainState, log: MetricsLog, manager,
                   stop: StopSignals, first_update: int, after_update: Callable[[int, TrainState], None] | None = None,
                   watch: StallWatchdog | None = None, note: Callable[[], str] = lambda: "",
                   out: pathlib.Path | None = None) -> tuple[TrainState, bool]:
    """Updates from `first_update` to `config.num_updates` or to a stop request (on any process).
    `watch` is told which update and phase the loop is in. In a cluster, a failed collective (a lost
    peer process) ends this process with `STALL_EXIT_CODE` and `note()`, reported in the run
    directory `out`.

    Returns (the last state, whether it stopped early)."""
    try:
        return _updates(trainer, config, state, log, manager, stop, first_update, after_update,
                        watch.enter if watch is not None else _unwatched)
    except Exception as error:
        if not distributed.is_peer_failure(error):
            raise
        path = stall_report_file(out)
        with open(path, "a") as file:
            file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: a collective failed: {error}\n\n")
        exit_now(f"error: a collective across processes failed, so a peer process was probably lost: "
                 f"{distributed.first_line(error)} (details in {path}). Exiting with code {STALL_EXIT_CODE}. "
                 f"{note()}", STALL_EXIT_CODE)


def _unwatched(update: int, phase: str, measured: bool = True) -> None:
    """`StallWatchdog.enter` of a run without a watchdog."""


def _updates(trainer: Trainer, config: MLSHConfig, state: TrainState, log: MetricsLog, manager, stop: StopSignals,
             first_update: int, after_update: Callable[[int, TrainState], None] | None,
             enter: Callable[..., None]) -> tuple[TrainState, bool]:
    """The loop of `_training_loop`; `enter(update, phase)` marks each phase for the watchdog."""
    pending = None  # (update number, device metrics) not yet logged

    def log_and_check(update, device_metrics):
        metrics = distributed.to_host(device_metrics)
        health = metrics.pop("health")
        log.record(update, metrics)
        problem = describe_non_finite(health, update)
        if problem:
            manager.wait_until_finished()
            saved = checkpoint.steps(manager)
            last_good = (f"the newest checkpoint, {pathlib.Path(manager.directory) / str(saved[-1])} "
                         f"(update {saved[-1]}), holds the last good state" if saved
                         else "no checkpoint had been written yet")
            raise NonFiniteError(f"{problem}. The run stopped without saving this state; {last_good}.")

    for update_index in range(first_update, config.num_updates):
        done = update_index + 1
        enter(done, UPDATE_PHASE)
        state, metrics = trainer.update(state)
        if pending is not None:
            log_and_check(*pending)
        pending = (done, metrics)
        if after_update is not None:
            enter(done, HOOK_PHASE, measured=False)
            after_update(done, state)
        enter(done, STOP_PHASE)
        stopping = distributed.any_process(stop.requested is not None) and done < config.num_updates
        periodic = config.checkpoint_every and done % config.checkpoint_every == 0
        if done == config.num_updates or periodic or stopping:
            enter(done, RESULTS_PHASE)
            log_and_check(*pending)  # waits for this update: its health is known before it is saved
            pending = None
            enter(done, SAVE_PHASE)
            checkpoint.save(manager, done, state, config.to_dict())
        if stopping:
            return state, True
    if pending is not None:
        log_and_check(*pending)
    return state, False


def _finished(trainer, config, out, state, rows, resumed_from) -> RunResult:
    summary = summarize(rows, config)
    if distributed.is_main_process():
        write_json(out / SUMMARY_FILE, summary)
    return RunResult(trainer, state, rows, summary, resumed_from=resumed_from)
