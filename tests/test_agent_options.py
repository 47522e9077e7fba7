"""TRPOAgent's options inside one `train` call, against a NumPy account of the same update.

`test_agent.py` checks the step itself with γ = 0; here GAE(γ, λ), per-row weights, advantage
standardisation on or off, entropy regularisation, reward scaling and the line-search shrink are
wired through a whole `train`, and every diagnostic of `TRPOLossInfo` is recomputed in NumPy
from the networks before and after the step.
"""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from test_advantages import reference_gae
from test_agent import CONT_ACTION, DISC_ACTION, OBS_SPEC, copy_networks, distribution, independent_mask, make_agent
from tftrpo import networks
from tftrpo.normalization import RewardNormalizer
from trajectories import random_experience

GAMMA, LAMBDA = 0.9, 0.8

CASES = {
    "gae": dict(),
    "raw-advantages-entropy-bonus": dict(normalize_advantages=False, entropy_regularization=0.05),
    "row-weights": dict(weights=np.array([1.0, 0.0, 0.5], np.float32)),
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

    mask = independent_mask(experience) * (1.0 if weights is None else weights[:, None])
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


def test_zero_weight_rows_do_not_move_the_policy():
    """A row of weight 0 contributes nothing: the step equals the one on the other rows alone."""
    agent_all, agent_some = make_agent(seed=3), make_agent(seed=3)
    copy_networks(agent_some, agent_all)
    experience = random_experience(agent_all, batch_size=3, length=40, seed=4)
    before = np.concatenate([v.numpy().ravel() for v in agent_all._actor_net.variables])
    agent_all.train(experience, weights=tf.constant([1.0, 1.0, 0.0]))
    agent_some.train(tf.nest.map_structure(lambda x: x[:2], experience))
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
