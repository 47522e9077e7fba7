"""Run an exported tftrpo policy with plain TensorFlow and Gymnasium: no tftrpo import.

    python examples/play_saved_model.py savedmodels/InvertedPendulum-v5-shipped InvertedPendulum-v5

This is what a deployment does: load the PolicySaver SavedModel, feed it raw observations
through its `action` signature (the observation normaliser is inside), step the env.
`tftrpo-play` is the same loop with Atari preprocessing, videos and more options.
"""
import sys

import gymnasium as gym
import numpy as np
import tensorflow as tf
import tensorflow_probability  # noqa: F401  registers the distribution type specs of the signature

export_dir, env_id = sys.argv[1], sys.argv[2]
action_fn = tf.saved_model.load(export_dir).signatures["action"]
env = gym.make(env_id)
for episode in range(3):
    observation, _ = env.reset(seed=episode)
    step_type, total, done = 0, 0.0, False  # StepType.FIRST on the first step
    while not done:
        out = action_fn(**{
            "0/step_type": tf.constant([step_type], tf.int32),
            "0/reward": tf.zeros([1], tf.float32),
            "0/discount": tf.ones([1], tf.float32),
            "0/observation": tf.constant(np.asarray(observation, np.float32)[None]),
        })
        observation, reward, terminated, truncated, _ = env.step(out["action"].numpy()[0])
        total, step_type, done = total + reward, 1, terminated or truncated
    print(f"episode {episode + 1}: return {total:.1f}")
