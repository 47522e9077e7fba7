"""Gymnasium -> TF-Agents environments."""

from tftrpo.envs.batched import BatchedGymnasiumEnvironment
from tftrpo.envs.gymnasium_env import GymnasiumEnvironment
from tftrpo.envs.suites import family, load, load_batched

__all__ = ['GymnasiumEnvironment', 'BatchedGymnasiumEnvironment', 'load', 'load_batched', 'family']
