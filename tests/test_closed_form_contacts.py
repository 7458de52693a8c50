"""Closed-form contacts (envs/closed_form_contacts.py) against a brute-force signed distance worked
out here with numpy, against MuJoCo MJX's colliders (what Brax uses), and in the humanoid's physics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax import contact as brax_contact
from brax.spring import pipeline as spring

from envs.brax_body import geom_names
from envs.closed_form_contacts import ClosedFormContacts, contacts_from
from envs.humanoid import CRAWL, HumanoidWalkCrawl, WalkCrawlTask


@pytest.fixture(scope="module")
def humanoid():
    return HumanoidWalkCrawl()


def _random_poses(env, key, count, x, heights):
    """Link transforms [count] of the humanoid at torso x, torso heights, random joint angles."""
    def pose(k, z):
        q, qd = env.start_pose(k)
        q = q.at[0].set(x).at[2].set(z).at[7:].add(jax.random.uniform(k, (17,), minval=-0.8, maxval=0.8))
        return spring.init(env.sys, q, qd).x
    return jax.jit(jax.vmap(pose))(jax.random.split(key, count), heights)


def _box_signed_distance(points, centre, half):
    """Naive signed distance [n] of points [n, 3] to an axis-aligned box (negative inside)."""
    local = points - centre
    outside = np.maximum(np.abs(local) - half, 0.0)
    inside_depth = np.min(half - np.abs(local), axis=-1)
    return np.where(np.linalg.norm(outside, axis=-1) > 0, np.linalg.norm(outside, axis=-1), -inside_depth)


def _geom_segment(sys, x, geom):
    """(end a [3], end b [3], radius) of a sphere or capsule geom of link transforms x, in numpy."""
    link = int(sys.geom_bodyid[geom]) - 1
    pos, rot = np.asarray(x.pos[link], np.float64), np.asarray(x.rot[link], np.float64)

    def rotate(v, q):
        w, u = q[0], q[1:]
        return v + 2 * np.cross(u, np.cross(u, v) + w * v)

    def quat_mul(a, b):
        return np.array([a[0] * b[0] - a[1:] @ b[1:], *(a[0] * b[1:] + b[0] * a[1:] + np.cross(a[1:], b[1:]))])

    centre = pos + rotate(np.asarray(sys.geom_pos[geom], np.float64), rot)
    axis = rotate(np.array([0.0, 0.0, 1.0]), quat_mul(rot, np.asarray(sys.geom_quat[geom], np.float64)))
    radius, half_length = float(sys.geom_size[geom][0]), float(sys.geom_size[geom][1])
    half_length = half_length if int(sys.geom_type[geom]) == 3 else 0.0
    return centre - half_length * axis, centre + half_length * axis, radius


def _contact_distances(contact, g1, g2):
    """Distances of the contacts of the pair (g1, g2), in either order."""
    geom1, geom2, dist = (np.asarray(v) for v in (contact.geom1, contact.geom2, contact.dist))
    keep = ((geom1 == g1) & (geom2 == g2)) | ((geom1 == g2) & (geom2 == g1))
    return dist[keep]


def _candidate_distances(groups, candidates, world, geom):
    """The closed-form candidates' distances of body geom `geom` against world geom `world`."""
    keep = (groups.world[:, None] == world) & (groups.geom == geom) & groups.valid
    return np.asarray(candidates.dist)[keep]


def test_contacts_are_one_per_link_and_world_geom(humanoid):
    contacts = ClosedFormContacts(humanoid.sys)
    names = geom_names(humanoid.sys)
    floor, ceiling = names.index("floor"), names.index("ceiling")

    def geoms(groups):
        return sorted(sorted(names[g] for g in row[valid]) for row, valid in zip(groups.geom, groups.valid))

    # head and torso1 are both on the torso link; a capsule has two candidates (its ends)
    assert (contacts.planes.world == floor).all() and (contacts.boxes.world == ceiling).all()
    assert geoms(contacts.planes) == sorted([["butt", "butt"], ["head", "torso1", "torso1"], ["left_foot"],
                                             ["left_hand"], ["right_foot"], ["right_hand"]])
    assert geoms(contacts.boxes) == sorted([["butt", "butt"], ["head", "torso1", "torso1"]])
    x = _random_poses(humanoid, jax.random.PRNGKey(0), 1, -3.0, jnp.array([1.0]))
    single = jax.tree.map(lambda v: v[0], x)
    assert jax.jit(lambda x: contacts(humanoid.sys, x))(single).dist.shape == (8,)
    # MJX: two per capsule pair (traced only: run eagerly, MJX's collision is hundreds of compiles)
    assert jax.eval_shape(lambda x: brax_contact.get(humanoid.sys, x), single).dist.shape == (14,)


