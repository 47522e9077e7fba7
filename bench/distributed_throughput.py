#!/usr/bin/env python3
"""Training throughput of distributed collection (Reverb actors) against the local loop.

Both train Hopper-v5 with the preset on the same batch layout, 4 rows of 1024 steps per
update, and both are run as a user would, with their default thread pools:

  local        `python -m tftrpo.train --env Hopper-v5 --num-envs 4` (one process steps the
               4 envs, then trains);
  distributed  `python examples/train_distributed.py --env Hopper-v5 --actors 2` (a learner
               process with the Reverb server and two actor processes of 2 envs each: the
               actors collect at the same time, the learner trains while they wait).

Rounds alternate the two (A B, then B A, ...). Steady-state throughput: updates per second
from the end of update 2 to the end of the second-to-last update (the first updates hold the
traces and XLA compiles, the last one the final evaluation); with the same 4 x 1024 slots per
update, updates per second compare the two directly (x 4096 is slots per second).

  python bench/distributed_throughput.py [--rounds 3] [--updates 30]

Writes bench/results/distributed_throughput.json and .png.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SLOTS_PER_UPDATE = 4 * 1024


def steady_rate(seconds_at_update):
    """Updates per second between the end of update 2 and the end of the second-to-last one."""
    updates = sorted(seconds_at_update)
    first, last = updates[1], updates[-2]
    return (last - first) / (seconds_at_update[last] - seconds_at_update[first])


def run_local(python, updates, seed, tmp):
    run_dir = os.path.join(tmp, "local")
    started = time.time()
    subprocess.run([python, "-m", "tftrpo.train", "--env", "Hopper-v5", "--num-envs", "4", "--steps",
                    str(updates * SLOTS_PER_UPDATE), "--seed", str(seed), "--no-progress", "--eval-interval",
                    "1000000", "--run-dir", run_dir, "--export-dir", os.path.join(tmp, "local_export")],
                   check=True, cwd=common.REPO_ROOT, capture_output=True, text=True)
    wall = time.time() - started
    with open(os.path.join(run_dir, "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    return steady_rate({int(r["iteration"]): float(r["wall_time"]) for r in rows}), len(rows), wall


def run_distributed(python, updates, seed, tmp):
    root = os.path.join(tmp, "distributed")
    started = time.time()
    subprocess.run([python, os.path.join(common.REPO_ROOT, "examples", "train_distributed.py"), "--env",
                    "Hopper-v5", "--actors", "2", "--iterations", str(updates), "--seed", str(seed),
                    "--eval-interval", "1000000", "--root-dir", root, "--export-dir",
                    os.path.join(tmp, "distributed_export")],
                   check=True, cwd=common.REPO_ROOT, capture_output=True, text=True)
    wall = time.time() - started
    with open(os.path.join(root, f"Hopper-v5-seed{seed}", "summary.json")) as f:
        history = json.load(f)["history"]
    return steady_rate({row["update"]: row["seconds"] for row in history}), len(history), wall


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=30, help="updates per run (>= 4)")
    parser.add_argument("--python", default=common.DEFAULT_TF_PYTHON)
    args = parser.parse_args()
    if args.updates < 4:
        parser.error("--updates must be >= 4")
    runs = {"local": run_local, "distributed": run_distributed}
    rates = {name: [] for name in runs}
    walls = {name: [] for name in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                rate, done, wall = runs[name](args.python, args.updates, r, tmp)
            assert done == args.updates, (name, done)
            rates[name].append(rate)
            walls[name].append(wall)
            print(f"round {r} {name:11s}: {rate:.2f} updates/s ({rate * SLOTS_PER_UPDATE:.0f} slots/s), "
                  f"whole run {wall:.0f} s", flush=True)
    ratio = [d / l for d, l in zip(rates["distributed"], rates["local"])]
    print(f"distributed / local, per round: median {statistics.median(ratio):.2f} "
          f"(min {min(ratio):.2f}, max {max(ratio):.2f})")
    out = os.path.join(common.RESULTS_DIR, "distributed_throughput")
    common.write_json(out + ".json", {
        "benchmark": "distributed_throughput", "env": "Hopper-v5", "rows_per_update": 4, "steps_per_env": 1024,
        "updates_per_run": args.updates, "rounds": args.rounds, "machine": common.machine_info(),
        "git": common.git_info(), "updates_per_second": {k: common.summary(v) for k, v in rates.items()},
        "distributed_over_local_per_round": common.summary(ratio), "whole_run_seconds": walls,
        "updates_per_second_by_round": rates})
    common.box_strip_plot(out + ".png", [
        ("steady updates/s (4 x 1024 slots each)", [(k, v) for k, v in rates.items()]),
        ("distributed / local, per round", [("ratio", ratio)])],
        f"Hopper-v5: 2 Reverb actors vs the local loop ({args.rounds} rounds, median "
        f"{statistics.median(ratio):.2f}x)", "")
    print(f"wrote {out}.json, .png")


if __name__ == "__main__":
    main()
