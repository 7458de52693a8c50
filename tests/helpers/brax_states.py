"""Rollouts and hand-placed states of the Brax task envs, shared by their tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from envs.brax_body import BodyState


@functools.lru_cache(maxsize=None)
def _jitted_rollout(env, num_steps, actions):
    """One compiled rollout per (env, length, action kind), reused across tasks and keys."""
    @jax.jit
    def run(tasks, key):
        n = jax.tree.leaves(tasks)[0].shape[0]
        reset_key, run_key = jax.random.split(key)
        start = jax.vmap(env.reset)(tasks, jax.random.split(reset_key, n))

        def step(state, step_key):
            action_key, env_key = jax.random.split(step_key)
            act = (jax.random.uniform(action_key, (n, env.action_size), minval=-1, maxval=1)
                   if actions is None else jnp.broadcast_to(jnp.asarray(actions), (n, env.action_size)))
            state = jax.vmap(env.step)(tasks, state, act, jax.random.split(env_key, n))
            return state, (state.obs, state.reward, state.truncated, state.terminated)

        return jax.lax.scan(step, start, jax.random.split(run_key, num_steps))[1]

    return run


def rollout(env, tasks, key, num_steps, actions=None):
    """Jitted rollout of len(tasks) envs for num_steps with random (or one constant, a float) actions.
    Returns (obs [T, n, obs], reward [T, n], truncated [T, n], terminated [T, n])."""
    return _jitted_rollout(env, num_steps, actions)(tasks, key)


@functools.lru_cache(maxsize=None)
def _jitted_state_at(env):
    """One compiled placement per env (run eagerly, the reset and pipeline init of a Brax body are
    hundreds of small programs, each compiled on first use: most of a physics test's time)."""
    def at(task, xy, velocity, height, extra):
        state = env.reset(task, jax.random.PRNGKey(0))
        q, qd = env.start_pose(jax.random.PRNGKey(0), xy=xy)
        q = jnp.where(jnp.isnan(height), q, q.at[2].set(height))
        qd = qd.at[:2].set(velocity)
        extra = state.inner.extra if extra is None else extra
        pipeline = env.pipeline.init(env.task_system(task, extra), q, qd)
        return state.replace(inner=BodyState(pipeline=pipeline, extra=extra), obs=env.observe(pipeline))
    return jax.jit(at)


def state_at(env, task, xy, velocity=(0.0, 0.0), height=None, extra=None):
    """An env state of `task` with the body at `xy` (torso at `height` if given) moving at
    `velocity` (m/s) in x and y; `extra` replaces the task state."""
    return _jitted_state_at(env)(task, jnp.asarray(xy, jnp.float32), jnp.asarray(velocity, jnp.float32),
                                 jnp.float32(jnp.nan if height is None else height), extra)


@functools.lru_cache(maxsize=None)
def jitted_step(env):
    """`jax.jit(env.step)`, compiled once per env for every test that steps it."""
    return jax.jit(env.step)


def drive(env, task, state, num_steps, action):
    """Steps one env `num_steps` times with a constant action; returns (last state, torso x, y [T, 2])."""
    step = jitted_step(env)
    xs = []
    for i in range(num_steps):
        state = step(task, state, action, jax.random.PRNGKey(i))
        xs.append(np.asarray(state.inner.pipeline.x.pos[0, :2]))
    return state, np.stack(xs)


@functools.lru_cache(maxsize=None)
def _jitted_pipeline_at(env):
    def at(system, xy, height, velocity):
        q = jnp.asarray(env.sys.init_q).at[:2].set(xy)
        q = jnp.where(jnp.isnan(height), q, q.at[2].set(height))
        return env.pipeline.init(system, q, jnp.zeros(env.sys.qd_size()).at[:2].set(velocity))
    return jax.jit(at)


def pipeline_at(env, task, xy, height=None, velocity=(0.0, 0.0), extra=None):
    """The physics state of a hand-made pose, compiled once per env: the model's initial pose
    without noise, its root at `xy` (and at `height` if given), moving at `velocity` (m/s in x, y)."""
    system = env.task_system(task) if extra is None else env.task_system(task, extra)
    return _jitted_pipeline_at(env)(system, jnp.asarray(xy, jnp.float32),
                                    jnp.float32(jnp.nan if height is None else height),
                                    jnp.asarray(velocity, jnp.float32))
