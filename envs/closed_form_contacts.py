"""Closed-form contacts for Brax's spring pipeline: a body whose touching parts are spheres and
capsules against the world's planes and axis-aligned boxes (the humanoid's floor and ceiling).

Brax's `brax.contact.get` hands every geom pair to MuJoCo MJX's general colliders. For a sphere or
capsule against a box, MJX runs its convex-polytope routine (separating axes over the box's faces
and edges), several times the cost of a plane pair. Against a box that does not rotate (a geom of the
world body with the identity orientation), the same contact has a closed form: clamp the point
into the box. And Brax's spring pipeline resolves contacts at a cost per contact, then *averages*
the impulses of the contacts that act on each link, so the contacts of one link against one world
geom can be merged into one without changing what the pipeline does with them.

`ClosedFormContacts(sys)` reads the pairs from the model (contype / conaffinity, as MuJoCo pairs
them), groups them by (world geom, link) and makes one contact per group. Its candidates are the
points MJX would make contacts at: a sphere's centre, each end of a capsule's segment:
- against a plane: MJX's `plane_sphere` at the point (MJX's `plane_capsule` is the two ends);
- against a box: the point of that half of the segment nearest the box (alternating projections
  between the half-segment and the box, which converge for two convex sets), and the exact
  sphere-box contact there, with MJX's conventions (distance between the surfaces, negative when
  they overlap; the contact point midway between them). A box edge pressing into the side of a
  capsule is found where the ends alone would miss it.
The group's contact is the mean of its penetrating candidates (distance, point and normal), as
Brax's averaging of their impulses would act (the same up to the inertia term of each impulse's
denominator); with none penetrating, the nearest candidate. On the humanoid this is 8 contacts
(head and torso1 share a link) instead of MJX's 14.

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
from flax import struct
from mujoco.mjx._src import math as mjx_math

PLANE, SPHERE, CAPSULE, BOX = 0, 2, 3, 6
PROJECTION_ITERATIONS = 4   # alternating projections per capsule half (the error shrinks each time)


def _can_touch(sys, g1: int, g2: int) -> bool:
    """MuJoCo's contact filter: different bodies, and one's contype meets the other's conaffinity."""
    if sys.geom_bodyid[g1] == sys.geom_bodyid[g2]:
        return False
    return bool((sys.geom_contype[g1] & sys.geom_conaffinity[g2]) | (sys.geom_contype[g2] & sys.geom_conaffinity[g1]))


@struct.dataclass
class ContactGroups:
    """The (world geom, link) groups of one kind of world geom, G groups of up to C candidates each,
    all in numpy (the model's constants): `world` [G], `link` [G], `first_geom` [G] (the group's first
    body geom, reported as the contact's geom2), and per candidate `geom` [G, C], its point and its
    segment's middle in the link's frame `point_local`, `middle_local` [G, C, 3], `radius` [G, C] and
    `valid` [G, C] (False for padding)."""

    world: np.ndarray
    link: np.ndarray
    first_geom: np.ndarray
    geom: np.ndarray
    point_local: np.ndarray
    middle_local: np.ndarray
    radius: np.ndarray
    valid: np.ndarray


@struct.dataclass
class Candidates:
    """Candidate contacts of G groups x C: `dist` [G, C] (large where not valid), `pos`, `normal`
    [G, C, 3] (normal from the world geom into the body), `valid` [G, C]."""

    dist: jax.Array
    pos: jax.Array
    normal: jax.Array
    valid: np.ndarray


