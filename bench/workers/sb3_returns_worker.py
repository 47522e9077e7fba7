"""sb3-contrib TRPO with rl-zoo3's MuJoCo settings: train, then a 20-episode greedy evaluation.

Run with the sb3 venv's python (see bench/setup_sb3_env.sh):
    python bench/workers/sb3_returns_worker.py ENV SEED STEPS OUT.json
"""
import json
import sys
import time

import numpy as np
import torch
from sb3_contrib import TRPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

env_id, seed, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
SETTINGS = dict(n_steps=1024, batch_size=128, cg_max_steps=25, cg_damping=0.1, n_critic_updates=20,
                learning_rate=1e-3, target_kl={"HalfCheetah-v5": 0.04}.get(env_id, 0.01),
                gamma={"Swimmer-v5": 0.9999}.get(env_id, 0.99), gae_lambda=0.95)


class Curve(BaseCallback):
    """Mean return of the last 100 training episodes (sb3's `ep_info_buffer`, its default window) after each rollout."""

    def __init__(self):
        super().__init__()
        self.points = []
        self.mean_log_std = []  # [steps, mean over action dims of log σ] of the policy that collected

    def _on_rollout_end(self):
        self.mean_log_std.append([int(self.num_timesteps), float(self.model.policy.log_std.detach().mean())])
        buffer = self.model.ep_info_buffer
        if buffer:
            self.points.append([int(self.num_timesteps), float(np.mean([e["r"] for e in buffer]))])

    def _on_step(self):
        return True


# rl-zoo3 gives VecNormalize the algorithm's discount ("Use the same discount factor as for
# the algorithm"): it matters for Swimmer (γ 0.9999), as tftrpo's reward scaling uses γ too.
env = VecNormalize(make_vec_env(env_id, n_envs=2, seed=seed), norm_obs=True, norm_reward=True,
                   gamma=SETTINGS["gamma"])
model = TRPO("MlpPolicy", env, seed=seed, verbose=0,
             policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh), **SETTINGS)
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
               "curve": curve.points, "mean_log_std": curve.mean_log_std}, f, indent=1)
