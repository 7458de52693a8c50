"""Env steps per second of the MLSH training loop as the task slots are split over more devices and
processes: 1, 2 and 4 devices of one process (forced host devices on a CPU:
`--xla_force_host_platform_device_count`), and a 2-process cluster on localhost (jax.distributed,
one device each, gloo collectives). Ratios are to the 1-device figure of the same invocation.

    python -m benchmarks.scaling                          # moving bandits, `fast` preset (100 slots)
    python -m benchmarks.scaling --slots 400 --updates 5

Each layout runs in fresh processes (so compile time is its own) and is timed after two warm-up
updates. On a CPU the forced devices share the same cores, so this measures the cost of the sharded
program (collectives, duplicated sub-policy work), not a speed-up; on GPUs or TPUs each device adds
compute. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def measure_here(num_slots: int, updates: int) -> dict:
    """Runs in a worker process: warm-up, then `updates` timed updates of the moving-bandits loop."""
    import dataclasses

    import jax

    from experiments.moving_bandits import PRESETS
    from mlsh_jax.trainer import Trainer

    config = dataclasses.replace(PRESETS["fast"](), num_slots=num_slots)
    trainer = Trainer(config)
    start = time.perf_counter()
    state = trainer.init(jax.random.PRNGKey(0))
    for _ in range(2):  # the first compiles; the second makes sure no second compile is pending
        state, metrics = trainer.update(state)
    jax.block_until_ready(metrics)
    compile_and_warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(updates):
        state, metrics = trainer.update(state)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    return {"devices": jax.device_count(), "processes": jax.process_count(), "num_slots": num_slots,
            "env_steps_per_s": updates * config.env_steps_per_update / seconds,
            "seconds_per_update": seconds / updates, "compile_and_warmup_s": compile_and_warmup_s}


def _worker_command(num_slots: int, updates: int, cluster: tuple[str, int, int] | None = None) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.scaling", "--worker", "--slots", str(num_slots),
               "--updates", str(updates)]
    if cluster:
        address, count, index = cluster
        command += ["--coordinator", address, "--num-processes", str(count), "--process-id", str(index)]
    return command


def _result(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def run_devices(num_devices: int, num_slots: int, updates: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
    done = subprocess.run(_worker_command(num_slots, updates), env=env, capture_output=True, text=True, check=True)
    return _result(done.stdout)


def run_processes(num_processes: int, num_slots: int, updates: int) -> dict:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        address = f"localhost:{sock.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    workers = [subprocess.Popen(_worker_command(num_slots, updates, (address, num_processes, i)), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(num_processes)]
    outputs = [worker.communicate() for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        if worker.returncode != 0:
            raise RuntimeError(f"cluster worker failed: {stderr[-2000:]}")
    return _result(outputs[0][0])  # every process times the same collective loop; report process 0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--processes", type=int, nargs="*", default=[2])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.coordinator:
            from mlsh_jax.distributed import initialize_cluster
            initialize_cluster(args.coordinator, args.num_processes, args.process_id)
        print(json.dumps(measure_here(args.slots, args.updates)), flush=True)
        return {}

    rows = [dict(run_devices(n, args.slots, args.updates), layout=f"{n} device(s), 1 process") for n in args.devices]
    rows += [dict(run_processes(n, args.slots, args.updates), layout=f"{n} processes, 1 device each")
             for n in args.processes]
    base = next((r["env_steps_per_s"] for r in rows if r["devices"] == 1), None)
    for row in rows:
        row["ratio_to_1_device"] = row["env_steps_per_s"] / base if base else None
    report = {"benchmark": "scaling", "env": "moving_bandits", "preset": "fast", "num_slots": args.slots,
              "timed_updates": args.updates, "cpu_count": os.cpu_count(), "rows": rows}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
