#!/usr/bin/env python3
"""Experiment: what `tf.is_tensor` on numpy inputs costs the Python env layer.

`tftrpo.envs.GymnasiumEnvironment._step` builds its TimeSteps with
`ts.transition` / `ts.termination` / `ts.truncation`, which call `tf.is_tensor`
on numpy arrays; in TF 2.15 on Python 3.11 that is an `isinstance` check against
a runtime-checkable Protocol (typing's slow path, ~10-15 µs). PyEnvironment's
auto-reset check (`TimeStep.is_last`) calls it again on every step.

This compares, interleaved, `load_batched('Hopper-v5', 2)` as shipped with the
same batched env whose GymnasiumEnvironments build TimeSteps directly from numpy
arrays (a subclass defined here; tftrpo is not modified), and the raw Gymnasium
loop, in env steps per second. Run with tftrpo's venv:

  PYTHONPATH=. /work/venv/bin/python bench/experiments/timestep_overhead.py [--rounds 8]

Writes bench/results/timestep_overhead.json.
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
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8192)
    args = parser.parse_args(argv)

    import numpy as np
    from tf_agents.environments import batched_py_environment
    from tf_agents.trajectories import time_step as ts

    import common
    from _gym_loops import gym_single
    from tftrpo.envs import load_batched
    from tftrpo.envs.gymnasium_env import GymnasiumEnvironment

    first, mid, last = (np.asarray(t, np.int32) for t in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))

    class DirectTimeStepEnv(GymnasiumEnvironment):
        """Same semantics; TimeSteps built from numpy arrays without tf.is_tensor."""

        def _step(self, action):
            obs, reward, terminated, truncated, self._info = self._env.step(self._gym_action(action))
            obs = self._observation(obs)
            reward = np.asarray(reward, dtype=np.float32)
            if terminated:
                return ts.TimeStep(last, reward, np.asarray(0.0, np.float32), obs)
            if truncated:
                return ts.TimeStep(last, reward, np.asarray(self._discount, np.float32), obs)
            return ts.TimeStep(mid, reward, np.asarray(self._discount, np.float32), obs)

    shipped = load_batched("Hopper-v5", num_envs=2, seed=0)
    direct = batched_py_environment.BatchedPyEnvironment(
        [DirectTimeStepEnv(e.gym_env, seed=i) for i, e in enumerate(load_batched("Hopper-v5", 2, seed=0).envs)],
        multithreading=False)  # as load_batched(parallel="serial")
    spec = shipped.action_spec()
    rng = np.random.default_rng(0)

    def run(env):
        env.reset()
        calls = args.steps // 2
        actions = rng.uniform(spec.minimum, spec.maximum, size=(calls, 2) + spec.shape).astype(np.float32)
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        return calls * 2 / (time.perf_counter() - t0)

    results = {"gym_single": [], "shipped_batched": [], "direct_timestep_batched": []}
    for r in range(args.rounds):
        order = list(results) if r % 2 == 0 else list(results)[::-1]
        for name in order:
            if name == "gym_single":
                seconds, _ = gym_single("Hopper-v5", args.steps, 0)
                results[name].append(args.steps / seconds)
            else:
                results[name].append(run(shipped if name == "shipped_batched" else direct))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    ratios = {"direct / shipped": med["direct_timestep_batched"] / med["shipped_batched"],
              "shipped / gym_single": med["shipped_batched"] / med["gym_single"],
              "direct / gym_single": med["direct_timestep_batched"] / med["gym_single"],
              "direct / shipped, median of per-round ratios": statistics.median(
                  d / s for d, s in zip(results["direct_timestep_batched"], results["shipped_batched"]))}
    out = os.path.join(common.RESULTS_DIR, "timestep_overhead.json")
    common.write_json(out, {"benchmark": "timestep_overhead", "machine": common.machine_info(),
                            "settings": vars(args), "steps_per_second": results,
                            "summary": {k: common.summary(v) for k, v in results.items()},
                            "ratios_of_medians": ratios})
    for k, v in ratios.items():
        print(f"{k:24s} {v:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
