#!/usr/bin/env python3
"""Where the peak resident memory of training goes: tftrpo vs sb3-contrib's TRPO (issue 5, item 5).

`throughput.py` measures each library's peak RSS over a whole training run (tftrpo about 2x
sb3-contrib's). This script splits it, each number the peak RSS (`ru_maxrss` from `os.wait4`)
of a fresh child process:

  framework   importing the framework alone: `import tensorflow` / `import torch`
  stack       importing everything a training run imports (framework, TFP, TF-Agents, tftrpo's
              CLI, Gymnasium, MuJoCo / torch, sb3-contrib, Gymnasium, MuJoCo), nothing run
  train       a real training run of `--steps` on Hopper-v5 with rl-zoo3's settings:
              `tftrpo-train` (TensorBoard, checkpoints, final evaluation and SavedModel export
              included) and sb3-contrib's `learn` (throughput.py's two runners)
  train, no XLA   tftrpo only: the same run with `tftrpo-train --no-jit-compile`

Training's own share is `train - stack`. Rounds alternate the libraries' order (A B, B A, ...);
the summary is per-measurement min / median / max over rounds, and ratios of medians.

  python bench/memory.py              # 3 rounds, 20480 training steps per run, ~4 min
  python bench/memory.py --quick      # 1 round, 4096 steps, ~1 min
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import throughput  # noqa: E402

IMPORTS = {
    "tftrpo": {
        "framework": "import tensorflow",
        "stack": ("import tensorflow, tensorflow_probability, gymnasium, mujoco\n"
                  "from tf_agents.drivers import dynamic_episode_driver\n"
                  "from tf_agents.environments import tf_py_environment\n"
                  "from tf_agents.metrics import tf_metrics\n"
                  "from tf_agents.policies import policy_saver\n"
                  "import tftrpo.train, tftrpo.agent, tftrpo.envs, tftrpo.plotting, tftrpo.sampling.single_path"),
    },
    "sb3": {
        "framework": "import torch",
        "stack": ("import torch, gymnasium, mujoco, stable_baselines3, sb3_contrib\n"
                  "from stable_baselines3.common.vec_env import VecNormalize"),
    },
}
# In the order each round runs them; sb3-contrib has no XLA switch, so no "train_no_xla".
ORDER = ("framework", "stack", "train", "train_no_xla")
MEASUREMENTS = {"tftrpo": ORDER, "sb3": ORDER[:3]}


def measure(lib, what, args, env, log_dir, tag):
    """Peak RSS (MiB) and wall seconds of one child process."""
    if what in ("framework", "stack"):
        python = args.tf_python if lib == "tftrpo" else args.sb3_python
        res = common.run_child([python, "-c", IMPORTS[lib][what]], env, os.path.join(log_dir, f"{tag}.log"),
                               args.child_timeout)
    elif lib == "sb3":
        res = throughput.run_sb3(args, env, args.steps, args.seed, log_dir, tag)
    else:
        extra = ["--no-jit-compile"] if what == "train_no_xla" else []
        res = throughput.run_tftrpo(args, env, args.steps, args.seed, log_dir, tag, extra_cli=extra)
    return {"peak_rss_mib": res["peak_rss_mib"], "process_wall_s": res["process_wall_s"],
            "first_iteration_s": res.get("first_iteration_s")}


def build_summary(rounds_log):
    """Per-measurement summaries over rounds, training's share (train - stack) and the ratios."""
    def values(key, field="peak_rss_mib"):
        return [r[key][field] for r in rounds_log if key in r]

    keys = [f"{lib}:{m}" for lib, ms in MEASUREMENTS.items() for m in ms]
    summary = {k: common.summary(values(k)) for k in keys}
    for lib in MEASUREMENTS:
        summary[f"{lib}:train - stack"] = common.summary(
            [r[f"{lib}:train"]["peak_rss_mib"] - r[f"{lib}:stack"]["peak_rss_mib"] for r in rounds_log])
    summary["tftrpo:train - train_no_xla"] = common.summary(
        [r["tftrpo:train"]["peak_rss_mib"] - r["tftrpo:train_no_xla"]["peak_rss_mib"] for r in rounds_log])
    first = {k: common.summary(values(k, "first_iteration_s")) for k in ("tftrpo:train", "tftrpo:train_no_xla")}
    med = {k: v["median"] for k, v in summary.items()}
    ratios = {f"tftrpo / sb3, {m}": med[f"tftrpo:{m}"] / med[f"sb3:{m}"]
              for m in ("framework", "stack", "train", "train - stack")}
    gap = med["tftrpo:train"] - med["sb3:train"]
    shares = {"stack gap / train gap": (med["tftrpo:stack"] - med["sb3:stack"]) / gap if gap else None,
              "train gap MiB": gap}
    return summary, first, ratios, shares


