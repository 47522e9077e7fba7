"""Returns after 1M steps, tftrpo vs sb3-contrib TRPO, rl-zoo3 MuJoCo settings (issue 5, item 4).

    python bench/returns.py                                    # all 4 tasks x 3 seeds x 4 variants
    python bench/returns.py --envs Hopper-v5 --seeds 0         # a part of it
    python bench/returns.py --variants tftrpo sb3              # the two libraries only
    python bench/returns.py --report                           # only rebuild the table and plot

Each run is written to bench/results/returns/<variant>-<env>-seed<seed>.json as soon as it ends
and skipped when the script runs again, so the full table (hours on 2 cores) can be finished
across sessions. All runs: 2 envs x 1024 steps per iteration, observation and reward
normalisation, CG 25, damping 0.1, 20 critic epochs, delta 0.01 (HalfCheetah 0.04), gamma 0.99
(Swimmer 0.9999), one thread; the final score is a 20-episode greedy evaluation. δ and the damping
λ are rl-zoo3's numbers, which sb3-contrib applies to its Gaussian KL averaged over the d action
dimensions.

The variants:
  tftrpo          `tftrpo-train`'s preset as is: the same trust region as sb3-contrib's, in the
                  paper's units max_kl = d·δ, cg_damping = d·λ (`tftrpo.presets.rl_zoo3_trust_region`),
                  collecting with the NumPy mirror of the policy (the CLI's default). Since stop 25
                  the preset adds each batch to the observation statistics before its update; its
                  1M runs were made as `tftrpo-statsfirst` and relabelled `tftrpo` (see their "note").
  tftrpo-statsafter  the preset before stop 25: `--no-observation-statistics-before-update`, each
                  batch added after its update. Its runs were made as `tftrpo` and relabelled. The
                  other variants below were all run with that order and keep it (`STATS_AFTER`).
  tftrpo-statsfirst  `--observation-statistics-before-update`: stop 25's test of that order (the
                  100k runs of bench/README); the same as the preset since.
  tftrpo-tfloop   the same with `--no-numpy-policy`: the TF policy in the compiled collection loop
                  (the CLI's only collector until the NumPy mirror; those runs were made as
                  `tftrpo` and relabelled, see their "note").
  tftrpo-paperkl  `tftrpo-train --max-kl δ --cg-damping λ`: rl-zoo3's numbers taken as the paper's
                  D̄_KL of the whole action distribution, a d times smaller trust region (the
                  preset until the units were found out).
  tftrpo-tfainit  the preset with TF-Agents' output-layer init and Keras' Adam epsilon, the
                  library's defaults before stop 15: `--policy-output-gain 0.1 --value-output-gain 0
                  --value-adam-epsilon 1e-7` (the preset now: sb3-contrib's 0.01, an orthogonal
                  value head of gain 1, 1e-5). Those runs were made as `tftrpo` and relabelled, and
                  the preset's runs from then on were made as the variant `tftrpo-sb3init` (the
                  same flags as the new defaults) and relabelled `tftrpo`; see their "note".
  tftrpo-sharedinit  the `tftrpo` runs made before the hidden-layer init fix (commit 8363502: a
                  shared Keras `Orthogonal` made each hidden layer's draw the start of the next's),
                  relabelled (see their "note"). Historical: no flag reproduces it, so it is never
                  run; its code is any commit before 8363502 (the "git" of each JSON).
  tftrpo-oldrng   the preset's seeds 0-2, as first run (commit 95e64eb, stop 25): the same
                  algorithm and flags, but made before exact resume (commit fab9bc3) changed which
                  random numbers a run draws (stateless minibatch orders, evaluations seeded per
                  iteration), so today's code does not repeat them. Relabelled when seeds 0-2 were
                  rerun on today's code (declared in bench/README, 2026-12-06; see their "note").
                  Historical: never run.
  tftrpo-primeobs  stop 23's test: only the first batch joins the statistics before its update.
  tftrpo-cg100    the preset with `--cg-iters 100`: a near-converged CG solve instead of
                  rl-zoo3's 25 iterations. A diagnostic, not a matched setting: it asks whether
                  late-training CG convergence moves the returns (bench/README, stop 22). Run only
                  when named in --variants.
  sb3             sb3-contrib's TRPO (`workers/sb3_returns_worker.py`, its own venv).

`tftrpo-tfloop`, `tftrpo-paperkl` and `tftrpo-tfainit` were run before the init fix.

    python bench/returns.py --report --readme README.md bench/README.md   # also rewrite the READMEs' tables

`--report` prints six tables: per variant, the final greedy returns; the issue's target per task
(over seeds 0-2 and over every seed both libraries have), for the two libraries and again with a
column per variant; the pooled test over the tasks (the mean
standardised difference, p from relabellings within each task); the chance that a fresh 3-seed
comparison meets the target; and each run's exploration noise.
"""
import argparse
import concurrent.futures
import functools
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import git_info, snapshot_tftrpo  # noqa: E402
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # tftrpo, imported where needed (it loads TensorFlow)
OUT = os.path.join(HERE, "results", "returns")
ENVS = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Swimmer-v5"]
VARIANTS = ("tftrpo", "tftrpo-oldrng", "tftrpo-statsafter", "tftrpo-sharedinit", "tftrpo-tfloop", "tftrpo-paperkl", "tftrpo-tfainit",
            "tftrpo-cg100", "tftrpo-primeobs", "tftrpo-statsfirst", "sb3")
