"""The Brax ant task envs: contract (jit, vmap over tasks and layouts, finite, deterministic) and
physics facts (walls stop the body, layouts' blocks, goal success, the enemy, joint resets)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import make_env
from envs.brax_body import PARKED_Z
from tests.helpers.brax_states import drive, pipeline_at, rollout, state_at
from envs.ant_maze import CELL_X, CELL_Y, LAYOUTS, SPLITS, AntMaze, layout_blocks
from envs.ant_obstacles import ENEMY_ZONE, JOINT_RESET_EVERY, AntObstacleCourse
from envs.ant_twowalk import AntTwoWalk

ANT_ENVS = ("ant_twowalk", "ant_maze", "ant_obstacles")


@pytest.fixture(scope="module")
def maze():
    return AntMaze(split="all")


@pytest.mark.parametrize("name", ANT_ENVS)
def test_full_episode_is_finite_deterministic_and_truncates(name):
    env = make_env(name, episode_length=60)
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(0), 3))
    obs, reward, truncated, _ = rollout(env, tasks, jax.random.PRNGKey(1), 60)
    assert obs.shape == (60, 3, env.observation_size) and env.observation_size == 29
    assert env.subpolicy_observation_size == 27 and env.continuous_actions and env.action_size == 8
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(reward)).all()
    assert not np.asarray(truncated[:-1]).any() and np.asarray(truncated[-1]).all()
    again = rollout(env, tasks, jax.random.PRNGKey(1), 60)
    np.testing.assert_array_equal(np.asarray(obs), np.asarray(again[0]))
    other = rollout(env, tasks, jax.random.PRNGKey(2), 60)
    assert not np.allclose(np.asarray(obs), np.asarray(other[0]))


def test_maze_vmaps_over_every_layout_in_one_program(maze):
    tasks = jax.vmap(maze.task_for)(jnp.arange(len(LAYOUTS)))
    obs, reward, _, _ = rollout(maze, tasks, jax.random.PRNGKey(0), 5)
    assert obs.shape == (5, 9, 29) and np.isfinite(np.asarray(obs)).all()
    # Geometry differs by task inside the one compiled program.
    geom_pos = jax.vmap(lambda t: maze.task_system(t).geom_pos)(tasks)
    assert len({np.asarray(g).tobytes() for g in geom_pos}) == len(LAYOUTS)


def test_each_layouts_blocks_are_where_the_spec_puts_them(maze):
    walls = maze.wall_geom_ids
    for layout, (rows, _) in enumerate(LAYOUTS):
        geom_pos = np.asarray(maze.task_system(maze.task_for(layout)).geom_pos)[walls]
        standing = {(float(x), float(y)) for x, y, z in geom_pos if z > 0}
        parked = [z for _, _, z in geom_pos if z <= PARKED_Z]
        expected = {(x, y) for row, y in zip(rows.split(), CELL_Y) for cell, x in zip(row, CELL_X) if cell == "#"}
        assert expected <= standing, layout
        blocks_standing = standing - {(x, y) for x, y in standing if x in (-0.5, 48.5) or y in (-24.5, 24.5)}
        assert blocks_standing == expected, layout
        assert len(parked) == len(walls) - 4 - len(expected)
        assert len(layout_blocks(layout)) == len(expected)


def test_kinds_of_task_are_the_goals_and_the_layouts(maze):
    twowalk = AntTwoWalk()
    for goal in (0, 1):
        task = jax.tree.map(lambda x: jnp.asarray(goal, x.dtype), twowalk.sample_task(jax.random.PRNGKey(0)))
        assert int(twowalk.task_kind(task)) == goal
        assert twowalk.task_kinds[goal] == "goal ({:g}, {:g})".format(*np.asarray(twowalk.goal_xy(task)))
    assert maze.task_kinds == tuple(f"layout {i}" for i in range(len(LAYOUTS)))
    assert [int(maze.task_kind(maze.task_for(i))) for i in range(len(LAYOUTS))] == list(range(len(LAYOUTS)))
    assert make_env("ant_obstacles").task_kinds == ()


def test_splits_and_bad_layouts():
    assert set(SPLITS["train"]).isdisjoint(SPLITS["heldout"])
    env = AntMaze(split="heldout")
    drawn = {int(env.sample_task(k).layout) for k in jax.random.split(jax.random.PRNGKey(0), 40)}
    assert drawn == set(SPLITS["heldout"])
    with pytest.raises(ValueError, match="unknown layout split 'test'"):
        AntMaze(split="test")
    with pytest.raises(ValueError, match="indices in 0..8"):
        AntMaze(layouts=(3, 9))


def test_ant_thrown_at_a_wall_stays_outside_it(maze):
    # Layout 4's corridor ends at the arena wall x = 0 (its face): throw the ant at it at 8 m/s.
    task = maze.task_for(4)
    _, path = drive(maze, task, state_at(maze, task, (3.0, 0.0), (-8.0, 0.0)), 40, jnp.ones(8))
    assert path[:, 0].min() > 0.3, path[:, 0].min()
    # Without walls the same throw carries the ant past x = 0: the check above can fail.
    open_floor = AntTwoWalk()
    free_task = open_floor.sample_task(jax.random.PRNGKey(0))
    _, free_path = drive(open_floor, free_task, state_at(open_floor, free_task, (3.0, 0.0), (-8.0, 0.0)), 40,
                          jnp.ones(8))
    assert free_path[:, 0].min() < 0.0


def test_block_stops_the_ant_from_the_side(maze):
    # Layout 4: blocks on the rows y = 16 and y = -16 (faces at y = 8 and -8); throw the ant at y = +8.
    task = maze.task_for(4)
    _, path = drive(maze, task, state_at(maze, task, (24.0, 5.0), (0.0, 8.0)), 40, jnp.zeros(8))
    assert path[:, 1].max() < 7.7, path[:, 1].max()


def test_goal_reached_triggers_success(maze):
    task = maze.task_for(4)  # goal (48, 0)
    near = state_at(maze, task, (46.0, 0.0))
    far = state_at(maze, task, (2.0, 0.0))
    assert bool(AntMaze.reached_goal(task, near.inner.pipeline))
    assert not bool(AntMaze.reached_goal(task, far.inner.pipeline))


def test_enemy_knocks_the_ant_back():
    env = AntObstacleCourse()
    task = env.sample_task(jax.random.PRNGKey(0))
    zone_x, zone_y = ENEMY_ZONE
    # The enemy sits at its zone's centre; the ant stands 1 m east of it, the enemy reaches it.
    state, path = drive(env, task, state_at(env, task, (zone_x + 1.0, zone_y)), 10, jnp.zeros(8))
    assert path[-1, 0] - (zone_x + 1.0) > 1.5, path[:, 0]
    # The same ant far from the enemy (outside its zone) stays roughly where it is.
    _, calm = drive(env, task, state_at(env, task, (zone_x - 20.0, zone_y - 20.0)), 10, jnp.zeros(8))
    assert abs(calm[-1, 0] - (zone_x - 20.0)) < 0.5


def test_joints_reset_every_300_steps_keeping_x_and_y():
    env = AntObstacleCourse()
    task = env.sample_task(jax.random.PRNGKey(0))
    state = env.reset(task, jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    action = jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    for i in range(JOINT_RESET_EVERY - 1):
        state = step(task, state, action, jax.random.PRNGKey(i))
    before_q = np.asarray(state.inner.pipeline.q)
    state = step(task, state, action, jax.random.PRNGKey(999))
    after_q = np.asarray(state.inner.pipeline.q)
    init_q = np.asarray(env.sys.init_q)
    # Joints are back at the start pose (up to the reset noise), x and y barely moved in one step.
    assert np.abs(after_q[7:] - init_q[7:]).max() <= env.reset_noise + 1e-6
    assert np.abs(before_q[7:] - init_q[7:]).max() > env.reset_noise  # they had moved away
    np.testing.assert_allclose(after_q[:2], before_q[:2], atol=0.15)
    assert np.all(np.asarray(state.inner.pipeline.qd) == 0)


# Worked out by hand: the spring backend steps 10 x 0.005 s per env step.
ANT_STEP_S = 0.05


def _ant_reward(env, task, xy0, xy1, action=0.0):
    """The reward of a hand-made step: the initial pose moved from xy0 to xy1 in one env step."""
    velocity = tuple((np.asarray(xy1) - np.asarray(xy0)) / ANT_STEP_S)
    extra = env.initial_extra(task, jax.random.PRNGKey(0))
    before = pipeline_at(env, task, xy0, velocity=velocity)
    after = pipeline_at(env, task, xy1, velocity=velocity)
    return float(env.reward(task, before, after, jnp.full((8,), action), extra))


def test_maze_pays_the_velocity_toward_the_goal_minus_the_control_cost(maze):
    assert maze.dt == pytest.approx(ANT_STEP_S)
    east = maze.task_for(4)                                   # goal (48, 0), straight east of (10, 0)
    assert _ant_reward(maze, east, (10.0, 0.0), (10.05, 0.0)) == pytest.approx(1.0, abs=1e-4)
    assert _ant_reward(maze, east, (10.0, 0.0), (9.95, 0.0)) == pytest.approx(-1.0, abs=1e-4)
    assert _ant_reward(maze, east, (10.0, 0.0), (10.0, 0.05)) == pytest.approx(0.0, abs=1e-4)
    # Control cost 0.1 |a|^2 over 8 joints, actions clipped to [-1, 1]: 0.2 at a = 0.5, 0.8 at a = 2.
    assert _ant_reward(maze, east, (10.0, 0.0), (10.05, 0.0), action=0.5) == pytest.approx(0.8, abs=1e-4)
    assert _ant_reward(maze, east, (10.0, 0.0), (10.0, 0.0), action=-2.0) == pytest.approx(-0.8, abs=1e-4)
    # Layout 0's goal (8, 24) seen from (2, 0): direction (6, 24) / |(6, 24)|.
    toward = np.dot([0.03, 0.04], np.array([6.0, 24.0]) / np.hypot(6.0, 24.0)) / ANT_STEP_S
    assert _ant_reward(maze, maze.task_for(0), (2.0, 0.0), (2.03, 0.04)) == pytest.approx(toward, abs=1e-4)


# The path reward's targets, cell by cell (rows y = 16 / 0 / -16, columns x = 8 / 24 / 40), worked out
# by hand from the layouts' corridors: each open cell heads for the next open cell's centre on the way
# to the goal, the goal's cell for the goal. Blocked cells are not listed.
HAND_PATH_TARGETS = {
    0: {(1, 0): (8, 16), (0, 0): (8, 24)},
    2: {(1, 0): (24, 0), (1, 1): (24, 16), (0, 1): (24, 24)},
    5: {(1, 0): (24, 0), (1, 1): (40, 0), (1, 2): (40, 16), (0, 2): (40, 24)},
    6: {(1, 0): (24, 0), (1, 1): (40, 0), (1, 2): (40, -16), (2, 2): (40, -24)},
    7: {(1, 0): (8, 16), (0, 0): (24, 16), (0, 1): (32, 16)},
}


def test_the_path_reward_heads_for_the_next_cell_of_the_corridor():
    path = AntMaze(split="all", reward_direction="path")
    for layout, targets in HAND_PATH_TARGETS.items():
        task = path.task_for(layout)
        for (row, column), target in targets.items():
            xy = jnp.asarray((CELL_X[column] + 3.0, CELL_Y[row] - 2.0))   # off the centre, inside the cell
            np.testing.assert_allclose(np.asarray(path.heading_target(task, xy)), target, err_msg=f"{layout}")
    # Layout 2 from the start cell: east along the corridor pays in full, north into the block above
    # (which the straight line to (24, 24) pays for) pays nothing.
    corridor = path.task_for(2)
    assert _ant_reward(path, corridor, (8.0, 0.0), (8.05, 0.0)) == pytest.approx(1.0, abs=1e-4)
    assert _ant_reward(path, corridor, (8.0, 0.0), (8.0, 0.05)) == pytest.approx(0.0, abs=1e-4)
    # In the cell below the goal, (24, 0), it pays moving north toward (24, 16), minus the control cost.
    toward = np.dot([0.03, 0.04], np.array([-2.0, 16.0]) / np.hypot(2.0, 16.0)) / ANT_STEP_S
    assert (_ant_reward(path, corridor, (26.0, 0.0), (26.03, 0.04), action=0.5)
            == pytest.approx(toward - 0.2, abs=1e-4))
    # Where the straight line is the corridor (layout 4), both rewards agree.
    east = path.task_for(4)
    assert _ant_reward(path, east, (10.0, 0.0), (10.05, 0.0)) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="reward_direction"):
        AntMaze(reward_direction="wall")


def test_twowalk_pays_minus_the_root_of_the_distance_to_its_goal_over_3000():
    env = AntTwoWalk()
    east, north = (jax.tree.map(lambda x: jnp.asarray(goal, x.dtype), env.sample_task(jax.random.PRNGKey(0)))
                   for goal in (0, 1))
    assert _ant_reward(env, east, (2.0, 0.0), (2.0, 0.0)) == pytest.approx(-np.sqrt(3.0) / 3000, rel=1e-4)
    assert _ant_reward(env, north, (2.0, 0.0), (2.0, 0.0)) == pytest.approx(-29.0 ** 0.25 / 3000, rel=1e-4)
    assert _ant_reward(env, north, (0.0, 5.0), (0.0, 5.0)) == pytest.approx(0.0, abs=1e-7)


def test_twowalk_approach_weight_adds_the_speed_toward_the_goal():
    env = AntTwoWalk(approach_weight=0.5)
    east = jax.tree.map(lambda x: jnp.asarray(0, x.dtype), env.sample_task(jax.random.PRNGKey(0)))
    # (2, 0) -> (2.05, 0): 3 m -> 2.95 m from (5, 0) in one 0.05 s step, 1 m/s toward it.
    assert _ant_reward(env, east, (2.0, 0.0), (2.05, 0.0)) == pytest.approx(-np.sqrt(2.95) / 3000 + 0.5, rel=1e-4)
    # (5, 3) -> (5, 3.05): 3 m -> 3.05 m, 1 m/s away; sideways at (2, 0) -> (2, 0.05): 3 -> sqrt(9.0025) m.
    assert _ant_reward(env, east, (5.0, 3.0), (5.0, 3.05)) == pytest.approx(-np.sqrt(3.05) / 3000 - 0.5, rel=1e-4)
    sideways = np.hypot(3.0, 0.05)
    assert (_ant_reward(env, east, (2.0, 0.0), (2.0, 0.05))
            == pytest.approx(-np.sqrt(sideways) / 3000 + 0.5 * (3.0 - sideways) / ANT_STEP_S, abs=1e-5))  # float32
    with pytest.raises(ValueError, match="approach_weight"):
        AntTwoWalk(approach_weight=-1.0)


def test_obstacle_course_pays_one_within_root_30_of_its_goal_and_nothing_outside():
    env = AntObstacleCourse()
    task = env.sample_task(jax.random.PRNGKey(0))
    for xy, paid in (((30.0, -35.0), 1.0), ((32.0, -32.0), 1.0), ((29.0, -35.0), 0.0), ((-35.0, 15.0), 0.0)):
        assert _ant_reward(env, task, xy, xy) == paid, xy
