"""The Brax ant as a task distribution: the model with walls, and the shared step of every ant task.

Model: Brax's Gym ant (`brax/envs/assets/ant.xml`) with axis-aligned box walls added to the world
body. Collision set-up, chosen by measurement (docs/results_ant.md, "Physics set-up"): the feet touch the floor as in
Brax's ant; the walls collide only with an invisible, massless *bumper* sphere on the torso (radius
0.8, about the reach of the legs), not with every foot and limb. One sphere-box pair per wall instead
of five kept the ant envs at >= 0.5x plain ant speed on the spring backend (13 walls against torso and
four feet ran at 0.28x); the cost is that a foot can reach ~0.3 m into a wall while the body cannot.

Backend: `spring` by default (Brax's fastest for the ant, ~3x `generalized` here; `generalized`
with 13 walls compiled for 100 s and ran 20x slower). `generalized` and `positional` are accepted.

Observation (29): the body state Brax's ant observes (z, orientation, joint angles: q[2:], and all 14
velocities: 27 numbers) followed by the torso's (x, y). Sub-policies see the first 27 only
(`subpolicy_observation_size`), so they are position-free locomotion skills that transfer between
arenas; the master sees where the ant is. (A run may give its sub-policies the whole observation
instead: `MLSHConfig.subpolicy_observation`.) Actions: 8 torques in [-1, 1] (clipped).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
from etils import epath

from envs.brax_body import BraxTaskEnv, load_system

ANT_XML = epath.resource_path("brax") / "envs/assets/ant.xml"
BUMPER_RADIUS = 0.8
UPRIGHT_Z = (0.2, 1.0)  # torso heights at which Brax's ant counts as healthy
WALL_HEIGHT = 1.0  # half height of every wall box (walls are 2 m tall)
BODY_OBSERVATION_SIZE = 27


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned wall: centre (x, y) and half extents (hx, hy), standing on the floor."""

    x: float
    y: float
    hx: float
    hy: float

    def contains(self, x: float, y: float, margin: float = 0.0) -> bool:
        """Whether the point (x, y) lies inside the box grown by `margin`."""
        return abs(x - self.x) < self.hx + margin and abs(y - self.y) < self.hy + margin


def ant_xml(boxes: Sequence[Box], bumper_radius: float = BUMPER_RADIUS) -> str:
    """Brax's ant MJCF with `boxes` as walls and a bumper sphere on the torso that collides with them.

    Collision filter (contype & conaffinity): floor 0/1, feet 1/0 (as in Brax), bumper 2/0, walls
    0/2; so feet-floor and bumper-wall are the only pairs.
    """
    xml = ANT_XML.read_text()
    torso_geom = '<geom name="torso_geom" pos="0 0 0" size="0.25" type="sphere"/>'
    if torso_geom not in xml:
        raise RuntimeError(f"unexpected ant model in {ANT_XML}: torso geom not found")
    bumper = (f'<geom name="bumper" type="sphere" size="{bumper_radius}" contype="2" conaffinity="0" '
              f'mass="0" rgba="0 0 0 0"/>')
    walls = "".join(
        f'<geom name="wall_{i}" type="box" contype="0" conaffinity="2" pos="{b.x} {b.y} {WALL_HEIGHT}" '
        f'size="{b.hx} {b.hy} {WALL_HEIGHT}" rgba="0.55 0.55 0.65 1"/>'
        for i, b in enumerate(boxes)
    )
    xml = xml.replace(torso_geom, torso_geom + bumper)
    return xml.replace('<body name="torso"', walls + '<body name="torso"', 1)


def ant_system(boxes: Sequence[Box], backend: str = "spring"):
    """The brax `System` of the ant with walls, tuned per backend as `brax.envs.ant.Ant` does.

    Returns (system, physics steps per env step)."""
    return load_system(ant_xml(boxes), backend, light_timestep=0.005, light_gear={"positional": 200.0})


class AntTaskEnv(BraxTaskEnv):
    """Shared machinery of the ant tasks: the model with walls, observation, start pose, and the
    optional shaping that Brax's ant has and the original's ant tasks do not.

    Subclasses define `sample_task`, `boxes` (walls), `start_xy`, `reward(task, before, after,
    action, extra)` and may override the `BraxTaskEnv` hooks.

    Args:
      alive_bonus: added to the task's reward at every step the ant is upright (`is_upright`).
      end_when_fallen: the episode terminates at the first step the ant is not upright.
    """

    observation_size = BODY_OBSERVATION_SIZE + 2
    subpolicy_observation_size = BODY_OBSERVATION_SIZE
    action_size = 8

    def __init__(self, episode_length: int, boxes: Sequence[Box] = (), backend: str = "spring",
                 alive_bonus: float = 0.0, end_when_fallen: bool = False):
        self.boxes = tuple(boxes)
        self.alive_bonus, self.end_when_fallen = float(alive_bonus), bool(end_when_fallen)
        super().__init__(episode_length, *ant_system(self.boxes, backend), backend=backend)

    def _transition(self, task, inner, action, key):
        inner, obs, reward, terminated = super()._transition(task, inner, action, key)
        if self.alive_bonus == 0 and not self.end_when_fallen:
            return inner, obs, reward, terminated
        upright = self.is_upright(inner.pipeline)
        if self.end_when_fallen:
            terminated = terminated | ~upright
        return inner, obs, reward + self.alive_bonus * upright, terminated

    @staticmethod
    def is_upright(pipeline_state) -> jax.Array:
        """bool [...]: the torso's height is in `UPRIGHT_Z` (Brax's ant's healthy range) and its
        up axis points above the horizon (not on its back)."""
        z = pipeline_state.x.pos[..., 0, 2]
        w, x, y, _ = jnp.moveaxis(pipeline_state.x.rot[..., 0, :], -1, 0)
        up_z = 1.0 - 2.0 * (x * x + y * y)           # z component of the torso's rotated z axis
        return (z >= UPRIGHT_Z[0]) & (z <= UPRIGHT_Z[1]) & (up_z > 0)

    @property
    def wall_names(self) -> list[str]:
        """Geom names of the walls, in `boxes` order."""
        return [f"wall_{i}" for i in range(len(self.boxes))]

    @staticmethod
    def observe(pipeline_state, controls=None) -> jax.Array:
        """Observation [29]: q[2:] (13), qd (14), then the torso's (x, y) (`controls` unused)."""
        return jnp.concatenate([pipeline_state.q[2:], pipeline_state.qd, pipeline_state.q[:2]])

    @staticmethod
    def torso_xy(pipeline_state) -> jax.Array:
        """The torso's (x, y) [..., 2]."""
        return pipeline_state.x.pos[..., 0, :2]
