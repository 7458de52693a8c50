"""Runs independent experiment commands as parallel worker processes, longest first.

A command that is a sequence of experiments (`experiments.discrete_figures`) hands its independent
training runs to `run_jobs`: each job is one `python -m MODULE ARGS...` in its own process, with its
output in a log file, at most `workers` at a time. On a 2-core CPU two JAX processes side by side
do ~1.3x the work of one (each program alone keeps the cores ~80% busy; compiles are single-threaded),
measured in docs/results_moving_bandits.md, "Regeneration time". Jobs continue where they stopped
when given again (every experiment command here continues its --out).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Sequence

# Seconds between two looks at the running jobs.
POLL_S = 0.5


@dataclasses.dataclass(frozen=True)
class Job:
    """One experiment command.

    Attributes:
      name: unique, used for its log file (`/` allowed: sub-folders of the log directory).
      module: the `python -m` module; argv: its arguments.
      cost: relative amount of work (any unit); the costliest jobs start first.
    """

    name: str
    module: str
    argv: tuple[str, ...]
    cost: float = 1.0


class JobsFailed(RuntimeError):
    """Some jobs exited with an error; the message names them and their logs."""


def default_workers() -> int:
    """2 on a CPU backend with at least 2 cores, else 1 (accelerator memory is not shared out)."""
    import jax

    return min(2, os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")


def _start(job: Job, log_dir: pathlib.Path, env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    log = log_dir / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as file:
        process = subprocess.Popen([sys.executable, "-m", job.module, *job.argv], stdout=file,
                                   stderr=subprocess.STDOUT, env=env)
    print(f"[{job.name}: started, log {log}]", flush=True)
    return process, time.perf_counter()


def run_jobs(jobs: Sequence[Job], workers: int, log_dir: pathlib.Path,
             env: dict[str, str] | None = None) -> dict[str, float]:
    """Runs `jobs`, at most `workers` at once, costliest first; returns each job's wall time in s.

    Every job runs to its end even when another fails; then JobsFailed names the failed ones. An
    interrupt (Ctrl-C, SIGTERM to this process) is passed on to the running jobs, which save and
    stop as a preempted run does, and re-raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    env = dict(os.environ if env is None else env)
    waiting = sorted(jobs, key=lambda job: -job.cost)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    wall, failed = {}, []
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                job = waiting.pop(0)
                running[job.name] = _start(job, log_dir, env)
            time.sleep(POLL_S)
            for name, (process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                wall[name] = round(time.perf_counter() - start, 1)
                if process.returncode:
                    failed.append(f"{name} (exit {process.returncode}, log {log_dir / f'{name}.log'})")
                print(f"[{name}: {'failed' if process.returncode else 'done'} after {wall[name]:.0f} s]", flush=True)
    except BaseException:
        for process, _ in running.values():
            process.terminate()
        for process, _ in running.values():
            process.wait()
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if failed:
        raise JobsFailed("failed: " + "; ".join(failed))
    return wall
