"""The credit rules of the sub-policy update (`mlsh_jax.credit`) on hand-made data: reward rates,
responsibilities, Sinkhorn balance, annealing, staged unfreezing, and how the trainer applies them."""

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlsh_jax import credit
from mlsh_jax.config import PAPER_CREDIT, ConfigError, CreditConfig, MLSHConfig, config_differences
from mlsh_jax.trainer import Trainer
from conftest import tiny_config
from tests.helpers.toy_envs import Choice, ChoiceTask


def softmax_pair(margin):
    """p of the winner of two sub-policies whose logits differ by `margin`."""
    return 1.0 / (1.0 + math.exp(-margin))


def test_reward_rates_average_over_the_steps_each_subpolicy_was_active():
    rewards = jnp.array([[1.0, 0.0, 1.0, 1.0], [-2.0, -4.0, -1.0, -3.0]])
    sub_index = jnp.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    rates, active = credit.reward_rates(rewards, sub_index, 3)
    np.testing.assert_allclose(rates, [[0.5, 1.0, 0.0], [0.0, -2.5, 0.0]])
    np.testing.assert_array_equal(active, [[True, True, False], [False, True, False]])


def test_responsibility_goes_to_the_subpolicy_that_earned_more_in_the_slot():
    rates = jnp.array([[1.0, 0.0], [0.3, 0.3], [-1.0, -2.0], [0.0, 5.0]])
    active = jnp.array([[True, True], [True, True], [True, True], [False, True]])
    p = np.asarray(credit.responsibilities(rates, active, jnp.float32(0.3)))
    # Two active: z = +-1 (up to the epsilon), logits differ by 2 z / temperature.
    z = 0.5 / (0.5 + credit.RATE_EPSILON)
    np.testing.assert_allclose(p[0], [softmax_pair(2 * z / 0.3), 1 - softmax_pair(2 * z / 0.3)], rtol=1e-5)
    np.testing.assert_allclose(p[1], [0.5, 0.5])                      # a tie splits evenly
    assert p[2, 0] > 0.99                                             # negative rewards: less negative wins
    np.testing.assert_allclose(p[3], [0.0, 1.0])                      # an inactive sub-policy gets nothing
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)


def test_a_higher_temperature_shares_the_data_more_evenly():
    rates, active = jnp.array([[1.0, 0.0]]), jnp.array([[True, True]])
    sharp = credit.responsibilities(rates, active, jnp.float32(0.1))[0, 0]
    soft = credit.responsibilities(rates, active, jnp.float32(10.0))[0, 0]
    assert sharp > 0.999 and 0.5 < soft < 0.6


def test_rates_closer_than_the_epsilon_count_as_a_tie():
    rates, active = jnp.array([[1e-6, 0.0]]), jnp.array([[True, True]])
    p = credit.responsibilities(rates, active, jnp.float32(0.3))
    np.testing.assert_allclose(p, [[0.5, 0.5]], atol=1e-2)


def test_sinkhorn_balance_evens_the_shares_and_keeps_zeros():
    p = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [1.0, 0.0], [0.5, 0.5]])
    mask = jnp.array([True, True, True, True, False])
    balanced = np.asarray(credit.balance(p, mask, iterations=50))
    np.testing.assert_allclose(balanced.sum(axis=1)[:4], 1.0, rtol=1e-5)
    np.testing.assert_allclose(balanced.sum(axis=0), [2.0, 2.0], rtol=1e-3)   # 4 slots, 2 each
    assert balanced[3, 1] == 0.0 and np.all(balanced[4] == 0.0)
    # The order of preference within a column survives balancing.
    assert balanced[0, 0] > balanced[1, 0] > balanced[2, 0]
    assert np.array_equal(np.asarray(credit.balance(p, mask, iterations=0)), np.where(mask[:, None], p, 0.0))


def test_balance_leaves_out_a_subpolicy_that_acted_nowhere():
    p = jnp.array([[0.6, 0.4, 0.0], [0.9, 0.1, 0.0]])
    balanced = np.asarray(credit.balance(p, jnp.array([True, True]), iterations=30))
    np.testing.assert_allclose(balanced.sum(axis=0), [1.0, 1.0, 0.0], rtol=1e-3)


