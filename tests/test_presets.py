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
