"""TRPOAgent: the natural-gradient step, its guarantees, its compiled form, its errors."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.networks import actor_distribution_rnn_network, value_rnn_network
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from tftrpo import TRPOAgent, networks
from tftrpo.agent import minibatch_orders
from trajectories import assert_refused_without_change, random_experience

OBS_SPEC = tensor_spec.TensorSpec([11], tf.float32, "observation")
CONT_ACTION = tensor_spec.BoundedTensorSpec([3], tf.float32, -1.0, 1.0, "action")
DISC_ACTION = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 3, "action")


def make_agent(action_spec=CONT_ACTION, obs_spec=OBS_SPEC, **kwargs):
    tf.random.set_seed(kwargs.pop("seed", 0))
    time_step_spec = ts.time_step_spec(obs_spec)
    actor = networks.actor_network(obs_spec, action_spec, (16, 16))
    value = networks.value_network(obs_spec, (16, 16))
    kwargs.setdefault("normalize_observations", False)
    kwargs.setdefault("train_step_counter", tf.Variable(0, dtype=tf.int64))
    return TRPOAgent(time_step_spec, action_spec, actor, value, tf.keras.optimizers.Adam(1e-3), **kwargs)


def independent_mask(experience):
    mask = (experience.step_type.numpy() != ts.StepType.LAST).astype(np.float64)
    mask[:, -1] = 0.0
    return mask


def distribution(agent, experience):
    dist, _ = agent._actor_net(experience.observation, step_type=experience.step_type, network_state=())
    return dist


@pytest.mark.parametrize("action_spec", [CONT_ACTION, DISC_ACTION], ids=["gaussian", "categorical"])
def test_accepted_step_respects_trust_region_and_improves_surrogate(action_spec):
    max_kl = 0.01
    agent = make_agent(action_spec, max_kl=max_kl, discount_factor=0.0, value_train_epochs=0)
    experience = random_experience(agent, batch_size=3, length=40, seed=1)
    old = distribution(agent, experience)
    values, _ = agent._value_net(experience.observation, step_type=experience.step_type, network_state=())

    info = agent.train(experience)
    assert not info.extra.step_rejected.numpy()

    new = distribution(agent, experience)
    mask = independent_mask(experience)
    kl = tfp.distributions.kl_divergence(old, new).numpy()
    mean_kl = (kl * mask).sum() / mask.sum()
    assert mean_kl <= max_kl * (1 + 1e-4)
    assert mean_kl == pytest.approx(float(info.extra.kl), rel=1e-3)

    # γ = 0: Â = r − V(s), standardised over the trainable entries.
    adv = experience.reward.numpy() - values.numpy()
    mean = (adv * mask).sum() / mask.sum()
    std = np.sqrt((((adv - mean) ** 2) * mask).sum() / mask.sum())
    adv = (adv - mean) / (std + 1e-8)
    ratio = np.exp(new.log_prob(experience.action).numpy() - old.log_prob(experience.action).numpy())
    improvement = ((ratio - 1.0) * adv * mask).sum() / mask.sum()
    assert improvement > 0
    assert improvement == pytest.approx(float(info.extra.actual_improvement), rel=1e-3, abs=1e-6)
    assert float(info.extra.actual_improvement) >= 0.1 * float(info.extra.expected_improvement)


def test_rejected_line_search_restores_every_variable_bit_identically():
    agent = make_agent(accept_ratio=1e9, value_train_epochs=0)
    experience = random_experience(agent, seed=2)
    before = [v.numpy().copy() for v in agent._actor_net.variables]
    info = agent.train(experience)
    assert info.extra.step_rejected.numpy()
    assert int(info.extra.line_search_backtracks) == 10
    after = [v.numpy() for v in agent._actor_net.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("action_spec", [CONT_ACTION, DISC_ACTION], ids=["gaussian", "categorical"])
def test_gauss_newton_xla_and_graph_and_hessian_products_take_the_same_step(action_spec):
    """The Gauss-Newton product's CG solve under XLA (the default), as a plain graph, and the Hessian form."""
    agents = {"auto-xla": make_agent(action_spec, value_train_epochs=0),
              "auto-graph": make_agent(action_spec, value_train_epochs=0, jit_compile=False),
              "hessian": make_agent(action_spec, fisher_vector_product="hessian", value_train_epochs=0)}
    for name in ("auto-graph", "hessian"):
        for net in ("_actor_net", "_value_net"):
            for a, b in zip(getattr(agents["auto-xla"], net).variables, getattr(agents[name], net).variables):
                b.assign(a)
    experience = random_experience(agents["auto-xla"], seed=12)
    before = [v.numpy().copy() for v in agents["auto-xla"]._actor_net.trainable_variables]
    after = {}
    for method, agent in agents.items():
        info = agent.train(experience)
        assert not bool(info.extra.step_rejected)
        after[method] = [v.numpy() for v in agent._actor_net.trainable_variables]
    steps = {m: np.concatenate([(a - b).ravel() for a, b in zip(after[m], before)]) for m in after}
    assert np.linalg.norm(steps["auto-xla"]) > 1e-3  # a real step
    # float32 CG: XLA's fused kernels round differently from the graph's (~1e-3 of the step seen).
    for other in ("auto-graph", "hessian"):
        assert np.linalg.norm(steps["auto-xla"] - steps[other]) < 5e-3 * np.linalg.norm(steps[other])