LABELS = {"tftrpo": "tftrpo", "tftrpo-oldrng": "tftrpo, random streams before exact resume (seeds 0-2's first draw)",
          "tftrpo-statsafter": "tftrpo, statistics after each update (the preset before stop 25)",
          "tftrpo-sharedinit": "tftrpo, before the init fix",
          "tftrpo-tfloop": "tftrpo, TF-loop collection", "tftrpo-paperkl": "tftrpo, δ on the whole KL",
          "tftrpo-tfainit": "tftrpo, TF-Agents' init", "tftrpo-cg100": "tftrpo, CG 100 (diagnostic)",
          "tftrpo-primeobs": "tftrpo, first batch normalised (diagnostic)",
          "tftrpo-statsfirst": "tftrpo, each batch in its statistics before its update (stop 25's test; the preset since)",
          "sb3": "sb3-contrib"}
# Variants that are a record of earlier code, not something this code can run.
HISTORICAL = {"tftrpo-sharedinit": "the commits before 8363502 (the hidden-layer init fix)",
              "tftrpo-oldrng": "the commits before fab9bc3 (exact resume), whose runs drew other random numbers"}
# Variants that answer one question, or that record an earlier preset beside the current one:
# run only when named in --variants.
DIAGNOSTIC = {"tftrpo-statsafter", "tftrpo-cg100", "tftrpo-primeobs", "tftrpo-statsfirst"}
# The preset until stop 25 added each batch to the observation statistics after its update; the
# variants run before then keep that order, so that they still run what their JSONs record.
STATS_AFTER = ["--no-observation-statistics-before-update"]
# The flags of each tftrpo variant on top of the preset (tftrpo-paperkl's trust region is added from
# paper_trust_region).
VARIANT_FLAGS = {"tftrpo": [], "tftrpo-statsafter": STATS_AFTER, "tftrpo-paperkl": STATS_AFTER, "tftrpo-tfloop": STATS_AFTER + ["--no-numpy-policy"],
                 "tftrpo-tfainit": STATS_AFTER + ["--policy-output-gain", "0.1", "--value-output-gain", "0",
                                                  "--value-adam-epsilon", "1e-7"],
                 "tftrpo-cg100": STATS_AFTER + ["--cg-iters", "100"],
                 "tftrpo-primeobs": STATS_AFTER + ["--prime-observation-normalizer"],
                 "tftrpo-statsfirst": ["--observation-statistics-before-update"]}
