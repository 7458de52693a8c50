"""What a run does when something goes wrong: preemption signals, stalls and non-finite numbers.

Exit codes of a training command: 0 done or stopped by a first signal (with a checkpoint), 1 an
error such as non-finite values, 2 bad input, 75 (`STALL_EXIT_CODE`) a stalled update, 128 + the
signal number (130 for SIGINT, 143 for SIGTERM) when a second signal ended the process at once.
"""

from __future__ import annotations

import collections
import dataclasses
import faulthandler
import os
import pathlib
import signal
import socket
import statistics
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class NonFiniteError(RuntimeError):
    """Training produced a NaN or infinity; the message names the update, the slot and the quantity."""


# Health flag -> (what it covers, what its entries index: singular and plural).
_SLOT, _SUB = ("slot", "slots"), ("sub-policy", "sub-policies")
_HEALTH_ITEMS = {
    "experience": ("observations or rewards", _SLOT),
    "master_loss": ("master loss terms", _SLOT),
    "master_params": ("master parameters", _SLOT),
    "sub_loss": ("sub-policy loss terms", _SUB),
    "sub_params": ("sub-policy parameters", _SUB),
    "obs_stats": ("observation statistics", None),
}


def describe_non_finite(health: dict[str, Any], update: int) -> str | None:
    """A message naming every non-finite quantity of update `update` (1-based), or None if all is well.

    Args:
      health: the host copy of `metrics["health"]` from `Trainer.update` (bool arrays).
    """
    problems = []
    for name, (quantity, index_names) in _HEALTH_ITEMS.items():
        if name not in health:
            continue
        bad = np.flatnonzero(~np.asarray(health[name], bool).reshape(-1))
        if bad.size == 0:
            continue
        if index_names is None:
            problems.append(quantity)
        else:
            where = ", ".join(str(i) for i in bad[:8]) + (", ..." if bad.size > 8 else "")
            problems.append(f"{quantity} of {index_names[bad.size > 1]} {where}")
    if not problems:
        return None
    return f"non-finite values at update {update}: " + "; ".join(problems)


def signal_exit_code(signum: int) -> int:
    """The exit code of a process ended at once by signal `signum`, as a shell reports it: 128 + signum."""
    return 128 + int(signum)


def exit_now(message: str, code: int) -> None:
    """Prints `message` to stderr and ends the process with `code` at once, from any thread: no
    Python clean-up runs (the main thread may be blocked in a computation that never returns)."""
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def _ignore(signum, frame) -> None:
    """The Python-level handler while `StopSignals` is active; its watcher thread acts instead."""


