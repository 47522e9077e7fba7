"""TRPOAgent's options inside one `train` call, against a NumPy account of the same update.

`test_agent.py` checks the step itself with γ = 0; here GAE(γ, λ), per-row and per-step weights, advantage
standardisation on or off, entropy regularisation, reward scaling and the line-search shrink are
wired through a whole `train`, and every diagnostic of `TRPOLossInfo` is recomputed in NumPy
from the networks before and after the step.
"""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.specs import tensor_spec

from test_advantages import reference_gae
from test_agent import CONT_ACTION, DISC_ACTION, OBS_SPEC, copy_networks, distribution, independent_mask, make_agent
from tftrpo import TRPOEvaluationLossInfo, VineExperience, networks
from tftrpo.normalization import RewardNormalizer
from trajectories import random_experience

GAMMA, LAMBDA = 0.9, 0.8

CASES = {
    "gae": dict(),
    "raw-advantages-entropy-bonus": dict(normalize_advantages=False, entropy_regularization=0.05),
    "row-weights": dict(weights=np.array([1.0, 0.0, 0.5], np.float32)),
    "step-weights": dict(weights=np.where(np.random.default_rng(5).uniform(size=(3, 40)) < 0.3, 0.0,
                                          np.random.default_rng(6).uniform(0.5, 1.5, size=(3, 40))).astype(np.float32)),
    "reward-scaling": dict(normalize_rewards=True),
    "large-region-shrink-0.5": dict(max_kl=200.0, line_search_shrink=0.5, line_search_max_backtracks=20),
}


def masked_mean(x, mask):
    return float((x * mask).sum() / mask.sum())


