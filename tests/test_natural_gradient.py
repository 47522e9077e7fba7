"""Tests of `tftrpo.natural_gradient` against independent computations.

Dense Fishers are built in numpy as F = mean_s Jᵀ M J, with J the Jacobian of the
distribution parameters w.r.t. the flat policy parameters (written out analytically
for the linear policies, from `GradientTape.jacobian` for a tanh network) and M the
closed-form Fisher of the distribution in those parameters.
"""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tftrpo import natural_gradient as ng

tfd = tfp.distributions
DT = tf.float64


# --------------------------------------------------------------------------- helpers


def random_spd(rng, n, cond=50.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eigs = np.exp(rng.uniform(0.0, np.log(cond), size=n))
    eigs[0], eigs[-1] = 1.0, cond
    return (q * eigs) @ q.T


class GaussianPolicy:
    """μ = W s + b, free log σ; MultivariateNormalDiag over a 2-dim action."""

    def __init__(self, seed, obs_dim=3, act_dim=2, n_states=6):
        rng = np.random.default_rng(seed)
        self.W = tf.Variable(rng.normal(size=(act_dim, obs_dim)), dtype=DT)
        self.b = tf.Variable(rng.normal(size=act_dim), dtype=DT)
        self.log_std = tf.Variable(rng.normal(scale=0.3, size=act_dim), dtype=DT)
        self.states = rng.normal(size=(n_states, obs_dim))
        self.variables = [self.W, self.b, self.log_std]
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.freeze()

    def params(self):
        mu = tf.constant(self.states, DT) @ tf.transpose(self.W) + self.b
        return mu, self.log_std

    def dist(self, mu, log_std):
        return tfd.MultivariateNormalDiag(loc=mu, scale_diag=tf.exp(log_std) * tf.ones_like(mu))

    def freeze(self):
        mu, log_std = self.params()
        self.old_mu, self.old_log_std = tf.constant(mu.numpy()), tf.constant(log_std.numpy())

    def kl(self):
        old = self.dist(self.old_mu, self.old_log_std)
        return tf.reduce_mean(old.kl_divergence(self.dist(*self.params())))

    def kl_numpy(self, theta_new):
        """Closed-form mean KL(old ‖ new) for diagonal Gaussians, in numpy."""
        W, b, log_std = self.split(theta_new)
        mu = self.states @ W.T + b
        mu0, ls0 = self.old_mu.numpy(), self.old_log_std.numpy()
        s0, s1 = np.exp(ls0), np.exp(log_std)
        per = np.sum(log_std - ls0 + (s0**2 + (mu0 - mu) ** 2) / (2 * s1**2) - 0.5, axis=1)
        return per.mean()

    def split(self, theta):
        a, o = self.act_dim, self.obs_dim
        return theta[: a * o].reshape(a, o), theta[a * o: a * o + a], theta[a * o + a:]

    def dense_fisher(self):
        a, o = self.act_dim, self.obs_dim
        n_par = a * o + 2 * a
        sigma2 = np.exp(2 * self.log_std.numpy())
        M = np.diag(np.concatenate([1.0 / sigma2, 2.0 * np.ones(a)]))
        F = np.zeros((n_par, n_par))
        for s in self.states:
            J = np.zeros((2 * a, n_par))  # rows: μ_1..μ_a, log σ_1..log σ_a
            for i in range(a):
                J[i, i * o:(i + 1) * o] = s  # ∂μ_i/∂W_i·
                J[i, a * o + i] = 1.0  # ∂μ_i/∂b_i
                J[a + i, a * o + a + i] = 1.0  # ∂log σ_i/∂log_std_i
            F += J.T @ M @ J
        return F / len(self.states)


class CategoricalPolicy:
    """logits = W s + b over 3 actions."""

    def __init__(self, seed, obs_dim=4, n_actions=3, n_states=7):
        rng = np.random.default_rng(seed)
        self.W = tf.Variable(rng.normal(size=(n_actions, obs_dim)), dtype=DT)
        self.b = tf.Variable(rng.normal(size=n_actions), dtype=DT)
        self.states = rng.normal(size=(n_states, obs_dim))
        self.variables = [self.W, self.b]
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.freeze()

    def logits(self):
        return tf.constant(self.states, DT) @ tf.transpose(self.W) + self.b

    def freeze(self):
        self.old_logits = tf.constant(self.logits().numpy())

    def kl(self):
        old = tfd.Categorical(logits=self.old_logits)
        return tf.reduce_mean(old.kl_divergence(tfd.Categorical(logits=self.logits())))

    def dense_fisher(self):
        k, o = self.n_actions, self.obs_dim
        n_par = k * o + k
        logits = self.logits().numpy()
        F = np.zeros((n_par, n_par))
        for s, z in zip(self.states, logits):
            p = np.exp(z - z.max())
            p /= p.sum()
            M = np.diag(p) - np.outer(p, p)
            J = np.zeros((k, n_par))
            for i in range(k):
                J[i, i * o:(i + 1) * o] = s
                J[i, k * o + i] = 1.0
            F += J.T @ M @ J
        return F / len(self.states)


class TanhGaussianPolicy:
    """A non-linear policy: μ = W2 tanh(W1 s + b1) + b2, free log σ. J from the tape."""

    def __init__(self, seed, obs_dim=3, hidden=4, act_dim=2, n_states=5):
        rng = np.random.default_rng(seed)
        self.W1 = tf.Variable(rng.normal(size=(obs_dim, hidden)), dtype=DT)
        self.b1 = tf.Variable(rng.normal(size=hidden), dtype=DT)
        self.W2 = tf.Variable(rng.normal(size=(hidden, act_dim)), dtype=DT)
        self.b2 = tf.Variable(rng.normal(size=act_dim), dtype=DT)
        self.log_std = tf.Variable(rng.normal(scale=0.3, size=act_dim), dtype=DT)
        self.variables = [self.W1, self.b1, self.W2, self.b2, self.log_std]
        self.states = tf.constant(rng.normal(size=(n_states, obs_dim)), DT)
        mu, ls = self.params()
        self.old_mu, self.old_ls = tf.constant(mu.numpy()), tf.constant(ls.numpy())

    def params(self):
        mu = tf.tanh(self.states @ self.W1 + self.b1) @ self.W2 + self.b2
        return mu, self.log_std * tf.ones_like(mu)

    def kl(self):
        old = tfd.MultivariateNormalDiag(self.old_mu, tf.exp(self.old_ls))
        mu, ls = self.params()
        return tf.reduce_mean(old.kl_divergence(tfd.MultivariateNormalDiag(mu, tf.exp(ls))))

    def dense_fisher(self):
        with tf.GradientTape(persistent=True) as tape:
            mu, ls = self.params()
            out = tf.concat([mu, ls], axis=1)  # [N, 2a]
        jacs = tape.jacobian(out, self.variables)
        n, d = out.shape
        J = np.concatenate([j.numpy().reshape(n, d, -1) for j in jacs], axis=2)  # [N, 2a, P]
        a = d // 2
        sigma2 = np.exp(2 * self.log_std.numpy())
        M = np.diag(np.concatenate([1.0 / sigma2, 2.0 * np.ones(a)]))
        return np.mean([Jn.T @ M @ Jn for Jn in J], axis=0)


def fvp(policy, v, damping=0.0):
    return ng.fisher_vector_product(policy.kl, policy.variables, tf.constant(v, DT), damping=damping).numpy()


def flat_values(variables):
    return np.concatenate([v.numpy().ravel() for v in variables])


def assign_flat(variables, theta):
    for v, part in zip(variables, ng.unflatten(tf.constant(theta, DT), variables)):
        v.assign(part)


# --------------------------------------------------------------------------- flatten


def test_flatten_unflatten_round_trip():
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (), (2, 1, 3)]
    variables = [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in shapes]
    flat = ng.flatten(variables)
    assert flat.shape == (12 + 5 + 1 + 6,)
    np.testing.assert_array_equal(flat.numpy(), np.concatenate([v.numpy().ravel() for v in variables]))
    parts = ng.unflatten(flat, variables)
    for p, v in zip(parts, variables):
        assert p.shape == v.shape
        np.testing.assert_array_equal(p.numpy(), v.numpy())
    new_flat = rng.normal(size=flat.shape[0]).astype(np.float32)
    np.testing.assert_array_equal(ng.flatten(ng.unflatten(tf.constant(new_flat), variables)).numpy(), new_flat)


