"""Vine sampling (Section 5.2): Q̂ estimates, common random numbers, the vine
surrogate, and the collector + TRPOAgent loop.

The Q̂ tests use a tiny tabular MDP defined here whose Q^π is known in closed
form (finite-horizon backward recursion), with a linear categorical policy whose
probabilities are read from the actor network itself.
"""
import dataclasses
import math
import statistics

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from tftrpo import TRPOAgent, VineExperience, networks
from tftrpo import natural_gradient as ng
from tftrpo.envs import GymnasiumEnvironment, load
from tftrpo.sampling import env_state
from tftrpo.sampling.vine import VineCollector, sample_with_noise, vine_q_estimates
from trajectories import assert_refused_without_change

tfd = tfp.distributions

# ----------------------------------------------------------------------------
# A small stochastic tabular MDP: states 0..3, state 4 absorbing terminal.

NUM_STATES, TERMINAL, NUM_ACTIONS = 5, 4, 2
_mdp_rng = np.random.default_rng(1234)
# P[s, a, s']: random rows over the live states, 10% termination.
P = np.zeros((TERMINAL, NUM_ACTIONS, NUM_STATES))
P[:, :, :TERMINAL] = 0.9 * _mdp_rng.dirichlet(0.8 * np.ones(TERMINAL), size=(TERMINAL, NUM_ACTIONS))
P[:, :, TERMINAL] = 0.1
R = 1.0 + 0.5 * _mdp_rng.normal(size=(TERMINAL, NUM_ACTIONS, NUM_STATES))  # mean reward of s -a-> s'
REWARD_NOISE = 0.5  # std of the zero-mean uniform noise added to every reward
POLICY_LOGITS = 1.5 * _mdp_rng.normal(size=(NUM_STATES, NUM_ACTIONS)).astype(np.float32)


