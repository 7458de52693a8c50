"""GAE against a plain-Python reference (terminations, truncations with bootstrap), PPO loss facts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlsh_jax.losses import PPOBatch, compute_gae, ppo_loss
from mlsh_jax.networks import ActorCritic, Categorical


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Textbook GAE, one env, written with Python loops."""
    T = len(rewards)
    advantages = [0.0] * T
    next_advantage = 0.0
    for t in reversed(range(T)):
        bootstrap = 0.0 if terminated[t] else gamma * next_values[t]
        delta = rewards[t] + bootstrap - values[t]
        episode_goes_on = not (terminated[t] or truncated[t])
        next_advantage = delta + (gamma * lam * next_advantage if episode_goes_on else 0.0)
        advantages[t] = next_advantage
    return np.array(advantages), np.array(advantages) + np.array(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_reference_with_terminations_and_truncations(seed):
    rng = np.random.default_rng(seed)
    T, E = 12, 3
    rewards = rng.normal(size=(T, E)).astype(np.float32)
    values = rng.normal(size=(T, E)).astype(np.float32)
    next_values = rng.normal(size=(T, E)).astype(np.float32)
    terminated = rng.random((T, E)) < 0.15
    truncated = (rng.random((T, E)) < 0.15) & ~terminated
    adv, ret = compute_gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values),
                           jnp.asarray(terminated), jnp.asarray(truncated), 0.97, 0.9)
    for e in range(E):
        ref_adv, ref_ret = reference_gae(rewards[:, e], values[:, e], next_values[:, e],
                                         terminated[:, e], truncated[:, e], 0.97, 0.9)
        np.testing.assert_allclose(adv[:, e], ref_adv, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ret[:, e], ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_bootstraps_at_truncation_but_not_at_termination():
    one = jnp.ones((1, 1))
    zero = jnp.zeros((1, 1))
    kwargs = dict(rewards=one, values=zero, next_values=10 * one, discount=0.5, gae_lambda=1.0)
    truncated_adv, _ = compute_gae(terminations=zero, truncations=one, **kwargs)
    terminated_adv, _ = compute_gae(terminations=one, truncations=zero, **kwargs)
    assert float(truncated_adv[0, 0]) == pytest.approx(1 + 0.5 * 10)
    assert float(terminated_adv[0, 0]) == pytest.approx(1.0)


def test_gae_does_not_leak_across_episode_boundary():
    # Step 0 truncates; a huge advantage at step 1 (next episode) must not flow back into step 0.
    rewards = jnp.array([[0.0], [100.0]])
    zeros = jnp.zeros((2, 1))
    adv, _ = compute_gae(rewards, zeros, zeros, zeros, jnp.array([[1.0], [0.0]]), 0.99, 0.95)
    assert float(adv[0, 0]) == 0.0
    assert float(adv[1, 0]) == 100.0


def _batch_and_params(n=16, seed=0):
    model = ActorCritic(Categorical(3), hidden_sizes=(8,))
    key = jax.random.PRNGKey(seed)
    obs = jax.random.normal(key, (n, 4))
    params = model.init(key, obs)
    logits, values = model.apply(params, obs)
    actions = jax.random.randint(key, (n,), 0, 3)
    log_probs = jax.nn.log_softmax(logits)[jnp.arange(n), actions]
    batch = PPOBatch(obs=obs, actions=actions, log_probs=log_probs, values=values,
                     advantages=jax.random.normal(jax.random.fold_in(key, 1), (n,)),
                     returns=jax.random.normal(jax.random.fold_in(key, 2), (n,)))
    return model, params, batch


LOSS_KW = dict(distribution=Categorical(3), clip_eps=0.2, value_clip=0.2, entropy_coef=0.0, value_coef=1.0)


def test_ppo_loss_at_collection_params_has_unit_ratio():
    model, params, batch = _batch_and_params()
    _, metrics = ppo_loss(params, batch, jnp.ones(16), apply_fn=model.apply, **LOSS_KW)
    assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["clip_fraction"]) == 0.0


def test_ppo_loss_ignores_zero_weight_samples():
    model, params, batch = _batch_and_params()
    weights = jnp.concatenate([jnp.ones(8), jnp.zeros(8)])
    corrupted = batch.replace(advantages=batch.advantages.at[8:].set(1e6), returns=batch.returns.at[8:].set(-1e6))
    loss_a, _ = ppo_loss(params, batch, weights, apply_fn=model.apply, **LOSS_KW)
    loss_b, _ = ppo_loss(params, corrupted, weights, apply_fn=model.apply, **LOSS_KW)
    assert float(loss_a) == pytest.approx(float(loss_b), rel=1e-6)
    grads = jax.grad(lambda p: ppo_loss(p, batch, jnp.zeros(16), apply_fn=model.apply, **LOSS_KW)[0])(params)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads))


