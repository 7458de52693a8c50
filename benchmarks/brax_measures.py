"""Brax-family measurements for `python -m benchmarks.throughput --family ant|humanoid` (one per
subprocess).

At B task slots (10 env copies each, the paper's D = 2000 steps per slot per update):
- `brax_ant`, `brax_humanoid`: Brax's own env (`brax.envs`, spring backend as ours), B x 10 copies,
  uniform random actions;
- `ant_twowalk`, `ant_maze`, `ant_obstacles`, `humanoid_walkcrawl`, `humanoid_course`: our task
  envs, same copies and backend; `humanoid_walkcrawl_mjx_contacts`: walk / crawl with Brax's own
  contacts (MJX's colliders) in place of the closed-form ones;
- `mlsh_ant_maze`, `mlsh_humanoid_walkcrawl`: one MLSH update on that env (B x 2000 env steps);
- `brax_ppo_ant_maze`: `brax.training.agents.ppo` training a flat policy on ant_maze with the same
  envs (B x 10), unroll 200, 10 epochs and 16 minibatches (brax needs an even split; MLSH uses 15),
  2x64 networks; its own `training/sps` of a steady (post-compile) epoch.
"""

from __future__ import annotations

import time

ENV_STEPS_PER_CALL = 100
ENVS_PER_SLOT = 10
FAMILIES = {
    "ant": ("brax_ant", "ant_twowalk", "ant_maze", "ant_obstacles", "mlsh_ant_maze", "brax_ppo_ant_maze"),
    "humanoid": ("brax_humanoid", "humanoid_walkcrawl", "humanoid_walkcrawl_mjx_contacts", "humanoid_course",
                 "mlsh_humanoid_walkcrawl"),
}
KINDS = FAMILIES["ant"] + FAMILIES["humanoid"]
TASK_ENVS = ("ant_twowalk", "ant_maze", "ant_obstacles", "humanoid_walkcrawl", "humanoid_course")
# Variants of a task env measured under their own name: (env name, its keyword arguments).
ENV_VARIANTS = {"humanoid_walkcrawl_mjx_contacts": ("humanoid_walkcrawl", {"contacts": "mjx"})}
# (experiment module, its settings function's arguments) of each MLSH measurement.
MLSH_ENVS = {"mlsh_ant_maze": ("ant_maze", 3), "mlsh_humanoid_walkcrawl": ("humanoid_walkcrawl", 2)}


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(first call = compile + run, mean of `repeats` calls after a second warm-up call), seconds."""
    import jax
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return first, (time.perf_counter() - start) / repeats


def _scan_random_actions(step_all, state, num_envs: int, action_size: int):
    """A jitted call: ENV_STEPS_PER_CALL steps of all envs with uniform random actions in [-1, 1]."""
    import jax

    @jax.jit
    def run(state, key):
        def body(state, step_key):
            actions = jax.random.uniform(step_key, (num_envs, action_size), minval=-1.0, maxval=1.0)
            return step_all(state, actions, step_key), None
        return jax.lax.scan(body, state, jax.random.split(key, ENV_STEPS_PER_CALL))[0]

    holder = {"state": state, "key": jax.random.PRNGKey(1)}

    def call():
        holder["key"], key = jax.random.split(holder["key"])
        holder["state"] = run(holder["state"], key)
        return holder["state"]

    return call


def brax_env_call(name: str, num_slots: int):
    """(call, env steps per call) for Brax's own env `name` ("ant", "humanoid"), spring backend,
    B x 10 copies."""
    import jax
    from brax import envs as brax_envs
    num_envs = num_slots * ENVS_PER_SLOT
    env = brax_envs.get_environment(name, backend="spring")
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), num_envs))
    call = _scan_random_actions(lambda s, a, k: jax.vmap(env.step)(s, a), state, num_envs, env.action_size)
    return call, num_envs * ENV_STEPS_PER_CALL


def task_env_call(name: str, num_slots: int):
    """(call, env steps per call) for our env `name` (or a variant of ENV_VARIANTS): B tasks x 10
    copies each (vmapped over tasks and copies)."""
    import jax
    from envs import make_env
    num_envs = num_slots * ENVS_PER_SLOT
    env_name, kwargs = ENV_VARIANTS.get(name, (name, {}))
    env = make_env(env_name, **kwargs)
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(2), num_slots))
    tasks = jax.tree.map(lambda x: x.repeat(ENVS_PER_SLOT, axis=0), tasks)
    state = jax.jit(jax.vmap(env.reset))(tasks, keys)
    call = _scan_random_actions(
        lambda s, a, k: jax.vmap(env.step)(tasks, s, a, jax.random.split(k, num_envs)), state, num_envs,
        env.action_size)
    return call, num_envs * ENV_STEPS_PER_CALL


def env_call(kind: str, num_slots: int):
    """(call, env steps per call) of an env measurement: Brax's own env or one of ours."""
    if kind.startswith("brax_") and kind != "brax_ppo_ant_maze":
        return brax_env_call(kind.removeprefix("brax_"), num_slots)
    if kind in TASK_ENVS or kind in ENV_VARIANTS:
        return task_env_call(kind, num_slots)
    raise ValueError(f"{kind!r} is not an env measurement")


