"""Simulator state snapshot / restore: vine sampling's branches, and training runs' checkpoints.

Vine sampling (Schulman et al. 2015, Section 5.2) restores the simulator to
states visited on trunk trajectories and rolls out several branches from each.
This module provides the one thing that needs:

    check_supported(env)          # raises UnsupportedEnvError up front
    state = snapshot(env)         # deep copy of everything that determines
                                  # the future given the same actions
    time_step = restore(env, state)
    set_rng(env, seed)            # reseed the env's own noise

`env` is a `tftrpo.envs.GymnasiumEnvironment` or a raw `gymnasium.Env` (the
whole wrapper chain, as made by `gymnasium.make` / `tftrpo.envs.load`).

After `restore(env, state)` the next `env.step(action)` calls return exactly
(bit for bit) what they returned after `snapshot`, including across episode
ends: the adapter's current time step is restored (so TF-Agents'
auto-reset behaves the same) and so are the RNGs that drive reset noise,
no-op starts and sticky actions.

Common random numbers: a snapshot holds the env's RNG state, so restoring the
same snapshot before each of the K branches gives every branch the same env
noise (same reset noise, same sticky-action draws) automatically. To give the
branches of one state a shared noise that differs from the trunk's, call
`set_rng(env, seed)` with the same seed after each `restore`. (The policy's
own sampling noise is not env state; seed it separately.)

What is captured, per family:

* MuJoCo (`gymnasium.envs.mujoco` envs): a full copy of `MjData`
  (`mujoco.mj_copyData`). The integration state alone
  (`mj_getState(..., mjSTATE_INTEGRATION)`) followed by `mj_forward` is NOT
  enough: after `mj_step` the derived kinematics (`xpos`, `xipos`, ...) are
  those of the last sub-step's *start*, and envs such as Ant-v5 and
  Humanoid-v5 read them before stepping (`xy_position_before`), so the first
  reward after such a restore differs. The copy is ~0.5 MB for Hopper/Ant.
* Classic control (CartPole, Pendulum, Acrobot, MountainCar[Continuous]):
  `state` (+ `steps_beyond_terminated` / `last_u`).
* Atari (`ale_py.AtariEnv`): `ale.cloneState(include_rng=True)`, which holds
  the emulator and the ALE RNG that draws sticky actions
  (`repeat_action_probability`) and reset randomness.
* Always: the unwrapped env's `np_random` (MuJoCo / classic reset noise,
  AtariPreprocessing's no-op count) and the state of every wrapper in the
  chain (`TimeLimit._elapsed_steps`, `FrameStackObservation`'s frame queue,
  `AtariPreprocessing`'s max-pool buffers and lives / game-over flags,
  `OrderEnforcing._has_reset`), plus, for a `GymnasiumEnvironment`, its
  current `TimeStep`, last `info` and pending seed.

Wrappers are matched by exact type: either registered with a (get, set) pair
(`register_wrapper`) or in the allow-list of wrappers verified to hold no
state that affects the future (`STATELESS_WRAPPERS`). Anything else, and any
unwrapped env type without a registered handler, makes `check_supported`
raise `UnsupportedEnvError` rather than risk silently wrong branches.
"""

import collections
import copy
import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from tftrpo.envs.gymnasium_env import GymnasiumEnvironment

__all__ = [
    'EnvState',
    'UnsupportedEnvError',
    'check_supported',
    'snapshot',
    'restore',
    'set_rng',
    'snapshot_environment',
    'restore_environment',
    'register_wrapper',
    'STATELESS_WRAPPERS',
]


class UnsupportedEnvError(NotImplementedError):
    """The env (or a wrapper in its chain) cannot be snapshotted / restored."""


@dataclasses.dataclass(frozen=True)
class EnvState:
    """An opaque, self-contained snapshot; restore it any number of times.

    Attributes:
      chain: type names of the wrappers (outermost first) and unwrapped env,
        checked on restore.
      base: the unwrapped env's simulator state (family specific).
      rng: `bit_generator.state` of the unwrapped env's `np_random` and its
        recorded seed.
      wrappers: per wrapper in `chain` (outermost first) its state, or None
        for stateless wrappers.
      adapter: `GymnasiumEnvironment` state, None for a raw gymnasium env.
      observation: for a raw gymnasium env, the observation passed to
        `snapshot` (returned by `restore`).
    """

    chain: Tuple[str, ...]
    base: Any
    rng: Any
    wrappers: Tuple[Any, ...]
    adapter: Optional[Dict[str, Any]]
    observation: Any = None


