"""2D key-door task (MLSH paper, section 6.1): moving bandits with a key to fetch first.

The moving-bandits world (400x400, start at the centre, 20 units per step, 5 actions: stay, +x, -x,
+y, -y; not clipped to the world). At every episode reset a key and two doors are drawn uniformly in
the world. The agent holds the key once it has come within 50 of it (it keeps it for the rest of the
episode). Reward 1 per step while the agent holds the key and is within 50 of the correct door; the
*task* says which of the two doors is correct and is hidden from the agent. Observation: agent
position, both doors, the key (all scaled by 1/400) and the has-key flag. 100-step episodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from envs.moving_bandits import ACTION_MOVES, GOAL_RADIUS, WORLD_SIZE, MovingBandits

KEY_RADIUS = 50.0


@struct.dataclass
class KeyDoorInner:
    """Agent `position` [2], the two `doors` [2, 2] and the `key` [2] in world units; `has_key` []
    bool."""

    position: jax.Array
    doors: jax.Array
    key: jax.Array
    has_key: jax.Array


class KeyDoor(MovingBandits):
    """The key-door task distribution (2 tasks: which door pays once the key is held); the world,
    actions and tasks are those of moving bandits."""

    name = "key_door"
    observation_size = 9

    def __init__(self, episode_length: int = 100):
        super().__init__(episode_length)

    def _reset(self, task, key):
        points = jax.random.uniform(key, (3, 2), minval=0.0, maxval=WORLD_SIZE)
        inner = KeyDoorInner(position=jnp.full((2,), WORLD_SIZE / 2, jnp.float32), doors=points[:2],
                             key=points[2], has_key=jnp.zeros((), bool))
        return inner, self.observe(inner)

    def _transition(self, task, inner, action, key):
        position = inner.position + jnp.asarray(ACTION_MOVES)[action]
        has_key = inner.has_key | (jnp.linalg.norm(position - inner.key) < KEY_RADIUS)
        inner = inner.replace(position=position, has_key=has_key)
        at_door = jnp.linalg.norm(position - inner.doors[task.correct_goal]) < GOAL_RADIUS
        reward = (has_key & at_door).astype(jnp.float32)
        return inner, self.observe(inner), reward, jnp.zeros((), bool)

    @staticmethod
    def observe(inner: KeyDoorInner) -> jax.Array:
        """Observation [9]: (x, y, door0 x, door0 y, door1 x, door1 y, key x, key y) / 400, has_key."""
        points = jnp.concatenate([inner.position, inner.doors.reshape(-1), inner.key]) / WORLD_SIZE
        return jnp.concatenate([points, inner.has_key.astype(jnp.float32)[None]])
