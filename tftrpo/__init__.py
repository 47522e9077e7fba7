"""tftrpo: Trust Region Policy Optimization (Schulman et al. 2015) for TF-Agents.

The names below load on first use (PEP 562), so that `import tftrpo.presets` and the
command lines' `--help` and argument errors do not wait for TensorFlow.
"""
import importlib

__version__ = "0.1.0"
__all__ = ["TRPOAgent", "TRPOLossInfo", "TRPOEvaluationLossInfo", "VineExperience", "advantages",
           "natural_gradient", "networks"]

_FROM_AGENT = ("TRPOAgent", "TRPOLossInfo", "TRPOEvaluationLossInfo", "VineExperience")
_SUBMODULES = ("advantages", "natural_gradient", "networks")


def __getattr__(name):
    if name in _FROM_AGENT:
        return getattr(importlib.import_module("tftrpo.agent"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tftrpo.{name}")
    raise AttributeError(f"module 'tftrpo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
