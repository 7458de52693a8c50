"""Learner parity: this project's flat learner against `brax.training.agents.ppo.train` on the same
env objects and env-step budget.

    python -m benchmarks.learner_parity --envs brax_ant --steps 10000000 --seeds 0,1,2
    python -m benchmarks.learner_parity --envs ant_maze,ant_twowalk --learners ours --recipe locomotion
    python -m benchmarks.learner_parity --envs humanoid_walk --steps 20000000

Each (env, learner, seed) is one job with its own folder under `--out` (default
runs/learner_parity): `curve.json` (every evaluation: env steps, deterministic return, metres walked
per 1000 steps, wall seconds) and, for this project's learner, checkpoints from which an interrupted
job continues where it stopped (`--out` again; a job of ours saved under other settings is refused
with exit 2, naming them). A finished job is never rerun; brax's trainer cannot resume, so an
interrupted job of brax's starts again (the curve it reached is kept beside). The summary JSON (printed, and written to `--summary`)
holds every job's curve, its final figures and its env steps/s during training.

Both learners use Brax's PPO notebook settings, scaled to `--envs-count` env copies: for the ant
unroll 5, 4 epochs x 16 minibatches, entropy 1e-2, reward scaling 10; for the humanoid
(`humanoid_walk`, every task walks) unroll 10, 8 epochs x 32 minibatches, entropy 1e-3, reward
scaling 0.1. Ours collects as many samples per update as brax's trainer per iteration (windows of
20 steps per env copy for the ant, 160 for the humanoid), so both take minibatches of the same size
and as many SGD steps per sample. Both gamma 0.97, lambda 0.95, clip 0.3, observation
normalisation, policy 4x32 / value 5x256 swish, tanh-squashed Gaussian. Ours is the shared-policy path through `Trainer` with the `locomotion`
recipe (`--recipe paper`: the paper's 2x64 tanh networks and PPO settings on the same layout).
Evaluation is the same function for both: `--eval-episodes` greedy episodes of the env (fresh tasks)
with its own reward (without the shaping of `--alive-bonus` / `--end-when-fallen` / `--reward-direction`, which change only
what is trained on), return until the episode ends, distance from the start to where it ended.

Needs JAX < 0.10 for brax's trainer (it calls `jax.device_put_replicated`); on newer JAX its jobs are
reported as skipped, never faked.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs import make_env
from mlsh_jax import checkpoint
from mlsh_jax.config import MAZE_REWARD_DIRECTIONS, MLSHConfig, NetworkConfig, PPOConfig, TaskShaping
from mlsh_jax.files import write_json
from mlsh_jax.networks import ActorCritic
from mlsh_jax.resume import format_changes, refused_changes
from mlsh_jax.trainer import Trainer

LEARNERS = ("ours", "brax")
RECIPES = ("locomotion", "paper")
PARITY_ENVS = ("brax_ant", "ant_maze", "ant_twowalk", "humanoid_walk")
OUR_DECISION = 20          # the config's macro_duration (no master acts in the shared policy); divides every window


@dataclasses.dataclass(frozen=True)
class NotebookSettings:
    """Brax's PPO notebook settings of one body: its PPO settings (`ppo`: `PPOConfig.locomotion(body)`,
    epochs x minibatches per update and the entropy coefficient included), `unroll` (brax's unroll
    length), `reward_scaling`, and brax's `batch_size` as a fraction of the env copies
    (`batch_fraction`)."""

    body: str
    unroll: int
    reward_scaling: float
    batch_fraction: float

    @property
    def ppo(self) -> PPOConfig:
        return PPOConfig.locomotion(self.body)

    @property
    def window(self) -> int:
        """Env steps per env copy in one of brax's training iterations (`batch_size x unroll x
        num_minibatches` samples over the env copies): ours collects as many per update, so both take
        the same minibatches (`batch_size x unroll` samples) and the same SGD steps per sample."""
        return round(self.batch_fraction * self.unroll * self.ppo.num_minibatches)


ANT_SETTINGS = NotebookSettings(body="ant", unroll=5, reward_scaling=10.0, batch_fraction=0.25)
HUMANOID_SETTINGS = NotebookSettings(body="humanoid", unroll=10, reward_scaling=0.1, batch_fraction=0.5)
SETTINGS = {"brax_ant": ANT_SETTINGS, "ant_maze": ANT_SETTINGS, "ant_twowalk": ANT_SETTINGS,
            "humanoid_walk": HUMANOID_SETTINGS}


def task_updates(window: int) -> int:
    """A slot keeps its task (and its env copies run on, episode after episode) for this many updates,
    about 5 episodes of 1000 steps; slots start staggered, so some slot draws a new task every few
    updates. (A lifetime of one update would reset every env copy at every update: with 20-step
    windows no copy would ever get past its episode's 20th step.)"""
    return max(1, 5 * 1000 // window)


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of the benchmark; `variant` names what differs from the locomotion recipe on
    the env's own reward ("" for nothing: `_paper`, `_alive1_fall`, ...)."""

    env: str
    learner: str
    seed: int
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.env}_{self.learner}_s{self.seed}{self.variant}"


# ---- the shared evaluation ---------------------------------------------------------------------
def torso_xy(env, inner) -> jax.Array:
    """The torso's (x, y) [..., 2] of an env's inner state (brax's ant or this project's bodies)."""
    if hasattr(inner, "pipeline_state"):
        return inner.pipeline_state.x.pos[..., 0, :2]
    return inner.pipeline.x.pos[..., 0, :2]


def evaluate(env, policy, key: jax.Array, num_episodes: int) -> dict:
    """Greedy episodes of `env` with `policy(raw obs [n, obs]) -> env actions [n, A]`, each on a
    fresh task. Returns scalars (jittable): the mean return (until each episode's first end), the
    mean distance from the start to where the episode ended per 1000 steps, the mean length."""
    task_key, reset_key = jax.random.split(key)
    tasks = jax.vmap(env.sample_task)(jax.random.split(task_key, num_episodes))
    start = jax.vmap(env.reset)(tasks, jax.random.split(reset_key, num_episodes))
    start_xy = torso_xy(env, start.inner)

    def step(carry, step_key):
        state, ret, alive, last_xy, steps = carry
        nxt = jax.vmap(env.step)(tasks, state, policy(state.obs), jax.random.split(step_key, num_episodes))
        ret = ret + jnp.where(alive, nxt.reward, 0.0)
        last_xy = jnp.where(alive[:, None], torso_xy(env, nxt.inner), last_xy)
        steps = steps + alive
        alive = alive & ~(nxt.terminated | nxt.truncated)
        return (nxt, ret, alive, last_xy, steps), None

    zeros = jnp.zeros((num_episodes,))
    carry = (start, zeros, jnp.ones((num_episodes,), bool), start_xy, zeros)
    (_, ret, _, last_xy, steps), _ = jax.lax.scan(step, carry, jax.random.split(key, env.episode_length))
    distance = jnp.linalg.norm(last_xy - start_xy, axis=-1) * 1000.0 / jnp.maximum(steps, 1.0)
    return {"return": jnp.mean(ret), "metres_per_1000_steps": jnp.mean(distance), "episode_steps": jnp.mean(steps)}


# ---- this project's learner --------------------------------------------------------------------
def our_config(env: str, recipe: str, seed: int, num_envs: int, steps: int,
               shaping: TaskShaping = TaskShaping()) -> MLSHConfig:
    """The shared-policy configuration of the benchmark: `num_envs` env copies in slots of 128,
    windows of brax's samples per training iteration (`NotebookSettings.window`: 20 steps for the
    ant, 160 for the humanoid), `steps` env steps in all, trained on the env with `shaping`."""
    envs_per_slot = min(num_envs, 128)
    num_slots = num_envs // envs_per_slot
    notebook = SETTINGS[env]
    window = notebook.window
    per_update = num_envs * window
    if recipe == "locomotion":
        sub = notebook.ppo
        network, reward_scale = NetworkConfig.locomotion(), notebook.reward_scaling
    else:
        sub, network = PPOConfig(learning_rate=3e-4, num_minibatches=notebook.ppo.num_minibatches), NetworkConfig()
        reward_scale = 1.0
    return MLSHConfig(
        env=env, episode_length=1000, algorithm="shared", num_subpolicies=1, macro_duration=OUR_DECISION,
        warmup_updates=0, joint_updates=task_updates(window), num_slots=num_slots, steps_per_slot=envs_per_slot * window,
        envs_per_slot=envs_per_slot, num_updates=max(1, steps // per_update), reward_scale=reward_scale,
        sub=sub, sub_network=network, master_network=network, subpolicy_observation="full", seed=seed, shaping=shaping,
        checkpoint_every=0, keep_checkpoints=1,
    ).validate()


def our_policy(trainer: Trainer, state):
    """Greedy env actions [n, A] of the shared policy for raw observations [n, obs]."""
    params = jax.tree.map(lambda x: x[0], state.subs.params)
    stats = Trainer.subpolicy_stats(state)
    distribution = trainer.sub_model.distribution

    def policy(obs):
        dist_params = trainer.sub_model.apply(params, trainer.subpolicy_input(stats, obs), method=ActorCritic.dist_params)
        return distribution.to_env(distribution.mode(dist_params))
    return policy


def run_ours(job: Job, folder: pathlib.Path, args) -> dict:
    """Trains (or continues) this project's learner, evaluating every `args.eval_every` env steps."""
    config = our_config(job.env, args.recipe, job.seed, args.envs_count, args.steps, args.shaping)
    trainer = Trainer(config)
    judge = make_env(job.env)              # evaluated on the env's own reward, without shaping
    manager = checkpoint.checkpoint_manager(folder, max_to_keep=1)
    curve = _read_curve(folder)
    done = checkpoint.steps(manager)
    state = trainer.init(jax.random.PRNGKey(job.seed))
    if done:
        state, _ = checkpoint.restore(manager, done[-1], trainer.abstract_state())
    update = done[-1] if done else 0
    per_update = config.env_steps_per_update
    every = max(1, args.eval_every // per_update)
    evaluate_jit = jax.jit(lambda st, key: evaluate(judge, our_policy(trainer, st), key, args.eval_episodes))
    train_seconds = sum(point.get("train_s", 0.0) for point in curve)
    if not curve:
        curve.append(_point(0, evaluate_jit(state, jax.random.PRNGKey(10_000)), 0.0, 0.0))
    state, _ = trainer.update(state)            # compile (not timed; the update is redone below)
    if done:
        state, _ = checkpoint.restore(manager, done[-1], trainer.abstract_state())
    else:
        state = trainer.init(jax.random.PRNGKey(job.seed))
    while update < config.num_updates:
        chunk = min(every, config.num_updates - update)
        start = time.perf_counter()
        for _ in range(chunk):
            state, metrics = trainer.update(state)
        jax.block_until_ready(state)
        seconds = time.perf_counter() - start
        update += chunk
        train_seconds += seconds
        result = evaluate_jit(state, jax.random.PRNGKey(10_000 + update))
        curve.append(_point(update * per_update, result, seconds, chunk * per_update / seconds))
        checkpoint.save(manager, update, state, config.to_dict())
        manager.wait_until_finished()
        write_json(folder / "curve.json", curve)
        print(f"  {job.name}: {update * per_update:,} steps, return {curve[-1]['return']:.1f}, "
              f"{curve[-1]['metres_per_1000_steps']:.1f} m / 1000 steps, {curve[-1]['env_steps_per_s']:,.0f} steps/s",
              flush=True)
    manager.close()
    return {"config": config.to_dict(), "curve": curve}


def stored_config(folder: pathlib.Path) -> MLSHConfig | None:
    """The configuration a job of ours in `folder` was trained with: its finished result's, else its
    newest checkpoint's; None for a job that has not saved anything."""
    finished = folder / "result.json"
    if finished.is_file():
        stored = json.loads(finished.read_text()).get("config")
        return None if stored is None else MLSHConfig.from_dict(stored)
    if not (folder / checkpoint.CHECKPOINT_DIR).is_dir():
        return None
    manager = checkpoint.checkpoint_manager(folder, create=False)
    done = checkpoint.steps(manager)
    return MLSHConfig.from_dict(checkpoint.read_meta(manager, done[-1])["config"]) if done else None


def changed_jobs(jobs: list, args) -> list[str]:
    """One line per job of ours whose folder holds a run made under other settings than today's
    (`our_config`): such a job is neither continued nor reported as today's; it names the fields."""
    problems = []
    for job in jobs:
        folder = args.out / job.name
        stored = stored_config(folder) if job.learner == "ours" else None
        if stored is None:
            continue
        today = our_config(job.env, args.recipe, job.seed, args.envs_count, args.steps, args.shaping)
        changes = refused_changes(stored, today)
        if changes:
            problems.append(f"{folder} was trained with other settings ({format_changes(changes)}): move it aside or "
                            "use another --out to train this job under today's settings")
    return problems


def _point(env_steps: int, result: dict, train_s: float, steps_per_s: float) -> dict:
    result = {k: float(v) for k, v in result.items()}
    return {"env_steps": env_steps, **result, "train_s": train_s, "env_steps_per_s": steps_per_s}


def _read_curve(folder: pathlib.Path) -> list:
    path = folder / "curve.json"
    return json.loads(path.read_text()) if path.is_file() else []


# ---- brax's PPO ------------------------------------------------------------------------------
def brax_available() -> str | None:
    """None when brax's PPO trainer runs on this JAX, else why not."""
    if hasattr(jax, "device_put_replicated"):
        return None
    return f"brax.training's PPO needs jax.device_put_replicated, which JAX {jax.__version__} no longer has"


def _keep_interrupted_curve(folder: pathlib.Path) -> None:
    """Brax's trainer cannot resume, so a job it left unfinished starts again; the curve the
    interrupted attempt reached is kept beside it (`curve.interrupted-N.json`), never overwritten."""
    curve = folder / "curve.json"
    if not curve.is_file():
        return
    attempt = 1
    while (folder / f"curve.interrupted-{attempt}.json").exists():
        attempt += 1
    kept = curve.rename(folder / f"curve.interrupted-{attempt}.json")
    print(f"  {folder.name}: brax's trainer cannot resume; the interrupted attempt's curve is kept as {kept}",
          flush=True)


def run_brax(job: Job, folder: pathlib.Path, args) -> dict:
    """Brax's PPO with its notebook's settings for the body on the same env object, evaluated by
    `evaluate`."""
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    from envs.adapters import to_brax

    env, judge = make_env(job.env, **args.shaping.env_kwargs()), make_env(job.env)
    _keep_interrupted_curve(folder)
    curve, clock = [], {"mark": time.perf_counter(), "last": 0}

    def on_params(current_step, make_policy, params):
        train_s = time.perf_counter() - clock["mark"] if curve else 0.0    # since the last evaluation ended
        steps_done = int(current_step)
        act = make_policy(params, deterministic=True)
        policy = lambda obs: act(obs, jax.random.PRNGKey(0))[0]
        result = jax.jit(lambda key: evaluate(judge, policy, key, args.eval_episodes))(
            jax.random.PRNGKey(10_000 + steps_done))
        rate = (steps_done - clock["last"]) / train_s if train_s > 0 else 0.0
        curve.append(_point(steps_done, result, train_s, rate))
        write_json(folder / "curve.json", curve)    # brax's trainer cannot resume: keep what an interrupted run reached
        clock["last"], clock["mark"] = steps_done, time.perf_counter()
        print(f"  {job.name}: {steps_done:,} steps, return {curve[-1]['return']:.1f}, "
              f"{curve[-1]['metres_per_1000_steps']:.1f} m / 1000 steps, {rate:,.0f} steps/s", flush=True)

    notebook = SETTINGS[job.env]
    settings = notebook.ppo
    ppo.train(
        environment=to_brax(env), num_timesteps=args.steps, num_evals=max(2, args.steps // args.eval_every + 1),
        num_envs=args.envs_count, episode_length=1000, unroll_length=notebook.unroll,
        batch_size=int(args.envs_count * notebook.batch_fraction), num_minibatches=settings.num_minibatches,
        num_updates_per_batch=settings.epochs, learning_rate=settings.learning_rate,
        entropy_cost=settings.entropy_coef, discounting=settings.discount, gae_lambda=settings.gae_lambda,
        clipping_epsilon=settings.clip_eps, reward_scaling=notebook.reward_scaling,
        normalize_observations=True, num_eval_envs=16, seed=job.seed, policy_params_fn=on_params,
        run_evals=False,
        network_factory=functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=(32,) * 4,
                                          value_hidden_layer_sizes=(256,) * 5),
    )
    write_json(folder / "curve.json", curve)
    return {"curve": curve}


# ---- the command line --------------------------------------------------------------------------
def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learner_parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="brax_ant", help=f"comma-separated, of {', '.join(PARITY_ENVS)}")
    parser.add_argument("--learners", default="ours,brax", help="comma-separated, of ours, brax")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=10_000_000, help="env steps per job")
    parser.add_argument("--eval-every", type=int, default=1_000_000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=16)
    parser.add_argument("--envs-count", type=int, default=1024, help="env copies (a multiple of 128)")
    parser.add_argument("--recipe", default="locomotion", help=f"ours: {' or '.join(RECIPES)}")
    parser.add_argument("--alive-bonus", type=float, default=0.0,
                        help="train with this bonus per upright step (ant tasks; evaluation is without)")
    parser.add_argument("--end-when-fallen", action="store_true",
                        help="train with episodes that end when the ant is not upright (ant tasks)")
    parser.add_argument("--reward-direction", default="goal",
                        help="ant_maze: train paid toward the goal (goal, the original) or along the corridor (path)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/learner_parity"))
    parser.add_argument("--summary", type=pathlib.Path, help="also write the summary JSON here")
    args = parser.parse_args(argv)
    args.envs, args.learners = args.envs.split(","), args.learners.split(",")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.exit(2, f"--seeds must be comma-separated integers, got {args.seeds!r}\n")
    problems = [f"--envs: unknown {e!r} (use {', '.join(PARITY_ENVS)})" for e in args.envs if e not in PARITY_ENVS]
    problems += [f"--learners: unknown {x!r} (use ours, brax)" for x in args.learners if x not in LEARNERS]
    if args.recipe not in RECIPES:
        problems.append(f"--recipe: unknown {args.recipe!r} (use {' or '.join(RECIPES)})")
    if args.envs_count < 128 or args.envs_count % 128:
        problems.append(f"--envs-count must be a positive multiple of 128, got {args.envs_count}")
    window = max((SETTINGS[env].window for env in args.envs if env in SETTINGS), default=0)
    if args.steps < args.envs_count * window or args.eval_every < 1 or args.eval_episodes < 1:
        problems.append(f"--steps must cover one update of ours (envs-count x {window}), "
                        "--eval-every and --eval-episodes >= 1")
    args.shaping = TaskShaping(alive_bonus=args.alive_bonus, end_when_fallen=args.end_when_fallen,
                               reward_direction=args.reward_direction)
    if not args.shaping.is_default and any(not env.startswith("ant_") for env in args.envs):
        problems.append("--alive-bonus / --end-when-fallen apply to the ant tasks only (brax_ant has its own)")
    if args.reward_direction not in MAZE_REWARD_DIRECTIONS:
        problems.append(f"--reward-direction: unknown {args.reward_direction!r} (use {' or '.join(MAZE_REWARD_DIRECTIONS)})")
    elif args.reward_direction != "goal" and args.envs != ["ant_maze"]:
        problems.append("--reward-direction path applies to ant_maze only (use --envs ant_maze)")
    if not 0 <= args.alive_bonus <= 100:
        problems.append(f"--alive-bonus must be in [0, 100], got {args.alive_bonus}")
    if problems:
        parser.exit(2, "\n".join(problems) + "\n")
    return args


def variant(args, learner: str) -> str:
    """The job-name suffix of the settings that differ from the locomotion recipe on the env's reward."""
    recipe = "_paper" if learner == "ours" and args.recipe == "paper" else ""
    bonus = f"_alive{args.alive_bonus:g}" if args.alive_bonus else ""
    path = "_path" if args.reward_direction == "path" else ""
    return recipe + bonus + ("_fall" if args.end_when_fallen else "") + path


def summarise(job: Job, result: dict) -> dict:
    curve = result["curve"]
    rates = [p["env_steps_per_s"] for p in curve[1:] if p["env_steps_per_s"] > 0]
    return {"env": job.env, "learner": job.learner, "seed": job.seed, "variant": job.variant, "curve": curve,
            "final_return": curve[-1]["return"], "final_metres_per_1000_steps": curve[-1]["metres_per_1000_steps"],
            "env_steps": curve[-1]["env_steps"],
            "training_env_steps_per_s": float(np.median(rates)) if rates else None}


def main(argv=None) -> dict:
    args = parse(sys.argv[1:] if argv is None else argv)
    jobs = [Job(env, learner, seed, variant(args, learner))
            for env in args.envs for seed in args.seeds for learner in args.learners]
    problems = changed_jobs(jobs, args)
    if problems:                       # before anything compiles or is written
        print("\n".join(problems), file=sys.stderr)
        raise SystemExit(2)
    report = {"jax": jax.__version__, "devices": [str(d) for d in jax.devices()], "recipe": args.recipe,
              "envs_count": args.envs_count, "steps": args.steps, "jobs": [], "skipped": []}
    for job in jobs:
        folder = args.out / job.name
        folder.mkdir(parents=True, exist_ok=True)
        finished = folder / "result.json"
        if finished.is_file():
            result = json.loads(finished.read_text())
        elif job.learner == "brax" and brax_available() is not None:
            report["skipped"].append({"job": job.name, "why": brax_available()})
            continue
        else:
            print(f"{job.name}: training {args.steps:,} env steps", flush=True)
            result = (run_ours if job.learner == "ours" else run_brax)(job, folder, args)
            write_json(finished, result)
        report["jobs"].append(summarise(job, result))
    print(json.dumps({k: v for k, v in report.items() if k != "jobs"} |
                     {"jobs": [{k: v for k, v in j.items() if k != "curve"} for j in report["jobs"]]}, indent=1))
    if args.summary:
        write_json(args.summary, report)
    return report


if __name__ == "__main__":
    main()
