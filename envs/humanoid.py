"""Brax's humanoid as a task distribution: walk / crawl (paper section 6.3; the original code's
HumanoidSeq) and the walk-then-crawl course used for transfer.

Model: Brax's Gym humanoid (`brax/envs/assets/humanoid.xml`, 17 actuators, controls mapped onto its
[-0.4, 0.4] ranges) plus a *ceiling*: a box whose underside is at z = 1.0 (1 m thick, 23 m long,
23 m wide). Where the task has no ceiling, the box is parked under the floor (`PARKED_Z`), so both
tasks are one compiled program with the geometry in the task's `System`.

Collisions (contype & conaffinity): in Brax's model only the feet touch the floor; a crawl needs the
rest of the body to rest on it and the ceiling has to stop the upper body. Floor 0/1, feet and hands
1/0, butt 1/0 (floor), head, torso and butt also 2 (ceiling), ceiling 0/2. Limbs, shins and arms
touch nothing but through their end spheres. The choice and its cost are in docs/results_humanoid.md ("The tasks
as built"). The contacts are computed in closed form (`envs/closed_form_contacts.py`: one per link and world
geom, 8, each the mean of the link's penetrating contact points as Brax's spring pipeline averages
them) on the spring backend; `contacts="mjx"` (the default on the other backends) takes Brax's own
(MuJoCo MJX's colliders, 14).

Observation (246), Brax's humanoid's: q[2:] (22: torso height, orientation, 17 joint angles), qd
(23), the links' inertia about the centre of mass (11 links x (3x3 inertia, mass) = 110), their
centre-of-mass-based velocities (11 x (mass-weighted linear, angular) = 66) and the actuator forces
on the joints (23), then the torso's (x, y). Sub-policies see the first 244 (the body); the master also
sees where it is. The original also observes the external contact forces (cfrc_ext), which Brax's
pipelines do not report (left out, as in Brax's humanoid).

Reward (spec section 3; the original HumanoidSeq / HumanoidCourse), per env step, v the forward
velocity of the centre of mass over the env step (its x displacement / `dt`): walking
`WALK_VELOCITY_WEIGHT` (1.25) * v + 5 while the torso is at z >= 1.0, and the episode ends when it
drops below; crawling -`CRAWL_VELOCITY_WEIGHT` (7.5) * v (backwards under the ceiling pays), no alive
bonus, no early end; both pay a control cost 0.1 |controls|^2. The original pays 0.25 and 1.5 times
the centre of mass's displacement divided by the *physics* timestep; with its frame_skip of 5
physics steps per env step that quotient is 5 times the velocity over the env step, hence 1.25 and
7.5 here. The original's impact cost (0.5e-6 |external contact forces|^2, capped at 10) is left
out: Brax's pipelines do not report contact forces (Brax's own humanoid drops it too).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import struct

from envs.brax_body import BraxTaskEnv, geom_names, load_system, parked_geom_positions
from envs.closed_form_contacts import ClosedFormContacts

HUMANOID_XML = epath.resource_path("brax") / "envs/assets/humanoid.xml"
NUM_LINKS, Q_SIZE, QD_SIZE = 11, 24, 23
# q[2:], qd, com inertia (3x3 + mass per link), com velocity (linear + angular per link), actuator forces
BODY_OBSERVATION_SIZE = (Q_SIZE - 2) + QD_SIZE + 10 * NUM_LINKS + 6 * NUM_LINKS + QD_SIZE   # 244
CEILING_BOTTOM = 1.0          # the underside of the ceiling (m)
CEILING_HALF = (11.5, 11.5, 0.5)
CRAWL_CEILING_X = (-23.5, -0.5)   # walk / crawl: behind the start (spec)
COURSE_CEILING_X = (0.5, 23.5)    # course: behind the point where the objective turns (original xml)
HEALTHY_Z = 1.0
# Per unit of v (m/s over the env step): the original's 0.25 and 1.5 per (displacement / physics
# timestep), times its frame_skip of 5.
WALK_VELOCITY_WEIGHT = 1.25
CRAWL_VELOCITY_WEIGHT = 7.5
ALIVE_BONUS = 5.0
CONTROL_COST = 0.1
CONTROL_LIMIT = 0.4           # the model's actuator control range is [-0.4, 0.4]
CONTACT_METHODS = ("closed_form", "mjx")
WALK, CRAWL = 1, 0            # task indices as in the original (realgoal 1 = no obstacle = walk)
# (geom name, contype): which body parts touch the floor (bit 1) and the ceiling (bit 2).
BODY_CONTACTS = (("right_foot", 1), ("left_foot", 1), ("right_hand", 1), ("left_hand", 1),
                 ("butt", 3), ("head", 3), ("torso1", 3))


def humanoid_xml(ceiling_x: tuple[float, float]) -> str:
    """Brax's humanoid MJCF with the ceiling over x in `ceiling_x` and the contacts of BODY_CONTACTS."""
    xml = HUMANOID_XML.read_text()
    for name, contype in BODY_CONTACTS:
        geoms = re.findall(rf'<geom [^>]*name="{name}"[^>]*/>', xml)
        if len(geoms) != 1:
            raise RuntimeError(f"unexpected humanoid model in {HUMANOID_XML}: geom {name} not found once")
        bare = re.sub(r' (contype|conaffinity)="[^"]*"', "", geoms[0])
        xml = xml.replace(geoms[0], bare.replace("<geom ", f'<geom contype="{contype}" conaffinity="0" ', 1))
    hx, hy, hz = CEILING_HALF
    centre_x = 0.5 * (ceiling_x[0] + ceiling_x[1])
    ceiling = (f'<geom name="ceiling" type="box" contype="0" conaffinity="2" pos="{centre_x} 0 {CEILING_BOTTOM + hz}" '
               f'size="{hx} {hy} {hz}" rgba="0.9 0.2 0.2 0.6"/>')
    return xml.replace('<body name="torso"', ceiling + '<body name="torso"', 1)


