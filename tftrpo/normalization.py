"""Running statistics for observations, held in the agent and baked into its policies."""
import tensorflow as tf
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import tensor_normalizer

from tftrpo.advantages import discounted_reverse_cumsum

__all__ = ["ObservationNormalizer", "RewardNormalizer"]


class ObservationNormalizer(tensor_normalizer.StreamingTensorNormalizer):
    """TF-Agents' streaming (Chan et al.) mean/variance normaliser with a fixed clip.

    `ActorPolicy` calls `normalize(observation)` with no arguments; carrying the clip
    value here keeps training, collection and the exported SavedModel identical.
    """

    def __init__(self, tensor_spec, clip_value: float = 10.0, scope: str = "normalize_observations"):
        super().__init__(tensor_spec, scope=scope)
        self._clip_value = float(clip_value)

    variance_epsilon = 1e-8  # ε in (x − μ)/√(σ² + ε)
    _MIN_COUNT = 2.0  # samples before the variance estimate is used (until then, 1)

    def normalize(self, tensor, clip_value=None, center_mean=True, variance_epsilon=None):
        clip = self._clip_value if clip_value is None else clip_value
        epsilon = self.variance_epsilon if variance_epsilon is None else variance_epsilon
        return super().normalize(tensor, clip_value=clip, center_mean=center_mean, variance_epsilon=epsilon)

    def mean_and_variance(self):
        """The current estimates as NumPy arrays, nested like the spec: what `normalize` uses."""
        means, variances = self._get_mean_var_estimates()
        pack = lambda xs: tf.nest.pack_sequence_as(self._tensor_spec, [x.numpy() for x in xs])
        return pack(means), pack(variances)

    def _get_mean_var_estimates(self):
        """Mean and variance per element; the identity (0, 1) until two samples are seen.

        TF-Agents starts from count ε and a zero sum of squares, so before the first
        `update` its variance is 0 and `normalize` would multiply observations by
        1/√1e-8 = 10⁴, clipping them all to ±clip: the first batch would be collected
        and trained on sign features. VecNormalize starts from mean 0, variance 1;
        so does this.
        """
        means, variances = super()._get_mean_var_estimates()
        variances = [tf.where(count < self._MIN_COUNT, tf.ones_like(var), var)
                     for var, count in zip(variances, self._count)]
        return means, variances

    def has_statistics(self) -> tf.Tensor:
        """Whether `update` has seen two samples yet; until then `normalize` uses mean 0, variance 1."""
        return tf.reduce_all([tf.reduce_all(count >= self._MIN_COUNT) for count in self._count])

    @property
    def clip_value(self) -> float:
        return self._clip_value


class RewardNormalizer(tf.Module):
    """Scales rewards by the running standard deviation of the discounted return.

    The scheme of baselines' VecNormalize (used by rl-zoo3's TRPO settings): keep
    R_t = r_t + γ·R_{t−1} per environment (reset at episode starts), stream its
    variance, and divide rewards by its standard deviation. Works on [B, T]
    trajectory batches as drivers write them, carrying R across `train` calls.
    """

    def __init__(self, gamma: float, clip_value: float = 10.0, name: str = "normalize_rewards"):
        super().__init__(name=name)
        self._gamma = float(gamma)
        self._clip_value = float(clip_value)
        with self.name_scope:
            self._running_return = tf.Variable(
                tf.zeros([0]), shape=tf.TensorShape([None]), trainable=False, name="running_return")
        self._stats = tensor_normalizer.StreamingTensorNormalizer(
            tf.TensorSpec([], tf.float32), scope=name + "_return_stats")

    def normalize(self, rewards):
        """Rewards scaled by the current statistics, nothing updated (what `scale` returns)."""
        return self._stats.normalize(rewards, clip_value=self._clip_value, center_mean=False, variance_epsilon=1e-8)

    def scale(self, rewards, step_types, counted=None):
        """Updates the statistics with this batch and returns the scaled [B, T] rewards.

        `counted` ([B, T] bool): the steps whose returns join the statistics (the agent's steps
        of weight > 0); every step's return is still computed and carried."""
        batch_size = tf.shape(rewards)[0]
        carried = self._running_return.value()
        initial = tf.cond(tf.shape(carried)[0] == batch_size, lambda: carried, lambda: tf.zeros([batch_size]))
        continues = 1.0 - tf.cast(tf.equal(step_types, ts.StepType.FIRST), tf.float32)
        # R_t = r_t + γ·c_t·R_{t−1}, with the carried R entering at t = 0: a reverse
        # discounted cumsum on the time-reversed batch.
        rewards_in = tf.concat([rewards[:, :1] + self._gamma * continues[:, :1] * initial[:, None],
                                rewards[:, 1:]], axis=1)
        returns = tf.reverse(discounted_reverse_cumsum(
            tf.reverse(rewards_in, [1]),
            tf.reverse(tf.concat([tf.zeros_like(continues[:, :1]), self._gamma * continues[:, 1:]], 1), [1])),
            [1])
        self._running_return.assign(returns[:, -1])
        taken = tf.not_equal(step_types, ts.StepType.LAST)
        if counted is not None:
            taken = tf.logical_and(taken, counted)

        def update():
            self._stats.update(tf.boolean_mask(returns, taken))
            return tf.constant(True)

        tf.cond(tf.reduce_any(taken), update, lambda: tf.constant(False))  # none: no update (0/0)
        return self.normalize(rewards)
