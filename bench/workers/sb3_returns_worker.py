"""sb3-contrib TRPO with rl-zoo3's MuJoCo settings: train, then a 20-episode greedy evaluation.

Run with the sb3 venv's python (see bench/setup_sb3_env.sh):
    python bench/workers/sb3_returns_worker.py ENV SEED STEPS OUT.json
"""
import json
import sys
import time

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_zoo import make_rl_zoo3_trpo, rl_zoo3_settings

env_id, seed, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
SETTINGS = rl_zoo3_settings(env_id)


class Curve(BaseCallback):
    """Mean return of the last 100 training episodes (sb3's `ep_info_buffer`, its default window) after
    each rollout, and of the last 20 (`points_last20`: tftrpo's progress window, for matched curves)."""

    def __init__(self):
        super().__init__()
        self.points = []
        self.points_last20 = []
        self.mean_log_std = []  # [steps, mean over action dims of log σ] of the policy that collected

    def _on_rollout_end(self):
        self.mean_log_std.append([int(self.num_timesteps), float(self.model.policy.log_std.detach().mean())])
        buffer = self.model.ep_info_buffer
        if buffer:
            self.points.append([int(self.num_timesteps), float(np.mean([e["r"] for e in buffer]))])
            self.points_last20.append([int(self.num_timesteps), float(np.mean([e["r"] for e in list(buffer)[-20:]]))])

    def _on_step(self):
        return True


env, model = make_rl_zoo3_trpo(env_id, seed)
curve = Curve()
start = time.time()
model.learn(steps, callback=curve)
train_time = time.time() - start

eval_env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed + 10_000), training=False, norm_reward=False)
eval_env.obs_rms = env.obs_rms
returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True)
with open(out, "w") as f:
    json.dump({"library": "sb3-contrib", "env": env_id, "seed": seed, "steps": steps, "settings": SETTINGS,
               "train_time_s": round(train_time, 1), "eval_returns": [float(r) for r in returns],
               "final_eval_mean": float(np.mean(returns)), "final_eval_std": float(np.std(returns)),
               "curve": curve.points, "curve_last20": curve.points_last20, "mean_log_std": curve.mean_log_std}, f, indent=1)
