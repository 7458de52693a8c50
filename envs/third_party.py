"""Work-arounds for third-party packages, applied when `envs` (or `mlsh_jax`) is imported.

- XLA's CPU runtime in JAX 0.10 can stop for good in the middle of a program: a jitted initial state or
  update of this project waited forever with idle cores (JAX 0.10.2, 2 cores: the initial state on
  nearly every run; the training loop about one run in four with only the scheduler flag below).
  `configure_xla_cpu` turns off XLA's concurrency-optimised CPU scheduler (XLA_FLAGS) and JAX's
  asynchronous CPU dispatch before JAX starts its backend: with both, 8 of 8 single-device runs
  finished, but runs over two host devices, and processes that computed before importing this
  package (a notebook kernel that printed `jax.devices()`), still stopped. The package's
  requirements therefore exclude JAX 0.10; this only helps where a 0.10 release is installed anyway.
  JAX 0.9 runs the same programs without it and is left as it is.
- mujoco's MJX package tries its optional NVIDIA Warp backend when brax imports it and prints
"Failed to import warp" / "Failed to import mujoco_warp" when Warp is absent. Nothing here uses that
backend, and the lines look like errors to a reader, so they are swallowed; any other output of the
import is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os

XLA_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
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


def configure_xla_cpu() -> None:
    """On JAX 0.10 (see the module docstring): adds `XLA_CPU_SCHEDULER_FLAG=false` to
    XLA_FLAGS unless XLA_FLAGS sets that flag already (subprocesses inherit it), and runs CPU
    programs synchronously (`jax_cpu_enable_async_dispatch`) unless JAX_CPU_ENABLE_ASYNC_DISPATCH is
    set. Takes effect only before JAX's first computation in this process."""
    import jax

    if tuple(int(part) for part in jax.__version__.split(".")[:2]) != (0, 10):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_CPU_SCHEDULER_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_SCHEDULER_FLAG}=false".strip()
    if "JAX_CPU_ENABLE_ASYNC_DISPATCH" not in os.environ:
        os.environ["JAX_CPU_ENABLE_ASYNC_DISPATCH"] = "false"       # for subprocesses
        jax.config.update("jax_cpu_enable_async_dispatch", False)   # for this one


def prepare() -> None:
    """Everything above, in order: XLA's flags, then mujoco's import."""
    configure_xla_cpu()
    import_mujoco_quietly()
