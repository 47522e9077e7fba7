"""Presets: rl-zoo3's MuJoCo trust region converted to the paper's units."""
import gymnasium as gym
import numpy as np
import pytest

from tftrpo.presets import preset, rl_zoo3_trust_region


@pytest.mark.parametrize("env_id, delta", [("Hopper-v5", 0.01), ("Walker2d-v5", 0.01), ("HalfCheetah-v5", 0.04),
                                           ("Swimmer-v5", 0.01), ("InvertedPendulum-v5", 0.01)])
def test_mujoco_preset_is_rl_zoo3_trust_region_times_action_dimensions(env_id, delta):
    env = gym.make(env_id)
    d = int(np.prod(env.action_space.shape))
    env.close()
    config = preset(env_id)
    assert rl_zoo3_trust_region(env_id) == (delta, 0.1, d)
    # sb3-contrib bounds the KL averaged over the d action dimensions: D̄_KL / d ≤ δ.
    assert config.max_kl == pytest.approx(d * delta) and config.cg_damping == pytest.approx(d * 0.1)


def test_other_families_and_overrides_keep_their_numbers():
    assert (preset("CartPole-v1").max_kl, preset("CartPole-v1").cg_damping) == (0.02, 0.1)
    assert preset("Hopper-v5", max_kl=0.01, cg_damping=0.1).max_kl == 0.01
    assert preset("Hopper-v5", max_kl=0.01, cg_damping=0.1).cg_damping == 0.1


def test_per_task_settings_apply_to_every_version_of_the_task():
    """rl-zoo3's settings are the task's, not the -v5 id's: HalfCheetah-v4 gets δ 0.04 (× 6 action
    dimensions) and Swimmer-v4 γ 0.9999 too."""
    for task in ("HalfCheetah", "Swimmer"):
        v4, v5 = preset(f"{task}-v4"), preset(f"{task}-v5")
        assert (v4.max_kl, v4.cg_damping, v4.discount_factor) == (v5.max_kl, v5.cg_damping, v5.discount_factor)
    assert preset("HalfCheetah-v4").max_kl == pytest.approx(6 * 0.04)
    assert preset("Swimmer-v4").discount_factor == 0.9999
