"""The env contract (jit, vmap over tasks, deterministic per key, finite, truncation not
termination) and moving-bandits semantics on hand-made trajectories."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import ENV_REGISTRY, auto_reset_step, env_class, make_env
from envs.moving_bandits import MovingBandits, MovingBanditsInner, MovingBanditsTask

STAY, RIGHT, LEFT, UP, DOWN = range(5)


def random_episodes(env, key, num_tasks):
    """Runs a random policy for one episode on `num_tasks` tasks at once (jit + vmap over tasks)."""
    task_key, reset_key, run_key = jax.random.split(key, 3)
    tasks = jax.vmap(env.sample_task)(jax.random.split(task_key, num_tasks))
    states = jax.vmap(env.reset)(tasks, jax.random.split(reset_key, num_tasks))

    def step(states, key):
        action_key, env_key = jax.random.split(key)
        actions = jax.random.randint(action_key, (num_tasks,), 0, env.action_size)
        states = jax.vmap(env.step)(tasks, states, actions, jax.random.split(env_key, num_tasks))
        return states, states

    _, trajectory = jax.lax.scan(step, states, jax.random.split(run_key, env.episode_length))
    return tasks, trajectory


# The Brax ant envs (continuous actions) have their own contract tests in tests/test_ant_envs.py.
DISCRETE_ENVS = sorted(name for name in ENV_REGISTRY if not env_class(name).continuous_actions)


@pytest.mark.parametrize("name", DISCRETE_ENVS)
def test_contract_jit_vmap_finite_deterministic(name):
    chex.clear_trace_counter()
    env = make_env(name)
    run = jax.jit(chex.assert_max_traces(random_episodes, n=1), static_argnums=(0, 2))
    tasks, trajectory = run(env, jax.random.PRNGKey(0), 16)
    _, again = run(env, jax.random.PRNGKey(0), 16)
    _, other = run(env, jax.random.PRNGKey(1), 16)
    chex.assert_trees_all_equal(trajectory, again)
    assert not np.array_equal(np.asarray(trajectory.obs), np.asarray(other.obs))
    chex.assert_tree_all_finite(trajectory.obs)
    chex.assert_shape(trajectory.obs, (env.episode_length, 16, env.observation_size))
    # The time limit is a truncation at the last step only, never a termination.
    truncated = np.asarray(trajectory.truncated)
    assert truncated[-1].all() and not truncated[:-1].any()
    assert not np.asarray(trajectory.terminated).any()


def test_tasks_vary():
    env = MovingBandits()
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(0), 200))
    assert set(np.asarray(tasks.correct_goal).tolist()) == {0, 1}


def _placed(env, goals, correct):
    """A reset state with hand-placed goals."""
    task = MovingBanditsTask(correct_goal=jnp.int32(correct))
    state = env.reset(task, jax.random.PRNGKey(0))
    inner = MovingBanditsInner(position=state.inner.position, goals=jnp.asarray(goals, jnp.float32))
    return task, state.replace(inner=inner, obs=env.observe(inner))


def test_reward_only_near_the_correct_goal():
    env = MovingBandits()
    # Agent starts at (200, 200); goal 0 at (300, 200) (100 right), goal 1 at (100, 200).
    task, state = _placed(env, [[300.0, 200.0], [100.0, 200.0]], correct=0)
    rewards = []
    for _ in range(5):
        state = env.step(task, state, RIGHT, jax.random.PRNGKey(0))
        rewards.append(float(state.reward))
    # Positions 220, 240, 260, 280, 300: distance 80, 60, 40, 20, 0 -> within 50 from the 3rd step.
    assert rewards == [0.0, 0.0, 1.0, 1.0, 1.0]
    # The same walk pays nothing when the other goal is the correct one.
    task_1, state = _placed(env, [[300.0, 200.0], [100.0, 200.0]], correct=1)
    for _ in range(5):
        state = env.step(task_1, state, RIGHT, jax.random.PRNGKey(0))
        assert float(state.reward) == 0.0


def test_actions_move_twenty_units_and_observation_is_scaled():
    env = MovingBandits()
    task, state = _placed(env, [[0.0, 0.0], [400.0, 400.0]], correct=0)
    moves = {STAY: (0, 0), RIGHT: (20, 0), LEFT: (-20, 0), UP: (0, 20), DOWN: (0, -20)}
    for action, (dx, dy) in moves.items():
        after = env.step(task, state, action, jax.random.PRNGKey(0))
        np.testing.assert_allclose(after.inner.position, [200 + dx, 200 + dy])
        np.testing.assert_allclose(after.obs, np.array([200 + dx, 200 + dy, 0, 0, 400, 400]) / 400)


def test_goals_are_redrawn_at_every_reset_and_agent_starts_at_centre():
    env = MovingBandits()
    task = MovingBanditsTask(correct_goal=jnp.int32(0))
    a = env.reset(task, jax.random.PRNGKey(0))
    b = env.reset(task, jax.random.PRNGKey(1))
    assert not np.allclose(a.inner.goals, b.inner.goals)
    np.testing.assert_allclose(a.inner.position, [200.0, 200.0])
    assert (np.asarray(a.inner.goals) >= 0).all() and (np.asarray(a.inner.goals) <= 400).all()


def test_auto_reset_keeps_final_observation_and_restarts():
    env = MovingBandits(episode_length=2)
    task, state = _placed(env, [[0.0, 0.0], [400.0, 400.0]], correct=0)
    out = auto_reset_step(env, task, state, RIGHT, jax.random.PRNGKey(0))
    assert not bool(out.truncated)
    out = auto_reset_step(env, task, out.state, RIGHT, jax.random.PRNGKey(1))
    assert bool(out.truncated) and not bool(out.terminated)
    np.testing.assert_allclose(out.final_obs[:2], np.array([240.0, 200.0]) / 400)
    assert int(out.state.time) == 0
    np.testing.assert_allclose(out.state.inner.position, [200.0, 200.0])


def test_gymnax_adapter_runs_a_flat_episode():
    from envs.adapters import to_gymnax
    flat = to_gymnax(MovingBandits())
    params = flat.default_params
    obs, state = flat.reset(jax.random.PRNGKey(0), params)
    assert obs.shape == (6,) and flat.action_space(params).n == 5
    dones = []
    for i in range(50):
        obs, state, reward, done, info = flat.step(jax.random.PRNGKey(i), state, RIGHT, params)
        dones.append(bool(done))
    assert dones == [False] * 49 + [True] and bool(info["truncated"])


def test_brax_adapter_reports_time_limit_as_truncation_through_brax_wrappers():
    from brax.envs.wrappers.training import wrap
    from envs.adapters import to_brax
    env = wrap(to_brax(MovingBandits(episode_length=10)), episode_length=10)
    state = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 3))
    step = jax.jit(env.step)
    right = jnp.tile(jax.nn.one_hot(RIGHT, 5), (3, 1))
    for t in range(10):
        state = step(state, right)
    assert state.obs.shape == (3, 6)
    np.testing.assert_array_equal(state.info["truncation"], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(state.done, [1.0, 1.0, 1.0])  # the episode wrapper ends the episode
