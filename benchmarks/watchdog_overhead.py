"""What the stall watchdog costs per update: the same runs with and without it, side by side.

    python -m benchmarks.watchdog_overhead                       # moving bandits smoke preset, 2 x 300 updates each
    python -m benchmarks.watchdog_overhead --preset fast --updates 50

One trainer is compiled once and shared by every run (`train(..., trainer=...)`); the runs with and
without the watchdog alternate (`--rounds` pairs) so that machine noise hits both alike. The first
update of each run is left out; a run's time per update is the median of its other updates'
`interval_s`. The smoke preset's updates take milliseconds, so a fixed cost per update shows most
there. Also timed: one `StallWatchdog.enter` call (the loop makes 3 per update). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
import tempfile
import time


def median_update_s(rows) -> float:
    """The median `interval_s` of a run's updates after its first."""
    return statistics.median(row["interval_s"] for row in rows[1:])


def enter_call_s(calls: int = 100_000) -> float:
    """Seconds per `StallWatchdog.enter` call, the loop's cost of the watchdog (its thread aside)."""
    from mlsh_jax.faults import StallWatchdog

    with tempfile.TemporaryDirectory() as directory:
        watch = StallWatchdog(None, pathlib.Path(directory) / "stacks.txt", total_updates=calls)
        start = time.perf_counter()
        for i in range(calls):
            watch.enter(i, "rollout and update")
        seconds = (time.perf_counter() - start) / calls
        watch.close()
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke", help="moving-bandits preset (default smoke)")
    parser.add_argument("--updates", type=int, default=300, help="updates per run (default 300)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, with and without (default 2)")
    args = parser.parse_args(argv)

    import jax

    from experiments.moving_bandits import PRESETS
    from mlsh_jax.distributed import describe_devices
    from mlsh_jax.run import train
    from mlsh_jax.trainer import Trainer

    config = dataclasses.replace(PRESETS[args.preset](), num_updates=args.updates, checkpoint_every=0)
    trainer = Trainer(config)
    per_update = {"watchdog": [], "no_watchdog": []}
    with tempfile.TemporaryDirectory() as directory:
        train(config, pathlib.Path(directory) / "compile", trainer=trainer, progress=False, tensorboard=False)
        for round_index in range(args.rounds):
            for name in per_update:
                result = train(config, pathlib.Path(directory) / f"{name}_{round_index}", trainer=trainer,
                               progress=False, tensorboard=False, watchdog=name == "watchdog")
                per_update[name].append(median_update_s(result.rows))
    with_s, without_s = (statistics.median(per_update[name]) for name in ("watchdog", "no_watchdog"))
    report = {
        "what": "median seconds per update of the same runs with and without the stall watchdog",
        "device": describe_devices(), "jax": jax.__version__, "preset": args.preset,
        "num_slots": config.num_slots, "updates_per_run": args.updates, "rounds": args.rounds,
        "update_s_per_run": per_update,
        "update_s": {"watchdog": with_s, "no_watchdog": without_s},
        "ratio_watchdog_to_none": with_s / without_s,
        "spread_between_runs_without": max(per_update["no_watchdog"]) / min(per_update["no_watchdog"]),
        "enter_call_us": enter_call_s() * 1e6,
        "enter_calls_per_update": 3,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