# ---------------------------------------------------------------------------
# Wrapper registry.

_Getter = Callable[[gym.Wrapper], Any]
_Setter = Callable[[gym.Wrapper, Any], None]
_WRAPPER_STATE: Dict[type, Tuple[_Getter, _Setter]] = {}


def register_wrapper(cls: type, get_state: _Getter, set_state: _Setter) -> None:
    """Supports wrapper type `cls` (exact type): `get_state(w)` must return a
    deep copy of its state, `set_state(w, s)` must not keep references to `s`."""
    _WRAPPER_STATE[cls] = (get_state, set_state)


def _attrs(*names):
    """(get, set) deep-copying the given instance attributes."""

    def get(obj):
        return {n: copy.deepcopy(getattr(obj, n)) for n in names}

    def set_(obj, state):
        for n in names:
            setattr(obj, n, copy.deepcopy(state[n]))

    return get, set_


register_wrapper(gym.wrappers.TimeLimit, *_attrs('_elapsed_steps'))
register_wrapper(gym.wrappers.OrderEnforcing, *_attrs('_has_reset'))


def _get_frame_stack(w):
    return {
        'obs_queue': [copy.deepcopy(o) for o in w.obs_queue],
        'padding_value': copy.deepcopy(w.padding_value),
    }


def _set_frame_stack(w, state):
    w.obs_queue = collections.deque([copy.deepcopy(o) for o in state['obs_queue']], maxlen=w.stack_size)
    w.padding_value = copy.deepcopy(state['padding_value'])


register_wrapper(gym.wrappers.FrameStackObservation, _get_frame_stack, _set_frame_stack)


def _get_atari_preprocessing(w):
    # obs_buffer matters: a step that ends early (terminal / truncated before
    # the last skipped frame) max-pools the buffers left by the previous step.
    return {'obs_buffer': [b.copy() for b in w.obs_buffer], 'lives': w.lives, 'game_over': w.game_over}


def _set_atari_preprocessing(w, state):
    for buf, saved in zip(w.obs_buffer, state['obs_buffer']):
        np.copyto(buf, saved)
    w.lives = state['lives']
    w.game_over = state['game_over']


register_wrapper(gym.wrappers.AtariPreprocessing, _get_atari_preprocessing, _set_atari_preprocessing)


def _stateless_wrappers():
    w = gym.wrappers
    types = {
        # PassiveEnvChecker's checked_* flags only gate one-off API checks.
        w.PassiveEnvChecker,
        w.TransformObservation,
        w.FilterObservation,
        w.FlattenObservation,
        w.GrayscaleObservation,
        w.ResizeObservation,
        w.ReshapeObservation,
        w.RescaleObservation,
        w.DtypeObservation,
        w.TransformAction,
        w.ClipAction,
        w.RescaleAction,
        w.TransformReward,
        w.ClipReward,
    }
    from tftrpo.envs import suites  # pylint: disable=g-import-not-at-top

    types.add(suites.ChannelsLast)
    return types


# Exact types verified to hold no state that affects future steps (the
# Transform* wrappers assume their user functions are pure).
STATELESS_WRAPPERS = _stateless_wrappers()


# ---------------------------------------------------------------------------
# Unwrapped env handlers: (matches(env), get, set).


def _is_gymnasium_mujoco(env) -> bool:
    try:
        from gymnasium.envs.mujoco import mujoco_env  # pylint: disable=g-import-not-at-top
    except ImportError:
        return False
    # Only gymnasium's own MuJoCo envs are verified to keep all their dynamic
    # state in MjData (+ np_random); a user subclass may add more.
    return isinstance(env, mujoco_env.MujocoEnv) and type(env).__module__.startswith('gymnasium.envs.mujoco.')


def _mujoco_sizes(model):
    return (model.nq, model.nv, model.na, model.nu, model.nbuffer, model.narena)


