#!/usr/bin/env python3
"""Two variants' runs of `bench/returns.py` on the same seeds: the mean difference and its p.

Per seed it takes each run's final 20-episode greedy evaluation, its area under the training
curve (the mean of its training-return curve over all iterations; the 20-episode window for both
libraries: sb3-contrib's `curve_last20` where its worker wrote one), the curve's last point (the
stochastic policy at the end) and the greedy evaluation's gain over that point. `--paired` is for two tftrpo
variants that differ only from the first update on: a seed's two runs share their start (initial
weights, first batch), so the per-seed differences are tested with a two-sided sign-flip test
(`returns.sign_flip_p_value`). Otherwise (two libraries) the two groups are compared with the
two-sided permutation test of the returns table (`returns.permutation_p_value`).

  python bench/experiments/compare_runs.py bench/results/returns_first_batch_100k --paired \\
      --env Hopper-v5 --a tftrpo-primeobs --b tftrpo --out bench/results/first_batch_100k
  # → bench/results/first_batch_100k.json and .png

Several run directories may be given (runs of one variant kept apart from another's); a run of
the same task, variant and seed in two of them is refused.
"""
import argparse
import functools
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import returns  # noqa: E402
from common import box_strip_plot, write_json  # noqa: E402

MEASURES = {"curve_mean": "mean training return over the run (area under the curve)",
            "final_eval_mean": "final 20-episode greedy evaluation",
            "final_train": "training return (last 20 episodes) after the last iteration",
            "greedy_gain": "greedy evaluation minus the last training return"}


def curve(run) -> np.ndarray:
    """The run's training-return curve, [steps, mean of the last 20 episodes] per iteration."""
    if run.get("variant", "sb3") == "sb3" and "curve_last20" not in run:
        raise ValueError(f"compare_runs: sb3-contrib run seed {run['seed']} has no curve_last20 "
                         "(made before its worker recorded one); its curve's 100-episode window is not comparable")
    return np.asarray(run.get("curve_last20", run["curve"]), dtype=float)


def curve_mean(run) -> float:
    """Mean of the run's training-return curve: the area under it over its steps."""
    return float(np.mean(curve(run)[:, 1]))


def curve_at(run, iteration) -> float:
    """The training return (last 20 episodes) after the run's `iteration`-th batch, 1-based."""
    return float(curve(run)[iteration - 1, 1])


def final_eval(run) -> float:
    """The greedy policy's 20-episode evaluation at the end of the run."""
    return float(run["final_eval_mean"])


def final_train(run) -> float:
    """The stochastic collect policy's return at the end: the curve's last point (last 20 episodes)."""
    return float(curve(run)[-1, 1])


def greedy_gain(run) -> float:
    """How much the greedy policy (the distribution's mode) scores above the stochastic one at the end."""
    return final_eval(run) - final_train(run)


# Each measure's value of one run.
MEASURE_VALUES = {"curve_mean": curve_mean, "final_eval_mean": final_eval,
                  "final_train": final_train, "greedy_gain": greedy_gain}


def load_run_dirs(run_dirs):
    """The runs of every directory in `run_dirs`; a (task, variant, seed) found twice is an error."""
    runs, where = [], {}
    for run_dir in run_dirs:
        for run in returns.load_runs(run_dir):
            key = (run["env"], returns.variant_of(run), run["seed"])
            if key in where:
                raise ValueError(f"compare_runs: {key[1]} seed {key[2]} on {key[0]} is in both {where[key]} "
                                 f"and {run_dir}")
            where[key] = run_dir
            runs.append(run)
    return runs


def paired_runs(runs, env_id, a, b):
    """{seed: (run of a, run of b)} for the seeds both variants have finished on env_id."""
    by = {}
    for run in runs:
        if run["env"] == env_id:
            by.setdefault(returns.variant_of(run), {})[run["seed"]] = run
    seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
    return {s: (by[a][s], by[b][s]) for s in seeds}


def per_seed(pairs, value):
    """(values of a, values of b) over the pairs' seeds."""
    return [value(ra) for ra, _ in pairs.values()], [value(rb) for _, rb in pairs.values()]


