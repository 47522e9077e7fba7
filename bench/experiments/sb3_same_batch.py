#!/usr/bin/env python3
"""Experiment: one whole TRPO iteration of both libraries on the same batch and weights.

sb3-contrib (its own venv) trains Hopper-v5 once with rl-zoo3's settings, up to the last
requested iteration, and dumps each requested iteration: its rollout buffer (normalised
observations, actions, the normalised rewards it stores with the truncation bootstrap γ·V(s_T)
added, episode starts, values, advantages and returns), the bootstrap values of the states
after the rollout, and its weights before and after that iteration's update. For each, tftrpo loads the same weights into the preset's
networks and runs `TRPOAgent.train` (the compiled iteration a real run uses: value
predictions, GAE, advantage standardisation, CG, step size, line search, value regression)
on the same batch, laid out as a TF-Agents trajectory, and this script compares:

- V(s) and the bootstrap values (the weights loaded right);
- the GAE advantages and returns (Schulman et al. 2016, Eq. 16) from the same rewards;
- the policy step Δθ (max_kl = d·δ, cg_damping = d·λ: the preset's trust region);
- the value regression's loss after 20 epochs. Its minibatch order is random in both,
  so tftrpo's is given over several orders, as the spread to read sb3-contrib's against
  (the comparison is exact only for iteration 1, where both Adams start fresh).

  python bench/experiments/sb3_same_batch.py [--seed 0] [--iterations 1 10 50] [--orders 5]
  python bench/experiments/sb3_same_batch.py --iterations $(seq 1 10 481) 489 --orders 1 \
      --out bench/results/sb3_same_batch_whole_run.json       # across a whole 1M-step run

Uses /tmp/tftrpo-bench-sb3/bin/python for sb3 (bench/setup_sb3_env.sh) and the current
python for tftrpo. Writes bench/results/sb3_same_batch.json (or --out), with a summary of
the largest differences over the compared iterations.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "bench", "workers"))
from sb3_zoo import ACTOR_PARAMETERS, VALUE_PARAMETERS, load_sb3_parameters, make_rl_zoo3_trpo  # noqa: E402

ENV_ID = "Hopper-v5"


def dump_sb3(seed: int, iterations, out_dir: str) -> None:
    """Runs in sb3's venv: one training run up to max(`iterations`) updates; for each of those
    iterations, saves its batch and the weights around its update to `out_dir`/<iteration>.npz."""
    import torch
    import torch.nn.functional as F
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    bootstrap = {}
    compute = RolloutBuffer.compute_returns_and_advantage

    def recording_compute(buffer, last_values, dones):
        bootstrap.update(last_values=last_values.detach().numpy().reshape(-1).copy(), last_dones=np.array(dones))
        return compute(buffer, last_values, dones)

    RolloutBuffer.compute_returns_and_advantage = recording_compute

    import sb3_contrib.trpo.trpo as sb3_trpo

    solve, cg = sb3_trpo.conjugate_gradient_solver, {}

    def recording_solve(matrix_vector_dot_fn, b, *args, **kwargs):
        # The solver starts from 1e-4 * randn_like(b): draw that start again from the same RNG state.
        state = torch.get_rng_state()
        start = 1e-4 * torch.randn_like(b)
        torch.set_rng_state(state)
        direction = solve(matrix_vector_dot_fn, b, *args, **kwargs)
        cg.update(start=start.detach().numpy().copy(), direction=direction.detach().numpy().copy())
        return direction

    sb3_trpo.conjugate_gradient_solver = recording_solve

    def parameters(model):
        return {n: p.detach().numpy().copy() for n, p in model.policy.named_parameters()}

    class AroundUpdates(BaseCallback):
        """Keeps the batch and weights at the end of a wanted rollout (before its update, [T, n_envs]
        arrays) and writes them with the weights after the update when the next rollout starts."""
        pending = None

        def _on_rollout_end(self):
            iteration = self.model._n_updates + 1  # the update that follows is this iteration's
            if iteration in iterations:
                buffer = self.model.rollout_buffer
                self.pending = dict(
                    iteration=iteration, **{"before/" + k: v for k, v in parameters(self.model).items()},
                    **{"before/last_obs": np.array(self.model._last_obs)}, **bootstrap,
                    **{name: getattr(buffer, name).copy()
                       for name in ("observations", "actions", "rewards", "episode_starts", "values", "log_probs",
                                    "advantages", "returns")})

        def _on_rollout_start(self):
            self.write()

        def write(self):
            if self.pending is None:
                return
            batch, logged = self.pending, self.model.logger.name_to_value
            with torch.no_grad():
                values_after = self.model.policy.predict_values(
                    torch.as_tensor(batch["observations"].reshape(-1, batch["observations"].shape[-1])))
            value_loss_after = float(F.mse_loss(torch.as_tensor(batch["returns"]).flatten(), values_after.flatten()))
            np.savez(os.path.join(out_dir, f"{batch['iteration']}.npz"), **batch,
                     **{"after/" + k: v for k, v in parameters(self.model).items()},
                     value_loss_after=value_loss_after, kl_per_dimension=logged["train/kl_divergence_loss"],
                     line_search_success=logged["train/is_line_search_success"],
                     **{"cg/" + k: v for k, v in cg.items()},  # in the order of cg/parameters
                     **{"cg/parameters": np.array([n for n, _ in self.model.policy.named_parameters()
                                                   if "value" not in n])})  # as sb3-contrib's actor_params
            self.pending = None

        def _on_step(self):
            return True

    _, model = make_rl_zoo3_trpo(ENV_ID, seed)
    callback = AroundUpdates()
    model.learn(2 * model.n_steps * max(iterations), callback=callback)
    callback.write()


def as_trajectory(data):
    """sb3-contrib's [T, n_envs] buffer as a [n_envs, T'] TF-Agents trajectory (numpy fields), and
    for each env the trajectory index of each buffer step.

    An episode that ends after step t gets a boundary step (LAST) after it, as a TF-Agents driver
    writes one; its discount is 0 whether the episode terminated or was truncated, because
    sb3-contrib's stored reward already holds the truncation bootstrap. The final column holds
    the state after the rollout, whose value bootstraps the last step. Rows are left-padded with
    boundary steps to one length; boundary steps and the final column carry no training weight.
    """
    from tf_agents.trajectories import time_step as ts

    FIRST, MID, LAST = (int(x) for x in (ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST))
    steps, n_envs = data["rewards"].shape
    no_action = np.zeros_like(data["actions"][0, 0])

    def boundary(observation):
        return LAST, observation, no_action, FIRST, 0.0, 1.0

    rows = []
    for b in range(n_envs):
        done_after = np.append(data["episode_starts"][1:, b], data["last_dones"][b]).astype(bool)
        obs, act = data["observations"][:, b], data["actions"][:, b]
        row, index = [], []
        for t in range(steps):
            index.append(len(row))
            row.append((FIRST if data["episode_starts"][t, b] else MID, obs[t], act[t],
                        LAST if done_after[t] else MID, data["rewards"][t, b], 0.0 if done_after[t] else 1.0))
            if done_after[t]:
                row.append(boundary(obs[t]))  # the terminal state is not stored; its value is not used
        if not done_after[-1]:
            row.append((MID, data["before/last_obs"][b], no_action, MID, 0.0, 1.0))
        rows.append((row, index, boundary(obs[0])))
    length = max(len(row) for row, _, _ in rows)
    padded = [[pad] * (length - len(row)) + row for row, _, pad in rows]
    where = [np.array(index) + length - len(row) for row, index, _ in rows]
    fields = [np.array([[entry[k] for entry in row] for row in padded]) for k in range(6)]
    return fields, where


def experience_of(data):
    """Runs in tftrpo's venv: a dump's buffer as a TF-Agents `Trajectory` of tensors (`as_trajectory`),
    and for each env the trajectory index of each buffer step."""
    import tensorflow as tf
    from tf_agents.trajectories import trajectory

    (step_type, observation, action, next_step_type, reward, discount), where = as_trajectory(data)
    experience = trajectory.Trajectory(
        step_type=tf.constant(step_type, tf.int32), observation=tf.constant(observation, tf.float32),
        action=tf.constant(action, tf.float32), policy_info=(), next_step_type=tf.constant(next_step_type, tf.int32),
        reward=tf.constant(reward, tf.float32), discount=tf.constant(discount, tf.float32))
    return experience, where


def sb3_weights_agent_factory(data, **agent_overrides):
    """Runs in tftrpo's venv: (preset config, a function making the preset's `TRPOAgent` with the
    dump's weights from before the update). The normalisers are off: sb3-contrib's buffer is
    normalised already."""
    import tensorflow as tf
    from tf_agents.environments import tf_py_environment

    from tftrpo import presets, train
    from tftrpo.envs.suites import load_batched

    config = presets.preset(ENV_ID, normalize_observations=False, normalize_rewards=False)
    env = tf_py_environment.TFPyEnvironment(load_batched(ENV_ID, num_envs=2, seed=0))

    def make():
        agent = train.make_agent(config, env, tf.Variable(0, dtype=tf.int64), **agent_overrides)
        for net, names in ((agent._actor_net, ACTOR_PARAMETERS), (agent._value_net, VALUE_PARAMETERS)):
            load_sb3_parameters(net.trainable_variables, lambda name: data["before/" + name], names)
        return agent

    return config, make


def sb3_policy_step(data):
    """sb3-contrib's update of the actor as a flat vector in tftrpo's parameter order."""
    return np.concatenate([(data["after/" + n] - data["before/" + n]).T.reshape(-1) for n in ACTOR_PARAMETERS])


def sb3_flat_in_tftrpo_order(data, flat):
    """A flat vector over sb3-contrib's actor parameters (the dump's `cg/parameters` order, torch
    layouts) in tftrpo's flat order (ACTOR_PARAMETERS, kernels transposed)."""
    names = [str(n) for n in data["cg/parameters"]]
    parts = dict(zip(names, np.split(flat, np.cumsum([data["before/" + n].size for n in names])[:-1])))
    return np.concatenate([parts[n].reshape(data["before/" + n].shape).T.reshape(-1) for n in ACTOR_PARAMETERS])