TF_EVAL = ("import sys, json, numpy as np; from tftrpo.play import load_policy, run_episodes; "
           "from tftrpo.envs import load; r = run_episodes(load_policy(sys.argv[1]), load(sys.argv[2], seed=int(sys.argv[3])), 20); "
           "print(json.dumps(r))")


def paper_trust_region(env_id):
    """(max_kl, cg_damping) = rl-zoo3's (δ, λ) taken as the paper's whole-distribution KL.

    The preset uses (d·δ, d·λ): sb3-contrib's `kl_divergence(...).mean()` averages torch's
    per-dimension Normal KL over states *and* the d action dimensions, so it bounds D̄_KL/d ≤ δ
    and damps F/d; that is the paper's step with d·δ and d·λ (equal gᵀs to 7 digits on a real
    sb3 batch, bench/experiments/sb3_trust_region.py). This variant keeps the stated numbers.
    """
    from tftrpo.presets import rl_zoo3_trust_region

    delta, damping, _ = rl_zoo3_trust_region(env_id)
    return delta, damping


# per-iteration columns of progress.csv kept in each tftrpo run's JSON, to look into a run afterwards
DIAGNOSTICS = ("kl", "surrogate_improvement", "line_search_backtracks", "step_rejected", "entropy", "value_loss",
               "explained_variance")


def run_tftrpo(env_id, seed, steps, python, variant="tftrpo"):
    extra = list(VARIANT_FLAGS[variant])
    if variant == "tftrpo-paperkl":
        max_kl, damping = paper_trust_region(env_id)
        extra += ["--max-kl", repr(max_kl), "--cg-damping", repr(damping)]
    source = git_info()  # the library this run trains with (taken before it starts)
    with tempfile.TemporaryDirectory() as tmp:
        # The run imports a copy of tftrpo/ taken now: edits to the working tree during a
        # run (lanes run for hours) cannot reach it, so `source` describes what it trained with.
        env = {**os.environ, "PYTHONPATH": snapshot_tftrpo(dest=os.path.join(tmp, "library")),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        cmd = [python, "-m", "tftrpo.train", "--threads", "1", "--env", env_id, "--seed", str(seed), "--steps", str(steps),
               "--run-dir", os.path.join(tmp, "run"), "--export-dir", os.path.join(tmp, "export"), "--no-progress", *extra]
        subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True, text=True)
        evaluation = subprocess.run([python, "-c", TF_EVAL, os.path.join(tmp, "export"), env_id, str(seed + 10_000)],
                                    cwd=tmp, env=env, check=True, capture_output=True, text=True)
        returns = json.loads(evaluation.stdout.strip().splitlines()[-1])
        from tftrpo.plotting import read_progress

        rows = read_progress(os.path.join(tmp, "run", "progress.csv"))
        with open(os.path.join(tmp, "export", "tftrpo_run.json")) as f:
            meta = json.load(f)
    return {"library": LABELS[variant], "variant": variant, "env": env_id, "seed": seed, "steps": steps, "config": meta["config"],
            "train_time_s": meta["wall_time_s"], "eval_returns": returns, "git": source,
            "final_eval_mean": float(np.mean(returns)), "final_eval_std": float(np.std(returns)),
            "curve": [[r["env_steps"], r["train_return"]] for r in rows],
            "diagnostics": {key: [r.get(key) for r in rows] for key in DIAGNOSTICS}}


def run_one(library, env_id, seed, steps, tf_python, sb3_python):
    path = os.path.join(OUT, f"{library}-{env_id}-seed{seed}.json")
    if os.path.exists(path):
        return
    os.makedirs(OUT, exist_ok=True)
    if library.startswith("tftrpo"):
        result = run_tftrpo(env_id, seed, steps, tf_python, library)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    else:
        subprocess.run([sb3_python, os.path.join(HERE, "workers", "sb3_returns_worker.py"), env_id, str(seed),
                        str(steps), path], check=True, capture_output=True, text=True)
    with open(path) as f:
        result = json.load(f)
    print(f"{library:>11s} {env_id:>14s} seed {seed}: {result['final_eval_mean']:8.1f} ± {result['final_eval_std']:6.1f} "
          f"({result['train_time_s']} s)", flush=True)


