"""tftrpo: Trust Region Policy Optimization (Schulman et al. 2015) for TF-Agents."""
from tftrpo.agent import TRPOAgent, TRPOLossInfo, VineExperience
from tftrpo import advantages, natural_gradient, networks

__version__ = "0.1.0"
__all__ = ["TRPOAgent", "TRPOLossInfo", "VineExperience", "advantages", "natural_gradient", "networks"]
