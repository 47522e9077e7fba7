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

import numpy as np
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
    "IndependentOrthogonal",
    "ATARI_CONV_LAYERS",
]

# Appendix E: "two convolutional layers with 16 channels each, with stride 2".
ATARI_CONV_LAYERS = ((16, 4, 2), (16, 4, 2))


class IndependentOrthogonal(tf.keras.initializers.Initializer):
    """Orthogonal init (Saxe et al. 2014) that draws a new matrix on every call.

    TF-Agents' encoding networks hand one `kernel_initializer` to all their layers, and a
    Keras 2 initializer returns the same random numbers on every call (seeded or not:
    Keras warns "The initializer Orthogonal is unseeded and being called multiple
    times"). With a shared `tf.keras.initializers.Orthogonal`, each layer's Gaussian draw
    is the start of the next layer's (the same stateless stream), so the layers are not
    independent. This one builds a fresh `Orthogonal` per call: with `seed=None` each
    takes its own seed from Keras' generator (reproducible under
    `tf.keras.utils.set_random_seed`); with a seed, call k uses a seed derived from
    (seed, k), so runs repeat exactly.
    """

    def __init__(self, gain: float = 1.0, seed: Optional[int] = None):
        self.gain = gain
        self.seed = seed
        self._calls = 0

    def __call__(self, shape, dtype=None, **kwargs):
        seed = None
        if self.seed is not None:
            seed = int(np.random.SeedSequence([self.seed, self._calls]).generate_state(1)[0] >> 1)
        self._calls += 1
        return tf.keras.initializers.Orthogonal(gain=self.gain, seed=seed)(shape, dtype=dtype, **kwargs)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


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
    kernel_init = IndependentOrthogonal(gain=math.sqrt(2.0), seed=seed)
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
        # For a given seed, a body apart from the actor's (the same seed would copy its layers).
        kernel_initializer=IndependentOrthogonal(gain=math.sqrt(2.0), seed=None if seed is None else seed + 1),
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
