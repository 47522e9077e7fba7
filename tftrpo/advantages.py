"""Advantage estimation on TF-Agents trajectories shaped [B, T].

The single-path estimator of Section 5.1 needs Q̂(s, a) − V(s); like every modern
TRPO we use generalised advantage estimation (GAE, Schulman et al. 2016, Eq. 16),
which with λ = 1 is the paper's discounted return minus a baseline.

Trajectory conventions (those of TF-Agents drivers): entry t holds s_t, a_t, the
reward r_t that followed a_t, `discount[t]` of the *next* time step and
`next_step_type[t]`. An entry whose `step_type` is LAST is a boundary (its action
was never executed) and gets no advantage. When `next_step_type[t]` is LAST the
episode ended after a_t: by termination if `discount[t] == 0` (no bootstrap), by
truncation (time limit) otherwise, in which case V(s_{t+1}) of the final
observation, stored at entry t+1, is bootstrapped. The last entry of each row has
no successor in the batch: it only provides V(s_T) for its predecessor.

`tf_agents.utils.value_ops.generalized_advantage_estimation` uses one discount both
to bootstrap and to decay the trace, so it cannot bootstrap a truncated episode
without leaking advantages across the episode boundary; hence this module.
"""
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

__all__ = ["training_mask", "generalized_advantage_estimation", "discounted_reverse_cumsum"]


def discounted_reverse_cumsum(values: tf.Tensor, decays: tf.Tensor) -> tf.Tensor:
    """y_t = x_t + d_t · y_{t+1} along axis 1 of [B, T] tensors, with y_T = 0.

    The recurrence is associative, (a, d) ∘ (b, e) = (a + d·b, d·e), so a
    Hillis–Steele scan computes it in ⌈log₂ T⌉ vectorised steps instead of T
    sequential ones (a `tf.scan` over T = 1024 costs ~10 ms on a CPU).
    """
    y = tf.convert_to_tensor(values)
    d = tf.cast(decays, y.dtype)

    def combine(shift, y, d):
        pad = tf.zeros_like(y[:, :shift])
        return shift * 2, y + d * tf.concat([y[:, shift:], pad], axis=1), d * tf.concat([d[:, shift:], pad], axis=1)

    length = tf.shape(y)[1]
    _, y, _ = tf.while_loop(lambda shift, y, d: shift < length, combine, (tf.constant(1), y, d))
    return y


def training_mask(step_type: tf.Tensor) -> tf.Tensor:
    """1.0 for entries [B, T] that carry a trainable (s, a) pair, else 0.0.

    Excludes boundary entries (step_type LAST) and the final column, whose
    successor state lies outside the batch.
    """
    not_boundary = tf.not_equal(step_type, ts.StepType.LAST)
    has_successor = tf.concat(
        [tf.ones_like(step_type[:, :-1], tf.bool), tf.zeros_like(step_type[:, -1:], tf.bool)], axis=1
    )
    return tf.cast(tf.logical_and(not_boundary, has_successor), tf.float32)


def generalized_advantage_estimation(
    rewards: tf.Tensor,
    values: tf.Tensor,
    discounts: tf.Tensor,
    next_step_types: tf.Tensor,
    gamma: float,
    lambda_: float,
) -> tf.Tensor:
    """GAE(γ, λ) advantages for [B, T] trajectories (Schulman et al. 2016, Eq. 16).

    δ_t = r_t + γ·d_t·V(s_{t+1}) − V(s_t), with d_t = `discounts[t]` (0 on termination,
    the env's discount, 1 by default, on truncation or mid-episode), and
    Â_t = δ_t + γλ·d_t·c_t·Â_{t+1}, where c_t = 0 when the episode ended after a_t
    (either way) so that no advantage leaks across episodes: the per-step discount γ·d_t
    of δ_t also decays the trace, as in TF-Agents' `generalized_advantage_estimation`.
    Returns [B, T] advantages; the last column (no successor) is 0 and entries of
    boundary steps are meaningless: weight them with `training_mask`.
    """
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    values = tf.convert_to_tensor(values, tf.float32)
    discounts = tf.cast(discounts, tf.float32)
    next_values = values[:, 1:]
    episode_continues = tf.cast(tf.not_equal(next_step_types[:, :-1], ts.StepType.LAST), tf.float32)
    deltas = rewards[:, :-1] + gamma * discounts[:, :-1] * next_values - values[:, :-1]
    decay = gamma * lambda_ * discounts[:, :-1] * episode_continues

    advantages = discounted_reverse_cumsum(deltas, decay)  # Â_t = δ_t + decay_t · Â_{t+1}
    return tf.concat([advantages, tf.zeros_like(values[:, -1:])], axis=1)
