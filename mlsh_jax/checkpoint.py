"""Orbax checkpoints of a `TrainState` inside a run directory (`RUN/checkpoints/<update>/`).

Each checkpoint holds two items:
  state: the whole `TrainState` (sub-policies and their optimizer state, every slot's master,
         optimizer state, task, phase and env copies, observation statistics, PRNG key, counter);
  meta:  JSON: the format version, the update number, the resolved configuration, and a
         fingerprint of every state leaf, checked on restore.

Orbax writes a checkpoint into a temporary folder and renames it when complete, so a crash during
a save leaves the earlier checkpoints intact and the unfinished one invisible. The fingerprint
catches what orbax cannot: a data file changed on disk after the save (orbax restores a flipped
byte silently).
"""

from __future__ import annotations

import functools
import gc
import os
import pathlib
import re
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding

from mlsh_jax.distributed import replicated, to_host

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used (missing, unreadable, corrupt, or from another run)."""


def checkpoint_manager(run_dir: str | pathlib.Path, max_to_keep: int = 3, create: bool = True
                       ) -> ocp.CheckpointManager:
    """The run's checkpoint manager, keeping the newest `max_to_keep` checkpoints."""
    directory = pathlib.Path(run_dir).absolute() / CHECKPOINT_DIR
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    return ocp.CheckpointManager(directory, options=options)


def _leaf_fingerprint(leaf: jax.Array) -> jax.Array:
    """A uint32 digest of one array: any change of a single element changes it."""
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if leaf.dtype == jnp.bool_:
        leaf = leaf.astype(jnp.uint8)
    if leaf.dtype.itemsize == 4:
        words = jax.lax.bitcast_convert_type(leaf, jnp.uint32)
    else:  # 1- and 2-byte types: reinterpret as unsigned ints of their own width, then widen
        unsigned = jnp.dtype(f"uint{8 * leaf.dtype.itemsize}")
        words = jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)
    words = words.reshape(-1)
    index = jnp.arange(words.size, dtype=jnp.uint32)
    # Per element: a bijection of (value xor position hash), so a single changed element always
    # changes the wrapped sum; several changes cancel only by chance (~2^-32).
    mixed = (words ^ (index * jnp.uint32(0x9E3779B9))) * jnp.uint32(0x85EBCA6B)
    mixed = mixed ^ (mixed >> 13)
    return jnp.sum(mixed, dtype=jnp.uint32)


@functools.lru_cache(maxsize=None)
def _fingerprint_fn(mesh: Mesh | None):
    def digests(state) -> list[jax.Array]:
        return [_leaf_fingerprint(leaf) for leaf in jax.tree.leaves(state)]
    return jax.jit(digests, out_shardings=None if mesh is None else replicated(mesh))


def fingerprint(state) -> list[int]:
    """One uint32 digest per leaf of `state`, in `jax.tree.leaves` order.

    Integer sums are exact, so the digests do not depend on how the state is laid out over devices
    or processes: a checkpoint written on 2 processes verifies when read on 1, and the other way round.
    """
    shardings = [leaf.sharding for leaf in jax.tree.leaves(state) if isinstance(leaf, jax.Array)]
    mesh = next((s.mesh for s in shardings if isinstance(s, NamedSharding)), None)
    return [int(x) for x in to_host(_fingerprint_fn(mesh)(state))]


def save(manager: ocp.CheckpointManager, update: int, state, config: dict[str, Any]) -> None:
    """Saves `state` as checkpoint number `update`, with the configuration that produced it.

    Asynchronous: the arrays are copied to the host before this returns (so `state` may be donated
    to the next update) and written in the background; `manager.wait_until_finished()` waits.
    """
    meta = {"format": FORMAT_VERSION, "update": int(update), "config": config,
            "fingerprint": fingerprint(state)}
    manager.save(update, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 meta=ocp.args.JsonSave(meta)))


