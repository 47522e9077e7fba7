"""Real learning in a real TF-Agents loop: driver → replay buffer → agent.train."""
import numpy as np
import tensorflow as tf
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.metrics import tf_metrics
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common

from tftrpo import TRPOAgent, networks
from tftrpo.envs import load, load_batched


def test_cartpole_reaches_475_in_a_plain_tf_agents_loop():
    tf.random.set_seed(0)
    num_envs, steps_per_env, budget = 2, 512, 60_000
    env = tf_py_environment.TFPyEnvironment(load_batched("CartPole-v1", num_envs=num_envs, seed=0))
    eval_env = tf_py_environment.TFPyEnvironment(load("CartPole-v1", seed=100))
    agent = TRPOAgent(
        env.time_step_spec(), env.action_spec(),
        networks.actor_network(env.observation_spec(), env.action_spec()),
        networks.value_network(env.observation_spec()),
        tf.keras.optimizers.Adam(1e-3), max_kl=0.02,
        train_step_counter=tf.Variable(0, dtype=tf.int64),
    )
    # The driver counts non-boundary steps only, so it takes a few more batched steps than
    # steps_per_env when episodes end: headroom, or the buffer wraps and drops the oldest.
    capacity = 2 * steps_per_env
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        agent.collect_data_spec, batch_size=num_envs, max_length=capacity)
    collect = common.function(dynamic_step_driver.DynamicStepDriver(
        env, agent.collect_policy, observers=[buffer.add_batch], num_steps=num_envs * steps_per_env).run)
    eval_metric = tf_metrics.AverageReturnMetric(buffer_size=10)
    evaluate = common.function(dynamic_episode_driver.DynamicEpisodeDriver(
        eval_env, agent.policy, observers=[eval_metric], num_episodes=10).run)

    steps, greedy_return, history = 0, 0.0, []
    while steps < budget:
        collect()
        experience = buffer.gather_all()
        rows, length = experience.step_type.shape[:2]
        assert rows == num_envs and steps_per_env <= length < capacity  # nothing wrapped
        info = agent.train(experience)
        buffer.clear()
        steps += int(np.sum(experience.step_type.numpy() != ts.StepType.LAST))  # the resets are not steps
        history.append(float(info.extra.kl))
        if len(history) % 3 == 0:
            eval_metric.reset()
            evaluate()
            greedy_return = float(eval_metric.result())
            print(f"CartPole-v1: {steps} env steps, greedy return {greedy_return:.1f}")
            if greedy_return >= 475:
                break
    assert greedy_return >= 475, f"greedy return {greedy_return} after {steps} steps"
    assert max(history) <= 0.02 * 1.0001  # every accepted step stayed in the trust region
    assert np.all(np.isfinite(history))


def test_episode_driver_batches_train_within_the_trust_region():
    """DynamicEpisodeDriver rows (several whole episodes per row, B = 2) train as well."""
    tf.random.set_seed(1)
    env = tf_py_environment.TFPyEnvironment(load_batched("CartPole-v1", num_envs=2, seed=3))
    agent = TRPOAgent(
        env.time_step_spec(), env.action_spec(),
        networks.actor_network(env.observation_spec(), env.action_spec()),
        networks.value_network(env.observation_spec()),
        tf.keras.optimizers.Adam(1e-3), max_kl=0.01, train_step_counter=tf.Variable(0, dtype=tf.int64),
    )
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(agent.collect_data_spec, batch_size=2, max_length=2000)
    driver = dynamic_episode_driver.DynamicEpisodeDriver(
        env, agent.collect_policy, observers=[buffer.add_batch], num_episodes=6)
    for _ in range(2):
        driver.run()
        experience = buffer.gather_all()
        buffer.clear()
        info = agent.train(experience)
        assert experience.step_type.shape[0] == 2
        assert not bool(info.extra.step_rejected)
        assert float(info.extra.kl) <= 0.01 * 1.0001
        assert int(info.extra.num_samples) < experience.step_type.shape[0] * experience.step_type.shape[1]