def compare(dump: str, orders: int, **agent_overrides) -> dict:
    """Runs in tftrpo's venv: the same iteration with tftrpo's agent."""
    import tensorflow as tf

    from tftrpo import natural_gradient as ng

    data = np.load(dump)
    experience, where = experience_of(data)

    def at_buffer_steps(x):  # [n_envs, T'] → sb3's [T, n_envs]
        return np.stack([np.asarray(x)[b, idx] for b, idx in enumerate(where)], axis=1)

    _, agent_with_sb3_weights = sb3_weights_agent_factory(data, **agent_overrides)

    def max_abs(a, b):
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))

    tf.get_logger().setLevel("ERROR")  # each order's new agent traces its own train(): expected here
    tf.random.set_seed(0)  # minibatch order 0
    agent = agent_with_sb3_weights()
    values = agent.value_predictions(experience.observation, experience.step_type)
    advantages, returns = agent.compute_advantages(experience, values)
    distribution = agent.action_distribution(experience.observation, experience.step_type)
    log_probs = distribution.log_prob(experience.action)
    last_index = np.array([row[-1] + 1 for row in where])
    bootstrap = np.asarray(values)[np.arange(len(where)), np.minimum(last_index, values.shape[1] - 1)]
    not_done = ~data["last_dones"].astype(bool)
    sb3_adv_scale = float(np.std(data["advantages"]))

    before = ng.flatten(agent._actor_net.trainable_variables).numpy()
    info = agent.train(experience).extra
    after = agent.action_distribution(experience.observation, experience.step_type)
    # sb3-contrib's line search measures KL(π_new ‖ π_old), the paper and tftrpo KL(π_old ‖ π_new).
    reverse_kl = float(np.mean(at_buffer_steps(after.kl_divergence(distribution))))
    tf_step = ng.flatten(agent._actor_net.trainable_variables).numpy() - before
    sb3_step = sb3_policy_step(data)
    d = int(data["actions"].shape[-1])

    # Each step's surrogate gain L(θ + Δθ) − L(θ) (Eq. 14, advantages standardised as tftrpo does)
    # and KL(π_old ‖ π_new) on this batch: what the step buys for the trust region it spends.
    adv = at_buffer_steps(advantages)
    standardised = (adv - adv.mean()) / (adv.std() + 1e-8)
    old_log_probs = at_buffer_steps(log_probs)
    actor_vars = agent._actor_net.trainable_variables

    def gain_and_kl(theta):
        for v, x in zip(actor_vars, ng.unflatten(tf.constant(theta, tf.float32), actor_vars)):
            v.assign(x)
        new = agent.action_distribution(experience.observation, experience.step_type)
        ratio = np.exp(at_buffer_steps(new.log_prob(experience.action)) - old_log_probs)
        return float(np.mean(ratio * standardised)), float(np.mean(at_buffer_steps(distribution.kl_divergence(new))))

    (sb3_gain, sb3_kl), (tf_gain, tf_kl) = gain_and_kl(before + sb3_step), gain_and_kl(before + tf_step)

    value_losses = [float(info.value_loss)]
    for order in range(1, orders):
        tf.random.set_seed(order)
        value_losses.append(float(agent_with_sb3_weights().train(experience).extra.value_loss))
    return {
        "env": ENV_ID, "action_dims": d, "samples": int(data["rewards"].size),
        "episode_ends_in_batch": int(data["episode_starts"][1:].sum() + data["last_dones"].sum()),
        "weights_loaded": {
            "max_abs_value_difference": max_abs(at_buffer_steps(values), data["values"]),
            "max_abs_bootstrap_value_difference": max_abs(bootstrap[not_done], data["last_values"][not_done]),
            "max_abs_log_prob_difference": max_abs(at_buffer_steps(log_probs), data["log_probs"]),
        },
        "gae": {
            "max_abs_advantage_difference": max_abs(at_buffer_steps(advantages), data["advantages"]),
            "max_abs_return_difference": max_abs(at_buffer_steps(returns), data["returns"]),
            "sb3_advantage_std": sb3_adv_scale,
        },
        "policy_step": {
            "norm": {"tftrpo": float(np.linalg.norm(tf_step)), "sb3": float(np.linalg.norm(sb3_step))},
            "relative_difference": float(np.linalg.norm(tf_step - sb3_step) / np.linalg.norm(sb3_step)),
            "cosine": float(tf_step @ sb3_step / (np.linalg.norm(tf_step) * np.linalg.norm(sb3_step))),
            "kl_whole_distribution": {"tftrpo": float(info.kl), "tftrpo_reverse": reverse_kl,
                                      "sb3_reverse": d * float(data["kl_per_dimension"])},
            "surrogate_gain": {"tftrpo": tf_gain, "sb3": sb3_gain},
            "kl_old_new_of_step": {"tftrpo": tf_kl, "sb3": sb3_kl},
            "tftrpo_line_search_backtracks": int(info.line_search_backtracks),
            "step_fraction": {"tftrpo": float(info.step_fraction),  # sb3-contrib's, from the same direction:
                              "sb3": float(info.step_fraction) * float(np.linalg.norm(sb3_step) / np.linalg.norm(tf_step))},
            "sb3_line_search_success": float(data["line_search_success"]),
        },
        "value_regression_loss_after": {
            "sb3": float(data["value_loss_after"]),
            "tftrpo_per_order": value_losses,
            "before_fit_either": float(np.mean((data["returns"] - data["values"]) ** 2)),
        },
    }


