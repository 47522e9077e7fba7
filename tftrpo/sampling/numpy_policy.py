"""A NumPy mirror of a feed-forward `ActorPolicy`, for stepping Python environments.

Collecting from Python environments means one policy call per step. Run as TF ops
(even inside a compiled `tf.while_loop` with the env behind a `tf.numpy_function`),
the collection loop costs 277 µs per step of 2 Hopper-v5 envs beyond the envs, over
half of what the envs themselves take (~480 µs); with the MLP in NumPy, 64 µs
(bench/experiments/collect_policy.py). `NumpyActorPolicy` is a
TF-Agents `PyPolicy` that reads the TF policy's variables (`sync()`, once per batch)
and computes, in float32 NumPy, the function the TF policy's graph computes (equal up to
float32 rounding: the sums run in another order):

  observation → normaliser (`ObservationNormalizer`: (o − μ)/√(σ² + ε), clipped)
  → the encoder's Dense layers → Normal(μ(s), σ) or Categorical(logits(s))
  → a sample (or the mode, for a `GreedyPolicy`), clipped to the spec if the policy clips.

It mirrors what `tftrpo.networks.actor_network` builds (and TF-Agents'
`ActorDistributionNetwork` with Dense layers generally). Anything else (conv or
recurrent layers, preprocessing layers, state-dependent or squashed Gaussians, nested
specs, other normalisers) is refused by `unsupported_reason`, and the collector keeps
the TF policy. Samples come from a seeded `np.random.Generator`, not TF's RNG: the
same distribution, other draws.
"""
from typing import Optional

import numpy as np
import tensorflow as tf
from tf_agents.networks import (
    actor_distribution_network,
    categorical_projection_network,
    encoding_network,
    normal_projection_network,
)
from tf_agents.policies import actor_policy, greedy_policy, py_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step

from tftrpo.normalization import ObservationNormalizer

__all__ = ["NumpyActorPolicy", "UnsupportedPolicyError", "sampling_generator", "unsupported_reason"]


def _relu(x):
    return np.maximum(x, 0, dtype=x.dtype)


def _softplus(x):
    return np.logaddexp(np.zeros((), x.dtype), x)


# Keras stores the function it was given (or the one a string names); both spellings map.
_ACTIVATIONS = {
    tf.keras.activations.tanh: np.tanh, tf.math.tanh: np.tanh,
    tf.keras.activations.relu: _relu, tf.nn.relu: _relu,
    tf.keras.activations.linear: None, None: None,
}
_STD_TRANSFORMS = {tf.exp: np.exp, tf.math.exp: np.exp, tf.nn.softplus: _softplus,
                   tf.math.softplus: _softplus, None: None}


# The sampling generator's own stream. Gymnasium seeds an env's `np_random` with
# `SeedSequence(seed)`, as `np.random.default_rng(seed)` does: with the same integer the
# policy's noise would replay the bits of the env's reset noise (`load_batched(seed=s)`
# seeds its first env with s), which couples exploration to initial states.
_POLICY_STREAM = 0x7472706F  # "trpo"


def sampling_generator(seed: Optional[int]) -> np.random.Generator:
    """The policy's `np.random.Generator` for `seed`, independent of gymnasium envs seeded with it."""
    return np.random.default_rng(None if seed is None else np.random.SeedSequence(seed, spawn_key=(_POLICY_STREAM,)))


class UnsupportedPolicyError(TypeError):
    """The TF policy has a part `NumpyActorPolicy` does not reproduce."""


def _known(table, fn) -> bool:
    try:
        return fn in table
    except TypeError:  # unhashable callables
        return False


