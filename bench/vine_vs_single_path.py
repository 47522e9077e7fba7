"""Vine vs single-path TRPO at equal simulator steps (the paper's Figure 4 comparison).

    python bench/vine_vs_single_path.py --quick                    # CartPole-v1 only, ~5 min
    python bench/vine_vs_single_path.py --envs Swimmer-v5 Hopper-v5 --steps 300000 --seeds 0 1 2

Each (env, scheme, seed) is one `tftrpo-train` run with the same budget of simulator steps
(for vine: trunk plus branch steps), two runs at a time. Every finished run is written to
bench/results/vine/<env>-<scheme>-seed<seed>.json as it ends (a rerun skips those), and the
summary to bench/results/vine_vs_single_path.json plus a PNG of the learning curves.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from tftrpo.plotting import read_progress  # noqa: E402

RESULTS = os.path.join(HERE, "results")


def run_one(env_id, scheme, seed, steps, extra_args):
    out = os.path.join(RESULTS, "vine", f"{env_id.replace('/', '_')}-{scheme}-seed{seed}.json")
    if os.path.exists(out):
        with open(out) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "tftrpo.train", "--env", env_id, "--sampling", scheme, "--seed", str(seed),
               "--steps", str(steps), "--run-dir", run_dir, "--export-dir", os.path.join(tmp, "export"),
               "--no-progress", *extra_args]
        env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        rows = read_progress(os.path.join(run_dir, "progress.csv"))
        with open(os.path.join(tmp, "export", "tftrpo_run.json")) as f:
            final = json.load(f)
    result = {
        "env": env_id, "scheme": scheme, "seed": seed, "budget": steps, "command": " ".join(cmd[1:]),
        "final_eval_return": final["final_eval_return"], "wall_time_s": final["wall_time_s"],
        "curve": [[r["env_steps"], r["eval_return"]] for r in rows if r["eval_return"] is not None],
        "branch_steps": rows[-1]["branch_steps"], "trunk_steps": rows[-1]["trunk_steps"],
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{env_id:>14s} {scheme:>11s} seed {seed}: final eval {result['final_eval_return']:8.1f} "
          f"({result['wall_time_s']} s)", flush=True)
    return result


def summarize(results):
    summary = {}
    for r in results:
        entry = summary.setdefault(r["env"], {}).setdefault(r["scheme"], {"final": [], "area": []})
        curve = np.array(r["curve"], dtype=float)
        entry["final"].append(r["final_eval_return"])
        # Mean evaluation return over the run: rewards learning speed, not only the end point.
        entry["area"].append(float(curve[:, 1].mean()) if len(curve) else float("nan"))
    for env_id, schemes in summary.items():
        for scheme, entry in schemes.items():
            entry["final_mean"], entry["final_std"] = float(np.mean(entry["final"])), float(np.std(entry["final"]))
            entry["mean_eval_over_run"] = float(np.mean(entry["area"]))
    return summary


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in results})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for scheme, color in (("single_path", "tab:blue"), ("vine", "tab:orange")):
            for i, r in enumerate(x for x in results if x["env"] == env_id and x["scheme"] == scheme):
                curve = np.array(r["curve"], dtype=float)
                if len(curve):
                    ax.plot(curve[:, 0], curve[:, 1], color=color, alpha=0.8, label=scheme if i == 0 else None)
        ax.set_title(env_id)
        ax.set_xlabel("simulator steps")
        ax.set_ylabel("greedy evaluation return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="simulator steps per run (default: per env)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="CartPole-v1, 3 seeds, 40k steps")
    args = parser.parse_args()
    default_steps = {"CartPole-v1": 40_000, "Swimmer-v5": 300_000, "Hopper-v5": 300_000}
    # Flags per env and scheme: tftrpo-train refuses the --vine-* ones for single-path runs.
    vine_states = {"CartPole-v1": "32", "Swimmer-v5": "64", "Hopper-v5": "64"}
    evaluate = {"Swimmer-v5": ["--eval-interval", "5"], "Hopper-v5": ["--eval-interval", "5"]}

    def extra(env_id, scheme):
        states = ["--vine-states", vine_states[env_id]] if scheme == "vine" and env_id in vine_states else []
        return states + evaluate.get(env_id, [])

    envs = ["CartPole-v1"] if args.quick else args.envs
    jobs = [(e, s, seed, args.steps or default_steps.get(e, 300_000), extra(e, s))
            for e in envs for seed in args.seeds for s in ("single_path", "vine")]
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(lambda job: run_one(*job), jobs))
    results = []  # every finished run so far, from this and earlier invocations
    for name in sorted(os.listdir(os.path.join(RESULTS, "vine"))):
        with open(os.path.join(RESULTS, "vine", name)) as f:
            results.append(json.load(f))
    summary = summarize(results)
    out = {"what": "vine vs single-path TRPO at equal simulator steps; greedy evaluation returns",
           "machine": f"{os.cpu_count()} cores", "summary": summary, "runs": results}
    with open(os.path.join(RESULTS, "vine_vs_single_path.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(results, os.path.join(RESULTS, "vine_vs_single_path.png"))
    for env_id, schemes in summary.items():
        for scheme, entry in schemes.items():
            print(f"{env_id:>14s} {scheme:>11s}: final {entry['final_mean']:8.1f} ± {entry['final_std']:6.1f}   "
                  f"mean eval over run {entry['mean_eval_over_run']:8.1f}")


if __name__ == "__main__":
    main()