def test_unflatten_in_tf_function():
    variables = [tf.Variable(tf.zeros((2, 3))), tf.Variable(tf.zeros(4))]
    x = tf.range(10, dtype=tf.float32)
    parts = tf.function(lambda f: ng.unflatten(f, variables))(x)
    np.testing.assert_array_equal(parts[0].numpy(), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(parts[1].numpy(), np.arange(6, 10))


# --------------------------------------------------------------------------- masked mean / surrogate


def test_masked_mean_and_surrogate_gradient():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5))
    w = (rng.uniform(size=(3, 5)) > 0.4).astype(np.float64)
    assert ng.masked_mean(tf.constant(x), tf.constant(w)).numpy() == pytest.approx((x * w).sum() / w.sum())
    assert ng.masked_mean(tf.constant(x), tf.zeros_like(x)).numpy() == 0.0

    # At θ = θ_old the surrogate equals Ê[Â] and its gradient is Ê[∇log π · Â].
    policy = CategoricalPolicy(seed=2, n_states=6)
    actions = rng.integers(0, 3, size=6)
    advantages = rng.normal(size=6)
    weights = np.array([1, 1, 0, 1, 1, 1], np.float64)
    old_lp = tfd.Categorical(logits=policy.old_logits).log_prob(actions)
    with tf.GradientTape() as tape:
        lp = tfd.Categorical(logits=policy.logits()).log_prob(actions)
        surr = ng.surrogate_advantage(lp, old_lp, tf.constant(advantages), tf.constant(weights))
    grad = ng.flatten(tape.gradient(surr, policy.variables)).numpy()
    assert surr.numpy() == pytest.approx((advantages * weights).sum() / weights.sum())
    # ∇_logits log π(a) = onehot(a) − p, chain through logits = W s + b.
    logits = policy.logits().numpy()
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    dlogits = (np.eye(3)[actions] - p) * (advantages * weights)[:, None] / weights.sum()
    expect = np.concatenate([(dlogits.T @ policy.states).ravel(), dlogits.sum(0)])
    np.testing.assert_allclose(grad, expect, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- conjugate gradient


@pytest.mark.parametrize("n,seed", [(5, 0), (12, 1), (25, 2), (50, 3)])
@pytest.mark.parametrize("compiled", [False, True])
def test_conjugate_gradient_matches_solve(n, seed, compiled):
    rng = np.random.default_rng(seed)
    A = random_spd(rng, n, cond=30.0)
    b = rng.normal(size=n)
    A_t = tf.constant(A, DT)

    def solve(b_t):
        return ng.conjugate_gradient(lambda v: tf.linalg.matvec(A_t, v), b_t, iterations=n, residual_tol=1e-24)

    if compiled:
        solve = tf.function(solve, autograph=False)
    x = solve(tf.constant(b, DT)).numpy()
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("compiled", [False, True])
def test_conjugate_gradient_float32_few_iterations_reduce_error(compiled):
    n = 30
    rng = np.random.default_rng(4)
    A = random_spd(rng, n, cond=20.0)
    b = rng.normal(size=n)
    x_star = np.linalg.solve(A, b)
    A_t = tf.constant(A, tf.float32)

    def solve(b_t, k):
        return ng.conjugate_gradient(lambda v: tf.linalg.matvec(A_t, v), b_t, iterations=k)

    if compiled:
        solve = tf.function(solve, autograph=False)
    b_t = tf.constant(b, tf.float32)

    def a_norm(e):
        return np.sqrt(e @ A @ e)

    errors, residuals = [], []
    for k in range(0, 11):
        x = solve(b_t, tf.constant(k)).numpy().astype(np.float64)
        errors.append(a_norm(x - x_star))
        residuals.append(np.linalg.norm(b - A @ x))
    np.testing.assert_array_equal(solve(b_t, tf.constant(0)).numpy(), np.zeros(n, np.float32))
    assert residuals[0] == pytest.approx(np.linalg.norm(b))
    # CG minimises the A-norm of the error over growing Krylov spaces: non-increasing.
    assert all(e1 <= e0 * (1 + 1e-5) for e0, e1 in zip(errors, errors[1:])), errors
    assert all(r < residuals[0] for r in residuals[1:]), residuals
    assert errors[10] < 0.05 * errors[0]


@pytest.mark.parametrize("compiled", [False, True])
def test_conjugate_gradient_stops_early_without_nan(compiled):
    """A = c·I converges in one step; further iterations must not divide 0 by 0."""
    b = tf.constant([1.0, -2.0, 3.0, 0.5], tf.float32)

    def solve(b_t):
        return ng.conjugate_gradient(lambda v: 4.0 * v, b_t, iterations=10)

    if compiled:
        solve = tf.function(solve, autograph=False)
    x = solve(b).numpy()
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(x, b.numpy() / 4.0, rtol=1e-6)

    zero = solve(tf.zeros(4)).numpy()  # b = 0: the answer is 0, not NaN
    np.testing.assert_array_equal(zero, np.zeros(4, np.float32))


# --------------------------------------------------------------------------- Fisher-vector product


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_vector_product_gaussian_matches_dense(seed):
    policy = GaussianPolicy(seed)
    F = policy.dense_fisher()
    rng = np.random.default_rng(10 + seed)
    for _ in range(4):
        v = rng.normal(size=F.shape[0])
        np.testing.assert_allclose(fvp(policy, v), F @ v, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_vector_product_categorical_matches_dense(seed):
    policy = CategoricalPolicy(seed)
    F = policy.dense_fisher()
    rng = np.random.default_rng(20 + seed)
    for _ in range(4):
        v = rng.normal(size=F.shape[0])
        np.testing.assert_allclose(fvp(policy, v), F @ v, rtol=1e-9, atol=1e-10)


def test_fisher_vector_product_nonlinear_policy_matches_gauss_newton():
    """At θ = θ_old the KL Hessian of any network equals Jᵀ M J (first-order terms vanish)."""
    policy = TanhGaussianPolicy(seed=3)
    F = policy.dense_fisher()
    rng = np.random.default_rng(30)
    for _ in range(3):
        v = rng.normal(size=F.shape[0])
        np.testing.assert_allclose(fvp(policy, v), F @ v, rtol=1e-8, atol=1e-10)


def test_fisher_vector_product_damping_and_tf_function():
    policy = GaussianPolicy(seed=4)
    F = policy.dense_fisher()
    v = np.random.default_rng(40).normal(size=F.shape[0])
    plain = fvp(policy, v)
    damped = fvp(policy, v, damping=0.1)
    np.testing.assert_allclose(damped - plain, 0.1 * v, rtol=0, atol=1e-13)
    np.testing.assert_allclose(damped, (F + 0.1 * np.eye(len(v))) @ v, rtol=1e-9, atol=1e-10)

    compiled = tf.function(lambda x: ng.fisher_vector_product(policy.kl, policy.variables, x, damping=0.1))
    np.testing.assert_allclose(compiled(tf.constant(v, DT)).numpy(), damped, rtol=1e-10, atol=1e-12)


def test_fisher_vector_product_unconnected_variable_gives_zero_block():
    policy = CategoricalPolicy(seed=5)
    extra = tf.Variable(tf.ones(3, DT))  # not used by the KL
    variables = policy.variables + [extra]
    v = np.random.default_rng(50).normal(size=policy.dense_fisher().shape[0] + 3)
    out = ng.fisher_vector_product(policy.kl, variables, tf.constant(v, DT)).numpy()
    np.testing.assert_allclose(out[:-3], policy.dense_fisher() @ v[:-3], rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(out[-3:], 0.0)


# --------------------------------------------------------------------------- step size


def test_max_step_size_closed_form():
    rng = np.random.default_rng(6)
    for n in (3, 10):
        F = random_spd(rng, n)
        s = rng.normal(size=n)
        for delta in (1e-4, 0.01, 0.05):
            beta = ng.max_step_size(tf.constant(s), tf.constant(F @ s), delta).numpy()
            assert beta == pytest.approx(np.sqrt(2 * delta / (s @ F @ s)), rel=1e-12)
            assert 0.5 * beta**2 * (s @ F @ s) == pytest.approx(delta, rel=1e-12)


@pytest.mark.parametrize("seed,delta", [(0, 1e-4), (1, 1e-4), (2, 1e-3)])
def test_natural_step_of_max_size_has_kl_delta(seed, delta):
    """θ_old + β·F⁻¹g (with s from CG over the library's FVP) has actual mean KL ≈ δ."""
    policy = GaussianPolicy(seed)
    theta_old = flat_values(policy.variables)
    g = np.random.default_rng(60 + seed).normal(size=theta_old.size)

    def matvec(x):
        return ng.fisher_vector_product(policy.kl, policy.variables, x)

    s = ng.conjugate_gradient(matvec, tf.constant(g, DT), iterations=theta_old.size, residual_tol=1e-24)
    np.testing.assert_allclose(s.numpy(), np.linalg.solve(policy.dense_fisher(), g), rtol=1e-6, atol=1e-8)
    beta = ng.max_step_size(s, matvec(s), delta).numpy()

    theta_new = theta_old + beta * s.numpy()
    assign_flat(policy.variables, theta_new)
    kl_tf = policy.kl().numpy()
    kl_np = policy.kl_numpy(theta_new)
    assign_flat(policy.variables, theta_old)
    assert kl_tf == pytest.approx(kl_np, rel=1e-8)
    assert abs(kl_np - delta) / delta < 0.05, (kl_np, delta)


# --------------------------------------------------------------------------- line search


class QuadraticProblem:
    """x ∈ R^n, L(x) = gᵀ(x − x0) − ½c‖x − x0‖², KL(x) = ½a‖x − x0‖², step = g.

    For a fraction f of the full step: expected = f‖g‖², actual = f‖g‖² − ½c f²‖g‖²,
    KL = ½a f²‖g‖². Acceptance (r = accept_ratio): actual ≥ r·expected and actual > 0
    ⇔ f ≤ 2(1 − r)/c (and f < 2/c); KL ≤ δ ⇔ f ≤ sqrt(2δ/(a‖g‖²)).
    """

    def __init__(self, seed, n=4, c=1.0, a=1.0, dtype=tf.float32):
        rng = np.random.default_rng(seed)
        np_dtype = dtype.as_numpy_dtype
        self.x0 = [rng.normal(size=(n // 2, 2)).astype(np_dtype), rng.normal(size=n - 2 * (n // 2) + 3).astype(np_dtype)]
        self.g = [rng.normal(size=x.shape).astype(np_dtype) for x in self.x0]
        self.variables = [tf.Variable(x) for x in self.x0]
        self.c, self.a, self.dtype = c, a, dtype
        self.g2 = float(sum((gi.astype(np.float64) ** 2).sum() for gi in self.g))

    def surrogate_and_kl(self):
        d = [v - x for v, x in zip(self.variables, self.x0)]
        lin = tf.add_n([tf.reduce_sum(gi * di) for gi, di in zip(self.g, d)])
        sq = tf.add_n([tf.reduce_sum(di * di) for di in d])
        return lin - 0.5 * self.c * sq, 0.5 * self.a * sq

    def search(self, max_kl, compiled=False, **kwargs):
        def run():
            return ng.backtracking_line_search(
                self.variables, [tf.constant(gi) for gi in self.g],
                tf.constant(self.g2, self.dtype), self.surrogate_and_kl,
                tf.constant(0.0, self.dtype), max_kl, **kwargs)

        return (tf.function(run, autograph=False) if compiled else run)()

    def expected_backtracks(self, max_kl, shrink=0.8, accept_ratio=0.1, max_backtracks=10):
        bound = min(2 * (1 - accept_ratio) / self.c, np.sqrt(2 * max_kl / (self.a * self.g2)))
        for k in range(max_backtracks):
            if shrink**k <= bound:
                return k
        return None


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("c,a,max_kl", [
    (0.2, 1.0, None),  # KL constraint binds (max_kl chosen below)
    (2.5, 1e-3, 1.0),  # improvement-ratio condition binds: f ≤ 0.72
    (0.1, 1e-3, 1.0),  # full step accepted
])
def test_line_search_accepts_first_analytic_candidate(compiled, c, a, max_kl):
    prob = QuadraticProblem(seed=7, c=c, a=a)
    if max_kl is None:
        max_kl = 0.5 * a * prob.g2 * (0.8**2.5) ** 2  # f ≤ 0.8^2.5 → k = 3
    k_expected = prob.expected_backtracks(max_kl)
    assert k_expected is not None
    result = prob.search(max_kl, compiled=compiled)
    f = 0.8**k_expected
    assert bool(result.accepted.numpy())
    assert int(result.backtracks.numpy()) == k_expected
    assert result.step_fraction.numpy() == pytest.approx(f, rel=1e-6)
    assert result.kl.numpy() <= max_kl
    assert result.kl.numpy() == pytest.approx(0.5 * a * f**2 * prob.g2, rel=1e-4)
    assert result.actual_improvement.numpy() > 0
    assert result.actual_improvement.numpy() == pytest.approx(f * prob.g2 - 0.5 * c * f**2 * prob.g2, rel=1e-4)
    assert result.expected_improvement.numpy() == pytest.approx(f * prob.g2, rel=1e-6)
    for v, x0, g in zip(prob.variables, prob.x0, prob.g):
        np.testing.assert_allclose(v.numpy(), x0 + f * g, rtol=1e-6, atol=1e-6)


def test_line_search_backtracks_for_each_binding_case():
    """Sweep δ: the number of backtracks is the first k with 0.8ᵏ ≤ analytic bound."""
    prob = QuadraticProblem(seed=8, c=0.5, a=1.0, dtype=tf.float64)
    seen = set()
    for k_target in range(0, 8):
        f_bound = 0.8 ** (k_target - 0.5)  # strictly between candidates k-1 and k
        max_kl = 0.5 * prob.a * prob.g2 * f_bound**2 if k_target > 0 else 0.5 * prob.a * prob.g2 * 1.1
        k = prob.expected_backtracks(max_kl)
        assert k == k_target
        for v, x0 in zip(prob.variables, prob.x0):
            v.assign(x0)
        result = prob.search(max_kl)
        assert bool(result.accepted.numpy())
        assert int(result.backtracks.numpy()) == k
        seen.add(k)
    assert seen == set(range(8))


@pytest.mark.parametrize("compiled", [False, True])
def test_line_search_rejects_and_restores_exact_values(compiled):
    """The surrogate only decreases: nothing passes, θ is restored bit for bit."""
    rng = np.random.default_rng(9)
    x0 = [rng.normal(size=(3, 3)).astype(np.float32) * 1e3, rng.normal(size=7).astype(np.float32) * 1e-3]
    variables = [tf.Variable(x) for x in x0]
    step = [tf.constant(rng.normal(size=x.shape).astype(np.float32) * 0.37) for x in x0]
    before = [v.numpy().copy() for v in variables]

    def surrogate_and_kl():
        sq = tf.add_n([tf.reduce_sum(tf.square(v - x)) for v, x in zip(variables, x0)])
        return -sq - 1.0, 1e-9 * sq

    def run():
        return ng.backtracking_line_search(
            variables, step, tf.constant(5.0), surrogate_and_kl, tf.constant(-1.0), 0.01,
            max_backtracks=6, shrink=0.5)

    result = (tf.function(run, autograph=False) if compiled else run)()
    assert not bool(result.accepted.numpy())
    assert int(result.backtracks.numpy()) == 6
    assert result.step_fraction.numpy() == 0.0
    assert result.kl.numpy() == 0.0
    assert result.actual_improvement.numpy() < 0
    assert result.expected_improvement.numpy() == pytest.approx(5.0 * 0.5**5)
    for v, b in zip(variables, before):
        assert np.array_equal(v.numpy(), b)
        assert v.numpy().tobytes() == b.tobytes()


@pytest.mark.parametrize("compiled", [False, True])
def test_line_search_rejects_non_finite_and_kl_violations(compiled):
    """Candidates with NaN KL, then +inf surrogate, then KL > δ, are skipped; the
    first finite candidate within the trust region is taken."""
    x = tf.Variable([0.0, 0.0], dtype=tf.float32)
    step = [tf.constant([1.0, 1.0])]

    def surrogate_and_kl():
        f = x[0]  # equals the fraction tried
        kl = tf.where(f > 0.9, tf.constant(np.nan, tf.float32), 0.05 * f)  # KL ≤ 0.02 ⇔ f ≤ 0.4
        surrogate = tf.where(f > 0.7, tf.constant(np.inf, tf.float32), 10.0 * f)
        kl = tf.where((f > 0.7) & (f <= 0.9), tf.constant(0.0, tf.float32), kl)  # only the surrogate is bad
        return surrogate, kl

    def run():
        return ng.backtracking_line_search(
            [x], step, tf.constant(10.0), surrogate_and_kl, tf.constant(0.0), 0.02, shrink=0.8)

    result = (tf.function(run, autograph=False) if compiled else run)()
    # fractions 1 (NaN KL), .8 (+inf surrogate), .64, .512, .4096 (KL > δ), .32768 → k = 5
    assert bool(result.accepted.numpy())
    assert int(result.backtracks.numpy()) == 5
    assert result.step_fraction.numpy() == pytest.approx(0.8**5, rel=1e-6)
    np.testing.assert_allclose(x.numpy(), [0.8**5, 0.8**5], rtol=1e-6)


def test_line_search_all_nan_restores():
    x0 = np.array([0.1, -0.3, 7.0], np.float32)
    x = tf.Variable(x0)

    def surrogate_and_kl():
        return tf.constant(np.nan, tf.float32), tf.constant(np.nan, tf.float32)

    result = ng.backtracking_line_search(
        [x], [tf.constant([1.0, 2.0, 3.0])], tf.constant(1.0), surrogate_and_kl, tf.constant(0.0), 0.01,
        max_backtracks=3)
    assert not bool(result.accepted.numpy())
    assert int(result.backtracks.numpy()) == 3
    assert np.array_equal(x.numpy(), x0)


def test_masked_mean_is_the_weighted_average_for_fractional_weights():
    from tftrpo import natural_gradient as ng

    assert float(ng.masked_mean(tf.constant([2.0]), tf.constant([0.5]))) == pytest.approx(2.0)
    assert float(ng.masked_mean(tf.constant([2.0, 4.0]), tf.constant([0.25, 0.75]))) == pytest.approx(3.5)
    assert float(ng.masked_mean(tf.constant([2.0, 4.0]), tf.constant([0.0, 0.0]))) == 0.0


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_gauss_newton_product_equals_hessian_of_mean_kl(kind):
    """Jᵀ(∇²_p KL)J v equals the double-backward Hessian-vector product at θ_old."""
    rng = np.random.default_rng(5)
    states = tf.constant(rng.normal(size=(32, 4)).astype(np.float32))
    hidden = tf.Variable(rng.normal(size=(4, 8)).astype(np.float32) * 0.5)
    out = tf.Variable(rng.normal(size=(8, 3)).astype(np.float32) * 0.5)
    log_std = tf.Variable(rng.normal(size=(3,)).astype(np.float32) * 0.3)
    variables = [hidden, out] + ([log_std] if kind == "gaussian" else [])

    def params():
        features = tf.tanh(states @ hidden) @ out
        if kind == "gaussian":
            return {"loc": features, "scale_diag": tf.exp(log_std) * tf.ones_like(features)}
        return {"logits": features}

    def dist(p):
        if kind == "gaussian":
            return tfp.distributions.MultivariateNormalDiag(**p)
        return tfp.distributions.Categorical(**p)

    old = dist({k: tf.constant(v.numpy()) for k, v in params().items()})

    def kl_of_params(p):
        return tf.reduce_mean(old.kl_divergence(dist(p)))

    for seed in range(3):
        v = tf.constant(np.random.default_rng(seed).normal(size=sum(x.shape.num_elements() for x in variables)),
                        tf.float32)
        hessian = ng.fisher_vector_product(lambda: kl_of_params(params()), variables, v, damping=0.1)
        gauss_newton = ng.gauss_newton_fisher_vector_product(params, kl_of_params, variables, v, damping=0.1)
        np.testing.assert_allclose(gauss_newton.numpy(), hessian.numpy(), rtol=2e-4, atol=2e-5)


def test_conjugate_gradient_residual_gives_the_matrix_product():
    """CG's running residual r = b − A x, so xᵀA x = xᵀ(b − r) without another product."""
    rng = np.random.default_rng(11)
    m = rng.normal(size=(20, 20))
    a = tf.constant(m @ m.T + 0.5 * np.eye(20), tf.float64)
    b = tf.constant(rng.normal(size=20), tf.float64)
    for iterations in (3, 8, 20):
        x, r = ng.conjugate_gradient(lambda v: tf.linalg.matvec(a, v), b, iterations, return_residual=True)
        np.testing.assert_allclose((b - r).numpy(), tf.linalg.matvec(a, x).numpy(), rtol=1e-8, atol=1e-8)