def humanoid_system(ceiling_x: tuple[float, float], backend: str = "spring"):
    """The brax `System` of the humanoid with the ceiling, tuned per backend as
    `brax.envs.humanoid.Humanoid` does. Returns (system, physics steps per env step)."""
    gear = np.array([350.0] * 11 + [100.0] * 6)
    return load_system(humanoid_xml(ceiling_x), backend, light_timestep=0.0015,
                       light_gear={"spring": gear, "positional": gear})


class HumanoidTaskEnv(BraxTaskEnv):
    """Shared machinery of the humanoid tasks: model with a ceiling, observation, centre of mass,
    rewards of the two objectives."""

    observation_size = BODY_OBSERVATION_SIZE + 2
    subpolicy_observation_size = BODY_OBSERVATION_SIZE
    action_size = 17
    reset_noise = 0.01
    revision = 2
    revision_notes = {
        1: "walking paid 0.25 v and crawling 1.5 v per env step (5 times too weak) and the observation "
           "was the joint state and (x, y) alone (47 numbers)",
        2: "walking pays 1.25 v + 5 and crawling 7.5 v per env step, as the original does, and the body "
           "observation has Brax's humanoid's centre-of-mass inertia, velocities and actuator forces "
           "(246 numbers)",
    }

    def __init__(self, episode_length: int, ceiling_x: tuple[float, float], backend: str = "spring",
                 contacts: str | None = None):
        contacts = contacts or ("closed_form" if backend == "spring" else "mjx")
        if contacts not in CONTACT_METHODS:
            raise ValueError(f"unknown contact method {contacts!r}; use one of {', '.join(CONTACT_METHODS)}")
        if contacts == "closed_form" and backend != "spring":
            raise ValueError(f"closed-form contacts are built for the spring backend (they fill only what its "
                             f"collision step reads), not {backend!r}; use contacts='mjx' with it")
        super().__init__(episode_length, *humanoid_system(ceiling_x, backend), backend=backend)
        self.contact_method = contacts
        self.contacts = ClosedFormContacts(self.sys) if contacts == "closed_form" else None
        if (self.sys.num_links(), self.sys.q_size(), self.sys.qd_size()) != (NUM_LINKS, Q_SIZE, QD_SIZE):
            raise RuntimeError(f"unexpected humanoid model in {HUMANOID_XML}: {self.sys.num_links()} links, "
                               f"q {self.sys.q_size()}, qd {self.sys.qd_size()}")
        self._parked_geom_pos = jnp.asarray(parked_geom_positions(self.sys, ["ceiling"], [False]))

    def start_pose(self, key, xy=None):
        """Brax humanoid's start: uniform noise of 0.01 on q and qd (no normal noise)."""
        q_key, qd_key = jax.random.split(key)
        noise = self.reset_noise
        q = jnp.asarray(self.sys.init_q) + jax.random.uniform(q_key, (self.sys.q_size(),), minval=-noise, maxval=noise)
        if xy is not None:
            q = q.at[:2].set(xy)
        qd = jax.random.uniform(qd_key, (self.sys.qd_size(),), minval=-noise, maxval=noise)
        return q, qd

    def with_ceiling(self, present) -> object:
        """The system with the ceiling in place (`present` True, bool [] or Python bool) or parked."""
        return self.sys.replace(geom_pos=jnp.where(present, self.sys.geom_pos, self._parked_geom_pos))

    def ceiling_box(self) -> tuple[np.ndarray, np.ndarray]:
        """(centre [3], half extents [3]) of the ceiling where it stands when present."""
        return np.asarray(self.sys.geom_pos[geom_names(self.sys).index("ceiling")]), np.asarray(CEILING_HALF)

    def link_inertia(self):
        """The links' inertia (brax `Inertia`, leading axis [NUM_LINKS]) with masses and moments as the
        backend scales them, as Brax's humanoid computes them."""
        inertia = self.sys.link.inertia
        if self.backend in ("spring", "positional"):
            moments = jax.vmap(jnp.diagonal)(inertia.i) ** (1 - self.sys.spring_inertia_scale)
            inertia = inertia.replace(i=jax.vmap(jnp.diag)(moments),
                                      mass=inertia.mass ** (1 - self.sys.spring_mass_scale))
        return inertia

    def centre_of_mass(self, pipeline_state):
        """(centre of mass [3], link inertia, total mass [], the links' inertial frames) of the body."""
        inertia = self.link_inertia()
        mass_sum = jnp.sum(inertia.mass)
        x_i = pipeline_state.x.vmap().do(inertia.transform)
        com = jnp.sum(inertia.mass[:, None] * x_i.pos, axis=0) / mass_sum
        return com, inertia, mass_sum, x_i

    def centre_of_mass_x(self, pipeline_state) -> jax.Array:
        """x of the body's centre of mass [] (link masses as the backend scales them, like Brax)."""
        return self.centre_of_mass(pipeline_state)[0][0]

    def objective_reward(self, crawling, before, after, action) -> jax.Array:
        """Reward [] of one step under the walk (`crawling` False) or crawl objective."""
        velocity = (self.centre_of_mass_x(after) - self.centre_of_mass_x(before)) / self.dt
        control = CONTROL_COST * jnp.sum(jnp.square(CONTROL_LIMIT * jnp.clip(action, -1.0, 1.0)))
        healthy = torso_height(after) >= HEALTHY_Z
        walk = WALK_VELOCITY_WEIGHT * velocity + jnp.where(healthy, ALIVE_BONUS, 0.0)
        crawl = -CRAWL_VELOCITY_WEIGHT * velocity
        return jnp.where(crawling, crawl, walk) - control

    def observe(self, pipeline_state, controls=None) -> jax.Array:
        """Observation [246]: q[2:] (22), qd (23), com inertia [11, 10], com velocity [11, 6], actuator
        forces (23) under `controls` [17] (None: zeros), then the torso's (x, y); as Brax's humanoid."""
        from brax import actuator, base

        com, inertia, mass_sum, x_i = self.centre_of_mass(pipeline_state)
        about_com = x_i.replace(pos=x_i.pos - com).vmap().do(inertia)
        com_inertia = jnp.hstack([about_com.i.reshape((NUM_LINKS, -1)), inertia.mass[:, None]])
        xd_i = base.Transform.create(pos=x_i.pos - pipeline_state.x.pos).vmap().do(pipeline_state.xd)
        com_velocity = jnp.hstack([inertia.mass[:, None] * xd_i.vel / mass_sum, xd_i.ang])
        controls = jnp.zeros(self.sys.act_size()) if controls is None else controls
        forces = actuator.to_tau(self.sys, controls, pipeline_state.q, pipeline_state.qd)
        q, qd = pipeline_state.q, pipeline_state.qd
        return jnp.concatenate([q[2:], qd, com_inertia.ravel(), com_velocity.ravel(), forces, q[:2]])


