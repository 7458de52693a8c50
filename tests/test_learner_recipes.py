"""The locomotion learner's mechanisms against independent references: the tanh-squashed Gaussian
(brax's implementation and the change-of-variables formula), advantage standardisation per slot and
sub-policy (a plain loop), the GAE cut at sub-policy switches (by hand), the ant's upright test and
shaping on hand-made states, configurations stored before the recipes existed, and bad input."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlsh_jax.config import MAZE_REWARD_DIRECTIONS, ConfigError, MLSHConfig, NetworkConfig, PPOConfig, TaskShaping
from mlsh_jax.losses import compute_gae, standardize
from mlsh_jax.networks import ActorCritic, TanhGaussian
from mlsh_jax.trainer import Trainer, switches
from tests.conftest import tiny_config


# ---- the tanh-squashed Gaussian --------------------------------------------------------------
def _params(seed=0, n=5, a=3):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, 2 * a)) * 1.5


def test_tanh_gaussian_log_prob_matches_brax_and_the_change_of_variables_formula():
    from brax.training.distribution import NormalTanhDistribution

    dist, params = TanhGaussian(3), _params()
    raw = jax.random.normal(jax.random.PRNGKey(1), (5, 3)) * 2.0
    ours = np.asarray(dist.log_prob(params, raw))
    np.testing.assert_allclose(ours, np.asarray(NormalTanhDistribution(3).log_prob(params, raw)), rtol=1e-5, atol=1e-5)
    # By hand: log N(u; mean, std) - log(1 - tanh(u)^2), std = softplus(raw scale) + 0.001.
    p, u = np.asarray(params, np.float64), np.asarray(raw, np.float64)
    mean, std = p[:, :3], np.log1p(np.exp(p[:, 3:])) + 0.001
    by_hand = (-0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
               - np.log(1 - np.tanh(u) ** 2)).sum(-1)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-4)


def test_tanh_gaussian_density_of_the_squashed_action_integrates_to_one():
    dist = TanhGaussian(1)
    params = jnp.asarray([[0.7, -0.4]])
    squashed = np.linspace(-0.999999, 0.999999, 200_001)
    raw = jnp.arctanh(jnp.asarray(squashed, jnp.float32))[:, None]
    density = np.exp(np.asarray(dist.log_prob(jnp.broadcast_to(params, (raw.shape[0], 2)), raw)))
    assert abs(np.trapezoid(density, squashed) - 1.0) < 2e-3


def test_tanh_gaussian_entropy_samples_mode_and_env_action():
    dist, params = TanhGaussian(3), _params(2)
    p = np.asarray(params, np.float64)
    mean, std = p[:, :3], np.log1p(np.exp(p[:, 3:])) + 0.001
    expected = (np.log(std) + 0.5 * (1 + np.log(2 * np.pi)) + np.log(1 - np.tanh(mean) ** 2)).sum(-1)
    np.testing.assert_allclose(np.asarray(dist.entropy(params)), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dist.mode(params)), mean, rtol=1e-6)
    draws = jax.vmap(lambda k: dist.sample(k, params))(jax.random.split(jax.random.PRNGKey(3), 20_000))
    np.testing.assert_allclose(np.asarray(draws.std(0)), std, rtol=0.05)
    env_actions = np.asarray(dist.to_env(draws))
    assert np.all(np.abs(env_actions) <= 1) and np.abs(env_actions).max() > 0.9   # float32 tanh may round to 1


def test_the_locomotion_recipe_builds_brax_sized_networks():
    config = dataclasses.replace(tiny_config(), env="ant_twowalk", episode_length=100, steps_per_slot=100,
                                 macro_duration=50, sub_network=NetworkConfig.locomotion()).validate()
    trainer = Trainer(config)
    params = jax.tree.map(lambda x: x[0], trainer.init(jax.random.PRNGKey(0)).subs.params)["params"]
    kernels = lambda net: [params[net][f"Dense_{i}"]["kernel"].shape for i in range(len(params[net]))]
    assert kernels("policy") == [(27, 32), (32, 32), (32, 32), (32, 32), (32, 16)]
    assert kernels("value") == [(27, 256)] + [(256, 256)] * 4 + [(256, 1)]
    assert isinstance(trainer.sub_model.distribution, TanhGaussian) and "log_std" not in params


def test_the_locomotion_ppo_settings_are_brax_notebooks_per_body_and_the_humanoid_preset_uses_its_own():
    from experiments import ant_maze, ant_twowalk, humanoid

    # Brax's training notebook: ant 4 updates per batch, entropy 1e-2 (32 minibatches of 4096 envs,
    # 16 here); humanoid 8 updates per batch, 32 minibatches, entropy 1e-3; both gamma 0.97,
    # lambda 0.95, clip 0.3, Adam 3e-4.
    expected = {"ant": (4, 16, 1e-2), "humanoid": (8, 32, 1e-3)}
    for body, (epochs, minibatches, entropy) in expected.items():
        ppo = PPOConfig.locomotion(body)
        assert (ppo.epochs, ppo.num_minibatches, ppo.entropy_coef) == (epochs, minibatches, entropy)
        assert (ppo.discount, ppo.gae_lambda, ppo.clip_eps, ppo.value_coef, ppo.learning_rate) == (
            0.97, 0.95, 0.3, 0.5, 3e-4)
    for module, body in ((ant_maze, "ant"), (ant_twowalk, "ant"), (humanoid, "humanoid")):
        sub = module.PRESETS["locomotion"]().sub
        assert (sub.epochs, sub.entropy_coef) == (expected[body][0], expected[body][2]), module.__name__
    with pytest.raises(ConfigError, match="locomotion body must be one of"):
        PPOConfig.locomotion("snake")


def test_the_locomotion_presets_keep_brax_samples_per_sgd_step_not_its_minibatch_count():
    from benchmarks.learner_parity import ANT_SETTINGS, HUMANOID_SETTINGS
    from experiments import ant_maze, humanoid

    # Brax's notebook layout on 1024 env copies (the parity benchmark's): a minibatch is batch_size x
    # unroll samples, the ant 256 x 5 = 1280, the humanoid 512 x 10 = 5120, i.e. 163,840 humanoid
    # samples per iteration over 32 minibatches x 8 epochs = one SGD step per 640 samples.
    assert ANT_SETTINGS.batch_fraction * 1024 * ANT_SETTINGS.unroll == 1280
    assert HUMANOID_SETTINGS.batch_fraction * 1024 * HUMANOID_SETTINGS.unroll == 5120
    # The MLSH cpu layout: 16 slots, of which at most 11 are in their joint phase (W=20, U=40,
    # staggered), x 2000 steps = 22,000 sub-policy samples per update. Brax's count (32 minibatches x
    # 8 epochs) would take 256 SGD steps on them, one per 86 samples; its size takes 22,000 // 5120 = 4
    # minibatches x 8 epochs = 32 steps, one per 688.
    config = humanoid.PRESETS["locomotion"]().validate()
    assert config.joint_slot_capacity * config.steps_per_slot == 22_000
    assert config.sub.minibatches_for(22_000) == 4 and config.sub.epochs == 8
    ant = ant_maze.PRESETS["locomotion"]().validate()
    assert ant.sub.minibatches_for(ant.joint_slot_capacity * ant.steps_per_slot) == 22_000 // 1280 == 17


def test_the_humanoid_presets_standardise_sub_policy_advantages_per_slot_and_the_ant_ones_do_not():
    from experiments import ant_maze, humanoid

    for preset in ("auto", "cpu", "locomotion", "paper", "smoke"):
        assert humanoid.PRESETS[preset]().sub.advantage_normalization == "slot", preset
    assert ant_maze.PRESETS["locomotion"]().sub.advantage_normalization == "minibatch"


def test_a_value_that_sees_the_whole_observation_leaves_the_policy_its_view():
    model = ActorCritic(TanhGaussian(2), hidden_sizes=(8,), policy_input_size=3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((5,)))
    obs = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
    changed = obs.at[:, 3:].add(10.0)               # only the entries the policy does not see
    dist_a, value_a = model.apply(params, obs)
    dist_b, value_b = model.apply(params, changed)
    np.testing.assert_array_equal(np.asarray(dist_a), np.asarray(dist_b))
    assert not np.allclose(np.asarray(value_a), np.asarray(value_b))
    assert params["params"]["policy"]["Dense_0"]["kernel"].shape == (3, 8)
    assert params["params"]["value"]["Dense_0"]["kernel"].shape == (5, 8)


# ---- advantage standardisation per slot and sub-policy ----------------------------------------------
def test_per_slot_and_subpolicy_standardisation_matches_a_plain_loop():
    key_a, key_g, key_w = jax.random.split(jax.random.PRNGKey(0), 3)
    advantages = jax.random.normal(key_a, (3, 6, 4)) * jnp.asarray([1.0, 10.0, 100.0])[:, None, None] + 5.0
    group = jax.random.randint(key_g, (3, 6, 4), 0, 2)
    weights = jax.random.uniform(key_w, (3, 6, 4), minval=0.01, maxval=0.05)     # totals well below 1
    out = np.asarray(jax.vmap(lambda a, w, g: standardize(a, w, g, 2, weight_floor=1e-12))(advantages, weights, group))
    a, g, w = (np.asarray(x, np.float64) for x in (advantages, group, weights))
    for slot in range(3):
        for k in range(2):
            member = g[slot] == k
            x, ww = a[slot][member], w[slot][member]
            mean = (ww * x).sum() / ww.sum()
            std = math.sqrt((ww * (x - mean) ** 2).sum() / ww.sum())
            np.testing.assert_allclose(out[slot][member], (x - mean) / std, rtol=1e-4, atol=1e-4)


# ---- the GAE cut at sub-policy switches -----------------------------------------------------------
def test_switches_mark_the_last_step_before_another_subpolicy_takes_over():
    sub_index = jnp.asarray([[[0], [0], [1], [1], [1], [0]]])               # [C=1, T=6, E=1]
    assert np.asarray(switches(sub_index))[0, :, 0].tolist() == [False, True, False, False, True, False]


def test_a_cut_at_a_switch_bootstraps_with_the_acting_subpolicys_own_value():
    rewards = jnp.asarray([1.0, 2.0, 3.0])
    values = jnp.asarray([0.5, 0.4, 0.3])
    next_values = jnp.asarray([0.45, 9.0, 0.2])     # at step 1 the own value of the next state is 9
    false = jnp.zeros(3, bool)
    cut = jnp.asarray([False, True, False])
    gamma, lam = 0.9, 0.8
    advantages, _ = compute_gae(rewards, values, next_values, false, cut, gamma, lam)
    d2 = 3.0 + gamma * 0.2 - 0.3
    d1 = 2.0 + gamma * 9.0 - 0.4                    # not continued into step 2's advantage
    d0 = 1.0 + gamma * 0.45 - 0.5
    np.testing.assert_allclose(np.asarray(advantages), [d0 + gamma * lam * d1, d1, d2], rtol=1e-6)


# ---- the ant's upright test and shaping ------------------------------------------------------------
@pytest.fixture(scope="module")
def twowalk_pair():
    from envs.ant_twowalk import AntTwoWalk
    return AntTwoWalk(episode_length=20), AntTwoWalk(episode_length=20, alive_bonus=1.5, end_when_fallen=True)


def _placed(env, height, rotation):
    task = env.sample_task(jax.random.PRNGKey(0))
    state = env.reset(task, jax.random.PRNGKey(1))
    q = state.inner.pipeline.q.at[2].set(height).at[3:7].set(jnp.asarray(rotation, jnp.float32))
    pipeline = env.pipeline.init(env.sys, q, jnp.zeros_like(state.inner.pipeline.qd))
    return task, state.replace(inner=state.inner.replace(pipeline=pipeline))


@pytest.mark.parametrize("height, rotation, upright", [
    (0.55, (1.0, 0.0, 0.0, 0.0), True),
    (1.3, (1.0, 0.0, 0.0, 0.0), False),                       # above Brax's healthy range
    (0.55, (0.0, 1.0, 0.0, 0.0), False),                      # on its back (180 degrees about x)
    (0.55, (math.cos(0.3), 0.0, math.sin(0.3), 0.0), True),    # tilted 34 degrees
])
def test_upright_test_on_hand_placed_bodies(twowalk_pair, height, rotation, upright):
    plain, _ = twowalk_pair
    _, state = _placed(plain, height, rotation)
    assert bool(plain.is_upright(state.inner.pipeline)) == upright


def test_alive_bonus_and_the_end_when_fallen_shift_only_what_they_say(twowalk_pair):
    plain, shaped = twowalk_pair
    action = jnp.zeros(8)
    for rotation, upright in (((1.0, 0.0, 0.0, 0.0), True), ((0.0, 1.0, 0.0, 0.0), False)):
        task, state = _placed(plain, 0.55, rotation)
        a = jax.jit(plain.step)(task, state, action, jax.random.PRNGKey(2))
        b = jax.jit(shaped.step)(task, state, action, jax.random.PRNGKey(2))
        still_upright = bool(plain.is_upright(a.inner.pipeline))
        assert still_upright == upright
        np.testing.assert_allclose(float(b.reward), float(a.reward) + (1.5 if still_upright else 0.0), rtol=1e-5)
        assert not bool(a.terminated) and bool(b.terminated) == (not still_upright)


# ---- configurations: stored ones, bad input -----------------------------------------------------------
def test_a_configuration_stored_before_the_recipes_reads_back_with_its_behaviour():
    stored = MLSHConfig().to_dict()
    for role in ("master_network", "sub_network"):
        del stored[role]
    for level in ("master", "sub"):
        del stored[level]["advantage_normalization"]
    del stored["bootstrap_at_switch"], stored["shaping"], stored["desync_episode_starts"]
    stored["hidden_sizes"] = [32, 16]
    config = MLSHConfig.from_dict(stored)
    expected = NetworkConfig(policy_hidden_sizes=(32, 16), value_hidden_sizes=(32, 16))
    assert config.master_network == expected and config.sub_network == expected
    assert config.sub.advantage_normalization == "minibatch" and not config.bootstrap_at_switch
    assert config.shaping == TaskShaping() and not config.desync_episode_starts
    assert MLSHConfig.from_dict(config.to_dict()) == config
    # shaping stored before the maze's path reward existed: paid toward the goal, as then
    shaped = dict(MLSHConfig(env="ant_maze", shaping=TaskShaping(alive_bonus=1.0)).to_dict())
    shaped["shaping"] = {"alive_bonus": 1.0, "end_when_fallen": False}
    assert MLSHConfig.from_dict(shaped).shaping == TaskShaping(alive_bonus=1.0, reward_direction="goal")


def test_the_config_knows_the_maze_reward_directions_the_env_takes():
    from envs.ant_maze import REWARD_DIRECTIONS
    assert MAZE_REWARD_DIRECTIONS == REWARD_DIRECTIONS
    assert TaskShaping(alive_bonus=1.0).env_kwargs() == {"alive_bonus": 1.0}  # twowalk takes no reward_direction
    assert TaskShaping(reward_direction="path").env_kwargs() == {"reward_direction": "path"}


@pytest.mark.parametrize("change, field", [
    (dict(sub_network=NetworkConfig(distribution="beta")), "sub_network.distribution"),
    (dict(sub_network=NetworkConfig(activation="gelu")), "sub_network.activation"),
    (dict(master_network=NetworkConfig(value_hidden_sizes=(64, 0))), "master_network.value_hidden_sizes"),
    (dict(sub_network=NetworkConfig(policy_hidden_sizes=())), "sub_network.policy_hidden_sizes"),
    (dict(sub=PPOConfig(advantage_normalization="task")), "sub.advantage_normalization"),
    (dict(shaping=TaskShaping(alive_bonus=1.0)), "shaping"),                # moving bandits takes none
    (dict(shaping=TaskShaping(alive_bonus=-1.0), env="ant_maze"), "shaping.alive_bonus"),
    (dict(shaping=TaskShaping(reward_direction="wall"), env="ant_maze"), "shaping.reward_direction"),
    (dict(shaping=TaskShaping(reward_direction="path"), env="ant_twowalk"), "shaping.reward_direction"),
    (dict(shaping=TaskShaping(approach_weight=-0.1), env="ant_twowalk"), "shaping.approach_weight"),
    (dict(shaping=TaskShaping(approach_weight=0.1), env="ant_maze"), "shaping.approach_weight"),
])
def test_bad_learner_settings_are_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        dataclasses.replace(MLSHConfig(), **change).validate()


# ---- the locomotion mechanisms learn (the point-mass probes of tests/test_continuous_probe.py) ---------
def test_a_flat_tanh_gaussian_policy_with_an_entropy_bonus_learns_to_reach_the_target():
    # Seeds 0-3 end at -1.5 to -2.0 over the last 5 updates (threshold -3, ignoring the target: -5).
    from tests.test_continuous_probe import THRESHOLD, probe_config, train

    config = probe_config(algorithm="shared", num_subpolicies=1, warmup_updates=0, subpolicy_observation="full",
                          sub_network=NetworkConfig(policy_hidden_sizes=(32, 32), value_hidden_sizes=(64, 64),
                                                    activation="swish", distribution="tanh_gaussian"))
    config = dataclasses.replace(config, sub=dataclasses.replace(config.sub, entropy_coef=1e-3))
    returns = train(config, updates=20)
    assert np.mean(returns[:3]) < THRESHOLD < np.mean(returns[-5:]), returns


def test_desynchronised_starts_spread_the_first_time_limits_and_change_nothing_else():
    from mlsh_jax.rollout import reset_slot_envs
    from envs import MovingBandits

    env = MovingBandits(episode_length=50)
    task = env.sample_task(jax.random.PRNGKey(0))
    plain = reset_slot_envs(env, task, jax.random.PRNGKey(1), 64)
    spread = reset_slot_envs(env, task, jax.random.PRNGKey(1), 64, desync=True)
    times = np.asarray(spread.state.time)
    assert np.all(np.asarray(plain.state.time) == 0) and times.min() >= 0 and times.max() < 50
    assert len(np.unique(times)) > 20                       # 64 draws from 50 values
    np.testing.assert_array_equal(np.asarray(plain.state.obs), np.asarray(spread.state.obs))
    stepped = jax.vmap(env.step, in_axes=(None, 0, 0, 0))(task, spread.state, jnp.zeros(64, jnp.int32),
                                                          jax.random.split(jax.random.PRNGKey(2), 64))
    np.testing.assert_array_equal(np.asarray(stepped.truncated), times + 1 >= 50)