def _get_mujoco(env):
    # A full MjData copy (buffer + used arena): integration state, warm start,
    # and the derived quantities that envs read before stepping.
    return {'data': copy.copy(env.data), 'sizes': _mujoco_sizes(env.model)}


def _set_mujoco(env, state):
    import mujoco  # pylint: disable=g-import-not-at-top

    if state['sizes'] != _mujoco_sizes(env.model):
        raise ValueError('MuJoCo snapshot was taken from a different model.')
    mujoco.mj_copyData(env.data, env.model, state['data'])  # in place


def _is_atari(env) -> bool:
    try:
        from ale_py import env as ale_env  # pylint: disable=g-import-not-at-top
    except ImportError:
        return False
    return type(env) is ale_env.AtariEnv  # pylint: disable=unidiomatic-typecheck


def _atari_game(env):
    return (env._game, env._game_mode, env._game_difficulty)  # pylint: disable=protected-access


def _get_atari(env):
    return {'ale': env.ale.cloneState(include_rng=True),  # ALEState: immutable copy
            'game': _atari_game(env)}


def _set_atari(env, state):
    if not isinstance(state, dict):  # a snapshot pickled before the game was recorded
        state = {'ale': state, 'game': _atari_game(env)}
    if state['game'] != _atari_game(env):
        # ALE itself would fail with an untranslated C++ exception (SystemError).
        raise ValueError(f'Atari snapshot of game {state["game"]} (name, mode, difficulty) cannot be restored '
                         f'into {_atari_game(env)}.')
    env.ale.restoreState(state['ale'])


def _classic_handlers():
    from gymnasium.envs import classic_control as cc  # pylint: disable=g-import-not-at-top

    return {
        cc.CartPoleEnv: _attrs('state', 'steps_beyond_terminated'),
        cc.PendulumEnv: _attrs('state', 'last_u'),
        cc.AcrobotEnv: _attrs('state'),
        cc.MountainCarEnv: _attrs('state'),
        cc.Continuous_MountainCarEnv: _attrs('state'),
    }


_CLASSIC = _classic_handlers()


def register_env(cls: type, get_state: _Getter, set_state: _Setter) -> None:
    """Supports base env type `cls` (exact type), like `register_wrapper`.

    `get_state(env)` returns a deep copy of everything besides `np_random` that
    determines the env's future (its RNG is captured for every env).
    """
    _CLASSIC[cls] = (get_state, set_state)


def _base_handler(env) -> Optional[Tuple[_Getter, _Setter]]:
    if type(env) in _CLASSIC:
        return _CLASSIC[type(env)]
    if _is_gymnasium_mujoco(env):
        return _get_mujoco, _set_mujoco
    if _is_atari(env):
        return _get_atari, _set_atari
    return None


# ---------------------------------------------------------------------------
# Public API.


def _split(env) -> Tuple[Optional[GymnasiumEnvironment], gym.Env]:
    if isinstance(env, GymnasiumEnvironment):
        return env, env.gym_env
    if isinstance(env, gym.Env):
        return None, env
    raise TypeError(
        f'Expected a tftrpo GymnasiumEnvironment or a gymnasium.Env, got '
        f'{type(env).__name__}: snapshot/restore needs direct access to the '
        'simulator (unwrap TF-Agents wrappers / batched envs first).'
    )


def _chain(gym_env: gym.Env):
    """[outermost wrapper, ..., innermost wrapper], unwrapped env."""
    wrappers = []
    e = gym_env
    while hasattr(e, 'env'):
        wrappers.append(e)
        e = e.env
    return wrappers, e


def _describe(gym_env) -> str:
    spec = getattr(gym_env, 'spec', None)
    name = getattr(spec, 'id', None)
    return repr(name) if name else type(gym_env.unwrapped).__name__


