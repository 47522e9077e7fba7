"""Output-layer initialisation of tftrpo.networks and its plumbing from the config."""
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
