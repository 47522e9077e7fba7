"""A TF-Agents `PyEnvironment` wrapping a Gymnasium (1.x) environment."""

from typing import Any, Dict, Optional

import gymnasium as gym
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts


def _bound(values, dtype):
    """Box bounds as a spec bound: clipped to dtype range, scalar if uniform."""
    values = np.asarray(values)
    if np.issubdtype(dtype, np.floating):
        info = np.finfo(dtype)
        values = np.clip(values, info.min, info.max)
    values = values.astype(dtype)
    if values.size and np.all(values == values.flat[0]):
        return values.flat[0]
    return values


def spec_from_space(space: gym.Space, role: str) -> array_spec.BoundedArraySpec:
    """Converts a Box/Discrete/MultiDiscrete space; `role` names it in errors.

    Discrete and MultiDiscrete *action* specs start at 0 whatever the space's `start`:
    TF-Agents' categorical heads sample 0..n-1 and ignore the spec minimum, so the
    adapter takes actions as indices and adds `start` for Gymnasium (`to_gym_actions`).
    Observation specs keep the space's values, which observations arrive in.
    """
    if isinstance(space, gym.spaces.Box):
        dtype = np.dtype(space.dtype)
        if role == 'observation' and dtype == np.bool_:
            raise TypeError(
                f'Unsupported gymnasium observation space {space!r}: a bool Box has no numeric '
                'bounds for a TF-Agents spec; wrap the env in '
                'gymnasium.wrappers.DtypeObservation(env, np.uint8) first.'
            )
        if role == 'action' or dtype == np.float64:
            dtype = np.dtype(np.float32)
        return array_spec.BoundedArraySpec(
            space.shape, dtype, _bound(space.low, dtype), _bound(space.high, dtype), name=role
        )
    if isinstance(space, gym.spaces.Discrete):
        start = 0 if role == 'action' else int(space.start)
        return array_spec.BoundedArraySpec((), np.int64, start, start + int(space.n) - 1, name=role)
    if isinstance(space, gym.spaces.MultiDiscrete):
        start = np.zeros(space.shape, np.int64) if role == 'action' else np.asarray(space.start, np.int64)
        return array_spec.BoundedArraySpec(
            space.shape,
            np.int64,
            _bound(start, np.int64),
            _bound(start + np.asarray(space.nvec, np.int64) - 1, np.int64),
            name=role,
        )
    raise TypeError(
        f'Unsupported gymnasium {role} space {type(space).__name__} ({space!r}): '
        'GymnasiumEnvironment supports Box, Discrete and MultiDiscrete '
        f'{role} spaces; flatten or wrap the env first.'
    )


_LAST = int(ts.StepType.LAST)
_MID = int(ts.StepType.MID)


def to_gym_actions(space: gym.Space, actions: np.ndarray, clip: bool = True) -> np.ndarray:
    """Actions of `space`, any leading batch dims: Box clipped to its bounds, in its dtype (an
    integer or bool Box's float actions rounded to the nearest integer first, not truncated).

    Discrete/MultiDiscrete actions are indices from 0 (the adapter's action spec,
    `spec_from_space`); the space's `start` is added.
    `np.minimum(np.maximum(...))` rather than `np.clip`, whose Python wrapper costs
    ~15 µs on a 3-vector, a tenth of what the rest of a step of the adapter costs.
    """
    if isinstance(space, gym.spaces.Box):
        if space.dtype.kind in 'iub':
            actions = np.rint(actions)
        if clip:
            actions = np.minimum(np.maximum(actions, space.low), space.high)
    elif isinstance(space, gym.spaces.Discrete):
        if space.start:  # a NumPy scalar: cheaper than np.any on every step
            actions = actions + space.start
    elif isinstance(space, gym.spaces.MultiDiscrete) and space.start.any():
        actions = actions + space.start
    return actions.astype(space.dtype, copy=False)


