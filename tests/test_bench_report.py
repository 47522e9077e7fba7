"""The returns benchmark's report (bench/returns.py): its statistics, on made-up runs (in CI;
no sb3-contrib venv or training needed)."""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)
import returns  # noqa: E402


def test_sign_flip_p_value_counts_the_sign_patterns_by_hand():
    # [1, 2, 3]: of the 8 sign patterns only +++ and --- reach |sum| 6.
    assert returns.sign_flip_p_value([1, 2, 3]) == 2 / 8
    # [1, 1, -3]: |sum| 1 or more in every pattern (sums ±1, ±5, ±3 ... never 0).
    assert returns.sign_flip_p_value([1, 1, -3]) == 1.0
    # [3, 1, 1]: |sum| ≥ 5 only for +++ and ---; ±3 from flipping one 1, ±1 from the 3.
    assert returns.sign_flip_p_value([3, 1, 1]) == 2 / 8
    # The sampled estimate agrees with the exact count.
    d = np.random.default_rng(1).normal(0.4, 1.0, size=16)
    exact = returns.sign_flip_p_value(d)
    assert abs(returns.sign_flip_p_value(d, max_exact=1) - exact) < 0.01


def test_permutation_p_value_counts_the_splits_by_hand():
    # {1,2,3} vs {4,5,6}: of the C(6,3) = 20 splits only these two extremes reach |Δ| = 3.
    assert returns.permutation_p_value([1, 2, 3], [4, 5, 6]) == 2 / 20
    assert returns.permutation_p_value([4, 5, 6], [1, 2, 3]) == 2 / 20
    # Identical groups: every split is at least as far apart as the observed Δ = 0.
    assert returns.permutation_p_value([5, 5], [5, 5]) == 1.0


def test_permutation_p_value_matches_an_independent_enumeration():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 4), rng.normal(1, 1, 5)
    pooled, observed = np.concatenate([a, b]), abs(a.mean() - b.mean())
    # Every ordering of the 9 runs, the first 4 as group a: each split counted 4!·5! times.
    hits = [abs(np.mean(p[:4]) - np.mean(p[4:])) >= observed - 1e-12 for p in itertools.permutations(pooled)]
    assert abs(returns.permutation_p_value(a, b) - np.mean(hits)) < 1e-12
    # The Monte Carlo branch (forced by max_exact=0) estimates the same p.
    assert abs(returns.permutation_p_value(a, b, max_exact=0, samples=200_000) - np.mean(hits)) < 0.01


def _run(variant, env, seed, value):
    return {"variant": variant, "library": variant, "env": env, "seed": seed, "final_eval_mean": value}


def test_target_table_gives_the_difference_p_and_verdict_per_seed_set():
    runs = [_run("tftrpo", "Hopper-v5", s, v) for s, v in enumerate([10, 20, 30, 40])]
    runs += [_run("sb3", "Hopper-v5", s, v) for s, v in enumerate([40, 50, 60, 70])]
    rows = [line.split(" | ") for line in returns.target_table(runs).splitlines()[2:]]
    assert len(rows) == 2  # the issue's seeds 0-2, then all four both libraries ran
    issue, every = rows
    assert issue[1] == "0-2" and issue[-3:] == ["-30", f"{2 / 20:.2f}", "no |"]
    # 4 vs 4 of sum 320: |Δ| = |2S − 320|/4 ≥ 30 needs a group sum S ≤ 100 or ≥ 220: {10, 20, 30, 40}
    # with either 40, and the two complements, so 4 of the C(8,4) = 70 splits.
    assert every[1] == "0-3" and every[-3] == "-30" and every[-2] == f"{4 / 70:.2f}"
    flipped = [dict(r, variant="sb3" if r["variant"] == "tftrpo" else "tftrpo") for r in runs]
    assert returns.target_table(flipped).splitlines()[2].endswith("| +30 | 0.10 | yes |")
    # The README's narrow form: only the two libraries' columns, the same verdict columns.
    narrow = returns.target_table(runs, ["tftrpo", "sb3"]).splitlines()
    assert narrow[0].count(" | ") == 6 and narrow[2].split(" | ")[2:] == ["20", "50", "-30", f"{2 / 20:.2f}", "no |"]


def test_update_readme_replaces_only_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- returns-target -->\nold | table\n<!-- /returns-target -->\nafter\n"
                      "<!-- returns-variants -->\n<!-- /returns-variants -->\nend\n")
    returns.update_readme(str(readme), {"returns-target": "| new |\n|---|", "returns-variants": "| v |",
                                        "returns-noise": "not quoted"})
    assert readme.read_text() == ("intro\n<!-- returns-target -->\n| new |\n|---|\n<!-- /returns-target -->\nafter\n"
                                  "<!-- returns-variants -->\n| v |\n<!-- /returns-variants -->\nend\n")


