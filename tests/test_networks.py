"""Initialisation of tftrpo.networks (hidden and output layers) and its plumbing from the config."""
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.environments import tf_py_environment
from tf_agents.specs import tensor_spec

from tftrpo import networks, presets
from tftrpo.envs import load_batched
from tftrpo.train import make_agent

OBS = tensor_spec.TensorSpec((11,), tf.float32)
BOX = tensor_spec.BoundedTensorSpec((6,), tf.float32, -1.0, 1.0)
DISCRETE = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 199)


def _output_kernel(net, substring):
    net.create_variables()
    kernels = [v for v in net.trainable_variables if substring in v.name and "kernel" in v.name]
    return kernels[-1].numpy()


def _hidden_kernels(net, *create_args):
    net.create_variables(*create_args)
    return [v.numpy() for v in net.trainable_variables if "EncodingNetwork" in v.name and "kernel" in v.name]


def test_independent_orthogonal_draws_a_new_orthogonal_matrix_per_call():
    init = networks.IndependentOrthogonal(gain=np.sqrt(2.0))
    a, b = init((64, 64)).numpy(), init((64, 64)).numpy()
    np.testing.assert_allclose(a.T @ a, 2.0 * np.eye(64), atol=1e-4)
    np.testing.assert_allclose(b.T @ b, 2.0 * np.eye(64), atol=1e-4)
    assert np.abs(a - b).max() > 0.1
    # Keras' own initializer repeats itself on the second call: what this class exists for.
    keras_init = tf.keras.initializers.Orthogonal(gain=np.sqrt(2.0))
    with pytest.warns(UserWarning, match="called multiple times"):
        np.testing.assert_array_equal(keras_init((64, 64)).numpy(), keras_init((64, 64)).numpy())
    seeded = [networks.IndependentOrthogonal(seed=5) for _ in range(2)]
    first, second = ([init((11, 64)).numpy(), init((64, 64)).numpy()] for init in seeded)
    for x, y in zip(first, second):  # a seed repeats the whole sequence of draws
        np.testing.assert_array_equal(x, y)
    assert np.abs(networks.IndependentOrthogonal(seed=6)((11, 64)).numpy() - first[0]).max() > 0.1


@pytest.mark.parametrize("seed", [None, 3])
def test_hidden_layers_are_drawn_independently(seed, recwarn):
    tf.keras.utils.set_random_seed(4)
    actor = _hidden_kernels(networks.actor_network(OBS, BOX, (64, 64, 64), seed=seed))
    value = _hidden_kernels(networks.value_network(OBS, (64, 64, 64), seed=seed), OBS)
    for kernel in actor + value:  # orthogonal with gain √2 (rows or columns, whichever are fewer)
        small = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
        np.testing.assert_allclose(small, 2.0 * np.eye(len(small)), atol=1e-4)
    # A shared Keras Orthogonal made same-shaped layers identical (and, for a seed, the actor's
    # body a copy of the critic's).
    assert np.abs(actor[1] - actor[2]).max() > 0.1 and np.abs(value[1] - value[2]).max() > 0.1
    assert np.abs(actor[1] - value[1]).max() > 0.1
    assert not [w for w in recwarn if "called multiple times" in str(w.message)]


def test_unseeded_layers_repeat_under_the_global_seed():
    # tftrpo-train seeds with tf.keras.utils.set_random_seed and builds its nets unseeded: a run repeats.
    def build():
        tf.keras.utils.set_random_seed(7)
        return _hidden_kernels(networks.actor_network(OBS, BOX)) + \
            _hidden_kernels(networks.value_network(OBS), OBS)

    first, second = build(), build()
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("gain", [0.1, 0.01])
@pytest.mark.parametrize("action_spec, layer", [(BOX, "means_projection"), (DISCRETE, "logits")])
def test_policy_head_weights_have_std_gain_over_sqrt_fan_in(gain, action_spec, layer):
    tf.keras.utils.set_random_seed(1)
    kernel = _output_kernel(networks.actor_network(OBS, action_spec, (64, 64), output_gain=gain), layer)
    assert kernel.shape[0] == 64
    # 384 (means) or 12800 (logits) draws: the sample std is within 15% of gain/sqrt(64).
    assert abs(kernel.std() / (gain / 8.0) - 1.0) < 0.15, kernel.std()
    assert abs(kernel.mean()) < 3 * gain / 8.0 / np.sqrt(kernel.size)


