"""Trainer invariants: one compile, exact W-then-U schedule, bit-identical sub-policies during
warmup, no update for an inactive sub-policy, fresh masters at slot resets; returns per kind of task."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mlsh_jax import Trainer
from mlsh_jax.rollout import EpisodeStats, slot_rollout
from mlsh_jax.run import summarize


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def one_slot_run():
    """A single slot (W=2, U=1) stepped for 7 updates, with everything recorded per update."""
    config = tiny_config(num_slots=1, warmup_updates=2, joint_updates=1)
    trainer = Trainer(config)
    update = jax.jit(chex.assert_max_traces(trainer.update_step, n=1))
    state = trainer.init(jax.random.PRNGKey(0))
    history = [jax.device_get(state)]
    for _ in range(7):
        state, _ = update(state)
        history.append(jax.device_get(state))
    return config, history


def test_update_compiles_once(one_slot_run):
    # The fixture ran 7 updates through chex.assert_max_traces(n=1): a retrace would have raised.
    assert len(one_slot_run[1]) == 8


def test_schedule_is_exactly_w_then_u_per_lifetime(one_slot_run):
    config, history = one_slot_run
    phases = [int(s.slots.phase[0]) for s in history]
    assert phases == [0, 1, 2, 0, 1, 2, 0, 1]
    sub_changed = [not leaves_equal(a.subs.params, b.subs.params) for a, b in zip(history, history[1:])]
    # Updates made at phases 0, 1 (warmup) leave the sub-policies bit-identical; phase 2 (joint) trains them.
    assert sub_changed == [False, False, True, False, False, True, False]


def test_warmup_updates_train_the_master(one_slot_run):
    _, history = one_slot_run
    assert not leaves_equal(history[0].slots.master.params, history[1].slots.master.params)


def test_slot_reset_draws_a_fresh_master_and_zeroes_its_optimizer(one_slot_run):
    _, history = one_slot_run
    before_reset, after_reset = history[2], history[3]      # lifetime ended at the 3rd update
    first_master = history[0].slots.master.params
    assert not leaves_equal(after_reset.slots.master.params, before_reset.slots.master.params)
    assert not leaves_equal(after_reset.slots.master.params, first_master)
    adam = after_reset.slots.master.opt_state[0]
    assert int(adam.count[0]) == 0
    assert all(float(np.abs(x).max()) == 0.0 for x in jax.tree.leaves((adam.mu, adam.nu)))
    # ...while within a lifetime the optimizer state accumulates.
    assert int(history[2].slots.master.opt_state[0].count[0]) > 0


def test_new_lifetime_draws_a_new_task_sometimes():
    trainer = Trainer(tiny_config(num_slots=1))
    tasks = [int(trainer.new_lifetime(jax.random.PRNGKey(i))[1].correct_goal) for i in range(12)]
    assert set(tasks) == {0, 1}


def test_slots_are_staggered_so_subpolicies_train_every_update():
    config = tiny_config(num_slots=3, warmup_updates=2, joint_updates=1)
    assert config.initial_phases == (0, 1, 2)
    assert config.joint_slot_capacity == 1
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    for _ in range(4):
        previous = jax.device_get(state.subs.params)
        state, metrics = trainer.update(state)
        assert int(metrics["joint_slots"]) == 1
        assert not leaves_equal(previous, state.subs.params)


def test_frozen_subpolicies_start_every_slot_together():
    # Transfer/adaptation: masters live the whole run from update 0 (no slot reset part-way).
    config = tiny_config(num_slots=3, warmup_updates=4, joint_updates=0, train_subpolicies=False)
    assert config.initial_phases == (0, 0, 0)
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    for update in range(3):
        state, _ = trainer.update(state)
        assert np.asarray(state.slots.phase).tolist() == [update + 1] * 3


def test_inactive_subpolicy_gets_no_update():
    config = tiny_config(num_slots=2, warmup_updates=0, joint_updates=1, num_subpolicies=3)
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    normalize = lambda obs: trainer.normalize(state.obs_stats, obs)
    rollout = functools.partial(slot_rollout, trainer.env, config, trainer.master_model, trainer.sub_model,
                                normalize, trainer.subpolicy_view)
    _, steps, _, _ = jax.vmap(rollout, in_axes=(0, None, 0, 0, 0))(
        state.slots.master.params, state.subs.params, state.slots.task, state.slots.envs,
        jax.random.split(jax.random.PRNGKey(1), 2))
    # Only sub-policies 0 and 2 act in this batch.
    sub_index = jnp.zeros(steps.reward.shape, jnp.int32).at[:, 0].set(2)
    in_joint = jnp.ones((2,), bool)
    subs, metrics = trainer._update_subpolicies(state.subs, steps, sub_index, in_joint, normalize,
                                                jax.random.PRNGKey(2), state.update)
    np.testing.assert_array_equal(metrics["trained"], [1.0, 0.0, 1.0])
    pick = lambda tree, k: jax.tree.map(lambda x: x[k], tree)
    assert leaves_equal(pick(subs.params, 1), pick(state.subs.params, 1))
    assert leaves_equal(pick(subs.opt_state, 1), pick(state.subs.opt_state, 1))
    assert not leaves_equal(pick(subs.params, 0), pick(state.subs.params, 0))
    assert not leaves_equal(pick(subs.params, 2), pick(state.subs.params, 2))


def test_one_network_per_sample_updates_subpolicies_as_every_network_masked_did():
    """The sub-policy update (each sample through its own sub-policy, `apply_by_group`) gives the
    parameters that evaluating all K networks on every sample and masking gives (the benchmark's
    reference), on a real update of three sub-policies used unevenly."""
    from benchmarks.update_parts import EveryNetworkTrainer
    config = tiny_config(num_slots=2, warmup_updates=0, joint_updates=1, num_subpolicies=3)
    state = Trainer(config).init(jax.random.PRNGKey(0))
    # `update_step` jitted here without `Trainer.update`'s donation of the state, which both calls read.
    updated = [jax.jit(trainer.update_step)(state)[0].subs.params
               for trainer in (Trainer(config), EveryNetworkTrainer(config))]
    for a, b in zip(*map(jax.tree.leaves, updated)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not leaves_equal(updated[0], state.subs.params)


@pytest.mark.slow  # a benchmark's own check; default tier: test_seeds_share_one_compiled_trainer
def test_the_seed_axis_benchmark_times_the_same_updates_as_one_seed_at_a_time():
    """`benchmarks.seed_axis` compares S updates one after another with one vmap of the update over S
    stacked states: both must compute the same thing for the timing to mean anything."""
    config = tiny_config(num_slots=2, warmup_updates=0, joint_updates=1)
    trainer = Trainer(config)
    states = [trainer.init(jax.random.PRNGKey(seed)) for seed in (0, 1)]
    one_by_one = [jax.jit(trainer.update_step)(state)[0].subs.params for state in states]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    together = jax.jit(jax.vmap(trainer.update_step))(stacked)[0].subs.params
    for seed, params in enumerate(one_by_one):
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(together)):
            np.testing.assert_allclose(a, b[seed], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_seed_axis_benchmark_runs_and_reports_a_ratio():
    from benchmarks import seed_axis
    result = seed_axis.main(["--preset", "smoke", "--slots", "2", "--seeds", "2", "--repeats", "1",
                             "--variant", "MLSH"])
    assert result["seed_axis_speedup"] > 0 and len(result["sequential_s_per_round"]) == 1


def test_shared_baseline_trains_one_policy_on_every_slot():
    config = tiny_config(algorithm="shared", num_subpolicies=1)
    trainer = Trainer(config)
    state = trainer.init(jax.random.PRNGKey(0))
    assert state.slots.master is None
    previous = jax.device_get(state.subs.params)
    state, metrics = trainer.update(state)
    assert int(metrics["joint_slots"]) == config.num_slots
    assert np.isfinite(float(metrics["mean_return_post_warmup"]))
    assert not leaves_equal(previous, state.subs.params)


@pytest.mark.parametrize("algorithm, subpolicy_observation, seen", [
    ("mlsh", "env", 27),      # the ant's body state, not its position
    ("mlsh", "full", 29),     # everything, as in the original code
    ("shared", "env", 27),
    ("shared", "full", 29),   # the experiments' shared baselines: no master tells them where they are
])
def test_subpolicies_see_the_env_view_or_the_whole_observation(algorithm, subpolicy_observation, seen):
    config = tiny_config(env="ant_twowalk", algorithm=algorithm, num_subpolicies=2 if algorithm == "mlsh" else 1,
                         subpolicy_observation=subpolicy_observation)
    trainer = Trainer(config)
    assert trainer.subpolicy_observation_size == seen
    assert trainer.subpolicy_view(jnp.arange(29.0)).tolist() == list(range(seen))
    state = jax.eval_shape(trainer.initial_state, jax.random.PRNGKey(0))
    params = state.subs.params["params"]
    first_layers = [params[net]["Dense_0"]["kernel"].shape for net in ("policy", "value")]
    assert first_layers == [(config.num_subpolicies, seen, 64)] * 2
    jax.eval_shape(trainer.update_step, state)  # rollout, sub-policy update and losses agree on the input


def test_seeds_share_one_compiled_trainer(tmp_path):
    from mlsh_jax.run import train
    seed_0, seed_1 = tiny_config(num_updates=2), tiny_config(num_updates=2, seed=1)
    shared = Trainer(seed_0)
    first = train(seed_0, tmp_path / "s0", trainer=shared, tensorboard=False)
    second = train(seed_1, tmp_path / "s1", trainer=shared, tensorboard=False)
    alone = train(seed_1, tmp_path / "alone", tensorboard=False)
    assert not leaves_equal(first.state.subs.params, second.state.subs.params)
    assert leaves_equal(second.state.subs.params, alone.state.subs.params)
    assert leaves_equal(second.state.slots.master.params, alone.state.slots.master.params)
    with pytest.raises(ValueError, match="differs in num_slots"):
        train(tiny_config(num_slots=4), tmp_path / "other", trainer=shared)


def test_returns_are_logged_per_kind_of_task():
    trainer = Trainer(tiny_config(num_slots=4))
    trainer.env.task_kinds = ("first", "second", "third")   # this instance only
    episodes = EpisodeStats(return_sum=jnp.array([2.0, 6.0, 3.0, 0.0]), episode_count=jnp.array([1.0, 2.0, 1.0, 0.0]),
                            sub_steps=jnp.ones((4, trainer.config.num_subpolicies)))
    metrics = trainer._episode_metrics(episodes, jnp.ones((4,), bool), jnp.zeros((4,), jnp.int32),
                                       task_kind=jnp.array([0, 1, 0, 2]))
    by_task = np.asarray(metrics["mean_return_by_task"])
    np.testing.assert_allclose(by_task[:2], [2.5, 3.0])    # kind 0: (2 + 3) / 2 episodes; kind 1: 6 / 2
    assert np.isnan(by_task[2])                            # no episode of kind 2 ended
    assert float(metrics["mean_return"]) == pytest.approx(11.0 / 4.0)


def test_envs_without_kinds_of_task_log_no_per_kind_returns():
    trainer = Trainer(tiny_config(num_slots=2))
    state, metrics = trainer.update(trainer.init(jax.random.PRNGKey(0)))
    assert trainer.env.task_kinds == () and "mean_return_by_task" not in metrics


def test_summary_weights_every_kind_of_task_equally():
    config = tiny_config()
    rows = [{"update": u, "env_steps": u, "wall_s": u, "interval_s": 1.0, "mean_return": m,
             "mean_return_post_warmup": m, "mean_return_by_task_0": a, "mean_return_by_task_1": b,
             "mean_return_by_task_2": np.nan}
            for u, (m, a, b) in enumerate([(0.0, 0.0, 0.0)] * 18 + [(1.6, 2.0, np.nan), (-0.5, np.nan, -1.0)], 1)]
    summary = summarize(rows, config)     # the last 10%: the last two rows
    assert summary["mean_return"] == pytest.approx(0.55)
    assert summary["mean_return_by_task"][:2] == pytest.approx([2.0, -1.0]) and np.isnan(summary["mean_return_by_task"][2])
    assert summary["mean_return_task_balanced"] == pytest.approx(0.5)
    assert "mean_return_task_balanced" not in summarize([{k: v for k, v in r.items() if "by_task" not in k}
                                                         for r in rows], config)
