"""Would one program over a seed axis make the moving-bandits studies faster? Times the update of a
study variant for S seeds one after another against one `jax.vmap` of the update over the S seeds'
stacked states, side by side in one process (interleaved, so that other load on the machine hits
both alike).

    python -m benchmarks.seed_axis                                  # shared policy, 3 seeds, 100 slots
    python -m benchmarks.seed_axis --variant "MLSH, same timescale (N=1)"
    python -m benchmarks.seed_axis --preset smoke --slots 2 --repeats 1   # seconds, a check

Prints one JSON document: seconds per round (S updates) each way, after two warm-up rounds, and
`seed_axis_speedup` = best sequential round / best seed-axis round (above 1: the seed axis is faster).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from experiments.moving_bandits_studies import STUDIES, variant_configs
from mlsh_jax.trainer import Trainer


def _timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure(variant: str, seeds: int, slots: int, preset: str, repeats: int) -> dict:
    """Seconds per round of `seeds` updates of `variant` (an ablations-study label), both ways."""
    configs = [config for label, _, config in variant_configs("ablations", seeds, 60, slots, preset) if label == variant]
    trainer = Trainer(configs[0])
    states = [trainer.initial_state(jax.random.PRNGKey(config.seed)) for config in configs]
    one_seed = jax.jit(trainer.update_step)
    seed_axis = jax.jit(jax.vmap(trainer.update_step))
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    def sequential_round():
        nonlocal states
        states = [one_seed(state)[0] for state in states]
        return states

    def seed_axis_round():
        nonlocal stacked
        stacked = seed_axis(stacked)[0]
        return stacked

    for _ in range(2):   # a state from reset and one from step can compile apart: warm both up
        _timed(sequential_round)
        _timed(seed_axis_round)
    sequential, vmapped = [], []
    for _ in range(repeats):
        sequential.append(_timed(sequential_round))
        vmapped.append(_timed(seed_axis_round))
    return {"variant": variant, "seeds": seeds, "slots": slots, "preset": preset,
            "env_steps_per_update": configs[0].env_steps_per_update,
            "sequential_s_per_round": [round(t, 3) for t in sequential],
            "seed_axis_s_per_round": [round(t, 3) for t in vmapped],
            "seed_axis_speedup": round(min(sequential) / min(vmapped), 3),
            "devices": f"{jax.device_count()} x {jax.devices()[0].platform}"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="shared policy", choices=list(STUDIES["ablations"]))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.seeds, args.slots, args.repeats) < 1:
        parser.error("--seeds, --slots and --repeats must be >= 1")
    result = measure(args.variant, args.seeds, args.slots, args.preset, args.repeats)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
