"""Four rooms (Sutton, Precup & Singh 1999; MLSH paper, section 6.2), the goal cell being the task.

The 13x13 map below (104 free cells). 4 actions (up, down, left, right); with probability 1/3 the
agent moves in one of the *other three* directions instead, uniformly (Sutton et al.'s
stochasticity). A move into a wall leaves the agent where it is. It starts every episode in the
fixed cell S; reward 1 for every step that ends in the goal cell (the episode goes on: staying
there keeps paying). The goal is hidden from the agent; the observation is the one-hot index of the
agent's free cell [104]. 100-step episodes.

Goal cells: 16 of the 104 (`HELDOUT_GOAL_CELLS`, four per room, away from the start) are held out:
`split="train"` draws goals from the other 88, `split="heldout"` only from them (used to measure
adaptation on unseen tasks), `split="all"` from every free cell. Cells are numbered 0..103 in
row-major order over the free cells (`free_cells()` gives their (row, col)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.base import TaskEnv, tasks_of_split

MAP = (
    "wwwwwwwwwwwww",
    "w     w     w",
    "w     w     w",
    "w           w",
    "w     w     w",
    "w     w     w",
    "ww wwww     w",
    "w     wwwSwww",
    "w     w     w",
    "w     w     w",
    "w           w",
    "w     w     w",
    "wwwwwwwwwwwww",
)
# (row, col) moves of the actions: up, down, left, right.
ACTION_MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.int32)
SLIP_PROB = 1.0 / 3.0
# Held-out goals, four per room, as (row, col).
HELDOUT_GOALS_RC = (
    (1, 1), (2, 4), (4, 2), (5, 5),          # top left
    (1, 11), (2, 8), (4, 10), (5, 7),        # top right
    (8, 1), (9, 4), (11, 2), (11, 5),        # bottom left
    (8, 11), (9, 8), (11, 10), (11, 7),      # bottom right
)


def free_cells() -> np.ndarray:
    """(row, col) [104, 2] of the free cells, row-major."""
    return np.argwhere(np.array([[c != "w" for c in row] for row in MAP]))


FREE_CELLS = free_cells()
CELL_INDEX = {tuple(rc): i for i, rc in enumerate(FREE_CELLS.tolist())}
START_CELL = CELL_INDEX[next((r, row.index("S")) for r, row in enumerate(MAP) if "S" in row)]
HELDOUT_GOAL_CELLS = tuple(CELL_INDEX[rc] for rc in HELDOUT_GOALS_RC)
SPLITS = {
    "train": tuple(i for i in range(len(FREE_CELLS)) if i not in HELDOUT_GOAL_CELLS),
    "heldout": HELDOUT_GOAL_CELLS,
    "all": tuple(range(len(FREE_CELLS))),
}


ROOMS = ("top left", "top right", "bottom left", "bottom right", "hallway")


def room_of_cells() -> np.ndarray:
    """[104] int: index into ROOMS of every free cell (the four one-cell gaps in the walls are
    "hallway")."""
    rows, cols = FREE_CELLS[:, 0], FREE_CELLS[:, 1]
    wall_rows = np.where(cols < 6, 6, 7)                   # the horizontal walls: row 6 left, row 7 right
    room = np.where(rows < wall_rows, 0, 2) + (cols > 6)
    gap = (cols == 6) | (rows == wall_rows)
    return np.where(gap, len(ROOMS) - 1, room).astype(np.int32)


def _next_cell_table() -> np.ndarray:
    """[cells, 4]: the cell reached from each free cell by each move (itself when a wall is in the way)."""
    table = np.zeros((len(FREE_CELLS), len(ACTION_MOVES)), np.int32)
    for i, (row, col) in enumerate(FREE_CELLS):
        for a, (dr, dc) in enumerate(ACTION_MOVES):
            table[i, a] = CELL_INDEX.get((row + dr, col + dc), i)
    return table


NEXT_CELL = _next_cell_table()


def transition_matrix() -> np.ndarray:
    """[4, cells, cells]: probability of each next cell for each action from each cell (the move
    itself with probability 2/3, each other direction with 1/9; a wall keeps the agent in place)."""
    cells, actions = NEXT_CELL.shape
    probs = np.zeros((actions, cells, cells))
    for action in range(actions):
        for move in range(actions):
            chance = 1.0 - SLIP_PROB if move == action else SLIP_PROB / (actions - 1)
            np.add.at(probs[action], (np.arange(cells), NEXT_CELL[:, move]), chance)
    return probs


def optimal_returns(goal_cells, episode_length: int = 100) -> np.ndarray:
    """[len(goal_cells)]: the best expected return from the start cell for each goal cell, by
    finite-horizon value iteration over these dynamics (what a policy that knows the goal can get).

    The ceiling is low because of the slip: on the spec's dynamics the held-out goals average 45.1
    (best cell 64.5) of 100 steps."""
    probs = transition_matrix()
    returns = []
    for goal in goal_cells:
        reward = (np.arange(len(FREE_CELLS)) == goal).astype(np.float64)
        value = np.zeros(len(FREE_CELLS))
        for _ in range(episode_length):
            value = (probs @ (reward + value)).max(axis=0)
        returns.append(value[START_CELL])
    return np.asarray(returns)


@struct.dataclass
class FourRoomsTask:
    """`goal`: index of the goal cell, int32 [] in [0, 104)."""

    goal: jax.Array


class FourRooms(TaskEnv):
    """The four-rooms task distribution: one task per goal cell of the chosen split.

    Args:
      episode_length: steps per episode (100 in the paper).
      split: which goal cells `sample_task` draws: "train", "heldout" or "all".
      goal_cells: an explicit tuple of goal cell indices instead of a split.
    """

    name = "four_rooms"
    observation_size = len(FREE_CELLS)
    action_size = len(ACTION_MOVES)

    def __init__(self, episode_length: int = 100, split: str = "train", goal_cells: tuple[int, ...] | None = None):
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.goal_cells = tasks_of_split(SPLITS, split, goal_cells, len(FREE_CELLS), "goal cell")

    def sample_task(self, key: jax.Array) -> FourRoomsTask:
        return FourRoomsTask(goal=jax.random.choice(key, jnp.asarray(self.goal_cells, jnp.int32)))

    def _reset(self, task, key):
        cell = jnp.asarray(START_CELL, jnp.int32)
        return cell, self.observe(cell)

    def _transition(self, task, cell, action, key):
        slip_key, other_key = jax.random.split(key)
        # A slip replaces the action by one of the other three, uniformly.
        other = (action + jax.random.randint(other_key, (), 1, len(ACTION_MOVES))) % len(ACTION_MOVES)
        move = jnp.where(jax.random.uniform(slip_key) < SLIP_PROB, other, action)
        cell = jnp.asarray(NEXT_CELL)[cell, move]
        reward = (cell == task.goal).astype(jnp.float32)
        return cell, self.observe(cell), reward, jnp.zeros((), bool)

    def optimal_mean_return(self) -> float:
        """Mean optimal return over this env's goal cells (each equally likely): the best any
        policy can reach on these tasks on average."""
        return float(optimal_returns(self.goal_cells, self.episode_length).mean())

    @staticmethod
    def observe(cell: jax.Array) -> jax.Array:
        """Observation [104]: one-hot of the agent's cell."""
        return jax.nn.one_hot(cell, len(FREE_CELLS), dtype=jnp.float32)