def test_gaussian_log_prob_and_entropy_match_the_formulas():
    from mlsh_jax.networks import DiagGaussian
    dist = DiagGaussian(3)
    mean, log_std = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.0, -0.5, 0.3])
    params = jnp.concatenate([mean, log_std])
    action = jnp.array([0.1, -0.7, 2.5])
    std = np.exp(np.asarray(log_std))
    expected = np.sum(-0.5 * ((np.asarray(action) - np.asarray(mean)) / std) ** 2 - np.log(std * np.sqrt(2 * np.pi)))
    assert float(dist.log_prob(params, action)) == pytest.approx(expected, rel=1e-5)
    assert float(dist.entropy(params)) == pytest.approx(np.sum(np.log(std * np.sqrt(2 * np.pi * np.e))), rel=1e-5)
    samples = jax.vmap(lambda k: dist.sample(k, params))(jax.random.split(jax.random.PRNGKey(0), 20000))
    np.testing.assert_allclose(np.asarray(samples).std(axis=0), std, rtol=0.03)


def test_ppo_loss_with_a_gaussian_policy_has_unit_ratio_and_learns_log_std():
    from mlsh_jax.networks import DiagGaussian
    dist = DiagGaussian(2)
    model = ActorCritic(dist, hidden_sizes=(8,))
    key = jax.random.PRNGKey(0)
    obs = jax.random.normal(key, (16, 4))
    params = model.init(key, obs)
    dist_params, values = model.apply(params, obs)
    actions = dist.sample(jax.random.fold_in(key, 1), dist_params)
    batch = PPOBatch(obs=obs, actions=actions, log_probs=dist.log_prob(dist_params, actions), values=values,
                     advantages=jax.random.normal(jax.random.fold_in(key, 2), (16,)),
                     returns=jnp.zeros(16))
    kw = dict(LOSS_KW, distribution=dist)
    (_, metrics), grads = jax.value_and_grad(ppo_loss, has_aux=True)(params, batch, jnp.ones(16),
                                                                       apply_fn=model.apply, **kw)
    assert float(metrics["approx_kl"]) == pytest.approx(0.0, abs=1e-6)
    assert np.abs(np.asarray(grads["params"]["log_std"])).sum() > 0


def test_exploring_categorical_is_the_mixture_it_samples_from():
    from mlsh_jax.networks import ExploringCategorical
    dist = ExploringCategorical(2, uniform_prob=0.1)
    logits = jnp.array([30.0, 0.0])                       # softmax gives action 1 ~1e-13
    expected = np.array([0.9 + 0.05, 0.05])
    probs = np.exp([float(dist.log_prob(logits, jnp.array(a))) for a in (0, 1)])
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    samples = jax.vmap(lambda k: dist.sample(k, logits))(jax.random.split(jax.random.PRNGKey(0), 40000))
    assert float(jnp.mean(samples == 1)) == pytest.approx(0.05, abs=0.005)
    assert float(dist.entropy(logits)) == pytest.approx(-np.sum(expected * np.log(expected)), rel=1e-5)
    # A rare exploratory action keeps a bounded PPO ratio after a small change of the logits.
    ratio = np.exp(float(dist.log_prob(logits - jnp.array([0.0, 5.0]), jnp.array(1)) - dist.log_prob(logits, jnp.array(1))))
    assert 0.9 < ratio <= 1.0
    plain = ExploringCategorical(3)
    np.testing.assert_allclose(np.exp(plain.log_prob(jnp.zeros((3, 3)), jnp.arange(3))), np.full(3, 1 / 3), rtol=1e-6)


def _stack_and_groups(num_groups=3, n=40, seed=0, groups=None):
    model = ActorCritic(Categorical(3), hidden_sizes=(8,))
    key = jax.random.PRNGKey(seed)
    obs = jax.random.normal(key, (n, 4))
    params = jax.vmap(model.init, in_axes=(0, None))(jax.random.split(key, num_groups), obs[:1])
    if groups is None:
        groups = jax.random.randint(jax.random.fold_in(key, 3), (n,), 0, num_groups)
    return model, params, obs, jnp.asarray(groups, jnp.int32)