def test_temperature_anneals_linearly_then_stays():
    rule = CreditConfig(temperature=0.3, final_temperature=3.3, anneal_updates=10)
    at = lambda u: float(credit.temperature_at(rule, jnp.int32(u)))
    assert at(0) == pytest.approx(0.3) and at(5) == pytest.approx(1.8) and at(10) == pytest.approx(3.3)
    assert at(50) == pytest.approx(3.3)
    assert float(credit.temperature_at(CreditConfig(temperature=0.7), jnp.int32(99))) == pytest.approx(0.7)


def test_staged_unfreezing_opens_one_subpolicy_per_interval():
    rule = CreditConfig(unfreeze_interval=10)
    assert credit.unfrozen(rule, jnp.int32(0), 3).tolist() == [True, False, False]
    assert credit.unfrozen(rule, jnp.int32(10), 3).tolist() == [True, True, False]
    assert credit.unfrozen(rule, jnp.int32(25), 3).tolist() == [True, True, True]
    assert credit.unfrozen(CreditConfig(), jnp.int32(0), 3).tolist() == [True, True, True]


def test_slot_weights_of_each_rule():
    rewards = jnp.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    sub_index = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    mask = jnp.array([True, True, False])
    paper = credit.slot_weights(PAPER_CREDIT, rewards, sub_index, mask, jnp.int32(0), 2)
    np.testing.assert_array_equal(paper, [[1, 1], [1, 1], [0, 0]])
    weights = np.asarray(credit.slot_weights(CreditConfig(temperature=0.1), rewards, sub_index, mask,
                                             jnp.int32(0), 2))
    np.testing.assert_allclose(weights[0], [2.0, 0.0], atol=1e-6)    # K p: the winner gets K
    np.testing.assert_allclose(weights[1], [0.0, 2.0], atol=1e-6)
    np.testing.assert_array_equal(weights[2], [0.0, 0.0])            # not a joint slot
    staged = credit.slot_weights(CreditConfig(rule="paper", unfreeze_interval=5), rewards, sub_index, mask,
                                 jnp.int32(3), 2)
    np.testing.assert_array_equal(staged, [[1, 0], [1, 0], [0, 0]])


def test_the_handover_switches_from_responsibility_to_the_paper_rule_at_its_update():
    rewards = jnp.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    sub_index = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    mask = jnp.array([True, False])
    rule = CreditConfig(temperature=0.1, handover_update=30)
    before = np.asarray(credit.slot_weights(rule, rewards, sub_index, mask, jnp.int32(29), 2))
    np.testing.assert_allclose(before, [[2.0, 0.0], [0.0, 0.0]], atol=1e-6)
    after = np.asarray(credit.slot_weights(rule, rewards, sub_index, mask, jnp.int32(30), 2))
    np.testing.assert_array_equal(after, [[1.0, 1.0], [0.0, 0.0]])   # the paper's weights, masked slots still 0
    np.testing.assert_array_equal(after, credit.slot_weights(PAPER_CREDIT, rewards, sub_index, mask, jnp.int32(30), 2))