def _network_reason(net) -> Optional[str]:
    if not isinstance(net, actor_distribution_network.ActorDistributionNetwork):
        return f"the actor network is a {type(net).__name__}, not an ActorDistributionNetwork"
    if type(net).call is not actor_distribution_network.ActorDistributionNetwork.call:
        return f"the actor network {type(net).__name__} overrides ActorDistributionNetwork.call"
    if net.state_spec != ():
        return "the actor network is recurrent"
    encoder = net._encoder  # pylint: disable=protected-access
    if not isinstance(encoder, encoding_network.EncodingNetwork):
        return f"the encoder is a {type(encoder).__name__}"
    if encoder._flat_preprocessing_layers is not None or encoder._preprocessing_combiner is not None:  # pylint: disable=protected-access
        return "the encoder has preprocessing layers"
    for layer in encoder._postprocessing_layers:  # pylint: disable=protected-access
        if isinstance(layer, tf.keras.layers.Flatten):
            continue
        if type(layer) is not tf.keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
            return f"the encoder has a {type(layer).__name__} layer (only Dense and Flatten are mirrored)"
        if not _known(_ACTIVATIONS, layer.activation) or layer.dtype != "float32":
            return f"the encoder's layer {layer.name} has activation {layer.activation} / dtype {layer.dtype}"
    projection = net._projection_networks  # pylint: disable=protected-access
    if isinstance(projection, normal_projection_network.NormalProjectionNetwork):
        # pylint: disable=protected-access
        if projection._state_dependent_std or projection._mean_transform is not None or projection._scale_distribution:
            return "the Gaussian head has a state-dependent std, a mean transform or a squashed distribution"
        if not _known(_STD_TRANSFORMS, projection._std_transform):
            return f"the Gaussian head's std transform {projection._std_transform} is not mirrored"
        return _output_layer_reason("the Gaussian head's mean layer", projection._means_projection_layer)
    if isinstance(projection, categorical_projection_network.CategoricalProjectionNetwork):
        if np.any(projection._sample_spec.minimum != 0):  # pylint: disable=protected-access
            return "the categorical action spec does not start at 0"
        return _output_layer_reason("the categorical head's logits layer", projection._projection_layer)  # pylint: disable=protected-access
    return f"the projection network is a {type(projection).__name__}"


def _output_layer_reason(what, layer) -> Optional[str]:
    if type(layer) is not tf.keras.layers.Dense or not layer.use_bias:  # pylint: disable=unidiomatic-typecheck
        return f"{what} is not a Dense layer with a bias"
    if not _known(_ACTIVATIONS, layer.activation):
        return f"{what} has activation {layer.activation}, which is not mirrored"
    return None


def unsupported_reason(policy) -> Optional[str]:
    """Why `NumpyActorPolicy` cannot mirror `policy`, or None when it can."""
    if isinstance(policy, greedy_policy.GreedyPolicy):
        policy = policy.wrapped_policy
    if type(policy) is not actor_policy.ActorPolicy:  # pylint: disable=unidiomatic-typecheck
        return f"the policy is a {type(policy).__name__}, not a TF-Agents ActorPolicy (or a GreedyPolicy of one)"
    if tf.nest.is_nested(policy.time_step_spec.observation) or tf.nest.is_nested(policy.action_spec):
        return "its observation or action spec is nested"
    if not policy.time_step_spec.observation.dtype.is_floating:
        return f"its observations are {policy.time_step_spec.observation.dtype.name}, not floating point"
    if policy.policy_state_spec != ():
        return "it is recurrent (it has a policy state)"
    if policy.info_spec != ():
        return "it emits policy info"
    if policy.observation_and_action_constraint_splitter is not None:
        return "it masks actions"
    normalizer = policy.observation_normalizer
    if normalizer is not None and not isinstance(normalizer, ObservationNormalizer):
        return f"its observation normaliser is a {type(normalizer).__name__}, not tftrpo's ObservationNormalizer"
    return _network_reason(policy._actor_network)  # pylint: disable=protected-access


