#!/usr/bin/env python3
"""End-to-end TRAINING throughput on Hopper-v5: tftrpo vs sb3-contrib's TRPO (issue 5,
items 2 and 5: environment steps per second of a whole training run, and the peak
resident memory of each training process).

Both sides train with rl-zoo3's MuJoCo TRPO settings: 2 envs × 1024 steps per env per
iteration, observation and reward normalisation, CG 25, damping 0.1, line search
10 × 0.8, 20 critic epochs of minibatch 128 with Adam 1e-3, δ 0.01, γ 0.99, λ 0.95,
64×64 tanh actor and critic; 1 TF intra-op and 1 inter-op thread, and
`torch.set_num_threads(1)` / `torch.set_num_interop_threads(1)`.

  tftrpo   the real CLI, `python -m tftrpo.train --env Hopper-v5 --steps N --seed S
           --run-dir TMP/run --export-dir TMP/export --no-progress --eval-interval 1000000`
           (the Hopper preset is the rl-zoo3 setting), started through a tiny launcher
           (this file, `--worker tftrpo-cli`) that sets the TF thread pools before any op
           and then calls `tftrpo.train.main`; tftrpo is imported from a snapshot of
           the repo. Per-iteration `env_steps` / `wall_time` come from its progress.csv.
  sb3      `sb3_contrib.TRPO('MlpPolicy', VecNormalize(make_vec_env('Hopper-v5', 2)), ...)`
           `.learn(N)` in the sb3 venv (`--worker sb3-train`), with a callback that
           records the wall time at the start and end of every rollout, so the end of
           iteration k is the start of rollout k+1 (or the end of training).

Steady-state throughput: env steps / wall time from the end of iteration 2 to the end
of the last iteration (so the first two iterations, which hold tracing / warm-up, are
excluded); tftrpo's last iteration also runs the CLI's final greedy evaluation
(5 episodes) and is excluded from its window (reported separately). Also reported:
whole-process wall time (start-up, imports, tracing, the CLI's evaluation, SavedModel
export included), CPU time, and peak resident memory (`ru_maxrss` of each training
process from `os.wait4`).

Rounds alternate the two libraries (A B, then B A, ...); each round also measures raw
Gymnasium stepping with random actions in both venvs (the `raw_stepping.py` workers:
one `gymnasium.make` env, tftrpo's batched env, the TF-Agents driver with a random
policy, sb3's DummyVecEnv), so "training steps/s ÷ raw steps/s" uses the same load.

The profiled mode (`--worker tftrpo-profile`, run once after the rounds) rebuilds the
CLI's loop in-process (same preset, `SinglePathCollector`, `TRPOAgent`, Checkpointer)
and times, per iteration after warm-up: `collector.collect()`, `agent.train()`, the
checkpoint save (every `checkpoint_interval` iterations, as the CLI; reported as the mean per
iteration), and, for the same 2048 env steps, the batched Python env stepped with
random numpy actions and the TF-Agents driver with a `RandomTFPolicy` (no buffer).

  python bench/throughput.py              # 4 rounds × 30k steps per side, ~8-10 min
  python bench/throughput.py --quick      # 1 round × 6k steps, ~2 min smoke run
"""
import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ENV_ID = "Hopper-v5"
SETTINGS = dict(
    env_id=ENV_ID, num_envs=2, steps_per_env=1024, max_kl=0.01, cg_iters=25, cg_damping=0.1,
    line_search_max_backtracks=10, line_search_shrink=0.8, gamma=0.99, gae_lambda=0.95,
    value_epochs=20, value_minibatch_size=128, value_lr=1e-3, hidden=[64, 64], activation="tanh",
    normalize_observations=True, normalize_rewards=True, normalize_advantages=True,
)
SKIP_ITERATIONS = 2  # steady-state window starts at the end of this iteration
THIS = os.path.abspath(__file__)


# =========================================================================== workers
def _set_tf_threads(intra, inter):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return tf


def _proc_threads():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        return None


def worker_tftrpo_cli(args, cli_args):
    """Launcher: TF thread pools first, then the real CLI's main()."""
    t_start = time.time()
    tf = _set_tf_threads(args.intra_threads, 1)
    import tftrpo
    from tftrpo.train import main as cli_main

    rc = cli_main(cli_args)
    info = {"tftrpo": tftrpo.__version__, "tensorflow": tf.__version__, "tftrpo_file": tftrpo.__file__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "os_threads_at_exit": _proc_threads(), "launcher_seconds": time.time() - t_start, "rc": rc,
            "cli_args": cli_args}
    with open(args.out, "w") as f:
        json.dump(info, f)
    return rc


