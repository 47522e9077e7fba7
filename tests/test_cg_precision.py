"""TRPOAgent(cg_precision="float64"): the natural-gradient step against the same step computed
independently in NumPy float64 (finite-difference gradient and Jacobian, dense Fisher, textbook CG)."""
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.networks import actor_distribution_network
from tf_agents.trajectories import time_step as ts

from tftrpo import TRPOAgent, networks
from test_agent import CONT_ACTION, DISC_ACTION, OBS_SPEC, independent_mask, make_agent
from trajectories import random_experience

# σ = e⁻³ and λ = 1e-4 give a Fisher of condition ~1e5, where float32 rounding moves 25 CG
# iterations' result by ~1e-4 relative (float64: ~1e-6, the float32 gradient's own rounding).
MAX_KL, DAMPING, CG_ITERS, LOG_STD = 0.01, 1e-4, 25, -3.0


def gaussian_mlp(params, observations):
    """The preset actor's mean and log σ in NumPy: tanh layers, a linear mean, a free log σ."""
    w1, b1, w2, b2, w3, b3, log_std = params
    hidden = np.tanh(np.tanh(observations @ w1 + b1) @ w2 + b2)
    return hidden @ w3 + b3, log_std


def unflatten(flat, shapes):
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def numpy_step(agent, experience):
    """β·s with s from CG_ITERS textbook CG iterations on (F + λI)s = g and β = sqrt(2δ/sᵀ(F + λI)s)
    (Appendix C), all in float64 from the actor's weights: g and the Jacobian of the mean by central
    differences of a NumPy forward pass, F formed densely."""
    variables = agent._actor_net.trainable_variables
    shapes = [tuple(v.shape) for v in variables]
    theta = np.concatenate([v.numpy().astype(np.float64).ravel() for v in variables])
    mask = independent_mask(experience).ravel() > 0
    observations = experience.observation.numpy().reshape(-1, OBS_SPEC.shape[0]).astype(np.float64)[mask]
    actions = experience.action.numpy().reshape(-1, CONT_ACTION.shape[0]).astype(np.float64)[mask]
    values, _ = agent._value_net(experience.observation, step_type=experience.step_type, network_state=())
    advantages = (experience.reward.numpy() - values.numpy()).ravel()[mask].astype(np.float64)  # γ = 0
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    def log_prob(flat):
        mean, log_std = gaussian_mlp(unflatten(flat, shapes), observations)
        return np.sum(-0.5 * ((actions - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), axis=1)

    old = log_prob(theta)

    def surrogate(flat):  # Eq. (14)
        return np.mean(np.exp(log_prob(flat) - old) * advantages)

    h = 1e-6
    eye = np.eye(theta.size)
    g = np.array([(surrogate(theta + h * e) - surrogate(theta - h * e)) / (2 * h) for e in eye])
    # Dense Fisher of the mean KL: Jᵀ diag(1/σ²) J / N for the mean, 2·I for the free log σ.
    jacobian = np.stack([(gaussian_mlp(unflatten(theta + h * e, shapes), observations)[0]
                          - gaussian_mlp(unflatten(theta - h * e, shapes), observations)[0]).ravel() / (2 * h)
                         for e in eye], axis=1)
    _, log_std = gaussian_mlp(unflatten(theta, shapes), observations)
    inverse_variance = np.tile(np.exp(-2 * log_std), len(observations))
    fisher = jacobian.T @ (inverse_variance[:, None] * jacobian) / len(observations)
    fisher[-log_std.size:, -log_std.size:] += 2.0 * np.eye(log_std.size)
    A = fisher + DAMPING * np.eye(theta.size)
    x, r = np.zeros_like(g), g.copy()
    p, rr = r.copy(), r @ r
    for _ in range(CG_ITERS):
        z = A @ p
        alpha = rr / (p @ z)
        x, r = x + alpha * p, r - alpha * z
        p, rr = r + (r @ r / rr) * p, r @ r
    return np.sqrt(2 * MAX_KL / (x @ A @ x)) * x, np.linalg.cond(A)


def agent_step(agent, experience):
    variables = agent._actor_net.trainable_variables
    before = np.concatenate([v.numpy().ravel() for v in variables])
    info = agent.train(experience).extra
    assert not bool(info.step_rejected)
    after = np.concatenate([v.numpy().ravel() for v in variables])
    return (after - before).astype(np.float64) / float(info.step_fraction)


def test_float64_step_matches_an_independent_float64_computation_where_float32_does_not():
    agents = {p: make_agent(cg_precision=p, max_kl=MAX_KL, cg_damping=DAMPING, cg_iters=CG_ITERS,
                            discount_factor=0.0, value_train_epochs=0) for p in ("float32", "float64")}
    # One seeded initialisation for both agents: the problem instance (and so the size of the
    # float32 error) is the same on every run, not a fresh unseeded draw.
    seeded = {"_actor_net": networks.actor_network(OBS_SPEC, CONT_ACTION, (16, 16), seed=11),
              "_value_net": networks.value_network(OBS_SPEC, (16, 16), seed=12)}
    seeded["_actor_net"].create_variables(OBS_SPEC)
    seeded["_value_net"].create_variables(OBS_SPEC)
    for name, source in seeded.items():
        for agent in agents.values():
            for variable, value in zip(getattr(agent, name).variables, source.variables):
                variable.assign(value)
    for agent in agents.values():  # small σ: an ill-conditioned Fisher, as late in training
        agent._actor_net.trainable_variables[-1].assign(tf.fill([3], LOG_STD))
    experience = random_experience(agents["float32"], batch_size=3, length=40, seed=1)
    expected, condition = numpy_step(agents["float64"], experience)
    assert condition > 1e4
    error = {p: np.linalg.norm(agent_step(a, experience) - expected) / np.linalg.norm(expected)
             for p, a in agents.items()}
    assert error["float64"] < 1e-5, error
    assert error["float32"] > 10 * error["float64"], error
    # The default float32 step is rounding-limited, not wrong: within 1% of the exact step (~1e-3 here).
    assert error["float32"] < 1e-2, error


@pytest.mark.parametrize("action_spec", [CONT_ACTION, DISC_ACTION], ids=["gaussian", "categorical"])
def test_float64_copy_is_float64_and_follows_the_actor(action_spec):
    agent = make_agent(action_spec, cg_precision="float64", value_train_epochs=0)
    copy = agent._fisher.value
    assert [v.dtype for v in copy.trainable_variables] == [tf.float64] * len(agent._actor_net.trainable_variables)
    # Not part of the agent's checkpointed state: a float32 agent's checkpoint restores into it.
    assert len(agent.variables) == len(make_agent(action_spec).variables)
    experience = random_experience(agent, seed=12)
    for _ in range(2):
        start = [v.numpy() for v in agent._actor_net.trainable_variables]
        info = agent.train(experience).extra
        assert not bool(info.step_rejected) and float(info.kl) <= 0.01 * (1 + 1e-4)
        # Synced at the start of each update: the copy holds the weights the step started from.
        for before, after, held in zip(start, agent._actor_net.trainable_variables, copy.trainable_variables):
            np.testing.assert_array_equal(held.numpy(), before.astype(np.float64))
        assert any(not np.array_equal(b, a.numpy()) for b, a in zip(start, agent._actor_net.trainable_variables))


def test_bad_cg_precision_and_unsupported_networks_are_named():
    with pytest.raises(ValueError, match="cg_precision must be 'float32' or 'float64'"):
        make_agent(cg_precision="float16")

    class NoDtypeActor(actor_distribution_network.ActorDistributionNetwork):
        def __init__(self, input_tensor_spec, output_tensor_spec, name="NoDtypeActor"):
            super().__init__(input_tensor_spec, output_tensor_spec, fc_layer_params=(8,), name=name)

    with pytest.raises(ValueError, match="cg_precision='float64' needs an actor network"):
        TRPOAgent(ts.time_step_spec(OBS_SPEC), CONT_ACTION, NoDtypeActor(OBS_SPEC, CONT_ACTION),
                  networks.value_network(OBS_SPEC), tf.keras.optimizers.Adam(), cg_precision="float64")
