#!/usr/bin/env python3
"""Experiment: what the policy costs in `SinglePathCollector`, TF graph vs NumPy mirror.

One Hopper-preset agent (trained for a few iterations, so the normaliser and weights are
not at their initial values) and, in one process on alternating rounds:

  tf-loop       `SinglePathCollector(..., numpy_policy=False)`: the compiled `tf.while_loop`,
                the TF policy in the graph, one `tf.numpy_function` env step per time step
  numpy-policy  `SinglePathCollector(..., numpy_policy=True)` (`tftrpo-train --numpy-policy`): the policy mirrored by
                `NumpyActorPolicy`, stepped in a Python loop
  env-only      the same 2 × 1024 steps of `load_batched` with no policy: actions drawn from
                N(0, 1), the initial policy's distribution (MuJoCo's cost depends on the
                actions: uniform ones end Hopper's episodes sooner)

each on its own pair of Hopper-v5 envs, 1 TF thread. The cost of a collector beyond the
environments is its time minus env-only's in the same round.

  python bench/experiments/collect_policy.py [--rounds 10]

Writes bench/results/collect_policy.json (every timing, ms) and collect_policy.png.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (after 2 warm-up)")
    args = parser.parse_args()

    import numpy as np

    tf = common.tensorflow_one_thread()
    from tf_agents.environments import tf_py_environment

    from tftrpo import presets
    from tftrpo.envs import load_batched
    from tftrpo.sampling.single_path import SinglePathCollector
    from tftrpo.train import make_agent

    config = presets.preset("Hopper-v5")
    tf.keras.utils.set_random_seed(0)
    env = tf_py_environment.TFPyEnvironment(load_batched("Hopper-v5", num_envs=2, seed=0))
    agent = make_agent(config, env, tf.Variable(0, dtype=tf.int64))
    collectors = {
        "tf-loop": SinglePathCollector(load_batched("Hopper-v5", 2, seed=1), agent.collect_policy,
                                       config.steps_per_env, numpy_policy=False),
        "numpy-policy": SinglePathCollector(load_batched("Hopper-v5", 2, seed=2), agent.collect_policy,
                                            config.steps_per_env, numpy_policy=True),
    }
    assert collectors["numpy-policy"].uses_numpy_policy and not collectors["tf-loop"].uses_numpy_policy
    raw_env = load_batched("Hopper-v5", 2, seed=3)
    spec = raw_env.action_spec()
    rng = np.random.default_rng(0)
    raw_env.reset()

    def env_only():
        for action in rng.standard_normal((config.steps_per_env, 2) + spec.shape, np.float32):
            raw_env.step(action)

    runs = {name: c.collect for name, c in collectors.items()}
    runs["env-only"] = env_only
    for _ in range(2):  # warm-up: traces, and an agent that has moved from its initial weights
        agent.train(collectors["tf-loop"].collect())
        agent.train(collectors["numpy-policy"].collect())
        env_only()
    times = {name: [] for name in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(1e3 * (time.perf_counter() - t0))
    beyond = {name: [t - e for t, e in zip(times[name], times["env-only"])] for name in collectors}
    steps = 2 * config.steps_per_env
    summary = {name: common.summary(v) for name, v in times.items()}
    per_step_us = {name: 1e3 * float(np.median(v)) / config.steps_per_env for name, v in beyond.items()}
    ratio = [n / t for n, t in zip(times["numpy-policy"], times["tf-loop"])]
    for name, s in summary.items():
        print(f"{name:13s} median {s['median']:6.0f} ms (min {s['min']:.0f}, max {s['max']:.0f})"
              + (f", beyond the envs {np.median(beyond[name]):5.0f} ms = {per_step_us[name]:.0f} µs per "
                 f"batched step" if name in beyond else ""))
    print(f"numpy-policy / tf-loop, per round: median {np.median(ratio):.2f} (min {min(ratio):.2f}, "
          f"max {max(ratio):.2f})")
    out = os.path.join(common.RESULTS_DIR, "collect_policy")
    common.write_json(out + ".json", {
        "experiment": "collect_policy", "env": "Hopper-v5", "num_envs": 2, "steps_per_env": config.steps_per_env,
        "env_steps_per_collect": steps, "rounds": args.rounds, "machine": common.machine_info(),
        "git": common.git_info(), "summary_ms": summary,
        "beyond_env_only_ms": {k: common.summary(v) for k, v in beyond.items()},
        "beyond_env_only_us_per_batched_step_of_medians": per_step_us,
        "numpy_policy_over_tf_loop_per_round": common.summary(ratio), "timings_ms": times})
    common.box_strip_plot(out + ".png", [
        ("collect() of 2×1024 Hopper-v5 steps", [(k, v) for k, v in times.items()]),
        ("beyond env-only, same round", [(k, v) for k, v in beyond.items()])],
        f"SinglePathCollector: TF policy in a compiled loop vs NumPy mirror ({args.rounds} rounds, "
        f"numpy/tf median {np.median(ratio):.2f})", "ms")
    print(f"wrote {out}.json, .png")


if __name__ == "__main__":
    main()
