"""Closed-form contacts for Brax's spring pipeline: a body whose touching parts are spheres and
capsules against the world's planes and axis-aligned boxes (the humanoid's floor and ceiling).

Brax's `brax.contact.get` hands every geom pair to MuJoCo MJX's general colliders. For a sphere or
capsule against a box, MJX runs its convex-polytope routine (separating axes over the box's faces
and edges), about four times the cost of a plane pair; on the humanoid with a ceiling it is a
quarter of the physics time. Against a box that does not rotate (a geom of the world body with the
identity orientation), the same contact has a closed form: clamp the point into the box.

`ClosedFormContacts(sys)` reads the pairs from the model (contype / conaffinity, as MuJoCo pairs
them) and makes one contact per pair. Each body geom is a segment (a sphere's has length 0) with two
ends; per end:
- against a plane: MJX's `plane_sphere` at that end (MJX's `plane_capsule` is these two contacts);
- against a box: the point of that half of the segment nearest the box (alternating projections
  between the half-segment and the box, which converge for two convex sets), and the exact
  sphere-box contact there, with MJX's conventions (distance between the surfaces, negative when
  they overlap; the contact point midway between them). A box edge pressing into the side of a
  capsule is found where the ends alone would miss it.
The pair's contact is the deeper end's, its position and normal blended towards the middle when
both ends are equally deep (`_deeper_end`). Brax's spring pipeline averages the impulses of a link's
contacts, so one contact at the middle of a capsule lying flat acts as MJX's two at its ends; on
the humanoid this is 10 contacts instead of 14, and the contact resolution costs per contact.
The box's position is read from `sys.geom_pos` on every call, so a box parked elsewhere by a task
(a per-env system) moves its contacts with it.

`contacts_from(fn)` makes Brax's pipelines take contacts from `fn(sys, x)` instead of
`brax.contact.get` while a step is traced (the spring pipeline looks the function up at call time).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from brax import base
from mujoco.mjx._src import math as mjx_math

PLANE, SPHERE, CAPSULE, BOX = 0, 2, 3, 6
PROJECTION_ITERATIONS = 4   # alternating projections per capsule half (the error shrinks each time)
END_BLEND = 0.001           # m: how much deeper one end of a capsule must be to take its contact alone


def _can_touch(sys, g1: int, g2: int) -> bool:
    """MuJoCo's contact filter: different bodies, and one's contype meets the other's conaffinity."""
    if sys.geom_bodyid[g1] == sys.geom_bodyid[g2]:
        return False
    return bool((sys.geom_contype[g1] & sys.geom_conaffinity[g2]) | (sys.geom_contype[g2] & sys.geom_conaffinity[g1]))