def check_supported(env) -> None:
    """Raises `UnsupportedEnvError` unless `env` can be snapshotted/restored.

    Call it up front (e.g. when building a vine collector) so that an
    unsupported env fails immediately instead of producing wrong branches.
    """
    _, gym_env = _split(env)
    wrappers, base = _chain(gym_env)
    what = _describe(gym_env)
    for w in wrappers:
        if type(w) not in _WRAPPER_STATE and type(w) not in STATELESS_WRAPPERS:
            raise UnsupportedEnvError(
                f'Env {what}: wrapper {type(w).__module__}.{type(w).__qualname__} '
                'is not known to snapshot/restore, and vine sampling needs to '
                'restore the full simulator state (including wrapper state). '
                'Register it with tftrpo.sampling.env_state.register_wrapper(cls, '
                'get_state, set_state), add it to STATELESS_WRAPPERS if it holds '
                'no state, or use single-path sampling.'
            )
    if _base_handler(base) is None:
        raise UnsupportedEnvError(
            f'Env {what} ({type(base).__module__}.{type(base).__qualname__}) '
            'does not support simulator state restore, which vine sampling '
            'needs. Supported: gymnasium MuJoCo envs, classic control '
            '(CartPole, Pendulum, Acrobot, MountainCar[Continuous]) and ALE '
            'Atari envs; use single-path sampling otherwise.'
        )


def snapshot(env, observation: Any = None) -> EnvState:
    """Deep-copies everything that determines `env`'s future given actions.

    Args:
      env: a `GymnasiumEnvironment` or a raw `gymnasium.Env`.
      observation: raw gymnasium env only: the current observation (from the
        latest reset/step), stored so that `restore` can return it. Ignored
        for a `GymnasiumEnvironment`, whose current time step is stored.

    Raises:
      UnsupportedEnvError: see `check_supported`.
    """
    check_supported(env)
    adapter, gym_env = _split(env)
    wrappers, base = _chain(gym_env)
    wrapper_states = tuple(
        _WRAPPER_STATE[type(w)][0](w) if type(w) in _WRAPPER_STATE else None for w in wrappers
    )
    rng = {
        'state': copy.deepcopy(base.np_random.bit_generator.state),
        'seed': base._np_random_seed,
    }  # pylint: disable=protected-access
    adapter_state = None
    if adapter is not None:
        adapter_state = {
            'time_step': copy.deepcopy(adapter._current_time_step),  # pylint: disable=protected-access
            'info': copy.deepcopy(adapter._info),  # pylint: disable=protected-access
            'seed': adapter._seed,  # pylint: disable=protected-access
        }
        observation = None
    return EnvState(
        chain=tuple(type(e).__qualname__ for e in wrappers + [base]),
        base=_base_handler(base)[0](base),
        rng=rng,
        wrappers=wrapper_states,
        adapter=adapter_state,
        observation=copy.deepcopy(observation),
    )


def _set_np_random(base: gym.Env, rng) -> None:
    state = rng['state']
    generator = base._np_random  # pylint: disable=protected-access
    if generator is None or (type(generator.bit_generator).__name__ != state['bit_generator']):
        generator = np.random.Generator(getattr(np.random, state['bit_generator'])())
    generator.bit_generator.state = copy.deepcopy(state)
    base._np_random = generator  # pylint: disable=protected-access
    base._np_random_seed = rng['seed']  # pylint: disable=protected-access


def restore(env, state: EnvState):
    """Puts `env` back into the snapshotted `state` (which stays reusable).

    Returns:
      For a `GymnasiumEnvironment`: the restored current `TimeStep` (a copy of
      `env.current_time_step()`, None if the env had not been reset when
      snapshotted); the next `env.step(action)` continues from it exactly,
      auto-resetting if it is LAST. For a raw gymnasium env: a copy of the
      `observation` given to `snapshot` (None if none was given).
    """
    adapter, gym_env = _split(env)
    wrappers, base = _chain(gym_env)
    chain = tuple(type(e).__qualname__ for e in wrappers + [base])
    if chain != state.chain:
        raise ValueError(f'Snapshot of env chain {state.chain} cannot be ' f'restored into {chain}.')
    if (adapter is None) != (state.adapter is None):
        raise ValueError(
            'Snapshot taken from a '
            f'{"raw gymnasium env" if state.adapter is None else "GymnasiumEnvironment"}'
            ' must be restored into the same kind of env.'
        )
    _base_handler(base)[1](base, state.base)
    _set_np_random(base, state.rng)
    for w, s in zip(wrappers, state.wrappers):
        if s is not None:
            _WRAPPER_STATE[type(w)][1](w, s)
    if adapter is None:
        return copy.deepcopy(state.observation)
    adapter._current_time_step = copy.deepcopy(state.adapter['time_step'])  # pylint: disable=protected-access
    adapter._info = copy.deepcopy(state.adapter['info'])  # pylint: disable=protected-access
    adapter._seed = state.adapter['seed']  # pylint: disable=protected-access
    return copy.deepcopy(adapter._current_time_step)  # pylint: disable=protected-access