def worker_sb3_train(args):
    """sb3-contrib TRPO learn(N) with per-rollout wall-time stamps."""
    t_proc = time.time()
    import torch

    torch.set_num_threads(args.intra_threads)
    torch.set_num_interop_threads(1)
    import warnings

    import gymnasium
    import numpy as np
    import sb3_contrib
    import stable_baselines3
    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    warnings.filterwarnings("ignore")
    s = SETTINGS
    t_imported = time.time()

    class Stamps(BaseCallback):
        def __init__(self):
            super().__init__()
            self.rollout_start, self.rollout_end, self.steps_at_end = [], [], []
            self.training_end = None

        def _on_rollout_start(self):
            self.rollout_start.append(time.time())

        def _on_step(self):
            return True

        def _on_rollout_end(self):
            self.rollout_end.append(time.time())
            self.steps_at_end.append(int(self.model.num_timesteps))

        def _on_training_end(self):
            self.training_end = time.time()

    env = VecNormalize(make_vec_env(s["env_id"], n_envs=s["num_envs"], seed=args.seed),
                       norm_obs=s["normalize_observations"], norm_reward=s["normalize_rewards"], gamma=s["gamma"])
    model = TRPO("MlpPolicy", env, n_steps=s["steps_per_env"], batch_size=s["value_minibatch_size"],
                 cg_max_steps=s["cg_iters"], cg_damping=s["cg_damping"],
                 line_search_shrinking_factor=s["line_search_shrink"],
                 line_search_max_iter=s["line_search_max_backtracks"], n_critic_updates=s["value_epochs"],
                 learning_rate=s["value_lr"], target_kl=s["max_kl"], gamma=s["gamma"], gae_lambda=s["gae_lambda"],
                 sub_sampling_factor=1, normalize_advantage=s["normalize_advantages"],
                 policy_kwargs=dict(net_arch=dict(pi=list(s["hidden"]), vf=list(s["hidden"])),
                                    activation_fn=torch.nn.Tanh),
                 seed=args.seed, device="cpu", verbose=0)
    cb = Stamps()
    t_learn = time.time()
    model.learn(total_timesteps=args.steps, callback=cb)
    t_done = time.time()
    # iteration k ends when rollout k+1 starts (the train() in between is done), the last at training end
    ends = cb.rollout_start[1:] + [cb.training_end]
    rows = []
    for k, (rs, re, end, steps) in enumerate(zip(cb.rollout_start, cb.rollout_end, ends, cb.steps_at_end), 1):
        rows.append({"iteration": k, "env_steps": steps, "wall_time": end - t_learn,
                     "collect_s": re - rs, "train_s": end - re})
    info = {"versions": {"sb3_contrib": sb3_contrib.__version__, "stable_baselines3": stable_baselines3.__version__,
                         "torch": torch.__version__, "gymnasium": gymnasium.__version__, "numpy": np.__version__,
                         "mujoco": __import__("mujoco").__version__, "python": sys.version.split()[0]},
            "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
            "os_threads_at_exit": _proc_threads(), "rows": rows,
            "import_seconds": t_imported - t_proc, "setup_seconds": t_learn - t_imported,
            "learn_seconds": t_done - t_learn, "num_timesteps": int(model.num_timesteps)}
    with open(args.out, "w") as f:
        json.dump(info, f)
    return 0


