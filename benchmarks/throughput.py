"""Env steps per second of the moving-bandits env alone, the MLSH training loop, our flat shared-policy
PPO and rejax's flat PPO on the same env with matched batch, epochs and minibatches, at several
task-slot counts B.

MLSH trains its sub-policies only on the slots in their joint phase (U / (W + U) of the data) and its
masters on macro steps, so per env step it does less gradient work than a flat PPO that trains on
every step; the shared-policy row is the like-for-like comparison of the PPO machinery with rejax.

    python -m benchmarks.throughput                  # B = 10, 100, 1000; prints one JSON document
    python -m benchmarks.throughput --slots 10 100 --repeats 3
    python -m benchmarks.throughput --family ant --slots 16   # the ant family (benchmarks/brax_measures.py)
    python -m benchmarks.throughput --family humanoid --slots 16 --interleaved 10   # + envs timed in turn

Each measurement runs in a fresh subprocess (so compile time and peak memory are its own), after
warm-up calls: the first call compiles, timed calls follow. rejax is an optional extra
(`pip install -e '.[bench]'`); without it that column is reported as missing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks import brax_measures

KINDS = ("env", "mlsh", "shared", "rejax")


def _config(num_slots: int):
    """The paper's moving-bandits settings, with 16 sub-policy minibatches instead of 15 so that
    rejax (which needs the batch to split evenly) runs the same minibatch count."""
    import dataclasses
    from mlsh_jax.config import MLSHConfig
    config = MLSHConfig(num_slots=num_slots)
    return dataclasses.replace(config, sub=dataclasses.replace(config.sub, num_minibatches=16))


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(seconds of the first call = compile + run, mean seconds of `repeats` further calls)."""
    import jax
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    jax.block_until_ready(fn())  # a second warm-up: a state from reset and from step may differ
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return first, (time.perf_counter() - start) / repeats


def measure_env(num_slots: int, repeats: int) -> dict:
    """The env alone: vmap over B slots x E copies, scan over T steps, random actions, auto-reset."""
    import jax
    from envs import auto_reset_step, make_env
    config = _config(num_slots)
    env = make_env(config.env, episode_length=config.episode_length)
    E, T = config.envs_per_slot, config.rollout_length
    step_envs = jax.vmap(jax.vmap(auto_reset_step, in_axes=(None, None, 0, 0, 0)), in_axes=(None, 0, 0, 0, 0))

    @jax.jit
    def run(key):
        task_key, reset_key, run_key = jax.random.split(key, 3)
        tasks = jax.vmap(env.sample_task)(jax.random.split(task_key, num_slots))
        states = jax.vmap(lambda t, k: jax.vmap(env.reset, in_axes=(None, 0))(t, jax.random.split(k, E)))(
            tasks, jax.random.split(reset_key, num_slots))

        def step(states, key):
            action_key, env_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_slots, E), 0, env.action_size)
            out = step_envs(env, tasks, states, actions, jax.random.split(env_key, (num_slots, E)))
            return out.state, out.reward.sum()

        return jax.lax.scan(step, states, jax.random.split(run_key, T))[1].sum()

    key = jax.random.PRNGKey(0)
    first, per_call = _timed(lambda: run(key), repeats)
    return {"steps_per_call": num_slots * E * T, "first_call_s": first, "per_call_s": per_call}


def measure_mlsh(num_slots: int, repeats: int, algorithm: str = "mlsh") -> dict:
    """One update of B slots (D = 2000 steps each) per call: MLSH, or with `algorithm="shared"` our
    flat shared-policy PPO, which like rejax trains on all B x D steps (a like-for-like flat peer)."""
    import dataclasses
    from mlsh_jax import Trainer
    config = _config(num_slots)
    if algorithm == "shared":
        config = dataclasses.replace(config, algorithm="shared", num_subpolicies=1)
    return brax_measures.time_updates(Trainer(config), repeats)


def measure_rejax(num_slots: int, repeats: int) -> dict:
    """rejax PPO on the same env (a new task each episode), B x E envs x T steps per iteration, the
    sub-policies' epochs and minibatches, 2x64 tanh nets, observation normalisation."""
    import jax
    import jax.numpy as jnp
    from rejax import PPO
    from envs import make_env
    from envs.adapters import to_gymnax
    config = _config(num_slots)
    env = to_gymnax(make_env(config.env, episode_length=config.episode_length))
    steps_per_iteration = num_slots * config.steps_per_slot
    algo = PPO.create(
        env=env, env_params=env.default_params, num_envs=num_slots * config.envs_per_slot,
        num_steps=config.rollout_length, num_epochs=config.sub.epochs,
        num_minibatches=config.sub.num_minibatches, total_timesteps=steps_per_iteration,
        eval_freq=steps_per_iteration, learning_rate=config.sub.learning_rate,
        gamma=config.sub.discount, gae_lambda=config.sub.gae_lambda, clip_eps=config.sub.clip_eps,
        ent_coef=0.0, vf_coef=1.0, normalize_observations=True, skip_initial_evaluation=True,
        agent_kwargs={"activation": "tanh", "hidden_layer_sizes": tuple(config.sub_network.policy_hidden_sizes)},
    )
    # One training iteration per call, continuing from the previous state, with no evaluation
    # rollouts (rejax runs ceil(eval_freq / iteration steps) iterations between evaluations).
    algo = algo.replace(eval_callback=lambda algo, ts, rng: jnp.zeros(()))
    train = jax.jit(lambda ts: algo.train(train_state=ts)[0])
    holder = {"state": jax.jit(algo.init_state)(jax.random.PRNGKey(0))}

    def call():
        holder["state"] = train(holder["state"])
        return holder["state"]

    first, per_call = _timed(call, repeats)
    return {"steps_per_call": steps_per_iteration, "first_call_s": first, "per_call_s": per_call}