@pytest.mark.parametrize("action_spec", [CONT_ACTION, DISC_ACTION], ids=["gaussian", "categorical"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_one_update_matches_its_numpy_account(case, action_spec):
    options = dict(CASES[case])
    weights = options.pop("weights", None)
    tf.keras.utils.set_random_seed(0)  # the same weights whatever ran before (Keras seeds from Python's random)
    agent = make_agent(action_spec, discount_factor=GAMMA, lambda_value=LAMBDA, value_train_epochs=0,
                       **{"max_kl": 0.01, **options})
    experience = random_experience(agent, batch_size=3, length=40, seed=2)
    step_type = experience.step_type.numpy()
    rewards = experience.reward.numpy().astype(np.float64)
    if options.get("normalize_rewards"):  # what a fresh RewardNormalizer makes of this first batch
        rewards = RewardNormalizer(GAMMA).scale(experience.reward, experience.step_type).numpy().astype(np.float64)
        assert not np.allclose(rewards, experience.reward.numpy())
    old = distribution(agent, experience)
    values = agent._value_net(experience.observation, step_type=experience.step_type, network_state=())[0].numpy()

    info = agent.train(experience, weights=None if weights is None else tf.constant(weights)).extra
    assert not bool(info.step_rejected)
    new = distribution(agent, experience)

    mask = independent_mask(experience) * (1.0 if weights is None else weights if weights.ndim == 2 else weights[:, None])
    advantages = reference_gae(rewards, values, experience.discount.numpy(), experience.next_step_type.numpy(),
                               GAMMA, LAMBDA)
    returns = advantages + values
    if options.get("normalize_advantages", True):
        mean = masked_mean(advantages, mask)
        advantages = (advantages - mean) / (np.sqrt(masked_mean((advantages - mean) ** 2, mask)) + 1e-8)
    actions = experience.action
    entropy_old, entropy_new = old.entropy().numpy(), new.entropy().numpy()
    ratio = np.exp(new.log_prob(actions).numpy() - old.log_prob(actions).numpy())
    bonus = options.get("entropy_regularization", 0.0)
    improvement = masked_mean((ratio - 1.0) * advantages, mask) + bonus * (
        masked_mean(entropy_new, mask) - masked_mean(entropy_old, mask))
    surrogate = masked_mean(ratio * advantages, mask) + bonus * masked_mean(entropy_new, mask)
    kl = masked_mean(tfp.distributions.kl_divergence(old, new).numpy(), mask)
    residual_mean, returns_mean = masked_mean(returns - values, mask), masked_mean(returns, mask)
    explained = 1.0 - masked_mean((returns - values - residual_mean) ** 2, mask) / masked_mean(
        (returns - returns_mean) ** 2, mask)

    assert float(info.actual_improvement) == pytest.approx(improvement, rel=2e-3, abs=1e-6)
    assert improvement > 0
    assert float(info.surrogate) == pytest.approx(surrogate, rel=2e-3, abs=1e-6)
    assert float(info.kl) == pytest.approx(kl, rel=2e-3) and kl <= agent._max_kl * (1 + 1e-4)
    assert float(info.entropy) == pytest.approx(masked_mean(entropy_old, mask), rel=1e-5)
    assert float(info.explained_variance) == pytest.approx(explained, rel=1e-4, abs=1e-5)
    assert int(info.num_samples) == int((mask > 0).sum())
    backtracks = int(info.line_search_backtracks)
    assert float(info.step_fraction) == pytest.approx(options.get("line_search_shrink", 0.8) ** backtracks, rel=1e-6)
    if case.startswith("large-region"):
        assert backtracks >= 1  # the full step of a 200-nat region overshoots: the shrink is what is checked


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "observation-and-reward-statistics"])
def test_zero_weight_rows_do_not_move_the_policy(normalize):
    """A row of weight 0 contributes nothing: the step equals the one on the other rows alone,
    with the observation and reward statistics too (a padding row far off the others' values
    would move them, and through them the step and the exported policy)."""
    options = dict(normalize_observations=normalize, normalize_rewards=normalize)
    agent_all, agent_some = make_agent(seed=3, **options), make_agent(seed=3, **options)
    copy_networks(agent_some, agent_all)
    experience = random_experience(agent_all, batch_size=3, length=40, seed=4)
    padded = experience._replace(observation=tf.concat([experience.observation[:2], experience.observation[2:] + 5.0], 0),
                                 reward=tf.concat([experience.reward[:2], experience.reward[2:] + 50.0], 0))
    before = np.concatenate([v.numpy().ravel() for v in agent_all._actor_net.variables])
    agent_all.train(padded, weights=tf.constant([1.0, 1.0, 0.0]))
    agent_some.train(tf.nest.map_structure(lambda x: x[:2], experience))
    if normalize:
        for a, b in zip(agent_all._observation_normalizer.mean_and_variance(),
                        agent_some._observation_normalizer.mean_and_variance()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        reward_stats = [agent._reward_normalizer._stats.variables for agent in (agent_all, agent_some)]
        for a, b in zip(*reward_stats):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    step_all, step_some = (np.concatenate([v.numpy().ravel() for v in agent._actor_net.variables]) - before
                           for agent in (agent_all, agent_some))
    # The same step up to float32 rounding (the sums run over other shapes).
    assert np.linalg.norm(step_all) > 1e-3
    assert np.linalg.norm(step_all - step_some) <= 1e-3 * np.linalg.norm(step_all)


def test_observation_clip_value_bounds_what_the_networks_see():
    agent = make_agent(normalize_observations=True, observation_clip_value=0.5)
    experience = random_experience(agent, batch_size=3, length=40, seed=5)
    agent.train(experience)
    far = tf.fill([4, 11], 1e3)
    normalised = agent._normalize(far).numpy()
    assert np.all(np.abs(normalised) <= 0.5 + 1e-6) and np.allclose(np.abs(normalised), 0.5)


@pytest.mark.parametrize("log_std_init", [-1.0, 0.5])
def test_log_std_init_sets_the_initial_policy_noise(log_std_init):
    actor = networks.actor_network(OBS_SPEC, CONT_ACTION, (16, 16), log_std_init=log_std_init)
    dist, _ = actor(tf.zeros([5, 11]), step_type=(), network_state=())
    np.testing.assert_allclose(dist.stddev().numpy(), np.exp(log_std_init), rtol=1e-6)


def test_debug_and_variable_summaries_are_written_under_the_agents_name(tmp_path):
    """debug_summaries / summarize_grads_and_vars: the histograms exist under TRPOAgent/ and the
    advantages' histogram counts exactly the trainable samples."""
    from tensorboard.backend.event_processing import event_accumulator

    agent = make_agent(debug_summaries=True, summarize_grads_and_vars=True)
    experience = random_experience(agent, batch_size=3, length=40, seed=6)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        agent.train(experience)
    writer.flush()
    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    for tag in ("TRPOAgent/Debug/advantages", "TRPOAgent/Debug/returns", "TRPOAgent/Debug/values",
                "TRPOAgent/Debug/actions_0", "TRPOAgent/Debug/policy_gradient_norm",
                "TRPOAgent/Gradients/policy_gradient", "TRPOAgent/TrustRegion/kl"):
        assert tag in tags, (tag, sorted(tags))
    assert sum(t.startswith("TRPOAgent/Variables/") for t in tags) == len(
        agent._actor_net.trainable_variables + agent._value_net.trainable_variables)
    histogram = tf.make_ndarray(events.Tensors("TRPOAgent/Debug/advantages")[0].tensor_proto)
    assert histogram[:, 2].sum() == independent_mask(experience).sum()  # bucket counts


def test_summaries_reach_the_writer_of_each_call_not_the_one_at_the_first_trace(tmp_path):
    """The update is compiled once; its summaries are written in the caller's context. A first
    `train` with no writer (as `tf_agents.train.Learner` traces before it sets its writer) used to
    compile the summaries away for good. Each call's own writer and `record_if` now apply."""
    from tensorboard.backend.event_processing import event_accumulator

    agent = make_agent(debug_summaries=True)
    experience = random_experience(agent, batch_size=3, length=40, seed=6)
    agent.train(experience)  # no writer yet
    for name, record in (("off", False), ("on", True)):
        writer = tf.summary.create_file_writer(str(tmp_path / name))
        with writer.as_default(), tf.summary.record_if(record):
            agent.train(experience)
        writer.flush()
    tags = {}
    for name in ("off", "on"):
        events = event_accumulator.EventAccumulator(str(tmp_path / name), size_guidance={"tensors": 0})
        events.Reload()
        tags[name] = set(events.Tags()["tensors"])
    assert tags["off"] == set()
    assert {"TRPOAgent/TrustRegion/kl", "TRPOAgent/Losses/value_loss", "TRPOAgent/Debug/advantages"} <= tags["on"]
    assert agent.train_step_counter.numpy() == 3


def test_a_batch_without_any_advantage_signal_is_a_rejected_step_that_changes_nothing():
    """All advantages equal (V ≡ 0, rewards ≡ 1, γ = 0): standardised they are 0, the policy gradient is
    0 and there is no direction; the step is rejected and the actor is left bit for bit as it was."""
    agent = make_agent(discount_factor=0.0, value_train_epochs=0)
    for variable in agent._value_net.variables:
        variable.assign(tf.zeros_like(variable))
    experience = random_experience(agent, batch_size=3, length=40, seed=7)
    experience = experience._replace(reward=tf.ones_like(experience.reward))
    before = [v.numpy().copy() for v in agent._actor_net.variables]
    info = agent.train(experience).extra
    assert bool(info.step_rejected) and float(info.kl) == 0.0
    for old, variable in zip(before, agent._actor_net.variables):
        np.testing.assert_array_equal(old, variable.numpy())


def test_vine_experience_refuses_weights():
    from tftrpo import VineExperience

    agent = make_agent(DISC_ACTION)
    experience = VineExperience(observation=tf.zeros([4, 11]), action=tf.zeros([4, 2], tf.int64),
                                q_value=tf.zeros([4, 2]), all_actions=tf.constant(False))
    with pytest.raises(ValueError, match="weights are not supported with vine experience"):
        agent.train(experience, weights=tf.ones([4]))


@pytest.mark.parametrize("kind", ["mujoco", "atari"])
def test_the_papers_appendix_e_networks(kind):
    """MuJoCo: one tanh hidden layer of 50 (30 for Swimmer); Atari: two 16-channel 4×4 stride-2
    convolutions and 20 hidden units, ReLU."""
    if kind == "mujoco":
        obs_spec = tensor_spec.TensorSpec([11], tf.float32)
        actor, value = networks.paper_mujoco_networks(obs_spec, CONT_ACTION, hidden_units=30)
        observation = tf.zeros([2, 11])
    else:
        obs_spec = tensor_spec.BoundedTensorSpec([84, 84, 4], tf.uint8, 0, 255)
        actor, value = networks.paper_atari_networks(obs_spec, DISC_ACTION)
        observation = tf.zeros([2, 84, 84, 4], tf.uint8)
    for net in (actor, value):
        net.create_variables(obs_spec)
        kernels = [v.shape.as_list() for v in net.trainable_variables if "kernel" in v.name]
        if kind == "mujoco":
            assert kernels[0] == [11, 30] and len(kernels) == 2  # one hidden layer, then the head
        else:
            # 84 → 41 → 19 pixels a side (4×4 kernels, stride 2, no padding)
            assert kernels[:3] == [[4, 4, 4, 16], [4, 4, 16, 16], [19 * 19 * 16, 20]] and len(kernels) == 4
    output, _ = actor(observation, step_type=(), network_state=())
    assert output.sample().shape == ((2, 3) if kind == "mujoco" else (2,))


def test_loss_evaluates_a_batch_without_changing_the_agent():
    """`agent.loss` (TF-Agents' evaluation call, e.g. `Learner.loss()`): the value net's mean
    squared error on the GAE returns of the current V (NumPy, after a train call has moved the
    statistics), the surrogate at θ_old, and no variable changes: statistics, networks, counter."""
    agent = make_agent(discount_factor=GAMMA, lambda_value=LAMBDA, normalize_observations=True, normalize_rewards=True)
    agent.train(random_experience(agent, batch_size=3, length=40, seed=7))
    experience = random_experience(agent, batch_size=3, length=40, seed=8)
    before = [v.numpy().copy() for v in agent.variables]
    info = agent.loss(experience, weights=tf.constant([1.0, 0.0, 1.0]))
    for variable, old in zip(agent.variables, before):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.name)

    observations = agent._normalize(experience.observation)
    values = agent._value_net(observations, step_type=experience.step_type, network_state=())[0].numpy()
    stats = agent._reward_normalizer._stats
    mean_var = stats._get_mean_var_estimates()[1][0].numpy()
    rewards = np.clip(experience.reward.numpy() / np.sqrt(mean_var + 1e-8), -10.0, 10.0)
    returns = reference_gae(rewards.astype(np.float64), values, experience.discount.numpy(),
                            experience.next_step_type.numpy(), GAMMA, LAMBDA) + values
    mask = independent_mask(experience) * np.array([1.0, 0.0, 1.0])[:, None]
    want = masked_mean((values - returns) ** 2, mask)
    assert isinstance(info.extra, TRPOEvaluationLossInfo)
    np.testing.assert_allclose(float(info.extra.value_loss), want, rtol=1e-4)
    assert abs(float(info.extra.policy_loss)) < 1e-5  # −Ê[Â] of normalised advantages
    np.testing.assert_allclose(float(info.loss), float(info.extra.policy_loss) + want, rtol=1e-4)
    with pytest.raises(ValueError, match="single-path experience"):
        agent.loss(VineExperience(experience.observation[:, 0], experience.action[:, :2], tf.zeros([3, 2]),
                                  tf.constant(False)))
