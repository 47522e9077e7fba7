"""The single-path sampling scheme of Section 5.1, with TF-Agents' own parts.

Whole trajectories from π_θold: a `DynamicStepDriver` steps a batched
`TFPyEnvironment` (one batched policy call per step) into a
`TFUniformReplayBuffer`, whose `gather_all()` is the [B, T] batch `TRPOAgent.train`
takes.
"""
from tf_agents.drivers import dynamic_step_driver
from tf_agents.metrics import tf_metrics
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.utils import common

__all__ = ["SinglePathCollector"]


class SinglePathCollector:
    """Collects `steps_per_env` steps from each environment of a batched TF env per call."""

    def __init__(self, tf_env, policy, steps_per_env: int, episodes_to_average: int = 20):
        self._num_envs = tf_env.batch_size
        self._steps = self._num_envs * steps_per_env
        self.buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
            policy.trajectory_spec, batch_size=self._num_envs, max_length=steps_per_env)
        self.average_return = tf_metrics.AverageReturnMetric(
            batch_size=self._num_envs, buffer_size=episodes_to_average)
        self.average_length = tf_metrics.AverageEpisodeLengthMetric(
            batch_size=self._num_envs, buffer_size=episodes_to_average)
        self._run = common.function(dynamic_step_driver.DynamicStepDriver(
            tf_env, policy, observers=[self.buffer.add_batch, self.average_return, self.average_length],
            num_steps=self._steps).run)

    @property
    def simulator_steps_per_collect(self) -> int:
        return self._steps

    def collect(self):
        """The next [num_envs, steps_per_env] trajectory batch (the buffer is emptied)."""
        self.buffer.clear()
        self._run()
        return self.buffer.gather_all()

    def recent_episodes(self):
        """(mean return, mean length) of the last finished episodes (0, 0 before any)."""
        return float(self.average_return.result()), float(self.average_length.result())
