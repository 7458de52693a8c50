"""Runs experiment commands as parallel worker processes, each as soon as the jobs it needs are done.

A command that is a sequence of experiments (`experiments.discrete_figures`) hands its runs to
`run_jobs`: each job is one `python -m MODULE ARGS...` in its own process, with its output in a log
file, at most `workers` at a time. A job may name jobs it needs (`after`, e.g. an adaptation needs
the runs it adapts); of the jobs whose needs are met, the one with the longest chain of work ahead
(its own cost plus its costliest chain of dependents) starts first. On a 2-core CPU two JAX
processes side by side do 1.18-1.31x the work of one (measured on two days; compiles are
single-threaded), docs/results_moving_bandits.md, "Regeneration time". Jobs continue where they stopped
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
      cost: relative amount of work (one unit for all jobs of a call); longer chains start first.
      after: names of jobs of the same call that must finish first (names not in the call count as
        done: a finished job of an earlier call is left out of the next one).
    """

    name: str
    module: str
    argv: tuple[str, ...]
    cost: float = 1.0
    after: tuple[str, ...] = ()


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


def chain_costs(jobs: Sequence[Job]) -> dict[str, float]:
    """Each job's cost plus the costliest chain of jobs that need it (its priority); ValueError on a cycle."""
    needed_by = {job.name: [other for other in jobs if job.name in other.after] for job in jobs}
    chains: dict[str, float] = {}

    def chain(job: Job, path: tuple[str, ...]) -> float:
        if job.name in path:
            raise ValueError(f"jobs need each other in a cycle: {' -> '.join(path + (job.name,))}")
        if job.name not in chains:
            chains[job.name] = job.cost + max((chain(other, path + (job.name,)) for other in needed_by[job.name]),
                                              default=0.0)
        return chains[job.name]

    for job in jobs:
        chain(job, ())
    return chains


def _skip_jobs_needing(broken: list[str], waiting: list[Job], pending: set[str], failed: list[str]) -> None:
    """Moves the waiting jobs that need a failed or skipped job to `broken`, naming them in `failed`."""
    for job in [job for job in waiting if set(job.after) & set(broken)]:
        failed.append(f"{job.name} (not started: needs {', '.join(sorted(set(job.after) & set(broken)))})")
        waiting.remove(job)
        pending.discard(job.name)
        broken.append(job.name)


def run_jobs(jobs: Sequence[Job], workers: int, log_dir: pathlib.Path,
             env: dict[str, str] | None = None) -> dict[str, float]:
    """Runs `jobs`, at most `workers` at once, each once the jobs it needs are done, the longest chain
    of work first; returns each job's wall time in s.

    Every job runs to its end even when another fails, except jobs that need a failed one (skipped);
    then JobsFailed names the failed and skipped ones. An interrupt (Ctrl-C, SIGTERM to this process)
    is passed on to the running jobs, which save and stop as a preempted run does, and re-raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    chains = chain_costs(jobs)
    env = dict(os.environ if env is None else env)
    waiting = sorted(jobs, key=lambda job: -chains[job.name])
    pending = set(names)          # not finished yet (waiting or running)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    wall, failed, broken = {}, [], []
    try:
        while waiting or running:
            _skip_jobs_needing(broken, waiting, pending, failed)
            ready = [job for job in waiting if not set(job.after) & pending]
            while ready and len(running) < workers:
                job = ready.pop(0)
                waiting.remove(job)
                running[job.name] = _start(job, log_dir, env)
            time.sleep(POLL_S)
            for name, (process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                pending.discard(name)
                wall[name] = round(time.perf_counter() - start, 1)
                if process.returncode:
                    broken.append(name)
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
