"""Short versions of the sb3-contrib comparison (`pytest -m bench`; not in CI).

Each runs a benchmark script's quick mode against sb3-contrib in its own venv
(`bash bench/setup_sb3_env.sh`) and checks that it produced side-by-side ratios.
Quick modes write `*_quick.json` / `.png`; these tests send them to a temporary directory
(`TFTRPO_BENCH_RESULTS`), so they never overwrite the committed results in bench/results.
"""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SB3_PYTHON = os.environ.get("TFTRPO_BENCH_SB3_PYTHON", "/tmp/tftrpo-bench-sb3/bin/python")

pytestmark = [
    pytest.mark.bench,
    pytest.mark.skipif(not os.path.exists(SB3_PYTHON),
                       reason=f"no sb3-contrib venv at {SB3_PYTHON}: run `bash bench/setup_sb3_env.sh`"),
]


def _run(results_dir, *args, timeout=1200):
    """Run a benchmark script with its results (and logs) under `results_dir`."""
    subprocess.run([sys.executable, *args], cwd=REPO, check=True, timeout=timeout,
                   env={**os.environ, "TFTRPO_BENCH_SB3_PYTHON": SB3_PYTHON,
                        "TFTRPO_BENCH_RESULTS": str(results_dir)})


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_update_speed_quick(tmp_path):
    _run(tmp_path, "bench/update_speed.py", "--quick")
    with open(tmp_path / "update_speed_quick.json") as f:
        summary = json.load(f)["summary"]
    for part in ("full", "policy"):
        assert _positive(summary[part]["ratio_tftrpo_over_sb3_of_medians"]), summary[part]
    assert (tmp_path / "update_speed_quick.png").exists()


def test_throughput_quick(tmp_path):
    _run(tmp_path, "bench/throughput.py", "--quick")
    with open(tmp_path / "throughput_quick.json") as f:
        result = json.load(f)
    ratios = result["ratios"]
    assert _positive(ratios["tftrpo_over_sb3_steady_of_medians"])
    assert _positive(ratios["tftrpo_train_over_raw_gym_single_tftrpo_venv_of_medians"])
    assert _positive(ratios["peak_rss_tftrpo_over_sb3_of_medians"])
    assert (tmp_path / "throughput_quick.png").exists()


def test_returns_short(tmp_path):
    """All five variants train 20k steps on Hopper-v5 and are evaluated over 20 greedy episodes."""
    out = tmp_path / "returns"
    _run(tmp_path, "bench/returns.py", "--envs", "Hopper-v5", "--seeds", "0", "--steps", "20000", "--out", str(out))
    with open(tmp_path / "returns.json") as f:
        results = json.load(f)
    summary = results["summary"]["Hopper-v5"]
    assert set(summary) == {"tftrpo", "tftrpo-tfloop", "tftrpo-paperkl", "tftrpo-tfainit", "sb3"}
    for variant in summary.values():
        assert variant["seeds"] == 1 and _positive(variant["mean"])
    runs = {r.get("variant", "sb3"): r for r in results["runs"]}
    configs = {v: r.get("config") for v, r in runs.items()}
    # Hopper has 3 action dimensions: sb3-contrib's δ 0.01, λ 0.1 are the preset's 0.03, 0.3.
    for variant in ("tftrpo", "tftrpo-tfloop", "tftrpo-tfainit"):
        assert abs(configs[variant]["max_kl"] - 0.03) < 1e-9 and abs(configs[variant]["cg_damping"] - 0.3) < 1e-9
    assert configs["tftrpo"]["numpy_policy"] is True and configs["tftrpo-tfloop"]["numpy_policy"] is False
    assert configs["tftrpo-paperkl"]["max_kl"] == 0.01 and configs["tftrpo-paperkl"]["cg_damping"] == 0.1
    init = ("policy_output_gain", "value_output_gain", "value_adam_epsilon")
    assert [configs["tftrpo"][k] for k in init] == [0.01, 1.0, 1e-5]
    assert [configs["tftrpo-tfainit"][k] for k in init] == [0.1, 0.0, 1e-7]
    # The preset adds each batch to the observation statistics before its update; the variants that
    # record earlier presets keep the order their runs were made with (after).
    assert configs["tftrpo"]["observation_statistics_before_update"] is True
    for variant in ("tftrpo-tfloop", "tftrpo-paperkl", "tftrpo-tfainit"):
        assert configs[variant]["observation_statistics_before_update"] is False
    assert (tmp_path / "returns.png").exists()
    # The noise table's log σ: sb3-contrib's as recorded, tftrpo's from its entropy diagnostic. Both
    # policies start at log σ = 0, so the first rollout's value is 0 for both (tftrpo's through
    # H = d·(½ ln 2πe + mean log σ), which a wrong d or constant would miss), then it moves.
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import returns  # noqa: E402

    for variant in ("tftrpo", "sb3"):
        curve = returns.mean_log_std_curve(runs[variant])
        assert curve.ndim == 2 and curve.shape[1] == 2 and len(curve) >= 5, (variant, curve.shape)  # ~10 rollouts
        assert abs(curve[0, 1]) < 1e-5 and abs(curve[-1, 1]) > 1e-3, (variant, curve[[0, -1], 1])
    assert "mean log σ at 10%" in returns.noise_table(results["runs"])
