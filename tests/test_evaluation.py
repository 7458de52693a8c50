"""Returns of learned policies outside training (`mlsh_jax.evaluation`): each episode counted up to
its end, each slot's policy on its own task, in the env given (e.g. a task without its shaping).
References worked out by hand on `Counter`, whose rewards do not depend on the actions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from envs.base import EnvState
from mlsh_jax import Trainer
from mlsh_jax.evaluation import (_hierarchy_episode, _subpolicy_episode, episode_returns, run_hierarchy, run_subpolicy,
                                  slot_returns)
from tests.helpers.toy_envs import Counter, CounterTask


class CounterPlusTen(Counter):
    """`Counter` paying 10 more at every step: the same task with a bonus (a shaped reward)."""

    def _transition(self, task, t, action, key):
        t, obs, reward, terminated = super()._transition(task, t, action, key)
        return t, obs, reward + 10.0, terminated


def test_an_episode_return_sums_the_rewards_up_to_its_first_end():
    reward = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 8, 8]], np.float32)   # [T + 1, n]
    terminated = np.zeros((5, 3), bool)
    truncated = np.zeros((5, 3), bool)
    terminated[2, 0] = True            # copy 0 ends at its second step: 1 + 2
    truncated[4, 1] = True             # copy 1 hits the time limit at the last step: 1 + 2 + 4 + 8
    terminated[1, 2], terminated[3, 2] = True, True    # copy 2 ends at its first step; later ends do not count
    trajectory = EnvState(inner=(), obs=jnp.zeros((5, 3, 1)), reward=jnp.asarray(reward),
                          terminated=jnp.asarray(terminated), truncated=jnp.asarray(truncated),
                          time=jnp.zeros((5, 3), jnp.int32))
    np.testing.assert_array_equal(np.asarray(episode_returns(trajectory)), [3.0, 15.0, 1.0])


@pytest.mark.parametrize("algorithm", ["mlsh", "shared"])
def test_each_slot_is_judged_on_its_own_task_in_the_env_given(algorithm):
    env = Counter(episode_length=8)
    config = tiny_config(num_slots=2, steps_per_slot=16, envs_per_slot=1, macro_duration=4, episode_length=8,
                         algorithm=algorithm, num_subpolicies=2 if algorithm == "mlsh" else 1)
    trainer = Trainer(config, env=env)
    state = trainer.init(jax.random.PRNGKey(0))
    # Slot 0 is in its warmup, slot 1 past it.
    state = state.replace(slots=state.slots.replace(task=CounterTask(end=jnp.asarray([3, 0], jnp.int32)),
                                                    phase=jnp.asarray([0, config.warmup_updates], jnp.int32)))
    # Slot 0's episodes end at their 3rd step: 1 + 2 + 3 = 6; slot 1's run to the limit: 1 + ... + 8 = 36.
    returns = slot_returns(trainer, state, jax.random.PRNGKey(1), episodes=2)
    assert returns["mean_return"] == pytest.approx((6 + 36) / 2)
    assert returns["mean_return_task_balanced"] == pytest.approx(21.0) and returns["episodes"] == 4
    # The same slots in the task with 10 more per step: 6 + 30 and 36 + 80.
    shaped = slot_returns(trainer, state, jax.random.PRNGKey(1), env=CounterPlusTen(episode_length=8), episodes=2)
    assert shaped["mean_return"] == pytest.approx((36 + 116) / 2)
    assert returns["post_warmup_mean_return"] == (None if algorithm == "shared" else pytest.approx(36.0))


def test_every_subpolicy_and_every_call_of_one_shape_reuse_one_compiled_episode():
    env = Counter(episode_length=8)
    trainer = Trainer(tiny_config(num_slots=2, steps_per_slot=16, envs_per_slot=1, macro_duration=4,
                                  episode_length=8, num_subpolicies=3), env=env)
    state = trainer.init(jax.random.PRNGKey(0))
    tasks = CounterTask(end=jnp.asarray([3, 0], jnp.int32))
    for k in range(3):
        trajectory = run_subpolicy(trainer, state, k, tasks, jax.random.PRNGKey(k))
        # Rewards 1, 2, 3 then (episode over at step 3) whatever the counter pays after its reset.
        np.testing.assert_array_equal(np.asarray(trajectory.reward[1:4, 0]), [1.0, 2.0, 3.0])
    run_hierarchy(trainer, state, state.slots.master.params, tasks, jax.random.PRNGKey(0))
    run_hierarchy(trainer, state, state.slots.master.params, tasks, jax.random.PRNGKey(1))
    assert _subpolicy_episode(trainer, env, False)._cache_size() == 1
    assert _hierarchy_episode(trainer, env, False)._cache_size() == 1
