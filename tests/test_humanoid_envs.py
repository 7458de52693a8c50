"""The Brax humanoid task envs: contract (jit, vmap over tasks, finite, deterministic, truncation)
and physics facts (the ceiling stops a standing body, walk ends on a fall and crawl does not, the
course turns its objective at x > 25)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import make_env
from envs.brax_body import geom_names
from envs.humanoid import (CRAWL, TURN_X, WALK, CourseExtra, HumanoidCourse, HumanoidWalk, HumanoidWalkCrawl,
                           WalkCrawlTask, torso_height)
from tests.helpers.brax_states import drive, jitted_step, pipeline_at, rollout, state_at


@pytest.fixture(scope="module")
def walkcrawl():
    return HumanoidWalkCrawl()


def _task(objective):
    return WalkCrawlTask(objective=jnp.asarray(objective, jnp.int32))


@pytest.mark.parametrize("name", ["humanoid_walkcrawl", "humanoid_course"])
def test_episode_is_finite_deterministic_and_truncates(name):
    env = make_env(name, episode_length=25)
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(0), 4))
    obs, reward, truncated, terminated = rollout(env, tasks, jax.random.PRNGKey(1), 25)
    assert obs.shape == (25, 4, 246) and env.subpolicy_observation_size == 244
    assert env.continuous_actions and env.action_size == 17
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    # Every copy either fell (walking) or hit the time limit exactly at the last step.
    assert not np.asarray(truncated[:-1]).any()
    assert (np.asarray(truncated[-1]) | np.asarray(terminated).any(axis=0)).all()
    again = rollout(env, tasks, jax.random.PRNGKey(1), 25)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(again[0]))
    other = rollout(env, tasks, jax.random.PRNGKey(2), 25)
    assert not np.allclose(np.asarray(obs), np.asarray(other[0]))


def test_both_objectives_vmap_in_one_program_with_the_ceiling_by_task():
    env = make_env("humanoid_walkcrawl", episode_length=25)   # the test above's program: loads from the cache
    tasks = _task(jnp.array([WALK, CRAWL, WALK, CRAWL]))
    ceiling = geom_names(env.sys).index("ceiling")
    z = np.asarray(jax.vmap(lambda t: env.task_system(t).geom_pos[ceiling, 2])(tasks))
    assert z[0] < 0 < 1.0 < z[1]                    # parked under the floor / in place, bottom at 1.0
    obs, _, _, _ = rollout(env, tasks, jax.random.PRNGKey(0), 25)
    assert obs.shape == (25, 4, 246) and np.isfinite(np.asarray(obs)).all()


def _head_ceiling_distance(env, task, state):
    """Signed distance between head and ceiling among the task's contacts at `state` (< 0: they touch)."""
    from brax import contact as brax_contact
    names = geom_names(env.sys)
    head, ceiling = names.index("head"), names.index("ceiling")
    contact = jax.jit(lambda t, x: brax_contact.get(env.task_system(t), x))(task, state.inner.pipeline.x)
    pairs = np.stack([np.asarray(contact.geom1), np.asarray(contact.geom2)], axis=-1)
    index = [i for i, pair in enumerate(pairs.tolist()) if sorted(pair) == sorted([head, ceiling])]
    assert len(index) == 1, "head-ceiling must be a contact pair"
    return float(np.asarray(contact.dist)[index[0]])


def test_standing_humanoid_cannot_pass_under_the_ceiling(walkcrawl):
    # Standing in front of the ceiling (it spans x in [-23.5, -0.5]), pushed backwards at 5 m/s.
    crawl, walk = _task(CRAWL), _task(WALK)
    _, stopped = drive(walkcrawl, crawl, state_at(walkcrawl, crawl, (1.0, 0.0), (-5.0, 0.0)), 60, jnp.zeros(17))
    _, free = drive(walkcrawl, walk, state_at(walkcrawl, walk, (1.0, 0.0), (-5.0, 0.0)), 60, jnp.zeros(17))
    assert free[:, 0].min() < -1.5, free[:, 0].min()           # no ceiling: the same push carries it under
    assert stopped[:, 0].min() > -0.7, stopped[:, 0].min()      # ceiling: the head stops at its edge
    # Placed standing under the ceiling, its head is inside the box; without the ceiling it is free.
    assert _head_ceiling_distance(walkcrawl, crawl, state_at(walkcrawl, crawl, (-12.0, 0.0))) < 0
    assert _head_ceiling_distance(walkcrawl, walk, state_at(walkcrawl, walk, (-12.0, 0.0))) > 0.5


