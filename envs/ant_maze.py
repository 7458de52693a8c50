"""Ant mazes (the original code's AntObstaclesGen, with every layout really used): one compiled
program for nine layouts, the layout being part of the task.

Arena x in [0, 48], y in [-24, 24], closed by four walls. A 3x3 grid of 16x16 blocks (centres x in
{8, 24, 40}, y in {16, 0, -16}; they tile the arena, so no slit between blocks lets the body through)
of which each layout removes some, leaving a corridor from the start (2, 0) to the layout's goal:

    layout  rows y=16 / 0 / -16   goal          layout  rows y=16 / 0 / -16   goal
    0       .## .## ###           (8, 24)       5       ##. ... ###           (40, 24)
    1       ### .## .##           (8, -24)      6       ### ... ##.           (40, -24)
    2       #.# ..# ###           (24, 24)      7       ..# .## ###           (32, 16)
    3       ### ..# #.#           (24, -24)     8       ### .## ..#           (32, -16)
    4       ### ... ###           (48, 0)

Task-dependent geometry goes through the physics system pytree (as Brax's domain randomisation
does): the model holds 7 block walls (the most any layout has) and 4 arena walls; a layout moves its
blocks to their cells and parks the unused ones under the floor (`geom_pos` per task). Reward:
velocity toward the goal minus 0.1 |a|^2. Success: the torso within `SUCCESS_RADIUS` of the goal.
Layouts 7 and 8 are held out (never drawn for training; `split="heldout"` draws only them).

`reward_direction="path"` (a documented deviation, off by default) pays the velocity toward the next
cell on the corridor's shortest path instead of straight toward the goal: in the cell the torso is
in, toward the centre of the next open cell on the way (the goal itself in the goal's cell). Two
adjacent cells form one rectangle, so that direction never points into a block; the straight line to
the goal from the start crosses a block in six of the nine layouts (it pays pushing into that block).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.ant import AntTaskEnv, Box
from envs.brax_body import geom_names, parked_geom_positions
from envs.base import tasks_of_split

LAYOUTS = (
    (".## .## ###", (8.0, 24.0)),
    ("### .## .##", (8.0, -24.0)),
    ("#.# ..# ###", (24.0, 24.0)),
    ("### ..# #.#", (24.0, -24.0)),
    ("### ... ###", (48.0, 0.0)),
    ("##. ... ###", (40.0, 24.0)),
    ("### ... ##.", (40.0, -24.0)),
    ("..# .## ###", (32.0, 16.0)),
    ("### .## ..#", (32.0, -16.0)),
)
CELL_X = (8.0, 24.0, 40.0)
CELL_Y = (16.0, 0.0, -16.0)
CELL_HALF = 8.0
ARENA = (0.0, 48.0, -24.0, 24.0)  # x min, x max, y min, y max
START = (2.0, 0.0)
SUCCESS_RADIUS = 4.0
CONTROL_COST = 0.1
HELDOUT_LAYOUTS = (7, 8)
SPLITS = {
    "train": tuple(i for i in range(len(LAYOUTS)) if i not in HELDOUT_LAYOUTS),
    "heldout": HELDOUT_LAYOUTS,
    "all": tuple(range(len(LAYOUTS))),
}


def layout_blocks(layout: int) -> list[Box]:
    """The blocks present in `layout`, as boxes."""
    rows = LAYOUTS[layout][0].split()
    return [Box(x, y, CELL_HALF, CELL_HALF) for row, y in zip(rows, CELL_Y)
            for cell, x in zip(row, CELL_X) if cell == "#"]


MAX_BLOCKS = max(len(layout_blocks(i)) for i in range(len(LAYOUTS)))
REWARD_DIRECTIONS = ("goal", "path")


def cell_of(x, y) -> tuple[jax.Array, jax.Array]:
    """(column, row), int32, of the grid cell holding (x, y), clipped to the grid: columns run with x
    (centres CELL_X), rows from y = 16 down (CELL_Y)."""
    column = jnp.clip((x - ARENA[0]) // (2 * CELL_HALF), 0, len(CELL_X) - 1)
    row = jnp.clip((ARENA[3] - y) // (2 * CELL_HALF), 0, len(CELL_Y) - 1)
    return column.astype(jnp.int32), row.astype(jnp.int32)


def path_targets(layout: int) -> np.ndarray:
    """float32 [rows 3, columns 3, 2]: for each cell of `layout`, the point the `path` reward heads
    for there: the centre of the next open cell on a shortest path (in cells, breadth first, through
    shared faces) to the goal's cell, or the goal in the goal's cell. The goal's cell is the open cell
    whose centre is nearest the goal. Blocked cells, which the torso cannot enter, head for the goal."""
    rows, goal = LAYOUTS[layout][0].split(), np.asarray(LAYOUTS[layout][1], np.float32)
    open_cells = {(r, c) for r, row in enumerate(rows) for c, cell in enumerate(row) if cell == "."}
    centre = {(r, c): np.asarray((CELL_X[c], CELL_Y[r]), np.float32) for r in range(3) for c in range(3)}
    goal_cell = min(sorted(open_cells), key=lambda cell: float(np.linalg.norm(centre[cell] - goal)))
    targets = np.broadcast_to(goal, (3, 3, 2)).copy()
    frontier, seen = [goal_cell], {goal_cell}
    while frontier:  # breadth first from the goal's cell: each newly reached cell heads for its parent
        parent = frontier.pop(0)
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            cell = (parent[0] + dr, parent[1] + dc)
            if cell in open_cells and cell not in seen:
                seen.add(cell)
                targets[cell] = centre[parent]
                frontier.append(cell)
    return targets


def arena_walls() -> list[Box]:
    """The four walls closing the arena, 1 m thick, outside it."""
    x0, x1, y0, y1 = ARENA
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 + 1, (y1 - y0) / 2 + 1
    return [Box(x0 - 0.5, cy, 0.5, hy), Box(x1 + 0.5, cy, 0.5, hy),
            Box(cx, y0 - 0.5, hx, 0.5), Box(cx, y1 + 0.5, hx, 0.5)]


@struct.dataclass
class MazeTask:
    """`layout`: int32 [] in [0, 9); `goal`: the layout's goal (x, y) [2]."""

    layout: jax.Array
    goal: jax.Array