def test_step_direction_moves_parameters_and_trains_value_net():
    agent = make_agent(max_kl=0.05)
    experience = random_experience(agent, seed=3)
    actor_before = [v.numpy().copy() for v in agent._actor_net.trainable_variables]
    value_before = [v.numpy().copy() for v in agent._value_net.trainable_variables]
    loss = None
    for _ in range(3):
        info = agent.train(experience)
        loss = float(info.extra.value_loss) if loss is None else loss
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(actor_before, agent._actor_net.trainable_variables))
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(value_before, agent._value_net.trainable_variables))
    assert float(info.extra.value_loss) < loss
    assert int(agent.train_step_counter.numpy()) == 3


def test_minibatch_orders_visit_each_weighted_sample_once_per_epoch():
    weights = tf.constant([1.0, 0.0, 0.5, 1.0, 0.0, 2.0, 1.0, 0.0])  # last: the padding sample
    orders = minibatch_orders(weights, epochs=4, size=3).numpy()
    assert orders.shape == (4, 8 + 3)
    valid = {0, 2, 3, 5, 6}
    for row in orders:
        assert set(row[:5]) == valid and len(set(row[:5])) == 5  # a permutation of the valid samples
        assert sorted(row[5:8]) == [1, 4, 7] and list(row[8:]) == [7, 7, 7]
    assert len({tuple(row[:5]) for row in orders}) > 1  # fresh orders per epoch


def test_seeded_minibatch_orders_depend_only_on_the_seed():
    weights = tf.constant([1.0, 0.0, 0.5, 1.0, 0.0, 2.0, 1.0, 0.0])
    first = minibatch_orders(weights, 4, 3, seed=tf.constant([7, 2], tf.int64)).numpy()
    tf.random.uniform([5])  # TF's stateful RNG moves on; the seeded orders do not depend on it
    again = minibatch_orders(weights, 4, 3, seed=tf.constant([7, 2], tf.int64)).numpy()
    other = minibatch_orders(weights, 4, 3, seed=tf.constant([7, 3], tf.int64)).numpy()  # the next train step
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for row in other:
        assert set(row[:5]) == {0, 2, 3, 5, 6} and list(row[8:]) == [7, 7, 7]