class ClosedFormContacts:
    """The contacts of `sys` (a brax `System`) in closed form; call it as `brax.contact.get`.

    Args:
      sys: a system whose geoms of the world body are planes or boxes with the identity orientation,
        and whose other colliding geoms are spheres or capsules. Anything else: ValueError.
    """

    def __init__(self, sys):
        types, bodies = np.asarray(sys.geom_type), np.asarray(sys.geom_bodyid)
        groups = {PLANE: {}, BOX: {}}
        for w in (g for g in range(len(types)) if bodies[g] == 0):
            for g in (g for g in range(len(types)) if bodies[g] != 0):
                if not _can_touch(sys, w, g):
                    continue
                if types[g] not in (SPHERE, CAPSULE):
                    raise ValueError(f"geom {g} of type {types[g]} touches the world; closed-form contacts "
                                     "take spheres and capsules only")
                aligned = types[w] == BOX and np.allclose(np.asarray(sys.geom_quat[w]), [1, 0, 0, 0])
                if types[w] != PLANE and not aligned:
                    raise ValueError(f"world geom {w} of type {types[w]} is not a plane or an axis-aligned box; "
                                     "closed-form contacts cannot handle it")
                groups[types[w]].setdefault((w, int(bodies[g]) - 1), []).append(g)
        if not groups[PLANE] and not groups[BOX]:
            raise ValueError("the system has no contact pairs")
        self.planes = _contact_groups(sys, groups[PLANE])
        self.boxes = _contact_groups(sys, groups[BOX])
        self.num_contacts = len(groups[PLANE]) + len(groups[BOX])

    def candidates(self, sys, x: base.Transform) -> tuple[Candidates, Candidates]:
        """The candidate contacts (plane groups, box groups) of the body at link transforms `x`."""
        return self._plane_candidates(sys, x), self._box_candidates(sys, x)

    def __call__(self, sys, x: base.Transform) -> base.Contact:
        """Contacts [num_contacts] (one per group: plane groups, then box groups) of the body at link
        transforms `x` [num_links] (world frame)."""
        merged = [_merge(c) for c in self.candidates(sys, x)]
        dist, pos, normal = (jnp.concatenate(field) for field in zip(*merged))
        return _brax_contact(sys, dist, pos, normal, self.planes, self.boxes)

    def _plane_candidates(self, sys, x) -> Candidates:
        """Each candidate point against its plane (MJX's plane_sphere)."""
        groups = self.planes
        points = _to_world(x, groups.link, groups.point_local)
        normal = jax.vmap(lambda q: mjx_math.quat_to_mat(q)[:, 2])(sys.geom_quat[groups.world])[:, None, :]
        dist = jnp.sum((points - sys.geom_pos[groups.world][:, None, :]) * normal, axis=-1) - groups.radius
        normal = jnp.broadcast_to(normal, points.shape)
        return Candidates(dist=dist, pos=_midway(points, normal, groups.radius, dist), normal=normal,
                          valid=groups.valid)

    def _box_candidates(self, sys, x) -> Candidates:
        """Each candidate's half-segment (from its point to its segment's middle) against the box: the
        nearest point of the half, and the sphere-box contact there."""
        groups = self.boxes
        ends = _to_world(x, groups.link, groups.point_local)
        middles = _to_world(x, groups.link, groups.middle_local)
        centre, half = sys.geom_pos[groups.world][:, None, :], sys.geom_size[groups.world][:, None, :]
        centre, half = jnp.broadcast_to(centre, ends.shape), jnp.broadcast_to(half, ends.shape)
        per_candidate = jax.vmap(jax.vmap(_nearest_on_segment_to_box))
        points = per_candidate(ends, middles, centre, half)
        dist, normal = jax.vmap(jax.vmap(_sphere_box))(points, jnp.asarray(groups.radius), centre, half)
        return Candidates(dist=dist, pos=_midway(points, normal, groups.radius, dist), normal=normal,
                          valid=groups.valid)


