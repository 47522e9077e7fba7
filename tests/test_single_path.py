"""SinglePathCollector: its compiled rollout against a step-by-step TF-Agents rollout."""
import threading

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import random_tf_environment, tf_py_environment
from tf_agents.metrics import tf_metrics
from tf_agents.networks import actor_distribution_rnn_network
from tf_agents.policies import actor_policy, greedy_policy, random_tf_policy
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory

from tftrpo.envs import load, load_batched
from tftrpo.presets import preset
from tftrpo.sampling.episodes import BatchedEpisodeTracker
from tftrpo.sampling.single_path import SinglePathCollector
from tftrpo.train import make_agent


def _reference_rollouts(tf_env, policy, steps, collects, metrics=()):
    """`collects` [B, steps] batches stepped one eager policy call at a time into a TF-Agents buffer."""
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(policy.trajectory_spec, tf_env.batch_size, steps)
    time_step = tf_env.reset()
    batches = []
    for _ in range(collects):
        buffer.clear()
        for _ in range(steps):
            action_step = policy.action(time_step)
            next_time_step = tf_env.step(action_step.action)
            transition = trajectory.from_transition(time_step, action_step, next_time_step)
            buffer.add_batch(transition)
            for metric in metrics:
                metric(transition)
            time_step = next_time_step
        batches.append(buffer.gather_all())
    return batches


