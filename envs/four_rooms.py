"""Four rooms (Sutton, Precup & Singh 1999; MLSH paper, section 6.2), the goal cell being the task.

The 13x13 map below (104 free cells). 4 actions (up, down, left, right), with the original MLSH
code's dynamics: a move into a wall leaves the agent where it is (and never slips); a move into a
free cell succeeds and is then followed, with probability 1/3, by a jump to one of the free
4-neighbours of the cell just entered, uniformly (which may be the cell the agent came from). So the
agent can hold a goal cell that touches a wall by pushing into the wall. (Sutton et al.'s textbook
rule, a slip to another direction with probability 1/3 before the move, is not used: under it no
policy can stay in a goal cell.) One table (`OUTCOME_CELLS`, `OUTCOME_PROBS`) holds every cell's
possible next cells and their probabilities under each action; `transition_matrix` and the JAX step
both read it. The agent starts every episode in the fixed cell S; reward 1 for every step that ends
in the goal cell (the episode goes on: staying there keeps paying). The goal is hidden from the
agent; the observation is the one-hot index of the agent's free cell [104]. 100-step episodes.

Task sets (`TASK_SETS`), each with splits "train", "heldout" (never drawn for training; used to
measure adaptation on unseen tasks) and "all":
  - "all_rooms" (env "four_rooms", `FourRooms`): goals in every free cell, 16 held out
    (`HELDOUT_GOALS_RC`, four per room, away from the start).
  - "paper" (env "four_rooms_paper", `FourRoomsPaper`): goals in the 21 cells of the bottom-right
    room and its doorway (`PAPER_GOALS_RC`, the cells the original code's goals came from), the
    original's four checked-in goals held out (`PAPER_HELDOUT_GOALS_RC`, among them its fixed goal
    (11, 11), the bottom-right corner).
  - "original" (env "four_rooms_original", `FourRoomsOriginal`): the task distribution the original
    code trained on, its four checked-in goals (8,7), (9,9), (10,8), (11,11); nothing held out (its
    "unseen" goal (11, 11) was one of them): adaptation draws the same goals for fresh masters
    (`adapt --split train`), as the paper's figure did.
Cells are numbered 0..103 in row-major order over the free cells (`free_cells()` gives their (row,
col)); `parse_goal_cells` reads them as indices or row:col pairs.
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
# After a successful move, the probability of a jump to a random free neighbour of the cell entered.
SLIP_PROB = 1.0 / 3.0
# All-rooms task set: held-out goals, four per room, as (row, col).
HELDOUT_GOALS_RC = (
    (1, 1), (2, 4), (4, 2), (5, 5),          # top left
    (1, 11), (2, 8), (4, 10), (5, 7),        # top right
    (8, 1), (9, 4), (11, 2), (11, 5),        # bottom left
    (8, 11), (9, 8), (11, 10), (11, 7),      # bottom right
)
# Paper task set: the bottom-right room (rows 8-11, columns 7-11) and its doorway (10, 6).
PAPER_GOALS_RC = tuple((row, col) for row in range(8, 12) for col in range(7 if row != 10 else 6, 12))
# ... of which the original code's four checked-in goals are held out ((11, 11) was its fixed goal).
PAPER_HELDOUT_GOALS_RC = ((8, 7), (9, 9), (10, 8), (11, 11))


def free_cells() -> np.ndarray:
    """(row, col) [104, 2] of the free cells, row-major."""
    return np.argwhere(np.array([[c != "w" for c in row] for row in MAP]))


FREE_CELLS = free_cells()
CELL_INDEX = {tuple(rc): i for i, rc in enumerate(FREE_CELLS.tolist())}
START_CELL = CELL_INDEX[next((r, row.index("S")) for r, row in enumerate(MAP) if "S" in row)]
HELDOUT_GOAL_CELLS = tuple(CELL_INDEX[rc] for rc in HELDOUT_GOALS_RC)
PAPER_GOAL_CELLS = tuple(CELL_INDEX[rc] for rc in PAPER_GOALS_RC)
PAPER_HELDOUT_GOAL_CELLS = tuple(CELL_INDEX[rc] for rc in PAPER_HELDOUT_GOALS_RC)


def _splits(cells: tuple[int, ...], heldout: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {"train": tuple(c for c in cells if c not in heldout), "heldout": heldout, "all": cells}


# task set -> split -> goal cell indices.
TASK_SETS = {
    "all_rooms": _splits(tuple(range(len(FREE_CELLS))), HELDOUT_GOAL_CELLS),
    "paper": _splits(PAPER_GOAL_CELLS, PAPER_HELDOUT_GOAL_CELLS),
    "original": _splits(PAPER_HELDOUT_GOAL_CELLS, ()),
}
# task set -> the env that draws it.
ENV_OF_TASK_SET = {"all_rooms": "four_rooms", "paper": "four_rooms_paper", "original": "four_rooms_original"}
SPLITS = TASK_SETS["all_rooms"]


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


def free_neighbours(cell: int) -> list[int]:
    """The free 4-neighbours of `cell` (1 to 4 of them: every free cell has one)."""
    return [int(n) for n in NEXT_CELL[cell] if n != cell]


# Outcomes of one step: the entered cell, or a slip to one of its up-to-4 free neighbours.
MAX_OUTCOMES = 1 + len(ACTION_MOVES)


def _outcome_table() -> tuple[np.ndarray, np.ndarray]:
    """The dynamics: ([cells, 4, MAX_OUTCOMES] next cells, [cells, 4, MAX_OUTCOMES] their
    probabilities; unused entries have probability 0). Into a wall: stay, probability 1. Into a free
    cell: that cell with 1 - SLIP_PROB, each of its k free neighbours with SLIP_PROB / k."""
    cells, actions = NEXT_CELL.shape
    outcomes = np.repeat(np.arange(cells, dtype=np.int32)[:, None, None], actions, axis=1)
    outcomes = np.repeat(outcomes, MAX_OUTCOMES, axis=2)
    probs = np.zeros((cells, actions, MAX_OUTCOMES))
    for cell in range(cells):
        for action in range(actions):
            entered = int(NEXT_CELL[cell, action])
            if entered == cell:                             # a wall: no move, no slip
                probs[cell, action, 0] = 1.0
                continue
            neighbours = free_neighbours(entered)
            outcomes[cell, action, : 1 + len(neighbours)] = [entered] + neighbours
            probs[cell, action, 0] = 1.0 - SLIP_PROB
            probs[cell, action, 1: 1 + len(neighbours)] = SLIP_PROB / len(neighbours)
    return outcomes, probs


OUTCOME_CELLS, OUTCOME_PROBS = _outcome_table()


def transition_matrix() -> np.ndarray:
    """[4, cells, cells]: probability of each next cell for each action from each cell (from the
    outcome table the JAX step samples)."""
    cells, actions, _ = OUTCOME_CELLS.shape
    matrix = np.zeros((actions, cells, cells))
    for action in range(actions):
        rows = np.repeat(np.arange(cells), MAX_OUTCOMES)
        np.add.at(matrix[action], (rows, OUTCOME_CELLS[:, action].ravel()), OUTCOME_PROBS[:, action].ravel())
    return matrix


def primitive_policies() -> np.ndarray:
    """[4, cells, 4]: one deterministic policy per action (always take that action)."""
    return np.repeat(np.eye(len(ACTION_MOVES))[:, None, :], len(FREE_CELLS), axis=1)


def hierarchy_returns(action_probs, goal_cells, macro_duration: int, episode_length: int = 100) -> np.ndarray:
    """The best expected return from the start cell that a master can reach with these policies, per
    goal cell: exact dynamic programming over the master's decisions (it sees the cell every
    `macro_duration` steps and picks one policy for the next `macro_duration` steps, the last
    stretch cut at the episode's end). What a perfect master would get from frozen sub-policies: the
    ceiling of the hierarchy on each goal.

    Args:
      action_probs: [K, cells, 4] each policy's action probabilities in every free cell.
      goal_cells: goal cell indices [G].
      macro_duration: steps per master decision (N >= 1).

    Returns:
      [G] expected returns (reward 1 per step ending in the goal).
    """
    action_probs = np.asarray(action_probs, np.float64)
    if action_probs.ndim != 3 or action_probs.shape[1:] != (len(FREE_CELLS), len(ACTION_MOVES)):
        raise ValueError(f"action_probs must be [K, {len(FREE_CELLS)}, {len(ACTION_MOVES)}], got {action_probs.shape}")
    if macro_duration < 1:
        raise ValueError(f"macro_duration must be >= 1, got {macro_duration}")
    moves = np.einsum("kca,acd->kcd", action_probs, transition_matrix())           # [K, cells, cells]
    stretches = [macro_duration] * (episode_length // macro_duration)
    if episode_length % macro_duration:
        stretches.append(episode_length % macro_duration)
    goal_cells = np.asarray(goal_cells, np.int64)
    stretch = {length: _stretch(moves, length, goal_cells) for length in set(stretches)}
    value = np.zeros((len(FREE_CELLS), len(goal_cells)))                          # [cells, G]
    for length in reversed(stretches):
        gained, reach = stretch[length]
        value = (gained + reach @ value).max(axis=0)
    return value[START_CELL]


def _stretch(moves: np.ndarray, length: int, goal_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One master decision's stretch of `length` steps under each policy: (expected reward per goal
    [K, cells, G], where the stretch ends [K, cells, cells])."""
    reach = np.broadcast_to(np.eye(moves.shape[1]), moves.shape)
    gained = np.zeros(moves.shape[:2] + (len(goal_cells),))
    for _ in range(length):
        reach = reach @ moves
        gained = gained + reach[:, :, goal_cells]
    return gained, reach