def set_rng(env, seed: int) -> None:
    """Reseeds the env's own stochasticity, keeping the simulator state.

    Reseeds the unwrapped env's `np_random` (reset noise, Atari no-op starts)
    and, for Atari, ALE's RNG (sticky actions) -- the latter by reloading the
    ROM and restoring the emulator state without its RNG (~0.1 s). Use it
    after `restore` to give K branches common random numbers that differ from
    the trunk's; plain `restore` already gives them the trunk's (identical)
    noise. Also drops a `GymnasiumEnvironment`'s pending reset seed, which
    would otherwise override this at the next reset.
    """
    check_supported(env)
    adapter, gym_env = _split(env)
    base = gym_env.unwrapped
    if _is_atari(base):
        emulator = base.ale.cloneState(include_rng=False)
        base.seed_game(int(seed))  # np_random and ALE's random_seed, as reset()
        base.load_game()  # the ALE seed only takes effect on load
        base.ale.restoreState(emulator)
    else:
        base._np_random, base._np_random_seed = seeding.np_random(
            int(seed)
        )  # pylint: disable=protected-access
    if adapter is not None:
        adapter._seed = None  # pylint: disable=protected-access


# ---------------------------------------------------------------------------
# Whole TF-Agents environments (checkpoints of a training run).


def _layers(env):
    """(TFPyEnvironment or None, PyEnvironment, its GymnasiumEnvironments) of `env`."""
    from tf_agents.environments import batched_py_environment, tf_py_environment  # pylint: disable=g-import-not-at-top

    tf_env = env if isinstance(env, tf_py_environment.TFPyEnvironment) else None
    py_env = env.pyenv if tf_env is not None else env
    members = list(py_env.envs) if isinstance(py_env, batched_py_environment.BatchedPyEnvironment) else [py_env]
    if not all(isinstance(e, GymnasiumEnvironment) for e in members):
        raise TypeError(f'snapshot_environment needs tftrpo GymnasiumEnvironments (tftrpo.envs.load / load_batched), '
                        f'got {[type(e).__name__ for e in members]}')
    return tf_env, py_env, members


def snapshot_environment(env) -> Dict[str, Any]:
    """`snapshot` of every env in a `GymnasiumEnvironment`, a batch of them (`load_batched`)
    or a `TFPyEnvironment` around either, with the batching layers' current time steps.

    What `restore_environment` needs to continue `env` exactly; picklable (a training
    run's checkpoint stores it). Raises `UnsupportedEnvError` as `check_supported` does.
    """
    tf_env, py_env, members = _layers(env)
    layers = {'py_time_step': copy.deepcopy(py_env._current_time_step)}  # pylint: disable=protected-access
    if py_env is not members[0]:
        layers['last'] = copy.deepcopy(getattr(py_env, '_last', None))  # BatchedGymnasiumEnvironment's auto-reset flags
    if tf_env is not None:
        layers['tf_time_step'] = copy.deepcopy(tf_env._time_step)  # pylint: disable=protected-access
    return {'envs': [snapshot(e) for e in members], 'layers': layers}


def restore_environment(env, state: Dict[str, Any]) -> None:
    """Puts an env made as the snapshotted one back into `state` (`snapshot_environment`)."""
    tf_env, py_env, members = _layers(env)
    if len(members) != len(state['envs']):
        raise ValueError(f'Snapshot of {len(state["envs"])} envs cannot be restored into {len(members)}.')
    for member, member_state in zip(members, state['envs']):
        restore(member, member_state)
    layers = state['layers']
    py_env._current_time_step = copy.deepcopy(layers['py_time_step'])  # pylint: disable=protected-access
    if layers.get('last') is not None:
        py_env._last[:] = layers['last']  # pylint: disable=protected-access
    if tf_env is not None:
        tf_env._time_step = copy.deepcopy(layers['tf_time_step'])  # pylint: disable=protected-access

