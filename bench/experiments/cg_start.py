#!/usr/bin/env python3
"""Experiment: how much of sb3-contrib's better late-training step is its CG start point?

On sb3-contrib's dumped batches (make them with `sb3_same_batch.py --iterations ... --dumps DIR`),
this solves tftrpo's damped system (F + dλI)s = g with 25 CG iterations from 0 (tftrpo), from
sb3-contrib's start 1e-4·randn (scaled by 1/d to tftrpo's system; three draws), and with 100
iterations from 0; scales each to the preset's δ with an explicit sᵀFs; and reports each step's
surrogate gain (Eq. 14) and KL(π_old ‖ π_new) on the batch, beside the step sb3-contrib took.

Where the previous iteration's dump is there too, it also warm-starts CG from the previous
iteration's direction s' (tftrpo's 25-iteration solve on that batch), scaled to the best multiple
c·s' of the quadratic model (c = s'ᵀg / s'ᵀ(F + dλI)s', one product) and followed by 24
iterations: the same 25 products. It reports cos(s', g) with it.

Dumps made since stop 22 also hold sb3-contrib's own CG start and search direction; then it also
solves from that exact start (over d), and reports how far each solve is from sb3-contrib's direction.

  python bench/experiments/cg_start.py DIR 370 371 440 441 460 461   # → bench/results/cg_start.json
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import tensorflow as tf  # noqa: E402
from tf_agents.agents.ppo import ppo_utils  # noqa: E402

import sb3_same_batch  # noqa: E402
from tftrpo import advantages as adv_lib  # noqa: E402
from tftrpo import agent as agent_lib  # noqa: E402
from tftrpo import natural_gradient as ng  # noqa: E402


class Batch:
    """One dumped iteration in tftrpo's terms: g, the damped Fisher product and the step's effect."""

    def __init__(self, path):
        self.data = np.load(path)
        exp, _ = sb3_same_batch.experience_of(self.data)
        self.experience = exp
        self.config, make_agent = sb3_same_batch.sb3_weights_agent_factory(self.data)
        self.agent = agent = make_agent()
        self.mask = mask = adv_lib.training_mask(exp.step_type)
        a, _ = agent.compute_advantages(exp, agent.value_predictions(exp.observation, exp.step_type))
        a = agent_lib._standardize(a, mask)  # as TRPOAgent standardises
        old = agent.action_distribution(exp.observation, exp.step_type)
        old_log_prob = old.log_prob(exp.action)
        self._variables = agent._actor_net.trainable_variables
        self._theta = ng.flatten(self._variables).numpy()

        def new():
            return agent.action_distribution(exp.observation, exp.step_type, training=True)

        self._surrogate = lambda: ng.surrogate_advantage(new().log_prob(exp.action), old_log_prob, a, mask)
        self._kl = lambda: ng.mean_kl(ppo_utils.nested_kl_divergence(old, new(), outer_dims=[0, 1]), mask)
        with tf.GradientTape() as tape:
            self._surrogate_before = self._surrogate()
        self.g = ng.flatten(tape.gradient(self._surrogate_before, self._variables))
        self.product = tf.function(lambda v: ng.fisher_vector_product(self._kl, self._variables, v,
                                                                      self.config.cg_damping))

    def cg(self, x0, iterations):
        """CG from x0: x0 plus tftrpo's CG (from 0) on the shifted system A·y = g − A·x0."""
        x0 = tf.constant(x0, tf.float32)
        return (x0 + ng.conjugate_gradient(self.product, self.g - self.product(x0), iterations)).numpy()

    def to_trust_region(self, s):
        """β·s with β = sqrt(2δ / sᵀAs) from an explicit product."""
        return np.sqrt(2 * self.config.max_kl / float(tf.tensordot(s, self.product(tf.constant(s)), 1))) * s

    def gain_and_kl(self, step):
        """(L(θ + step) − L(θ), D̄_KL(θ, θ + step)) on this batch; θ is restored after."""
        def assign(flat):
            for v, x in zip(self._variables, ng.unflatten(tf.constant(flat, tf.float32), self._variables)):
                v.assign(x)
        assign(self._theta + step)
        out = float(self._surrogate() - self._surrogate_before), float(self._kl())
        assign(self._theta)
        return out


