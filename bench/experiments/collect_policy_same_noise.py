#!/usr/bin/env python3
"""Experiment: with the same action noise, do the two collectors give the same training run?

`SinglePathCollector`'s two rollouts draw their Gaussian noise from different generators
(TF's stateful RNG in the compiled loop, `sampling_generator(seed)` in the NumPy loop), so
their learning curves can only be compared statistically. This experiment removes that
difference: the compiled TF loop acts with a TF policy that computes the collect policy's
Gaussian in the graph and takes its noise ε from the same NumPy generator the NumPy
policy uses (a ~ μ(s) + σ·ε, as both policies sample). Everything else is the real
path: the preset agent, `SinglePathCollector`, `agent.train`. Each variant runs in its own
process from the same seed, so the value regression's minibatch order (TF's RNG) is the
same too.

If the two rollouts compute the same thing, their first actions agree to float32 rounding
(~1e-7). What follows is the environment's: MuJoCo's contact dynamics amplify such
differences, so the trajectories part within tens of steps and the training runs after
them are independent samples; learning curves can only be compared statistically
(collect_policy_learning.py, variants np-jit, tf-jit and tfnp-jit).

  PYTHONPATH=. python bench/experiments/collect_policy_same_noise.py --env HalfCheetah-v5

Writes bench/results/collect_policy_same_noise.json: for the first batch, the largest
absolute difference of actions and observations at each of a set of time steps; per
iteration, the largest differences of the batches and each run's mean reward per step.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(os.path.dirname(HERE), "results", "collect_policy_same_noise.json")


def injected_noise_policy(policy, generator):
    """A TF policy: `policy`'s Gaussian mean and std from the graph, ε from `generator`."""
    import numpy as np
    import tensorflow as tf
    from tf_agents.policies import tf_policy
    from tf_agents.trajectories import policy_step

    class InjectedNoisePolicy(tf_policy.TFPolicy):
        def __init__(self):
            super().__init__(policy.time_step_spec, policy.action_spec, clip=False, name="injected_noise")

        def _variables(self):
            return policy.variables()

        def _distribution(self, time_step, policy_state):
            raise NotImplementedError("acts only")

        def _action(self, time_step, policy_state, seed):
            dist = policy.distribution(time_step, policy_state).action
            mean = dist.mean()
            shape = tuple(mean.shape)  # [B, d], static in the collector's loop
            noise = tf.numpy_function(lambda: generator.standard_normal(shape, np.float32), [], tf.float32)
            noise.set_shape(shape)
            return policy_step.PolicyStep(mean + dist.stddev() * noise, policy_state, ())

    return InjectedNoisePolicy()


def run_variant(variant, env_id, iterations, seed, sampling_seed, out):
    """One training run; saves each iteration's batch to `out` (npz)."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tf_agents.environments import tf_py_environment

    from tftrpo import presets
    from tftrpo.envs import load_batched
    from tftrpo.sampling.numpy_policy import sampling_generator
    from tftrpo.sampling.single_path import SinglePathCollector
    from tftrpo.train import make_agent

    tf.keras.utils.set_random_seed(seed)
    config = presets.preset(env_id)
    env = tf_py_environment.TFPyEnvironment(load_batched(env_id, num_envs=config.num_envs, seed=seed))
    agent = make_agent(config, env, tf.Variable(0, dtype=tf.int64))
    if variant == "numpy":
        collector = SinglePathCollector(env, agent.collect_policy, config.steps_per_env, seed=sampling_seed,
                                        numpy_policy=True)
    else:
        policy = injected_noise_policy(agent.collect_policy, sampling_generator(sampling_seed))
        collector = SinglePathCollector(env, policy, config.steps_per_env, numpy_policy=False)
    saved = {}
    for i in range(iterations):
        batch = collector.collect()
        for name in ("observation", "action", "reward", "step_type"):
            saved[f"{name}_{i}"] = getattr(batch, name).numpy()
        agent.train(batch)
    np.savez(out, **saved)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampling-seed", type=int, default=1)
    parser.add_argument("--variant", choices=["numpy", "tf-injected"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args.variant, args.env, args.iterations, args.seed, args.sampling_seed, args.out)
        return

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for variant in ("numpy", "tf-injected"):
            files[variant] = os.path.join(tmp, variant + ".npz")
            subprocess.run([sys.executable, __file__, "--variant", variant, "--out", files[variant],
                            "--env", args.env, "--iterations", str(args.iterations), "--seed", str(args.seed),
                            "--sampling-seed", str(args.sampling_seed)],
                           check=True, env={**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"})
        a, b = (np.load(files[v]) for v in ("numpy", "tf-injected"))
        first = {}
        for name in ("action", "observation"):
            diff = np.abs(a[f"{name}_0"] - b[f"{name}_0"])  # [B, T, ...]
            per_step = diff.reshape(diff.shape[0], diff.shape[1], -1).max(axis=(0, 2))
            first[f"max_abs_diff_{name}_at_step"] = {
                int(t): float(per_step[t]) for t in (0, 1, 2, 5, 10, 20, 30, 50, 100, 200, 500) if t < len(per_step)}
            first[f"first_step_{name}_diff_over_1e-3"] = int(np.argmax(per_step > 1e-3)) if np.any(per_step > 1e-3) else None
        print(json.dumps(first), flush=True)
        rows = []
        for i in range(args.iterations):
            row = {"iteration": i}
            for name in ("observation", "action", "reward"):
                row[f"max_abs_diff_{name}"] = float(np.max(np.abs(a[f"{name}_{i}"] - b[f"{name}_{i}"])))
            row["step_types_equal"] = bool(np.array_equal(a[f"step_type_{i}"], b[f"step_type_{i}"]))
            row["mean_reward_numpy"] = float(a[f"reward_{i}"].mean())
            row["mean_reward_tf_injected"] = float(b[f"reward_{i}"].mean())
            rows.append(row)
            print(json.dumps({k: (round(v, 8) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    with open(RESULTS, "w") as f:
        json.dump({"env": args.env, "seed": args.seed, "sampling_seed": args.sampling_seed,
                   "command": " ".join(["python"] + sys.argv), "first_batch": first, "iterations": rows}, f, indent=1)
    print("wrote", RESULTS)


if __name__ == "__main__":
    main()
