#!/usr/bin/env python3
"""Experiment: what sb3-contrib's `target_kl` and `cg_damping` mean in tftrpo's terms.

sb3-contrib's TRPO computes `kl_divergence(distribution, old_distribution).mean()`; for a
diagonal Gaussian that is torch's per-dimension Normal KL, so `.mean()` averages over the
d action dimensions as well as the states. Its trust region bounds D̄_KL/d, and the Fisher it
damps is F/d. tftrpo (like the paper) bounds D̄_KL, the KL of the whole action distribution.
Solving (F/d + λI)s = g and scaling to ½β²sᵀ(F/d + λI)s = δ is tftrpo's step with
max_kl = d·δ and cg_damping = d·λ.

This checks it on a real batch: sb3-contrib (its own venv) trains Walker2d-v5 for N
iterations with rl-zoo3's settings and dumps the last rollout, its policy weights, its
policy gradient g and its CG direction s; tftrpo's functions then rebuild π from those
weights in a TF-Agents actor network and solve for the same g with (a) tftrpo's own
trust region and (b) the KL divided by d. Prints gᵀs for each (the step's predicted
improvement and KL both follow from it).

  python bench/experiments/sb3_trust_region.py [--seed 0] [--iterations 1]

(uses /tmp/tftrpo-bench-sb3/bin/python for sb3, see bench/setup_sb3_env.sh, and the current
python for tftrpo). Writes bench/results/sb3_trust_region.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "workers"))
from sb3_zoo import ACTOR_PARAMETERS, load_sb3_parameters, make_rl_zoo3_trpo, rl_zoo3_settings  # noqa: E402

ENV_ID = "Walker2d-v5"
SETTINGS = rl_zoo3_settings(ENV_ID)


def dump_sb3(seed: int, iterations: int, out: str) -> None:
    """Runs in sb3's venv: train `iterations` updates, save the last batch, weights, g and s."""
    import torch
    import sb3_contrib.trpo.trpo as trpo_module
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    captured, batch = {}, {}
    solver = trpo_module.conjugate_gradient_solver

    def recording_solver(matvec, b, max_iter=10, residual_tol=1e-10):
        x = solver(matvec, b, max_iter=max_iter, residual_tol=residual_tol)
        captured.update(g=b.detach().numpy().copy(), s=x.detach().numpy().copy())
        return x

    trpo_module.conjugate_gradient_solver = recording_solver

    class LastBatch(BaseCallback):
        def _on_rollout_end(self):
            if self.model._n_updates == iterations - 1:
                buffer = self.model.rollout_buffer
                batch.update(observations=np.array(buffer.observations), actions=np.array(buffer.actions),
                             advantages=np.array(buffer.advantages), log_probs=np.array(buffer.log_probs))
                batch.update({"param/" + n: p.detach().numpy().copy() for n, p in self.model.policy.named_parameters()})

        def _on_step(self):
            return True

    _, model = make_rl_zoo3_trpo(ENV_ID, seed)
    model.learn(2 * SETTINGS["n_steps"] * iterations, callback=LastBatch())
    np.savez(out, **batch, **captured, kl=model.logger.name_to_value["train/kl_divergence_loss"])


def compare(dump: str) -> dict:
    """Runs in tftrpo's venv: the same g, solved with tftrpo's and with sb3's trust region."""
    import tensorflow as tf
    from tf_agents.agents.ppo import ppo_utils
    from tf_agents.specs import tensor_spec

    from tftrpo import natural_gradient as ng
    from tftrpo import networks

    data = np.load(dump)
    obs_dim, act_dim = data["observations"].shape[-1], data["actions"].shape[-1]
    observations = tf.constant(data["observations"].reshape(-1, obs_dim), tf.float32)
    actions = tf.constant(data["actions"].reshape(-1, act_dim), tf.float32)
    raw = data["advantages"].reshape(-1)
    advantages = tf.constant((raw - raw.mean()) / (raw.std(ddof=1) + 1e-8), tf.float32)  # as sb3 normalises
    weights = tf.ones([observations.shape[0]])

    net = networks.actor_network(tf.TensorSpec([obs_dim], tf.float32),
                                 tensor_spec.BoundedTensorSpec([act_dim], tf.float32, -1.0, 1.0))
    net.create_variables()
    variables = net.trainable_variables
    load_sb3_parameters(variables, lambda name: data["param/" + name], ACTOR_PARAMETERS)

    def distribution():
        return net(observations, step_type=None, network_state=(), training=True)[0]

    old = distribution()
    old_log_prob = old.log_prob(actions)
    with tf.GradientTape() as tape:
        surrogate = ng.surrogate_advantage(distribution().log_prob(actions), old_log_prob, advantages, weights)
    g = ng.flatten(tape.gradient(surrogate, variables))

    def mean_kl():
        return ng.mean_kl(ppo_utils.nested_kl_divergence(old, distribution(), outer_dims=[0]), weights)

    def g_dot_s(kl_scale, damping):
        s = ng.conjugate_gradient(lambda v: ng.fisher_vector_product(lambda: kl_scale * mean_kl(), variables, v, damping),
                                  g, SETTINGS["cg_max_steps"])
        return float(tf.tensordot(g, s, 1))

    return {
        "env": ENV_ID, "action_dims": int(act_dim), "samples": int(observations.shape[0]),
        "max_abs_log_prob_difference": float(np.abs(old_log_prob.numpy() - data["log_probs"].reshape(-1)).max()),
        "gradient_norm": {"tftrpo": float(tf.norm(g)), "sb3": float(np.linalg.norm(data["g"]))},
        "g_dot_s": {"sb3": float(data["g"] @ data["s"]),
                    "tftrpo, max_kl 0.01, damping 0.1 (its own trust region)": g_dot_s(1.0, SETTINGS["cg_damping"]),
                    "tftrpo, KL / d, damping 0.1 (sb3's)": g_dot_s(1.0 / act_dim, SETTINGS["cg_damping"])},
        "sb3_kl_of_accepted_step_per_dimension": float(data["kl"]),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--sb3-python", default=os.environ.get("TFTRPO_BENCH_SB3_PYTHON", "/tmp/tftrpo-bench-sb3/bin/python"))
    parser.add_argument("--dump-only", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump_only:
        dump_sb3(args.seed, args.iterations, args.dump_only)
        return 0
    sys.path.insert(0, REPO)
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "sb3.npz")
        subprocess.run([args.sb3_python, os.path.abspath(__file__), "--seed", str(args.seed), "--iterations",
                        str(args.iterations), "--dump-only", dump], check=True)
        result = compare(dump)
    result.update(seed=args.seed, iterations=args.iterations)
    print(json.dumps(result, indent=1))
    with open(os.path.join(REPO, "bench", "results", "sb3_trust_region.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
