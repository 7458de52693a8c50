"""Shared small configurations (tests keep shapes tiny: compile time dominates), and one persistent
XLA compilation cache for the whole session: many tests (and the command lines they start as
subprocesses) compile the same small programs, which then load instead of compiling again.

The suite runs on whatever platform JAX picks (CPU, or a GPU with `pip install -e '.[cuda,test]'`);
the tests that need the CPU (several processes or forced host devices) set JAX_PLATFORMS=cpu for
their subprocesses themselves."""

import atexit
import dataclasses
import os
import pathlib
import shutil
import tempfile

from tests.helpers.xla_flags import TEST_XLA_FLAGS

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set before JAX is imported; subprocesses inherit it
    _session_cache = tempfile.mkdtemp(prefix="mlsh_jax_tests_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _session_cache
    atexit.register(shutil.rmtree, _session_cache, ignore_errors=True)
# On a GPU machine every pytest-xdist worker is a JAX process: without this each would reserve 75% of the
# GPU's memory at its first JAX call and the second worker would run out. Tests allocate what they use.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite is compile-bound: it compiles at a lower LLVM optimisation level (`tests.helpers.xla_flags`).
# Subprocesses inherit the flag; MLSH_JAX_TESTS_OPTIMIZED=1 keeps XLA's default optimisation level.
if os.environ.get("MLSH_JAX_TESTS_OPTIMIZED") != "1" and "optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()
# Cache every compilation, however quick: whether a program loads from the cache then does not depend on
# how fast this machine compiles it (a cached load makes XLA log lines on stderr that tests must tolerate).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])

from mlsh_jax.config import MLSHConfig, PPOConfig  # noqa: E402


def tiny_config(**overrides) -> MLSHConfig:
    """A moving-bandits configuration small enough to compile and run in seconds."""
    base = MLSHConfig(
        num_slots=2, steps_per_slot=100, envs_per_slot=2, num_updates=4, warmup_updates=2,
        joint_updates=1, checkpoint_every=0,
        master=PPOConfig(learning_rate=0.01, epochs=2, num_minibatches=2),
        sub=PPOConfig(learning_rate=3e-4, epochs=2, num_minibatches=2),
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def tiny():
    return tiny_config


# The default tier's files that take minutes, longest first (worker-seconds on the 2-core CPU, default
# tier). pytest-xdist hands whole files (`--dist loadfile`) to its workers in collection order (with
# `--no-loadscope-reorder`, in pyproject.toml's addopts; by default it puts the files with the most
# tests first, whatever they cost): started first, the long files leave the short ones to fill the end.
# A file missing here runs after these, in its alphabetical place.
LONGEST_FILES_FIRST = (
    "test_experiment_cli.py",   # ~290 s
    "test_trainer.py",          # ~240 s
    "test_watchdog.py",         # ~215 s
    "test_humanoid_envs.py",    # ~185 s
    "test_resume.py",           # ~155 s
    "test_credit.py",           # ~150 s
    "test_distributed.py",      # ~145 s
    "test_ant_envs.py",         # ~140 s
    "test_faults.py",           # ~120 s
    "test_ant_experiments.py",  # ~115 s
    "test_notebook.py",         # ~90 s
    "test_learner_recipes.py",  # ~80 s
    "test_adapt.py",            # ~80 s
    "test_resume_and_transfer.py",  # ~75 s
    "test_learning.py",         # ~60 s
)


def pytest_collection_modifyitems(config, items):
    """Runs the files of LONGEST_FILES_FIRST first, in that order; the others after them,
    alphabetically. Tests keep their order within a file."""
    stale = [name for name in LONGEST_FILES_FIRST if not (pathlib.Path(__file__).parent / name).is_file()]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FILES_FIRST names files that do not exist: {stale}")
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), str(item.path)))
