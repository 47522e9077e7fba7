"""sb3-contrib's TRPO as rl-zoo3 sets it up for MuJoCo, for the scripts that run it.

Imported with the sb3 venv's python (bench/setup_sb3_env.sh) by workers/sb3_returns_worker.py,
experiments/sb3_trust_region.py and experiments/sb3_same_batch.py; the parameter-name lists
are also read on the tftrpo side, to load sb3-contrib's weights into tftrpo's networks.
"""

# sb3-contrib's ActorCriticPolicy parameters in the order of the matching TF-Agents
# networks' `trainable_variables` (hidden layers, then the head; torch weights are [out, in]).
ACTOR_PARAMETERS = ("mlp_extractor.policy_net.0.weight", "mlp_extractor.policy_net.0.bias",
                    "mlp_extractor.policy_net.2.weight", "mlp_extractor.policy_net.2.bias",
                    "action_net.weight", "action_net.bias", "log_std")
VALUE_PARAMETERS = ("mlp_extractor.value_net.0.weight", "mlp_extractor.value_net.0.bias",
                    "mlp_extractor.value_net.2.weight", "mlp_extractor.value_net.2.bias",
                    "value_net.weight", "value_net.bias")


def rl_zoo3_settings(env_id: str) -> dict:
    """rl-zoo3's TRPO hyperparameters for a MuJoCo task (HalfCheetah δ 0.04, Swimmer γ 0.9999)."""
    return dict(n_steps=1024, batch_size=128, cg_max_steps=25, cg_damping=0.1, n_critic_updates=20,
                learning_rate=1e-3, target_kl={"HalfCheetah-v5": 0.04}.get(env_id, 0.01),
                gamma={"Swimmer-v5": 0.9999}.get(env_id, 0.99), gae_lambda=0.95)


def make_rl_zoo3_trpo(env_id: str, seed: int):
    """(VecNormalize env of 2 copies, TRPO model) with rl-zoo3's settings and 64x64 tanh nets."""
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    settings = rl_zoo3_settings(env_id)
    # rl-zoo3 gives VecNormalize the algorithm's discount ("Use the same discount factor as for
    # the algorithm"): it matters for Swimmer (γ 0.9999), as tftrpo's reward scaling uses γ too.
    env = VecNormalize(make_vec_env(env_id, n_envs=2, seed=seed), norm_obs=True, norm_reward=True,
                       gamma=settings["gamma"])
    model = TRPO("MlpPolicy", env, seed=seed, verbose=0, **settings,
                 policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh))
    return env, model


def load_sb3_parameters(variables, parameter, names) -> None:
    """Assigns sb3-contrib's parameters `parameter(name)` (numpy) to a TF-Agents network's
    `variables`, in the order of `names` (ACTOR_PARAMETERS or VALUE_PARAMETERS)."""
    for variable, name in zip(variables, names, strict=True):
        value = parameter(name)
        variable.assign(value.T if value.ndim == 2 else value)