def variant_of(run) -> str:
    """The variant a run JSON belongs to. sb3-contrib's worker writes no variant field; every
    tftrpo run has one (a tftrpo JSON without it would be ambiguous: the preset changed)."""
    if "variant" in run:
        return run["variant"]
    if run["library"] == "sb3-contrib":
        return "sb3"
    raise ValueError(f"returns: run JSON without a variant: {run['library']} {run['env']} seed {run['seed']}")


def load_runs(run_dir):
    """Every run JSON in `run_dir`, in file-name order (none if it does not exist)."""
    runs = []
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if name.endswith(".json"):
            with open(os.path.join(run_dir, name)) as f:
                runs.append(json.load(f))
    return runs


def report():
    runs = load_runs(OUT)
    table = {}
    for r in runs:
        table.setdefault(r["env"], {}).setdefault(variant_of(r), []).append(r["final_eval_mean"])
    summary = {env: {v: {"label": LABELS[v], "mean": float(np.mean(x)), "std": float(np.std(x)), "seeds": len(x)}
                     for v, x in variants.items()} for env, variants in table.items()}
    # <out>.json and <out>.png beside the run directory: bench/results/returns.json for the default
    # --out, and a separate pair for another (a 100k-step study must not overwrite the 1M table).
    with open(os.path.normpath(OUT) + ".json", "w") as f:
        json.dump({"what": "final 20-episode greedy evaluation after training, rl-zoo3 MuJoCo settings",
                   "variants": {v: LABELS[v] for v in VARIANTS}, "summary": summary, "runs": runs}, f, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"tftrpo": "tab:orange", "tftrpo-statsafter": "tab:cyan", "tftrpo-sharedinit": "tab:gray", "tftrpo-oldrng": "gold", "tftrpo-tfloop": "tab:red", "tftrpo-paperkl": "tab:purple",
              "tftrpo-tfainit": "tab:green", "tftrpo-cg100": "tab:brown", "tftrpo-primeobs": "tab:pink",
              "tftrpo-statsfirst": "tab:olive",
              "sb3": "tab:blue"}
    envs = [e for e in ENVS if e in table]
    if envs:
        fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.8), squeeze=False)
        for ax, env_id in zip(axes[0], envs):
            for variant in VARIANTS:
                for i, r in enumerate(sorted((x for x in runs if x["env"] == env_id and variant_of(x) == variant),
                                             key=lambda x: x["seed"])):
                    curve = training_curve(r)
                    if len(curve):
                        ax.plot(curve[:, 0], curve[:, 1], color=colors[variant], alpha=0.8, lw=1,
                                label=LABELS[variant] if i == 0 else None)
            ax.set_title(env_id)
            ax.set_xlabel("environment steps")
            ax.set_ylabel("training return (mean of the last 20\nepisodes; 100 for sb3-contrib runs before\nits worker kept 20)", fontsize=7)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.normpath(OUT) + ".png", dpi=100)
        plt.close(fig)
    return {"returns-variants": markdown_table(runs), "returns-target": target_table(runs, ["tftrpo", "sb3"]),
            "returns-target-variants": target_table(runs),
            "returns-pooled": pooled_table(runs), "returns-chance": chance_table(runs),
            "returns-noise": noise_table(runs)}


def update_readme(path, tables) -> None:
    """Replaces the text between `<!-- name -->` and `<!-- /name -->` in `path` with each table
    that has such markers (the README quotes the variants and target tables)."""
    with open(path) as f:
        text = f.read()
    for name, table in tables.items():
        text = re.sub(rf"(<!-- {name} -->\n)(?:.*?\n)?(<!-- /{name} -->)",
                      lambda m: m.group(1) + table + "\n" + m.group(2), text, flags=re.S)
    with open(path, "w") as f:
        f.write(text)


