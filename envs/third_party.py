"""Imports of third-party packages that print notices which are not errors.

mujoco's MJX package tries its optional NVIDIA Warp backend when brax imports it and prints
"Failed to import warp" / "Failed to import mujoco_warp" when Warp is absent. Nothing here uses that
backend, and the lines look like errors to a reader, so they are swallowed; any other output of the
import is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import io

OPTIONAL_BACKEND_NOTICES = ("Failed to import warp", "Failed to import mujoco_warp")


def import_mujoco_quietly() -> None:
    """Imports `mujoco.mjx.warp` (and so mujoco) once, without its optional-backend notices. Does
    nothing when mujoco is not installed or was imported already."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            import mujoco.mjx.warp  # noqa: F401
        except ImportError:
            pass
    for line in printed.getvalue().splitlines():
        if not line.startswith(OPTIONAL_BACKEND_NOTICES):
            print(line)