def test_credit_settings_are_validated_and_stored():
    for bad, field in [(CreditConfig(rule="wta"), "credit.rule"), (CreditConfig(temperature=0), "credit.temperature"),
                       (CreditConfig(balance_iterations=101), "credit.balance_iterations"),
                       (CreditConfig(unfreeze_interval=-1), "credit.unfreeze_interval"),
                       (CreditConfig(handover_update=-1), "credit.handover_update")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            MLSHConfig(credit=bad).validate()
    config = MLSHConfig(credit=CreditConfig(temperature=0.5, balance_iterations=3))
    assert MLSHConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config_differences(MLSHConfig(), MLSHConfig(credit=PAPER_CREDIT)) == {
        "credit.rule": ("responsibility", "paper")}


def test_a_configuration_stored_before_credit_existed_reads_as_the_paper_rule():
    stored = MLSHConfig().to_dict()
    del stored["credit"]
    assert MLSHConfig.from_dict(stored).credit == PAPER_CREDIT


def test_a_configuration_stored_before_the_handover_existed_never_hands_over():
    stored = MLSHConfig(credit=CreditConfig(handover_update=30)).to_dict()
    del stored["credit"]["handover_update"]
    assert MLSHConfig.from_dict(stored).credit.handover_update == 0


def test_trainer_trains_only_unfrozen_subpolicies_and_reports_credit_shares(tiny):
    config = tiny(num_subpolicies=3, warmup_updates=0, joint_updates=2,
                  credit=CreditConfig(rule="paper", unfreeze_interval=2))
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    before = jax.tree.map(np.asarray, state.subs.params)
    state, metrics = trainer.update(state)            # update 0: only sub-policy 0 may train
    assert np.asarray(metrics["sub"]["trained"]).tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(metrics["sub"]["credit_share"], [1.0, 0.0, 0.0])
    after = jax.tree.map(np.asarray, state.subs.params)
    for k, changed in enumerate([True, False, False]):
        same = all(np.array_equal(a[k], b[k]) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
        assert same != changed, k


def test_responsibility_rule_matches_the_paper_rule_when_every_slot_ties(tiny):
    """With one sub-policy there is nothing to share: both rules give the same update, bit for bit."""
    results = []
    for rule in ("paper", "responsibility"):
        trainer = Trainer(tiny(num_subpolicies=1, credit=CreditConfig(rule=rule)))
        state = trainer.init(jax.random.PRNGKey(0))
        for _ in range(3):
            state, _ = trainer.update(state)
        results.append(jax.tree.map(np.asarray, state.subs.params))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_array_equal(a, b)


@functools.lru_cache(maxsize=None)
def _choice_trainer(credit_rule, num_slots):
    """A trainer of `num_slots` slots of `Choice`, every slot in its joint phase at every update."""
    config = tiny_config(num_slots=num_slots, warmup_updates=0, joint_updates=1, episode_length=10,
                         macro_duration=5, steps_per_slot=100, envs_per_slot=2, credit=credit_rule)
    return Trainer(config, env=Choice())


def _one_update_on_hand_made_tasks(credit_rule, tasks, num_slots):
    """The sub-policies after one update of `num_slots` joint slots of `Choice` with the given tasks
    ((good actions, bonuses)); masters are fresh, so both sub-policies act in every slot."""
    trainer = _choice_trainer(credit_rule, num_slots)
    state = trainer.init(jax.random.PRNGKey(0))
    task = ChoiceTask(good=jnp.asarray(tasks[0], jnp.int32), bonus=jnp.asarray(tasks[1], jnp.float32))
    state = jax.device_put(state.replace(slots=state.slots.replace(task=task)), trainer.state_sharding)
    return jax.device_get(trainer.update(state)[0].subs.params)


def _same_subpolicy(a, b, k):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_a_subpolicy_learns_nothing_from_the_data_of_a_slot_it_lost():
    """Two joint slots: slot A pays action 0, slot B action 1 plus a bonus at every step. At a
    temperature of 0.01 each slot's data goes wholly to the sub-policy that earned more there
    (weights 2 and exactly 0), and the bonus (the same for both sub-policies) changes no winner. So
    the sub-policy that lost slot B updates bit for bit the same with and without the bonus, while
    the winner's update changes; under the paper's rule, where every step trains its sub-policy,
    both change."""
    sharp = CreditConfig(temperature=0.01, handover_update=0)
    for rule, identical in ((sharp, 1), (PAPER_CREDIT, 0)):
        plain = _one_update_on_hand_made_tasks(rule, ([0, 1], [0.0, 0.0]), num_slots=2)
        bonus = _one_update_on_hand_made_tasks(rule, ([0, 1], [0.0, 0.5]), num_slots=2)
        assert sum(_same_subpolicy(plain, bonus, k) for k in (0, 1)) == identical, rule


def test_with_one_joint_slot_the_responsibility_rule_is_the_paper_rule():
    """One joint slot: every sample of a sub-policy carries that sub-policy's one weight (about 2 for
    the slot's winner, 0.0025 for its loser at temperature 0.3), and the loss depends only on the
    ratios of the weights within each sub-policy's data: the update is the paper rule's."""
    tasks = ([1], [0.0])
    soft = _one_update_on_hand_made_tasks(CreditConfig(temperature=0.3, handover_update=0), tasks, num_slots=1)
    paper = _one_update_on_hand_made_tasks(PAPER_CREDIT, tasks, num_slots=1)
    for a, b in zip(jax.tree.leaves(soft), jax.tree.leaves(paper)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
