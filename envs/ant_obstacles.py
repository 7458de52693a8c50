"""Ant obstacle course (the original code's AntObstaclesBig): a sparse-reward course through walls
past a chasing enemy, meant to be solved by a master over transferred sub-policies.

Arena walls at x, y = +-40; internal walls at x=-15 (y 3..37), y=20 (x -40..-30), y=-20 and y=-30
(x -30..10), x=10 (y -40..0); all 1 m thick boxes. The ant starts at (-35, 15). Reward 1 per step
while the torso is within sqrt(30) of (35, -35), else 0. An enemy lives in a zone of radius 15
around (25, 30): while the ant is in the zone it chases it (`ENEMY_SPEED` per step), otherwise it
returns to the zone's centre; when it gets within `ENEMY_REACH` of the torso the ant is knocked away
from it (torso velocity set to `KNOCK_SPEED` away from the enemy, plus a hop). Every 300 steps the
ant's joints are reset to the start pose, keeping its x and y, so that it cannot stay fallen. One
task (the course); episodes of 2000 steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.ant import AntTaskEnv, Box

HALF_ARENA = 40.0
WALLS = (
    Box(-15.0, 20.0, 0.5, 17.0),    # x = -15, y 3..37
    Box(-35.0, 20.0, 5.0, 0.5),     # y = 20, x -40..-30
    Box(-10.0, -20.0, 20.0, 0.5),   # y = -20, x -30..10
    Box(-10.0, -30.0, 20.0, 0.5),   # y = -30, x -30..10
    Box(10.0, -20.0, 0.5, 20.0),    # x = 10, y -40..0
)
START = (-35.0, 15.0)
GOAL = (35.0, -35.0)
GOAL_RADIUS = 30.0 ** 0.5
ENEMY_ZONE = (25.0, 30.0)
ENEMY_ZONE_RADIUS = 15.0
ENEMY_SPEED = 0.1     # m per env step (2 m/s)
ENEMY_REACH = 1.5
KNOCK_SPEED = 6.0     # m/s away from the enemy
KNOCK_HOP = 2.0       # m/s upward
JOINT_RESET_EVERY = 300


def arena_walls(half: float = HALF_ARENA) -> list[Box]:
    """Four 1 m walls just outside the square [-half, half]^2."""
    return [Box(-half - 0.5, 0.0, 0.5, half + 1), Box(half + 0.5, 0.0, 0.5, half + 1),
            Box(0.0, -half - 0.5, half + 1, 0.5), Box(0.0, half + 0.5, half + 1, 0.5)]


@struct.dataclass
class CourseTask:
    """The course has a single task; `index` is 0 (kept so tasks batch like every other env's)."""

    index: jax.Array


@struct.dataclass
class CourseExtra:
    """`enemy`: enemy (x, y) [2]; `steps`: env steps since the episode began, int32 []."""

    enemy: jax.Array
    steps: jax.Array


class AntObstacleCourse(AntTaskEnv):
    """The sparse obstacle course with its enemy and periodic joint resets."""

    name = "ant_obstacles"
    start_xy = START
    # Circles a top-down map draws: (label, centre, radius, colour).
    map_zones = (("goal", GOAL, GOAL_RADIUS, "green"), ("enemy zone", ENEMY_ZONE, ENEMY_ZONE_RADIUS, "red"))

    def __init__(self, episode_length: int = 2000, backend: str = "spring", **shaping):
        super().__init__(episode_length, boxes=arena_walls() + list(WALLS), backend=backend, **shaping)

    def sample_task(self, key):
        return CourseTask(index=jnp.zeros((), jnp.int32))

    def initial_extra(self, task, key):
        return CourseExtra(enemy=jnp.asarray(ENEMY_ZONE, jnp.float32), steps=jnp.zeros((), jnp.int32))

    def reward(self, task, before, after, action, extra):
        distance = jnp.linalg.norm(self.torso_xy(after) - jnp.asarray(GOAL))
        return (distance < GOAL_RADIUS).astype(jnp.float32)

    def move_enemy(self, enemy: jax.Array, ant_xy: jax.Array) -> jax.Array:
        """The enemy's next position [2]: toward the ant while the ant is in its zone, else home."""
        zone = jnp.asarray(ENEMY_ZONE)
        ant_in_zone = jnp.linalg.norm(ant_xy - zone) < ENEMY_ZONE_RADIUS
        target = jnp.where(ant_in_zone, ant_xy, zone)
        offset = target - enemy
        step = offset * jnp.minimum(1.0, ENEMY_SPEED / jnp.maximum(jnp.linalg.norm(offset), 1e-6))
        moved = enemy + step
        from_zone = moved - zone
        # The enemy never leaves its zone.
        return zone + from_zone * jnp.minimum(1.0, ENEMY_ZONE_RADIUS / jnp.maximum(jnp.linalg.norm(from_zone), 1e-6))

    def after_physics(self, task, sys, pipeline_state, extra, key):
        ant_xy = self.torso_xy(pipeline_state)
        enemy = self.move_enemy(extra.enemy, ant_xy)
        steps = extra.steps + 1
        away = ant_xy - enemy
        distance = jnp.linalg.norm(away)
        knocked = distance < ENEMY_REACH
        joint_reset = steps % JOINT_RESET_EVERY == 0

        q, qd = pipeline_state.q, pipeline_state.qd
        push = away / jnp.maximum(distance, 1e-6) * KNOCK_SPEED
        knocked_qd = qd.at[:3].set(jnp.concatenate([push, jnp.array([KNOCK_HOP])]))
        start_q, _ = self.start_pose(key, xy=q[:2])
        start_q = start_q.at[:2].set(q[:2])
        new_q = jnp.where(joint_reset, start_q, q)
        new_qd = jnp.where(joint_reset, jnp.zeros_like(qd), jnp.where(knocked, knocked_qd, qd))
        restarted = self.pipeline.init(sys, new_q, new_qd)
        pipeline_state = jax.tree.map(lambda a, b: jnp.where(joint_reset | knocked, a, b), restarted,
                                      pipeline_state)
        return pipeline_state, CourseExtra(enemy=enemy, steps=steps)
