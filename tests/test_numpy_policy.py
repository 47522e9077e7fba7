"""NumpyActorPolicy: the NumPy mirror of a TF ActorPolicy, against the TF policy itself."""
import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.networks import actor_distribution_network, actor_distribution_rnn_network, normal_projection_network
from tf_agents.policies import actor_policy, greedy_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import tensor_normalizer

from tftrpo import networks
from tftrpo.normalization import ObservationNormalizer
from tftrpo.sampling.numpy_policy import NumpyActorPolicy, UnsupportedPolicyError, unsupported_reason

OBS_SPEC = tensor_spec.TensorSpec([5], tf.float32, "observation")
CONT_ACTION = tensor_spec.BoundedTensorSpec([3], tf.float32, -1.0, 1.0, "action")
DISC_ACTION = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 3, "action")


def _perturb(net, scale=0.5, seed=1):
    """Weights away from their initial values (the log std and output layer start near 0)."""
    rng = np.random.default_rng(seed)
    for v in net.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def _normalizer(seed=2):
    """An ObservationNormalizer that has seen data with means ≠ 0 and variances ≠ 1."""
    normalizer = ObservationNormalizer(OBS_SPEC, clip_value=3.0)
    rng = np.random.default_rng(seed)
    normalizer.update(tf.constant(rng.normal([1, -2, 0, 3, 5], [0.5, 2, 1, 4, 0.1], (200, 5)), tf.float32))
    return normalizer


def _time_step(observation):
    n = observation.shape[0]
    return ts.TimeStep(tf.fill([n], ts.StepType.MID), tf.zeros([n]), tf.ones([n]), tf.constant(observation))


def _observations(n=64, seed=3):
    obs = np.random.default_rng(seed).normal(0, 3, (n, 5)).astype(np.float32)
    obs[:4] *= 100.0  # far outside the running statistics: the normaliser's clip
    return obs


def _tftrpo_actor(action_spec):
    tf.random.set_seed(0)
    net = networks.actor_network(OBS_SPEC, action_spec, (16, 8))
    net.create_variables()
    _perturb(net)
    return net


def _tf_agents_relu_softplus_actor(action_spec):
    """TF-Agents' own defaults where they are mirrored: ReLU layers, a softplus std."""
    tf.random.set_seed(0)
    net = actor_distribution_network.ActorDistributionNetwork(
        OBS_SPEC, action_spec, fc_layer_params=(12,), activation_fn=tf.keras.activations.relu,
        continuous_projection_net=functools.partial(normal_projection_network.NormalProjectionNetwork,
                                                    mean_transform=None))
    net.create_variables()
    _perturb(net)
    return net


def _tanh_mean_head_actor(action_spec):
    """A Gaussian head whose means layer has an activation of its own (NormalProjectionNetwork's
    activation_fn): the mirror applies it too."""
    tf.random.set_seed(0)
    net = actor_distribution_network.ActorDistributionNetwork(
        OBS_SPEC, action_spec, fc_layer_params=(12,),
        continuous_projection_net=functools.partial(normal_projection_network.NormalProjectionNetwork,
                                                    activation_fn=tf.nn.tanh, mean_transform=None,
                                                    init_means_output_factor=3.0))
    net.create_variables()
    _perturb(net)
    return net


def _parameters(distribution):
    if isinstance(distribution, tfp.distributions.Categorical):
        return {"logits": distribution.logits.numpy()}
    return {"loc": distribution.mean().numpy(), "scale": distribution.stddev().numpy()}


@pytest.mark.parametrize("make_net, action_spec", [
    (_tftrpo_actor, CONT_ACTION), (_tftrpo_actor, DISC_ACTION), (_tf_agents_relu_softplus_actor, CONT_ACTION),
    (_tanh_mean_head_actor, CONT_ACTION)],
    ids=["tftrpo-gaussian", "tftrpo-categorical", "tf-agents-relu-softplus", "tanh-mean-head"])
@pytest.mark.parametrize("normalize", [True, False], ids=["normalised", "raw"])
def test_distribution_parameters_equal_the_tf_policy(make_net, action_spec, normalize):
    net = make_net(action_spec)
    policy = actor_policy.ActorPolicy(ts.time_step_spec(OBS_SPEC), action_spec, net,
                                      observation_normalizer=_normalizer() if normalize else None, clip=False)
    mirror = NumpyActorPolicy(policy, seed=0)
    obs = _observations()
    want = _parameters(policy.distribution(_time_step(obs)).action)
    got = mirror.distribution_parameters(obs)
    assert set(got) == set(want)
    for key in want:
        assert got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)
    # The parameters really depend on the observation (a constant output would pass too easily).
    assert np.ptp(next(iter(want.values())), axis=0).max() > 0.1


