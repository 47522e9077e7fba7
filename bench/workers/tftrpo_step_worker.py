"""tftrpo/TF-Agents side of bench/raw_stepping.py (runs in tftrpo's venv).

Measurements (env steps per second, random actions, Hopper-v5 by default):
  gym_single         one raw `gymnasium.make` env, uniform random actions drawn beforehand
  tftrpo_py_batched  `tftrpo.envs.load_batched(env_id, 2)` as a PyEnvironment, stepped from
                     Python with numpy uniform actions (the Python env layer of the stack)
  tfagents_driver    the same inside `TFPyEnvironment`, driven by `DynamicStepDriver` with a
                     `RandomTFPolicy` in `common.function`: the collection ceiling of the
                     TF-Agents stack (no network, no replay buffer)
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _gym_loops import gym_single  # noqa: E402
from _worker_io import serve  # noqa: E402

STATE = {}


def setup(req):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(req.get("intra_threads", 1)))
    tf.config.threading.set_inter_op_parallelism_threads(int(req.get("inter_threads", 1)))
    import gymnasium
    import mujoco
    import numpy as np
    import tf_agents
    from tf_agents.drivers import dynamic_step_driver
    from tf_agents.environments import tf_py_environment
    from tf_agents.policies import random_tf_policy
    from tf_agents.utils import common

    import tftrpo
    from tftrpo.envs import load_batched

    env_id, num_envs, seed = req["env_id"], int(req["num_envs"]), int(req.get("seed", 0))
    tf.random.set_seed(seed)
    py_env = load_batched(env_id, num_envs=num_envs, seed=seed)
    spec = py_env.action_spec()
    rng = np.random.default_rng(seed)

    tf_env = tf_py_environment.TFPyEnvironment(load_batched(env_id, num_envs=num_envs, seed=seed + 100))
    policy = random_tf_policy.RandomTFPolicy(tf_env.time_step_spec(), tf_env.action_spec())
    driver_steps = int(req["driver_steps"])
    driver = dynamic_step_driver.DynamicStepDriver(tf_env, policy, observers=[], num_steps=driver_steps)
    run = common.function(driver.run)
    t0 = time.perf_counter()
    time_step, _ = run()  # trace + warm-up
    trace_s = time.perf_counter() - t0
    STATE.update(py_env=py_env, spec=spec, rng=rng, np=np, run=run, time_step=time_step, env_id=env_id,
                 num_envs=num_envs, driver_steps=driver_steps, seed=seed)
    py_env.reset()
    return {"library": "tftrpo/tf_agents",
            "versions": {"tftrpo": getattr(tftrpo, "__version__", "?"), "tensorflow": tf.__version__,
                         "tf_agents": tf_agents.__version__, "gymnasium": gymnasium.__version__,
                         "mujoco": mujoco.__version__, "numpy": np.__version__, "python": sys.version.split()[0]},
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
            "driver_trace_plus_first_run_seconds": trace_s}


def measure(req):
    what, steps = req["what"], int(req["steps"])
    if what == "gym_single":
        seconds, episodes = gym_single(STATE["env_id"], steps, STATE["seed"])
        return {"steps": steps, "seconds": seconds, "steps_per_second": steps / seconds, "episodes": episodes}
    if what == "tftrpo_py_batched":
        env, spec, rng, np = STATE["py_env"], STATE["spec"], STATE["rng"], STATE["np"]
        n = STATE["num_envs"]
        calls = steps // n
        actions = rng.uniform(spec.minimum, spec.maximum, size=(calls, n) + spec.shape).astype(spec.dtype)
        from tf_agents.trajectories import time_step as ts

        first = int(ts.StepType.FIRST)
        resets = 0
        t0 = time.perf_counter()
        for i in range(calls):
            resets += int((env.step(actions[i]).step_type == first).sum())
        seconds = time.perf_counter() - t0
        # The slot after a LAST resets the env (its FIRST time step): no simulator step, as in
        # the collector's count; gym_single and sb3's DummyVecEnv reset inside a real step.
        real = calls * n - resets
        return {"steps": real, "slots": calls * n, "seconds": seconds, "steps_per_second": real / seconds}
    if what == "tfagents_driver":
        t0 = time.perf_counter()
        time_step, _ = STATE["run"](time_step=STATE["time_step"])
        _ = time_step.reward.numpy()
        seconds = time.perf_counter() - t0
        STATE["time_step"] = time_step
        n = STATE["driver_steps"]
        return {"steps": n, "seconds": seconds, "steps_per_second": n / seconds}
    raise KeyError(what)


def micro(req):
    """Per-call cost (µs) of building a TimeStep the way GymnasiumEnvironment does
    (`ts.transition`, which calls `tf.is_tensor` on numpy inputs) vs a direct
    `ts.TimeStep(...)` of numpy arrays, and of `tf.is_tensor` on a numpy array."""
    import timeit

    import numpy as np
    from tf_agents.trajectories import time_step as ts
    import tensorflow as tf

    obs = np.zeros(STATE["py_env"].observation_spec().shape, np.float32)
    r, d = np.float32(1.0), np.float32(0.99)
    mid = np.asarray(ts.StepType.MID, np.int32)
    n = int(req.get("number", 20000))
    out = {}
    for label, fn in (("ts_transition_us", lambda: ts.transition(obs, r, d)),
                      ("direct_TimeStep_us", lambda: ts.TimeStep(mid, np.asarray(r), np.asarray(d), obs)),
                      ("tf_is_tensor_numpy_us", lambda: tf.is_tensor(obs))):
        out[label] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
    return out


if __name__ == "__main__":
    serve({"setup": setup, "measure": measure, "micro": micro})
