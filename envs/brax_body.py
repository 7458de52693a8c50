"""A Brax body (ant, humanoid) as a task distribution: the physics step and reset every Brax task
shares, and the geometry helpers for walls that come and go by task.

A subclass gives the model (a brax `System` and physics steps per env step), its observation and the
task: `sample_task`, `reward`, and optionally `task_system` (task-dependent geometry, e.g. walls moved
by `parked_geom_positions`), `initial_extra` / `after_physics` (task state such as an enemy) and
`terminated` (an early end, e.g. a fall).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from brax.io import mjcf
from flax import struct

from envs.base import TaskEnv
from envs.closed_form_contacts import contacts_from

BACKENDS = ("spring", "generalized", "positional")
PARKED_Z = -10.0  # a geom moved here (under the floor) touches nothing


def physics_pipeline(backend: str):
    """The brax pipeline module of `backend`; ValueError for an unknown one."""
    if backend == "spring":
        from brax.spring import pipeline
    elif backend == "generalized":
        from brax.generalized import pipeline
    elif backend == "positional":
        from brax.positional import pipeline
    else:
        raise ValueError(f"unknown Brax backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return pipeline


def load_system(xml: str, backend: str, light_timestep: float, light_gear: dict[str, Any] | None = None):
    """A brax `System` from MJCF text, tuned per backend as Brax's own envs do: the "spring" and
    "positional" backends step with `light_timestep` and 10 frames per env step (5 otherwise), and
    use the actuator gears `light_gear[backend]` where given. Returns (system, frames per env step)."""
    physics_pipeline(backend)   # checks the name
    with warnings.catch_warnings():
        # brax's notice that its pipelines are unmaintained, printed on every model load; the
        # pipelines used here are covered by this project's tests.
        warnings.filterwarnings("ignore", message="Brax System, piplines and environments", category=UserWarning)
        sys = mjcf.loads(xml)
    n_frames = 5
    if backend in ("spring", "positional"):
        sys = sys.tree_replace({"opt.timestep": light_timestep})
        n_frames = 10
    gear = (light_gear or {}).get(backend)
    if gear is not None:
        sys = sys.replace(actuator=sys.actuator.replace(gear=gear * jnp.ones_like(sys.actuator.gear)))
    return sys, n_frames


def geom_names(sys) -> list[str]:
    """Names of the geoms of a brax `System` ("" for unnamed ones), in geom order."""
    import mujoco

    model = sys.mj_model
    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) or "" for i in range(model.ngeom)]


def parked_geom_positions(sys, names: Sequence[str], present: Sequence[bool]) -> np.ndarray:
    """`sys.geom_pos` [ngeom, 3] with every geom of `names` whose `present` flag is False moved under
    the floor; other geoms keep their positions."""
    geom_pos = np.array(sys.geom_pos, np.float32)
    all_names = geom_names(sys)
    for name, keep in zip(names, present, strict=True):
        if not keep:
            geom_pos[all_names.index(name), 2] = PARKED_Z
    return geom_pos


@struct.dataclass
class BodyState:
    """Inner state of a Brax task env: the brax `pipeline` state and task-specific `extra` state."""

    pipeline: Any
    extra: Any


class BraxTaskEnv(TaskEnv):
    """Shared machinery of the Brax tasks: reset with noise, physics steps, the hooks.

    Args:
      episode_length: steps per episode.
      sys: the brax `System` (with every geom any task uses).
      n_frames: physics steps per env step.
      backend: "spring", "generalized" or "positional".
    """

    continuous_actions = True
    contacts = None   # a `brax.contact.get` replacement for the physics step (closed_form_contacts); None: Brax's
    start_xy: tuple[float, float] = (0.0, 0.0)
    reset_noise = 0.1

    def __init__(self, episode_length: int, sys, n_frames: int, backend: str):
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.backend = backend
        self.pipeline = physics_pipeline(backend)
        self.sys, self.n_frames = sys, n_frames
        self.dt = float(self.sys.opt.timestep) * self.n_frames

    # ---- hooks --------------------------------------------------------------------------------
    def task_system(self, task, extra=None) -> Any:
        """The physics system of `task` in an episode whose task state is `extra` (the same for every
        task unless the geometry depends on it)."""
        return self.sys

    def initial_extra(self, task, key: jax.Array) -> Any:
        """Task-specific state at the start of an episode (none by default)."""
        return ()

    def after_physics(self, task, sys, pipeline_state, extra, key: jax.Array):
        """Task-specific changes after a physics step; returns (pipeline state, extra)."""
        return pipeline_state, extra

    def reward(self, task, before, after, action: jax.Array, extra) -> jax.Array:
        raise NotImplementedError

    def terminated(self, task, pipeline_state, extra) -> jax.Array:
        """Whether the episode ends for good after reaching `pipeline_state` (never by default)."""
        return jnp.zeros((), bool)

    def observe(self, pipeline_state, controls: jax.Array | None = None) -> jax.Array:
        """Observation [observation_size] of `pipeline_state`; `controls` [act_size]: the actuator
        controls of the step that reached it (None: zeros, as at a reset)."""
        raise NotImplementedError

    # ---- the contract ---------------------------------------------------------------------------
    def start_pose(self, key: jax.Array, xy: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """The model's initial pose with uniform noise of `reset_noise` on q and normal noise on qd,
        placed at `xy` (default `start_xy`): (q [q_size], qd [qd_size])."""
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
        extra = self.initial_extra(task, extra_key)
        inner = BodyState(pipeline=self.pipeline.init(self.task_system(task, extra), q, qd), extra=extra)
        return inner, self.observe(inner.pipeline)

    @staticmethod
    def to_controls(sys, action: jax.Array) -> jax.Array:
        """The action [action_size] clipped to [-1, 1] and mapped onto the actuators' control ranges
        (as Brax's envs do): controls [act_size]."""
        low, high = sys.actuator.ctrl_range[:, 0], sys.actuator.ctrl_range[:, 1]
        return low + (jnp.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)

    def physics_step(self, sys, pipeline_state, controls: jax.Array):
        """`n_frames` physics steps under the actuator `controls` [act_size] (`to_controls`)."""

        def frame(state, _):
            return self.pipeline.step(sys, state, controls), None

        with contacts_from(self.contacts):
            return jax.lax.scan(frame, pipeline_state, (), self.n_frames)[0]

    def _transition(self, task, inner, action, key):
        sys = self.task_system(task, inner.extra)
        controls = self.to_controls(sys, action)
        after = self.physics_step(sys, inner.pipeline, controls)
        reward = self.reward(task, inner.pipeline, after, action, inner.extra)
        after, extra = self.after_physics(task, sys, after, inner.extra, key)
        inner = BodyState(pipeline=after, extra=extra)
        return inner, self.observe(after, controls), reward, self.terminated(task, after, extra)