def summary(per_iteration: dict) -> dict:
    """The largest differences over the compared iterations."""
    rows = list(per_iteration.values())

    def largest(f):
        return max(f(r) for r in rows)

    return {
        "iterations_compared": len(rows),
        "max_abs_log_prob_difference": largest(lambda r: r["weights_loaded"]["max_abs_log_prob_difference"]),
        "max_abs_advantage_difference_over_advantage_std": largest(
            lambda r: r["gae"]["max_abs_advantage_difference"] / r["gae"]["sb3_advantage_std"]),
        "max_relative_policy_step_difference": largest(lambda r: r["policy_step"]["relative_difference"]),
        "max_relative_difference_tftrpo_reverse_kl_vs_sb3": largest(
            lambda r: abs(r["policy_step"]["kl_whole_distribution"]["tftrpo_reverse"]
                          - r["policy_step"]["kl_whole_distribution"]["sb3_reverse"])
            / r["policy_step"]["kl_whole_distribution"]["sb3_reverse"]),
        "max_relative_difference_forward_vs_reverse_kl": largest(
            lambda r: abs(r["policy_step"]["kl_whole_distribution"]["tftrpo"]
                          - r["policy_step"]["kl_whole_distribution"]["tftrpo_reverse"])
            / r["policy_step"]["kl_whole_distribution"]["tftrpo_reverse"]),
        "iterations_backtracked": {
            "tftrpo": sum(r["policy_step"]["step_fraction"]["tftrpo"] < 0.999 for r in rows),
            "sb3": sum(r["policy_step"]["step_fraction"]["sb3"] < 0.999 for r in rows)},
        "surrogate_gain_sb3_over_tftrpo": {
            "median": float(np.median([r["policy_step"]["surrogate_gain"]["sb3"] / r["policy_step"]["surrogate_gain"]["tftrpo"]
                                       for r in rows])),
            "iterations_sb3_higher": sum(r["policy_step"]["surrogate_gain"]["sb3"] > r["policy_step"]["surrogate_gain"]["tftrpo"]
                                         for r in rows)},
        "iterations_with_different_step_fractions": sum(
            abs(r["policy_step"]["step_fraction"]["tftrpo"] - r["policy_step"]["step_fraction"]["sb3"]) > 1e-3
            for r in rows),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 10, 50],
                        help="compare the update of each of these sb3-contrib iterations")
    parser.add_argument("--orders", type=int, default=5, help="value-regression minibatch orders for tftrpo")
    parser.add_argument("--sb3-python", default=os.environ.get("TFTRPO_BENCH_SB3_PYTHON", "/tmp/tftrpo-bench-sb3/bin/python"))
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "sb3_same_batch.json"))
    parser.add_argument("--dumps", metavar="DIR",
                        help="keep sb3-contrib's dumps in DIR, and reuse those already there instead of training")
    parser.add_argument("--fisher-vector-product", choices=("auto", "hessian"), default="auto",
                        help="tftrpo's Fisher-vector product (TRPOAgent's argument; the preset's is auto)")
    parser.add_argument("--no-jit-compile", dest="jit_compile", action="store_false",
                        help="tftrpo's value regression and CG solve as plain graphs")
    parser.add_argument("--dump-only", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dump_only:
        dump_sb3(args.seed, set(args.iterations), args.dump_only)
        return 0
    sys.path.insert(0, REPO)
    overrides = dict(fisher_vector_product=args.fisher_vector_product, jit_compile=args.jit_compile)
    result = {"seed": args.seed, "tftrpo_agent_overrides": overrides, "iterations": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dumps = args.dumps or tmp
        os.makedirs(dumps, exist_ok=True)
        if not all(os.path.exists(os.path.join(dumps, f"{i}.npz")) for i in args.iterations):
            subprocess.run([args.sb3_python, os.path.abspath(__file__), "--seed", str(args.seed), "--iterations",
                            *map(str, args.iterations), "--dump-only", dumps], check=True)
        for iteration in sorted(args.iterations):
            result["iterations"][str(iteration)] = compare(os.path.join(dumps, f"{iteration}.npz"), args.orders,
                                                           **overrides)
            print(json.dumps({iteration: result["iterations"][str(iteration)]}), flush=True)
    result["summary"] = summary(result["iterations"])
    print(json.dumps(result["summary"], indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
