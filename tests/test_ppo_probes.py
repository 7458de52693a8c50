"""Probe environments for the PPO learner (the flat / shared-policy path of the one trainer).

Each probe isolates one piece: value regression to a constant, bootstrapping at a time limit, and
choosing the best action from the observation. A sign or bootstrap bug fails one of them.
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from flax import struct

from conftest import tiny_config
from envs.base import TaskEnv
from mlsh_jax import Trainer


@struct.dataclass
class NoTask:
    dummy: jax.Array


class ProbeEnv(TaskEnv):
    """One-step episodes; subclasses set the observation and reward."""

    name = "probe"
    observation_size = 1
    action_size = 2
    episode_length = 1

    def sample_task(self, key):
        return NoTask(dummy=jnp.zeros(()))

    def _reset(self, task, key):
        obs = self.observation(key)
        return {"obs": obs}, obs

    def observation(self, key):
        return jnp.zeros((1,))

    def _transition(self, task, inner, action, key):
        return inner, inner["obs"], self.reward(inner["obs"], action), self.terminates


class ConstantRewardTerminal(ProbeEnv):
    """Reward 1, episode terminates: V = 1."""
    terminates = True

    def reward(self, obs, action):
        return jnp.float32(1.0)


class ConstantRewardTimeLimit(ConstantRewardTerminal):
    """Reward 1, episode truncated by the time limit: bootstrapping gives V = 1 / (1 - gamma)."""
    terminates = False


class BestAction(ProbeEnv):
    """Observation +-1; reward 1 for action 1 when it is +1, for action 0 when it is -1."""
    terminates = True

    def observation(self, key):
        return jnp.where(jax.random.bernoulli(key), 1.0, -1.0)[None]

    def reward(self, obs, action):
        return ((obs[0] > 0) == (action == 1)).astype(jnp.float32)


def train_probe(env, gamma=0.9, updates=60, lr=3e-3):
    config = tiny_config(
        algorithm="shared", num_subpolicies=1, macro_duration=1, episode_length=1, warmup_updates=0,
        num_slots=2, steps_per_slot=64, envs_per_slot=8, num_updates=updates,
    )
    config = dataclasses.replace(config, sub=dataclasses.replace(
        config.sub, learning_rate=lr, discount=gamma, value_clip=0.0, epochs=4, num_minibatches=4))
    trainer = Trainer(config, env=env)
    state = trainer.init(jax.random.PRNGKey(0))
    for _ in range(updates):
        state, _ = trainer.update(state)
    params = jax.tree.map(lambda x: x[0], state.subs.params)

    def evaluate(obs):
        normalized = trainer.normalize(state.obs_stats, jnp.asarray(obs, jnp.float32))
        return trainer.sub_model.apply(params, normalized)

    return evaluate


def test_value_learns_constant_reward_of_terminal_step():
    logits, value = train_probe(ConstantRewardTerminal())(jnp.zeros((1,)))
    assert float(value) == pytest.approx(1.0, abs=0.1)


def test_value_bootstraps_at_time_limit():
    # With gamma = 0.5, V = 1 + 0.5 V -> 2. Treating the time limit as terminal would give 1.
    logits, value = train_probe(ConstantRewardTimeLimit(), gamma=0.5, updates=120)(jnp.zeros((1,)))
    assert float(value) == pytest.approx(2.0, abs=0.2)


def test_policy_picks_the_best_action_for_the_observation():
    evaluate = train_probe(BestAction())
    for obs, best in ((1.0, 1), (-1.0, 0)):
        logits, value = evaluate(jnp.array([obs]))
        probability = jax.nn.softmax(logits)[best]
        assert float(probability) > 0.9
        assert float(value) == pytest.approx(1.0, abs=0.15)
