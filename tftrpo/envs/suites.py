"""Loading Gymnasium MuJoCo / classic-control / Atari envs as TF-Agents envs."""

import functools
from typing import Optional

import gymnasium as gym
import numpy as np
from tf_agents.environments import batched_py_environment
from tf_agents.environments import parallel_py_environment
from tf_agents.environments import py_environment

from tftrpo.envs.batched import BatchedGymnasiumEnvironment
from tftrpo.envs.gymnasium_env import GymnasiumEnvironment
from tftrpo.envs.registry import check_env_id, family


class ChannelsLast(gym.ObservationWrapper):
    """[stack, H, W] -> contiguous [H, W, stack] (for Keras conv nets)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(
            np.moveaxis(space.low, 0, -1), np.moveaxis(space.high, 0, -1), dtype=space.dtype
        )

    def observation(self, observation):
        return np.ascontiguousarray(np.moveaxis(observation, 0, -1))


def _make_atari(env_id: str, max_episode_steps: Optional[int], **gym_kwargs):
    gym_kwargs.setdefault('frameskip', 1)
    if env_id.startswith('ALE/'):
        gym_kwargs.setdefault('repeat_action_probability', 0.25)
    try:
        import cv2  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:  # AtariPreprocessing resizes with OpenCV
        raise ImportError(
            'Atari preprocessing needs OpenCV: pip install '
            '"opencv-python-headless<4.12" (4.12+ requires numpy>=2).'
        ) from e
    env = gym.make(env_id, **gym_kwargs)
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True, terminal_on_life_loss=False
    )
    env = ChannelsLast(gym.wrappers.FrameStackObservation(env, stack_size=4))
    if max_episode_steps is not None:  # counted in agent steps (4 frames each)
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    return env


def load(
    env_id: str,
    seed: Optional[int] = None,
    discount: float = 1.0,
    max_episode_steps: Optional[int] = None,
    **gym_kwargs,
) -> GymnasiumEnvironment:
    """Makes `env_id` with the family's standard wrappers, as a PyEnvironment.

    Atari (`ALE/<Game>-v5`) gets sticky actions, no-op resets, frame skip 4,
    84x84 grayscale and a 4-frame stack: uint8 observations [84, 84, 4].
    """
    check_env_id(env_id)
    if family(env_id) == 'atari':
        env = _make_atari(env_id, max_episode_steps, **gym_kwargs)
    else:
        env = gym.make(env_id, max_episode_steps=max_episode_steps, **gym_kwargs)
    return GymnasiumEnvironment(env, discount=discount, seed=seed)


def load_batched(
    env_id: str, num_envs: int = 2, seed: Optional[int] = 0, parallel='serial', **kwargs
) -> py_environment.PyEnvironment:
    """`num_envs` copies of `load(env_id, seed=seed + i, **kwargs)` as one env.

    parallel: 'serial' (default; `BatchedGymnasiumEnvironment`, stepping the
    envs in the calling thread: fastest on a 2-core box, see bench/README.md),
    'threads' (TF-Agents' `BatchedPyEnvironment` with a thread pool) or
    'processes' (`ParallelPyEnvironment`, one process per env). `False`/`True`
    mean 'serial'/'processes'.
    """
    mode = {False: 'serial', True: 'processes'}.get(parallel, parallel)
    if mode not in ('serial', 'threads', 'processes'):
        raise ValueError(f"parallel must be 'serial', 'threads' or 'processes', " f'got {parallel!r}')
    seeds = [None if seed is None else seed + i for i in range(num_envs)]
    ctors = [functools.partial(load, env_id, seed=s, **kwargs) for s in seeds]
    if mode == 'processes':
        from tf_agents.system.default import multiprocessing_core as mp  # pylint: disable=g-import-not-at-top

        if not mp.initialized():  # tf-agents refuses to fork before this
            mp.enable_interactive_mode()
        return parallel_py_environment.ParallelPyEnvironment(ctors)
    if mode == 'threads':
        return batched_py_environment.BatchedPyEnvironment([ctor() for ctor in ctors], multithreading=True)
    return BatchedGymnasiumEnvironment([ctor() for ctor in ctors])