def test_sync_reads_changed_variables():
    net = _tftrpo_actor(CONT_ACTION)
    normalizer = _normalizer()
    policy = actor_policy.ActorPolicy(ts.time_step_spec(OBS_SPEC), CONT_ACTION, net,
                                      observation_normalizer=normalizer, clip=False)
    mirror = NumpyActorPolicy(policy, seed=0)
    obs = _observations()
    before = mirror.distribution_parameters(obs)["loc"]
    _perturb(net, seed=7)
    normalizer.update(tf.constant(np.random.default_rng(4).normal(10, 3, (100, 5)), tf.float32))
    np.testing.assert_array_equal(mirror.distribution_parameters(obs)["loc"], before)  # not read yet
    mirror.sync()
    want = policy.distribution(_time_step(obs)).action
    np.testing.assert_allclose(mirror.distribution_parameters(obs)["loc"], want.mean().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mirror.distribution_parameters(obs)["scale"], want.stddev().numpy(), rtol=1e-5)


def test_gaussian_samples_have_the_policy_mean_and_std():
    net = _tftrpo_actor(CONT_ACTION)
    policy = actor_policy.ActorPolicy(ts.time_step_spec(OBS_SPEC), CONT_ACTION, net, clip=False)
    mirror = NumpyActorPolicy(policy, seed=0)
    n = 20000
    obs = np.repeat(_observations(2), n // 2, axis=0)
    actions = mirror.action(_time_step(obs)).action
    assert actions.dtype == np.float32 and actions.shape == (n, 3)
    dist = policy.distribution(_time_step(obs[[0, -1]])).action
    loc, scale = dist.mean().numpy(), dist.stddev().numpy()
    for row, half in enumerate((actions[: n // 2], actions[n // 2:])):
        # means within 5 standard errors, standard deviations within 5%
        assert np.all(np.abs(half.mean(0) - loc[row]) < 5 * scale[row] / np.sqrt(n // 2))
        np.testing.assert_allclose(half.std(0), scale[row], rtol=0.05)
    # Unclipped: the spec's bounds are exceeded where the distribution puts mass beyond them.
    assert np.abs(actions).max() > 1.0


def test_categorical_samples_have_the_policy_probabilities():
    net = _tftrpo_actor(DISC_ACTION)
    policy = actor_policy.ActorPolicy(ts.time_step_spec(OBS_SPEC), DISC_ACTION, net, clip=False)
    mirror = NumpyActorPolicy(policy, seed=0)
    n = 20000
    obs = np.repeat(_observations(1), n, axis=0)
    actions = mirror.action(_time_step(obs)).action
    assert actions.dtype == np.int64 and actions.shape == (n,)
    probs = tf.nn.softmax(policy.distribution(_time_step(obs[:1])).action.logits).numpy()[0]
    freq = np.bincount(actions, minlength=4) / n
    assert np.all(np.abs(freq - probs) < 5 * np.sqrt(probs * (1 - probs) / n) + 1e-3)


@pytest.mark.parametrize("action_spec", [CONT_ACTION, DISC_ACTION], ids=["gaussian", "categorical"])
def test_greedy_policy_mirrors_the_mode_clipped_to_the_spec(action_spec):
    net = _tftrpo_actor(action_spec)
    if action_spec is CONT_ACTION:  # means beyond the bounds for the first action dimension
        net._projection_networks._means_projection_layer.bias.assign([3.0, 0.0, -3.0])
    policy = greedy_policy.GreedyPolicy(actor_policy.ActorPolicy(
        ts.time_step_spec(OBS_SPEC), action_spec, net, observation_normalizer=_normalizer(), clip=True))
    mirror = NumpyActorPolicy(policy)
    obs = _observations()
    want = policy.action(_time_step(obs)).action.numpy()
    got = mirror.action(_time_step(obs)).action
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, atol=1e-5)
    if action_spec is CONT_ACTION:
        assert np.any(got == 1.0) and np.any(got == -1.0) and np.abs(got).max() <= 1.0
    else:
        assert len(np.unique(got)) > 1


def test_the_seed_makes_samples_repeatable():
    net = _tftrpo_actor(CONT_ACTION)
    policy = actor_policy.ActorPolicy(ts.time_step_spec(OBS_SPEC), CONT_ACTION, net, clip=False)
    step = _time_step(_observations())
    first, again, other = (NumpyActorPolicy(policy, seed=s).action(step).action for s in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_sampling_noise_is_not_the_stream_of_an_env_seeded_alike():
    """Gymnasium seeds env.np_random with SeedSequence(seed), as np.random.default_rng(seed) does;
    the policy's noise must not replay an env's reset noise when both get the same integer."""
    from gymnasium.utils import seeding

    net = _tftrpo_actor(CONT_ACTION)
    policy = actor_policy.ActorPolicy(ts.time_step_spec(OBS_SPEC), CONT_ACTION, net, clip=False)
    obs = _observations()
    mirror = NumpyActorPolicy(policy, seed=0)
    params = mirror.distribution_parameters(obs)
    noise = (mirror.action(_time_step(obs)).action - params["loc"]) / params["scale"]
    env_rng, _ = seeding.np_random(0)
    same_stream = env_rng.standard_normal(noise.shape, np.float32)
    np.testing.assert_allclose(np.random.default_rng(0).standard_normal(noise.shape, np.float32), same_stream)
    assert np.corrcoef(noise.ravel(), same_stream.ravel())[0, 1] < 0.5
    assert not np.allclose(noise, same_stream, atol=1e-3)


def test_unsupported_policies_are_refused_with_the_reason():
    time_step_spec = ts.time_step_spec(OBS_SPEC)
    rnn = actor_distribution_rnn_network.ActorDistributionRnnNetwork(OBS_SPEC, CONT_ACTION, lstm_size=(8,))
    squashed = actor_distribution_network.ActorDistributionNetwork(OBS_SPEC, CONT_ACTION, fc_layer_params=(8,))
    image_spec = tensor_spec.TensorSpec([16, 16, 1], tf.uint8)
    cnn = networks.actor_network(image_spec, DISC_ACTION, (8,), conv_layer_params=((4, 4, 2),))
    elu_head = actor_distribution_network.ActorDistributionNetwork(
        OBS_SPEC, CONT_ACTION, fc_layer_params=(8,),
        continuous_projection_net=functools.partial(normal_projection_network.NormalProjectionNetwork,
                                                    activation_fn=tf.nn.elu, mean_transform=None))

    class DoubledMeans(actor_distribution_network.ActorDistributionNetwork):
        def call(self, observations, step_type, network_state, training=False):
            return super().call(2.0 * observations, step_type, network_state, training)

    own_call = DoubledMeans(OBS_SPEC, DISC_ACTION, fc_layer_params=(8,))
    cases = [
        (actor_policy.ActorPolicy(time_step_spec, CONT_ACTION, rnn), "recurrent"),
        (actor_policy.ActorPolicy(time_step_spec, CONT_ACTION, squashed), "mean transform"),
        (actor_policy.ActorPolicy(ts.time_step_spec(image_spec), DISC_ACTION, cnn), "uint8"),
        (actor_policy.ActorPolicy(time_step_spec, CONT_ACTION, networks.actor_network(OBS_SPEC, CONT_ACTION),
                                  observation_normalizer=tensor_normalizer.StreamingTensorNormalizer(OBS_SPEC)),
         "StreamingTensorNormalizer"),
        (actor_policy.ActorPolicy(time_step_spec, CONT_ACTION, elu_head), "mean layer has activation"),
        (actor_policy.ActorPolicy(time_step_spec, DISC_ACTION, own_call), "overrides ActorDistributionNetwork.call"),
    ]
    for policy, reason in cases:
        assert reason in unsupported_reason(policy)
        with pytest.raises(UnsupportedPolicyError, match=reason):
            NumpyActorPolicy(policy)
    float_image_spec = tensor_spec.TensorSpec([16, 16, 1], tf.float32)
    conv = networks.actor_network(float_image_spec, DISC_ACTION, (8,), conv_layer_params=((4, 4, 2),))
    assert "Conv2D" in unsupported_reason(actor_policy.ActorPolicy(ts.time_step_spec(float_image_spec),
                                                                   DISC_ACTION, conv))
