"""One training job over many devices and hosts, on JAX's own machinery.

The task-slot axis is split over a mesh of every device of every process (axes "hosts" x
"devices"): each device holds its share of the slots (their masters, optimizer states, tasks, phases
and env copies); the sub-policies, observation statistics, PRNG key and counter are replicated.
`Trainer.update` is one jitted SPMD program over that mesh, so XLA inserts the collectives: the
joint-phase slots' experience is gathered once per update, and the sub-policy minibatches are split
over the devices of each process (data-parallel gradient steps within a host, none of the many small
per-minibatch collectives crossing the network); every process applies the same update.

Multi-host: `initialize_cluster` wraps `jax.distributed.initialize` (auto-detected on SLURM, Open MPI
and Cloud TPU; explicit coordinator address, process count and id elsewhere). Every process runs the
same program and steps the slots on its own devices; only process 0 writes logs and metrics;
checkpoints are written and read by all processes through orbax.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import re
import socket
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mlsh_jax.config import ConfigError

HOST_AXIS, DEVICE_AXIS = "hosts", "devices"
SLOT_AXIS = (HOST_AXIS, DEVICE_AXIS)  # task slots are split over both mesh axes


class ClusterError(RuntimeError):
    """The cluster could not be formed (unreachable coordinator, inconsistent process counts...)."""


def slot_mesh(devices: list | None = None) -> Mesh:
    """The mesh of `devices` (default: every device of every process), shaped [processes, devices
    per process] with axes ("hosts", "devices"). Task slots are split over all of it; the
    sub-policy minibatches only over "devices", so gradient steps never wait for the network."""
    devices = sorted(jax.devices() if devices is None else devices, key=lambda d: (d.process_index, d.id))
    processes = sorted({d.process_index for d in devices})
    grid = np.asarray(devices, dtype=object).reshape(len(processes), -1)
    return Mesh(grid, (HOST_AXIS, DEVICE_AXIS))


def check_slots_divide(num_slots: int, mesh: Mesh) -> None:
    """Raises ConfigError, saying how to fix it, unless the slots split evenly over the mesh."""
    devices = mesh.size
    if num_slots % devices:
        lower, upper = (num_slots // devices) * devices, (num_slots // devices + 1) * devices
        options = f"{lower} or {upper}" if lower > 0 else f"{upper}"
        raise ConfigError(f"num_slots={num_slots} does not divide evenly over the {devices} devices "
                         f"({jax.process_count()} process(es)); use a multiple of {devices}, e.g. "
                         f"--set num_slots={options}")


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def slot_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (slot) axis is split over the whole mesh."""
    return NamedSharding(mesh, PartitionSpec(SLOT_AXIS))


