"""Actor and value networks for TRPO, built from TF-Agents' own network classes.

`actor_network` / `value_network` give the defaults used by modern TRPO
implementations (sb3-contrib, rl-zoo3): tanh MLP (64, 64), orthogonal
initialisation, a Gaussian with linear (unsquashed) mean and a state-independent
log standard deviation initialised at 0. `paper_mujoco_networks` and
`paper_atari_networks` build the networks of the paper's Appendix E.

Image observations (uint8) are scaled to [0, 1] by a preprocessing layer, so the
exported policy takes raw frames.
"""
import functools
import math
from typing import Optional, Sequence, Tuple

import tensorflow as tf
from tf_agents.networks import (
    actor_distribution_network,
    categorical_projection_network,
    normal_projection_network,
    value_network as tfa_value_network,
)
from tf_agents.specs import tensor_spec

__all__ = [
    "actor_network",
    "value_network",
    "paper_mujoco_networks",
    "paper_atari_networks",
    "ATARI_CONV_LAYERS",
]

# Appendix E: "two convolutional layers with 16 channels each, with stride 2".
ATARI_CONV_LAYERS = ((16, 4, 2), (16, 4, 2))


def _is_image(observation_spec) -> bool:
    return observation_spec.dtype == tf.uint8 and len(observation_spec.shape) == 3


def _preprocessing_layer(observation_spec) -> Optional[tf.keras.layers.Layer]:
    if _is_image(observation_spec):
        return tf.keras.layers.Rescaling(1.0 / 255.0, dtype=tf.float32)
    if not observation_spec.dtype.is_floating:
        return tf.keras.layers.Lambda(lambda x: tf.cast(x, tf.float32))
    return None


def _check_observation_spec(observation_spec):
    if tf.nest.is_nested(observation_spec):
        raise ValueError(
            "tftrpo.networks builds nets for a single observation tensor; got a nested "
            f"observation spec {observation_spec}. Build an ActorDistributionNetwork with "
            "preprocessing_layers for nested observations."
        )


def actor_network(
    observation_spec: tensor_spec.TensorSpec,
    action_spec: tensor_spec.BoundedTensorSpec,
    fc_layer_params: Sequence[int] = (64, 64),
    conv_layer_params: Optional[Sequence[Tuple[int, int, int]]] = None,
    activation_fn=tf.keras.activations.tanh,
    log_std_init: float = 0.0,
    output_gain: float = 0.01,
    seed: Optional[int] = None,
    name: str = "ActorNetwork",
) -> actor_distribution_network.ActorDistributionNetwork:
    """A TF-Agents `ActorDistributionNetwork` with TRPO's usual choices.

    Continuous actions: π(a|s) = N(μ_θ(s), diag(exp(log σ)²)), log σ a free vector
    (state independent), μ linear on the last hidden layer. Discrete actions: a
    categorical over logits. Hidden layers use orthogonal init with gain √2; the
    output layer (μ or the logits) draws its weights with standard deviation
    `output_gain`/√fan_in, the scale of an orthogonal init of that gain. The default
    0.01 is sb3-contrib's (and the "100x smaller last layer" of Andrychowicz et al.
    2021); 0.1 is TF-Agents' own `init_means_output_factor=0.01`, this library's
    default before the 1M-step comparison in bench/README.md.
    """
    _check_observation_spec(observation_spec)
    if not output_gain > 0:
        raise ValueError(f"actor_network: output_gain must be > 0, got {output_gain}")
    kernel_init = tf.keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed)
    normal_net = functools.partial(
        normal_projection_network.NormalProjectionNetwork,
        mean_transform=None,
        std_transform=tf.exp,
        state_dependent_std=False,
        std_bias_initializer_value=log_std_init,
        init_means_output_factor=output_gain**2,
        seed=seed,
    )
    categorical_net = functools.partial(
        categorical_projection_network.CategoricalProjectionNetwork,
        logits_init_output_factor=output_gain**2,
    )
    return actor_distribution_network.ActorDistributionNetwork(
        observation_spec,
        action_spec,
        preprocessing_layers=_preprocessing_layer(observation_spec),
        conv_layer_params=conv_layer_params,
        fc_layer_params=tuple(fc_layer_params),
        activation_fn=activation_fn,
        kernel_initializer=kernel_init,
        continuous_projection_net=normal_net,
        discrete_projection_net=categorical_net,
        name=name,
    )


def value_network(
    observation_spec: tensor_spec.TensorSpec,
    fc_layer_params: Sequence[int] = (64, 64),
    conv_layer_params: Optional[Sequence[Tuple[int, int, int]]] = None,
    activation_fn=tf.keras.activations.tanh,
    output_gain: float = 1.0,
    seed: Optional[int] = None,
    name: str = "ValueNetwork",
) -> tfa_value_network.ValueNetwork:
    """A TF-Agents `ValueNetwork` V_φ(s) with the same body as `actor_network`.

    `output_gain` > 0 initialises the output layer orthogonally with that gain (default
    1.0, as sb3-contrib); 0 keeps TF-Agents' head, uniform in ±0.03.
    """
    _check_observation_spec(observation_spec)
    if output_gain < 0:
        raise ValueError(f"value_network: output_gain must be >= 0, got {output_gain}")
    net_class = functools.partial(_OrthogonalHeadValueNetwork, output_gain=output_gain, seed=seed) \
        if output_gain > 0 else tfa_value_network.ValueNetwork
    return net_class(
        observation_spec,
        preprocessing_layers=_preprocessing_layer(observation_spec),
        conv_layer_params=conv_layer_params,
        fc_layer_params=tuple(fc_layer_params),
        activation_fn=activation_fn,
        kernel_initializer=tf.keras.initializers.Orthogonal(gain=math.sqrt(2.0), seed=seed),
        name=name,
    )


class _OrthogonalHeadValueNetwork(tfa_value_network.ValueNetwork):
    """TF-Agents' `ValueNetwork` with its output layer initialised orthogonally."""

    def __init__(self, input_tensor_spec, output_gain: float, seed: Optional[int] = None, **kwargs):
        super().__init__(input_tensor_spec, **kwargs)
        # Same attribute (and so the same checkpoint key) as TF-Agents' head; only the init differs.
        self._postprocessing_layers = tf.keras.layers.Dense(
            1, activation=None, kernel_initializer=tf.keras.initializers.Orthogonal(gain=output_gain, seed=seed))


def paper_mujoco_networks(observation_spec, action_spec, hidden_units: int = 50, seed=None):
    """Appendix E locomotion nets: one tanh hidden layer (30 Swimmer, 50 Hopper/Walker)."""
    return (
        actor_network(observation_spec, action_spec, (hidden_units,), seed=seed),
        value_network(observation_spec, (hidden_units,), seed=seed),
    )


def paper_atari_networks(observation_spec, action_spec, seed=None):
    """Appendix E Atari nets: two 16-channel 4×4 stride-2 convs, then 20 hidden units."""
    kwargs = dict(
        conv_layer_params=ATARI_CONV_LAYERS,
        fc_layer_params=(20,),
        activation_fn=tf.keras.activations.relu,
        seed=seed,
    )
    return (
        actor_network(observation_spec, action_spec, **kwargs),
        value_network(observation_spec, **kwargs),
    )
