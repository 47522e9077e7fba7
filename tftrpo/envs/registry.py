"""Which Gymnasium env ids exist and which family they belong to: Gymnasium only, no TensorFlow,
so that presets and the command lines' argument parsing stay light."""

import difflib
from typing import Optional

import gymnasium as gym


def _register_atari() -> None:
    import ale_py  # pylint: disable=g-import-not-at-top

    gym.register_envs(ale_py)


def _spec(env_id: str) -> Optional[gym.envs.registration.EnvSpec]:
    """The id's spec, registering ale_py's envs first if the id is not known yet: the ALE/ ids and
    the older ones (PongNoFrameskip-v4, Pong-v4, …) exist only once ale_py is registered."""
    if env_id not in gym.registry:
        _register_atari()
    return gym.registry.get(env_id)


def family(env_id: str) -> str:
    """'mujoco', 'atari', 'classic' or 'other' (also for unknown ids)."""
    if env_id.startswith('ALE/'):
        return 'atari'
    spec = _spec(env_id)
    entry = str(spec.entry_point) if spec is not None else ''
    if entry.startswith('gymnasium.envs.mujoco'):
        return 'mujoco'
    if entry.startswith('gymnasium.envs.classic_control'):
        return 'classic'
    if entry.startswith('ale_py'):
        return 'atari'
    return 'other'


def check_env_id(env_id: str) -> None:
    """Raises ValueError naming `env_id` and close matches if it is not registered."""
    if _spec(env_id) is None:  # (ale_py's ids are registered by now, so they can be suggested too)
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f' Did you mean: {", ".join(close)}?' if close else ''
        raise ValueError(f'Unknown gymnasium env id {env_id!r}.{hint}')