def test_walk_ends_when_the_torso_drops_below_one_and_crawl_does_not(walkcrawl):
    step = jitted_step(walkcrawl)
    for objective, ends in ((WALK, True), (CRAWL, False)):
        task = _task(objective)
        low = step(task, state_at(walkcrawl, task, (5.0, 0.0), height=0.6), jnp.zeros(17), jax.random.PRNGKey(0))
        assert float(torso_height(low.inner.pipeline)) < 1.0
        assert bool(low.terminated) is ends, objective
        upright = step(task, state_at(walkcrawl, task, (5.0, 0.0)), jnp.zeros(17), jax.random.PRNGKey(0))
        assert not bool(upright.terminated)


# Worked out by hand: the spring backend steps 10 x 0.0015 s per env step.
ENV_STEP_S = 0.015
SHIFT_M = 0.006                      # a pure x translation of the whole body: v = 0.4 m/s
VELOCITY = SHIFT_M / ENV_STEP_S


def _reward(env, task, x0, x1, height=None, action=0.0, extra=()):
    """The reward of a hand-made step: the same pose moved from x0 to x1 (torso at `height`)."""
    velocity = ((x1 - x0) / ENV_STEP_S, 0.0)
    before = pipeline_at(env, task, (x0, 0.0), height, velocity, extra or None)
    after = pipeline_at(env, task, (x1, 0.0), height, velocity, extra or None)
    return float(env.reward(task, before, after, jnp.full((17,), action), extra))


def test_walk_pays_1_25_v_plus_the_alive_bonus_crawl_pays_7_5_v_backward(walkcrawl):
    assert walkcrawl.dt == pytest.approx(ENV_STEP_S)
    walk, crawl = _task(WALK), _task(CRAWL)
    # Upright (torso at 1.001 >= 1): 1.25 v + 5; a step backward gives -1.25 v + 5.
    assert _reward(walkcrawl, walk, 5.0, 5.0 + SHIFT_M, height=1.001) == pytest.approx(1.25 * VELOCITY + 5.0, abs=1e-3)
    assert _reward(walkcrawl, walk, 5.0, 5.0 - SHIFT_M, height=1.001) == pytest.approx(-1.25 * VELOCITY + 5.0, abs=1e-3)
    # Below z = 1 (0.999) the alive bonus is gone.
    assert _reward(walkcrawl, walk, 5.0, 5.0 + SHIFT_M, height=0.999) == pytest.approx(1.25 * VELOCITY, abs=1e-3)
    # Crawling: 7.5 v for moving backward, whatever the height; no alive bonus.
    for height in (0.5, 1.3):
        assert _reward(walkcrawl, crawl, 5.0, 5.0 - SHIFT_M, height=height) == pytest.approx(7.5 * VELOCITY, abs=1e-3)
        assert _reward(walkcrawl, crawl, 5.0, 5.0 + SHIFT_M, height=height) == pytest.approx(-7.5 * VELOCITY, abs=1e-3)
    # Control cost 0.1 |0.4 a|^2 over 17 actuators: a = 0.5 costs 0.1 x 17 x 0.04 = 0.068.
    assert _reward(walkcrawl, crawl, 5.0, 5.0, action=0.5) == pytest.approx(-0.068, abs=1e-4)
    assert _reward(walkcrawl, walk, 5.0, 5.0, height=1.2, action=-0.5) == pytest.approx(5.0 - 0.068, abs=1e-4)


def test_course_pays_the_walk_reward_then_the_crawl_reward():
    env = HumanoidCourse(episode_length=50)
    task = env.sample_task(jax.random.PRNGKey(0))
    walking, crawling = CourseExtra(crawling=jnp.zeros((), bool)), CourseExtra(crawling=jnp.ones((), bool))
    assert _reward(env, task, 5.0, 5.0 + SHIFT_M, height=1.1, extra=walking) == pytest.approx(
        1.25 * VELOCITY + 5.0, abs=1e-3)
    assert _reward(env, task, 5.0, 5.0 - SHIFT_M, height=1.1, extra=crawling) == pytest.approx(7.5 * VELOCITY, abs=1e-3)