def test_the_deepest_ceiling_candidate_of_each_part_matches_a_brute_force_distance(humanoid):
    """Crouched and upright bodies under and at the edge of the ceiling: for each body part, its
    deepest candidate is the part's signed distance to the box, found here by sampling the segment."""
    sys = humanoid.sys
    closed_form = ClosedFormContacts(sys)
    candidates = jax.jit(lambda x: closed_form.candidates(sys, x)[1])
    names = geom_names(sys)
    ceiling = names.index("ceiling")
    centre, half = np.asarray(sys.geom_pos[ceiling], np.float64), np.asarray(sys.geom_size[ceiling], np.float64)
    heights = jnp.linspace(0.6, 1.5, 24)
    checked = 0
    for torso_x in (-3.0, -0.45, -0.6):        # under the ceiling, and across its edge at x = -0.5
        xs = _random_poses(humanoid, jax.random.PRNGKey(1), len(heights), torso_x, heights)
        for i in range(len(heights)):
            x = jax.tree.map(lambda v: v[i], xs)
            found = candidates(x)
            for part in ("torso1", "head", "butt"):
                a, b, radius = _geom_segment(sys, x, names.index(part))
                samples = a + np.linspace(0.0, 1.0, 2001)[:, None] * (b - a)
                expected = _box_signed_distance(samples, centre, half).min() - radius
                got = _candidate_distances(closed_form.boxes, found, ceiling, names.index(part)).min()
                if expected < 0.05:
                    checked += 1
                    assert got == pytest.approx(expected, abs=2e-3), (torso_x, float(heights[i]), part)
    assert checked > 40


def test_floor_and_penetrating_ceiling_candidates_equal_mjx_contacts(humanoid):
    """The candidates are MJX's contact points: against the floor exactly (a capsule's two ends are
    MJX's two contacts); against the ceiling the head exactly and a capsule's deepest point to 2 mm,
    where MJX reports them touching (it reports a separated sphere-box pair at distance 1)."""
    sys = humanoid.sys
    closed_form = ClosedFormContacts(sys)
    ours, theirs = jax.jit(lambda x: closed_form.candidates(sys, x)), jax.jit(lambda x: brax_contact.get(sys, x))
    names = geom_names(sys)
    floor, ceiling = names.index("floor"), names.index("ceiling")
    xs = _random_poses(humanoid, jax.random.PRNGKey(2), 12, -3.0, jnp.linspace(0.2, 1.4, 12))
    compared = 0
    for i in range(12):
        x = jax.tree.map(lambda v: v[i], xs)
        (planes, boxes), mjx = ours(x), theirs(x)
        for g in range(len(names)):
            on_floor = np.sort(_candidate_distances(closed_form.planes, planes, floor, g))
            np.testing.assert_allclose(on_floor, np.sort(_contact_distances(mjx, floor, g)), atol=1e-5)
            under_ceiling = _candidate_distances(closed_form.boxes, boxes, ceiling, g)
            theirs_ceiling = _contact_distances(mjx, ceiling, g)
            if len(theirs_ceiling) and theirs_ceiling.min() < 0:
                tolerance = 1e-5 if names[g] == "head" else 2e-3
                assert under_ceiling.min() == pytest.approx(theirs_ceiling.min(), abs=tolerance), (i, names[g])
                compared += 1
    assert compared > 10