def worker_tftrpo_profile(args):
    """The CLI's collect/train loop in-process, each part timed per iteration."""
    tf = _set_tf_threads(args.intra_threads, 1)
    import numpy as np
    from tf_agents.drivers import dynamic_step_driver
    from tf_agents.environments import tf_py_environment
    from tf_agents.policies import random_tf_policy
    from tf_agents.utils import common as tfa_common

    import tftrpo
    from tftrpo import presets
    from tftrpo.envs import load_batched
    from tftrpo.train import make_agent
    from tftrpo.sampling.single_path import SinglePathCollector

    config = presets.preset(ENV_ID)
    seed = args.seed
    tf.keras.utils.set_random_seed(seed)  # as tftrpo-train seeds (Python's random too)
    env = tf_py_environment.TFPyEnvironment(load_batched(ENV_ID, num_envs=config.num_envs, seed=seed))
    train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
    agent = make_agent(config, env, train_step)  # exactly the CLI's agent
    collector = SinglePathCollector(env, agent.collect_policy, config.steps_per_env, seed=seed,
                                    numpy_policy=args.numpy_policy)  # as the CLI
    steps = collector.simulator_steps_per_collect
    ckpt_dir = tempfile.mkdtemp(prefix="tftrpo-throughput-ckpt-")
    checkpointer = tfa_common.Checkpointer(ckpt_dir=ckpt_dir, max_to_keep=3, agent=agent, train_step=train_step)

    # the same number of env steps without the policy network / replay buffer / metrics
    py_env = load_batched(ENV_ID, num_envs=config.num_envs, seed=seed + 1)
    spec = py_env.action_spec()
    rng = np.random.default_rng(seed)
    py_env.reset()
    rand_env = tf_py_environment.TFPyEnvironment(load_batched(ENV_ID, num_envs=config.num_envs, seed=seed + 2))
    rand_policy = random_tf_policy.RandomTFPolicy(rand_env.time_step_spec(), rand_env.action_spec())
    rand_run = tfa_common.function(dynamic_step_driver.DynamicStepDriver(
        rand_env, rand_policy, observers=[], num_steps=steps).run)

    import gymnasium as gym

    gym_envs = [gym.make(ENV_ID) for _ in range(config.num_envs)]
    for i, e in enumerate(gym_envs):
        e.reset(seed=seed + 3 + i)
    gym_space = gym_envs[0].action_space

    def gym_stepping():
        """The same env steps on plain `gymnasium.make` envs, one after the other (no wrappers)."""
        actions = rng.uniform(gym_space.low, gym_space.high,
                              size=(steps // config.num_envs, config.num_envs) + gym_space.shape
                              ).astype(gym_space.dtype)
        t0 = time.perf_counter()
        for a in actions:
            for e, ai in zip(gym_envs, a):
                _, _, term, trunc, _ = e.step(ai)
                if term or trunc:
                    e.reset()
        return time.perf_counter() - t0

    real_steps = []  # py_stepping's simulator steps: its slots less the resets (a FIRST time step)

    def py_stepping():
        """The collector's B·T slots on the batched env with random actions (the slot after a
        LAST resets the env: no simulator step there, as in the collector)."""
        actions = rng.uniform(spec.minimum, spec.maximum,
                              size=(steps // config.num_envs, config.num_envs) + spec.shape).astype(spec.dtype)
        resets = 0
        t0 = time.perf_counter()
        for a in actions:
            resets += int((py_env.step(a).step_type == 0).sum())
        seconds = time.perf_counter() - t0
        real_steps.append(len(actions) * config.num_envs - resets)
        return seconds

    state = {"ts": None}

    def driver_random():
        t0 = time.perf_counter()
        ts, _ = rand_run(time_step=state["ts"]) if state["ts"] is not None else rand_run()
        ts.reward.numpy()
        state["ts"] = ts
        return time.perf_counter() - t0

    def iteration():
        """One CLI-like iteration: collect, train, checkpoint; (seconds of each, the LossInfo)."""
        a = time.perf_counter()
        exp = collector.collect()
        b = time.perf_counter()
        info = agent.train(exp)
        float(info.loss)
        c = time.perf_counter()
        if int(train_step.numpy()) % config.checkpoint_interval == 0:  # as the CLI does
            checkpointer.save(train_step)
        return {"collect_s": b - a, "train_s": c - b, "checkpoint_s": time.perf_counter() - c}, info

    t0 = time.perf_counter()
    warm = [iteration()[0] for _ in range(args.warmup)]
    driver_random()  # trace
    py_stepping()
    gym_stepping()
    warmup_s = time.perf_counter() - t0

    parts = {k: [] for k in ("collect_s", "train_s", "checkpoint_s", "gym_stepping_s", "py_env_stepping_s",
                             "driver_random_policy_s")}
    extras = []
    for _ in range(args.iterations):
        seconds, info = iteration()
        for key, value in seconds.items():
            parts[key].append(value)
        parts["gym_stepping_s"].append(gym_stepping())
        parts["py_env_stepping_s"].append(py_stepping())
        parts["driver_random_policy_s"].append(driver_random())
        extras.append({"line_search_backtracks": int(info.extra.line_search_backtracks),
                       "step_rejected": int(bool(info.extra.step_rejected)), "kl": float(info.extra.kl)})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    out = {"versions": {"tftrpo": tftrpo.__version__, "tensorflow": tf.__version__},
           "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                       "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
           "env_steps_per_iteration": steps, "py_env_stepping_real_steps": real_steps[1:],
           "warmup_iterations": warm, "warmup_seconds": warmup_s,
           "iterations": args.iterations, "parts_seconds": parts, "train_extras": extras,
           "checkpoint_interval": config.checkpoint_interval, "uses_numpy_policy": collector.uses_numpy_policy,
           "os_threads_at_exit": _proc_threads()}
    with open(args.out, "w") as f:
        json.dump(out, f)
    return 0


# ====================================================================== orchestrator
def _steady(rows, skip, exclude_last):
    """Steps/s from the end of iteration `skip` to the end of the last usable iteration."""
    usable = rows[:-1] if exclude_last and len(rows) > 1 else rows
    skip = min(skip, len(usable) - 1)
    if skip < 0 or len(usable) < 2:
        return {"steps_per_second": None, "skip": skip}
    if skip == 0:  # too short a run for a window: from the start of the loop
        a_steps, a_t = 0, 0.0
    else:
        a_steps, a_t = rows[skip - 1]["env_steps"], rows[skip - 1]["wall_time"]
    b = usable[-1]
    return {"steps_per_second": (b["env_steps"] - a_steps) / (b["wall_time"] - a_t),
            "iterations": [skip + 1, b["iteration"]], "env_steps": b["env_steps"] - a_steps,
            "seconds": b["wall_time"] - a_t}


def run_tftrpo(args, env, steps, seed, log_dir, tag, extra_cli=()):
    """One `tftrpo-train` run of `steps` on Hopper (`extra_cli`: more CLI flags); its measurements."""
    tmp = tempfile.mkdtemp(prefix="tftrpo-throughput-")
    out = os.path.join(tmp, "launcher.json")
    cli = ["--env", ENV_ID, "--steps", str(steps), "--seed", str(seed), "--run-dir", os.path.join(tmp, "run"),
           "--export-dir", os.path.join(tmp, "export"), "--no-progress", "--eval-interval", "1000000"]
    cli += ["--numpy-policy"] if args.numpy_policy else ["--no-numpy-policy"]
    cli += list(extra_cli)
    cmd = [args.tf_python, "-u", THIS, "--worker", "tftrpo-cli", "--out", out,
           "--intra-threads", str(args.threads), "--"] + cli
    try:
        res = common.run_child(cmd, env, os.path.join(log_dir, f"{tag}.log"), args.child_timeout)
        with open(out) as f:
            res["launcher"] = json.load(f)
        with open(os.path.join(tmp, "run", "progress.csv"), newline="") as f:
            raw_rows = list(csv.DictReader(f))
        with open(os.path.join(tmp, "run", "config.json")) as f:
            res["cli_config"] = json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [{"iteration": int(r["iteration"]), "env_steps": int(r["env_steps"]), "wall_time": float(r["wall_time"]),
             "cli_steps_per_second": float(r["steps_per_second"]), "has_eval": r["eval_return"] not in ("", None),
             "kl": float(r["kl"]), "line_search_backtracks": int(r["line_search_backtracks"]),
             "step_rejected": int(r["step_rejected"])} for r in raw_rows]
    res["rows"] = rows
    res["steady"] = _steady(rows, SKIP_ITERATIONS, exclude_last=rows[-1]["has_eval"] if rows else False)
    res["steady_including_eval_iteration"] = _steady(rows, SKIP_ITERATIONS, exclude_last=False)
    res["loop_wall_s"] = rows[-1]["wall_time"] if rows else None
    res["first_iteration_s"] = rows[0]["wall_time"] if rows else None
    res["env_steps"] = rows[-1]["env_steps"] if rows else 0
    res["whole_process_steps_per_second"] = res["env_steps"] / res["process_wall_s"]
    return res


def run_sb3(args, env, steps, seed, log_dir, tag):
    """One sb3-contrib `learn(steps)` on Hopper with the same settings; its measurements."""
    tmp = tempfile.mkdtemp(prefix="sb3-throughput-")
    out = os.path.join(tmp, "sb3.json")
    cmd = [args.sb3_python, "-u", THIS, "--worker", "sb3-train", "--out", out, "--steps", str(steps),
           "--seed", str(seed), "--intra-threads", str(args.threads)]
    try:
        res = common.run_child(cmd, env, os.path.join(log_dir, f"{tag}.log"), args.child_timeout)
        with open(out) as f:
            res.update(json.load(f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = res["rows"]
    res["steady"] = _steady(rows, SKIP_ITERATIONS, exclude_last=False)
    res["loop_wall_s"] = res["learn_seconds"]
    res["first_iteration_s"] = rows[0]["wall_time"] if rows else None
    res["env_steps"] = res["num_timesteps"]
    res["whole_process_steps_per_second"] = res["env_steps"] / res["process_wall_s"]
    w = [r for r in rows[SKIP_ITERATIONS:]]
    if w:
        res["median_collect_ms"] = 1e3 * _median([r["collect_s"] for r in w])
        res["median_train_ms"] = 1e3 * _median([r["train_s"] for r in w])
    return res


def _median(xs):
    import statistics

    return statistics.median(xs)


def measure_raw(step_workers, order, steps):
    out = {}
    items = {"tftrpo": ("gym_single", "tftrpo_py_batched", "tfagents_driver"),
             "sb3": ("gym_single", "sb3_dummy_vec_env")}
    for i in range(3):
        for lib in order:
            if lib in step_workers and i < len(items[lib]):
                m = items[lib][i]
                reply = step_workers[lib].request(cmd="measure", what=m, steps=steps, timeout=600)
                out[f"{lib}:{m}"] = reply["steps_per_second"]
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cli_rest = []
    if "--" in argv:
        i = argv.index("--")
        argv, cli_rest = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round × 6k steps, short profile")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds (default 4: A B, B A, A B, B A; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per training run (default 30000, quick 6000)")
    parser.add_argument("--raw-steps", type=int, default=None, help="env steps per raw-stepping measurement (8192, quick 2048)")
    parser.add_argument("--profile-iterations", type=int, default=None, help="timed iterations of the profile (10, quick 3)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="seed of every training run (same work each round)")
    parser.add_argument("--threads", type=int, default=1, help="TF intra-op / torch threads (default 1)")
    parser.add_argument("--tf-python", default=common.DEFAULT_TF_PYTHON)
    parser.add_argument("--sb3-python", default=common.DEFAULT_SB3_PYTHON)
    parser.add_argument("--tftrpo-path", default=None, help="directory holding tftrpo (default: a snapshot of the repo's)")
    parser.add_argument("--child-timeout", type=int, default=1800)
    parser.add_argument("--name", default=None, help="results name (default throughput[_quick])")
    parser.add_argument("--numpy-policy", action=argparse.BooleanOptionalAction, default=True,
                        help="tftrpo collects with the NumPy policy (tftrpo-train --numpy-policy, the CLI's default "
                             "for MLP actors); --no-numpy-policy measures the TF policy in the compiled loop "
                             "(tftrpo-train --no-numpy-policy)")
    # worker modes (internal)
    parser.add_argument("--worker", choices=["tftrpo-cli", "sb3-train", "tftrpo-profile"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--intra-threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "tftrpo-cli":
        return worker_tftrpo_cli(args, cli_rest)
    if args.worker == "sb3-train":
        return worker_sb3_train(args)
    if args.worker == "tftrpo-profile":
        return worker_tftrpo_profile(args)
    return orchestrate(args)


def orchestrate(args):
    rounds = args.rounds or (1 if args.quick else 4)
    steps = args.steps or (6000 if args.quick else 30000)
    raw_steps = args.raw_steps or (2048 if args.quick else 8192)
    prof_iters = args.profile_iterations or (3 if args.quick else 10)
    name = args.name or ("throughput_quick" if args.quick else "throughput")
    started = time.time()
    machine = common.machine_info()
    tftrpo_path = args.tftrpo_path or common.snapshot_tftrpo()
    env = dict(os.environ)
    env.update(common.bench_env(args.threads, tftrpo_path))
    env.update({"TF_NUM_INTRAOP_THREADS": str(args.threads), "TF_NUM_INTEROP_THREADS": "1"})
    log_dir = os.path.join(common.RESULTS_DIR, "logs", name)
    os.makedirs(log_dir, exist_ok=True)

    here = os.path.dirname(THIS)
    step_workers = {
        "tftrpo": common.Worker("tftrpo_step", args.tf_python, os.path.join(here, "workers", "tftrpo_step_worker.py"),
                                env=common.bench_env(1, tftrpo_path), log_dir=log_dir),
        "sb3": common.Worker("sb3_step", args.sb3_python, os.path.join(here, "workers", "sb3_step_worker.py"),
                             env=common.bench_env(1, tftrpo_path), log_dir=log_dir)}
    runs = {"tftrpo": [], "sb3": []}
    rounds_log = []
    profile = None
    try:
        req = dict(cmd="setup", env_id=ENV_ID, num_envs=SETTINGS["num_envs"], seed=args.seed,
                   driver_steps=SETTINGS["num_envs"] * SETTINGS["steps_per_env"], intra_threads=1, inter_threads=1)
        for w in step_workers.values():
            w.send(**req)
        step_setup = {lib: w.receive(600) for lib, w in step_workers.items()}
        for r in range(rounds):
            order = ["tftrpo", "sb3"] if r % 2 == 0 else ["sb3", "tftrpo"]
            entry = {"round": r, "order": order, "loadavg_before": os.getloadavg()}
            entry["raw_before"] = measure_raw(step_workers, order, raw_steps)
            for lib in order:
                fn = run_tftrpo if lib == "tftrpo" else run_sb3
                res = fn(args, env, steps, args.seed, log_dir, f"round{r}_{lib}")
                res["loadavg_after"] = os.getloadavg()
                runs[lib].append(res)
                entry[lib] = {k: res.get(k) for k in ("process_wall_s", "peak_rss_mib", "loop_wall_s")}
                entry[lib]["steady_steps_per_second"] = res["steady"]["steps_per_second"]
                print(f"round {r + 1}/{rounds} {lib:6s}: {res['steady']['steps_per_second']:7.0f} steps/s steady "
                      f"(iterations {res['steady'].get('iterations')}), process {res['process_wall_s']:.1f} s, "
                      f"peak RSS {res['peak_rss_mib']:.0f} MiB, CPU/wall {res['cpu_over_wall']:.2f}", flush=True)
            entry["raw_after"] = measure_raw(step_workers, order[::-1], raw_steps)
            entry["loadavg_after"] = os.getloadavg()
            entry["ratio_tftrpo_over_sb3"] = (entry["tftrpo"]["steady_steps_per_second"]
                                              / entry["sb3"]["steady_steps_per_second"])
            raw_gym = _median([entry["raw_before"]["tftrpo:gym_single"], entry["raw_after"]["tftrpo:gym_single"]])
            entry["ratio_tftrpo_over_raw_gym"] = entry["tftrpo"]["steady_steps_per_second"] / raw_gym
            rounds_log.append(entry)
            print(f"round {r + 1}/{rounds}: tftrpo/sb3 = {entry['ratio_tftrpo_over_sb3']:.2f}, "
                  f"tftrpo/raw gym = {entry['ratio_tftrpo_over_raw_gym']:.2f}  raw: "
                  + "  ".join(f"{k} {v:,.0f}" for k, v in entry["raw_after"].items()), flush=True)
    finally:
        for w in step_workers.values():
            w.close()
    if not args.no_profile:
        tmp = tempfile.mkdtemp(prefix="tftrpo-throughput-prof-")
        out = os.path.join(tmp, "profile.json")
        cmd = [args.tf_python, "-u", THIS, "--worker", "tftrpo-profile", "--out", out, "--seed", str(args.seed),
               "--iterations", str(prof_iters), "--warmup", "3", "--intra-threads", str(args.threads)]
        cmd += ["--numpy-policy"] if args.numpy_policy else ["--no-numpy-policy"]
        res = common.run_child(cmd, env, os.path.join(log_dir, "profile.log"), args.child_timeout)
        with open(out) as f:
            profile = {**json.load(f), **res}
        shutil.rmtree(tmp, ignore_errors=True)

    payload = build_payload(args, name, machine, tftrpo_path, steps, raw_steps, rounds, runs, rounds_log,
                            step_setup, profile, started)
    json_path, png_path = common.result_paths(name)
    common.write_json(json_path, payload)
    plot(png_path, payload)
    report(payload, json_path, png_path)
    return 0


def build_payload(args, name, machine, tftrpo_path, steps, raw_steps, rounds, runs, rounds_log, step_setup,
                  profile, started):
    S = common.summary
    summary = {}
    for lib in runs:
        rs = runs[lib]
        summary[lib] = {
            "steady_steps_per_second": S([r["steady"]["steps_per_second"] for r in rs]),
            "whole_process_steps_per_second": S([r["whole_process_steps_per_second"] for r in rs]),
            "process_wall_s": S([r["process_wall_s"] for r in rs]),
            "loop_wall_s": S([r["loop_wall_s"] for r in rs]),
            "first_iteration_s": S([r["first_iteration_s"] for r in rs]),
            "outside_loop_s": S([r["process_wall_s"] - r["loop_wall_s"] for r in rs]),
            "peak_rss_mib": S([r["peak_rss_mib"] for r in rs]),
            "cpu_over_wall": S([r["cpu_over_wall"] for r in rs]),
        }
    summary["tftrpo"]["steady_including_eval_iteration_steps_per_second"] = S(
        [r["steady_including_eval_iteration"]["steps_per_second"] for r in runs["tftrpo"]])
    summary["sb3"]["median_collect_ms"] = S([r["median_collect_ms"] for r in runs["sb3"] if "median_collect_ms" in r])
    summary["sb3"]["median_train_ms"] = S([r["median_train_ms"] for r in runs["sb3"] if "median_train_ms" in r])
    raw_keys = list(rounds_log[0]["raw_before"]) if rounds_log else []
    raw = {k: S([e[w][k] for e in rounds_log for w in ("raw_before", "raw_after")]) for k in raw_keys}
    tf_med = summary["tftrpo"]["steady_steps_per_second"]["median"]
    sb_med = summary["sb3"]["steady_steps_per_second"]["median"]
    ratios = {
        "tftrpo_over_sb3_steady_of_medians": tf_med / sb_med,
        "tftrpo_over_sb3_steady_per_round": S([e["ratio_tftrpo_over_sb3"] for e in rounds_log]),
        "tftrpo_over_sb3_whole_process_of_medians": (summary["tftrpo"]["whole_process_steps_per_second"]["median"]
                                                     / summary["sb3"]["whole_process_steps_per_second"]["median"]),
        "tftrpo_train_over_raw_gym_single_tftrpo_venv_of_medians": tf_med / raw["tftrpo:gym_single"]["median"],
        "tftrpo_train_over_raw_gym_per_round": S([e["ratio_tftrpo_over_raw_gym"] for e in rounds_log]),
        "tftrpo_train_over_tftrpo_py_batched_of_medians": tf_med / raw["tftrpo:tftrpo_py_batched"]["median"],
        "tftrpo_train_over_tfagents_random_driver_of_medians": tf_med / raw["tftrpo:tfagents_driver"]["median"],
        "sb3_train_over_raw_gym_single_sb3_venv_of_medians": sb_med / raw["sb3:gym_single"]["median"],
        "sb3_train_over_dummy_vec_env_of_medians": sb_med / raw["sb3:sb3_dummy_vec_env"]["median"],
        "peak_rss_tftrpo_over_sb3_of_medians": (summary["tftrpo"]["peak_rss_mib"]["median"]
                                                / summary["sb3"]["peak_rss_mib"]["median"]),
    }
    # The targets are judged on the per-round ratios (each round's libraries ran side by side);
    # a ratio of the two medians pairs rounds that did not run together.
    over_sb3 = ratios["tftrpo_over_sb3_steady_per_round"]["median"]
    over_raw = ratios["tftrpo_train_over_raw_gym_per_round"]["median"]
    targets = {
        "tftrpo_at_least_2.5x_sb3_steps_per_second": {"target": 2.5, "measured": over_sb3, "met": over_sb3 >= 2.5},
        "tftrpo_at_least_50pct_of_raw_gym": {"target": 0.5, "measured": over_raw, "met": over_raw >= 0.5},
    }
    breakdown = _breakdown(profile, summary, raw) if profile else None
    versions = {"tftrpo": runs["tftrpo"][0]["launcher"] if runs["tftrpo"] else None,
                "sb3": runs["sb3"][0]["versions"] if runs["sb3"] else None,
                "step_workers": {k: v.get("versions") for k, v in step_setup.items()}}
    return {
        "benchmark": "throughput",
        "description": f"end-to-end training throughput (env steps/s) and peak RSS on {ENV_ID}, "
                       "tftrpo CLI vs sb3-contrib TRPO, rl-zoo3 MuJoCo settings, 1 thread",
        **common.provenance(tftrpo_path, not args.tftrpo_path, machine),
        "loadavg_at_end": os.getloadavg(),
        "versions": versions,
        "settings": {**SETTINGS, "steps_per_run": steps, "rounds": rounds, "seed": args.seed,
                     "raw_steps_per_measurement": raw_steps, "threads": {"tf_intra_op": args.threads,
                     "tf_inter_op": 1, "torch_num_threads": args.threads, "torch_interop": 1},
                     "steady_window": f"from the end of iteration {SKIP_ITERATIONS} to the end of the last "
                                      "iteration (tftrpo: the last one without the CLI's final evaluation)",
                     "tftrpo_cli": "python -m tftrpo.train --env Hopper-v5 --steps N --seed S --run-dir TMP/run "
                                   "--export-dir TMP/export --no-progress --eval-interval 1000000 "
                                   "(via the launcher: TF threads set first)",
                     "tftrpo_cli_per_iteration_extras": "checkpoint save, TensorBoard scalars, progress.csv row",
                     "sb3_model": "TRPO('MlpPolicy', VecNormalize(make_vec_env('Hopper-v5', 2)), n_steps=1024, "
                                  "batch_size=128, cg_max_steps=25, cg_damping=0.1, n_critic_updates=20, "
                                  "learning_rate=1e-3, target_kl=0.01, gamma=0.99, gae_lambda=0.95, "
                                  "sub_sampling_factor=1, 64x64 tanh pi/vf)"},
        "summary": summary,
        "raw_stepping_steps_per_second": raw,
        "ratios": ratios,
        "targets": targets,
        "breakdown": breakdown,
        "rounds": rounds_log,
        "runs": runs,
        "profile": profile,
        "step_worker_setup": step_setup,
        "wall_seconds": time.time() - started,
    }


def _breakdown(profile, summary, raw):
    p = {k: 1e3 * _median(v) for k, v in profile["parts_seconds"].items()}
    # The CLI saves every checkpoint_interval iterations: its cost per iteration is the mean.
    p["checkpoint_s"] = 1e3 * sum(profile["parts_seconds"]["checkpoint_s"]) / len(profile["parts_seconds"]["checkpoint_s"])
    collect, train = p["collect_s"], p["train_s"]
    n = profile["env_steps_per_iteration"]
    cli_iter_ms = 1e3 * n / summary["tftrpo"]["steady_steps_per_second"]["median"]
    gym_ms, py_ms, drv_ms = p["gym_stepping_s"], p["py_env_stepping_s"], p["driver_random_policy_s"]
    if profile.get("py_env_stepping_real_steps"):
        # gym_stepping steps n real steps; the batched env's n slots held fewer (resets take
        # slots): MuJoCo's share of those slots is gym's time for as many real steps.
        gym_ms *= _median(profile["py_env_stepping_real_steps"]) / n
    sb3_collect = summary["sb3"]["median_collect_ms"].get("median")
    sb3_env_ms = 1e3 * n / raw["sb3:sb3_dummy_vec_env"]["median"]
    return {
        "env_steps_per_iteration": n,
        # checkpoint_save below is the mean per iteration of one save every this many iterations
        # (profiles written before the interval existed saved every iteration)
        "checkpoint_interval": profile.get("checkpoint_interval", 1),
        "tftrpo_profiled_median_ms": {
            "collect": collect, "train": train, "checkpoint_save": p["checkpoint_s"],
            "gym_raw_stepping_same_real_steps": gym_ms, "tftrpo_py_batched_env_same_slots": py_ms,
            "tfagents_driver_random_policy_same_steps": drv_ms},
        # collection = raw gym + tftrpo's Python env layer + the rollout loop (the policy: NumPy
        # mirror or TF graph, see the profile's uses_numpy_policy; the trajectory arrays):
        # differences of medians.
        # For reference, TF-Agents' DynamicStepDriver with a random policy and no observers.
        "tftrpo_collect_decomposition_ms": {
            "gymnasium_mujoco_stepping": gym_ms, "tftrpo_python_env_layer": py_ms - gym_ms,
            "rollout_loop_policy_and_env_calls": collect - py_ms},
        "tfagents_driver_random_policy_over_collect": drv_ms / collect,
        "tftrpo_env_stepping_share_of_collect_raw_gym": gym_ms / collect,
        "tftrpo_env_stepping_share_of_collect_py_batched_env": py_ms / collect,
        "tftrpo_random_driver_share_of_collect": drv_ms / collect,
        "tftrpo_collect_share_of_collect_plus_train": collect / (collect + train),
        "tftrpo_profiled_steps_per_second_collect_plus_train": n / ((collect + train) / 1e3),
        "tftrpo_cli_iteration_ms_from_steady_median": cli_iter_ms,
        "tftrpo_cli_other_ms": cli_iter_ms - collect - train,
        "sb3_median_collect_ms": sb3_collect,
        "sb3_median_train_ms": summary["sb3"]["median_train_ms"].get("median"),
        "sb3_dummy_vec_env_stepping_ms_same_steps_from_raw": sb3_env_ms,
        "sb3_env_stepping_share_of_collect": sb3_env_ms / sb3_collect if sb3_collect else None,
    }


def plot(path, payload):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = payload["rounds"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw={"width_ratios": [1, 1.3]})
    ax = axes[0]
    xs = [e["round"] + 1 for e in rounds]
    for lib, marker in (("tftrpo", "o"), ("sb3", "s")):
        ax.plot(xs, [e[lib]["steady_steps_per_second"] for e in rounds], marker=marker, label=f"{lib} training")
    raw_tf = [_median([e["raw_before"]["tftrpo:gym_single"], e["raw_after"]["tftrpo:gym_single"]]) for e in rounds]
    ax.plot(xs, raw_tf, "k--", marker="^", alpha=0.6, label="raw gym.make, random actions (tftrpo venv)")
    raw_drv = [_median([e["raw_before"]["tftrpo:tfagents_driver"], e["raw_after"]["tftrpo:tfagents_driver"]])
               for e in rounds]
    ax.plot(xs, raw_drv, ":", color="grey", marker="v", label="TF-Agents driver, random policy")
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylabel(f"env steps / s (steady: iterations {SKIP_ITERATIONS + 1}..end)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rt = payload["ratios"]
    s = payload["summary"]
    ax.set_title(f"training: tftrpo/sb3 = {rt['tftrpo_over_sb3_steady_per_round']['median']:.2f}, "
                 f"tftrpo/raw gym = {rt['tftrpo_train_over_raw_gym_per_round']['median']:.2f} (median per round)\n"
                 f"peak RSS: tftrpo {s['tftrpo']['peak_rss_mib']['median']:.0f} MiB, "
                 f"sb3 {s['sb3']['peak_rss_mib']['median']:.0f} MiB", fontsize=9)
    ax = axes[1]
    b = payload["breakdown"]
    if b:
        d = b["tftrpo_collect_decomposition_ms"]
        t = b["tftrpo_profiled_median_ms"]
        sb3_env = b["sb3_dummy_vec_env_stepping_ms_same_steps_from_raw"]
        segs_tf = [("gymnasium/MuJoCo stepping", d["gymnasium_mujoco_stepping"], "tab:green"),
                   ("env wrappers (tftrpo py env / sb3 DummyVecEnv)", d["tftrpo_python_env_layer"], "yellowgreen"),
                   ("rollout loop: policy net, env calls, trajectory", d["rollout_loop_policy_and_env_calls"],
                    "tab:orange"),
                   ("train", t["train"], "tab:blue"),
                   (f"checkpoint save (every {b.get('checkpoint_interval', 1)} iterations, per iteration)",
                    t["checkpoint_save"], "tab:grey")]
        gym_sb3 = 1e3 * b["env_steps_per_iteration"] / payload["raw_stepping_steps_per_second"]["sb3:gym_single"]["median"]
        segs_sb = [("gymnasium/MuJoCo stepping", gym_sb3, "tab:green"),
                   ("env wrappers (tftrpo py env / sb3 DummyVecEnv)", max(0.0, sb3_env - gym_sb3), "yellowgreen"),
                   ("policy net, buffer, metrics", (b["sb3_median_collect_ms"] or 0) - max(sb3_env, gym_sb3),
                    "tab:orange"),
                   ("train", b["sb3_median_train_ms"] or 0, "tab:blue")]
        seen = set()
        for y, segs in ((1, segs_tf), (0, segs_sb)):
            left = 0.0
            total = sum(max(0.0, x[1]) for x in segs)
            for label, w, color in segs:
                w = max(0.0, w)
                ax.barh(y, w, left=left, color=color, edgecolor="white", height=0.6,
                        label=None if label in seen else label)
                seen.add(label)
                if w > 0.05 * total:
                    ax.text(left + w / 2, y, f"{w:.0f}", ha="center", va="center", fontsize=8)
                left += w
            ax.text(left, y, f" {left:.0f} ms", va="center", fontsize=8)
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["sb3-contrib\n(callback stamps;\nenv from raw runs)", "tftrpo\n(profiled run\n+ CLI rounds)"],
                           fontsize=8)
        ax.set_ylim(-0.6, 2.3)
        ax.set_xlabel(f"ms per iteration ({b['env_steps_per_iteration']} env steps), medians")
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        ax.set_title(f"where an iteration goes: raw env stepping = "
                     f"{100 * b['tftrpo_env_stepping_share_of_collect_raw_gym']:.0f}% of tftrpo's collection "
                     f"({100 * b['tftrpo_env_stepping_share_of_collect_py_batched_env']:.0f}% with its py env layer)",
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    v = payload["versions"]
    fig.suptitle(f"End-to-end TRPO training throughput, {ENV_ID}, rl-zoo3 settings, 1 thread: tftrpo "
                 f"{v['tftrpo']['tftrpo']} (TF {v['tftrpo']['tensorflow']}) vs sb3-contrib "
                 f"{v['sb3']['sb3_contrib']} (torch {v['sb3']['torch']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(payload, json_path, png_path):
    s, r = payload["summary"], payload["ratios"]
    print()
    print(f"{'':8s} {'steady steps/s min / median / max':>36s} {'process s':>10s} {'peak MiB':>9s} {'CPU/wall':>9s}")
    for lib in ("tftrpo", "sb3"):
        x = s[lib]["steady_steps_per_second"]
        print(f"{lib:8s} {x['min']:12,.0f} {x['median']:11,.0f} {x['max']:11,.0f} "
              f"{s[lib]['process_wall_s']['median']:10.1f} {s[lib]['peak_rss_mib']['median']:9.0f} "
              f"{s[lib]['cpu_over_wall']['median']:9.2f}")
    print()
    for k, v in payload["raw_stepping_steps_per_second"].items():
        print(f"raw {k:28s} median {v['median']:8,.0f} steps/s (min {v['min']:,.0f}, max {v['max']:,.0f})")
    print()
    for k, v in r.items():
        print(f"{k:58s} " + (f"{v:.3f}" if isinstance(v, float) else
                             f"median {v['median']:.3f} (min {v['min']:.3f}, max {v['max']:.3f})"))
    if payload["breakdown"]:
        print()
        print(json.dumps(payload["breakdown"], indent=1))
    print("\ntargets:", {k: ("met" if v["met"] else "NOT met") + f" ({v['measured']:.2f} vs {v['target']})"
                         for k, v in payload["targets"].items()})
    print(f"\nwrote {json_path}\nwrote {png_path}")


if __name__ == "__main__":
    sys.exit(main())