def training_curve(run) -> np.ndarray:
    """[steps, training return] of a run, the return a mean over the last 20 episodes on both
    sides: sb3-contrib's Monitor curve averages 100, so its worker also keeps `curve_last20`
    (runs before it did have only the 100-episode curve)."""
    return np.array(run.get("curve_last20", run["curve"]), dtype=float)


def late_training_return(run, last_fraction=0.1) -> float:
    """Mean of the run's training-return curve over its last 10% of steps (stochastic policy)."""
    curve = training_curve(run)
    return float(np.mean(curve[curve[:, 0] > (1.0 - last_fraction) * run["steps"], 1]))


def markdown_table(runs) -> str:
    """The README's table: per env and variant, the final greedy return (mean ± std over seeds,
    each seed's 20-episode mean) and the training return over the last 10% of steps."""
    lines = ["| env | variant | final greedy return, mean ± std over seeds | per seed (seed: return) "
             "| training return, last 10% of steps |",
             "|---|---|---|---|---|"]
    for env_id in ENVS:
        for variant in VARIANTS:
            done = sorted((r["seed"], r["final_eval_mean"], late_training_return(r)) for r in runs
                          if r["env"] == env_id and variant_of(r) == variant)
            if not done:
                continue
            values = [x for _, x, _ in done]
            late = [y for _, _, y in done]
            lines.append(f"| {env_id} | {LABELS[variant]} | {np.mean(values):.0f} ± {np.std(values):.0f} "
                         f"| {', '.join(f'{s}: {x:.0f}' for s, x, _ in done)} | {np.mean(late):.0f} ± {np.std(late):.0f} |")
    return "\n".join(lines)


ISSUE_SEEDS = (0, 1, 2)  # the issue's 3 seeds per task; more seeds get a row of their own


def _splits(total, n, max_exact, samples, rng):
    """Index sets of group a for splits of `total` pooled runs into n and total − n: all
    C(total, n) of them if that is at most `max_exact`, else `samples` random ones."""
    if math.comb(total, n) <= max_exact:
        return np.array(list(itertools.combinations(range(total), n)))
    return np.argsort(rng.random((samples, total)), axis=1)[:, :n]


def _split_differences(pooled, n, chosen):
    """mean(group a) − mean(group b) for each split, group a being the runs `chosen[i]`."""
    sums = pooled[chosen].sum(axis=1)
    return sums / n - (pooled.sum() - sums) / (len(pooled) - n)


