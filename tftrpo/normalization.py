"""Running statistics for observations, held in the agent and baked into its policies."""
import tensorflow as tf
from tf_agents.utils import tensor_normalizer

__all__ = ["ObservationNormalizer"]


class ObservationNormalizer(tensor_normalizer.StreamingTensorNormalizer):
    """TF-Agents' streaming (Chan et al.) mean/variance normaliser with a fixed clip.

    `ActorPolicy` calls `normalize(observation)` with no arguments; carrying the clip
    value here keeps training, collection and the exported SavedModel identical.
    """

    def __init__(self, tensor_spec, clip_value: float = 10.0, scope: str = "normalize_observations"):
        super().__init__(tensor_spec, scope=scope)
        self._clip_value = float(clip_value)

    def normalize(self, tensor, clip_value=None, center_mean=True, variance_epsilon=1e-8):
        clip = self._clip_value if clip_value is None else clip_value
        return super().normalize(tensor, clip_value=clip, center_mean=center_mean,
                                 variance_epsilon=variance_epsilon)

    @property
    def clip_value(self) -> float:
        return self._clip_value
