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


def test_every_pair_is_found_once(humanoid):
    contacts = ClosedFormContacts(humanoid.sys)
    names = geom_names(humanoid.sys)
    floor, ceiling = names.index("floor"), names.index("ceiling")
    touching = [names.index(n) for n in ("torso1", "head", "butt", "right_foot", "left_foot", "right_hand",
                                          "left_hand")]
    assert sorted(contacts.plane_pairs.tolist()) == sorted([floor, g] for g in touching)
    assert sorted(contacts.box_pairs.tolist()) == sorted([ceiling, names.index(n)] for n in ("torso1", "head", "butt"))
    x = _random_poses(humanoid, jax.random.PRNGKey(0), 1, -3.0, jnp.array([1.0]))
    single = jax.tree.map(lambda v: v[0], x)
    # One contact per pair (10); MJX makes two per capsule pair (14).
    assert contacts(humanoid.sys, single).dist.shape == (10,)
    assert brax_contact.get(humanoid.sys, single).dist.shape == (14,)


def test_the_deepest_contact_of_each_ceiling_pair_matches_a_brute_force_distance(humanoid):
    """Crouched and upright bodies under and at the edge of the ceiling: for each body part, the deepest
    closed-form contact is the part's signed distance to the box, found here by sampling the segment."""
    sys = humanoid.sys
    closed_form = ClosedFormContacts(sys)
    contacts = jax.jit(lambda x: closed_form(sys, x))
    names = geom_names(sys)
    ceiling = names.index("ceiling")
    centre, half = np.asarray(sys.geom_pos[ceiling], np.float64), np.asarray(sys.geom_size[ceiling], np.float64)
    heights = jnp.linspace(0.6, 1.5, 24)
    checked = 0
    for torso_x in (-3.0, -0.45, -0.6):        # under the ceiling, and across its edge at x = -0.5
        xs = _random_poses(humanoid, jax.random.PRNGKey(1), len(heights), torso_x, heights)
        for i in range(len(heights)):
            x = jax.tree.map(lambda v: v[i], xs)
            found = contacts(x)
            for part in ("torso1", "head", "butt"):
                a, b, radius = _geom_segment(sys, x, names.index(part))
                samples = a + np.linspace(0.0, 1.0, 2001)[:, None] * (b - a)
                expected = _box_signed_distance(samples, centre, half).min() - radius
                got = _contact_distances(found, ceiling, names.index(part)).min()
                if expected < 0.05:
                    checked += 1
                    assert got == pytest.approx(expected, abs=2e-3), (torso_x, float(heights[i]), part)
    assert checked > 40


def test_floor_and_penetrating_ceiling_contacts_equal_mjx(humanoid):
    """MJX reports a separated sphere-box pair at distance 1 (a sentinel): compare where it touches."""
    sys = humanoid.sys
    closed_form = ClosedFormContacts(sys)
    ours, theirs = jax.jit(lambda x: closed_form(sys, x)), jax.jit(lambda x: brax_contact.get(sys, x))
    names = geom_names(sys)
    floor, ceiling = names.index("floor"), names.index("ceiling")
    xs = _random_poses(humanoid, jax.random.PRNGKey(2), 12, -3.0, jnp.linspace(0.2, 1.4, 12))
    for i in range(12):
        x = jax.tree.map(lambda v: v[i], xs)
        a, b = ours(x), theirs(x)
        for g in range(len(names)):
            for world in (floor, ceiling):
                mine, mjx = _contact_distances(a, world, g), _contact_distances(b, world, g)
                if not len(mjx) or mjx.min() > 0.5:
                    continue
                assert len(mine) == 1
                # The floor and the head-ceiling pair exactly; a capsule's two halves against the box
                # each by alternating projections, so a little less exactly.
                tolerance = 1e-5 if world == floor or names[g] == "head" else 2e-3
                assert mine[0] == pytest.approx(mjx.min(), abs=tolerance), (i, names[g], world)


def test_a_capsule_flat_against_the_ceiling_gets_one_contact_at_its_middle(humanoid):
    """The torso upright with its capsule (axis along y, half length 0.07, radius 0.07) 2 cm into the
    ceiling's underside at z = 1: both ends equally deep, so one contact 2 cm deep under the capsule's
    middle (y = 0), midway between the surfaces (z = 1.01), normal down; tilted so that one end is
    1 cm higher, the contact moves to that end (y = +-0.07) and is 2.5 cm deep."""
    sys = humanoid.sys
    names = geom_names(sys)
    torso1, ceiling = names.index("torso1"), names.index("ceiling")
    q, qd = humanoid.start_pose(jax.random.PRNGKey(0))
    q = q.at[:3].set(jnp.array([-3.0, 0.0, 1.0 - 0.07 + 0.02])).at[3:7].set(jnp.array([1.0, 0.0, 0.0, 0.0]))
    x = spring.init(sys, q, qd).x
    found = ClosedFormContacts(sys)(sys, x)
    keep = (np.asarray(found.geom2) == torso1) & (np.asarray(found.geom1) == ceiling)
    np.testing.assert_allclose(np.asarray(found.dist)[keep], [-0.02], atol=1e-5)
    np.testing.assert_allclose(np.asarray(found.pos)[keep], [[-3.0, 0.0, 1.01]], atol=1e-5)
    np.testing.assert_allclose(np.asarray(found.frame)[keep][:, 0], [[0, 0, -1]], atol=1e-6)
    # Rolled about x so that the end at +y rises 1 cm: sin(angle) = 0.01 / 0.14.
    angle = np.arcsin(0.01 / 0.14)
    q = q.at[3:7].set(jnp.array([np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0]))
    found = ClosedFormContacts(sys)(sys, spring.init(sys, q, qd).x)
    keep = (np.asarray(found.geom2) == torso1) & (np.asarray(found.geom1) == ceiling)
    np.testing.assert_allclose(np.asarray(found.dist)[keep], [-0.025], atol=1e-4)
    assert abs(float(np.asarray(found.pos)[keep][0, 1]) - 0.07 * np.cos(angle)) < 2e-3


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


def test_contacts_from_restores_brax_contacts_after_the_block():
    original = brax_contact.get
    with contacts_from(lambda sys, x: None):
        assert brax_contact.get is not original
    assert brax_contact.get is original
    with contacts_from(None):
        assert brax_contact.get is original
