"""Long learning runs, kept out of CI: `pytest -m slow`."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_main_job_solves_inverted_pendulum(tmp_path):
    """The README's main command (`tftrpo-train`, no arguments) learns its task: greedy return ≥ 950 of 1000."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "tftrpo.train", "--no-progress"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=1800)
    with open(tmp_path / "savedmodels" / "InvertedPendulum-v5-seed0" / "tftrpo_run.json") as f:
        meta = json.load(f)
    # Its budget, 60k steps, to the nearest whole iteration of 2 × 512 slots.
    assert meta["env"] == "InvertedPendulum-v5" and abs(meta["env_steps"] - 60_000) <= 512
    assert meta["final_eval_return"] >= 950, meta