class TabularMDP(gym.Env):
    """One-hot observations; every step draws exactly two uniforms from
    `np_random` (next state by inverse CDF, reward noise), so the RNG streams of
    branches restored from the same snapshot stay aligned."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (NUM_STATES,), np.float32)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.state = 0

    def _obs(self):
        return np.eye(NUM_STATES, dtype=np.float32)[self.state]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = int(self.np_random.integers(0, TERMINAL))
        return self._obs(), {}

    def step(self, action):
        u = self.np_random.random(2)
        s, a = self.state, int(action)
        nxt = min(int(np.searchsorted(np.cumsum(P[s, a]), u[0], side="right")), TERMINAL)
        reward = R[s, a, nxt] + REWARD_NOISE * math.sqrt(12.0) * (u[1] - 0.5)
        self.state = nxt
        return self._obs(), float(reward), nxt == TERMINAL, False, {}


env_state.register_env(TabularMDP, lambda env: env.state, lambda env, s: setattr(env, "state", int(s)))


class UnregisteredEnv(TabularMDP):
    """Same dynamics, but no snapshot handler is registered for this exact type."""


def exact_q(pi, gamma, horizon, p=P):
    """Q_h(s, a) of the truncated return Σ_{t<h} γᵗ r_t under π: [TERMINAL, A]."""
    mean_reward = (p * R).sum(axis=2)
    v = np.zeros(NUM_STATES)  # V_0 = 0; the terminal state always has V = 0
    for _ in range(horizon):
        q = mean_reward + gamma * p @ v
        v = np.zeros(NUM_STATES)
        v[:TERMINAL] = (pi[:TERMINAL] * q).sum(axis=1)
    return q


def tabular_factory(seed):
    return GymnasiumEnvironment(TabularMDP(), seed=seed)


def make_agent(env, fc=(), seed=0, **kwargs):
    tf.random.set_seed(seed)
    obs_spec = tensor_spec.from_spec(env.observation_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    kwargs.setdefault("train_step_counter", tf.Variable(0, dtype=tf.int64))
    return TRPOAgent(
        ts.time_step_spec(obs_spec), action_spec,
        networks.actor_network(obs_spec, action_spec, fc_layer_params=fc, seed=seed),
        networks.value_network(obs_spec, (8,), seed=seed),
        tf.keras.optimizers.Adam(1e-3), **kwargs)


def tabular_agent(**kwargs):
    """A linear categorical policy with logits[s] = POLICY_LOGITS[s]; returns (agent, π)."""
    agent = make_agent(tabular_factory(0), normalize_observations=False, **kwargs)
    kernel, bias = agent._actor_net.trainable_variables  # pylint: disable=protected-access
    assert kernel.shape == (NUM_STATES, NUM_ACTIONS) and bias.shape == (NUM_ACTIONS,)
    kernel.assign(POLICY_LOGITS)
    bias.assign(tf.zeros_like(bias))
    return agent, policy_probs(agent, np.eye(NUM_STATES, dtype=np.float32))


def policy_probs(agent, observations):
    """π(·|s) [B, A] read from the actor network."""
    dist, _ = agent._actor_net(tf.constant(observations), step_type=tf.zeros([len(observations)], tf.int32),  # pylint: disable=protected-access
                               network_state=())
    return dist.probs_parameter().numpy().astype(np.float64)


def train_with_actor_before_and_after(agent, experience):
    """`agent.train(experience)`; returns its info and π_θ(·|s) before and after the update, on
    the states normalised as the update used them (the statistics include this rollout set by
    default, so the normalisation the collection used is not the one to compare on)."""
    actor = agent._actor_net.trainable_variables  # pylint: disable=protected-access
    before = [v.numpy() for v in actor]
    info = agent.train(experience)
    after = [v.numpy() for v in actor]
    observations = agent._normalize(experience.observation)  # pylint: disable=protected-access
    n = observations.shape[0]
    distributions = []
    for weights in (before, after):
        for variable, value in zip(actor, weights):
            variable.assign(value)
        distributions.append(agent._actor_net(observations, step_type=tf.zeros([n], tf.int32),  # pylint: disable=protected-access
                                              network_state=())[0])
    return info, distributions[0], distributions[1]


def cluster_mean_se(values, clusters):
    """Mean and its standard error, robust to correlation inside clusters.

    Branches of one `collect` are correlated: restored from the same trunk, the
    env RNG streams of nearby rollout-set states overlap. Collects are
    (nearly) independent, so they are the clusters.
    """
    values, clusters = np.asarray(values, np.float64), np.asarray(clusters)
    mean = values.mean()
    ids = np.unique(clusters)
    sums = np.array([(values[clusters == c] - mean).sum() for c in ids])
    c = len(ids)
    return mean, math.sqrt((sums ** 2).sum() * c / (c - 1)) / len(values)


def gather_tabular(collector, collects):
    """(state, q [K], cluster) of every rollout-set state over several collects."""
    states, qs, clusters = [], [], []
    for c in range(collects):
        exp, stats = collector.collect()
        obs = exp.observation.numpy()
        assert obs.shape == (collector._num_states, NUM_STATES)  # pylint: disable=protected-access
        assert np.all(obs.sum(axis=1) == 1) and not np.any(obs[:, TERMINAL])  # never the terminal state
        assert bool(exp.all_actions.numpy())
        np.testing.assert_array_equal(exp.action.numpy(), np.tile([0, 1], (len(obs), 1)))
        assert stats.branch_steps <= collector.simulator_steps_per_collect - collector._trunk_steps  # pylint: disable=protected-access
        states.append(obs.argmax(axis=1))
        qs.append(exp.q_value.numpy())
        clusters.append(np.full(len(obs), c))
    return np.concatenate(states), np.concatenate(qs).astype(np.float64), np.concatenate(clusters)


class IndependentNoiseVine(VineCollector):
    """The collector WITHOUT common random numbers, for comparison only.

    Every (s_n, a_k) branch becomes its own rollout-set entry (so it gets its own
    row of policy noise from `_run_branches`), and its snapshot gets a fresh,
    independently seeded env RNG (so its env noise is independent too). Marginally
    each Q̂ has the same distribution as with the real collector.
    """

    def _run_branches(self, snapshots, first_actions, stats):
        n, k = len(snapshots), self._k
        expanded = [
            dataclasses.replace(snap, rng={
                "state": np.random.default_rng(int(self._rng.integers(2**62))).bit_generator.state,
                "seed": None})
            for snap in snapshots for _ in range(k)]
        self._k = 1
        try:
            q = super()._run_branches(expanded, first_actions.reshape((n * k, 1) + first_actions.shape[2:]), stats)
        finally:
            self._k = k
        return q.reshape(n, k)


GAMMA, HORIZON = 0.9, 3
TABULAR_COLLECTOR = dict(num_states=128, rollout_length=HORIZON, trunk_steps=128, discount=GAMMA,
                         num_branch_envs=256)


@pytest.fixture(scope="module")
def tabular_crn_data():
    """π, and (state, Q̂ [K], collect) of 20 collects of the real (CRN) collector."""
    agent, pi = tabular_agent()
    np.testing.assert_allclose(pi, tf.nn.softmax(POLICY_LOGITS).numpy(), atol=1e-6)
    collector = VineCollector(tabular_factory, agent.collect_policy, seed=3, **TABULAR_COLLECTOR)
    assert collector.actions_per_state == NUM_ACTIONS
    return pi, gather_tabular(collector, collects=20)


# ----------------------------------------------------------------------------
# 1. Q̂ is an unbiased estimate of the exact finite-horizon Q^π.

def test_q_estimates_match_exact_q_of_tabular_mdp(tabular_crn_data):
    pi, (states, q, clusters) = tabular_crn_data
    q_exact = exact_q(pi, GAMMA, HORIZON)
    # What a buggy Q̂ could be computing instead: one reward short, or Σ γ^(t+1) r_t.
    wrong = {"horizon L-1": exact_q(pi, GAMMA, HORIZON - 1), "first reward discounted": GAMMA * q_exact}
    worst, detected = 0.0, {name: 0.0 for name in wrong}
    for s in range(TERMINAL):
        rows = states == s
        assert rows.sum() >= 100
        for a in range(NUM_ACTIONS):
            mean, se = cluster_mean_se(q[rows, a], clusters[rows])
            assert abs(mean - q_exact[s, a]) < 4 * se + 1e-6, (s, a, mean, q_exact[s, a], se)
            worst = max(worst, abs(mean - q_exact[s, a]) / se)
            for name, other in wrong.items():
                detected[name] = max(detected[name], abs(mean - other[s, a]) / se)
    print(f"max |mean Q̂ − Q| / SE = {worst:.2f}; for the wrong estimators: {detected}")
    assert min(detected.values()) > 4, detected  # the same tolerance would catch them


def test_vine_q_estimates_is_discounted_sum_until_episode_end():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 7)).astype(np.float32)
    ends = [7, 1, 3, 7, 5, 2]  # branch p was alive for its first ends[p] steps
    alive = (np.arange(7)[None] < np.array(ends)[:, None]).astype(np.float32)
    expected = [sum(0.95 ** t * float(rewards[p, t]) for t in range(ends[p])) for p in range(6)]
    np.testing.assert_allclose(vine_q_estimates(rewards, alive, 0.95), expected, rtol=1e-5)


# ----------------------------------------------------------------------------
# 2. Common random numbers reduce the variance of Q̂ differences.

def test_common_random_numbers_reduce_variance_of_q_differences(tabular_crn_data):
    pi, crn = tabular_crn_data
    agent, pi_again = tabular_agent()
    np.testing.assert_array_equal(pi, pi_again)
    q_exact = exact_q(pi, GAMMA, HORIZON)
    independent = gather_tabular(
        IndependentNoiseVine(tabular_factory, agent.collect_policy, seed=12, **TABULAR_COLLECTOR), 10)

    def pooled_within_state_variance(data):
        states, q, clusters = data
        diff = q[:, 1] - q[:, 0]
        squares, dof = 0.0, 0
        for s in range(TERMINAL):
            d = diff[states == s]
            assert len(d) >= 50
            # Both schemes are unbiased for Q(s, 1) − Q(s, 0).
            mean, se = cluster_mean_se(d, clusters[states == s])
            assert abs(mean - (q_exact[s, 1] - q_exact[s, 0])) < 4 * se + 1e-6
            squares += ((d - d.mean()) ** 2).sum()
            dof += len(d) - 1
        return squares / dof

    var_crn = pooled_within_state_variance(crn)
    var_independent = pooled_within_state_variance(independent)
    ratio = var_crn / var_independent
    print(f"Var[Q̂(s,1) − Q̂(s,0)]: CRN {var_crn:.3f}, independent {var_independent:.3f}, ratio {ratio:.3f}")
    assert ratio < 0.7


# Deterministic variant: states 0 and 2 lead to the same next state whatever the
# action, states 1 and 3 to different ones; no reward noise, no termination.
NEXT = np.array([[1, 1], [2, 0], [3, 3], [0, 2]])


class DeterministicMDP(TabularMDP):
    """The policy's sampling noise is the only randomness."""

    def step(self, action):
        s, a = self.state, int(action)
        self.state = int(NEXT[s, a])
        return self._obs(), float(R[s, a, self.state]), False, False, {}