def _torso_contact(humanoid, world_name, torso_xyz, torso_quat):
    """The closed-form contact of the torso link (head and torso1) against `world_name` with the torso
    at `torso_xyz`, orientation `torso_quat`: (dist, pos [3], normal [3])."""
    sys = humanoid.sys
    names = geom_names(sys)
    q, qd = humanoid.start_pose(jax.random.PRNGKey(0))
    q = q.at[:3].set(jnp.asarray(torso_xyz)).at[3:7].set(jnp.asarray(torso_quat))
    contacts = ClosedFormContacts(sys)
    found = jax.jit(lambda q, qd: contacts(sys, spring.init(sys, q, qd).x))(q, qd)
    keep = (np.asarray(found.geom1) == names.index(world_name)) & (np.asarray(found.geom2) == names.index("torso1"))
    assert keep.sum() == 1
    return (float(np.asarray(found.dist)[keep][0]), np.asarray(found.pos)[keep][0],
            np.asarray(found.frame)[keep][0, 0])


def test_a_links_contact_is_the_mean_of_its_penetrating_candidates(humanoid):
    """Worked by hand. Upright at (-3, 0, 0.95) under the ceiling (underside z = 1): torso1 (axis y,
    half length 0.07, radius 0.07) has both ends 2 cm in, at contact points z = 1.01; the head (radius
    0.09, 0.19 above) has its centre 0.14 inside the box, distance -0.23, contact point z = 1.115.
    Mean: -0.09 at z = 1.045, normal down. Rolled 90 deg about x at z = 0.11 over the floor: torso1's
    lower end (z = 0.04) is 3 cm in, its upper end and the head are clear, so the contact is that end
    alone: -0.03 at z = 0.04 - (0.07 - 0.015) = -0.015, normal up."""
    dist, pos, normal = _torso_contact(humanoid, "ceiling", (-3.0, 0.0, 0.95), (1.0, 0.0, 0.0, 0.0))
    assert dist == pytest.approx(-0.09, abs=1e-5)
    np.testing.assert_allclose(pos, [-3.0, 0.0, 1.045], atol=1e-5)
    np.testing.assert_allclose(normal, [0.0, 0.0, -1.0], atol=1e-6)
    half = np.sqrt(0.5)
    dist, pos, normal = _torso_contact(humanoid, "floor", (2.0, 0.0, 0.11), (half, half, 0.0, 0.0))
    assert dist == pytest.approx(-0.03, abs=1e-5)
    np.testing.assert_allclose(pos, [2.0, 0.0, -0.015], atol=1e-5)
    np.testing.assert_allclose(normal, [0.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.slow   # ~45 s; default tier: the same push with the closed form alone (test_humanoid_envs.py)
def test_a_body_pushed_into_the_ceiling_edge_moves_as_under_mjx_contacts(humanoid):
    """Standing in front of the ceiling (x in [-23.5, -0.5]) and pushed backward at 5 m/s: the head
    stops at the ceiling's edge with either contact method, along nearly the same path."""
    from tests.helpers.brax_states import drive, state_at
    mjx_env = HumanoidWalkCrawl(contacts="mjx")
    task = WalkCrawlTask(objective=jnp.asarray(CRAWL, jnp.int32))
    paths = [np.asarray(drive(env, task, state_at(env, task, (1.0, 0.0), (-5.0, 0.0)), 40, jnp.zeros(17))[1])
             for env in (humanoid, mjx_env)]
    assert paths[0][:, 0].min() > -0.7 and paths[1][:, 0].min() > -0.7      # stopped at the edge
    np.testing.assert_allclose(paths[0], paths[1], atol=0.05)


def test_unsupported_geometry_and_methods_are_refused(humanoid):
    sys = humanoid.sys
    ceiling = geom_names(sys).index("ceiling")
    tilted = sys.replace(geom_quat=sys.geom_quat.at[ceiling].set(jnp.array([0.9238795, 0.3826834, 0.0, 0.0])))
    with pytest.raises(ValueError, match="axis-aligned box"):
        ClosedFormContacts(tilted)
    with pytest.raises(ValueError, match="unknown contact method 'exact'"):
        HumanoidWalkCrawl(contacts="exact")
    with pytest.raises(ValueError, match="built for the spring backend"):
        HumanoidWalkCrawl(backend="generalized", contacts="closed_form")
    assert HumanoidWalkCrawl(backend="generalized").contacts is None       # MJX's, as Brax's envs


def test_contacts_from_restores_brax_contacts_after_the_block():
    original = brax_contact.get
    with contacts_from(lambda sys, x: None):
        assert brax_contact.get is not original
    assert brax_contact.get is original
    with contacts_from(None):
        assert brax_contact.get is original
