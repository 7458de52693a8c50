"""The master's macro transitions on hand-made trajectories: the reward summed over the N steps of a
macro step, the cut at an episode's end (the steps of the next episode are not added), `final_obs`
before the reset, terminated / truncated; and the sub-policy steps they are made of."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mlsh_jax import Trainer
from mlsh_jax.rollout import reset_slot_envs, slot_rollout
from tests.helpers.toy_envs import Counter, CounterTask

# One env copy, 16 steps, N = 4, episodes of 8 steps unless the task ends them earlier. `Counter`
# observes t and pays t + 1 for the step taken at t. Tables worked out by hand, per macro step:
# (observation at its start, summed reward, final observation, terminated, truncated).
MACRO_STEPS = {
    # The time limit ends episodes at steps 7 and 15: 1+2+3+4, then 5+6+7+8 truncated at t = 8.
    0: [(0, 10, 4, False, False), (4, 26, 8, False, True), (0, 10, 4, False, False), (4, 26, 8, False, True)],
    # Episodes end at their 6th step (rollout steps 5 and 11): macro 1 is cut after 5 + 6 and the
    # first two steps of the next episode (1 + 2) are not added; macro 2 starts at t = 2: 3+4+5+6.
    6: [(0, 10, 4, False, False), (4, 11, 6, True, False), (2, 18, 6, True, False), (0, 10, 4, False, False)],
    # Episodes end at their 3rd step (rollout steps 2, 5, 8, 11, 14): 1+2+3; then t = 1, 2: 2+3; ...
    3: [(0, 6, 3, True, False), (1, 5, 3, True, False), (2, 3, 3, True, False), (0, 6, 3, True, False)],
}
STEP_REWARDS = {0: [1, 2, 3, 4, 5, 6, 7, 8] * 2, 6: [1, 2, 3, 4, 5, 6] * 2 + [1, 2, 3, 4], 3: [1, 2, 3] * 5 + [1]}


@pytest.fixture(scope="module")
def rollout_of():
    """`end -> (sub-policy steps [T, 1], master transitions [M, 1])` of one slot on Counter(end)."""
    env = Counter(episode_length=8)
    config = tiny_config(num_slots=1, steps_per_slot=16, envs_per_slot=1, macro_duration=4, episode_length=8,
                         warmup_updates=0, joint_updates=1)
    trainer = Trainer(config, env=env)
    state = trainer.init(jax.random.PRNGKey(0))
    normalize = functools.partial(trainer.normalize, state.obs_stats)
    master_params = jax.tree.map(lambda x: x[0], state.slots.master.params)

    @jax.jit
    def run(task):
        envs = reset_slot_envs(env, task, jax.random.PRNGKey(1), 1)
        _, steps, macros, _ = slot_rollout(env, config, trainer.master_model, trainer.sub_model, normalize,
                                           trainer.subpolicy_view, master_params, state.subs.params, task, envs,
                                           jax.random.PRNGKey(2))
        return steps, macros

    return lambda end: run(CounterTask(end=jnp.asarray(end, jnp.int32)))


@pytest.mark.parametrize("end", sorted(MACRO_STEPS))
def test_macro_transitions_sum_the_rewards_and_stop_at_the_end_of_the_episode(rollout_of, end):
    steps, macros = rollout_of(end)
    obs, reward, final_obs, terminated, truncated = map(np.array, zip(*MACRO_STEPS[end]))
    np.testing.assert_array_equal(np.asarray(macros.obs)[:, 0, 0], obs)
    np.testing.assert_array_equal(np.asarray(macros.reward)[:, 0], reward)
    np.testing.assert_array_equal(np.asarray(macros.final_obs)[:, 0, 0], final_obs)
    np.testing.assert_array_equal(np.asarray(macros.terminated)[:, 0], terminated)
    np.testing.assert_array_equal(np.asarray(macros.truncated)[:, 0], truncated)
    # The sub-policy steps: every reward, and the observation each step reached (before any reset).
    np.testing.assert_array_equal(np.asarray(steps.reward)[:, 0], STEP_REWARDS[end])
    np.testing.assert_array_equal(np.asarray(steps.final_obs)[:, 0, 0], STEP_REWARDS[end])
    assert steps.reward.shape == (16, 1) and macros.action.shape == (4, 1)
