"""Preempting a run in-process at a chosen update, the way SIGTERM does (`mlsh_jax.faults.StopSignals`),
without sending a signal: for tests of what a preempted command prints and of resuming it.

    with stop_after(1):
        experiment.main([...])     # its first run stops (with a checkpoint) after update 1, exits 0
"""

import contextlib
import signal

from mlsh_jax import run


class _StopAfter:
    """Stands in for `StopSignals`: the training loop reads `requested` once per update; from the
    `updates`-th read on it reports SIGTERM."""

    updates = 1

    def __init__(self, exit_note=None):
        self._reads = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    @property
    def requested(self):
        self._reads += 1
        return signal.SIGTERM if self._reads >= self.updates else None


@contextlib.contextmanager
def stop_after(updates: int):
    """Within it, every run `mlsh_jax.run.train` starts stops after `updates` updates, as if preempted."""
    stopper = type("StopAfter", (_StopAfter,), {"updates": updates})
    original = run.StopSignals
    run.StopSignals = stopper
    try:
        yield
    finally:
        run.StopSignals = original
