"""What checkpoints cost: size on disk, save and restore time, and the slow-down of a run that saves
every K updates, as a ratio to the same run saving only at its end.

    python -m benchmarks.checkpointing                        # moving bandits, paper and fast presets
    python -m benchmarks.checkpointing --presets paper --every 1 10 50 --updates 100

One trainer per preset is compiled once and shared by all its runs (`train(..., trainer=...)`), so
every timed run is after compile; the first update of each run is left out of its timing. The runs
of one preset are interleaved over `--repeats` rounds so that machine noise hits them alike.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import pathlib
import sys
import tempfile
import time


def _dir_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_saves(trainer, state, directory: pathlib.Path, repeats: int = 5) -> dict:
    """Size of one checkpoint, time to hand it to orbax (blocking part), to finish writing it, and to
    restore and verify it."""
    import jax

    from mlsh_jax import checkpoint

    manager = checkpoint.checkpoint_manager(directory, max_to_keep=repeats)
    blocking, total = [], []
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        checkpoint.save(manager, step, state, trainer.config.to_dict())
        blocking.append(time.perf_counter() - start)
        manager.wait_until_finished()
        total.append(time.perf_counter() - start)
    abstract = jax.eval_shape(trainer.initial_state, jax.random.PRNGKey(0))
    start = time.perf_counter()
    checkpoint.restore(manager, repeats, abstract)
    restore_s = time.perf_counter() - start
    manager.close()
    return {"checkpoint_bytes": _dir_bytes(directory / checkpoint.CHECKPOINT_DIR / str(repeats)),
            "save_blocking_s": min(blocking), "save_total_s": min(total), "restore_and_verify_s": restore_s}


def _loop_seconds(rows) -> float:
    return sum(row["interval_s"] for row in rows[1:])


def measure_overhead(trainer, every: list[int], updates: int, repeats: int, directory: pathlib.Path) -> dict:
    """Seconds per update (after the first) with a checkpoint every K updates, for K in `every` and
    for 0 (a single save at the end), best of `repeats` interleaved rounds."""
    from mlsh_jax.run import train

    best: dict[int, float] = {}
    for round_index in range(repeats):
        for k in [0, *every]:
            config = dataclasses.replace(trainer.config, num_updates=updates, checkpoint_every=k)
            result = train(config, directory / f"k{k}_r{round_index}", trainer=trainer, progress=False,
                           tensorboard=False)
            per_update = _loop_seconds(result.rows) / (updates - 1)
            best[k] = min(best.get(k, float("inf")), per_update)
    return {"seconds_per_update_without": best[0],
            "every": {str(k): {"seconds_per_update": best[k], "ratio_to_without": best[k] / best[0]}
                      for k in every}}


def measure_preset(name: str, every: list[int], updates: int, repeats: int) -> dict:
    import jax

    from experiments.moving_bandits import PRESETS
    from mlsh_jax.trainer import Trainer

    config = PRESETS[name]()
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    state, _ = trainer.update(state)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as tmp:
        saves = measure_saves(trainer, state, pathlib.Path(tmp) / "saves")
        overhead = measure_overhead(trainer, every, updates, repeats, pathlib.Path(tmp))
    return {"preset": name, "num_slots": config.num_slots, "env_steps_per_update": config.env_steps_per_update,
            **saves, **overhead}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "fast"])
    parser.add_argument("--every", nargs="+", type=int, default=[1, 10, 50])
    parser.add_argument("--updates", type=int, default=51)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # brax's import prints a notice to stdout
        import jax

        import mlsh_jax.trainer  # noqa: F401

    report = {"benchmark": "checkpointing", "env": "moving_bandits", "backend": jax.default_backend(),
              "devices": jax.device_count(),
              "presets": [measure_preset(name, args.every, args.updates, args.repeats) for name in args.presets]}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
