"""What a run does when something goes wrong: preemption signals and non-finite numbers."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

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


class StopSignals:
    """Turns SIGTERM / SIGINT into a request to stop at the next update boundary.

    Used as a context manager around the training loop; `requested` is the signal number received
    (or None). The first signal is reported and remembered; the handlers are then reset to the
    system default, so a second signal ends the process at once. Outside the main thread (where
    Python cannot install handlers) this does nothing.
    """

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = signum
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after the current update, "
              "then stopping (send it again to exit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