class AntMaze(AntTaskEnv):
    """The nine ant mazes as one task distribution.

    Args:
      split: which layouts `sample_task` draws: "train" (0-6), "heldout" (7, 8) or "all".
      layouts: an explicit tuple of layout indices instead of a split.
      reward_direction: "goal" (the original: velocity straight toward the goal) or "path"
        (velocity toward the next cell on the corridor's shortest path; see the module docstring).
      shaping: `AntTaskEnv`'s `alive_bonus` and `end_when_fallen` (none by default).
    """

    name = "ant_maze"
    start_xy = START

    def __init__(self, episode_length: int = 1000, split: str = "train", layouts: tuple[int, ...] | None = None,
                 backend: str = "spring", reward_direction: str = "goal", **shaping):
        if reward_direction not in REWARD_DIRECTIONS:
            raise ValueError(f"reward_direction must be one of {REWARD_DIRECTIONS}, got {reward_direction!r}")
        self.reward_direction = reward_direction
        self.layouts = tasks_of_split(SPLITS, split, layouts, len(LAYOUTS), "layout")
        slots = layout_blocks(0) + [Box(0.0, 0.0, CELL_HALF, CELL_HALF)] * (MAX_BLOCKS - len(layout_blocks(0)))
        super().__init__(episode_length, boxes=slots + arena_walls(), backend=backend, **shaping)
        self._geom_pos = jnp.asarray(np.stack([self._layout_geom_pos(i) for i in range(len(LAYOUTS))]))
        self._goals = jnp.asarray([goal for _, goal in LAYOUTS], jnp.float32)
        self._path_targets = jnp.asarray(np.stack([path_targets(i) for i in range(len(LAYOUTS))]))

    def _layout_geom_pos(self, layout: int) -> np.ndarray:
        """`geom_pos` [ngeom, 3] of `layout`: its blocks in the first block slots, the rest parked."""
        blocks = layout_blocks(layout)
        present = [True] * len(blocks) + [False] * (MAX_BLOCKS - len(blocks)) + [True] * len(arena_walls())
        geom_pos = parked_geom_positions(self.sys, self.wall_names, present)
        first_wall = self.wall_geom_ids[0]
        for j, block in enumerate(blocks):
            geom_pos[first_wall + j, :2] = (block.x, block.y)
        return geom_pos

    @property
    def wall_geom_ids(self) -> list[int]:
        """Geom indices of the walls (block slots first, then the arena walls)."""
        names = geom_names(self.sys)
        return [names.index(name) for name in self.wall_names]

    def sample_task(self, key):
        layout = jax.random.choice(key, jnp.asarray(self.layouts, jnp.int32))
        return self.task_for(layout)

    @property
    def task_kinds(self) -> tuple[str, ...]:
        return tuple(f"layout {i}" for i in range(len(LAYOUTS)))

    def task_kind(self, task):
        return task.layout

    def task_for(self, layout) -> MazeTask:
        """The task of layout index `layout` (int or int32 [])."""
        layout = jnp.asarray(layout, jnp.int32)
        return MazeTask(layout=layout, goal=self._goals[layout])

    def task_system(self, task, extra=None):
        return self.sys.replace(geom_pos=self._geom_pos[task.layout])

    def heading_target(self, task, xy) -> jax.Array:
        """The point [2] the reward pays moving toward, from the torso's position `xy` [2]."""
        if self.reward_direction == "goal":
            return task.goal
        column, row = cell_of(xy[0], xy[1])
        return self._path_targets[task.layout, row, column]

    def reward(self, task, before, after, action, extra):
        xy0, xy1 = self.torso_xy(before), self.torso_xy(after)
        to_goal = self.heading_target(task, xy0) - xy0
        direction = to_goal / jnp.maximum(jnp.linalg.norm(to_goal), 1e-6)
        velocity = jnp.dot(xy1 - xy0, direction) / self.dt
        return velocity - CONTROL_COST * jnp.sum(jnp.square(jnp.clip(action, -1.0, 1.0)))

    @staticmethod
    def reached_goal(task, pipeline_state) -> jax.Array:
        """Success: the torso within SUCCESS_RADIUS of the goal, bool [...]."""
        return jnp.linalg.norm(AntTaskEnv.torso_xy(pipeline_state) - task.goal, axis=-1) < SUCCESS_RADIUS