def difference(a, b, paired) -> dict:
    """The mean difference a − b of per-seed values, its p (sign-flip if `paired`, else
    permutation), and the effect size: the difference over the standard deviation of the paired
    differences if `paired`, else of the runs of both (`returns.standardised_difference`)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    if paired:
        effect = float(d.mean() / d.std(ddof=1)) if len(d) > 1 and d.std() > 0 else 0.0
        p = returns.sign_flip_p_value(d)
    else:
        effect = returns.standardised_difference(a, b)[2]
        p = returns.permutation_p_value(a, b)
    return {"a": a.round(2).tolist(), "b": b.round(2).tolist(), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "mean_difference": float(d.mean()), "a_higher": int((d > 0).sum()), "effect_size": effect,
            "test": "sign-flip" if paired else "permutation", "p": p}


def compare(pairs, paired, iterations=()):
    """`difference` for each of MEASURES, and for the training return after each of `iterations`."""
    measures = dict(MEASURE_VALUES)
    whats = dict(MEASURES)
    for iteration in iterations:
        measures[f"curve_at_{iteration}"] = functools.partial(curve_at, iteration=iteration)
        whats[f"curve_at_{iteration}"] = f"training return (last 20 episodes) after iteration {iteration}"
    return {name: {"what": whats[name], **difference(*per_seed(pairs, value), paired)}
            for name, value in measures.items()}


def pooled(runs, envs, a, b):
    """Per measure, `returns.pooled_permutation_test` over `envs` (two libraries, unpaired): the mean
    over tasks of each task's standardised difference a − b, and its within-task permutation p."""
    tasks = {env: paired_runs(runs, env, a, b) for env in envs}
    result = {"tasks": {env: sorted(pairs) for env, pairs in tasks.items()}}
    for name, value in MEASURE_VALUES.items():
        values = [per_seed(pairs, value) for pairs in tasks.values()]
        statistic, p = returns.pooled_permutation_test(values)
        result[name] = {"what": MEASURES[name], "per_task": {env: returns.standardised_difference(*v)[2]
                                                             for env, v in zip(envs, values)},
                        "pooled_standardised_difference": statistic, "p": p}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="+", help="directories of run JSONs (read together)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--env")
    where.add_argument("--pooled", nargs="+", metavar="ENV",
                       help="unpaired only: the pooled test over these tasks (writes OUT.json, no plot)")
    parser.add_argument("--a", required=True, help="variant whose minus the other's is reported")
    parser.add_argument("--b", required=True)
    parser.add_argument("--paired", action="store_true", help="a seed's two runs share their start (sign-flip test)")
    parser.add_argument("--iterations", nargs="*", type=int, default=[],
                        help="also compare the training return after these iterations (1-based)")
    parser.add_argument("--out", required=True, help="writes OUT.json and OUT.png")
    args = parser.parse_args()
    try:
        runs = load_run_dirs(args.run_dir)
    except ValueError as e:
        sys.exit(str(e))
    # One directory is written as a string, as before; several as a list.
    run_dir = [os.path.relpath(d) for d in args.run_dir]
    run_dir = run_dir[0] if len(run_dir) == 1 else run_dir
    if args.pooled:
        if args.paired or args.iterations:
            parser.error("--pooled is for two libraries' runs: no --paired or --iterations")
        result = pooled(runs, args.pooled, args.a, args.b)
        write_json(args.out + ".json", {"a": args.a, "b": args.b, "run_dir": run_dir, **result})
        for m in MEASURES:
            r = result[m]
            print(f"{r['what']}: pooled standardised difference {r['pooled_standardised_difference']:+.3f}, "
                  f"p {r['p']:.3f} (per task {', '.join(f'{e} {d:+.2f}' for e, d in r['per_task'].items())})")
        return
    pairs = paired_runs(runs, args.env, args.a, args.b)
    if not pairs:
        sys.exit(f"compare_runs: no seed has runs of both {args.a} and {args.b} on {args.env} in {' '.join(args.run_dir)}")
    steps = sorted({r["steps"] for pair in pairs.values() for r in pair})
    result = compare(pairs, args.paired, args.iterations)
    write_json(args.out + ".json", {"env": args.env, "a": args.a, "b": args.b, "steps": steps,
                                    "paired": args.paired, "seeds": list(pairs), "run_dir": run_dir, **result})
    box_strip_plot(args.out + ".png",
                   [(f"{result[m]['what']}\n(p {result[m]['p']:.3f})",
                     [(args.a, result[m]["a"]), (args.b, result[m]["b"])]) for m in MEASURES],
                   f"{args.env}, {steps[-1]:,} steps, {len(pairs)} seeds{' paired' if args.paired else ''}", "return")
    for m in result:
        r = result[m]
        print(f"{r['what']}: {args.a} {r['mean_a']:.1f}, {args.b} {r['mean_b']:.1f}, "
              f"difference {r['mean_difference']:+.1f} (a higher on {r['a_higher']} of {len(pairs)}), "
              f"effect size {r['effect_size']:+.2f}, {r['test']} p {r['p']:.3f}")


if __name__ == "__main__":
    main()