def torso_height(pipeline_state) -> jax.Array:
    """z of the torso [...]."""
    return pipeline_state.x.pos[..., 0, 2]


@struct.dataclass
class WalkCrawlTask:
    """`objective`: int32 [], WALK (1) or CRAWL (0)."""

    objective: jax.Array


class HumanoidWalkCrawl(HumanoidTaskEnv):
    """Two tasks: walk forward (no ceiling; the episode ends when the torso drops below 1.0) or crawl
    backward under the ceiling over x in [-23.5, -0.5] (no early end)."""

    name = "humanoid_walkcrawl"
    task_kinds = ("crawl", "walk")  # indexed by CRAWL (0) and WALK (1)

    def __init__(self, episode_length: int = 1000, backend: str = "spring", contacts: str | None = None):
        super().__init__(episode_length, CRAWL_CEILING_X, backend, contacts)

    def sample_task(self, key):
        return WalkCrawlTask(objective=jax.random.randint(key, (), 0, 2, jnp.int32))

    def task_kind(self, task):
        return task.objective

    def task_system(self, task, extra=None):
        return self.with_ceiling(task.objective == CRAWL)

    def reward(self, task, before, after, action, extra):
        return self.objective_reward(task.objective == CRAWL, before, after, action)

    def terminated(self, task, pipeline_state, extra):
        return (task.objective == WALK) & (torso_height(pipeline_state) < HEALTHY_Z)


