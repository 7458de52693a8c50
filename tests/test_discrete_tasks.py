"""Key-door and four rooms: reward and transition semantics on hand-made trajectories (the generic
contract, jit/vmap/determinism, is in test_envs.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import four_rooms, make_env
from envs.four_rooms import FourRooms, FourRoomsPaper, FourRoomsTask
from envs.key_door import KeyDoor, KeyDoorInner
from envs.moving_bandits import MovingBanditsTask

STAY, PLUS_X = 0, 1


def _key_door_state(env, position, key, doors=((100.0, 100.0), (300.0, 300.0)), has_key=False):
    state = env.reset(MovingBanditsTask(correct_goal=jnp.int32(0)), jax.random.PRNGKey(0))
    inner = KeyDoorInner(position=jnp.asarray(position, jnp.float32), doors=jnp.asarray(doors, jnp.float32),
                         key=jnp.asarray(key, jnp.float32), has_key=jnp.asarray(has_key))
    return state.replace(inner=inner)


def test_key_door_pays_only_at_the_correct_door_once_the_key_is_held():
    env = KeyDoor()
    correct, wrong = MovingBanditsTask(correct_goal=jnp.int32(0)), MovingBanditsTask(correct_goal=jnp.int32(1))
    step = jax.jit(env.step)
    # At the correct door without the key: nothing.
    at_door = _key_door_state(env, position=(100.0, 100.0), key=(380.0, 20.0))
    assert float(step(correct, at_door, STAY, jax.random.PRNGKey(1)).reward) == 0.0
    # Holding the key: 1 at the correct door, 0 at the other one.
    assert float(step(correct, at_door.replace(inner=at_door.inner.replace(has_key=True)), STAY,
                      jax.random.PRNGKey(1)).reward) == 1.0
    assert float(step(wrong, at_door.replace(inner=at_door.inner.replace(has_key=True)), STAY,
                      jax.random.PRNGKey(1)).reward) == 0.0
    # Walk onto the key (it is 60 to the right, the pick-up radius is 50), then back to the door.
    state = _key_door_state(env, position=(100.0, 100.0), key=(160.0, 100.0))
    state = step(correct, state, PLUS_X, jax.random.PRNGKey(2))
    assert bool(state.inner.has_key) and float(state.obs[-1]) == 1.0
    assert float(state.reward) == 1.0                      # (120, 100) is still within 50 of the door
    for _ in range(4):                                     # far from the key: it stays held
        state = step(correct, state, PLUS_X, jax.random.PRNGKey(3))
    assert bool(state.inner.has_key)
    assert float(state.reward) == 0.0                      # (200, 100) is 100 from the door


def test_key_door_observation_and_fresh_key_each_episode():
    env = KeyDoor()
    task = MovingBanditsTask(correct_goal=jnp.int32(1))
    a, b = env.reset(task, jax.random.PRNGKey(0)), env.reset(task, jax.random.PRNGKey(1))
    assert a.obs.shape == (9,) and float(a.obs[-1]) == 0.0
    np.testing.assert_allclose(np.asarray(a.obs[:2]), [0.5, 0.5])
    np.testing.assert_allclose(np.asarray(a.obs[6:8]), np.asarray(a.inner.key) / 400.0, rtol=1e-6)
    assert not np.allclose(np.asarray(a.inner.key), np.asarray(b.inner.key))
    assert env.episode_length == 100


def _cell(row, col):
    return four_rooms.CELL_INDEX[(row, col)]


def test_four_rooms_map_walls_block_and_hallways_connect():
    assert len(four_rooms.FREE_CELLS) == 104
    assert tuple(four_rooms.FREE_CELLS[four_rooms.START_CELL]) == (7, 9)
    up, down, left, right = range(4)
    table = four_rooms.NEXT_CELL
    assert table[_cell(1, 1), up] == _cell(1, 1) and table[_cell(1, 1), left] == _cell(1, 1)
    assert table[_cell(1, 5), right] == _cell(1, 5)        # the wall between the top rooms
    assert table[_cell(3, 5), right] == _cell(3, 6)        # ... and its hallway
    assert table[_cell(6, 2), down] == _cell(7, 2)         # left rooms' hallway
    assert table[_cell(7, 9), up] == _cell(6, 9) and table[_cell(7, 9), down] == _cell(8, 9)
    assert table[_cell(7, 9), left] == _cell(7, 9)         # the start is a hallway cell
    # Every move goes to a 4-neighbour or stays.
    for cell, targets in enumerate(table):
        for target in targets:
            assert np.abs(four_rooms.FREE_CELLS[target] - four_rooms.FREE_CELLS[cell]).sum() <= 1


UP, DOWN, LEFT, RIGHT = range(4)


def _steps(env, cell, action, num_keys, seed=1):
    """The cells reached by one step from `cell` with `action`, under `num_keys` keys."""
    task = FourRoomsTask(goal=jnp.int32(0))
    state = env.reset(task, jax.random.PRNGKey(0)).replace(inner=jnp.int32(cell))
    keys = jax.random.split(jax.random.PRNGKey(seed), num_keys)
    return np.asarray(jax.jit(jax.vmap(lambda k: env.step(task, state, action, k).inner))(keys))


def _within(freq, p, n, sigmas=5.0):
    """|freq - p| within `sigmas` binomial standard deviations of n draws."""
    return abs(freq - p) <= sigmas * np.sqrt(p * (1 - p) / n) + 1e-12


def test_four_rooms_pushing_into_a_wall_never_slips():
    env = FourRooms()
    # The corner (11, 11): walls below and right. The start (7, 9): walls left and right.
    for cell, action in [((11, 11), DOWN), ((11, 11), RIGHT), ((7, 9), LEFT), ((7, 9), RIGHT), ((1, 1), UP)]:
        assert set(_steps(env, _cell(*cell), action, 2000).tolist()) == {_cell(*cell)}, (cell, action)


def test_four_rooms_slips_after_a_successful_move_to_a_free_neighbour_of_the_cell_entered():
    env = FourRooms()
    n = 30000
    # (3, 3) -> right -> (3, 4), whose four neighbours are free: (3, 4) with 2/3, each neighbour 1/12
    # (the cell left, (3, 3), among them).
    cells = _steps(env, _cell(3, 3), RIGHT, n)
    expected = {(3, 4): 2 / 3, (2, 4): 1 / 12, (4, 4): 1 / 12, (3, 3): 1 / 12, (3, 5): 1 / 12}
    assert set(cells.tolist()) == {_cell(*rc) for rc in expected}
    for rc, p in expected.items():
        assert _within(np.mean(cells == _cell(*rc)), p, n), (rc, np.mean(cells == _cell(*rc)))
    # (8, 9) -> up -> the start (7, 9), a doorway with two free neighbours: each 1/6, so the slip
    # lands back in (8, 9) with 1/6 and never left or right (walls).
    cells = _steps(env, _cell(8, 9), UP, n)
    expected = {(7, 9): 2 / 3, (6, 9): 1 / 6, (8, 9): 1 / 6}
    assert set(cells.tolist()) == {_cell(*rc) for rc in expected}
    for rc, p in expected.items():
        assert _within(np.mean(cells == _cell(*rc)), p, n), (rc, np.mean(cells == _cell(*rc)))
    # The slip as a whole: 1/3 after any successful move.
    assert _within(np.mean(cells != _cell(7, 9)), 1 / 3, n)


def test_four_rooms_transition_matrix_is_what_the_jax_step_samples():
    probs = four_rooms.transition_matrix()
    cells = len(four_rooms.FREE_CELLS)
    assert probs.shape == (4, cells, cells)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-12)
    # Every (cell, action) at once, 3000 draws each: the empirical next-cell frequencies match the
    # matrix (never a cell the matrix rules out).
    env, n = FourRooms(), 3000
    task = FourRoomsTask(goal=jnp.int32(0))
    state = env.reset(task, jax.random.PRNGKey(0))

    def frequencies(cell, action, key):
        keys = jax.random.split(key, n)
        reached = jax.vmap(lambda k: env.step(task, state.replace(inner=cell), action, k).inner)(keys)
        return jnp.zeros(cells, jnp.int32).at[reached].add(1)

    grid_cells, grid_actions = np.meshgrid(np.arange(cells), np.arange(4))
    keys = jax.random.split(jax.random.PRNGKey(3), grid_cells.size)
    freq = np.asarray(jax.jit(jax.vmap(frequencies))(jnp.asarray(grid_cells.ravel(), jnp.int32),
                                                   jnp.asarray(grid_actions.ravel(), jnp.int32), keys))
    freq = freq.reshape(4, cells, cells) / n
    assert np.all(freq[probs == 0] == 0)
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / n) + 1e-6)


def test_four_rooms_reward_while_in_the_goal_cell():
    env = FourRooms()
    goal = _cell(6, 9)                                     # just above the start
    task = FourRoomsTask(goal=jnp.int32(goal))
    state = env.reset(task, jax.random.PRNGKey(0))
    assert int(jnp.argmax(state.obs)) == four_rooms.START_CELL and float(state.obs.sum()) == 1.0
    rewards, in_goal = [], []
    for t in range(200):
        state = env.step(task, state, 0, jax.random.PRNGKey(t))   # always "up"
        rewards.append(float(state.reward))
        in_goal.append(int(state.inner) == goal)
    assert rewards == [float(g) for g in in_goal]
    assert sum(rewards) > 0 and not state.terminated


def test_four_rooms_task_sets():
    room = four_rooms.room_of_cells()
    bottom_right = four_rooms.ROOMS.index("bottom right")
    sizes = {"all_rooms": (104, 88, 16), "paper": (21, 17, 4), "original": (4, 4, 0)}
    for name, splits in four_rooms.TASK_SETS.items():
        train, heldout, every = set(splits["train"]), set(splits["heldout"]), set(splits["all"])
        assert (len(every), len(train), len(heldout)) == sizes[name]
        assert not train & heldout and train | heldout == every
        assert four_rooms.START_CELL not in heldout
        for cell in every:                                  # free cells of the map
            row, col = four_rooms.FREE_CELLS[cell]
            assert four_rooms.MAP[row][col] != "w"
    paper = four_rooms.TASK_SETS["paper"]
    # The bottom-right room and its doorway (10, 6); the original's goals held out, (11, 11) among them.
    assert {c for c in range(104) if room[c] == bottom_right} | {_cell(10, 6)} == set(paper["all"])
    assert set(paper["heldout"]) == {_cell(8, 7), _cell(9, 9), _cell(10, 8), _cell(11, 11)}
    # The registered names: "four_rooms" (every run made so far) is the all-rooms set.
    assert make_env("four_rooms").goal_cells == four_rooms.TASK_SETS["all_rooms"]["train"]
    assert make_env("four_rooms_paper").goal_cells == paper["train"]
    env = make_env("four_rooms_paper", split="heldout")
    goals = jax.vmap(lambda k: env.sample_task(k).goal)(jax.random.split(jax.random.PRNGKey(0), 500))
    assert set(np.asarray(goals).tolist()) == set(paper["heldout"])
    # The original code's goals: its state indices [68, 80, 90, 103], all for training.
    assert make_env("four_rooms_original").goal_cells == (68, 80, 90, 103) == paper["heldout"]
    with pytest.raises(ValueError, match="original task set's 'heldout' split has no goal cells; use one of train"):
        make_env("four_rooms_original", split="heldout")
    for task_set, name in four_rooms.ENV_OF_TASK_SET.items():
        assert make_env(name).task_set == task_set


def test_four_rooms_bad_task_sets_splits_and_goals(monkeypatch):
    with pytest.raises(ValueError, match="unknown goal cell split 'test'; use one of train, heldout, all"):
        FourRooms(split="test")
    with pytest.raises(ValueError, match="0..103"):
        FourRooms(goal_cells=(5, 104))
    with pytest.raises(ValueError, match="unknown four-rooms task set 'papers'; use one of all_rooms, paper"):
        FourRooms(task_set="papers")
    monkeypatch.setitem(four_rooms.TASK_SETS, "paper", dict(four_rooms.TASK_SETS["paper"], heldout=()))
    with pytest.raises(ValueError, match="'heldout' split has no goal cells; use one of train, all"):
        FourRoomsPaper(split="heldout")
    assert four_rooms.parse_goal_cells("3, 11:11,7:9") == (3, _cell(11, 11), four_rooms.START_CELL)
    for text, message in [("0:0", "0:0 is a wall"), ("13:2", "13:2 is off the map"), ("104", "out of range"),
                          ("-1", "out of range"), ("x", "'x' is not a free-cell index 0..103 or row:col"),
                          ("1:2:3", "is not"), (" , ", "no goal cells")]:
        with pytest.raises(ValueError, match=message):
            four_rooms.parse_goal_cells(text)


def test_four_rooms_unknown_task_set_name_is_refused_before_compiling(tmp_path, capsys):
    from experiments import four_rooms as experiment
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(["--preset", "smoke", "--set", "env=four_rooms_papers", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "four_rooms, four_rooms_original, four_rooms_paper" in capsys.readouterr().err
    assert not out.exists()


def test_four_rooms_optimal_returns_by_value_iteration():
    start, above = four_rooms.START_CELL, _cell(6, 9)
    optimum = four_rooms.optimal_returns
    # Goal = the start (7, 9), walls left and right: pushing into one stays for sure, 1 per step.
    for horizon in (1, 2, 100):
        assert optimum([start], episode_length=horizon)[0] == pytest.approx(horizon)
    # Goal = (6, 9), above the start. One step: "up" enters it and stays with 2/3.
    assert optimum([above], episode_length=1)[0] == pytest.approx(2 / 3)
    # Two steps, "up" first: in the goal (2/3) it gets 1 + the best one-step return from there,
    # 1/6 ("down" into the start, whose two free neighbours make the slip back 1/3 x 1/2); each of
    # the 4 slips (1/12 each: (5, 9), (6, 8), (6, 10), back to the start) is next to the goal, which
    # one step enters with 2/3. 2/3 x 7/6 + 4/12 x 2/3 = 7/9 + 2/9 = 1. (Pushing into a wall
    # first: 0 + 2/3; "down": less.)
    assert optimum([above], episode_length=2)[0] == pytest.approx(1.0)
    # 100 steps: the corner (11, 11) can be held by pushing into its walls.
    assert optimum([_cell(11, 11)])[0] == pytest.approx(94.5, abs=0.05)
    heldout = optimum(four_rooms.HELDOUT_GOAL_CELLS)
    assert heldout.shape == (16,) and np.all(heldout < 100) and np.all(heldout > 0)
    assert heldout.mean() == pytest.approx(71.3, abs=0.05)
    assert FourRooms(split="heldout").optimal_mean_return() == pytest.approx(heldout.mean())
    assert FourRoomsPaper(split="heldout").optimal_mean_return() == pytest.approx(66.7, abs=0.05)


def _always(*actions) -> np.ndarray:
    """[len(actions), cells, 4]: policies that always take one action (0 up, 1 down, 2 left, 3 right)."""
    return four_rooms.primitive_policies()[list(actions)]


def test_hierarchy_returns_on_hand_computed_cases():
    ceiling = four_rooms.hierarchy_returns
    start, above = four_rooms.START_CELL, _cell(6, 9)
    # "Always left" from the start pushes into the wall: stays for good, whatever N.
    for n in (1, 7, 100):
        assert ceiling(_always(2), [start, above], n)[0] == pytest.approx(100)
        assert ceiling(_always(2), [start, above], n)[1] == pytest.approx(0)
    # Two steps, goal above the start, only "up": enter it (2/3); from it, "up" slips back with
    # 1/3 x 1/4; a first-step slip back to the start (1/12) enters it with 2/3. 2/3 + 2/18 = 7/9.
    assert ceiling(_always(0), [above], 2, episode_length=2)[0] == pytest.approx(7 / 9)
    # With "left" too and a decision every step: from the goal, "left" enters (6, 8), whose three
    # free neighbours take it back with 1/9; a first-step slip to (6, 10) (1/12) re-enters the goal
    # by "left" (2/3), one back to the start by "up". 2/3 + 2/3 x 1/9 + 2 x 1/12 x 2/3 = 23/27.
    assert ceiling(_always(0, 2), [above], 1, episode_length=2)[0] == pytest.approx(23 / 27)
    # One decision for both steps: "up" twice is the best it has.
    assert ceiling(_always(0, 2), [above], 2, episode_length=2)[0] == pytest.approx(7 / 9)


def test_hierarchy_returns_bounds_and_errors():
    goals = four_rooms.PAPER_GOAL_CELLS
    optimum = four_rooms.optimal_returns(goals)
    primitives = four_rooms.primitive_policies()
    # Longer stretches (also one that does not divide the episode) can only lose; a stochastic
    # policy added to the primitives changes nothing at N = 1.
    coarse = [four_rooms.hierarchy_returns(primitives, goals, n) for n in (3, 25)]
    assert np.all(coarse[0] <= optimum + 1e-9) and np.all(coarse[1] <= coarse[0] + 1e-9)
    assert coarse[1].mean() < 0.5 * optimum.mean()
    uniform = np.full((1, len(four_rooms.FREE_CELLS), 4), 0.25)
    with_uniform = four_rooms.hierarchy_returns(np.concatenate([primitives, uniform]), goals, 1)
    np.testing.assert_allclose(with_uniform, optimum)
    with pytest.raises(ValueError, match="action_probs must be"):
        four_rooms.hierarchy_returns(np.ones((2, 5, 4)) / 4, goals, 1)
    with pytest.raises(ValueError, match="macro_duration must be >= 1"):
        four_rooms.hierarchy_returns(primitives, goals, 0)