class StopSignals:
    """Turns the first SIGTERM / SIGINT into a request to stop at the next update boundary, and a
    second one into an immediate exit.

    Used as a context manager around the training loop; `requested` is the signal number received
    (or None). The first signal is reported and remembered; a second one prints `exit_note()` (what
    was last saved, how to resume) and ends the process at once with exit code 128 + the signal
    number (130 for SIGINT, 143 for SIGTERM), even while the main thread is blocked in a
    computation that never returns.

    Why a thread: Python runs its signal handlers in the main thread, between bytecodes, so a main
    thread waiting inside XLA never runs them (neither for the first nor for the second signal). The
    C-level handler still writes each signal's number to the wakeup file descriptor
    (`signal.set_wakeup_fd`), from whatever thread the signal arrived on; a watcher thread reads it
    there and acts (it needs the GIL, which JAX releases while it waits for a computation). Outside
    the main thread (where Python cannot install handlers) this does nothing.
    """

    def __init__(self, exit_note: Callable[[], str] = lambda: ""):
        self.requested: int | None = None
        self._exit_note = exit_note
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        reader, writer = self._sockets = socket.socketpair()
        writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, _ignore)
        self._watcher = threading.Thread(target=self._watch, args=(reader,), name="stop-signal watcher", daemon=True)
        self._watcher.start()
        return self

    def _watch(self, reader: socket.socket) -> None:
        while data := reader.recv(64):  # empty once `__exit__` closed the other end
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._handle(signum)

    def _handle(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            code = signal_exit_code(signum)
            exit_now(f"\nreceived {name} again: exiting at once (exit code {code}) without finishing the "
                     f"current update. {self._exit_note()}".rstrip(), code)
        self.requested = signum
        print(f"\nreceived {name}: saving a checkpoint after the current update, then stopping (send it "
              "again to exit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc_info) -> None:
        if self._sockets is None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        signal.set_wakeup_fd(self._previous_fd)
        reader, writer = self._sockets
        writer.close()
        self._watcher.join()
        reader.close()
        self._sockets = None


STALL_EXIT_CODE = 75        # EX_TEMPFAIL of sysexits.h: a temporary failure, run it again (--resume)
STALL_FACTOR = 10           # the automatic limit: this many times the phase's median duration...
STALL_FLOOR_S = 60.0        # ...but at least this long
STARTUP_LIMIT_S = 1800.0    # the first time a phase runs (compiling, the first save) and unmeasured phases
_SAMPLES = 100              # durations per phase kept for the median (the most recent ones)
_POLL_S = 0.5               # the watchdog looks at least this often
_PAUSE_S = 5.0              # waking this much later than planned: the process was stopped (Ctrl-Z, SIGSTOP)


@dataclasses.dataclass(frozen=True)
class _Phase:
    update: int           # the update the loop is working on (1-based)
    name: str
    measured: bool        # its durations set its automatic limit
    started: float        # time.monotonic()


class StallWatchdog:
    """Ends the process with `STALL_EXIT_CODE` when one phase of the training loop runs longer than
    its limit: it prints which update and phase stalled, appends every thread's Python stack
    (faulthandler) to `stacks_file` and prints `exit_note()` (what was last saved, how to resume).

    The loop marks where it is with `enter(update, phase)`; a phase lasts until the next `enter`
    (or `close`). The limit of a phase, worked out by `limit_for`:
    - the first time it runs (its compile, the first save's set-up) and for unmeasured phases
      (`measured=False`, such as a caller's hook): max(`limit_s`, `STARTUP_LIMIT_S`), `limit_s`
      counting as 0 when None;
    - afterwards `limit_s` when given, else `STALL_FACTOR` x the median of its earlier durations
      (the first, compiling one left out once there are others), at least `STALL_FLOOR_S`.
    A watcher thread checks every `_POLL_S` seconds at most, so a stall is caught within its limit
    plus half a second. When the watcher wakes `_PAUSE_S` or more later than it planned, the whole
    process was stopped (Ctrl-Z, SIGSTOP) or starved of CPU: the pause is not counted against the
    phase. Marking a phase costs a clock read, a lock and a list append.

    Args:
      limit_s: seconds (> 0), or None for the automatic limit.
      total_updates: the run's update count, for the messages.
    """

    def __init__(self, limit_s: float | None, stacks_file: pathlib.Path, total_updates: int,
                 exit_note: Callable[[], str] = lambda: ""):
        if limit_s is not None and not limit_s > 0:
            raise ValueError(f"the stall limit must be positive, got {limit_s}")
        self.limit_s, self.stacks_file, self.total_updates = limit_s, pathlib.Path(stacks_file), total_updates
        self._exit_note = exit_note
        self._first: dict[str, float] = {}
        self._recent: dict[str, collections.deque] = {}
        self._current: _Phase | None = None
        self._lock = threading.Lock()  # `_current` is replaced by the loop and, after a pause, by the watcher
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="stall watchdog", daemon=True)
        self._watcher.start()

    def enter(self, update: int, phase: str, measured: bool = True) -> None:
        """Marks the start of `phase` of update `update` (1-based), ending the previous phase."""
        with self._lock:
            now, previous = time.monotonic(), self._current
            self._current = _Phase(update, phase, measured, now)
        if previous is not None and previous.measured:
            self.record(previous.name, now - previous.started)

    def record(self, phase: str, seconds: float) -> None:
        """Adds one duration of `phase` to those its automatic limit is measured from."""
        if phase not in self._first:  # the deque first: the watcher thread reads both once `_first` has it
            self._recent[phase] = collections.deque(maxlen=_SAMPLES)
            self._first[phase] = seconds
        else:
            self._recent[phase].append(seconds)

    def limit_for(self, phase: str, measured: bool = True) -> tuple[float, str]:
        """(seconds, how they were set) that `phase` may last now, by the rule in the class docstring."""
        if not measured or phase not in self._first:
            return max(self.limit_s or 0.0, STARTUP_LIMIT_S), "the limit of a first or unmeasured phase"
        if self.limit_s is not None:
            return self.limit_s, "--stall-limit"
        durations = list(self._recent[phase]) or [self._first[phase]]
        median = statistics.median(durations)
        return max(STALL_FLOOR_S, STALL_FACTOR * median), f"{STALL_FACTOR} x its median {median:.3g} s, at least {STALL_FLOOR_S:g} s"

    def close(self) -> None:
        """Stops watching (the loop is over)."""
        self._current = None
        self._closed.set()
        self._watcher.join()

    def _watch(self) -> None:
        planned = time.monotonic()  # when this thread should wake next
        while not self._closed.is_set():
            late = time.monotonic() - planned
            if late >= _PAUSE_S:
                self._skip_pause(late)
            phase, wait = self._current, _POLL_S
            if phase is not None:
                limit, rule = self.limit_for(phase.name, phase.measured)
                remaining = phase.started + limit - time.monotonic()
                if remaining <= 0 and phase is self._current and not self._closed.is_set():
                    self._stalled(phase, limit, rule)
                wait = min(max(remaining, 0.0), _POLL_S)
            planned = time.monotonic() + wait
            self._closed.wait(wait)

    def _skip_pause(self, seconds: float) -> None:
        """The current phase started `seconds` later, as far as its limit is concerned."""
        with self._lock:
            if self._current is not None:
                self._current = dataclasses.replace(self._current, started=self._current.started + seconds)

    def _stalled(self, phase: _Phase, limit: float, rule: str) -> None:
        elapsed = time.monotonic() - phase.started
        where = f"update {phase.update} of {self.total_updates} stalled in its {phase.name}"
        try:
            with open(self.stacks_file, "a") as file:
                file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {where}, {elapsed:.1f} s\n")
                file.flush()
                faulthandler.dump_traceback(file=file, all_threads=True)
                file.write("\n")
            stacks = f"every thread's Python stack is in {self.stacks_file}"
        except OSError as error:
            stacks = f"could not write the threads' stacks to {self.stacks_file}: {error.strerror}"
        exit_now(f"\nerror: {where}: {elapsed:.1f} s, over its limit of {limit:.3g} s ({rule}); {stacks}. "
                 f"Exiting with code {STALL_EXIT_CODE}. {self._exit_note()}".rstrip(), STALL_EXIT_CODE)
