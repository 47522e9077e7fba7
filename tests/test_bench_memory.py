"""The memory benchmark's summary (bench/memory.py) on made-up rounds (in CI; no sb3 venv needed)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import memory  # noqa: E402


def _round(tf_stack, tf_train, tf_no_xla, sb3_stack, sb3_train):
    def m(rss):
        return {"peak_rss_mib": rss, "process_wall_s": 1.0, "first_iteration_s": 0.5}

    return {"tftrpo:framework": m(400), "sb3:framework": m(200), "tftrpo:stack": m(tf_stack),
            "sb3:stack": m(sb3_stack), "tftrpo:train": m(tf_train), "sb3:train": m(sb3_train),
            "tftrpo:train_no_xla": m(tf_no_xla)}


def test_summary_splits_the_gap_per_round_then_takes_medians():
    rounds = [_round(500, 700, 640, 250, 350), _round(510, 740, 660, 240, 360), _round(505, 720, 700, 245, 340)]
    summary, first, ratios, gap = memory.build_summary(rounds)
    assert summary["tftrpo:train"]["median"] == 720 and summary["sb3:train"]["median"] == 350
    # Training's share is taken round by round (200, 230, 215; 100, 120, 95), then the median.
    assert summary["tftrpo:train - stack"]["median"] == 215 and summary["sb3:train - stack"]["median"] == 100
    assert summary["tftrpo:train - train_no_xla"]["median"] == 60  # 60, 80, 20
    assert ratios["tftrpo / sb3, train"] == pytest.approx(720 / 350)
    assert ratios["tftrpo / sb3, framework"] == pytest.approx(2.0)
    # The gap of the training runs' medians, and the share of it the imports' medians explain.
    assert gap["train gap MiB"] == 370 and gap["stack gap / train gap"] == pytest.approx((505 - 245) / 370)
    assert first["tftrpo:train"]["median"] == 0.5
