"""Gymnasium -> TF-Agents environments (the names load on first use, as in `tftrpo`)."""
import importlib

__all__ = ['GymnasiumEnvironment', 'BatchedGymnasiumEnvironment', 'load', 'load_batched', 'family']

_HOME = {
    'GymnasiumEnvironment': 'tftrpo.envs.gymnasium_env',
    'BatchedGymnasiumEnvironment': 'tftrpo.envs.batched',
    'load': 'tftrpo.envs.suites',
    'load_batched': 'tftrpo.envs.suites',
    'family': 'tftrpo.envs.registry',
}


def __getattr__(name):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'tftrpo.envs' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