@pytest.mark.parametrize("jit_compile", [True, False], ids=["xla", "graph"])
def test_value_regression_equals_plain_minibatch_adam(jit_compile):
    # The agent's compiled regression on a flat batch with zero-weight (masked) and
    # fractional-weight samples, 21 valid samples in minibatches of 5 (the last one
    # partial), against an eager Keras loop over minibatches cut from the valid samples.
    agent = make_agent(value_train_epochs=3, value_minibatch_size=5, jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    n = 30
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    returns = rng.normal(size=n + 1).astype(np.float32)
    weights = np.where(rng.uniform(size=n + 1) < 0.25, 0.0, rng.uniform(0.5, 1.5, size=n + 1)).astype(np.float32)
    weights[-1] = 0.0
    num_valid = int(np.sum(weights > 0))
    orders = minibatch_orders(tf.constant(weights), 3, 5)

    reference_net = networks.value_network(OBS_SPEC, (16, 16))
    reference_net.create_variables()
    for mine, theirs in zip(reference_net.variables, agent._value_net.variables):
        mine.assign(theirs)
    optimizer = tf.keras.optimizers.Adam(1e-3)
    for order in orders.numpy():
        valid_order = order[:num_valid]
        for start in range(0, num_valid, 5):
            idx = valid_order[start:start + 5]
            with tf.GradientTape() as tape:
                values, _ = reference_net(obs[idx])
                loss = tf.reduce_sum(weights[idx] * tf.square(values - returns[idx])) / np.sum(weights[idx])
            grads = tape.gradient(loss, reference_net.trainable_variables)
            optimizer.apply_gradients(zip(grads, reference_net.trainable_variables))

    before = [v.numpy().copy() for v in agent._value_net.trainable_variables]
    agent._value_regression(tf.constant(obs), tf.constant(returns), tf.constant(weights), orders,
                            tf.constant(num_valid))
    assert int(agent._optimizer.iterations.numpy()) == 3 * 5  # ceil(21 / 5) steps per epoch
    for got, want, old in zip(agent._value_net.trainable_variables, reference_net.trainable_variables, before):
        assert not np.allclose(got.numpy(), old)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_compiled_update_traces_once_over_iterations_and_shapes():
    agent = make_agent(normalize_observations=True)
    for i, (batch, length) in enumerate([(2, 30)] * 5 + [(3, 17), (1, 64)] * 3):
        agent.train(random_experience(agent, batch_size=batch, length=length, seed=i))
    assert agent._update.experimental_get_tracing_count() == 1


def test_train_inside_user_common_function():
    from tf_agents.utils import common

    agent, plain = make_agent(), make_agent()
    copy_networks(plain, agent)
    before = np.concatenate([v.numpy().ravel() for v in agent._actor_net.variables])
    train = common.function(agent.train)
    experience = random_experience(agent, seed=4)
    info, plain_info = train(experience), plain.train(experience)
    # The same update as a plain call. While the update was inlined into the caller's graph it was
    # optimised differently, and 25 float32 CG iterations amplified that to ~0.1-1% of the step
    # (0.3% on one weight on CI's CPU); since it is never inlined the steps are equal bit for bit
    # here, and they are still compared as vectors, to 2% of their size, as a margin for other CPUs.
    assert float(info.extra.kl) == pytest.approx(float(plain_info.extra.kl), rel=1e-2) and float(info.extra.kl) > 0
    step = np.concatenate([v.numpy().ravel() for v in agent._actor_net.variables]) - before
    plain_step = np.concatenate([v.numpy().ravel() for v in plain._actor_net.variables]) - before
    assert np.linalg.norm(plain_step) > 0
    assert np.linalg.norm(step - plain_step) <= 2e-2 * np.linalg.norm(plain_step)


def test_reward_normalization_inside_an_outer_function_with_static_shapes():
    """`tf_agents.train.Learner` and a user's `common.function` call `agent.train` inside a function
    whose batch shape is static. Grappler used to inline the update there, infer the shape of the
    reward normaliser's per-row running return (a variable whose length is the batch's) from its
    assignment, and fold the first batch's "no rows carried yet" test to False: InvalidArgumentError
    "Incompatible shapes: [3,1] vs. [0,1]". The update is now never inlined; its reward
    statistics, carried returns and losses over two batches equal plain calls'."""
    from tf_agents.utils import common

    agent, plain = make_agent(normalize_rewards=True), make_agent(normalize_rewards=True)
    copy_networks(plain, agent)
    train = common.function(agent.train)
    for seed in (4, 5):
        experience = random_experience(agent, seed=seed)
        experience = experience._replace(reward=experience.reward * 5.0 + 1.0)
        info, plain_info = train(experience), plain.train(experience)
        np.testing.assert_allclose(float(info.extra.value_loss), float(plain_info.extra.value_loss), rtol=1e-4)
        for ours, theirs in zip(agent._reward_normalizer.variables, plain._reward_normalizer.variables):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    assert agent._reward_normalizer._running_return.numpy().shape == (3,)


def test_observation_normalizer_is_updated_and_used_by_policies():
    agent = make_agent(normalize_observations=True)
    experience = random_experience(agent, seed=5)
    shifted = experience._replace(observation=experience.observation * 3.0 + 7.0)
    agent.train(shifted)
    _, avg, _, _ = agent._observation_normalizer.variables
    np.testing.assert_allclose(avg.numpy(), shifted.observation.numpy().reshape(-1, 11).mean(0), rtol=1e-4)
    obs = shifted.observation[:, 0]
    step = ts.restart(obs, batch_size=obs.shape[0])
    expected = agent._actor_net(
        agent._observation_normalizer.normalize(obs), step_type=None, network_state=())[0].mode()
    np.testing.assert_allclose(agent.policy.action(step).action.numpy(), np.clip(expected.numpy(), -1, 1), atol=1e-5)


def copy_networks(agent, source):
    """Gives `agent` the actor and value weights of `source`."""
    for net, src in ((agent._actor_net, source._actor_net), (agent._value_net, source._value_net)):
        for variable, value in zip(net.variables, src.variables):
            variable.assign(value)


def actor_gap(a, b) -> float:
    """The largest absolute difference between two agents' actor weights."""
    return max(np.abs(p.numpy() - q.numpy()).max()
               for p, q in zip(a._actor_net.trainable_variables, b._actor_net.trainable_variables))


def test_prime_observation_normalizer_takes_the_first_update_on_normalised_observations():
    """The primed first update equals a plain agent's update on observations normalised in NumPy
    with that batch's own statistics; the statistics count each batch once, as without priming."""
    after = dict(normalize_observations=True, observation_statistics_before_update=False, seed=7)
    plain = make_agent(**after)
    primed = make_agent(prime_observation_normalizer=True, **after)
    on_normalised = make_agent(normalize_observations=False, seed=7)
    first = random_experience(plain, seed=8)
    first = first._replace(observation=first.observation * 3.0 + 7.0)
    second = random_experience(plain, seed=9)
    second = second._replace(observation=second.observation * 2.0 - 4.0)
    flat = first.observation.numpy().reshape(-1, 11).astype(np.float64)
    by_numpy = np.clip((first.observation.numpy() - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-8), -10.0, 10.0)
    for agent in (primed, on_normalised):  # one initialisation for all three
        copy_networks(agent, plain)

    plain.train(first)
    primed.train(first)
    on_normalised.train(first._replace(observation=tf.constant(by_numpy.astype(np.float32))))
    print("primed vs NumPy-normalised", actor_gap(primed, on_normalised), "plain vs primed", actor_gap(plain, primed))
    # (float32 streaming statistics against float64 NumPy ones: equal to rounding through the CG solve)
    assert actor_gap(primed, on_normalised) < 2e-4
    assert actor_gap(plain, primed) > 1e-2  # without priming the first step was taken on raw observations

    for agent in (plain, primed):  # the first batch counted once either way
        mean, variance = agent._observation_normalizer.mean_and_variance()
        np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-4)
        np.testing.assert_allclose(variance, flat.var(0), rtol=1e-3)
    both = np.concatenate([flat, second.observation.numpy().reshape(-1, 11)])
    primed.train(second)  # statistics present: updated after the update, as without the option
    mean, variance = primed._observation_normalizer.mean_and_variance()
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(variance, both.var(0), rtol=1e-3)