class GymnasiumEnvironment(py_environment.PyEnvironment):
    """Adapts a `gymnasium.Env` to `PyEnvironment` (auto-resets after LAST).

    `terminated` -> `ts.termination` (discount 0); `truncated` (and not
    terminated) -> `ts.truncation` with discount `discount`, so time limits are
    never bootstrapped as terminal states.
    """

    def __init__(
        self,
        gym_env: gym.Env,
        discount: float = 1.0,
        seed: Optional[int] = None,
        clip_actions: bool = True,
    ):
        super().__init__(handle_auto_reset=True)
        self._env = gym_env
        self._discount = np.float32(discount)
        self._seed = seed
        self._clip_actions = clip_actions
        self._observation_spec = spec_from_space(gym_env.observation_space, 'observation')
        self._action_spec = spec_from_space(gym_env.action_space, 'action')
        self._info: Dict[str, Any] = {}
        space = gym_env.action_space
        self._discrete = isinstance(space, gym.spaces.Discrete)

    @property
    def gym_env(self) -> gym.Env:
        return self._env

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec

    def get_info(self) -> Dict[str, Any]:
        """The `info` dict from the latest gymnasium `reset`/`step`."""
        return self._info

    def seed(self, seed: Optional[int]) -> None:
        """Sets the seed used by the next reset (later resets continue the RNG)."""
        self._seed = seed

    def _observation(self, obs) -> np.ndarray:
        return np.array(obs, dtype=self._observation_spec.dtype, copy=True)

    def _reset(self) -> ts.TimeStep:
        if self._seed is not None:
            obs, self._info = self._env.reset(seed=self._seed)
            self._env.action_space.seed(self._seed)
            self._seed = None
        else:
            obs, self._info = self._env.reset()
        return ts.restart(self._observation(obs))

    def _gym_action(self, action):
        action = np.asarray(action)
        if action.shape != self._action_spec.shape:
            raise ValueError(
                f'Action shape mismatch: expected {self._action_spec.shape}, got '
                f'{action.shape} (action spec {self._action_spec}).'
            )
        action = to_gym_actions(self._env.action_space, action, self._clip_actions)
        return int(action) if self._discrete else action

    def _transition(self, gym_action):
        """One `gym_env.step`: (observation, reward, step_type, discount), info kept.

        `terminated` -> LAST with discount 0; `truncated` (time limit) -> LAST with the
        env's discount, so that it is bootstrapped; otherwise MID. Shared with
        `BatchedGymnasiumEnvironment`, which steps its envs through this.
        """
        obs, reward, terminated, truncated, self._info = self._env.step(gym_action)
        if terminated:
            return obs, reward, _LAST, 0.0
        return obs, reward, (_LAST if truncated else _MID), self._discount

    def _step(self, action) -> ts.TimeStep:
        obs, reward, step_type, discount = self._transition(self._gym_action(action))
        # What ts.termination / ts.truncation / ts.transition return, built directly: their
        # tf.is_tensor checks cost ~40 µs a step, a sixth of a MuJoCo step.
        return ts.TimeStep(np.asarray(step_type, np.int32), np.asarray(reward, np.float32),
                           np.asarray(discount, np.float32), self._observation(obs))

    def should_reset(self, current_time_step: ts.TimeStep) -> bool:
        """Auto-reset after LAST: PyEnvironment's own check, without `TimeStep.is_last()`.

        `is_last()` calls `tf.is_tensor`, an isinstance check against a typing Protocol
        that costs about as much as a tenth of a MuJoCo step on every step.
        """
        return bool(current_time_step.step_type == _LAST)

    def render(self, mode: str = 'rgb_array'):
        """Calls `gym_env.render()`; the mode (and, for MuJoCo, `width`/`height`) is fixed at
        `gymnasium.make` time, as Gymnasium's `render()` takes no arguments."""
        if self._env.render_mode is None:
            raise ValueError(
                'The gymnasium env was made without a render_mode; ' "create it with render_mode='rgb_array'."
            )
        del mode
        return self._env.render()

    def close(self) -> None:
        self._env.close()