def _contact_groups(sys, groups: dict) -> ContactGroups:
    """`ContactGroups` of {(world geom, link): [body geoms]}: one candidate per sphere, one per end of
    each capsule, padded to the largest group."""
    rows = []
    for (world, link), geoms in groups.items():
        candidates = []
        for g in geoms:
            centre = np.asarray(sys.geom_pos[g], np.float64)
            if int(sys.geom_type[g]) == CAPSULE:
                w, *u = np.asarray(sys.geom_quat[g], np.float64)
                u, z = np.asarray(u), np.array([0.0, 0.0, 1.0])
                axis = z + 2 * np.cross(u, np.cross(u, z) + w * z)        # the local z axis, rotated
                offset = float(sys.geom_size[g][1]) * axis
                points = [centre + offset, centre - offset]
            else:
                points = [centre]
            candidates += [(g, point, centre, float(sys.geom_size[g][0])) for point in points]
        rows.append((world, link, geoms[0], candidates))
    width = max((len(c) for *_, c in rows), default=1)

    def column(pick, pad):
        return np.asarray([[pick(c) for c in cands] + [pad] * (width - len(cands)) for *_, cands in rows]
                          ).reshape(len(rows), width, *np.shape(pad))

    return ContactGroups(
        world=np.asarray([r[0] for r in rows], np.int32), link=np.asarray([r[1] for r in rows], np.int32),
        first_geom=np.asarray([r[2] for r in rows], np.int32),
        geom=column(lambda c: c[0], -1).astype(np.int32),
        point_local=column(lambda c: c[1], np.zeros(3)).astype(np.float32),
        middle_local=column(lambda c: c[2], np.zeros(3)).astype(np.float32),
        radius=column(lambda c: c[3], 0.0).astype(np.float32),
        valid=column(lambda c: True, False).astype(bool))


def _to_world(x: base.Transform, link: np.ndarray, local: np.ndarray) -> jax.Array:
    """Points [G, C, 3] given in the frames of the links `link` [G] in the world frame."""
    rotate = jax.vmap(jax.vmap(mjx_math.rotate, in_axes=(0, None)))
    return x.pos[link][:, None, :] + rotate(jnp.asarray(local), x.rot[link])


def _merge(candidates: Candidates):
    """One contact per group from its candidates, as Brax's spring pipeline would average their
    impulses: the mean distance, position and normal of the penetrating ones (the nearest valid one
    when none penetrates). Returns (dist [G], pos [G, 3], normal [G, 3])."""
    dist = jnp.where(candidates.valid, candidates.dist, jnp.inf)
    penetrating = dist < 0
    nearest = jax.nn.one_hot(jnp.argmin(dist, axis=-1), dist.shape[-1], dtype=bool)
    weight = jnp.where(jnp.any(penetrating, axis=-1, keepdims=True), penetrating, nearest).astype(jnp.float32)
    weight = weight / jnp.sum(weight, axis=-1, keepdims=True)
    normal = jnp.sum(weight[..., None] * candidates.normal, axis=1)
    normal = normal / jnp.maximum(jnp.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
    mean_dist = jnp.sum(weight * jnp.where(candidates.valid, candidates.dist, 0.0), axis=-1)
    return mean_dist, jnp.sum(weight[..., None] * candidates.pos, axis=1), normal


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
    return points - normal * (radius + 0.5 * dist)[..., None]


def _brax_contact(sys, dist, pos, normal, *groups: ContactGroups) -> base.Contact:
    """A brax `Contact` with the fields the pipelines read (others zero, as MJX fills them); geom2 is
    each group's first body geom."""
    n = dist.shape[0]
    geom1 = np.concatenate([g.world for g in groups])
    geom2 = np.concatenate([g.first_geom for g in groups])
    link = np.concatenate([g.link for g in groups])
    friction = jnp.maximum(sys.geom_friction[geom1], sys.geom_friction[geom2])
    friction = jnp.concatenate([friction[:, :1], friction[:, :1], friction[:, 1:2], friction[:, 2:], friction[:, 2:]],
                               axis=1)
    return base.Contact(
        dist=dist, pos=pos, frame=jax.vmap(mjx_math.make_frame)(normal),
        includemargin=jnp.zeros(n), friction=friction,
        solref=jnp.zeros((n, 2)), solreffriction=jnp.zeros((n, 2)), solimp=jnp.zeros((n, 5)),
        dim=np.full(n, 3), geom1=geom1, geom2=geom2, geom=np.stack([geom1, geom2], axis=-1),
        efc_address=np.full(n, -1), elasticity=0.5 * (sys.elasticity[geom1] + sys.elasticity[geom2]),
        link_idx=(np.full(n, -1, np.int32), link))


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
