#!/usr/bin/env python3
"""Experiment: cost of one Fisher-vector product (FVP) on Hopper-sized data, by method.

Not tftrpo code: plain TensorFlow on the same shapes as bench/update_speed.py
(2048 states, 11 → 64 → 64 → 3 tanh MLP mean, state-independent log σ,
mean KL(π_old ‖ π_θ) of diagonal Gaussians), 1 intra-op / 1 inter-op thread.
Each variant runs 25 products inside one compiled `tf.while_loop` (like CG does),
and all variants are checked against each other numerically.

  double_backward   what tftrpo.natural_gradient.fisher_vector_product does: every product
                    re-runs the forward pass and the first-order KL gradient under fresh
                    tapes, then differentiates gᵀv (reverse-over-reverse)
  double_backward_xla  the same, compiled with XLA (`jit_compile=True`)
  gauss_newton      F·v = Jᵀ M J v with the analytic Fisher M of the Gaussian
                    (1/σ² on the mean, 2 on log σ): forward-mode J v
                    (`tf.autodiff.ForwardAccumulator`) + one reverse pass
  gauss_newton_xla  the same with XLA

  PYTHONPATH=. /work/venv/bin/python bench/experiments/fvp_variants.py [--repeats 15]

Writes bench/results/fvp_variants.json.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--products", type=int, default=25)
    parser.add_argument("--batch", type=int, default=2048)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import common

    rng = np.random.default_rng(0)
    n, obs_dim, act_dim, hidden = args.batch, 11, 3, 64
    x = tf.constant(rng.normal(size=(n, obs_dim)).astype(np.float32))
    init = tf.keras.initializers.Orthogonal(gain=np.sqrt(2.0), seed=0)
    shapes = [(obs_dim, hidden), (hidden,), (hidden, hidden), (hidden,), (hidden, act_dim), (act_dim,)]
    net_vars = [tf.Variable(init(s) if len(s) == 2 else tf.zeros(s)) for s in shapes]
    net_vars[4].assign(net_vars[4] * 0.01)
    log_std = tf.Variable(tf.zeros([act_dim]))
    variables = net_vars + [log_std]
    sizes = [int(np.prod(v.shape)) for v in variables]

    def mean_fn():
        w1, b1, w2, b2, w3, b3 = net_vars
        h = tf.tanh(x @ w1 + b1)
        h = tf.tanh(h @ w2 + b2)
        return h @ w3 + b3

    mu_old = tf.stop_gradient(mean_fn())
    log_std_old = tf.stop_gradient(tf.identity(log_std))

    def kl():
        mu = mean_fn()
        var, var_old = tf.exp(2.0 * log_std), tf.exp(2.0 * log_std_old)
        per_dim = log_std - log_std_old + (var_old + tf.square(mu_old - mu)) / (2.0 * var) - 0.5
        return tf.reduce_mean(tf.reduce_sum(per_dim, axis=-1))

    def flat(ts):
        return tf.concat([tf.reshape(t, [-1]) for t in ts], 0)

    def split(v):
        return [tf.reshape(p, var.shape) for p, var in zip(tf.split(v, sizes), variables)]

    def fvp_double_backward(v):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                k = kl()
            g = inner.gradient(k, variables)
            gv = tf.reduce_sum(flat(g) * tf.stop_gradient(v))
        return flat(outer.gradient(gv, variables))

    def fvp_gauss_newton(v):
        parts = split(v)
        with tf.GradientTape() as tape:
            with tf.autodiff.ForwardAccumulator(net_vars, parts[:-1]) as acc:
                mu = mean_fn()
            jv = acc.jvp(mu)  # [N, A]
        u = jv / tf.exp(2.0 * log_std) / float(n)  # M = diag(1/σ²) on the mean, averaged over states
        jt_u = tape.gradient(mu, net_vars, output_gradients=tf.stop_gradient(u))
        return flat(jt_u + [2.0 * parts[-1]])  # M = 2 on log σ

    def looped(fvp, jit):
        @tf.function(jit_compile=jit)
        def run(v):
            acc = tf.zeros_like(v)
            for _ in tf.range(args.products):
                acc = acc + fvp(v + 1e-3 * acc)
            return acc
        return run

    v0 = tf.constant(rng.normal(size=(sum(sizes),)).astype(np.float32))
    reference = fvp_double_backward(v0).numpy()
    gn = fvp_gauss_newton(v0).numpy()
    rel_err = float(np.linalg.norm(gn - reference) / np.linalg.norm(reference))

    variants = {
        "double_backward": looped(fvp_double_backward, False),
        "double_backward_xla": looped(fvp_double_backward, True),
        "gauss_newton": looped(fvp_gauss_newton, False),
        "gauss_newton_xla": looped(fvp_gauss_newton, True),
    }
    outputs, times = {}, {k: [] for k in variants}
    for name, fn in variants.items():
        try:
            outputs[name] = fn(v0).numpy()  # trace / compile
        except Exception as e:  # XLA unavailable, say
            outputs[name] = None
            times[name] = None
            print(f"{name}: failed: {type(e).__name__}: {str(e)[:200]}")
    live = [k for k in variants if outputs[k] is not None]
    for _ in range(args.repeats):  # interleaved
        for name in live:
            t0 = time.perf_counter()
            variants[name](v0).numpy()
            times[name].append(time.perf_counter() - t0)

    ref_loop = outputs["double_backward"]
    result = {"benchmark": "fvp_variants", "machine": common.machine_info(),
              "settings": vars(args), "tensorflow": tf.__version__,
              "gauss_newton_vs_double_backward_rel_error_single_product": rel_err, "variants": {}}
    base = statistics.median(times["double_backward"]) / args.products
    for name in variants:
        if times[name] is None:
            result["variants"][name] = {"error": True}
            continue
        per = [t / args.products * 1e3 for t in times[name]]
        med = statistics.median(per)
        err = float(np.linalg.norm(outputs[name] - ref_loop) / np.linalg.norm(ref_loop))
        result["variants"][name] = {"ms_per_product_median": med, "ms_per_product_min": min(per),
                                    "relative_to_double_backward": med / (base * 1e3),
                                    "loop_output_rel_error_vs_double_backward": err, "raw_ms_per_product": per}
        print(f"{name:22s} {med:6.2f} ms/product (min {min(per):.2f})  x{med / (base * 1e3):.2f}  "
              f"rel.err {err:.1e}")
    print(f"single-product Gauss-Newton vs double backward: rel. error {rel_err:.1e}")
    out = os.path.join(common.RESULTS_DIR, "fvp_variants.json")
    common.write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