def test_kinds_of_task_are_the_objectives(walkcrawl):
    for objective, name in ((WALK, "walk"), (CRAWL, "crawl")):
        kind = int(walkcrawl.task_kind(WalkCrawlTask(objective=jnp.asarray(objective, jnp.int32))))
        assert kind == objective and walkcrawl.task_kinds[kind] == name


def test_course_turns_to_crawling_past_x_25_and_keeps_it():
    env = HumanoidCourse(episode_length=50)
    task = env.sample_task(jax.random.PRNGKey(0))
    step = jitted_step(env)
    before = step(task, state_at(env, task, (TURN_X - 1.0, 0.0)), jnp.zeros(17), jax.random.PRNGKey(0))
    assert not bool(before.inner.extra.crawling)
    past = step(task, state_at(env, task, (TURN_X + 0.5, 0.0)), jnp.zeros(17), jax.random.PRNGKey(0))
    assert bool(past.inner.extra.crawling)
    ceiling = geom_names(env.sys).index("ceiling")
    assert float(env.task_system(task, before.inner.extra).geom_pos[ceiling, 2]) < 0      # parked while walking
    assert float(env.task_system(task, past.inner.extra).geom_pos[ceiling, 2]) > 1.0      # in place once turned
    # Once turned, moving back below x = 25 keeps the crawl objective, and a fall no longer ends it.
    turned = CourseExtra(crawling=jnp.ones((), bool))
    back = step(task, state_at(env, task, (10.0, 0.0), (-1.0, 0.0), height=0.6, extra=turned), jnp.zeros(17),
                jax.random.PRNGKey(0))
    assert bool(back.inner.extra.crawling) and not bool(back.terminated) and float(back.reward) > 1.0
    fallen_walking = step(task, state_at(env, task, (10.0, 0.0), height=0.6), jnp.zeros(17), jax.random.PRNGKey(0))
    assert bool(fallen_walking.terminated)


def test_the_body_observation_is_brax_humanoids_and_the_master_also_sees_x_y(walkcrawl):
    """Reference: brax.envs.humanoid.Humanoid's own observation (q[2:], qd, com inertia, com velocity,
    actuator forces) of the same physics state under the same controls."""
    from brax.envs.humanoid import Humanoid

    reference = Humanoid(backend="spring")
    state = reference.reset(jax.random.PRNGKey(3))
    action = jnp.linspace(-0.9, 0.7, 17)
    state = jax.jit(reference.step)(state, action)         # moving: velocities and forces are not zero
    pipeline = state.pipeline_state
    controls = walkcrawl.to_controls(walkcrawl.sys, action)
    np.testing.assert_allclose(controls, 0.4 * action, atol=1e-6)   # actuator range [-0.4, 0.4]
    expected = np.asarray(reference._get_obs(pipeline, controls))
    assert expected.shape == (244,)
    obs = np.asarray(walkcrawl.observe(pipeline, controls))
    np.testing.assert_allclose(obs[:244], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs[244:], np.asarray(pipeline.q[:2]), atol=1e-6)
    # At a reset the forces are those of zero controls, as in Brax.
    np.testing.assert_allclose(np.asarray(walkcrawl.observe(pipeline))[:244],
                               np.asarray(reference._get_obs(pipeline, jnp.zeros(17))), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(walkcrawl.subpolicy_view(obs), obs[:244])
    # A step of the task env observes the forces of that step's controls.
    task = _task(WALK)
    stepped = jitted_step(walkcrawl)(task, walkcrawl.reset(task, jax.random.PRNGKey(0)), action, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(stepped.obs)[:244],
                               np.asarray(reference._get_obs(stepped.inner.pipeline, controls)), rtol=1e-5, atol=1e-5)


def test_the_walk_only_task_always_walks_without_a_ceiling():
    env = HumanoidWalk()
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(0), 16))
    assert (np.asarray(tasks.objective) == WALK).all() and env.task_kinds == ()
    ceiling = geom_names(env.sys).index("ceiling")
    assert float(env.task_system(tasks.replace(objective=tasks.objective[0])).geom_pos[ceiling, 2]) < 0
    task = _task(WALK)
    assert _reward(env, task, 5.0, 5.0 + SHIFT_M, height=1.001) == pytest.approx(1.25 * VELOCITY + 5.0, abs=1e-3)