class ClosedFormContacts:
    """The contacts of `sys` (a brax `System`) in closed form; call it as `brax.contact.get`.

    Args:
      sys: a system whose geoms of the world body are planes or boxes with the identity orientation,
        and whose other colliding geoms are spheres or capsules. Anything else: ValueError.
    """

    def __init__(self, sys):
        types, bodies = np.asarray(sys.geom_type), np.asarray(sys.geom_bodyid)
        world = [g for g in range(len(types)) if bodies[g] == 0]
        moving = [g for g in range(len(types)) if bodies[g] != 0]
        plane_pairs, box_pairs = [], []
        for w in world:
            for g in moving:
                if not _can_touch(sys, w, g):
                    continue
                if types[g] not in (SPHERE, CAPSULE):
                    raise ValueError(f"geom {g} of type {types[g]} touches the world; closed-form contacts "
                                     "take spheres and capsules only")
                if types[w] == PLANE:
                    plane_pairs.append((w, g))
                elif types[w] == BOX and np.allclose(np.asarray(sys.geom_quat[w]), [1, 0, 0, 0]):
                    box_pairs.append((w, g))
                else:
                    raise ValueError(f"world geom {w} of type {types[w]} is not a plane or an axis-aligned box; "
                                     "closed-form contacts cannot handle it")
        if not plane_pairs and not box_pairs:
            raise ValueError("the system has no contact pairs")
        self.plane_pairs = np.asarray(plane_pairs, np.int32).reshape(-1, 2)
        self.box_pairs = np.asarray(box_pairs, np.int32).reshape(-1, 2)
        self.geom_link = bodies.astype(np.int32) - 1      # link of each geom (-1: the world)
        self.num_contacts = len(plane_pairs) + len(box_pairs)
        self.plane_ends, self.plane_radius = _segment_ends_in_link_frame(sys, self.plane_pairs[:, 1])
        self.box_ends, self.box_radius = _segment_ends_in_link_frame(sys, self.box_pairs[:, 1])

    def __call__(self, sys, x: base.Transform) -> base.Contact:
        """Contacts [num_contacts] (one per pair: plane pairs, then box pairs) of the body at link
        transforms `x` [num_links] (world frame)."""
        parts = []
        if len(self.plane_pairs):
            ends = self._world_ends(x, self.plane_pairs, self.plane_ends)
            parts.append(self._plane_contacts(sys, ends, self.plane_radius))
        if len(self.box_pairs):
            ends = self._world_ends(x, self.box_pairs, self.box_ends)
            parts.append(self._box_contacts(sys, ends, self.box_radius))
        dist, pos, normal = (jnp.concatenate(field) for field in zip(*parts))
        pairs = np.concatenate([self.plane_pairs, self.box_pairs])
        return _brax_contact(sys, dist, pos, normal, pairs, self.geom_link)

    def _world_ends(self, x: base.Transform, pairs: np.ndarray, local_ends: np.ndarray):
        """The segment ends [n, 2, 3] of the pairs' body geoms in the world frame."""
        link = self.geom_link[pairs[:, 1]]
        rotate = jax.vmap(jax.vmap(mjx_math.rotate, in_axes=(0, None)))
        return x.pos[link][:, None, :] + rotate(jnp.asarray(local_ends), x.rot[link])

    def _plane_contacts(self, sys, ends, radius):
        """Each body geom's segment ends [n, 2, 3] (radius [n]) against its plane, then the deeper."""
        radius = jnp.asarray(radius)
        plane = self.plane_pairs[:, 0]
        normal = jax.vmap(lambda q: mjx_math.quat_to_mat(q)[:, 2])(sys.geom_quat[plane])[:, None, :]
        dist = jnp.sum((ends - sys.geom_pos[plane][:, None, :]) * normal, axis=-1) - radius[:, None]
        return _deeper_end(dist, ends, jnp.broadcast_to(normal, ends.shape), radius)

    def _box_contacts(self, sys, ends, radius):
        """Each body geom's segment halves (ends [n, 2, 3] to the middle [n, 3]) against its box: the
        point of each half nearest the box, then the deeper."""
        box = self.box_pairs[:, 0]
        middle = jnp.mean(ends, axis=1)
        box_centre, half_extent = sys.geom_pos[box], sys.geom_size[box]
        nearest = jax.vmap(jax.vmap(_nearest_on_segment_to_box, in_axes=(0, None, None, None)))
        points = nearest(ends, middle, box_centre, half_extent)
        radius = jnp.asarray(radius)
        dist, normal = jax.vmap(jax.vmap(_sphere_box, in_axes=(0, None, None, None)))(
            points, radius, box_centre, half_extent)
        return _deeper_end(dist, points, normal, radius)


def _deeper_end(dist, points, normal, radius):
    """One contact per pair from the candidates of its two segment ends (dist [n, 2], points and
    normals [n, 2, 3]): the deeper one's distance, at a position and normal weighted towards it
    (`END_BLEND` m: two ends equally deep, a capsule lying flat, give its middle). Brax's spring
    pipeline averages a link's contact impulses, so one contact at the middle of a flat capsule acts
    as MJX's two at its ends do. Returns (dist [n], pos [n, 3], normal [n, 3])."""
    weight = jax.nn.softmax(-dist / END_BLEND, axis=-1)[..., None]
    point = jnp.sum(weight * points, axis=1)
    normal = jnp.sum(weight * normal, axis=1)
    normal = normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
    dist = jnp.min(dist, axis=-1)
    return dist, _midway(point, normal, radius, dist), normal