def run(dumps, iterations):
    results, previous = {}, None  # previous: (iteration, tftrpo's 25-iteration direction there)
    for it in sorted(iterations):
        batch = Batch(os.path.join(dumps, f"{it}.npz"))
        zero = np.zeros(batch.g.shape, np.float32)
        direction = batch.cg(zero, 25)
        steps = {"sb3 actual": sb3_same_batch.sb3_policy_step(batch.data),
                 "tftrpo CG(0), 25": batch.to_trust_region(direction),
                 "CG(0), 100": batch.to_trust_region(batch.cg(zero, 100))}
        rng = np.random.default_rng(0)
        d = int(batch.data["actions"].shape[-1])  # sb3-contrib's system is tftrpo's divided by d
        for k in range(3):
            start = 1e-4 * rng.standard_normal(zero.shape).astype(np.float32) / d
            steps[f"CG(1e-4 randn/d) #{k}, 25"] = batch.to_trust_region(batch.cg(start, 25))
        extra = {}
        if "cg/start" in batch.data:  # dumps record sb3-contrib's own start and direction
            start, sb3_direction = (sb3_same_batch.sb3_flat_in_tftrpo_order(batch.data, batch.data["cg/" + k]) / d
                                    for k in ("start", "direction"))
            same_start = batch.cg(start.astype(np.float32), 25)
            steps["CG(sb3's own start/d), 25"] = batch.to_trust_region(same_start)
            steps["sb3's direction/d, to δ"] = batch.to_trust_region(sb3_direction.astype(np.float32))

            def relative(a, b):
                return float(np.linalg.norm(a - b) / np.linalg.norm(b))
            results_sb3_start = {"relative difference to sb3's direction/d": {
                "CG from sb3's start": relative(same_start, sb3_direction), "CG from 0": relative(direction, sb3_direction)}}
        else:
            results_sb3_start = None
        if previous is not None and previous[0] == it - 1:
            s_prev, g = previous[1], batch.g.numpy()
            c = float(s_prev @ g / float(tf.tensordot(s_prev, batch.product(tf.constant(s_prev)), 1)))
            steps["CG(c·s_prev), 24"] = batch.to_trust_region(batch.cg(c * s_prev, 24))
            extra = {"cos(s_prev, g)": float(s_prev @ g / (np.linalg.norm(s_prev) * np.linalg.norm(g))),
                     "cos(s_prev, s)": float(s_prev @ direction / (np.linalg.norm(s_prev) * np.linalg.norm(direction))),
                     "c": c}
        previous = (it, direction)
        results[str(it)] = {}
        for name, step in steps.items():
            gain, kl = batch.gain_and_kl(step)
            results[str(it)][name] = {"surrogate_gain": gain, "kl": kl}
            print(f"{it} {name:28s} gain {gain:.5f} kl {kl:.5f} gain/kl {gain / kl:.3f}", flush=True)
        if results_sb3_start:
            results[str(it)]["sb3 start"] = results_sb3_start
            print(f"{it} sb3 start: {results_sb3_start}", flush=True)
        if extra:
            results[str(it)]["warm start"] = extra
            print(f"{it} warm start: " + ", ".join(f"{k} {v:+.4f}" for k, v in extra.items()), flush=True)
    return results


if __name__ == "__main__":
    dumps, iterations = sys.argv[1], [int(i) for i in sys.argv[2:]]
    out = os.path.join(REPO, "bench", "results", "cg_start.json")
    with open(out, "w") as f:
        json.dump(run(dumps, iterations), f, indent=1)