class NumpyActorPolicy(py_policy.PyPolicy):
    """The `PyPolicy` computing a feed-forward TF `ActorPolicy`'s actions in NumPy.

    Args:
      policy: an `ActorPolicy` (samples its distribution) or a `GreedyPolicy` around
        one (takes the mode); see `unsupported_reason` for what is mirrored.
      seed: seed of the sampling generator (`sampling_generator`: a stream of its own,
        not the one gymnasium gives an env seeded with the same integer).

    Call `sync()` after the TF policy's variables change (the collector does, once per
    batch); until then the mirror acts with the variables it last read.
    """

    def __init__(self, policy, seed: Optional[int] = None):
        reason = unsupported_reason(policy)
        if reason is not None:
            raise UnsupportedPolicyError(f"NumpyActorPolicy cannot mirror {type(policy).__name__} "
                                         f"'{policy.name}': {reason}.")
        super().__init__(tensor_spec.to_nest_array_spec(policy.time_step_spec),
                         tensor_spec.to_nest_array_spec(policy.action_spec))
        self._greedy = isinstance(policy, greedy_policy.GreedyPolicy)
        inner = policy.wrapped_policy if self._greedy else policy
        net = inner._actor_network  # pylint: disable=protected-access
        self._clip = policy._clip  # the policy that is called clips (a GreedyPolicy does, by default)  # pylint: disable=protected-access
        self._normalizer = inner.observation_normalizer
        self._dense = [layer for layer in net._encoder._postprocessing_layers  # pylint: disable=protected-access
                       if isinstance(layer, tf.keras.layers.Dense)]
        self._head = net._projection_networks  # pylint: disable=protected-access
        self._gaussian = isinstance(self._head, normal_projection_network.NormalProjectionNetwork)
        # pylint: disable=protected-access
        self._out = self._head._means_projection_layer if self._gaussian else self._head._projection_layer
        spec = self.action_spec
        self._action_dtype = spec.dtype
        self._low, self._high = np.asarray(spec.minimum, spec.dtype), np.asarray(spec.maximum, spec.dtype)
        self._rng = sampling_generator(seed)
        shape = tuple(spec.shape)
        self._head_shape = shape if self._gaussian else shape + (int(np.max(self._high)) + 1,)
        self.sync()

    @property
    def generator(self) -> np.random.Generator:
        """The `np.random.Generator` the policy samples from (its state is a run's to checkpoint)."""
        return self._rng

    def sync(self) -> None:
        """Reads the TF policy's variables: normaliser statistics, weights, biases."""
        if self._normalizer is not None:
            mean, variance = self._normalizer.mean_and_variance()
            # tf.nn.batch_normalization's form: x·r − μ·r with r = 1/√(σ² + ε).
            scale = (1.0 / np.sqrt(variance + self._normalizer.variance_epsilon)).astype(np.float32)
            self._obs_scale, self._obs_shift = scale, (-mean * scale).astype(np.float32)
        self._layers = [(layer.kernel.numpy(), None if layer.bias is None else layer.bias.numpy(),
                         _ACTIVATIONS[layer.activation]) for layer in self._dense]
        if self._gaussian:
            log_std = self._head._bias.bias.numpy()  # pylint: disable=protected-access
            transform = _STD_TRANSFORMS[self._head._std_transform]  # pylint: disable=protected-access
            self._std = (log_std if transform is None else transform(log_std)).reshape(self._head_shape)
        self._out_weights = (self._out.kernel.numpy(), self._out.bias.numpy(), _ACTIVATIONS[self._out.activation])

    def distribution_parameters(self, observation: np.ndarray) -> dict:
        """{'loc', 'scale'} of the Gaussian, or {'logits'} of the categorical, for a batch [B, ...]."""
        out = self._forward(observation)
        if self._gaussian:
            return {"loc": out, "scale": np.broadcast_to(self._std, out.shape)}
        return {"logits": out}

    def _forward(self, observation: np.ndarray) -> np.ndarray:
        """The head's output for a batch: the Gaussian's mean or the categorical's logits."""
        x = np.asarray(observation, np.float32)
        if self._normalizer is not None:
            x = x * self._obs_scale
            x += self._obs_shift
            clip = self._normalizer.clip_value
            if clip > 0:  # np.minimum/np.maximum: np.clip's wrapper costs more than the MLP here
                np.minimum(np.maximum(x, -clip, out=x), clip, out=x)
        x = x.reshape(x.shape[0], -1)
        for kernel, bias, activation in self._layers:
            x = x @ kernel
            if bias is not None:
                x += bias
            if activation is not None:
                x = activation(x)
        kernel, bias, activation = self._out_weights
        out = x @ kernel
        out += bias
        if activation is not None:
            out = activation(out)
        return out.reshape((x.shape[0],) + self._head_shape)

    def _action(self, time_step, policy_state):
        out = self._forward(time_step.observation)
        if self._gaussian:  # a ~ N(μ, σ²): μ + σ·ε
            action = out if self._greedy else out + self._std * self._rng.standard_normal(out.shape, np.float32)
        else:
            logits = out
            if not self._greedy:  # Gumbel-max: argmax(logits + G) is a sample of Categorical(logits)
                logits = logits - np.log(-np.log(self._rng.random(logits.shape, np.float32)))
            action = np.argmax(logits, axis=-1)
        action = action.astype(self._action_dtype, copy=False)
        if self._clip:
            action = np.minimum(np.maximum(action, self._low), self._high)
        return policy_step.PolicyStep(action, (), ())