@pytest.mark.parametrize("numpy_policy", [False, True], ids=["tf-loop", "numpy-policy"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Hopper-v5"])
def test_rollout_equals_tf_agents_step_by_step(env_id, numpy_policy):
    """Same envs, same deterministic policy: the batches of TF-Agents' step-by-step rollout.

    Step types, discounts and CartPole's actions must be identical; floats agree to a
    tolerance. The NumPy policy rounds its float32 sums in another order than TF's kernels
    (~1e-7). The compiled TF loop is bit-identical where TF runs the same kernels in a graph
    as eagerly; with oneDNN on CPUs with AVX-512/AMX the graph's fused MatMul rounds
    otherwise (~2e-8 on Hopper's observations here; bit-identical with
    TF_ENABLE_ONEDNN_OPTS=0), hence a 100× tighter tolerance for it.
    """
    tf.random.set_seed(0)
    # Time limits of 30 steps: episodes end inside every batch whatever the policy does.
    tf_env = tf_py_environment.TFPyEnvironment(load_batched(env_id, 2, seed=3, max_episode_steps=30))
    agent = make_agent(preset(env_id), tf_env, tf.Variable(0, dtype=tf.int64))
    collector = SinglePathCollector(load_batched(env_id, 2, seed=3, max_episode_steps=30), agent.policy, 100,
                                    numpy_policy=numpy_policy)
    assert collector.uses_numpy_policy == numpy_policy
    returns = tf_metrics.AverageReturnMetric(batch_size=2, buffer_size=1000)
    expected = _reference_rollouts(tf_env, agent.policy, 100, 3, [returns])
    steps = 0

    def check(got, want):
        assert got.dtype == want.dtype and got.shape == want.shape
        if got.dtype.is_floating:
            tolerance = 1e-4 if numpy_policy else 1e-6
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tolerance, atol=tolerance)
        else:
            np.testing.assert_array_equal(got.numpy(), want.numpy())

    for want in expected:
        got = collector.collect()
        tf.nest.map_structure(check, got, want)
        assert got.reward.shape == (2, 100)
        steps += collector.last_env_steps
        assert collector.last_env_steps == int(np.sum(want.step_type.numpy() != ts.StepType.LAST))
    # Episodes ended inside the batches: the boundaries were exercised.
    all_steps = np.concatenate([b.step_type.numpy() for b in expected], axis=1)
    assert (all_steps == ts.StepType.LAST).sum() >= 2 * 300 // 32  # a LAST at least every 32 time steps
    assert steps < 2 * 100 * 3


def test_numpy_policy_collects_from_the_collect_policy_as_updated():
    """The agent's collect policy, mirrored on request; each collect reads its current weights."""
    tf.random.set_seed(0)
    env = load_batched("Pendulum-v1", 2, seed=0)
    agent = make_agent(preset("Pendulum-v1"), tf_py_environment.TFPyEnvironment(env), tf.Variable(0, dtype=tf.int64))
    assert SinglePathCollector(env, agent.collect_policy, 200).uses_numpy_policy  # by default, when it can
    assert not SinglePathCollector(env, agent.collect_policy, 200, numpy_policy=False).uses_numpy_policy
    collector = SinglePathCollector(env, agent.collect_policy, 200, seed=1, numpy_policy=True)
    assert collector.uses_numpy_policy
    before = collector.collect()
    assert before.action.dtype == tf.float32 and before.action.shape == (2, 200, 1)
    # Sampled, not greedy: actions spread around the policy's mean with its std (log σ = 0).
    residual = before.action - agent.collect_policy.distribution(
        ts.TimeStep(before.step_type, before.reward, before.discount, before.observation)).action.mean()
    np.testing.assert_allclose(np.std(residual.numpy()), 1.0, rtol=0.1)
    agent._actor_net._projection_networks._bias.bias.assign([np.log(0.01)])  # σ = 0.01
    after = collector.collect()
    residual = after.action - agent.collect_policy.distribution(
        ts.TimeStep(after.step_type, after.reward, after.discount, after.observation)).action.mean()
    np.testing.assert_allclose(np.std(residual.numpy()), 0.01, rtol=0.1)
    # The same seed gives the same batches.
    again = SinglePathCollector(load_batched("Pendulum-v1", 2, seed=0), agent.collect_policy, 200, seed=1,
                                numpy_policy=True)
    agent._actor_net._projection_networks._bias.bias.assign([0.0])
    tf.nest.map_structure(lambda a, b: np.testing.assert_array_equal(a.numpy(), b.numpy()), again.collect(), before)


def test_episode_tracker_matches_tf_agents_metrics():
    """Returns and lengths of episodes in [B, T] batches, vs TF-Agents' per-step metrics."""
    tf.random.set_seed(0)
    tf_env = tf_py_environment.TFPyEnvironment(load_batched("CartPole-v1", 2, seed=5))
    agent = make_agent(preset("CartPole-v1"), tf_env, tf.Variable(0, dtype=tf.int64))
    returns = tf_metrics.AverageReturnMetric(batch_size=2, buffer_size=1000)
    lengths = tf_metrics.AverageEpisodeLengthMetric(batch_size=2, buffer_size=1000)
    # TF-Agents records an episode at its boundary step (LAST → FIRST), the tracker at its
    # last transition: an episode ending in the final column is only the tracker's.
    batches = _reference_rollouts(tf_env, agent.collect_policy, 50, 4, [returns, lengths])
    tracker = BatchedEpisodeTracker(2, size=1000)
    for batch in batches:
        tracker.update(batch.step_type.numpy(), batch.next_step_type.numpy(), batch.reward.numpy())
    last = batches[-1]
    pending = int(np.sum((last.next_step_type.numpy()[:, -1] == ts.StepType.LAST)
                         & (last.step_type.numpy()[:, -1] != ts.StepType.LAST)))
    episodes = tracker.recent.episodes()
    assert len(episodes) >= 5
    compared = episodes if not pending else episodes[:-pending]
    np.testing.assert_allclose(np.mean([r for r, _ in compared]), float(returns.result()), rtol=1e-6)
    np.testing.assert_allclose(np.mean([n for _, n in compared]), float(lengths.result()), rtol=1e-6)
    # CartPole pays 1 per step: every episode's return equals its length.
    assert all(r == n for r, n in episodes)


def test_episode_tracker_carries_episodes_across_batches():
    first, mid, last = ts.StepType.FIRST, ts.StepType.MID, ts.StepType.LAST
    tracker = BatchedEpisodeTracker(1)
    # Episode of 3 env steps split 2 | 1 across batches, then a boundary and a new episode.
    tracker.update(np.array([[first, mid]]), np.array([[mid, mid]]), np.array([[1.0, 2.0]]))
    assert tracker.recent.mean() == (0.0, 0.0)
    tracker.update(np.array([[mid, last, first]]), np.array([[last, first, mid]]), np.array([[4.0, 0.0, 8.0]]))
    assert tracker.recent.mean() == (7.0, 3.0)


def test_recurrent_policy_state_is_carried_through_the_rollout():
    """An RNN policy runs in the compiled loop with its state carried from step to step and
    across collects, and reset at episode starts: its greedy actions equal those of a
    step-by-step TF-Agents loop that passes the state along, and differ from a loop that
    does not (so the state matters to them)."""
    tf.keras.utils.set_random_seed(0)  # Keras draws the LSTM's initializer seeds from Python's random

    def make_env():  # 12-step episodes: resets inside every batch
        return tf_py_environment.TFPyEnvironment(load_batched("CartPole-v1", 2, seed=0, max_episode_steps=12))

    tf_env = make_env()
    net = actor_distribution_rnn_network.ActorDistributionRnnNetwork(
        tf_env.observation_spec(), tf_env.action_spec(), lstm_size=(8,))
    policy = greedy_policy.GreedyPolicy(actor_policy.ActorPolicy(tf_env.time_step_spec(), tf_env.action_spec(), net))
    collector = SinglePathCollector(tf_env, policy, 20)
    assert not collector.uses_numpy_policy
    got = np.concatenate([collector.collect().action.numpy() for _ in range(3)], axis=1)

    def step_by_step(carry_state):
        env = make_env()
        time_step, state, actions = env.reset(), policy.get_initial_state(2), []
        for _ in range(60):
            step = policy.action(time_step, state if carry_state else policy.get_initial_state(2))
            actions.append(step.action.numpy())
            time_step, state = env.step(step.action), step.state
        return np.stack(actions, axis=1)

    np.testing.assert_array_equal(got, step_by_step(carry_state=True))
    assert not np.array_equal(got, step_by_step(carry_state=False))


def test_unbatched_py_env_and_bad_arguments():
    env = load("CartPole-v1", seed=0)
    tf_env = tf_py_environment.TFPyEnvironment(load("CartPole-v1", seed=0))
    agent = make_agent(preset("CartPole-v1"), tf_env, tf.Variable(0, dtype=tf.int64))
    threads = threading.active_count()
    collector = SinglePathCollector(env, agent.collect_policy, 16)
    assert collector.num_envs == 1 and collector.collect().step_type.shape == (1, 16)
    assert threading.active_count() == threads  # one env is stepped in place: no thread pool per collector
    with pytest.raises(ValueError, match="steps_per_env"):
        SinglePathCollector(env, agent.collect_policy, 1)
    with pytest.raises(TypeError, match="PyEnvironment or a batched TFEnvironment"):
        SinglePathCollector("CartPole-v1", agent.collect_policy, 16)
    rnn_policy = actor_policy.ActorPolicy(tf_env.time_step_spec(), tf_env.action_spec(),
                                          actor_distribution_rnn_network.ActorDistributionRnnNetwork(
                                              tf_env.observation_spec(), tf_env.action_spec(), lstm_size=(4,)))
    with pytest.raises(ValueError, match="numpy_policy=True.*recurrent"):
        SinglePathCollector(env, rnn_policy, 16, numpy_policy=True)


def test_tf_environment_batches_are_exactly_t_contiguous_steps():
    """A batched TFEnvironment (not a TFPyEnvironment): T batched steps per collect, none lost.

    RandomTFEnvironment ends all its envs' episodes together with probability 0.3 a step
    and resets them on the next step (LAST → FIRST, reward 0). Consecutive batches must
    continue each other: the first time step of a batch is the env's current time step
    after the previous collect, and step types chain across the batch edge.
    """
    tf.random.set_seed(0)
    num_envs, steps, collects = 2, 12, 6
    time_step_spec = ts.time_step_spec(
        tensor_spec.BoundedTensorSpec([3], tf.float32, -1.0, 1.0),
        tensor_spec.BoundedTensorSpec([], tf.float32, 0.0, 1.0))
    action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 2)
    env = random_tf_environment.RandomTFEnvironment(time_step_spec, action_spec, batch_size=num_envs,
                                                    episode_end_probability=0.3)
    policy = random_tf_policy.RandomTFPolicy(time_step_spec, action_spec)
    collector = SinglePathCollector(env, policy, steps, episodes_to_average=1000)
    batches, total_steps = [], 0
    current = env.current_time_step()
    for _ in range(collects):
        batch = collector.collect()
        step_type, next_step_type = batch.step_type.numpy(), batch.next_step_type.numpy()
        assert batch.step_type.shape == (num_envs, steps) and batch.observation.shape == (num_envs, steps, 3)
        # Contiguous with the previous collect: its last next time step is this batch's first.
        np.testing.assert_array_equal(step_type[:, 0], current.step_type.numpy())
        np.testing.assert_array_equal(batch.observation.numpy()[:, 0], current.observation.numpy())
        np.testing.assert_array_equal(step_type[:, 1:], next_step_type[:, :-1])  # and within it
        current = env.current_time_step()
        np.testing.assert_array_equal(next_step_type[:, -1], current.step_type.numpy())
        assert collector.last_env_steps == int(np.sum(step_type != ts.StepType.LAST))
        total_steps += collector.last_env_steps
        batches.append(batch)
    step_type = np.concatenate([b.step_type.numpy() for b in batches], axis=1)
    next_step_type = np.concatenate([b.next_step_type.numpy() for b in batches], axis=1)
    reward = np.concatenate([b.reward.numpy() for b in batches], axis=1)
    assert (step_type == ts.StepType.LAST).sum() >= 2 * num_envs  # episodes ended: boundaries exercised
    assert total_steps < num_envs * steps * collects
    # Episodes of the concatenated batches, computed independently: each starts at a FIRST
    # and ends at a transition into LAST; returns sum the rewards of its steps.
    episodes = []
    for b in range(num_envs):
        ret, length, started = 0.0, 0, False
        for t in range(step_type.shape[1]):
            if step_type[b, t] == ts.StepType.FIRST:
                ret, length, started = 0.0, 0, True
            if step_type[b, t] == ts.StepType.LAST:
                continue
            ret, length = ret + float(reward[b, t]), length + 1
            if next_step_type[b, t] == ts.StepType.LAST and started:
                episodes.append((ret, length))
    assert len(episodes) >= 4
    mean_return, mean_length = collector.recent_episodes()
    np.testing.assert_allclose(mean_return, np.mean([r for r, _ in episodes]), rtol=1e-5)
    assert mean_length == pytest.approx(np.mean([n for _, n in episodes]))