env_state.register_env(DeterministicMDP, lambda env: env.state, lambda env, s: setattr(env, "state", int(s)))


def test_branches_of_a_state_share_policy_noise():
    """From states 0 and 2 both branches reach the same state after one step; with
    the same policy noise they then take the same actions, so Q̂(s,1) − Q̂(s,0) is
    exactly r(s,1) − r(s,0) on every rollout. Independent noise breaks this."""
    agent, pi = tabular_agent()
    factory = lambda seed: GymnasiumEnvironment(DeterministicMDP(), seed=seed)  # noqa: E731
    kwargs = dict(num_states=128, rollout_length=4, trunk_steps=128, discount=GAMMA, num_branch_envs=256)
    first_reward_gap = R[np.arange(TERMINAL), 1, NEXT[:, 1]] - R[np.arange(TERMINAL), 0, NEXT[:, 0]]
    p_det = np.zeros_like(P)
    p_det[np.arange(TERMINAL)[:, None], np.arange(NUM_ACTIONS)[None], NEXT] = 1.0
    q_exact = exact_q(pi, GAMMA, 4, p_det)

    states, q, clusters = gather_tabular(VineCollector(factory, agent.collect_policy, seed=7, **kwargs), 3)
    diff = q[:, 1] - q[:, 0]
    for s in range(TERMINAL):
        rows = states == s
        assert rows.sum() >= 20
        if NEXT[s, 0] == NEXT[s, 1]:
            np.testing.assert_allclose(diff[rows], first_reward_gap[s], atol=1e-5)
        else:
            assert diff[rows].std() > 0.05
        for a in range(NUM_ACTIONS):  # and Q̂ is still right on this MDP
            mean, se = cluster_mean_se(q[rows, a], clusters[rows])
            assert abs(mean - q_exact[s, a]) < 4 * se + 1e-5

    states, q, _ = gather_tabular(IndependentNoiseVine(factory, agent.collect_policy, seed=7, **kwargs), 1)
    diff = q[:, 1] - q[:, 0]
    for s in (0, 2):
        assert diff[states == s].std() > 0.05


