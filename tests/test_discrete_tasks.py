"""Key-door and four rooms: reward and transition semantics on hand-made trajectories (the generic
contract, jit/vmap/determinism, is in test_envs.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs import four_rooms
from envs.four_rooms import FourRooms, FourRoomsTask
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


def test_four_rooms_slips_to_each_other_direction_with_probability_one_ninth():
    env = FourRooms()
    task = FourRoomsTask(goal=jnp.int32(0))
    centre = _cell(3, 3)                                   # four free neighbours
    state = env.reset(task, jax.random.PRNGKey(0)).replace(inner=jnp.int32(centre))
    right = 3
    keys = jax.random.split(jax.random.PRNGKey(1), 30000)
    cells = np.asarray(jax.vmap(lambda k: env.step(task, state, right, k).inner)(keys))
    freq = {name: float(np.mean(cells == _cell(*rc)))
            for name, rc in {"up": (2, 3), "down": (4, 3), "left": (3, 2), "right": (3, 4)}.items()}
    assert freq["right"] == pytest.approx(2 / 3, abs=0.01)
    for name in ("up", "down", "left"):
        assert freq[name] == pytest.approx(1 / 9, abs=0.01), freq
    assert sum(freq.values()) == pytest.approx(1.0)


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


def test_four_rooms_splits_and_bad_goals():
    train, heldout = set(four_rooms.SPLITS["train"]), set(four_rooms.SPLITS["heldout"])
    assert len(heldout) == 16 and not train & heldout and train | heldout == set(range(104))
    assert four_rooms.START_CELL not in heldout
    env = FourRooms(split="heldout")
    goals = jax.vmap(lambda k: env.sample_task(k).goal)(jax.random.split(jax.random.PRNGKey(0), 2000))
    assert set(np.asarray(goals).tolist()) == heldout
    with pytest.raises(ValueError, match="unknown goal cell split 'test'"):
        FourRooms(split="test")
    with pytest.raises(ValueError, match="0..103"):
        FourRooms(goal_cells=(5, 104))


def test_four_rooms_optimal_returns_by_value_iteration():
    start = four_rooms.START_CELL
    above = four_rooms.CELL_INDEX[(6, 9)]
    # One step: the start is a hallway with walls left and right; pushing into one stays with 2/3 + 1/9.
    assert four_rooms.optimal_returns([start], episode_length=1)[0] == pytest.approx(7 / 9)
    assert four_rooms.optimal_returns([above], episode_length=1)[0] == pytest.approx(2 / 3)
    # Two steps to the cell above: reach it (2/3) then stay by pushing into a wall where possible.
    two = four_rooms.optimal_returns([above], episode_length=2)[0]
    assert 2 / 3 < two < 2 * 2 / 3 + 1e-9
    heldout = four_rooms.optimal_returns(four_rooms.HELDOUT_GOAL_CELLS)
    assert heldout.shape == (16,) and np.all(heldout < 100) and np.all(heldout > 0)
    # The slip caps what any policy can get: well below 100 per 100-step episode.
    assert heldout.mean() == pytest.approx(45.1, abs=0.1)
    assert FourRooms(split="heldout").optimal_mean_return() == pytest.approx(heldout.mean())