def _read_quietly(read: Callable[[], Any]) -> tuple[Any, str | None]:
    """Runs an orbax read; returns (result, None), or (None, the root cause in one line) on failure.

    A failed orbax read reports itself several times besides the exception: 'Exception ignored in
    coroutine' tracebacks (when the failed reads are garbage-collected) and 'Event loop is closed'
    tracebacks from TensorStore threads whose reads were still in flight. Standard error (the file
    descriptor, as those threads bypass `sys.stderr`) goes to a temporary file meanwhile: it is
    replayed after a success and dropped after a failure, once the late reports had time to arrive
    and the failed reads were collected. The caller raises one clear error instead.
    """
    previous_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    sys.stderr.flush()
    saved_fd = os.dup(2)
    result, problem = None, None
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            try:
                result = read()
            except Exception as error:  # orbax raises many types (KeyError, ValueError, UnicodeDecodeError...)
                problem = _short(error)
            if problem is not None:
                time.sleep(0.5)
                gc.collect()
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            sys.unraisablehook = previous_hook
        if problem is None:
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
    return result, problem


def _short(error: BaseException) -> str:
    """The root cause of an orbax / TensorStore error in one line."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r' in OCDBT database at local file "[^"]*"', "", text)
    return text if len(text) <= 200 else text[:200] + "..."


def read_meta(manager: ocp.CheckpointManager, update: int) -> dict[str, Any]:
    """The JSON metadata of checkpoint `update`; raises CheckpointError when unreadable."""
    where = pathlib.Path(manager.directory) / str(update)
    restored, problem = _read_quietly(
        lambda: manager.restore(update, args=ocp.args.Composite(meta=ocp.args.JsonRestore())))
    if problem is not None:
        raise CheckpointError(f"checkpoint {where} is unreadable (its metadata: {problem})")
    meta = restored["meta"]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or "fingerprint" not in meta:
        raise CheckpointError(f"checkpoint {where} was not written by this version of mlsh_jax "
                              f"(format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                              f"expected {FORMAT_VERSION})")
    return meta


def restore(manager: ocp.CheckpointManager, update: int, abstract_state) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `update` into `abstract_state` (ShapeDtypeStructs with shardings, e.g.
    `Trainer.abstract_state()`); a checkpoint written on another number of devices or processes is
    laid out anew.

    Returns (state, meta). Raises CheckpointError, naming the checkpoint and what is wrong, when it
    is unreadable, has other shapes, or its contents differ from the fingerprint taken at save time.
    """
    where = pathlib.Path(manager.directory) / str(update)
    meta = read_meta(manager, update)
    expected = [(jax.tree_util.keystr(path), leaf.shape, str(leaf.dtype))
                for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)]
    if len(meta["fingerprint"]) != len(expected):
        raise CheckpointError(f"checkpoint {where} holds a different state structure "
                              f"({len(meta['fingerprint'])} arrays, expected {len(expected)})")
    target = abstract_state  # ShapeDtypeStructs with shardings: each process reads its own shards
    restored, problem = _read_quietly(
        lambda: manager.restore(update, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))))
    if problem is not None:
        raise CheckpointError(f"checkpoint {where} is unreadable: {problem}")
    state = restored["state"]
    for (name, shape, dtype), leaf in zip(expected, jax.tree.leaves(state)):
        if tuple(leaf.shape) != tuple(shape) or str(leaf.dtype) != dtype:
            raise CheckpointError(f"checkpoint {where}: {name} has shape {tuple(leaf.shape)} {leaf.dtype}, "
                                  f"expected {tuple(shape)} {dtype}")
    damaged = [name for (name, _, _), saved, now in zip(expected, meta["fingerprint"], fingerprint(state))
               if saved != now]
    if damaged:
        listed = ", ".join(damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
        raise CheckpointError(f"checkpoint {where} is corrupt: its data differs from what was saved "
                              f"(in {listed})")
    return state, meta


def steps(manager: ocp.CheckpointManager) -> list[int]:
    """Update numbers of the complete checkpoints, oldest first."""
    manager.reload()
    return sorted(manager.all_steps())
