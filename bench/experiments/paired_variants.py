#!/usr/bin/env python3
"""Paired comparison of two tftrpo variants run on the same seeds by `bench/returns.py`.

A seed's runs of two variants that differ only from the first update on share their start
(initial weights, first batch), so their difference per seed is the paired measure. Per seed, it
takes each run's area under its training curve (the mean of its training-return curve over all
iterations) and its final 20-episode greedy evaluation, and tests the mean paired difference of
each with a two-sided sign-flip permutation test (`returns.sign_flip_p_value`).

  python bench/experiments/paired_variants.py bench/results/returns_first_batch_100k \\
      --env Hopper-v5 --a tftrpo-primeobs --b tftrpo --out bench/results/first_batch_100k
  # → bench/results/first_batch_100k.json and .png
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import returns  # noqa: E402
from common import box_strip_plot, write_json  # noqa: E402

MEASURES = {"curve_mean": "mean training return over the run (area under the curve)",
            "final_eval_mean": "final 20-episode greedy evaluation"}


def curve_mean(run) -> float:
    return float(np.mean(np.asarray(run["curve"], dtype=float)[:, 1]))


def paired_runs(run_dir, env_id, a, b):
    """{seed: (run of a, run of b)} for the seeds both variants have finished on env_id."""
    by = {}
    for name in sorted(os.listdir(run_dir)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(run_dir, name)) as f:
            run = json.load(f)
        if run["env"] == env_id:
            by.setdefault(returns.variant_of(run), {})[run["seed"]] = run
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    return {s: (by[a][s], by[b][s]) for s in seeds}


def compare(pairs):
    """Per measure: the per-seed values, the mean paired difference a − b, its sign-flip p, and
    the difference over the standard deviation of the paired differences."""
    result = {}
    for measure in MEASURES:
        value = curve_mean if measure == "curve_mean" else (lambda run: float(run[measure]))
        a = np.array([value(ra) for ra, _ in pairs.values()])
        b = np.array([value(rb) for _, rb in pairs.values()])
        d = a - b
        result[measure] = {"what": MEASURES[measure], "a": a.round(2).tolist(), "b": b.round(2).tolist(),
                           "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                           "mean_difference": float(d.mean()), "a_higher": int((d > 0).sum()),
                           "effect_size": float(d.mean() / d.std(ddof=1)) if len(d) > 1 and d.std() > 0 else 0.0,
                           "sign_flip_p": returns.sign_flip_p_value(d)}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--env", required=True)
    parser.add_argument("--a", required=True, help="variant whose minus the other's is reported")
    parser.add_argument("--b", required=True)
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.png")
    args = parser.parse_args()
    pairs = paired_runs(args.run_dir, args.env, args.a, args.b)
    if not pairs:
        sys.exit(f"paired_variants: no seed has runs of both {args.a} and {args.b} on {args.env} in {args.run_dir}")
    steps = sorted({r["steps"] for pair in pairs.values() for r in pair})
    result = compare(pairs)
    write_json(args.out + ".json", {"env": args.env, "a": args.a, "b": args.b, "steps": steps,
                                    "seeds": list(pairs), "run_dir": os.path.relpath(args.run_dir), **result})
    box_strip_plot(args.out + ".png",
                   [(f"{result[m]['what']}\n(p {result[m]['sign_flip_p']:.3f})",
                     [(args.a, result[m]["a"]), (args.b, result[m]["b"])]) for m in MEASURES],
                   f"{args.env}, {steps[-1]:,} steps, {len(pairs)} seeds paired", "return")
    for m in MEASURES:
        r = result[m]
        print(f"{r['what']}: {args.a} {r['mean_a']:.1f}, {args.b} {r['mean_b']:.1f}, "
              f"difference {r['mean_difference']:+.1f} (a higher on {r['a_higher']} of {len(pairs)}), "
              f"effect size {r['effect_size']:+.2f}, sign-flip p {r['sign_flip_p']:.3f}")


if __name__ == "__main__":
    main()