def test_observation_statistics_before_update_normalises_every_batch_with_itself_included():
    """The default: each update equals a plain agent's update on observations normalised in NumPy with the
    statistics of every batch so far, this one included; each batch is counted once."""
    primed = make_agent(normalize_observations=True, observation_statistics_before_update=False,
                        prime_observation_normalizer=True, seed=7)
    first_option = make_agent(normalize_observations=True, seed=7)  # the default
    on_normalised = make_agent(normalize_observations=False, seed=7)
    batches = [random_experience(primed, seed=8), random_experience(primed, seed=9)]
    batches = [batches[0]._replace(observation=batches[0].observation * 3.0 + 7.0),
               batches[1]._replace(observation=batches[1].observation * 2.0 - 4.0)]
    for agent in (first_option, on_normalised):  # one initialisation for all three
        copy_networks(agent, primed)
    seen = np.zeros((0, 11))
    for batch in batches:
        seen = np.concatenate([seen, batch.observation.numpy().reshape(-1, 11).astype(np.float64)])
        by_numpy = np.clip((batch.observation.numpy() - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-8), -10.0, 10.0)
        for agent in (primed, first_option):
            agent.train(batch)
        on_normalised.train(batch._replace(observation=tf.constant(by_numpy.astype(np.float32))))
        print("option vs NumPy-normalised", actor_gap(first_option, on_normalised), "primed vs option",
              actor_gap(primed, first_option))
        # (float32 streaming statistics against float64 NumPy ones: equal to rounding through the CG solve)
        assert actor_gap(first_option, on_normalised) < 3e-4
        mean, variance = first_option._observation_normalizer.mean_and_variance()
        np.testing.assert_allclose(mean, seen.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(variance, seen.var(0), rtol=1e-3)
    # Priming alone normalised the second batch with the first batch's statistics only.
    assert actor_gap(primed, first_option) > 1e-2


def unrolled(net, experience):
    """[B, T] of a recurrent net's outputs, one step at a time, its state zeroed by hand at each
    FIRST step (the net itself is told every step is MID, so it resets nothing)."""
    step_type = experience.step_type.numpy()
    batch, length = step_type.shape
    state, outputs = net.get_initial_state(batch), []
    for t in range(length):
        first = tf.constant(step_type[:, t] == ts.StepType.FIRST)
        state = tf.nest.map_structure(
            lambda s: tf.where(tf.reshape(first, [-1] + [1] * (len(s.shape) - 1)), tf.zeros_like(s), s), state)
        output, state = net(experience.observation[:, t], step_type=tf.fill([batch], ts.StepType.MID),
                            network_state=state)
        outputs.append(output)
    return outputs


def test_recurrent_networks_carry_their_state_along_t_and_reset_it_at_first():
    """An LSTM actor and critic: the step's mean KL and surrogate improvement equal those of the
    nets unrolled one step at a time with the state zeroed at episode starts (γ = 0)."""
    tf.keras.utils.set_random_seed(0)  # the same weights whatever ran before (Keras seeds from Python's random)
    actor = actor_distribution_rnn_network.ActorDistributionRnnNetwork(
        OBS_SPEC, CONT_ACTION, input_fc_layer_params=(16,), lstm_size=(8,), output_fc_layer_params=(16,))
    value = value_rnn_network.ValueRnnNetwork(OBS_SPEC, input_fc_layer_params=(16,), lstm_size=(8,),
                                              output_fc_layer_params=(16,))
    agent = TRPOAgent(ts.time_step_spec(OBS_SPEC), CONT_ACTION, actor, value, tf.keras.optimizers.Adam(1e-3),
                      normalize_observations=False, value_train_epochs=2, discount_factor=0.0)
    experience = random_experience(agent, batch_size=2, length=20, seed=6, episode_lengths=(5, 7))
    old = unrolled(actor, experience)
    values = np.stack([v.numpy() for v in unrolled(value, experience)], axis=1)
    info = agent.train(experience).extra
    assert not bool(info.step_rejected)
    new = unrolled(actor, experience)

    mask = independent_mask(experience)
    actions = experience.action
    kl = np.stack([tfp.distributions.kl_divergence(o, n).numpy() for o, n in zip(old, new)], axis=1)
    log_ratio = np.stack([n.log_prob(actions[:, t]).numpy() - o.log_prob(actions[:, t]).numpy()
                          for t, (o, n) in enumerate(zip(old, new))], axis=1)
    adv = experience.reward.numpy() - values
    mean = (adv * mask).sum() / mask.sum()
    adv = (adv - mean) / (np.sqrt((((adv - mean) ** 2) * mask).sum() / mask.sum()) + 1e-8)
    assert (kl * mask).sum() / mask.sum() == pytest.approx(float(info.kl), rel=1e-3)
    improvement = ((np.exp(log_ratio) - 1.0) * adv * mask).sum() / mask.sum()
    assert improvement > 0 and improvement == pytest.approx(float(info.actual_improvement), rel=2e-3, abs=1e-6)


def test_convolutional_networks_fit_the_design():
    # CNN on uint8 frames.
    image_spec = tensor_spec.BoundedTensorSpec([16, 16, 2], tf.uint8, 0, 255, "observation")
    actor, value = networks.actor_network(image_spec, DISC_ACTION, (8,), conv_layer_params=((4, 4, 2),)), \
        networks.value_network(image_spec, (8,), conv_layer_params=((4, 4, 2),))
    agent = TRPOAgent(ts.time_step_spec(image_spec), DISC_ACTION, actor, value,
                      tf.keras.optimizers.Adam(1e-3), normalize_observations=False)
    info = agent.train(random_experience(agent, batch_size=2, length=12, seed=7))
    assert np.isfinite(float(info.loss))


# ------------------------------------------------------------------ bad input
def test_wrong_network_specs_are_named():
    other_obs = tensor_spec.TensorSpec([5], tf.float32)
    with pytest.raises(ValueError, match="input_tensor_spec"):
        TRPOAgent(ts.time_step_spec(OBS_SPEC), CONT_ACTION, networks.actor_network(other_obs, CONT_ACTION),
                  networks.value_network(OBS_SPEC), tf.keras.optimizers.Adam())
    with pytest.raises(ValueError, match="action spec"):
        TRPOAgent(ts.time_step_spec(OBS_SPEC), CONT_ACTION, networks.actor_network(OBS_SPEC, DISC_ACTION),
                  networks.value_network(OBS_SPEC), tf.keras.optimizers.Adam())
    from_one = tensor_spec.BoundedTensorSpec([], tf.int64, 1, 3)  # a categorical head would sample 0..2
    with pytest.raises(ValueError, match="does not start at 0"):
        TRPOAgent(ts.time_step_spec(OBS_SPEC), from_one, networks.actor_network(OBS_SPEC, from_one),
                  networks.value_network(OBS_SPEC), tf.keras.optimizers.Adam())
    with pytest.raises(TypeError, match="time_step_spec"):
        TRPOAgent(OBS_SPEC, CONT_ACTION, networks.actor_network(OBS_SPEC, CONT_ACTION),
                  networks.value_network(OBS_SPEC), tf.keras.optimizers.Adam())
    with pytest.raises(ValueError, match="max_kl"):
        make_agent(max_kl=-1.0)
    image_spec = tensor_spec.BoundedTensorSpec([8, 8, 1], tf.uint8, 0, 255)
    with pytest.raises(ValueError, match="normalize_observations"):
        TRPOAgent(ts.time_step_spec(image_spec), DISC_ACTION, networks.actor_network(image_spec, DISC_ACTION),
                  networks.value_network(image_spec), tf.keras.optimizers.Adam(), normalize_observations=True)


def test_mismatched_experience_shapes_are_rejected():
    agent = make_agent()
    experience = random_experience(agent, seed=8)
    bad = experience._replace(observation=experience.observation[..., :5])
    with pytest.raises(ValueError, match="observation|shape"):
        agent.train(bad)
    with pytest.raises(ValueError, match="at least 2 time steps"):
        agent.train(tf.nest.map_structure(lambda t: t[:, :1], experience))


@pytest.mark.parametrize("field", ["observation", "action", "reward", "discount"])
@pytest.mark.parametrize("statistics_before_update", [True, False])
def test_a_refused_non_finite_batch_changes_nothing(field, statistics_before_update):
    """A batch refused for NaN or Inf leaves every variable of the agent as it was: the
    observation and reward statistics, the networks, the optimizer and the train step. (The
    refusal used to come after the statistics and the counter had taken the batch, and a NaN
    observation then made every later action NaN.)"""
    agent = make_agent(normalize_observations=True, normalize_rewards=True,
                       observation_statistics_before_update=statistics_before_update)
    agent.train(random_experience(agent, seed=8))
    experience = random_experience(agent, seed=9)
    bad = getattr(experience, field).numpy()
    bad[1, 5] = np.nan if field != "observation" else np.inf
    assert_refused_without_change(agent, experience._replace(**{field: tf.constant(bad)}),
                                  f"experience.{field} contains NaN or Inf")
    info = agent.train(experience)  # and the agent trains on as before
    assert np.isfinite(float(info.loss)) and int(agent.train_step_counter.numpy()) == 2


def test_weights_of_another_shape_are_refused_and_nan_weights_change_nothing():
    agent = make_agent(normalize_observations=True, normalize_rewards=True)
    experience = random_experience(agent, batch_size=3, length=40, seed=9)
    for shape in ([4], [3, 39], [3, 40, 1]):
        with pytest.raises(ValueError, match=r"weights must be a scalar, \[B\] \(per row\) or \[B, T\]"):
            agent.train(experience, weights=tf.ones(shape))
    assert_refused_without_change(agent, experience, "weights contains NaN or Inf",
                                  weights=tf.constant([1.0, np.nan, 1.0]))
    assert_refused_without_change(agent, experience, "weights must be >= 0",
                                  weights=tf.constant([1.0, -1.0, 1.0]))
    # A scalar weight is every row's and a [B, T] of ones is no weighting: the same update.
    scaled, plain = make_agent(), make_agent()
    copy_networks(plain, scaled)
    scaled_info = scaled.train(experience, weights=tf.constant(2.0))
    plain_info = plain.train(experience, weights=tf.ones([3, 40]))
    assert float(scaled_info.extra.kl) == pytest.approx(float(plain_info.extra.kl), rel=1e-4)


def test_nan_rewards_raise_a_clear_error():
    agent = make_agent()
    experience = random_experience(agent, seed=9)
    reward = experience.reward.numpy()
    reward[1, 5] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="reward contains NaN"):
        agent.train(experience._replace(reward=tf.constant(reward)))