def permutation_p_value(a, b, max_exact=200_000, samples=100_000, seed=0) -> float:
    """Two-sided p-value of mean(a) − mean(b) by a permutation test.

    If the runs of both groups were exchangeable (no difference between the libraries), every
    split of the pooled runs into groups of len(a) and len(b) would be as likely as the one
    observed; p is the share of splits whose |difference of means| is at least the observed
    one. Exact over all C(n_a + n_b, n_a) splits up to `max_exact` of them (10 + 10 seeds:
    184,756), else estimated from `samples` random splits.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled = np.concatenate([a, b])
    chosen = _splits(len(pooled), len(a), max_exact, samples, np.random.default_rng(seed))
    differences = np.abs(_split_differences(pooled, len(a), chosen))
    return float(np.mean(differences >= abs(a.mean() - b.mean()) * (1 - 1e-12)))


def sign_flip_p_value(differences, max_exact=2 ** 20, samples=200_000, seed=0) -> float:
    """Two-sided p-value of the mean of paired differences by a sign-flip permutation test.

    If the two runs of each pair were exchangeable (no difference between the variants), each
    difference would be as likely with either sign; p is the share of the 2ⁿ sign patterns whose
    |mean| is at least the observed one. Exact up to `max_exact` patterns (20 pairs), else
    estimated from `samples` random patterns.
    """
    d = np.asarray(differences, dtype=float)
    if len(d) <= math.log2(max_exact):
        signs = 1.0 - 2.0 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(samples, len(d)))
    return float(np.mean(np.abs(signs @ d) >= abs(d.sum()) * (1 - 1e-12)))


def standardised_difference(a, b):
    """(mean(a) − mean(b), s, their ratio), s the sample standard deviation of a and b pooled
    (1 where it is undefined or 0), which relabelling the runs leaves unchanged."""
    pooled = np.concatenate([np.asarray(a, float), np.asarray(b, float)])
    scale = float(pooled.std(ddof=1)) if len(pooled) > 1 and pooled.std() > 0 else 1.0
    difference = float(np.mean(a) - np.mean(b))
    return difference, scale, difference / scale


def pooled_permutation_test(tasks, max_exact=200_000, samples=100_000, seed=0):
    """(statistic, two-sided p) of a difference between two groups pooled over several tasks.

    `tasks` is a list of (a, b) run values, one pair per task. The statistic is the mean over
    tasks of (mean(a) − mean(b)) / s, s the sample standard deviation of the task's runs of
    both groups together, which relabelling leaves unchanged: a standardised difference that a
    small gap running the same way on every task adds up in. p is the share of relabellings,
    made within each task and never across tasks, whose |statistic| is at least the observed
    one: exact over all of them up to `max_exact`, else from `samples` random ones.
    """
    rng = np.random.default_rng(seed)
    pooled = [np.concatenate([np.asarray(a, float), np.asarray(b, float)]) for a, b in tasks]
    _, scales, standardised = zip(*(standardised_difference(a, b) for a, b in tasks))
    observed = np.mean(standardised)
    exact = math.prod(math.comb(len(x), len(a)) for x, (a, _) in zip(pooled, tasks)) <= max_exact
    per_task = [_split_differences(x, len(a), _splits(len(x), len(a), max_exact if exact else 0, samples, rng)) / s
                for x, (a, _), s in zip(pooled, tasks, scales)]
    if exact:  # every combination of the tasks' splits
        totals = functools.reduce(lambda acc, d: np.add.outer(acc, d).ravel(), per_task, np.zeros(1))
    else:  # the tasks' random splits drawn independently, combined sample by sample
        totals = np.sum(per_task, axis=0)
    statistics = totals / len(tasks)
    return float(observed), float(np.mean(np.abs(statistics) >= abs(observed) * (1 - 1e-12)))


def returns_by_seed(runs, env_id, variants):
    """{variant: {seed: final greedy return}} of the runs on `env_id`."""
    return {v: {r["seed"]: r["final_eval_mean"] for r in runs if r["env"] == env_id and variant_of(r) == v}
            for v in variants}


def common_seed_returns(runs, env_id):
    """(seeds, tftrpo's returns, sb3-contrib's returns) on `env_id` over the seeds both have finished."""
    by_variant = returns_by_seed(runs, env_id, ("tftrpo", "sb3"))
    seeds = sorted(set(by_variant["tftrpo"]) & set(by_variant["sb3"]))
    return seeds, [by_variant["tftrpo"][s] for s in seeds], [by_variant["sb3"][s] for s in seeds]


def target_table(runs, variants=VARIANTS) -> str:
    """Issue 5's target per env: tftrpo's mean final greedy return ≥ sb3-contrib's over the issue's
    seeds 0-2, and, where both libraries have run more seeds, over all the seeds both have
    finished (with a column for each of `variants`, filled where it has run them all). The last
    columns give the difference of the two means and its permutation p-value: how often a
    difference at least that large arises from splitting the same runs at random."""
    lines = ["| env | seeds | " + " | ".join(LABELS[v] for v in variants)
             + " | tftrpo − sb3-contrib | p (permutation) | tftrpo ≥ sb3-contrib? |",
             "|---|---|" + "---|" * len(variants) + "---|---|---|"]
    for env_id in ENVS:
        by_variant = returns_by_seed(runs, env_id, VARIANTS)
        common = sorted(set(by_variant["tftrpo"]) & set(by_variant["sb3"]))
        issue = [s for s in common if s in ISSUE_SEEDS]
        for seeds in ([issue] if issue else []) + ([common] if len(common) > len(issue) else []):
            means = {v: np.mean([by_variant[v][s] for s in seeds]) if all(s in by_variant[v] for s in seeds)
                     else None for v in set(variants) | {"tftrpo", "sb3"}}
            cell = {v: "–" if m is None else f"{m:.0f}" for v, m in means.items()}
            verdict = "yes" if means["tftrpo"] >= means["sb3"] else "no"
            p = permutation_p_value([by_variant["tftrpo"][s] for s in seeds], [by_variant["sb3"][s] for s in seeds])
            lines.append(f"| {env_id} | {seed_ranges(seeds)} | " + " | ".join(cell[v] for v in variants)
                         + f" | {means['tftrpo'] - means['sb3']:+.0f} | {p:.2f} | {verdict} |")
    return "\n".join(lines)


def seed_ranges(seeds) -> str:
    """[0, 1, 2, 3, 5, 8, 9] → "0-3, 5, 8-9"."""
    groups = [list(g) for _, g in itertools.groupby(sorted(seeds), key=lambda s, c=itertools.count(): s - next(c))]
    return ", ".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else f"{g[0]}" for g in groups)


def pooled_table(runs) -> str:
    """The pooled test over the tasks (declared in bench/README.md, stop 18): per task, tftrpo's
    and sb3-contrib's runs on every seed both have finished, the difference of means in units of
    the task's standard deviation s, and `pooled_permutation_test` over all tasks."""
    lines = ["| env | seeds | tftrpo − sb3-contrib | s (all runs) | difference / s |", "|---|---|---|---|---|"]
    tasks = []
    for env_id in ENVS:
        seeds, a, b = common_seed_returns(runs, env_id)
        if len(seeds) < 2:
            continue
        difference, scale, standardised = standardised_difference(a, b)
        tasks.append((a, b))
        lines.append(f"| {env_id} | {seed_ranges(seeds)} ({len(seeds)}) | {difference:+.0f} | {scale:.0f} "
                     f"| {standardised:+.2f} |")
    if not tasks:
        return ""
    statistic, p = pooled_permutation_test(tasks)
    lines.append(f"| pooled: mean over {len(tasks)} tasks | | | | **{statistic:+.2f}** (p {p:.2f}, within-task permutation) |")
    return "\n".join(lines)


