"""One process of a training job, for the multi-device and multi-process tests.

    python tests/helpers/cluster_train.py OUT UPDATES [--resume] [--coordinator H:P --num-processes N --process-id I]

Trains the moving-bandits smoke preset for UPDATES updates into OUT (or resumes it) and writes this
process's final sub-policy parameters to OUT/subs_process<I>.npz.
"""

import argparse
import dataclasses
import pathlib

import jax
import numpy as np

from mlsh_jax.distributed import initialize_cluster, to_host

parser = argparse.ArgumentParser()
parser.add_argument("out", type=pathlib.Path)
parser.add_argument("updates", type=int)
parser.add_argument("--resume", action="store_true")
parser.add_argument("--coordinator")
parser.add_argument("--num-processes", type=int)
parser.add_argument("--process-id", type=int)
args = parser.parse_args()
if args.coordinator:
    initialize_cluster(args.coordinator, args.num_processes, args.process_id, timeout_s=60)

from experiments.moving_bandits import PRESETS  # noqa: E402  (after the cluster is formed)
from mlsh_jax.run import train  # noqa: E402

config = dataclasses.replace(PRESETS["smoke"](), num_updates=args.updates)
result = train(config, args.out, resume=args.resume, progress=False, tensorboard=False)
leaves = [np.asarray(x) for x in jax.tree.leaves(to_host(result.state.subs.params))]
np.savez(args.out / f"subs_process{jax.process_index()}.npz", *leaves)
print("devices", jax.device_count(), "processes", jax.process_count())
if jax.process_count() == 1:
    # Episodes from a state laid out over every device: the evaluation helpers take host copies.
    from mlsh_jax.evaluation import run_hierarchy, run_subpolicy  # noqa: E402

    # Tasks made on one device, as a caller would, next to a state replicated over all of them.
    state, key = result.state, jax.random.PRNGKey(0)
    tasks = jax.device_put(jax.device_get(state.slots.task), jax.devices()[0])
    trajectory, active = run_hierarchy(result.trainer, state, state.slots.master.params, tasks, key)
    alone = run_subpolicy(result.trainer, state, 0, tasks, key)
    finite = all(np.isfinite(np.asarray(x)).all() for x in (trajectory.obs, alone.obs))
    print("evaluated", int(active.shape[1]), "episodes, finite", finite)
