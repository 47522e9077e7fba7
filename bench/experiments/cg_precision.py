#!/usr/bin/env python3
"""Experiment: how much of 25-iteration CG's shortfall is float32 rounding in the Fisher-vector products?

On sb3-contrib's dumped Hopper batches (`sb3_same_batch.py --iterations ... --dumps DIR`), with
sb3-contrib's weights loaded into the preset's actor, this forms the damped Fisher of tftrpo's
system densely in float64: A = Jᵀ diag(1/σ²) J / N ⊕ 2·I (the Gaussian mean and its free log σ;
J the per-state Jacobian of the mean, Appendix C's F for this policy) + dλ·I. It checks A against
the library's matrix-free product on random vectors, solves A s = g exactly, and compares 25 CG
iterations done
- as tftrpo does them (float32, the library's product and `conjugate_gradient`),
- in float64 on the dense A (exact arithmetic, for 25 iterations),
- in float64 but on the library's float32 products,
- in float32 on the dense A,
with 100 float32 iterations (tftrpo) and sb3-contrib's step beside them. Per solve it reports the
quadratic model q(s) = gᵀs − ½ sᵀAs as a fraction of q(A⁻¹g) (1 = solved), and the step's
surrogate gain (Eq. 14) and KL(π_old ‖ π_new) on the batch, each step scaled to δ as tftrpo does.

  python bench/experiments/cg_precision.py DIR 1 150 250 370 440 455 461   # → bench/results/cg_precision.json
  python bench/experiments/cg_precision.py DIR 461 --time-rounds 7          # also times TRPOAgent.train

With --time-rounds, it also times a whole `TRPOAgent.train` on the last batch with
cg_precision="float32" and "float64", alternating (A B A B), both traced and compiled first.
"""
import time
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import tensorflow as tf  # noqa: E402

import cg_start  # noqa: E402
import sb3_same_batch  # noqa: E402


def conjugate_gradient_numpy(matvec, b, iterations):
    """The textbook CG of `tftrpo.natural_gradient.conjugate_gradient`, from 0, in b's dtype.

    In NumPy on purpose: the float32 and float64 arithmetic of these columns is NumPy's, apart
    from TensorFlow's kernels (the float32 column moves with the summation order)."""
    x, r = np.zeros_like(b), b.copy()
    p, r_dot_r = r.copy(), r @ r
    for _ in range(iterations):
        z = matvec(p)
        alpha = r_dot_r / (p @ z)
        x += alpha * p
        r -= alpha * z
        new_r_dot_r = r @ r
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x


def dense_fisher(batch):
    """(J [N·d, P], 1/σ² [N·d], N, number of log σ parameters) of the preset's Gaussian actor."""
    experience, agent, mask = batch.experience, batch.agent, batch.mask.numpy() > 0
    variables = agent._actor_net.trainable_variables
    with tf.GradientTape() as tape:
        distribution = agent.action_distribution(experience.observation, experience.step_type, training=True)
        means = tf.reshape(tf.boolean_mask(distribution.mean(), mask), [-1])
    jacobian = tape.jacobian(means, variables, experimental_use_pfor=True,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)
    J = np.concatenate([tf.reshape(j, [means.shape[0], -1]).numpy() for j in jacobian], axis=1).astype(np.float64)
    inverse_variance = 1.0 / tf.boolean_mask(distribution.stddev(), mask).numpy().reshape(-1).astype(np.float64) ** 2
    # The last variable is the free log σ: the mean does not depend on it, and its Fisher block is 2·I.
    assert not J[:, -variables[-1].shape.num_elements():].any()
    return J, inverse_variance, int(mask.sum()), variables[-1].shape.num_elements()