def _segment_ends_in_link_frame(sys, geoms: np.ndarray):
    """The two ends [n, 2, 3] of each geom's segment in its link's frame (a capsule's along its local z
    axis, a sphere's both at its centre) and the radii [n], from the model's constants."""
    ends, radii = [], []
    for g in geoms:
        centre = np.asarray(sys.geom_pos[g], np.float64)
        w, *u = np.asarray(sys.geom_quat[g], np.float64)
        u = np.asarray(u)
        z = np.array([0.0, 0.0, 1.0])
        axis = z + 2 * np.cross(u, np.cross(u, z) + w * z)            # the local z axis, rotated
        half = float(sys.geom_size[g][1]) if int(sys.geom_type[g]) == CAPSULE else 0.0
        ends.append([centre + half * axis, centre - half * axis])
        radii.append(float(sys.geom_size[g][0]))
    return np.asarray(ends, np.float32).reshape(-1, 2, 3), np.asarray(radii, np.float32)


def _nearest_on_segment_to_box(end, middle, box_centre, half_extent):
    """The point of the segment [end, middle] nearest the box (alternating projections from `end`,
    unrolled: a loop would be a while loop on every physics step)."""
    span = middle - end
    length2 = jnp.dot(span, span) + 1e-12
    point = end
    for _ in range(PROJECTION_ITERATIONS):
        in_box = jnp.clip(point - box_centre, -half_extent, half_extent) + box_centre
        point = end + jnp.clip(jnp.dot(in_box - end, span) / length2, 0.0, 1.0) * span
    return point


def _sphere_box(point, radius, box_centre, half_extent):
    """Signed distance [] between a sphere at `point` and an axis-aligned box (negative when they
    overlap) and the unit normal [3] from the box to the sphere."""
    local = point - box_centre
    nearest = jnp.clip(local, -half_extent, half_extent)
    offset = local - nearest
    outside_distance = jnp.linalg.norm(offset)
    outside = outside_distance > 1e-9
    # Inside: leave through the nearest face.
    depth = half_extent - jnp.abs(local)
    least = jnp.min(depth)
    face_normal = jnp.where(depth == least, jnp.where(local >= 0, 1.0, -1.0), 0.0)
    face_normal = face_normal / jnp.linalg.norm(face_normal)
    normal = jnp.where(outside, offset / jnp.maximum(outside_distance, 1e-9), face_normal)
    distance = jnp.where(outside, outside_distance, -least)
    return distance - radius, normal


def _midway(points, normal, radius, dist):
    """MJX's contact point: midway between the sphere's surface and the other surface."""
    return points - normal * (radius + 0.5 * dist)[:, None]


def _brax_contact(sys, dist, pos, normal, pairs: np.ndarray, link: np.ndarray) -> base.Contact:
    """A brax `Contact` with the fields the pipelines read (others zero, as MJX fills them)."""
    n = dist.shape[0]
    geom1, geom2 = pairs[:, 0], pairs[:, 1]
    friction = jnp.maximum(sys.geom_friction[geom1], sys.geom_friction[geom2])
    friction = jnp.concatenate([friction[:, :1], friction[:, :1], friction[:, 1:2], friction[:, 2:], friction[:, 2:]],
                               axis=1)
    return base.Contact(
        dist=dist, pos=pos, frame=jax.vmap(mjx_math.make_frame)(normal),
        includemargin=jnp.zeros(n), friction=friction,
        solref=jnp.zeros((n, 2)), solreffriction=jnp.zeros((n, 2)), solimp=jnp.zeros((n, 5)),
        dim=np.full(n, 3), geom1=geom1, geom2=geom2, geom=pairs, efc_address=np.full(n, -1),
        elasticity=0.5 * (sys.elasticity[geom1] + sys.elasticity[geom2]),
        link_idx=(link[geom1], link[geom2]))


@contextlib.contextmanager
def contacts_from(get: Callable | None):
    """While open, Brax's pipelines call `get(sys, x)` where they would call `brax.contact.get`
    (None: leave Brax's). Open it around the code that traces a pipeline step."""
    from brax import contact
    if get is None:
        yield
        return
    original = contact.get
    contact.get = get
    try:
        yield
    finally:
        contact.get = original