def _every_network_then_select(model, params, obs, groups):
    """The reference: every network of the stack on every sample, then each sample's own row."""
    outputs = jax.vmap(model.apply, in_axes=(0, None))(params, obs)
    return jax.tree.map(lambda y: jnp.take_along_axis(y, groups.reshape((1, -1) + (1,) * (y.ndim - 2)), 0)[0],
                        outputs)


@pytest.mark.parametrize("groups", [None, [1] * 40, [0] * 39 + [2]], ids=["mixed", "one group", "one sample apart"])
def test_apply_by_group_matches_every_network_then_select(groups):
    from mlsh_jax.networks import apply_by_group
    model, params, obs, groups = _stack_and_groups(groups=groups)
    fast = lambda p: apply_by_group(model.apply, p, obs, groups, 3)
    slow = lambda p: _every_network_then_select(model, p, obs, groups)
    for a, b in zip(fast(params), slow(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Gradients reach each sample's own network only (a group without samples gets zeros).
    total = lambda f: lambda p: jnp.sum(f(p)[0] ** 2) + jnp.sum(f(p)[1])
    for a, b in zip(jax.tree.leaves(jax.grad(total(fast))(params)), jax.tree.leaves(jax.grad(total(slow))(params))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_grouped_ppo_loss_is_the_sum_of_each_groups_own_loss():
    """With `batch.group`, each group's samples form their own loss (own weighted means, own
    advantage normalisation): the same as one ungrouped loss per group with the others weighted 0."""
    from mlsh_jax.networks import apply_by_group
    model, params, obs, groups = _stack_and_groups()
    n = obs.shape[0]
    key = jax.random.PRNGKey(7)
    actions = jax.random.randint(key, (n,), 0, 3)
    batch = PPOBatch(obs=obs, actions=actions, log_probs=jnp.full((n,), -1.2),
                     values=jax.random.normal(jax.random.fold_in(key, 1), (n,)),
                     advantages=3.0 + jax.random.normal(jax.random.fold_in(key, 2), (n,)),
                     returns=jax.random.normal(jax.random.fold_in(key, 4), (n,)), group=groups)
    weights = jax.random.uniform(jax.random.fold_in(key, 5), (n,), minval=0.2, maxval=2.0)

    def grouped(p):
        apply_fn = lambda q, o: apply_by_group(model.apply, q, o, groups, 3)
        return ppo_loss(p, batch, weights, apply_fn=apply_fn, num_groups=3, **LOSS_KW)

    def one_loss_per_group(p):
        def loss_of(q, k):
            return ppo_loss(q, batch.replace(group=None), weights * (groups == k), apply_fn=model.apply, **LOSS_KW)
        losses, metrics = jax.vmap(loss_of)(p, jnp.arange(3))
        return jnp.sum(losses), metrics

    (loss, metrics), grads = jax.value_and_grad(grouped, has_aux=True)(params)
    (ref_loss, ref_metrics), ref_grads = jax.value_and_grad(one_loss_per_group, has_aux=True)(params)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    for name in ref_metrics:
        assert metrics[name].shape == (3,)
        np.testing.assert_allclose(metrics[name], ref_metrics[name], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


class LogProbIsTheOutput:
    """A stand-in action distribution whose parameter is the log-probability of the taken action, so
    a test sets every sample's ratio exp(new - old) directly."""

    def log_prob(self, params, actions):
        return params[..., 0]

    def entropy(self, params):
        return jnp.zeros(params.shape[:-1])


def _direct_ratio_loss(log_probs, advantages, weights, clip_eps=0.2, groups=None, num_groups=1, values=None,
                       old_values=None, returns=None, value_clip=0.0, value_coef=0.0):
    """ppo_loss where params["log_prob"] [n] are the new log-probabilities (old ones 0)."""
    n = advantages.shape[0]
    zeros = jnp.zeros(n)
    batch = PPOBatch(obs=jnp.zeros((n, 1)), actions=jnp.zeros(n, jnp.int32), log_probs=zeros,
                     values=zeros if old_values is None else old_values, advantages=advantages,
                     returns=zeros if returns is None else returns, group=groups)
    apply_fn = lambda p, obs: (p["log_prob"][:, None], p["value"])
    params = {"log_prob": log_probs, "value": zeros if values is None else values}
    loss = lambda p: ppo_loss(p, batch, weights, apply_fn=apply_fn, distribution=LogProbIsTheOutput(),
                              clip_eps=clip_eps, value_clip=value_clip, entropy_coef=0.0, value_coef=value_coef,
                              num_groups=num_groups)
    return jax.value_and_grad(loss, has_aux=True)(params)


def test_clipped_objective_below_inside_and_above_the_clip_range_for_both_signs():
    # Ratios 0.5 (below 1 - 0.2), 1.1 (inside), 1.5 (above 1 + 0.2), once with advantage +1 and once
    # with -1 (four of each: the weighted normalisation leaves them at +-1).
    ratios = np.array([0.5, 1.1, 1.5, 1.0, 0.5, 1.1, 1.5, 1.0])
    advantages = jnp.array([1.0] * 4 + [-1.0] * 4)
    (loss, metrics), grads = _direct_ratio_loss(jnp.log(jnp.asarray(ratios, jnp.float32)), advantages, jnp.ones(8))
    # By hand: A > 0: min(r, clip(r)) = 0.5, 1.1, 1.2, 1.0; A < 0: min(-r, -clip(r)) = -0.8, -1.1, -1.5, -1.0.
    surrogate = np.array([0.5, 1.1, 1.2, 1.0, -0.8, -1.1, -1.5, -1.0])
    assert float(metrics["policy_loss"]) == pytest.approx(-surrogate.mean(), abs=1e-5)
    assert float(loss) == pytest.approx(-surrogate.mean(), abs=1e-5)
    # The gradient w.r.t. each log-ratio: -A r / n where the objective follows the ratio, 0 where clipped.
    expected = -np.array([0.5, 1.1, 0.0, 1.0, 0.0, -1.1, -1.5, -1.0]) / 8
    np.testing.assert_allclose(grads["log_prob"], expected, atol=1e-6)
    assert float(metrics["clip_fraction"]) == pytest.approx(4 / 8)


def test_clipped_value_loss_takes_the_larger_error():
    # Old value 0, target 1, clip 0.2: a new value 0.5 is clipped to 0.2 (error 0.64 > 0.25); a new
    # value 0.1 is inside (error 0.81 either way). 0.5 x mean(0.64, 0.81).
    (_, metrics), _ = _direct_ratio_loss(jnp.zeros(2), jnp.array([1.0, -1.0]), jnp.ones(2),
                                         values=jnp.array([0.5, 0.1]), returns=jnp.ones(2), value_clip=0.2,
                                         value_coef=1.0)
    assert float(metrics["value_loss"]) == pytest.approx(0.5 * (0.64 + 0.81) / 2, abs=1e-6)


@pytest.mark.parametrize("scale", [0.0025, 1.0, 40.0])
def test_only_the_ratios_of_the_weights_matter_whatever_their_total(scale):
    """The loss is sum(w x) / sum(w): weights whose total is below 1 (a sub-policy that lost every
    slot; one slot's data) train it as strongly as the same weights scaled up."""
    rng = np.random.default_rng(0)
    log_probs = jnp.asarray(rng.normal(scale=0.3, size=12), jnp.float32)
    advantages = jnp.asarray(rng.normal(size=12), jnp.float32)
    relative = jnp.asarray(rng.uniform(0.2, 2.0, size=12), jnp.float32)
    groups = jnp.array([0, 1] * 6, jnp.int32)
    (loss, metrics), grads = _direct_ratio_loss(log_probs, advantages, scale * relative, groups=groups, num_groups=2)
    # Reference: each group's own weighted mean of the clipped surrogate, advantages normalised over it.
    ratio, w, adv = np.exp(np.asarray(log_probs)), np.asarray(relative), np.asarray(advantages)
    for k in (0, 1):
        mine = np.asarray(groups) == k
        mean = np.sum(w[mine] * adv[mine]) / np.sum(w[mine])
        std = np.sqrt(np.sum(w[mine] * (adv[mine] - mean) ** 2) / np.sum(w[mine]))
        a = (adv[mine] - mean) / (std + 1e-8)
        surrogate = np.minimum(ratio[mine] * a, np.clip(ratio[mine], 0.8, 1.2) * a)
        assert float(metrics["policy_loss"][k]) == pytest.approx(-np.sum(w[mine] * surrogate) / np.sum(w[mine]),
                                                                 abs=1e-5)
    (_, unit_metrics), unit_grads = _direct_ratio_loss(log_probs, advantages, relative, groups=groups, num_groups=2)
    np.testing.assert_allclose(grads["log_prob"], unit_grads["log_prob"], rtol=1e-4, atol=1e-7)
    # A group whose weights are all 0 contributes nothing.
    (_, silent), silent_grads = _direct_ratio_loss(log_probs, advantages, scale * relative * (groups == 0),
                                                   groups=groups, num_groups=2)
    assert float(silent["policy_loss"][1]) == 0.0 and float(jnp.abs(silent_grads["log_prob"][1::2]).max()) == 0.0