def chance_of_target(a, b, k=len(ISSUE_SEEDS)) -> float:
    """The chance that a fresh k-seed comparison finds mean(a) ≥ mean(b), if each library's
    finished runs are its distribution: the share of all C(n_a, k)·C(n_b, k) pairs of k-run
    draws (each without replacement) whose a-draw mean is at least the b-draw mean. Two
    libraries that behave alike give about ½ per task."""
    draw_means = [np.array([np.mean(c) for c in itertools.combinations(np.asarray(x, float), k)]) for x in (a, b)]
    tolerance = 1e-12 * max(1.0, *(np.abs(m).max() for m in draw_means))  # ties count as met
    at_most = np.searchsorted(np.sort(draw_means[1]), draw_means[0] + tolerance, side="right")
    return float(at_most.sum() / (len(draw_means[0]) * len(draw_means[1])))


def chance_table(runs) -> str:
    """How likely the issue's target is met on k = 3 fresh seeds: per task `chance_of_target`
    over every seed both libraries have finished, and the product over the tasks (tasks are
    independent runs), next to ½ per task, what two libraries that behave alike would give."""
    k = len(ISSUE_SEEDS)
    lines = [f"| env | seeds | chance that tftrpo's {k}-seed mean ≥ sb3-contrib's | two libraries alike |",
             "|---|---|---|---|"]
    chances = []
    for env_id in ENVS:
        seeds, a, b = common_seed_returns(runs, env_id)
        if len(seeds) < k:
            continue
        chances.append(chance_of_target(a, b, k=k))
        lines.append(f"| {env_id} | {seed_ranges(seeds)} ({len(seeds)}) | {chances[-1]:.2f} | 0.50 |")
    if not chances:
        return ""
    lines.append(f"| all {len(chances)} tasks | | **{math.prod(chances):.3f}** | {0.5 ** len(chances):.3f} |")
    return "\n".join(lines)


