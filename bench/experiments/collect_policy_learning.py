#!/usr/bin/env python3
"""Experiment: does the collection policy's implementation change what the agent learns?

Short training runs of the preset (the CLI's agent and `SinglePathCollector`, 1 TF thread)
with the env seed fixed and the collector varied; each variant is a comma-separated name:

  np-jit        the NumPy policy (`numpy_policy=True`) and the XLA update
  tf-jit        the TF policy in the compiled loop (`numpy_policy=False`, the default)
  tfnp-jit      the compiled loop with the policy's Gaussian computed in the graph and
                its noise taken from the NumPy policy's generator (collect_policy_same_noise.py)
  np-nojit, tf-nojit   the same with the value regression and CG solve as plain graphs
  np-jit:S      the NumPy policy with sampling seed S (default: the run's seed)

  PYTHONPATH=. /work/venv/bin/python bench/experiments/collect_policy_learning.py \\
      --env Swimmer-v5 --steps 150000 --seed 0 --variants np-jit,tf-jit

Prints, and appends to bench/results/collect_policy_learning.json, the mean training return
(stochastic policy, episodes finished) in each quarter of the run.
"""
import argparse
import fcntl
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)
RESULTS = os.path.join(os.path.dirname(HERE), "results", "collect_policy_learning.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Swimmer-v5")
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="np-jit,tf-jit")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tf_agents.environments import tf_py_environment

    from tftrpo import presets
    from tftrpo.envs import load_batched
    from tftrpo.sampling.single_path import SinglePathCollector
    from tftrpo.train import make_agent

    rows = []
    for variant in args.variants.split(","):
        name, _, sampling_seed = variant.partition(":")
        tf.keras.utils.set_random_seed(args.seed)
        config = presets.preset(args.env)
        env = tf_py_environment.TFPyEnvironment(load_batched(args.env, num_envs=config.num_envs, seed=args.seed))
        agent = make_agent(config, env, tf.Variable(0, dtype=tf.int64), jit_compile="nojit" not in name)
        seed = int(sampling_seed) if sampling_seed else args.seed
        if name.startswith("tfnp"):
            from collect_policy_same_noise import injected_noise_policy
            from tftrpo.sampling.numpy_policy import sampling_generator
            policy = injected_noise_policy(agent.collect_policy, sampling_generator(seed))
            collector = SinglePathCollector(env, policy, config.steps_per_env)
        else:
            collector = SinglePathCollector(env, agent.collect_policy, config.steps_per_env, seed=seed,
                                            numpy_policy=name.startswith("np"))
        steps, curve, start = 0, [], time.time()
        while steps < args.steps:
            agent.train(collector.collect())
            steps += collector.last_env_steps
            curve.append((steps, collector.recent_episodes()[0]))
        c = np.array(curve)
        quarters = [float(c[(c[:, 0] > a * args.steps) & (c[:, 0] <= (a + 0.25) * args.steps), 1].mean())
                    for a in (0.0, 0.25, 0.5, 0.75)]
        row = {"variant": variant, "env": args.env, "seed": args.seed, "steps": args.steps,
               "train_return_by_quarter": quarters, "seconds": time.time() - start}
        print(json.dumps(row), flush=True)
        rows.append(row)
    append_rows(RESULTS, rows)


def append_rows(path, rows):
    """Appends to the JSON list at `path` under an exclusive lock (two lanes share the file)."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.load(open(path)) if os.path.exists(path) else []
        with open(path + ".tmp", "w") as f:
            json.dump(old + rows, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