def time_train(path, rounds):
    """Seconds of `TRPOAgent.train` on one batch per cg_precision, alternating, from the same weights."""
    data = np.load(path)
    experience, _ = sb3_same_batch.experience_of(data)
    agents = {p: sb3_same_batch.sb3_weights_agent_factory(data, cg_precision=p)[1]() for p in ("float32", "float64")}
    start = {p: [v.numpy() for v in a.variables] for p, a in agents.items()}
    seconds = {p: [] for p in agents}
    for round_ in range(rounds + 1):  # round 0 traces and compiles
        for precision, agent in agents.items():
            for v, x in zip(agent.variables, start[precision]):
                v.assign(x)
            began = time.perf_counter()
            float(agent.train(experience).loss)
            if round_:
                seconds[precision].append(time.perf_counter() - began)
    ratios = [b / a for a, b in zip(seconds["float32"], seconds["float64"])]
    print(f"train(): float32 median {np.median(seconds['float32']) * 1e3:.0f} ms, float64 "
          f"{np.median(seconds['float64']) * 1e3:.0f} ms, ratio median {np.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})", flush=True)
    return {"seconds": seconds, "ratio_float64_over_float32": {"min": min(ratios), "median": float(np.median(ratios)),
                                                                "max": max(ratios)}}


def run(dumps, iterations):
    results = {}
    for it in iterations:
        batch = cg_start.Batch(os.path.join(dumps, f"{it}.npz"))
        J, inverse_variance, n, n_log_std = dense_fisher(batch)
        damping = batch.config.cg_damping
        log_std_block = np.r_[np.zeros(J.shape[1] - n_log_std), 2.0 * np.ones(n_log_std)]
        A = J.T @ (inverse_variance[:, None] * J) / n + np.diag(log_std_block + damping)
        g = batch.g.numpy().astype(np.float64)
        library = lambda v: batch.product(tf.constant(v, tf.float32)).numpy()  # noqa: E731
        probe = np.random.default_rng(0).standard_normal(g.shape)
        product_error = float(np.linalg.norm(library(probe) - A @ probe) / np.linalg.norm(A @ probe))
        assert product_error < 1e-5, f"iteration {it}: the dense Fisher is not the library's ({product_error:.1e})"
        exact = np.linalg.solve(A, g)

        def q(s):
            return float(g @ s - 0.5 * s @ A @ s)

        A32 = A.astype(np.float32)
        zero = np.zeros(g.shape, np.float32)
        solves = {
            "tftrpo, float32, 25": batch.cg(zero, 25),
            "float64 dense, 25": conjugate_gradient_numpy(lambda v: A @ v, g, 25),
            "float64 loop on the library's float32 products, 25": conjugate_gradient_numpy(
                lambda v: library(v).astype(np.float64), g, 25),
            "float32 dense, 25": conjugate_gradient_numpy(lambda v: A32 @ v, g.astype(np.float32), 25),
            "tftrpo, float32, 100": batch.cg(zero, 100),
            "exact solve": exact,
        }
        eigenvalues = np.linalg.eigvalsh(A)
        row = {"condition_number": float(eigenvalues[-1] / eigenvalues[0]),
               "library_product_relative_error": product_error, "solves": {}}
        for name, s in solves.items():
            s = np.asarray(s, np.float64)
            gain, kl = batch.gain_and_kl(batch.to_trust_region(s.astype(np.float32)))
            row["solves"][name] = {"q_over_q_star": q(s) / q(exact), "surrogate_gain": gain, "kl": kl}
        gain, kl = batch.gain_and_kl(sb3_same_batch.sb3_policy_step(batch.data))
        row["solves"]["sb3-contrib's step"] = {"surrogate_gain": gain, "kl": kl}
        for name, r in row["solves"].items():
            print(f"{it} {name:52s} q/q* {r.get('q_over_q_star', float('nan')):.4f} gain {r['surrogate_gain']:.5f} "
                  f"kl {r['kl']:.5f}", flush=True)
        print(f"{it} cond(A) {row['condition_number']:.3g}, library product error {product_error:.1e}", flush=True)
        results[str(it)] = row
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps")
    parser.add_argument("iterations", type=int, nargs="+")
    parser.add_argument("--time-rounds", type=int, default=0, help="also time train() over this many rounds")
    args = parser.parse_args()
    results = run(args.dumps, args.iterations)
    if args.time_rounds:
        results["timing"] = time_train(os.path.join(args.dumps, f"{args.iterations[-1]}.npz"), args.time_rounds)
    with open(os.path.join(REPO, "bench", "results", "cg_precision.json"), "w") as f:
        json.dump(results, f, indent=1)