NOISE_AT = (0.1, 0.3, 1.0)  # fractions of the run's steps at which noise_table reads log σ


def mean_log_std_curve(run):
    """[[steps, mean over action dimensions of log σ]] of the policy that collected, or None.

    sb3-contrib's worker records it (runs from 2026-11-25 on). For a tftrpo run it follows from
    the entropy diagnostic: a diagonal Gaussian's entropy is Σ_j (½ ln 2πe + log σ_j)."""
    if "mean_log_std" in run:
        return np.array(run["mean_log_std"], dtype=float)
    from tftrpo.presets import action_dimension

    entropy = (run.get("diagnostics") or {}).get("entropy")
    if not entropy or len(entropy) != len(run["curve"]):
        return None
    steps = np.array(run["curve"], dtype=float)[:, 0]
    return np.stack([steps, np.array(entropy, dtype=float) / action_dimension(run["env"]) - 0.5 * np.log(2 * np.pi * np.e)],
                    axis=1)


def noise_table(runs) -> str:
    """Exploration noise per run: the mean log σ of the collecting policy at 10%, 30% and 100% of
    its steps, and its final greedy return; runs that recorded neither entropy nor log σ are left out."""
    lines = ["| env | variant | seed | " + " | ".join(f"mean log σ at {f:.0%}" for f in NOISE_AT)
             + " | final greedy return |", "|---|---|---|" + "---|" * len(NOISE_AT) + "---|"]
    for env_id in ENVS:
        for variant in ("tftrpo", "tftrpo-statsafter", "tftrpo-sharedinit", "tftrpo-tfainit", "sb3"):
            for r in sorted((r for r in runs if r["env"] == env_id and variant_of(r) == variant), key=lambda r: r["seed"]):
                curve = mean_log_std_curve(r)
                if curve is None:
                    continue
                cells = [f"{np.interp(f * r['steps'], curve[:, 0], curve[:, 1]):.2f}" for f in NOISE_AT]
                lines.append(f"| {env_id} | {LABELS[variant]} | {r['seed']} | " + " | ".join(cells)
                             + f" | {r['final_eval_mean']:.0f} |")
    return "\n".join(lines)


def main():
    global OUT
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=[v for v in VARIANTS if v not in HISTORICAL and v not in DIAGNOSTIC])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--tf-python", default=os.environ.get("TFTRPO_BENCH_TF_PYTHON", sys.executable))
    parser.add_argument("--sb3-python", default=os.environ.get("TFTRPO_BENCH_SB3_PYTHON", "/tmp/tftrpo-bench-sb3/bin/python"))
    parser.add_argument("--report", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--out", default=OUT, help="where each run's JSON goes")
    parser.add_argument("--readme", nargs="+", default=[], metavar="FILE",
                        help="rewrite the tables between these files' <!-- returns-... --> markers")
    args = parser.parse_args()
    OUT = args.out
    for variant in [] if args.report else sorted(set(args.variants) & set(HISTORICAL)):
        parser.error(f"{variant} records {HISTORICAL[variant]}; this code cannot run it")
    if not args.report:
        jobs = [(v, e, s) for e in args.envs for s in args.seeds for v in args.variants]
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            for future in [pool.submit(run_one, *job, args.steps, args.tf_python, args.sb3_python) for job in jobs]:
                future.result()
    tables = report()
    print("\n\n".join(tables.values()))
    for path in args.readme:
        update_readme(path, tables)


if __name__ == "__main__":
    main()