def optimal_returns(goal_cells, episode_length: int = 100) -> np.ndarray:
    """[len(goal_cells)]: the best expected return from the start cell for each goal cell (what a
    policy that knows the goal can get): `hierarchy_returns` of the four primitive actions with a
    decision every step, i.e. finite-horizon value iteration over these dynamics.

    100 steps: 100 for the start cell itself (push into a wall), 94.5 for the bottom-right corner
    (11, 11); means over the held-out goals: 71.3 for the all-rooms task set (34.7 to 97.2; 45.1 under
    Sutton et al.'s textbook slip, where no policy can stay in a goal cell), 66.7 for the paper task
    set (37.3 to 97.2). A goal that touches a wall can be held (~94-98), an open one only revisited
    (~37-42)."""
    return hierarchy_returns(primitive_policies(), goal_cells, 1, episode_length)


def parse_goal_cells(text: str) -> tuple[int, ...]:
    """Comma-separated goal cells, each a free-cell index (0..103) or a row:col pair on the map
    (e.g. "3,17,11:11") -> cell indices. Raises ValueError, naming what is allowed, for anything
    else: a wall, a cell off the map, an index out of range, an empty list."""
    allowed = (f"a free-cell index 0..{len(FREE_CELLS) - 1} or row:col of a free cell "
               f"(row and col in 0..{len(MAP) - 1}, not a wall 'w' of the map)")
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"no goal cells in {text!r}; each goal cell is {allowed}")
    cells = []
    for part in parts:
        try:
            numbers = [int(n) for n in part.split(":")]
        except ValueError:
            raise ValueError(f"goal cell {part!r} is not {allowed}") from None
        if len(numbers) == 1:
            if not 0 <= numbers[0] < len(FREE_CELLS):
                raise ValueError(f"goal cell {part} is out of range; each goal cell is {allowed}")
            cells.append(numbers[0])
        elif len(numbers) == 2:
            row, col = numbers
            if not (0 <= row < len(MAP) and 0 <= col < len(MAP[0])):
                raise ValueError(f"goal cell {part} is off the map; each goal cell is {allowed}")
            if (row, col) not in CELL_INDEX:
                raise ValueError(f"goal cell {part} is a wall; each goal cell is {allowed}")
            cells.append(CELL_INDEX[(row, col)])
        else:
            raise ValueError(f"goal cell {part!r} is not {allowed}")
    return tuple(cells)