def sample_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Axis `axis` split over the devices of each process, replicated across processes."""
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), DEVICE_AXIS))


def state_shardings(state, slots_field: str = "slots", mesh: Mesh | None = None):
    """Shardings for a train state pytree: leaves under the attribute `slots_field` split along their
    leading axis, every other leaf replicated. `state` may hold arrays or ShapeDtypeStructs."""
    mesh = mesh or slot_mesh()

    def sharding_for(path, leaf):
        in_slots = bool(path) and getattr(path[0], "name", None) == slots_field
        return slot_sharded(mesh) if in_slots and len(leaf.shape) >= 1 else replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding_for, state)


def with_shardings(abstract, shardings):
    """ShapeDtypeStructs of `abstract` carrying `shardings` (targets for orbax restores)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def to_host(tree) -> Any:
    """Host copy of a pytree of replicated (or single-process) arrays, on any process."""
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any of them (a collective in multi-process runs)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def barrier(name: str) -> None:
    """Waits until every process got here (no-op with a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


# How the runtime's errors start (an absl status code), e.g. "UNKNOWN: Gloo all-reduce failed: ... Connection
# reset by peer" when the peer of a CPU collective died (measured); "UNAVAILABLE:", "INTERNAL:" from NCCL or gRPC.
_RUNTIME_STATUS = re.compile(r"^(UNKNOWN|UNAVAILABLE|INTERNAL|ABORTED|CANCELLED|DEADLINE_EXCEEDED|"
                             r"FAILED_PRECONDITION|DATA_LOSS): ")


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error`, raised while training, means a collective across processes failed: in a
    multi-process run, an error of the XLA runtime (its message starts with a status code; JAX
    raises them as RuntimeError or ValueError). A computation that is merely wrong fails the same
    way on a single process, where this is always False."""
    return (jax.process_count() > 1 and isinstance(error, (RuntimeError, ValueError))
            and bool(_RUNTIME_STATUS.match(str(error))))


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (its type's name when empty), at most `limit` characters."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def is_main_process() -> bool:
    """Process 0 writes the run's logs, metrics and summary."""
    return jax.process_index() == 0


# Distributions that put an accelerator build of jaxlib in place, and the platform each one serves.
ACCELERATOR_PACKAGES = {"jax-cuda12-plugin": "gpu", "jax-cuda13-plugin": "gpu", "jax-cuda12-pjrt": "gpu",
                        "jax-cuda13-pjrt": "gpu", "libtpu": "tpu", "libtpu-nightly": "tpu"}


def describe_devices() -> str:
    """Where this process computes, e.g. "cpu (1 x cpu)" or "gpu (8 x NVIDIA H200, 2 processes)":
    the platform, then the count of each device kind over every process of the job."""
    devices = jax.devices()
    kinds = collections.Counter(device.device_kind for device in devices)
    parts = [f"{count} x {kind}" for kind, count in kinds.items()]
    if jax.process_count() > 1:
        parts.append(f"{jax.process_count()} processes")
    return f"{devices[0].platform} ({', '.join(parts)})"


def installed_accelerator_builds() -> dict[str, str]:
    """{distribution: platform} of the accelerator builds of jaxlib installed (see
    `ACCELERATOR_PACKAGES`); empty for a CPU-only install."""
    found = {}
    for name, platform in ACCELERATOR_PACKAGES.items():
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[name] = platform
    return found


def unused_accelerator_warning() -> str | None:
    """A warning when a GPU or TPU build of jaxlib is installed but JAX computes on the CPU (a driver
    that does not load, a machine without the device), None otherwise; also None when the user chose
    the CPU with JAX_PLATFORMS."""
    builds = installed_accelerator_builds()
    if not builds or jax.default_backend() != "cpu" or os.environ.get("JAX_PLATFORMS", "").strip() == "cpu":
        return None
    platforms = "/".join(sorted(set(builds.values())))
    return (f"warning: a {platforms} build of JAX is installed ({', '.join(sorted(builds))}) but JAX sees only "
            "the CPU, so this runs on the CPU. Check that the device is visible (nvidia-smi on NVIDIA GPUs) "
            "and that the installed jax and its plugin have the same version; set JAX_PLATFORMS=cpu to "
            "train on the CPU on purpose.")


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Waits until something listens at `address` (HOST:PORT). JAX's own client aborts the whole
    process when it cannot reach the coordinator, so we check first and fail with a message."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--coordinator must be HOST:PORT, got {address!r}")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ClusterError(f"could not join the coordinator at {address} within {timeout_s} s: "
                                   f"{error.strerror or error} (is process 0 running and reachable at that "
                                   "address?)") from None
            time.sleep(0.5)


def initialize_cluster(coordinator: str | None = None, num_processes: int | None = None,
                       process_id: int | None = None, timeout_s: int = 120) -> None:
    """`jax.distributed.initialize` with a bounded wait and one clear error.

    With no arguments the cluster is detected from the environment (SLURM, Open MPI, Cloud TPU).
    On CPU, collectives between processes go through gloo. Must run before any other JAX call.
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ClusterError("--coordinator, --num-processes and --process-id go together (or pass none of them "
                           "on SLURM / Open MPI / Cloud TPU, where they are detected)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ClusterError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    if coordinator is not None and process_id != 0:
        _wait_for_coordinator(coordinator, timeout_s)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_s)
    except Exception as error:  # jax raises RuntimeError / ValueError / XlaRuntimeError here
        where = f"the coordinator at {coordinator}" if coordinator else "the cluster's coordinator"
        raise ClusterError(f"could not join {where} within {timeout_s} s: {first_line(error)} "
                           "(is process 0 running and reachable, and do all processes agree on "
                           "--num-processes?)") from None
    _check_cluster_size(num_processes)


def _check_cluster_size(requested: int | None) -> None:
    """Every process checks that all of them were started with the cluster size the coordinator set
    (the coordinator's count wins silently otherwise), so they all stop together on a mismatch."""
    size = jax.process_count()
    sizes = multihost_utils.process_allgather(np.asarray(size if requested is None else requested, np.int32))
    if np.any(sizes != size):
        raise ClusterError(f"the processes disagree on the cluster size: --num-processes per process "
                           f"{np.asarray(sizes).tolist()}, but the coordinator formed a cluster of {size}")
