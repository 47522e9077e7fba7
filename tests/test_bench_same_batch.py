"""bench/experiments/sb3_same_batch.py's layout of an sb3-contrib rollout buffer as a TF-Agents
trajectory (in CI; no sb3 venv needed): tftrpo's GAE on the laid-out batch must give the
advantages sb3-contrib's recurrence gives on the buffer, and exactly the buffer's steps train."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "experiments"))
import sb3_same_batch  # noqa: E402

from tftrpo import advantages  # noqa: E402

GAMMA, LAMBDA = 0.99, 0.95


def sb3_gae(rewards, values, episode_starts, last_values, last_dones):
    """sb3's RolloutBuffer.compute_returns_and_advantage, written out on [T, n_envs] arrays."""
    steps = len(rewards)
    adv = np.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(steps)):
        if t == steps - 1:
            not_terminal, next_values = 1.0 - last_dones, last_values
        else:
            not_terminal, next_values = 1.0 - episode_starts[t + 1], values[t + 1]
        delta = rewards[t] + GAMMA * next_values * not_terminal - values[t]
        last = delta + GAMMA * LAMBDA * not_terminal * last
        adv[t] = last
    return adv


@pytest.mark.parametrize("last_dones", [(0, 1), (1, 0), (0, 0)])
def test_laid_out_batch_gives_sb3_advantages(last_dones):
    rng = np.random.default_rng(0)
    steps, n_envs, obs_dim = 40, 2, 3
    episode_starts = (rng.random((steps, n_envs)) < 0.15).astype(np.float32)
    episode_starts[0] = 1.0
    episode_starts[1:3, 0] = 1.0  # back-to-back episode ends
    data = {"observations": rng.normal(size=(steps, n_envs, obs_dim)).astype(np.float32),
            "actions": rng.normal(size=(steps, n_envs, 2)).astype(np.float32),
            "rewards": rng.normal(size=(steps, n_envs)).astype(np.float32),
            "episode_starts": episode_starts,
            "last_dones": np.array(last_dones, bool),
            "before/last_obs": rng.normal(size=(n_envs, obs_dim)).astype(np.float32)}
    values = rng.normal(size=(steps, n_envs)).astype(np.float32)
    last_values = rng.normal(size=n_envs).astype(np.float32)

    (step_type, observation, action, next_step_type, reward, discount), where = sb3_same_batch.as_trajectory(data)
    assert observation.shape[:2] == step_type.shape and action.shape[-1] == 2
    # V on the trajectory: the buffer's values where its steps went, the bootstrap in the last
    # column, and noise on boundary and padding steps (their values must not leak in).
    traj_values = rng.normal(size=step_type.shape).astype(np.float32) * 100
    for b, idx in enumerate(where):
        traj_values[b, idx] = values[:, b]
        np.testing.assert_array_equal(observation[b, idx], data["observations"][:, b])
        if not last_dones[b]:
            traj_values[b, -1] = last_values[b]
            np.testing.assert_array_equal(observation[b, -1], data["before/last_obs"][b])

    adv = advantages.generalized_advantage_estimation(reward, traj_values, discount, next_step_type, GAMMA, LAMBDA)
    got = np.stack([np.asarray(adv)[b, idx] for b, idx in enumerate(where)], axis=1)
    expected = sb3_gae(data["rewards"], values, episode_starts, last_values, np.array(last_dones, np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    # Exactly the buffer's steps carry training weight.
    mask = np.asarray(advantages.training_mask(step_type))
    trained = np.zeros_like(mask, bool)
    for b, idx in enumerate(where):
        trained[b, idx] = True
    np.testing.assert_array_equal(mask > 0, trained)
