"""Reward scaling and observation statistics against plain numpy."""
import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from tftrpo.advantages import discounted_reverse_cumsum
from tftrpo.normalization import ObservationNormalizer, RewardNormalizer
from trajectories import episode_layout


def numpy_reward_scaling(batches, gamma, clip=10.0):
    """VecNormalize's scheme, step by step: R = r + γ R (reset at FIRST); r / std(all R so far)."""
    carry, seen, out = None, [], []
    for rewards, step_types in batches:
        b, t = rewards.shape
        carry = np.zeros(b) if carry is None or len(carry) != b else carry
        returns = np.zeros_like(rewards)
        for i in range(b):
            running = carry[i]
            for j in range(t):
                running = rewards[i, j] + (0.0 if step_types[i, j] == ts.StepType.FIRST else gamma * running)
                returns[i, j] = running
        carry = returns[:, -1]
        seen.extend(returns[step_types != ts.StepType.LAST].tolist())
        out.append(np.clip(rewards / np.sqrt(np.var(seen) + 1e-8), -clip, clip))
    return out


def test_reward_scaling_matches_numpy_across_batches():
    rng = np.random.default_rng(0)
    normalizer = RewardNormalizer(gamma=0.97)
    batches = []
    for offset in range(3):
        step_type, _, _ = episode_layout(3, 50, (11, 17, 23), offset=offset)
        batches.append((rng.normal(1.0, 2.0, size=(3, 50)).astype(np.float32), step_type))
    expected = numpy_reward_scaling(batches, 0.97)
    for (rewards, step_types), want in zip(batches, expected):
        got = normalizer.scale(tf.constant(rewards), tf.constant(step_types)).numpy()
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)


def test_reward_scaling_compiled_equals_eager():
    step_type, _, _ = episode_layout(2, 40, (9, 13))
    rewards = tf.constant(np.random.default_rng(1).normal(size=(2, 40)).astype(np.float32))
    eager, compiled = RewardNormalizer(0.99), RewardNormalizer(0.99)
    scale = tf.function(compiled.scale, input_signature=(tf.TensorSpec([None, None]), tf.TensorSpec([None, None], tf.int32)))
    for _ in range(2):
        np.testing.assert_allclose(scale(rewards, tf.constant(step_type)).numpy(),
                                   eager.scale(rewards, tf.constant(step_type)).numpy(), rtol=1e-5)


def test_discounted_reverse_cumsum_matches_a_loop():
    rng = np.random.default_rng(2)
    for length in (1, 2, 7, 64, 129):
        x = rng.normal(size=(3, length)).astype(np.float32)
        d = (rng.uniform(size=(3, length)) * (rng.uniform(size=(3, length)) > 0.1)).astype(np.float32)
        want = np.zeros_like(x)
        for i in range(3):
            acc = 0.0
            for j in reversed(range(length)):
                acc = x[i, j] + d[i, j] * acc
                want[i, j] = acc
        np.testing.assert_allclose(discounted_reverse_cumsum(tf.constant(x), tf.constant(d)).numpy(), want,
                                   rtol=1e-5, atol=1e-5)


def test_observation_normalizer_uses_its_clip_everywhere():
    spec = tf.TensorSpec([2], tf.float32)
    normalizer = ObservationNormalizer(spec, clip_value=3.0)
    data = np.random.default_rng(3).normal([5.0, -2.0], [2.0, 0.5], size=(500, 2)).astype(np.float32)
    normalizer.update(tf.constant(data))
    out = normalizer.normalize(tf.constant(data)).numpy()
    np.testing.assert_allclose(out.mean(0), 0.0, atol=0.05)
    assert np.abs(out).max() <= 3.0
    far = normalizer.normalize(tf.constant([[1e6, 1e6]])).numpy()
    np.testing.assert_allclose(far, [[3.0, 3.0]])


def test_observation_normalizer_is_the_identity_before_statistics():
    spec = tf.TensorSpec([3], tf.float32)
    normalizer = ObservationNormalizer(spec, clip_value=10.0)
    obs = np.array([[0.5, -2.0, 1e-3], [30.0, -0.2, 4.0]], np.float32)
    # No update yet: unchanged up to the clip (TF-Agents' own estimate would scale by 1e4).
    np.testing.assert_allclose(normalizer.normalize(tf.constant(obs)).numpy(), np.clip(obs, -10.0, 10.0), rtol=1e-6)
    # One sample gives no variance either: centred on it, still unit scale.
    normalizer.update(tf.constant(obs[:1]))
    np.testing.assert_allclose(normalizer.normalize(tf.constant(obs[1:])).numpy(),
                               np.clip(obs[1:] - obs[:1], -10.0, 10.0), rtol=1e-5)
    # From two samples on, the sample statistics as numpy computes them.
    normalizer.update(tf.constant(obs[1:]))
    want = np.clip((obs - obs.mean(0)) / np.sqrt(obs.var(0) + 1e-8), -10.0, 10.0)
    np.testing.assert_allclose(normalizer.normalize(tf.constant(obs)).numpy(), want, rtol=1e-4, atol=1e-5)


def test_observation_normalizer_streams_the_mean_and_variance_of_everything_seen():
    """Chan et al.'s merge over [B, T] batches of shifting, badly scaled data equals numpy over all of it."""
    rng = np.random.default_rng(4)
    normalizer = ObservationNormalizer(tf.TensorSpec([3], tf.float32))
    seen = []
    for i in range(6):
        batch = (rng.normal(size=(2, 257, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 100.0] + i).astype(np.float32)
        normalizer.update(tf.constant(batch), outer_dims=[0, 1])
        seen.append(batch.reshape(-1, 3))
    mean, variance = normalizer.mean_and_variance()
    everything = np.concatenate(seen).astype(np.float64)
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(variance, everything.var(0), rtol=1e-4)