@struct.dataclass
class FourRoomsTask:
    """`goal`: index of the goal cell, int32 [] in [0, 104)."""

    goal: jax.Array


class FourRooms(TaskEnv):
    """The four-rooms task distribution: one task per goal cell of the chosen task set and split.

    Registered as "four_rooms" (the all-rooms task set) and, through its subclasses, as
    "four_rooms_paper" and "four_rooms_original" (`ENV_OF_TASK_SET`).

    Args:
      episode_length: steps per episode (100 in the paper).
      split: which goal cells of the task set `sample_task` draws: "train", "heldout" or "all".
      goal_cells: an explicit tuple of goal cell indices instead of a split.
      task_set: "all_rooms", "paper" or "original" (`TASK_SETS`); default the class's `task_set`.
    """

    name = "four_rooms"
    task_set = "all_rooms"
    observation_size = len(FREE_CELLS)
    action_size = len(ACTION_MOVES)

    def __init__(self, episode_length: int = 100, split: str = "train", goal_cells: tuple[int, ...] | None = None,
                 task_set: str | None = None):
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.task_set = task_set or type(self).task_set
        if self.task_set not in TASK_SETS:
            raise ValueError(f"unknown four-rooms task set {self.task_set!r}; use one of {', '.join(TASK_SETS)}")
        splits = TASK_SETS[self.task_set]
        if goal_cells is None and split in splits and not splits[split]:
            raise ValueError(f"the {self.task_set} task set's {split!r} split has no goal cells; use one of "
                             f"{', '.join(s for s, cells in splits.items() if cells)}")
        self.goal_cells = tasks_of_split(splits, split, goal_cells, len(FREE_CELLS), "goal cell")

    parse_goal_cells = staticmethod(parse_goal_cells)

    def sample_task(self, key: jax.Array) -> FourRoomsTask:
        return FourRoomsTask(goal=jax.random.choice(key, jnp.asarray(self.goal_cells, jnp.int32)))

    def _reset(self, task, key):
        cell = jnp.asarray(START_CELL, jnp.int32)
        return cell, self.observe(cell)

    def _transition(self, task, cell, action, key):
        # One draw from the outcome table: log(0) = -inf never wins.
        outcome = jax.random.categorical(key, jnp.log(jnp.asarray(OUTCOME_PROBS, jnp.float32))[cell, action])
        cell = jnp.asarray(OUTCOME_CELLS)[cell, action, outcome]
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


class FourRoomsPaper(FourRooms):
    """Four rooms with the paper task set: goals in the bottom-right room and its doorway (see the
    module docstring)."""

    name = "four_rooms_paper"
    task_set = "paper"


class FourRoomsOriginal(FourRooms):
    """Four rooms with the original code's task set: its four goals, nothing held out (see the
    module docstring)."""

    name = "four_rooms_original"
    task_set = "original"