def test_value_head_orthogonal_with_gain_or_tf_agents_uniform(tmp_path):
    tf.keras.utils.set_random_seed(2)
    tf_agents_head = networks.value_network(OBS, (64, 32), output_gain=0.0)
    orthogonal = networks.value_network(OBS, (64, 32), output_gain=1.7)
    default = networks.value_network(OBS, (64, 32))
    w0, w1 = _output_kernel(tf_agents_head, "ValueNetwork"), _output_kernel(orthogonal, "ValueNetwork")
    assert w0.shape == w1.shape == (32, 1)
    assert np.all(np.abs(w0) <= 0.03) and np.linalg.norm(w0) < 0.3  # TF-Agents' uniform ±0.03
    assert np.linalg.norm(w1) == pytest.approx(1.7, rel=1e-5)  # a unit column times the gain
    assert np.linalg.norm(_output_kernel(default, "ValueNetwork")) == pytest.approx(1.0, rel=1e-5)  # gain 1
    # Only the head's init differs: the same variables, the same checkpoint keys.
    assert [v.shape for v in tf_agents_head.trainable_variables] == [v.shape for v in orthogonal.trainable_variables]
    observations = tf.constant(np.random.default_rng(0).normal(size=(5, 11)), tf.float32)
    path = tf.train.Checkpoint(net=tf_agents_head).write(str(tmp_path / "value"))
    tf.train.Checkpoint(net=orthogonal).read(path).assert_consumed()
    np.testing.assert_array_equal(orthogonal(observations)[0].numpy(), tf_agents_head(observations)[0].numpy())


def test_default_policy_head_is_sb3_contribs_gain():
    """The default output gain is 0.01 (sb3-contrib's): a 100x smaller last layer than hidden ones."""
    tf.keras.utils.set_random_seed(4)
    kernel = _output_kernel(networks.actor_network(OBS, BOX, (64, 64)), "means_projection")
    assert abs(kernel.std() / (0.01 / 8.0) - 1.0) < 0.15, kernel.std()


def test_bad_output_gains_are_refused():
    with pytest.raises(ValueError, match="value_network: output_gain must be >= 0"):
        networks.value_network(OBS, output_gain=-1.0)
    with pytest.raises(ValueError, match="actor_network: output_gain must be > 0"):
        networks.actor_network(OBS, BOX, output_gain=0.0)


def test_make_agent_uses_the_configs_init_and_adam_epsilon():
    tf_env = tf_py_environment.TFPyEnvironment(load_batched("Pendulum-v1", num_envs=1, seed=0))
    defaults = presets.preset("Pendulum-v1")
    assert (defaults.policy_output_gain, defaults.value_output_gain, defaults.value_adam_epsilon) == (0.01, 1.0, 1e-5)
    # TF-Agents' init (the defaults before the 1M-step comparison) must reach the networks too.
    config = presets.preset("Pendulum-v1", policy_output_gain=0.1, value_output_gain=0.0, value_adam_epsilon=1e-7)
    tf.keras.utils.set_random_seed(3)
    agent = make_agent(config, tf_env, tf.Variable(0, dtype=tf.int64))
    assert agent._optimizer.epsilon == pytest.approx(1e-7)  # noqa: SLF001
    value_kernel = _output_kernel(agent._value_net, "ValueNetwork")  # noqa: SLF001
    assert np.all(np.abs(value_kernel) <= 0.03)
    means = _output_kernel(agent._actor_net, "means_projection")  # noqa: SLF001
    # 64 draws of std 0.1/8: far above the default's 0.01/8.
    assert 0.1 / 8.0 * 0.6 < means.std() < 0.1 / 8.0 * 1.5