def plot(path, summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["framework import", "stack import", "training run", "training run, no XLA"]  # of ORDER
    keys = ORDER
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for i, (lib, color) in enumerate((("tftrpo", "tab:blue"), ("sb3", "tab:orange"))):
        xs, ys, lo, hi = [], [], [], []
        for j, k in enumerate(keys):
            s = summary.get(f"{lib}:{k}")
            if not s or not s.get("n"):
                continue
            xs.append(j + (i - 0.5) * width)
            ys.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], color=color, label="tftrpo" if lib == "tftrpo" else "sb3-contrib")
        for x, y in zip(xs, ys):
            ax.text(x, y + 8, f"{y:.0f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("peak RSS, MiB (median, min-max bars)")
    ax.set_title("Peak RSS of fresh processes: imports vs a Hopper-v5 training run", fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 4096 training steps")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per training run (default 20480)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tf-python", default=common.DEFAULT_TF_PYTHON)
    parser.add_argument("--sb3-python", default=common.DEFAULT_SB3_PYTHON)
    parser.add_argument("--tftrpo-path", default=None, help="directory holding tftrpo (default: a snapshot of the repo's)")
    parser.add_argument("--child-timeout", type=int, default=1800)
    parser.add_argument("--name", default=None, help="results name (default memory[_quick])")
    args = parser.parse_args(argv)
    args.steps = args.steps or (4096 if args.quick else 20480)
    args.threads, args.numpy_policy = 1, True  # what throughput.py's runners read
    rounds = args.rounds or (1 if args.quick else 3)
    name = args.name or ("memory_quick" if args.quick else "memory")
    if not os.path.exists(args.sb3_python):
        parser.error(f"sb3 venv python {args.sb3_python} not found (bash bench/setup_sb3_env.sh creates it)")

    started = time.time()
    tftrpo_path = args.tftrpo_path or common.snapshot_tftrpo()
    env = dict(os.environ)
    env.update(common.bench_env(1, tftrpo_path))
    log_dir = os.path.join(common.RESULTS_DIR, "logs", name)
    os.makedirs(log_dir, exist_ok=True)
    rounds_log = []
    for r in range(rounds):
        order = ("tftrpo", "sb3") if r % 2 == 0 else ("sb3", "tftrpo")
        entry = {"round": r, "order": list(order)}
        for what in ORDER:
            for lib in order:
                if what in MEASUREMENTS[lib]:
                    entry[f"{lib}:{what}"] = measure(lib, what, args, env, log_dir, f"r{r}-{lib}-{what}")
        rounds_log.append(entry)
        print(f"round {r + 1}/{rounds}  " + "  ".join(
            f"{k} {v['peak_rss_mib']:.0f} MiB" for k, v in entry.items() if isinstance(v, dict)), flush=True)

    summary, first_iteration, ratios, shares = build_summary(rounds_log)
    payload = {
        "benchmark": "memory",
        "description": "peak resident memory (MiB) of fresh processes: imports alone and Hopper-v5 training runs",
        **common.provenance(tftrpo_path, not args.tftrpo_path),
        "settings": {**throughput.SETTINGS, "steps": args.steps, "rounds": rounds, "seed": args.seed,
                     "threads": 1, "imports": IMPORTS},
        "summary_peak_rss_mib": summary,
        "tftrpo_first_iteration_s": first_iteration,
        "ratios_of_medians": ratios,
        "gap": shares,
        "rounds": rounds_log,
        "wall_seconds": time.time() - started,
    }
    json_path, png_path = common.result_paths(name)
    common.write_json(json_path, payload)
    plot(png_path, summary)
    med = {k: v["median"] for k, v in summary.items()}
    print(f"\npeak RSS, median of {rounds} rounds (MiB):   tftrpo   sb3-contrib")
    for m in ("framework", "stack", "train", "train - stack"):
        print(f"  {m:<28} {med[f'tftrpo:{m}']:8.0f} {med[f'sb3:{m}']:11.0f}   ratio {ratios[f'tftrpo / sb3, {m}']:.2f}")
    print(f"  {'train, no XLA':<28} {med['tftrpo:train_no_xla']:8.0f}")
    print(f"of the {shares['train gap MiB']:.0f} MiB training gap, {100 * shares['stack gap / train gap']:.0f}% is "
          f"the imports; XLA adds {med['tftrpo:train - train_no_xla']:.0f} MiB; first iteration "
          f"{first_iteration['tftrpo:train']['median']:.1f} s with XLA, "
          f"{first_iteration['tftrpo:train_no_xla']['median']:.1f} s without")
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