def measure_env(kind: str, num_slots: int, repeats: int) -> dict:
    """An env alone, timed after its warm-up calls."""
    call, steps = env_call(kind, num_slots)
    first, per_call = _timed(call, repeats)
    return {"steps_per_call": steps, "first_call_s": first, "per_call_s": per_call}


def measure_interleaved(kinds, num_slots: int, rounds: int) -> dict:
    """Env measurements in one process, timed in turn for `rounds` rounds (one call each per round),
    so that a slow spell of a shared machine falls on all of them: {kind: env steps/s}. Compiles all
    first (two warm-up calls each)."""
    import jax
    calls = {kind: env_call(kind, num_slots) for kind in kinds}
    for call, _ in calls.values():
        jax.block_until_ready(call())
        jax.block_until_ready(call())
    seconds = dict.fromkeys(kinds, 0.0)
    for _ in range(rounds):
        for kind, (call, _) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            seconds[kind] += time.perf_counter() - start
    return {kind: rounds * calls[kind][1] / seconds[kind] for kind in kinds}


def measure_mlsh(kind: str, num_slots: int, repeats: int) -> dict:
    """One MLSH update (paper settings of the env, B slots)."""
    from experiments.brax_family import paper_settings
    from mlsh_jax import Trainer
    env_name, num_subpolicies = MLSH_ENVS[kind]
    return time_updates(Trainer(paper_settings(env_name, num_subpolicies, num_slots=num_slots)), repeats)


def time_updates(trainer, repeats: int) -> dict:
    """Times `trainer.update` from a fresh state: steps per call, first call, mean later call."""
    import jax
    holder = {"state": trainer.init(jax.random.PRNGKey(0))}

    def call():
        holder["state"], metrics = trainer.update(holder["state"])
        return metrics

    first, per_call = _timed(call, repeats)
    return {"steps_per_call": trainer.config.env_steps_per_update, "first_call_s": first, "per_call_s": per_call}


# brax.training's PPO trainer (brax 0.14) calls jax.device_put_replicated, which JAX 0.10 removed.
BRAX_PPO_NEEDS = "JAX < 0.10 (brax.training's PPO calls jax.device_put_replicated, removed in JAX 0.10)"


def brax_ppo_unavailable() -> str | None:
    """Why the brax-PPO measurement cannot run with the installed JAX, or None when it can."""
    import jax
    if hasattr(jax, "device_put_replicated"):
        return None
    return (f"needs {BRAX_PPO_NEEDS}; installed JAX {jax.__version__}. Measure it in a separate "
            "environment with pip install 'jax<0.10' 'jaxlib<0.10'")


def measure_brax_ppo(num_slots: int, repeats: int) -> dict:
    """brax PPO on ant_maze (a new maze task per episode), matched batch: B x 10 envs x 200 steps.
    Returns {"skipped": reason} on a JAX that brax's PPO trainer does not run on."""
    reason = brax_ppo_unavailable()
    if reason is not None:
        return {"skipped": reason}
    import functools
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from envs import make_env
    from envs.adapters import to_brax
    num_envs = num_slots * ENVS_PER_SLOT
    unroll, minibatches = 200, 16
    if num_envs % minibatches:
        raise ValueError(f"brax PPO needs the {num_envs} envs to split into {minibatches} minibatches: "
                         "use a multiple of 8 task slots")
    steps_per_training_step = num_envs * unroll
    epochs_measured = 1 + repeats
    sps, times = [], []
    start = time.perf_counter()

    def progress(step, metrics):
        times.append(time.perf_counter() - start)
        if "training/sps" in metrics:
            sps.append(float(metrics["training/sps"]))

    ppo.train(
        environment=to_brax(make_env("ant_maze")), num_timesteps=epochs_measured * steps_per_training_step,
        num_evals=epochs_measured + 1, num_envs=num_envs, episode_length=1000, unroll_length=unroll,
        batch_size=num_envs // minibatches,
        num_minibatches=minibatches, num_updates_per_batch=10, learning_rate=3e-4, entropy_cost=0.0,
        discounting=0.99, gae_lambda=0.98, clipping_epsilon=0.2, normalize_observations=True,
        num_eval_envs=16, seed=0, progress_fn=progress,
        network_factory=functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=(64, 64),
                                          value_hidden_layer_sizes=(64, 64)),
    )
    if len(sps) < 2:
        raise RuntimeError(f"brax PPO reported {len(sps)} training epochs; need 2 or more")
    steady = sps[1:]
    per_call = steps_per_training_step / (sum(steady) / len(steady))
    return {"steps_per_call": steps_per_training_step, "first_call_s": steps_per_training_step / sps[0],
            "per_call_s": per_call, "note": "sps from brax's training/sps (training epochs only, no evals)"}


def measure(kind: str, num_slots: int, repeats: int) -> dict:
    if kind in MLSH_ENVS:
        return measure_mlsh(kind, num_slots, repeats)
    if kind == "brax_ppo_ant_maze":
        return measure_brax_ppo(num_slots, repeats)
    return measure_env(kind, num_slots, repeats)
