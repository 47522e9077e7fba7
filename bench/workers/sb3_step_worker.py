"""sb3 side of bench/raw_stepping.py (runs in the sb3 venv).

Measurements (env steps per second, random actions):
  gym_single         one raw `gymnasium.make` env (this venv's gymnasium), pre-drawn uniform actions
  sb3_dummy_vec_env  `make_vec_env(env_id, n_envs=2)` (DummyVecEnv, what sb3-contrib's TRPO
                     collects with), stepped with numpy uniform actions
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _gym_loops import gym_single  # noqa: E402
from _worker_io import serve  # noqa: E402

STATE = {}


def setup(req):
    import torch

    torch.set_num_threads(int(req.get("intra_threads", 1)))
    import gymnasium
    import mujoco
    import numpy as np
    import stable_baselines3
    from stable_baselines3.common.env_util import make_vec_env

    env_id, num_envs, seed = req["env_id"], int(req["num_envs"]), int(req.get("seed", 0))
    vec = make_vec_env(env_id, n_envs=num_envs, seed=seed)
    vec.reset()
    STATE.update(vec=vec, rng=np.random.default_rng(seed), np=np, env_id=env_id, num_envs=num_envs, seed=seed)
    return {"library": "sb3",
            "versions": {"stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__,
                         "gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0]}}


def measure(req):
    what, steps = req["what"], int(req["steps"])
    if what == "gym_single":
        seconds, episodes = gym_single(STATE["env_id"], steps, STATE["seed"])
        return {"steps": steps, "seconds": seconds, "steps_per_second": steps / seconds, "episodes": episodes}
    if what == "sb3_dummy_vec_env":
        vec, rng, n = STATE["vec"], STATE["rng"], STATE["num_envs"]
        space = vec.action_space
        calls = steps // n
        actions = rng.uniform(space.low, space.high, size=(calls, n) + space.shape).astype(space.dtype)
        t0 = time.perf_counter()
        for i in range(calls):
            vec.step(actions[i])
        seconds = time.perf_counter() - t0
        return {"steps": calls * n, "seconds": seconds, "steps_per_second": calls * n / seconds}
    raise KeyError(what)


if __name__ == "__main__":
    serve({"setup": setup, "measure": measure})