class HumanoidWalk(HumanoidWalkCrawl):
    """Every task walks (no ceiling; the episode ends when the torso drops below 1.0): the humanoid's
    locomotion task on its own, for comparing learners."""

    name = "humanoid_walk"
    task_kinds = ()

    def sample_task(self, key):
        return WalkCrawlTask(objective=jnp.full((), WALK, jnp.int32))

    def task_kind(self, task):
        return jnp.zeros((), jnp.int32)


@struct.dataclass
class CourseTask:
    """The course has one task; `index` is 0."""

    index: jax.Array


@struct.dataclass
class CourseExtra:
    """`crawling`: bool [], the objective has turned (the torso passed x > TURN_X)."""

    crawling: jax.Array


TURN_X = 25.0


class HumanoidCourse(HumanoidTaskEnv):
    """Walk forward until the torso passes x > 25; from then on the ceiling (x in [0.5, 23.5]) is
    in place behind it and crawling backward pays, to the end of the episode. The walking part ends
    the episode when the torso drops below 1.0, the crawling part never ends early. 3000 steps."""

    name = "humanoid_course"

    def __init__(self, episode_length: int = 3000, backend: str = "spring", contacts: str | None = None):
        super().__init__(episode_length, COURSE_CEILING_X, backend, contacts)

    def sample_task(self, key):
        return CourseTask(index=jnp.zeros((), jnp.int32))

    def initial_extra(self, task, key):
        return CourseExtra(crawling=jnp.zeros((), bool))

    def task_system(self, task, extra=None):
        return self.with_ceiling(False if extra is None else extra.crawling)

    def reward(self, task, before, after, action, extra):
        return self.objective_reward(extra.crawling, before, after, action)

    def after_physics(self, task, sys, pipeline_state, extra, key):
        return pipeline_state, CourseExtra(crawling=extra.crawling | (pipeline_state.q[0] > TURN_X))

    def terminated(self, task, pipeline_state, extra):
        return ~extra.crawling & (torso_height(pipeline_state) < HEALTHY_Z)
