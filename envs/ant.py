"""The Brax ant as a task distribution: the model with walls, and the shared step of every ant task.

Model: Brax's Gym ant (`brax/envs/assets/ant.xml`) with axis-aligned box walls added to the world
body. Collision set-up, chosen by measurement (README, "Ant physics"): the feet touch the floor as in
Brax's ant; the walls collide only with an invisible, massless *bumper* sphere on the torso (radius
0.8, about the reach of the legs), not with every foot and limb. One sphere-box pair per wall instead
of five kept the ant envs at >= 0.5x plain ant speed on the spring backend (13 walls against torso and
four feet ran at 0.28x); the cost is that a foot can reach ~0.3 m into a wall while the body cannot.

Backend: `spring` by default (Brax's fastest for the ant, ~3x `generalized` here; `generalized`
with 13 walls compiled for 100 s and ran 20x slower). `generalized` and `positional` are accepted.

Observation (29): the body state Brax's ant observes (z, orientation, joint angles: q[2:], and all 14
velocities: 27 numbers) followed by the torso's (x, y). Sub-policies see the first 27 only
(`subpolicy_observation_size`), so they are position-free locomotion skills that transfer between
arenas; the master sees where the ant is. Actions: 8 torques in [-1, 1] (clipped).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from brax.io import mjcf
from etils import epath
from flax import struct

from envs.base import TaskEnv

ANT_XML = epath.resource_path("brax") / "envs/assets/ant.xml"
BUMPER_RADIUS = 0.8
WALL_HEIGHT = 1.0  # half height of every wall box (walls are 2 m tall)
BODY_OBSERVATION_SIZE = 27
BACKENDS = ("spring", "generalized", "positional")
PARKED_Z = -10.0  # a wall moved here (under the floor) touches nothing


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
    if backend not in BACKENDS:
        raise ValueError(f"unknown Brax backend {backend!r}; use one of {', '.join(BACKENDS)}")
    sys = mjcf.loads(ant_xml(boxes))
    n_frames = 5
    if backend in ("spring", "positional"):
        sys = sys.tree_replace({"opt.timestep": 0.005})
        n_frames = 10
    if backend == "positional":
        sys = sys.replace(actuator=sys.actuator.replace(gear=200 * jnp.ones_like(sys.actuator.gear)))
    return sys, n_frames


def _pipeline(backend: str):
    if backend == "spring":
        from brax.spring import pipeline
    elif backend == "generalized":
        from brax.generalized import pipeline
    else:
        from brax.positional import pipeline
    return pipeline


@struct.dataclass
class AntState:
    """Inner state of an ant env: the brax `pipeline` state and task-specific `extra` state."""

    pipeline: Any
    extra: Any


class AntTaskEnv(TaskEnv):
    """Shared machinery of the ant tasks: physics, observation, start pose.

    Subclasses define `sample_task`, `boxes` (walls), `start_xy`, `reward(task, before, after,
    action, extra)` and may override `task_system` (task-dependent geometry), `initial_extra` and
    `after_physics` (e.g. an enemy, periodic joint resets).
    """

    observation_size = BODY_OBSERVATION_SIZE + 2
    subpolicy_observation_size = BODY_OBSERVATION_SIZE
    action_size = 8
    continuous_actions = True
    start_xy: tuple[float, float] = (0.0, 0.0)
    reset_noise = 0.1

    def __init__(self, episode_length: int, boxes: Sequence[Box] = (), backend: str = "spring"):
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.backend = backend
        self.boxes = tuple(boxes)
        self.sys, self.n_frames = ant_system(self.boxes, backend)
        self.pipeline = _pipeline(backend)
        self.dt = float(self.sys.opt.timestep) * self.n_frames

    # ---- hooks --------------------------------------------------------------------------------
    def task_system(self, task) -> Any:
        """The physics system of `task` (same for every task unless the geometry depends on it)."""
        return self.sys

    def initial_extra(self, task, key: jax.Array) -> Any:
        """Task-specific state at the start of an episode (none by default)."""
        return ()

    def after_physics(self, task, sys, pipeline_state, extra, key: jax.Array):
        """Task-specific changes after a physics step; returns (pipeline state, extra)."""
        return pipeline_state, extra

    def reward(self, task, before, after, action: jax.Array, extra) -> jax.Array:
        raise NotImplementedError

    # ---- the contract ---------------------------------------------------------------------------
    def start_pose(self, key: jax.Array, xy: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Brax ant's start pose with small noise, placed at `xy` (default `start_xy`): (q, qd)."""
        q_key, qd_key = jax.random.split(key)
        noise = self.reset_noise
        q = jnp.asarray(self.sys.init_q) + jax.random.uniform(q_key, (self.sys.q_size(),), minval=-noise,
                                                               maxval=noise)
        xy = jnp.asarray(self.start_xy, jnp.float32) if xy is None else xy
        q = q.at[:2].set(xy + q[:2])
        qd = noise * jax.random.normal(qd_key, (self.sys.qd_size(),))
        return q, qd

    def _reset(self, task, key):
        pose_key, extra_key = jax.random.split(key)
        q, qd = self.start_pose(pose_key)
        inner = AntState(pipeline=self.pipeline.init(self.task_system(task), q, qd),
                         extra=self.initial_extra(task, extra_key))
        return inner, self.observe(inner.pipeline)

    def physics_step(self, sys, pipeline_state, action: jax.Array):
        """`n_frames` physics steps with the torques `action` [8] (clipped to [-1, 1])."""
        action = jnp.clip(action, -1.0, 1.0)

        def frame(state, _):
            return self.pipeline.step(sys, state, action), None

        return jax.lax.scan(frame, pipeline_state, (), self.n_frames)[0]

    def _transition(self, task, inner, action, key):
        sys = self.task_system(task)
        after = self.physics_step(sys, inner.pipeline, action)
        reward = self.reward(task, inner.pipeline, after, action, inner.extra)
        after, extra = self.after_physics(task, sys, after, inner.extra, key)
        inner = AntState(pipeline=after, extra=extra)
        return inner, self.observe(after), reward, jnp.zeros((), bool)

    @staticmethod
    def observe(pipeline_state) -> jax.Array:
        """Observation [29]: q[2:] (13), qd (14), then the torso's (x, y)."""
        return jnp.concatenate([pipeline_state.q[2:], pipeline_state.qd, pipeline_state.q[:2]])

    @staticmethod
    def torso_xy(pipeline_state) -> jax.Array:
        """The torso's (x, y) [..., 2]."""
        return pipeline_state.x.pos[..., 0, :2]


def parked_geom_positions(sys, boxes: Sequence[Box], present: Sequence[bool]) -> np.ndarray:
    """`sys.geom_pos` [ngeom, 3] with every wall whose `present` flag is False moved under the floor.

    The walls are the geoms named `wall_i`; other geoms keep their positions."""
    geom_pos = np.array(sys.geom_pos, np.float32)
    names = _geom_names(sys)
    for i, keep in enumerate(present):
        if not keep:
            geom_pos[names.index(f"wall_{i}"), 2] = PARKED_Z
    return geom_pos


def _geom_names(sys) -> list[str]:
    import mujoco

    model = sys.mj_model
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) or "" for i in range(model.ngeom)]