def measure_one(kind: str, num_slots: int, repeats: int) -> dict:
    """Runs one measurement in this process; adds steps/s and peak memory (host RSS, and device
    memory where the device reports it)."""
    if kind in brax_measures.KINDS:
        result = brax_measures.measure(kind, num_slots, repeats)
        if "skipped" in result:
            return result
    else:
        measure = {"env": measure_env, "mlsh": measure_mlsh, "rejax": measure_rejax,
                   "shared": lambda b, r: measure_mlsh(b, r, algorithm="shared")}[kind]
        result = measure(num_slots, repeats)
    result["env_steps_per_s"] = result["steps_per_call"] / result["per_call_s"]
    result["compile_s_approx"] = max(0.0, result["first_call_s"] - result["per_call_s"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_device_memory_mb"] = stats["peak_bytes_in_use"] / 2**20
    return result


def _ratios(rate: dict) -> dict:
    """Side-by-side ratios of the rates measured in one invocation."""
    pairs = [("mlsh", "rejax"), ("shared", "rejax"), ("mlsh", "env"),
             ("ant_twowalk", "brax_ant"), ("ant_maze", "brax_ant"), ("ant_obstacles", "brax_ant"),
             ("mlsh_ant_maze", "ant_maze"), ("mlsh_ant_maze", "brax_ppo_ant_maze"),
             ("humanoid_walkcrawl", "brax_humanoid"), ("humanoid_course", "brax_humanoid"),
             ("humanoid_walkcrawl_mjx_contacts", "brax_humanoid"),
             ("humanoid_walkcrawl", "humanoid_walkcrawl_mjx_contacts"),
             ("mlsh_humanoid_walkcrawl", "humanoid_walkcrawl")]
    return {f"{a}_over_{b}": rate[a] / rate[b] for a, b in pairs if rate.get(a) and rate.get(b)}


def run_in_subprocess(kind: str, num_slots: int, repeats: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.throughput", "--one", kind, "--slots", str(num_slots),
               "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": " | ".join((done.stderr.strip().splitlines() or ["failed"])[-4:])}
    return json.loads(lines[-1])


def run_interleaved(kinds, num_slots: int, rounds: int) -> dict:
    """The envs `kinds` timed in turn in one fresh process: their env steps/s and ratios."""
    command = [sys.executable, "-m", "benchmarks.throughput", "--interleaved-only", "--interleaved", str(rounds),
               "--slots", str(num_slots), "--kinds", *kinds]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": " | ".join((done.stderr.strip().splitlines() or ["failed"])[-4:])}
    rate = json.loads(lines[-1])
    return {"rounds": rounds, "env_steps_per_s": rate, **_ratios(rate)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[10, 100, 1000], help="task-slot counts B")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--family", choices=("bandits",) + tuple(brax_measures.FAMILIES), default="bandits",
                        help="moving bandits (MLSH vs rejax), the Brax ant family or the humanoid family")
    parser.add_argument("--kinds", nargs="+", choices=KINDS + brax_measures.KINDS,
                        help="measurements to run (default: all of the family)")
    parser.add_argument("--interleaved", type=int, default=0, metavar="ROUNDS",
                        help="also time the family's envs in one process, one call each in turn for ROUNDS "
                             "rounds (ratios that a shared machine's slow spells do not skew; Brax families)")
    parser.add_argument("--one", choices=KINDS + brax_measures.KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--interleaved-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kinds is None:
        args.kinds = list(brax_measures.FAMILIES.get(args.family, KINDS))
    if args.interleaved < 0:
        parser.error(f"--interleaved takes a number of rounds >= 1 (or 0: off), got {args.interleaved}")
    if args.one:
        print(json.dumps(measure_one(args.one, args.slots[0], args.repeats)))
        return {}
    env_kinds = [k for k in args.kinds if k in brax_measures.KINDS and k not in brax_measures.MLSH_ENVS
                 and k != "brax_ppo_ant_maze"]
    if args.interleaved_only:
        print(json.dumps(brax_measures.measure_interleaved(env_kinds, args.slots[0], args.interleaved)))
        return {}
    import platform
    import jax
    report = {"device": jax.devices()[0].device_kind, "cpu_count": __import__("os").cpu_count(),
              "machine": platform.machine(), "jax": jax.__version__, "results": {}}
    for num_slots in args.slots:
        row = {kind: run_in_subprocess(kind, num_slots, args.repeats) for kind in args.kinds}
        rate = {k: v.get("env_steps_per_s") for k, v in row.items()}
        row.update(_ratios(rate))
        if args.interleaved and len(env_kinds) > 1:
            row["interleaved"] = run_interleaved(env_kinds, num_slots, args.interleaved)
        report["results"][f"B={num_slots}"] = row
        print(f"# B={num_slots}: " + ", ".join(f"{k} {v:,.0f} steps/s" for k, v in rate.items() if v),
              file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
