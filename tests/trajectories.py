"""Builds [B, T] TF-Agents trajectories with the layout drivers write (for tests)."""
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory


def episode_layout(batch_size, length, episode_lengths, truncate_every=2, offset=0):
    """step_type, next_step_type, discount [B, T] for back-to-back episodes per row.

    Each episode is FIRST, MID…, then a LAST boundary entry; every
    `truncate_every`-th episode ends by truncation (discount 1), others terminate.
    """
    step_type = np.zeros((batch_size, length + 1), np.int32)
    discount = np.ones((batch_size, length + 1), np.float32)
    for b in range(batch_size):
        t, k = 0, 0
        ep_len = episode_lengths[(b + offset) % len(episode_lengths)]
        pos = (b * 3 + offset) % ep_len  # rows start mid-episode
        while t < length + 1:
            if pos == 0:
                step_type[b, t] = ts.StepType.FIRST
            elif pos == ep_len:
                step_type[b, t] = ts.StepType.LAST
                if t > 0 and k % truncate_every != truncate_every - 1:
                    discount[b, t - 1] = 0.0  # the step into LAST was a termination
                k += 1
            else:
                step_type[b, t] = ts.StepType.MID
            pos = 0 if pos == ep_len else pos + 1
            t += 1
    return step_type[:, :-1], step_type[:, 1:], discount[:, :-1]


def random_experience(agent, batch_size=3, length=40, seed=0, episode_lengths=(9, 13, 17)):
    """A driver-shaped Trajectory for `agent.collect_data_spec` with random data.

    Actions are sampled from the agent's collect policy, as a driver would.
    """
    rng = np.random.default_rng(seed)
    spec = agent.collect_data_spec
    obs = tensor_spec.sample_spec_nest(spec.observation, seed=seed, outer_dims=(batch_size, length))
    obs = tf.nest.map_structure(
        lambda o, s: tf.constant(rng.normal(size=o.shape).astype(s.dtype.as_numpy_dtype))
        if s.dtype.is_floating else o,
        obs, spec.observation,
    )
    step_type, next_step_type, discount = episode_layout(batch_size, length, episode_lengths)
    time_steps = ts.TimeStep(
        step_type=tf.constant(step_type),
        reward=tf.zeros((batch_size, length)),
        discount=tf.ones((batch_size, length)),
        observation=obs,
    )
    actions = agent.collect_policy.action(time_steps, seed=seed).action
    return trajectory.Trajectory(
        step_type=tf.constant(step_type),
        observation=obs,
        action=actions,
        policy_info=(),
        next_step_type=tf.constant(next_step_type),
        reward=tf.constant(rng.normal(size=(batch_size, length)).astype(np.float32)),
        discount=tf.constant(discount),
    )


def assert_refused_without_change(agent, experience, match, **train_kwargs):
    """`agent.train(experience, **train_kwargs)` raises InvalidArgumentError matching `match`,
    and every variable of the agent is bit-identical afterwards."""
    before = [v.numpy().copy() for v in agent.variables]
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        agent.train(experience, **train_kwargs)
    for variable, old in zip(agent.variables, before):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.name)