def test_historical_variants_are_reported_but_never_run():
    done = subprocess.run([sys.executable, os.path.join(BENCH, "returns.py"), "--variants", "tftrpo-sharedinit",
                           "--envs", "Hopper-v5", "--seeds", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "tftrpo-sharedinit records the commits before 8363502" in done.stderr


def _within_task_enumeration(tasks):
    """p of the pooled statistic by brute force: every ordering of each task's runs (each split
    counted equally often), every combination across tasks."""
    scales = [np.std(np.concatenate([a, b]), ddof=1) for a, b in tasks]
    observed = np.mean([(np.mean(a) - np.mean(b)) / s for (a, b), s in zip(tasks, scales)])
    per_task = [[(np.mean(p[:len(a)]) - np.mean(p[len(a):])) / s for p in itertools.permutations(np.concatenate([a, b]))]
                for (a, b), s in zip(tasks, scales)]
    hits = [abs(np.mean(combo)) >= abs(observed) - 1e-12 for combo in itertools.product(*per_task)]
    return observed, np.mean(hits)


def test_pooled_permutation_test_matches_an_independent_enumeration():
    rng = np.random.default_rng(2)
    tasks = [(rng.normal(0, 1, 2), rng.normal(1, 1, 3)), (rng.normal(0, 50, 3), rng.normal(-20, 50, 2))]
    want_stat, want_p = _within_task_enumeration(tasks)
    stat, p = returns.pooled_permutation_test(tasks)
    assert abs(stat - want_stat) < 1e-12 and abs(p - want_p) < 1e-12
    # The Monte Carlo branch (forced by max_exact=0) estimates the same p.
    _, p_mc = returns.pooled_permutation_test(tasks, max_exact=0, samples=200_000)
    assert abs(p_mc - want_p) < 0.01


def test_pooled_permutation_test_one_task_is_the_plain_test_in_units_of_s():
    stat, p = returns.pooled_permutation_test([([1, 2, 3], [4, 5, 6])])
    assert abs(stat - (-3 / np.std([1, 2, 3, 4, 5, 6], ddof=1))) < 1e-12
    assert p == returns.permutation_p_value([1, 2, 3], [4, 5, 6]) == 2 / 20


def test_pooled_permutation_test_is_scale_free_per_task_and_antisymmetric():
    tasks = [([1.0, 4.0, 2.0], [3.0, 6.0, 5.0]), ([10.0, 30.0], [20.0, 50.0, 40.0])]
    stat, p = returns.pooled_permutation_test(tasks)
    rescaled = [(np.multiply(a, 1000.0), np.multiply(b, 1000.0)) if i == 1 else (a, b) for i, (a, b) in enumerate(tasks)]
    assert np.allclose(returns.pooled_permutation_test(rescaled), (stat, p))
    flipped = returns.pooled_permutation_test([(b, a) for a, b in tasks])
    assert abs(flipped[0] + stat) < 1e-12 and abs(flipped[1] - p) < 1e-12
    assert stat < 0 and 0 < p < 1


def test_pooled_table_uses_the_seeds_both_libraries_have():
    runs = [_run("tftrpo", "Hopper-v5", s, v) for s, v in enumerate([10, 20, 30, 40])]
    runs += [_run("sb3", "Hopper-v5", s, v) for s, v in enumerate([40, 50, 60])]
    runs += [_run("tftrpo", "Swimmer-v5", s, v) for s, v in [(0, 5), (1, 7), (3, 9)]]
    runs += [_run("sb3", "Swimmer-v5", s, v) for s, v in [(0, 1), (1, 2), (3, 4), (4, 8)]]
    lines = returns.pooled_table(runs).splitlines()
    assert lines[2].startswith("| Hopper-v5 | 0-2 (3) | -30 |")
    assert lines[3].startswith("| Swimmer-v5 | 0-1, 3 (3) | +5 |")
    stat, p = returns.pooled_permutation_test([([10, 20, 30], [40, 50, 60]), ([5, 7, 9], [1, 2, 4])])
    assert lines[4].endswith(f"**{stat:+.2f}** (p {p:.2f}, within-task permutation) |")


def test_seed_ranges():
    assert returns.seed_ranges([5, 0, 1, 2, 3, 8, 9]) == "0-3, 5, 8-9"
    assert returns.seed_ranges([4]) == "4"


def test_chance_of_target_matches_an_independent_enumeration():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 6, size=6).astype(float), rng.integers(0, 6, size=7).astype(float)  # ties happen
    met = [np.mean(x) >= np.mean(y) for x in itertools.combinations(a, 3) for y in itertools.combinations(b, 3)]
    assert abs(returns.chance_of_target(a, b) - np.mean(met)) < 1e-12
    # k = 1 is the share of pairs of single runs; one library entirely above the other gives 1 and 0.
    assert returns.chance_of_target([1, 3], [2, 4], k=1) == 0.25
    assert returns.chance_of_target([5, 6, 7, 8], [1, 2, 3, 4]) == 1.0
    assert returns.chance_of_target([1, 2, 3, 4], [5, 6, 7, 8]) == 0.0
    assert returns.chance_of_target([-0.1, -0.2, -0.3], [-0.3, -0.1, -0.2]) == 1.0  # a tie is met, sign aside
    # Without ties, the two libraries' chances add up to 1.
    a, b = rng.normal(size=8), rng.normal(size=9)
    assert abs(returns.chance_of_target(a, b) + returns.chance_of_target(b, a) - 1) < 1e-12


def test_chance_table_multiplies_the_tasks_that_have_three_common_seeds():
    runs = [_run("tftrpo", "Hopper-v5", s, v) for s, v in enumerate([10, 20, 30, 40])]
    runs += [_run("sb3", "Hopper-v5", s, v) for s, v in enumerate([15, 25, 35, 45])]
    runs += [_run("tftrpo", "Swimmer-v5", s, v) for s, v in [(0, 5), (1, 7), (3, 9)]]
    runs += [_run("sb3", "Swimmer-v5", s, v) for s, v in [(0, 1), (1, 2), (3, 4)]]
    runs += [_run("tftrpo", "Walker2d-v5", s, v) for s, v in [(0, 5), (1, 7)]]  # too few seeds: left out
    runs += [_run("sb3", "Walker2d-v5", s, v) for s, v in [(0, 1), (1, 2)]]
    lines = returns.chance_table(runs).splitlines()
    hopper = returns.chance_of_target([10, 20, 30, 40], [15, 25, 35, 45])
    assert lines[2] == f"| Hopper-v5 | 0-3 (4) | {hopper:.2f} | 0.50 |"
    assert lines[3] == "| Swimmer-v5 | 0-1, 3 (3) | 1.00 | 0.50 |"
    assert lines[4] == f"| all 2 tasks | | **{hopper:.3f}** | 0.250 |" and len(lines) == 5


def test_compare_runs_pairs_by_seed_and_uses_matched_curve_windows(tmp_path):
    sys.path.insert(0, os.path.join(BENCH, "experiments"))
    import compare_runs

    def run(variant, seed, final, curve, curve_last20=None):
        r = {"library": "sb3-contrib" if variant == "sb3" else "tftrpo", "env": "Hopper-v5", "seed": seed,
             "steps": 100, "final_eval_mean": final, "curve": [[50, c] for c in curve]}
        if variant != "sb3":
            r["variant"] = variant
        if curve_last20 is not None:
            r["curve_last20"] = [[50, c] for c in curve_last20]
        (tmp_path / f"{variant}-Hopper-v5-seed{seed}.json").write_text(json.dumps(r))

    for seed, (fa, fb) in enumerate([(10, 7), (8, 6), (9, 8)]):
        run("tftrpo-primeobs", seed, fa, [fa, fa])
        run("tftrpo", seed, fb, [fb, fb + 2])
    run("tftrpo", 3, 1, [1])  # no partner: left out
    pairs = compare_runs.paired_runs(returns.load_runs(str(tmp_path)), "Hopper-v5", "tftrpo-primeobs", "tftrpo")
    assert list(pairs) == [0, 1, 2]
    result = compare_runs.compare(pairs, paired=True, iterations=[1, 2])
    assert result["curve_at_1"]["mean_difference"] == 2.0  # fa − fb per seed
    assert result["curve_at_2"]["mean_difference"] == 0.0  # fa − (fb + 2)
    final = result["final_eval_mean"]
    assert final["mean_difference"] == 2.0 and final["a_higher"] == 3
    assert final["p"] == 2 / 8  # all three positive: only +++ and --- reach it
    assert result["curve_mean"]["mean_difference"] == 1.0  # fa − (fb + 1) per seed
    # The stochastic policy's return at the end is the curve's last point; the greedy gain is the
    # greedy evaluation minus it: a 0 for every seed, b fb − (fb + 2) = −2.
    assert result["final_train"]["a"] == [10.0, 8.0, 9.0] and result["final_train"]["b"] == [9.0, 8.0, 10.0]
    assert result["greedy_gain"]["a"] == [0.0] * 3 and result["greedy_gain"]["b"] == [-2.0] * 3
    assert result["greedy_gain"]["mean_difference"] == 2.0
    # Two libraries: sb3-contrib's 20-episode curve is used, and a run without one is refused.
    run("sb3", 0, 5, [100, 100], curve_last20=[4, 6])
    result = compare_runs.compare(compare_runs.paired_runs(returns.load_runs(str(tmp_path)), "Hopper-v5", "tftrpo", "sb3"), paired=False)
    assert result["curve_mean"]["b"] == [5.0] and result["final_eval_mean"]["test"] == "permutation"
    assert result["final_train"]["b"] == [6.0] and result["greedy_gain"]["b"] == [-1.0]  # 5 − 6
    run("sb3", 0, 5, [100, 100])
    with pytest.raises(ValueError, match="curve_last20"):
        compare_runs.compare(compare_runs.paired_runs(returns.load_runs(str(tmp_path)), "Hopper-v5", "tftrpo", "sb3"), paired=False)


def test_compare_runs_reads_several_directories_and_refuses_a_run_found_twice(tmp_path):
    sys.path.insert(0, os.path.join(BENCH, "experiments"))
    import compare_runs

    def run(directory, variant, seed, final):
        directory.mkdir(exist_ok=True)
        r = {"library": "tftrpo", "variant": variant, "env": "Hopper-v5", "seed": seed, "steps": 100,
             "final_eval_mean": final, "curve": [[50, final]]}
        (directory / f"{variant}-Hopper-v5-seed{seed}.json").write_text(json.dumps(r))

    old, new = tmp_path / "old", tmp_path / "new"
    for seed in (0, 1, 2):
        run(old, "tftrpo", seed, 10.0 + seed)
    for seed in (1, 2, 3):
        run(new, "tftrpo-statsfirst", seed, 20.0 + seed)
    runs = compare_runs.load_run_dirs([str(old), str(new)])
    pairs = compare_runs.paired_runs(runs, "Hopper-v5", "tftrpo-statsfirst", "tftrpo")
    assert list(pairs) == [1, 2]
    assert compare_runs.compare(pairs, paired=True)["final_eval_mean"]["mean_difference"] == 10.0
    run(new, "tftrpo", 2, 99.0)  # seed 2's tftrpo run, now in both directories
    with pytest.raises(ValueError, match="tftrpo seed 2 on Hopper-v5 is in both"):
        compare_runs.load_run_dirs([str(old), str(new)])


def test_compare_runs_pools_tasks_with_the_returns_test(tmp_path):
    sys.path.insert(0, os.path.join(BENCH, "experiments"))
    import compare_runs

    values = {"Hopper-v5": ([3, 4, 5], [1, 2, 3]), "Swimmer-v5": ([10, 30], [20, 20])}
    for env, (tf_values, sb3_values) in values.items():
        for variant, finals in (("tftrpo", tf_values), ("sb3", sb3_values)):
            for seed, final in enumerate(finals):
                r = {"library": "sb3-contrib" if variant == "sb3" else variant, "env": env, "seed": seed,
                     "steps": 100, "final_eval_mean": final,
                     "curve": [[50, final]], "curve_last20": [[50, final]]}
                if variant == "tftrpo":
                    r["variant"] = variant
                (tmp_path / f"{variant}-{env}-seed{seed}.json").write_text(json.dumps(r))
    result = compare_runs.pooled(returns.load_runs(str(tmp_path)), list(values), "tftrpo", "sb3")
    assert result["tasks"] == {"Hopper-v5": [0, 1, 2], "Swimmer-v5": [0, 1]}
    statistic, p = returns.pooled_permutation_test(list(values.values()))
    assert result["final_eval_mean"]["pooled_standardised_difference"] == statistic
    assert result["final_eval_mean"]["p"] == p
    # Hopper: +2 over s = std(1..5) = 1.58; Swimmer: 0.
    assert result["final_eval_mean"]["per_task"]["Hopper-v5"] == 2 / np.std([3, 4, 5, 1, 2, 3], ddof=1)
    assert result["final_eval_mean"]["per_task"]["Swimmer-v5"] == 0.0


def test_results_dir_follows_tftrpo_bench_results(tmp_path):
    """The benchmarks write under TFTRPO_BENCH_RESULTS when it is set (the `pytest -m bench`
    smoke tests use a temporary one), else under bench/results."""
    show = "import common; print(common.RESULTS_DIR); print(common.result_paths('x')[0])"
    env = {k: v for k, v in os.environ.items() if k != "TFTRPO_BENCH_RESULTS"}
    default = subprocess.run([sys.executable, "-c", show], cwd=BENCH, env=env, check=True,
                             capture_output=True, text=True).stdout.split()
    assert default == [os.path.join(BENCH, "results"), os.path.join(BENCH, "results", "x.json")]
    moved = subprocess.run([sys.executable, "-c", show], cwd=BENCH, check=True, capture_output=True,
                           text=True, env={**env, "TFTRPO_BENCH_RESULTS": str(tmp_path)}).stdout.split()
    assert moved == [str(tmp_path), str(tmp_path / "x.json")]
