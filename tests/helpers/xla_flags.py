"""The test suite's XLA flags (set by tests/conftest.py before JAX starts) and XLA_FLAGS values for
subprocesses that must see a given number of CPU host devices while keeping the suite's flags."""

import os

# The suite's programs are small: compiling them is most of its time. At LLVM's optimisation level 1
# XLA's CPU backend compiles them 1.5-2x faster than at its default (3) and they run about as fast
# (measured on 2 cores: the ant twowalk smoke run 86 -> 56 s, MLSH learning moving bandits 65 -> 54 s;
# level 0 compiles a little faster still but runs the learning test 2.5x slower). The programs compute
# the same thing at any level.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=1"

_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def xla_flags_with_host_devices(count: int | None) -> str:
    """This process's XLA_FLAGS with `count` forced CPU host devices (None: XLA's default, one)."""
    kept = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if not flag.startswith(_DEVICE_COUNT)]
    return " ".join(kept + ([f"{_DEVICE_COUNT}={count}"] if count else []))
