"""The natural-gradient step of TRPO as pure tensor functions.

Each function implements one idea of Schulman et al. 2015, "Trust Region Policy
Optimization" (arXiv 1502.05477), and names the equation it implements. None of
them knows about agents, specs or environments: they take tensors (or callables
returning tensors) and return tensors, so each is testable alone and runs in graph
mode inside the agent's compiled train step.

Notation: θ are the policy parameters as a list of variables, a "flat" vector is
their concatenation, g the gradient of the surrogate, F the Fisher information
matrix (the Hessian of the mean KL at θ_old), s ≈ F⁻¹g the search direction.
"""
from typing import Callable, List, NamedTuple, Sequence

import tensorflow as tf

__all__ = [
    "flatten",
    "unflatten",
    "masked_mean",
    "surrogate_advantage",
    "vine_surrogate",
    "mean_kl",
    "fisher_vector_product",
    "gauss_newton_fisher_vector_product",
    "conjugate_gradient",
    "max_step_size",
    "LineSearchResult",
    "backtracking_line_search",
]


def flatten(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates a list of tensors into one flat vector (θ → flat θ)."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat: tf.Tensor, like: Sequence[tf.Variable]) -> List[tf.Tensor]:
    """Splits a flat vector into tensors shaped like `like` (inverse of `flatten`)."""
    sizes = [v.shape.num_elements() for v in like]
    parts = tf.split(flat, sizes)
    return [tf.reshape(p, v.shape) for p, v in zip(parts, like)]


def masked_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Σ w·x / Σ w: the sample average Ê[·] over the entries with non-zero weight."""
    weights = tf.cast(weights, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def surrogate_advantage(
    log_prob: tf.Tensor,
    old_log_prob: tf.Tensor,
    advantages: tf.Tensor,
    weights: tf.Tensor,
) -> tf.Tensor:
    """The surrogate objective L_θold(θ) of Eq. (14), up to the constant η(θ_old).

    L(θ) = Ê[ π_θ(a|s) / q(a|s) · Â(s, a) ] with q = π_θold (single path), the
    sample average taken over the entries where `weights` is non-zero.
    """
    ratio = tf.exp(log_prob - tf.stop_gradient(old_log_prob))
    return masked_mean(ratio * tf.stop_gradient(advantages), weights)


def vine_surrogate(
    log_prob: tf.Tensor,
    old_log_prob: tf.Tensor,
    advantages: tf.Tensor,
    all_actions: tf.Tensor,
) -> tf.Tensor:
    """The vine surrogate of Section 5.2 over a rollout set: [N, K] inputs → scalar.

    With every action of a discrete space enumerated (`all_actions` True), the
    exact L_n(θ) = Σ_k π_θ(a_k|s_n) Â(s_n, a_k). With K actions sampled from
    q = π_θold, the self-normalised importance-weighted estimator
    L_n(θ) = Σ_k w_k Â(s_n, a_k) / Σ_k w_k with w_k = π_θ(a_k|s_n) / π_θold(a_k|s_n).
    Returns the mean of L_n over the N states.
    """
    ratio = tf.exp(log_prob - tf.stop_gradient(old_log_prob))
    advantages = tf.stop_gradient(advantages)
    exact = tf.reduce_sum(tf.exp(log_prob) * advantages, axis=1)
    self_normalised = tf.reduce_sum(ratio * advantages, axis=1) / tf.reduce_sum(ratio, axis=1)
    return tf.reduce_mean(tf.where(all_actions, exact, self_normalised))


def mean_kl(kl_per_state: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """The average KL divergence D̄_KL^ρ(θ_old, θ) of Eq. (12)/(14).

    `kl_per_state` holds KL(π_θold(·|s) ‖ π_θ(·|s)) for each sampled state; the
    heuristic constraint of Section 4 replaces the max over states by this mean.
    """
    return masked_mean(kl_per_state, weights)


def fisher_vector_product(
    kl_fn: Callable[[], tf.Tensor],
    variables: Sequence[tf.Variable],
    vector: tf.Tensor,
    damping: float = 0.0,
) -> tf.Tensor:
    """F·v, the Hessian of the mean KL times a vector (Appendix C.1), plus damping·v.

    F is never formed: F·v = ∇_θ[(∇_θ D̄_KL(θ_old, θ))ᵀ v] at θ = θ_old, two
    reverse-mode passes through `kl_fn`, which must compute the mean KL from
    `variables` (with π_θold held constant). `damping` adds λ·v, the usual
    Tikhonov term that keeps conjugate gradient stable on a singular Fisher.
    """
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            kl = kl_fn()
        grads = inner.gradient(kl, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_dot_v = tf.reduce_sum(flatten(grads) * tf.stop_gradient(vector))
    hvp = outer.gradient(grad_dot_v, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return flatten(hvp) + damping * vector


def gauss_newton_fisher_vector_product(
    params_fn: Callable[[], object],
    kl_of_params_fn: Callable[[object], tf.Tensor],
    variables: Sequence[tf.Variable],
    vector: tf.Tensor,
    damping: float = 0.0,
) -> tf.Tensor:
    """F·v as Jᵀ (∇²_p D̄_KL) J v: the same Hessian of the mean KL, by the chain rule.

    With p(θ) the distribution parameters the network outputs (means and scales,
    or logits) and J = ∂p/∂θ, ∇²_θ KL = Jᵀ ∇²_p KL J + Σ_i (∂KL/∂p_i) ∇²_θ p_i, and the
    second term vanishes at θ = θ_old, where the KL is minimal in p. So at θ_old this
    equals `fisher_vector_product`, at the cost of one forward pass carrying tangents
    (J v), a double backward pass through the KL formula alone (no network), and one
    reverse pass (Jᵀ ·), instead of differentiating the network's backward pass.

    `params_fn()` returns the (nested) parameter tensors from `variables`;
    `kl_of_params_fn(params)` the mean KL(π_θold ‖ π_params).
    """
    tangents = unflatten(vector, variables)
    with tf.GradientTape() as reverse:
        with tf.autodiff.ForwardAccumulator(variables, tangents) as forward:
            params = params_fn()
    flat_params = tf.nest.flatten(params)
    j_v = forward.jvp(flat_params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    detached = [tf.stop_gradient(p) for p in flat_params]
    with tf.GradientTape() as outer:
        outer.watch(detached)
        with tf.GradientTape() as inner:
            inner.watch(detached)
            kl = kl_of_params_fn(tf.nest.pack_sequence_as(params, detached))
        grads = inner.gradient(kl, detached, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_dot = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(t)) for g, t in zip(grads, j_v)])
    h_j_v = outer.gradient(grad_dot, detached, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    jt_h_j_v = reverse.gradient(flat_params, variables, output_gradients=h_j_v,
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return flatten(jt_h_j_v) + damping * vector


def conjugate_gradient(
    matvec: Callable[[tf.Tensor], tf.Tensor],
    b: tf.Tensor,
    iterations: int = 10,
    residual_tol: float = 1e-10,
    return_residual: bool = False,
):
    """Approximately solves A x = b by conjugate gradient (Appendix C: s ≈ F⁻¹ g).

    `matvec(v)` returns A·v for a symmetric positive-definite A (the damped Fisher).
    Runs at most `iterations` steps from x = 0 and stops early once the squared
    residual norm falls below `residual_tol`: one `tf.while_loop`, which also runs
    eagerly. With `return_residual`, returns (x, r) where r = b − A x is CG's running
    residual, so that xᵀA x = xᵀ(b − r) costs no further product.
    """
    def not_converged(i, x, r, p, r_dot_r):
        return tf.logical_and(i < iterations, r_dot_r >= residual_tol)

    def step(i, x, r, p, r_dot_r):
        z = matvec(p)
        alpha = r_dot_r / tf.tensordot(p, z, 1)
        x = x + alpha * p
        r = r - alpha * z
        new_r_dot_r = tf.tensordot(r, r, 1)
        p = r + (new_r_dot_r / r_dot_r) * p
        return i + 1, x, r, p, new_r_dot_r

    r = tf.identity(b)
    _, x, r, _, _ = tf.while_loop(not_converged, step, (tf.constant(0), tf.zeros_like(b), r, r, tf.tensordot(r, r, 1)))
    return (x, r) if return_residual else x


def max_step_size(direction: tf.Tensor, fisher_direction: tf.Tensor, max_kl: float) -> tf.Tensor:
    """β = sqrt(2δ / sᵀFs), the largest step along s within the KL trust region (Appendix C).

    With the quadratic model D̄_KL(θ_old, θ_old + βs) ≈ ½ β² sᵀFs, this β makes the
    model equal to δ = `max_kl`. `fisher_direction` is F·s (or CG's g − r, equal to it
    up to round-off, which saves one Fisher-vector product).
    """
    shs = tf.tensordot(direction, fisher_direction, 1)
    return tf.sqrt(2.0 * max_kl / shs)


class LineSearchResult(NamedTuple):
    """What `backtracking_line_search` found; the variables hold the accepted θ."""

    accepted: tf.Tensor  # bool: a candidate passed; False means θ was restored exactly
    backtracks: tf.Tensor  # int32: shrinks taken before the accepted candidate (or all tried)
    step_fraction: tf.Tensor  # the accepted fraction of the full step (0 if rejected)
    kl: tf.Tensor  # mean KL at the final θ (0 if rejected)
    expected_improvement: tf.Tensor  # gᵀ(fraction · full step) of the accepted or last candidate
    actual_improvement: tf.Tensor  # L(θ_new) − L(θ_old) of the accepted or last candidate


def backtracking_line_search(
    variables: Sequence[tf.Variable],
    full_step: Sequence[tf.Tensor],
    expected_full_improvement: tf.Tensor,
    surrogate_and_kl_fn: Callable[[], tuple],
    surrogate_before: tf.Tensor,
    max_kl: float,
    max_backtracks: int = 10,
    shrink: float = 0.8,
    accept_ratio: float = 0.1,
) -> LineSearchResult:
    """Backtracking line search on the surrogate under the KL constraint (Section 6).

    Tries θ = θ_old + shrinkᵏ · `full_step` for k = 0 … max_backtracks−1 and accepts
    the first candidate whose mean KL is ≤ δ and whose actual surrogate improvement
    is positive and at least `accept_ratio` times the improvement the linear model
    predicts (gᵀ step). If none passes, every variable is assigned back its exact
    old value. `surrogate_and_kl_fn()` evaluates (L(θ), D̄_KL(θ_old, θ)) at the
    variables' current values.
    """
    old_values = [tf.identity(v) for v in variables]
    zero = tf.zeros_like(expected_full_improvement)

    def searching(k, fraction, accepted, kl, expected, actual):
        return tf.logical_and(k < max_backtracks, tf.logical_not(accepted))

    def try_candidate(k, fraction, accepted, kl, expected, actual):
        for v, old, step in zip(variables, old_values, full_step):
            v.assign(old + tf.cast(fraction, v.dtype) * step)
        surrogate, kl = surrogate_and_kl_fn()
        actual = surrogate - surrogate_before
        expected = fraction * expected_full_improvement
        ok = tf.logical_and(
            tf.logical_and(tf.math.is_finite(surrogate), tf.math.is_finite(kl)),
            tf.logical_and(kl <= max_kl, actual > 0.0),
        )
        ok = tf.logical_and(ok, actual >= accept_ratio * expected)
        # k stays at the accepted candidate's index; the fraction shrinks only on failure.
        return (tf.where(ok, k, k + 1), tf.where(ok, fraction, fraction * shrink), ok,
                tf.cast(kl, zero.dtype), expected, actual)

    backtracks, fraction, accepted, kl, expected, actual = tf.while_loop(
        searching, try_candidate,
        (tf.constant(0, tf.int32), tf.ones_like(zero), tf.constant(False), zero, zero, zero))

    def restore():
        for v, old in zip(variables, old_values):
            v.assign(old)
        return tf.constant(True)

    tf.cond(accepted, lambda: tf.constant(False), restore)
    kl = tf.where(accepted, kl, zero)
    accepted_fraction = tf.where(accepted, fraction, zero)
    return LineSearchResult(accepted, backtracks, accepted_fraction, kl, expected, actual)
