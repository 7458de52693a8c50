"""Orbax checkpoints of a `TrainState` inside a run directory (`RUN/checkpoints/<update>`)."""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def checkpoint_manager(run_dir: str | pathlib.Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """The run's checkpoint manager; orbax writes each step to a temporary folder and renames it
    when complete, so a crash during a save leaves the previous checkpoints intact."""
    directory = pathlib.Path(run_dir).absolute() / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save(manager: ocp.CheckpointManager, update: int, state) -> None:
    """Saves `state` as checkpoint number `update` (asynchronously; call `manager.wait_until_finished`)."""
    manager.save(update, args=ocp.args.StandardSave(state))


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
    """Restores the newest checkpoint into the structure of `abstract_state` (from `jax.eval_shape`).

    Returns (update number, state); raises FileNotFoundError when the run has no checkpoint.
    """
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    return step, manager.restore(step, args=ocp.args.StandardRestore(target))
