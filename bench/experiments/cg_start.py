#!/usr/bin/env python3
"""Experiment: how much of sb3-contrib's better late-training step is its CG start point?

On sb3-contrib's dumped batches (make them with `sb3_same_batch.py --iterations 371 441 461
--dumps DIR`), this solves tftrpo's damped system (F + dλI)s = g with 25 CG iterations from 0
(tftrpo), from sb3-contrib's start 1e-4·randn (scaled by 1/d to tftrpo's system; three draws),
and with 100 iterations from 0; scales each to the preset's δ with an explicit sᵀFs; and
reports each step's surrogate gain (Eq. 14) and KL(π_old ‖ π_new) on the batch, beside the
step sb3-contrib took.

  python bench/experiments/cg_start.py DIR 371 441 461     # → bench/results/cg_start.json
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "bench", "workers"))
sys.path.insert(0, REPO)
import tensorflow as tf  # noqa: E402
from tf_agents.agents.ppo import ppo_utils  # noqa: E402
from tf_agents.environments import tf_py_environment  # noqa: E402
from tf_agents.trajectories import trajectory  # noqa: E402

import sb3_same_batch  # noqa: E402
from sb3_zoo import ACTOR_PARAMETERS, VALUE_PARAMETERS, load_sb3_parameters  # noqa: E402
from tftrpo import advantages as adv_lib  # noqa: E402
from tftrpo import natural_gradient as ng  # noqa: E402
from tftrpo import presets, train  # noqa: E402
from tftrpo.envs.suites import load_batched  # noqa: E402


def run(dumps, it):
    data = np.load(os.path.join(dumps, f'{it}.npz'))
    (st, obs, act, nst, rew, disc), where = sb3_same_batch.as_trajectory(data)
    exp = trajectory.Trajectory(step_type=tf.constant(st, tf.int32), observation=tf.constant(obs, tf.float32),
        action=tf.constant(act, tf.float32), policy_info=(), next_step_type=tf.constant(nst, tf.int32),
        reward=tf.constant(rew, tf.float32), discount=tf.constant(disc, tf.float32))
    config = presets.preset("Hopper-v5", normalize_observations=False, normalize_rewards=False)
    env = tf_py_environment.TFPyEnvironment(load_batched("Hopper-v5", num_envs=2, seed=0))
    agent = train.make_agent(config, env, tf.Variable(0, dtype=tf.int64))
    for net, names in ((agent._actor_net, ACTOR_PARAMETERS), (agent._value_net, VALUE_PARAMETERS)):
        load_sb3_parameters(net.trainable_variables, lambda n: data["before/" + n], names)
    mask = adv_lib.training_mask(exp.step_type)
    values = agent.value_predictions(exp.observation, exp.step_type)
    a, _ = agent.compute_advantages(exp, values)
    mean = ng.masked_mean(a, mask)
    a = (a - mean) / (tf.sqrt(ng.masked_mean(tf.square(a - mean), mask)) + 1e-8)  # as TRPOAgent standardises
    old = agent.action_distribution(exp.observation, exp.step_type)
    old_lp = old.log_prob(exp.action)
    av = agent._actor_net.trainable_variables
    theta0 = ng.flatten(av).numpy()
    def surrogate():
        return ng.masked_mean(tf.exp(agent.action_distribution(exp.observation, exp.step_type, training=True).log_prob(exp.action) - old_lp) * a, mask)
    with tf.GradientTape() as tape:
        L0 = surrogate()
    g = ng.flatten(tape.gradient(L0, av))
    def kl():
        return ng.mean_kl(ppo_utils.nested_kl_divergence(old, agent.action_distribution(exp.observation, exp.step_type, training=True), outer_dims=[0, 1]), mask)
    damp = config.cg_damping
    fvp = tf.function(lambda v: ng.fisher_vector_product(kl, av, v, damp))
    def cg(x0, iters):
        """CG from x0: x0 plus tftrpo's CG (from 0) on the shifted system A·y = g − A·x0."""
        x0 = tf.constant(x0, tf.float32)
        return (x0 + ng.conjugate_gradient(fvp, g - fvp(x0), iters)).numpy()
    def evaluate(step):
        for v, x in zip(av, ng.unflatten(tf.constant(theta0 + step, tf.float32), av)): v.assign(x)
        out = float(surrogate() - L0), float(kl())
        for v, x in zip(av, ng.unflatten(tf.constant(theta0, tf.float32), av)): v.assign(x)
        return out
    def scaled(s):
        beta = np.sqrt(2 * config.max_kl / float(tf.tensordot(s, fvp(tf.constant(s)), 1)))
        return beta * s
    sb3_step = np.concatenate([(data["after/" + n] - data["before/" + n]).T.reshape(-1) for n in ACTOR_PARAMETERS])
    res = {"sb3 actual": evaluate(sb3_step), "tftrpo CG(0), 25": evaluate(scaled(cg(np.zeros_like(theta0), 25))),
           "CG(0), 100": evaluate(scaled(cg(np.zeros_like(theta0), 100)))}
    rng = np.random.default_rng(0)
    d = int(data["actions"].shape[-1])  # sb3-contrib's system is tftrpo's divided by d
    for k in range(3):
        res[f"CG(1e-4 randn/d) #{k}, 25"] = evaluate(scaled(cg(1e-4 * rng.standard_normal(theta0.shape).astype(np.float32) / d, 25)))
    for k, (gain, klv) in res.items():
        print(f"{it} {k:28s} gain {gain:.5f} kl {klv:.5f} gain/kl {gain/klv:.3f}", flush=True)
    return {k: {"surrogate_gain": gain, "kl": klv} for k, (gain, klv) in res.items()}


if __name__ == "__main__":
    dumps, iterations = sys.argv[1], sys.argv[2:]
    results = {it: run(dumps, it) for it in iterations}
    out = os.path.join(REPO, "bench", "results", "cg_start.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
