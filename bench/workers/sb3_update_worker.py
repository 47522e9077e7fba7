"""sb3-contrib side of bench/update_speed.py (runs in the sb3 venv).

Setup ("setup" request): for each configuration one `sb3_contrib.TRPO` on
`make_vec_env('Hopper-v5', n_envs=2)` wrapped in `VecNormalize` (rl-zoo3's
`normalize: true`), n_steps=1024 per env, same seed; `learn(2048)` collects one
rollout of 2 × 1024 steps and runs `train()` once (warm-up), plus more warm-up
`train()` calls.

Timing ("time" request): `model.train()` `repeats` times on the same rollout
buffer. Before each call the policy's parameters and the Adam state are restored
from the snapshot taken after warm-up (outside the timed region), so all repeats
do identical work. The policy-only configuration is `n_critic_updates=0`, which
sb3-contrib accepts (its critic loop then runs zero times).

"diagnose" request: one `train()` with the Hessian-vector products and
`policy.get_distribution` calls counted by instance-level wrappers (this worker
only; the installed library is not modified), to report how many CG products and
line-search candidates the update ran.
"""
import copy
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _worker_io import serve  # noqa: E402

STATE = {}


def setup(req):
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(int(req.get("intra_threads", 1)))
    torch.set_num_interop_threads(int(req.get("inter_threads", 1)))
    import gymnasium
    import numpy as np
    import sb3_contrib
    import stable_baselines3
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    warnings.filterwarnings("ignore")
    s = req["settings"]
    seed = int(req.get("seed", 0))
    models, states, first_train = {}, {}, {}
    for name, over in req["configs"].items():
        kwargs = dict(
            learning_rate=s["value_lr"], n_steps=int(s["steps_per_env"]), batch_size=int(s["value_minibatch_size"]),
            gamma=s["gamma"], gae_lambda=s["gae_lambda"], cg_max_steps=int(s["cg_iters"]),
            cg_damping=s["cg_damping"], line_search_shrinking_factor=s["line_search_shrink"],
            line_search_max_iter=int(s["line_search_max_backtracks"]), n_critic_updates=int(s["value_epochs"]),
            target_kl=s["max_kl"], sub_sampling_factor=1, normalize_advantage=True,
            policy_kwargs=dict(net_arch=dict(pi=list(s["hidden"]), vf=list(s["hidden"])),
                               activation_fn=torch.nn.Tanh),
        )
        kwargs.update(over)
        env = make_vec_env(s["env_id"], n_envs=int(s["num_envs"]), seed=seed)
        if s.get("normalize_observations") or s.get("normalize_rewards"):
            env = VecNormalize(env, norm_obs=bool(s.get("normalize_observations")),
                               norm_reward=bool(s.get("normalize_rewards")), gamma=s["gamma"])
        model = TRPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
        t0 = time.perf_counter()
        model.learn(total_timesteps=int(s["num_envs"]) * int(s["steps_per_env"]))  # 1 rollout + 1 train
        first_train[name] = time.perf_counter() - t0
        for _ in range(int(req.get("warmup", 2))):
            model.train()
        states[name] = _snapshot(model)
        models[name] = model
    STATE.update(models=models, states=states, torch=torch)
    first = next(iter(models.values()))
    actor_params = sum(p.numel() for n, p in first.policy.named_parameters() if "value" not in n)
    return {
        "library": "sb3_contrib",
        "versions": {"sb3_contrib": sb3_contrib.__version__, "stable_baselines3": stable_baselines3.__version__,
                     "torch": torch.__version__, "numpy": np.__version__, "gymnasium": gymnasium.__version__,
                     "mujoco": __import__("mujoco").__version__, "python": sys.version.split()[0]},
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "rollout_buffer_size": int(first.rollout_buffer.buffer_size * first.rollout_buffer.n_envs),
        "policy_repr": repr(first.policy)[:2000],
        "num_actor_params": int(actor_params),
        "learn_one_iteration_seconds": first_train,
        "setup_seconds": time.perf_counter() - t_start,
    }


def _snapshot(model):
    return (copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict()))


def _restore(name):
    model = STATE["models"][name]
    params, opt = STATE["states"][name]
    model.policy.load_state_dict(params)
    model.policy.optimizer.load_state_dict(opt)


def time_cfg(req):
    name, repeats = req["config"], int(req["repeats"])
    model = STATE["models"][name]
    times = []
    for _ in range(repeats):
        _restore(name)
        t0 = time.perf_counter()
        model.train()
        times.append(time.perf_counter() - t0)
    logged = {k: float(v) for k, v in model.logger.name_to_value.items()
              if k.startswith("train/") and isinstance(v, (int, float))}
    return {"times": times, "diagnostics": logged}


def diagnose(req):
    name = req["config"]
    model = STATE["models"][name]
    _restore(name)
    counts = {"hessian_vector_products": 0, "get_distribution_calls": 0}
    hvp, get_dist = model.hessian_vector_product, model.policy.get_distribution

    def counted_hvp(*a, **k):
        counts["hessian_vector_products"] += 1
        return hvp(*a, **k)

    def counted_get_dist(*a, **k):
        counts["get_distribution_calls"] += 1
        return get_dist(*a, **k)

    import sb3_contrib.trpo.trpo as trpo_module

    original_cg = trpo_module.conjugate_gradient_solver

    def cg_with_residual(matvec, b, *args, **kwargs):
        x = original_cg(matvec, b, *args, **kwargs)
        r = b - matvec(x)  # one extra product, subtracted below
        counts["cg_final_residual_sq"] = float(r.dot(r))
        counts["cg_rhs_sq"] = float(b.dot(b))
        return x

    model.hessian_vector_product = counted_hvp
    model.policy.get_distribution = counted_get_dist
    trpo_module.conjugate_gradient_solver = cg_with_residual
    try:
        model.train()
    finally:
        del model.hessian_vector_product
        del model.policy.get_distribution
        trpo_module.conjugate_gradient_solver = original_cg
    counts["hessian_vector_products"] -= 1  # the residual check
    # get_distribution: old π, π at θ_old with grad, then one per line-search candidate.
    counts["line_search_candidates"] = counts["get_distribution_calls"] - 2
    # hessian_vector_products: one for the residual of the random x0, one per CG iteration,
    # one for the step size sᵀFs.
    counts["cg_iterations"] = counts["hessian_vector_products"] - 2
    return counts


if __name__ == "__main__":
    serve({"setup": setup, "time": time_cfg, "diagnose": diagnose})