# ----------------------------------------------------------------------------
# 3. sample_with_noise: a deterministic, correct function of the uniform noise.

def test_sample_with_noise_categorical_is_gumbel_max():
    rng = np.random.default_rng(0)
    n = 40_000
    probs = np.array([0.1, 0.6, 0.3])
    logits = np.tile(np.log(probs).astype(np.float32) + 2.0, (n, 1))  # shift: logits, not log-probs
    u = rng.uniform(1e-6, 1 - 1e-6, size=(n, 3)).astype(np.float32)
    actions = sample_with_noise(tfd.Categorical(logits=logits, dtype=tf.int64), u).numpy()
    assert actions.dtype == np.int64 and actions.shape == (n,)
    freq = np.bincount(actions, minlength=3) / n
    assert np.all(np.abs(freq - probs) < 4 * np.sqrt(probs * (1 - probs) / n)), freq
    # Same noise, same (separately built) distribution: same actions; other noise: other actions.
    again = sample_with_noise(tfd.Categorical(logits=tf.constant(logits), dtype=tf.int64), u.copy()).numpy()
    np.testing.assert_array_equal(actions, again)
    other = sample_with_noise(tfd.Categorical(logits=logits, dtype=tf.int64), u[::-1].copy()).numpy()
    assert np.mean(other != actions) > 0.3
    # Row-wise distributions: a near-deterministic row always gives its action.
    rows = np.array([[0.0, 0.0, 30.0], [30.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(sample_with_noise(tfd.Categorical(logits=rows), u[:2]).numpy(), [2, 0])


def test_sample_with_noise_gaussian_is_inverse_cdf():
    rng = np.random.default_rng(1)
    n = 40_000
    mu, sigma = np.array([0.5, -2.0], np.float32), np.array([1.5, 0.2], np.float32)
    u = rng.uniform(1e-6, 1 - 1e-6, size=(n, 2)).astype(np.float32)
    dist = tfd.MultivariateNormalDiag(loc=np.tile(mu, (n, 1)), scale_diag=np.tile(sigma, (n, 1)))
    x = sample_with_noise(dist, u).numpy()
    assert x.shape == (n, 2)
    assert np.all(np.abs(x.mean(axis=0) - mu) < 4 * sigma / math.sqrt(n)), x.mean(axis=0)
    np.testing.assert_allclose(x.std(axis=0), sigma, rtol=0.03)
    for i in range(0, n, 4001):  # exact values against an independent inverse CDF
        for j in range(2):
            expected = statistics.NormalDist(float(mu[j]), float(sigma[j])).inv_cdf(float(u[i, j]))
            assert x[i, j] == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # Monotone in u (inverse CDF), identical for identical noise.
    np.testing.assert_array_equal(sample_with_noise(dist, u.copy()).numpy(), x)
    order = np.argsort(u[:, 0])
    assert np.all(np.diff(x[order, 0]) >= 0)
    # A batch of scalar Normals takes [P, 1] noise.
    scalar = sample_with_noise(tfd.Normal(loc=tf.fill([n], 1.0), scale=tf.fill([n], 2.0)), u[:, :1]).numpy()
    assert scalar.shape == (n,)
    np.testing.assert_allclose(scalar, 1.0 + 2.0 * (x[:, 0] - mu[0]) / sigma[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="Gaussian and categorical"):
        sample_with_noise(tfd.Beta(tf.ones([3]), tf.ones([3])), u[:3, :1])


# ----------------------------------------------------------------------------
# 4. The vine surrogate and its gradient against numpy.

def _numpy_vine_surrogate(logits, old_logits, actions, adv, exact):
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    logp = np.take_along_axis(log_softmax(logits), actions, axis=1)
    old_logp = np.take_along_axis(log_softmax(old_logits), actions, axis=1)
    if exact:
        return np.mean((np.exp(logp) * adv).sum(axis=1))
    w = np.exp(logp - old_logp)
    return np.mean((w * adv).sum(axis=1) / w.sum(axis=1))


@pytest.mark.parametrize("exact", [True, False], ids=["all_actions", "sampled"])
def test_vine_surrogate_value_and_gradient_match_numpy(exact):
    rng = np.random.default_rng(2 if exact else 3)
    n, num_actions = 7, 4
    k = num_actions if exact else 5
    old_logits = rng.normal(size=(n, num_actions))
    actions = np.tile(np.arange(num_actions), (n, 1)) if exact else rng.integers(0, num_actions, size=(n, k))
    adv = rng.normal(size=(n, k))

    def tf_surrogate(logits_var):
        dist = tfd.Categorical(logits=logits_var)
        old = tfd.Categorical(logits=tf.constant(old_logits))
        log_prob = tf.transpose(dist.log_prob(tf.constant(actions.T)))  # [K, N] → [N, K]
        old_log_prob = tf.transpose(old.log_prob(tf.constant(actions.T)))
        return ng.vine_surrogate(log_prob, old_log_prob, tf.constant(adv), tf.constant(exact))

    # Value at θ ≠ θ_old.
    logits = old_logits + 0.3 * rng.normal(size=old_logits.shape)
    value = float(tf_surrogate(tf.constant(logits)))
    assert value == pytest.approx(_numpy_vine_surrogate(logits, old_logits, actions, adv, exact), rel=1e-10)
    if exact:  # with all actions, the exact form is Σ_k π_θ(a_k|s) A_k
        pi = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        assert value == pytest.approx(np.mean((pi * adv).sum(axis=1)), rel=1e-10)

    # Gradient at θ = θ_old: closed form and central finite differences.
    var = tf.Variable(old_logits)
    with tf.GradientTape() as tape:
        surrogate = tf_surrogate(var)
    grad = tape.gradient(surrogate, var).numpy()
    pi = np.exp(old_logits) / np.exp(old_logits).sum(axis=1, keepdims=True)
    if exact:  # ∂/∂z_j Σ_k π_k A_k = π_j (A_j − Σ_k π_k A_k)
        closed = pi * (adv - (pi * adv).sum(axis=1, keepdims=True)) / n
    else:  # at w = 1: (1/K) Σ_k (1[a_k = j] − π_j)(A_k − Ā)
        onehot = np.eye(num_actions)[actions]  # [N, K, A]
        centred = adv - adv.mean(axis=1, keepdims=True)
        closed = ((onehot - pi[:, None, :]) * centred[:, :, None]).sum(axis=1) / k / n
    eps = 1e-6
    fd = np.zeros_like(old_logits)
    for idx in np.ndindex(*old_logits.shape):
        bump = np.zeros_like(old_logits)
        bump[idx] = eps
        fd[idx] = (_numpy_vine_surrogate(old_logits + bump, old_logits, actions, adv, exact)
                   - _numpy_vine_surrogate(old_logits - bump, old_logits, actions, adv, exact)) / (2 * eps)
    np.testing.assert_allclose(grad, closed, atol=1e-12)
    np.testing.assert_allclose(grad, fd, atol=1e-8)


@pytest.mark.parametrize("cg_precision", ["float32", "float64"])
def test_agent_vine_steps_improve_numpy_surrogate_within_trust_region(cg_precision):
    """Both surrogates through the agent: each Q̂[n, k] is paired with action[n, k]
    (N ≠ K), the step improves the numpy surrogate by what the agent reports and
    stays within δ, and one compiled update serves both modes and all shapes; with
    float32 and float64 Fisher products."""
    max_kl = 0.01
    agent, _ = tabular_agent(max_kl=max_kl, cg_precision=cg_precision)
    rng = np.random.default_rng(4)
    for exact, n in ((True, 9), (False, 11)):
        k = NUM_ACTIONS if exact else 3
        observations = np.eye(NUM_STATES, dtype=np.float32)[rng.integers(0, TERMINAL, size=n)]
        actions = np.tile(np.arange(NUM_ACTIONS), (n, 1)) if exact else rng.integers(0, NUM_ACTIONS, size=(n, k))
        q = rng.normal(size=(n, k)).astype(np.float32) + 3.0
        old = policy_probs(agent, observations)

        info = agent.train(VineExperience(tf.constant(observations), tf.constant(actions, tf.int64),
                                          tf.constant(q), tf.constant(exact)))
        assert not info.extra.step_rejected.numpy()
        new = policy_probs(agent, observations)

        adv = q - q.mean(axis=1, keepdims=True)  # baseline: mean Q̂ over the branches of s_n
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        p_new, p_old = np.take_along_axis(new, actions, 1), np.take_along_axis(old, actions, 1)
        if exact:
            improvement = np.mean(((p_new - p_old) * adv).sum(axis=1))
        else:
            w = p_new / p_old
            improvement = np.mean((w * adv).sum(axis=1) / w.sum(axis=1) - adv.mean(axis=1))
        assert improvement > 0
        assert improvement == pytest.approx(float(info.extra.actual_improvement), rel=2e-3, abs=1e-6)
        kl = np.mean((old * (np.log(old) - np.log(new))).sum(axis=1))
        assert kl <= max_kl * (1 + 1e-4)
        assert kl == pytest.approx(float(info.extra.kl), rel=2e-3)
        assert int(info.extra.num_samples) == n * k
    assert agent._vine_update.experimental_get_tracing_count() == 1  # pylint: disable=protected-access


# ----------------------------------------------------------------------------
# 5. Vine training improves CartPole on a short budget.

def test_vine_training_improves_cartpole():
    max_kl = 0.02
    env = load("CartPole-v1", seed=0)
    agent = make_agent(env, fc=(32,), max_kl=max_kl)
    collector = VineCollector(lambda s: load("CartPole-v1", seed=s), agent.collect_policy, num_states=32,
                              rollout_length=100, trunk_steps=256, num_branch_envs=64, seed=0)
    episode_returns, accepted = [], 0
    for _ in range(12):
        exp, stats = collector.collect()
        assert exp.q_value.shape == (32, 2) and bool(exp.all_actions.numpy())
        info, old, new = train_with_actor_before_and_after(agent, exp)
        old, new = (d.probs_parameter().numpy().astype(np.float64) for d in (old, new))
        kl = np.mean((old * (np.log(old) - np.log(new))).sum(axis=1))
        assert np.isfinite(float(info.loss))
        if info.extra.step_rejected.numpy():
            assert kl == 0.0
        else:
            accepted += 1
            assert 0 < kl <= max_kl * (1 + 1e-4)
            assert float(info.extra.kl) <= max_kl * (1 + 1e-4)
        episode_returns.append(list(stats.episode_returns))
    # Learning, measured on the trunk's episodes (the stochastic policy): those of the last three
    # rollout sets (at least one ends in 3 × 256 steps) against the first set's. Over CartPole
    # seeds 0-5 and both orders of the observation statistics the ratio was 3.5-22.
    first = np.mean(episode_returns[0])
    last = np.mean(sum(episode_returns[-3:], []))
    print(f"trunk episode return {first:.1f} -> {last:.1f}")
    assert accepted >= 10
    assert last > 2.5 * first
    assert agent._vine_update.experimental_get_tracing_count() == 1  # pylint: disable=protected-access


class StartFiveMDP(TabularMDP):
    """The tabular MDP with actions Discrete(NUM_ACTIONS, start=5); records the actions it gets."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS, start=5)
        self.received = []

    def step(self, action):
        assert self.action_space.contains(action), f"invalid action {action!r}"
        self.received.append(int(action))
        return super().step(int(action) - 5)


env_state.register_env(StartFiveMDP, lambda env: env.state, lambda env, s: setattr(env, "state", int(s)))


def test_discrete_start_actions_are_categorical_indices():
    """Actions of a Discrete(n, start=5) env: the indices 0..n-1 the agent's categorical head
    scores, shifted by 5 only where they reach the Gymnasium env."""
    envs = []

    def factory(seed):
        envs.append(GymnasiumEnvironment(StartFiveMDP(), seed=seed))
        return envs[-1]

    agent, _ = tabular_agent()
    collector = VineCollector(factory, agent.collect_policy, num_states=8, rollout_length=3, trunk_steps=16,
                              num_branch_envs=4, seed=2)
    exp, _ = collector.collect()
    np.testing.assert_array_equal(exp.action.numpy(), np.tile([0, 1], (8, 1)))
    received = [a for env in envs for a in env.gym_env.received]
    assert len(received) > 16 and set(received) == {5, 6}
    assert np.isfinite(float(agent.train(exp).loss))


# ----------------------------------------------------------------------------
# 6. Errors at construction.

def test_unsupported_env_fails_at_construction():
    built = []

    def factory(seed):
        built.append(seed)
        return GymnasiumEnvironment(UnregisteredEnv(), seed=seed)

    agent, _ = tabular_agent()
    with pytest.raises(env_state.UnsupportedEnvError, match="UnregisteredEnv"):
        VineCollector(factory, agent.collect_policy, num_states=4, num_branch_envs=8)
    assert built == [0]  # failed on the trunk env, before building any branch env


def test_collector_noise_is_not_the_stream_of_the_trunk_env():
    """Gymnasium seeds an env's np_random with SeedSequence(seed), as np.random.default_rng(seed)
    does: the collector's noise (actions, branch noise, chosen states) must not replay the trunk
    env's reset draws when both get the same seed."""
    agent = make_agent(load("CartPole-v1"), fc=(8,))
    seed = 3
    collector = VineCollector(lambda s: load("CartPole-v1", seed=s), agent.collect_policy, num_states=2,
                              rollout_length=2, num_branch_envs=2, seed=seed)
    noise = collector._rng.random(64)  # pylint: disable=protected-access
    env_stream = gym.utils.seeding.np_random(seed)[0].random(64)
    assert not np.isin(np.round(noise, 9), np.round(env_stream, 9)).any()
    again = VineCollector(lambda s: load("CartPole-v1", seed=s), agent.collect_policy, num_states=2,
                          rollout_length=2, num_branch_envs=2, seed=seed)
    np.testing.assert_array_equal(again._rng.random(64), noise)  # pylint: disable=protected-access


def test_continuous_actions_need_actions_per_state():
    env = load("Pendulum-v1", seed=0)
    agent = make_agent(env, fc=(8,))
    with pytest.raises(ValueError, match="actions_per_state"):
        VineCollector(lambda s: load("Pendulum-v1", seed=s), agent.collect_policy, num_states=4, num_branch_envs=4)


def test_one_action_per_state_and_recurrent_policies_are_refused():
    from tf_agents.networks import actor_distribution_rnn_network
    from tf_agents.policies import actor_policy

    env = load("Pendulum-v1", seed=0)
    agent = make_agent(env, fc=(8,))
    factory = lambda s: load("Pendulum-v1", seed=s)  # noqa: E731
    with pytest.raises(ValueError, match="at least 2 actions per state"):
        VineCollector(factory, agent.collect_policy, num_states=4, actions_per_state=1, num_branch_envs=4)
    time_step_spec = tensor_spec.from_spec(env.time_step_spec())
    action_spec = tensor_spec.from_spec(env.action_spec())
    rnn = actor_distribution_rnn_network.ActorDistributionRnnNetwork(
        time_step_spec.observation, action_spec, lstm_size=(8,))
    recurrent = actor_policy.ActorPolicy(time_step_spec, action_spec, rnn)
    with pytest.raises(ValueError, match="a policy without state"):
        VineCollector(factory, recurrent, num_states=4, actions_per_state=2, num_branch_envs=4)


# ----------------------------------------------------------------------------
# 7. Sampled K actions on a continuous task.

def test_sampled_actions_on_pendulum():
    max_kl = 0.01
    n, k, horizon = 16, 4, 20
    env = load("Pendulum-v1", seed=0)
    agent = make_agent(env, fc=(16,), max_kl=max_kl)
    collector = VineCollector(lambda s: load("Pendulum-v1", seed=s), agent.collect_policy, num_states=n,
                              actions_per_state=k, rollout_length=horizon, trunk_steps=64, num_branch_envs=32,
                              seed=5)
    assert collector.actions_per_state == k
    exp, stats = collector.collect()
    assert exp.observation.shape == (n, 3) and exp.action.shape == (n, k, 1) and exp.q_value.shape == (n, k)
    assert exp.action.dtype == tf.float32 and not bool(exp.all_actions.numpy())
    assert stats.trunk_steps == 64 and stats.branch_steps == n * k * horizon  # no episode ends in 84 steps
    actions, q = exp.action.numpy()[..., 0], exp.q_value.numpy()
    assert np.all(np.isfinite(q)) and np.all(q <= 0)  # Pendulum rewards are ≤ 0
    assert np.all(q >= -16.3 * horizon)
    assert np.all(np.std(actions, axis=1) > 0)  # K distinct samples per state
    # The K first actions are samples of π_θold(·|s_n) = N(μ(s_n), σ²).
    dist, _ = agent._actor_net(agent._normalize(exp.observation), step_type=tf.zeros([n], tf.int32),  # pylint: disable=protected-access
                               network_state=())
    mu, sigma = dist.mean().numpy()[:, 0], dist.stddev().numpy()[:, 0]
    z = (actions - mu[:, None]) / sigma[:, None]
    assert abs(z.mean()) < 4 / math.sqrt(n * k) and 0.6 < z.std() < 1.4

    info, old, new = train_with_actor_before_and_after(agent, exp)
    assert np.isfinite(float(info.loss))
    mu, sigma = old.mean().numpy()[:, 0].astype(np.float64), old.stddev().numpy()[:, 0].astype(np.float64)
    mu2, sigma2 = new.mean().numpy()[:, 0].astype(np.float64), new.stddev().numpy()[:, 0].astype(np.float64)
    kl = np.mean(np.log(sigma2 / sigma) + (sigma ** 2 + (mu - mu2) ** 2) / (2 * sigma2 ** 2) - 0.5)
    assert kl <= max_kl * (1 + 1e-4)
    assert float(info.extra.kl) <= max_kl * (1 + 1e-4)
    if not info.extra.step_rejected.numpy():
        assert kl == pytest.approx(float(info.extra.kl), rel=1e-2, abs=1e-7)


def test_trunk_episode_statistics_span_collects():
    """Episodes longer than one collect's trunk are reported whole (CartPole: return = length)."""
    env = load("CartPole-v1", seed=0)
    obs_spec, action_spec = tensor_spec.from_spec(env.observation_spec()), tensor_spec.from_spec(env.action_spec())
    agent = TRPOAgent(env.time_step_spec(), env.action_spec(),
                      networks.actor_network(obs_spec, action_spec), networks.value_network(obs_spec),
                      tf.keras.optimizers.Adam(), train_step_counter=tf.Variable(0, dtype=tf.int64))
    collector = VineCollector(lambda s: load("CartPole-v1", seed=s), agent.collect_policy, num_states=2,
                              rollout_length=2, trunk_steps=8, num_branch_envs=4, seed=1)
    steps, returns, lengths = 0, [], []
    for _ in range(30):
        _, stats = collector.collect()
        steps += stats.trunk_steps
        returns += stats.episode_returns
        lengths += stats.episode_lengths
    assert returns == [float(n) for n in lengths]
    # The trunk's simulator steps are its episodes' steps (the resets after episode ends are not counted).
    assert steps == sum(lengths) + collector._episode_length
    assert len(lengths) >= 2
    assert max(lengths) > 8


def test_vine_update_primes_observation_statistics_like_the_single_path_update():
    """prime_observation_normalizer on a vine rollout set: the first step equals a plain agent's step
    on the states normalised in NumPy, and each set is counted once in the statistics."""
    env = tabular_factory(0)
    rng = np.random.default_rng(7)
    n, k = 12, 3

    def rollout_set():
        observations = np.eye(NUM_STATES, dtype=np.float32)[rng.integers(0, TERMINAL, size=n)] * 4.0 + 1.0
        return (observations, rng.integers(0, NUM_ACTIONS, size=(n, k)), rng.normal(size=(n, k)).astype(np.float32))

    def experience(observations, actions, q):
        return VineExperience(tf.constant(observations), tf.constant(actions, tf.int64), tf.constant(q),
                              tf.constant(False))

    primed = make_agent(env, normalize_observations=True, observation_statistics_before_update=False,
                        prime_observation_normalizer=True)
    on_normalised = make_agent(env, normalize_observations=False)
    for variable, value in zip(on_normalised._actor_net.variables, primed._actor_net.variables):
        variable.assign(value)
    first, second = rollout_set(), rollout_set()
    mean, var = first[0].mean(0), first[0].var(0)
    by_numpy = np.clip((first[0] - mean) / np.sqrt(var + 1e-8), -10.0, 10.0)
    primed.train(experience(*first))
    on_normalised.train(experience(by_numpy.astype(np.float32), *first[1:]))
    for got, want in zip(primed._actor_net.trainable_variables, on_normalised._actor_net.trainable_variables):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    got_mean, _ = primed._observation_normalizer.mean_and_variance()
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    primed.train(experience(*second))
    both = np.concatenate([first[0], second[0]])
    got_mean, got_var = primed._observation_normalizer.mean_and_variance()
    np.testing.assert_allclose(got_mean, both.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_var, both.var(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field", ["observation", "q_value"])
def test_a_refused_non_finite_rollout_set_changes_nothing(field):
    """A vine rollout set refused for NaN leaves the agent's variables (statistics, actor, train
    step) as they were, and the agent trains on."""
    rng = np.random.default_rng(3)
    n, k = 12, 3
    agent = make_agent(tabular_factory(0), normalize_observations=True)

    def rollout_set():
        return VineExperience(
            tf.constant(np.eye(NUM_STATES, dtype=np.float32)[rng.integers(0, TERMINAL, size=n)] * 4.0 + 1.0),
            tf.constant(rng.integers(0, NUM_ACTIONS, size=(n, k)), tf.int64),
            tf.constant(rng.normal(size=(n, k)).astype(np.float32)), tf.constant(False))

    agent.train(rollout_set())
    good = rollout_set()
    bad = getattr(good, field).numpy()
    bad[2, 0] = np.nan
    assert_refused_without_change(agent, good._replace(**{field: tf.constant(bad)}),
                                  f"vine experience {field} contains NaN")
    agent.train(good)
    assert int(agent.train_step_counter.numpy()) == 2


def test_vine_update_adds_every_rollout_set_before_its_step_with_the_option():
    """observation_statistics_before_update on vine rollout sets: each step equals a plain agent's
    step on the states normalised in NumPy with every set so far, this one included."""
    env = tabular_factory(0)
    rng = np.random.default_rng(11)
    n, k = 12, 3
    option = make_agent(env, normalize_observations=True)  # the default: every set before its step
    on_normalised = make_agent(env, normalize_observations=False)
    for variable, value in zip(on_normalised._actor_net.variables, option._actor_net.variables):
        variable.assign(value)
    seen = np.zeros((0, NUM_STATES))
    for scale in (4.0, 2.0):
        observations = np.eye(NUM_STATES, dtype=np.float32)[rng.integers(0, TERMINAL, size=n)] * scale + 1.0
        actions = tf.constant(rng.integers(0, NUM_ACTIONS, size=(n, k)), tf.int64)
        q = tf.constant(rng.normal(size=(n, k)).astype(np.float32))
        seen = np.concatenate([seen, observations])
        by_numpy = np.clip((observations - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-8), -10.0, 10.0)
        option.train(VineExperience(tf.constant(observations), actions, q, tf.constant(False)))
        on_normalised.train(VineExperience(tf.constant(by_numpy.astype(np.float32)), actions, q, tf.constant(False)))
        for got, want in zip(option._actor_net.trainable_variables, on_normalised._actor_net.trainable_variables):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
        got_mean, got_var = option._observation_normalizer.mean_and_variance()
        np.testing.assert_allclose(got_mean, seen.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_var, seen.var(0), rtol=1e-4, atol=1e-6)
