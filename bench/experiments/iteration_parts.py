#!/usr/bin/env python3
"""Experiment: one tftrpo-train iteration on Hopper-v5, before and after this release's speed-ups.

Two compositions of the same agent and collector, built side by side in one process and run
on alternating iterations (so both see the same machine load):

  before  TF-Agents' `BatchedPyEnvironment` of `GymnasiumEnvironment`s, the value regression
          as a plain graph (`jit_compile=False`), a checkpoint after every iteration
  after   `load_batched` (`BatchedGymnasiumEnvironment`), the XLA value regression (the
          default), a checkpoint every 10 iterations (`tftrpo-train`'s default)

Both collect with the TF policy in the compiled loop (`numpy_policy=False`), as that release
did; `collect_policy.py` compares the NumPy policy that came after. Each iteration times `collector.collect()`, `agent.train()` and the checkpoint save, with the
Hopper preset, 1 TF thread, and optionally a TensorBoard writer as the CLI has.

  python bench/experiments/iteration_parts.py [--iterations 12] [--writer]

Writes bench/results/iteration_parts.json (medians and every timing, milliseconds).
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=12, help="timed iterations of each (after 3 warm-up)")
    parser.add_argument("--writer", action="store_true", help="run under a TensorBoard summary writer")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tf_agents.environments import batched_py_environment, tf_py_environment
    from tf_agents.utils import common

    from tftrpo import presets
    from tftrpo.envs import load, load_batched
    from tftrpo.sampling.single_path import SinglePathCollector
    from tftrpo.train import make_agent

    config = presets.preset("Hopper-v5")

    def composition(after: bool):
        py_env = (load_batched("Hopper-v5", num_envs=2, seed=0) if after else
                  batched_py_environment.BatchedPyEnvironment([load("Hopper-v5", seed=i) for i in range(2)],
                                                              multithreading=False))
        env = tf_py_environment.TFPyEnvironment(py_env)
        step = tf.Variable(0, dtype=tf.int64)
        agent = make_agent(config, env, step, jit_compile=after)  # the CLI's agent
        # Both with the TF policy in the compiled loop, as in that release (the NumPy policy
        # that came after has its own comparison: collect_policy.py).
        collector = SinglePathCollector(env, agent.collect_policy, config.steps_per_env, numpy_policy=False)
        checkpointer = common.Checkpointer(ckpt_dir=tempfile.mkdtemp(), max_to_keep=3, agent=agent, train_step=step)
        interval = config.checkpoint_interval if after else 1

        def iteration():
            t0 = time.perf_counter()
            experience = collector.collect()
            t1 = time.perf_counter()
            float(agent.train(experience).loss)
            t2 = time.perf_counter()
            if int(step.numpy()) % interval == 0:
                checkpointer.save(step)
            t3 = time.perf_counter()
            return [1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2), 1e3 * (t3 - t0)]

        return iteration

    if args.writer:
        tf.summary.create_file_writer(tempfile.mkdtemp()).set_as_default()
    runs = {"before": composition(False), "after": composition(True)}
    for run in runs.values():
        for _ in range(3):
            run()
    times = {name: [] for name in runs}
    for _ in range(args.iterations):
        for name, run in runs.items():
            times[name].append(run())
    parts = ("collect", "train", "checkpoint", "iteration")
    summary = {}
    for name, rows in times.items():
        rows = np.array(rows)
        summary[name] = {f"{p}_median_ms": float(np.median(rows[:, i])) for i, p in enumerate(parts)}
        summary[name]["checkpoint_mean_ms"] = float(np.mean(rows[:, 2]))
        print(f"{name:7s} " + "  ".join(f"{p} {np.median(rows[:, i]):6.0f}" for i, p in enumerate(parts))
              + f"  (checkpoint mean {np.mean(rows[:, 2]):.1f}) ms")
    ratio = summary["after"]["iteration_median_ms"] / summary["before"]["iteration_median_ms"]
    print(f"after / before, iteration medians: {ratio:.2f}")
    out = os.path.join(os.path.dirname(HERE), "results", "iteration_parts.json")
    with open(out, "w") as f:
        json.dump({"experiment": "iteration_parts", "writer": args.writer, "iterations": args.iterations,
                   "summary": summary, "after_over_before": ratio,
                   "timings_ms": {k: v for k, v in times.items()}, "columns": parts}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
