"""TRPOAgent: Trust Region Policy Optimization as a TF-Agents `TFAgent`.

Wiring only: the mathematics lives in `tftrpo.natural_gradient` (surrogate, mean
KL, Fisher-vector product, conjugate gradient, step size, line search) and
`tftrpo.advantages` (GAE). One call of `train(experience)` is one iteration of the
paper's practical algorithm (Section 6), with the single-path estimator:

1. advantages Â by GAE(γ, λ) on the [B, T] batch, with V_φ as baseline;
2. g = ∇_θ L(θ) of the surrogate (Eq. 14);
3. s ≈ F⁻¹g by conjugate gradient over Fisher-vector products of the mean KL;
4. full step β·s with β = sqrt(2δ / sᵀFs), then a backtracking line search that
   accepts the first candidate within the trust region that improves L;
5. regression of V_φ on the GAE returns (Â + V).

`train(experience, weights)` takes TF-Agents' optional weights as a scalar, one per row [B]
or one per step [B, T]; a batch with NaN or Inf in any of its fields or weights is refused
(InvalidArgumentError) before it changes anything.

The whole update is one `tf.function`, traced once for all batch shapes, without
AutoGraph: its loops (CG, line search, value epochs, scans) are explicit
`tf.while_loop`s, so tracing does not convert TF-Agents' and TFP's code on the way.
"""
import math
from typing import NamedTuple, Optional, Union

import gin
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.agents import data_converter, tf_agent
from tf_agents.agents.ppo import ppo_utils
from tf_agents.distributions import utils as distribution_utils
from tf_agents.networks import network
from tf_agents.policies import actor_policy, greedy_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common, nest_utils

from tftrpo import advantages as advantages_lib
from tftrpo import natural_gradient as ng
from tftrpo.normalization import ObservationNormalizer, RewardNormalizer

__all__ = ["TRPOAgent", "TRPOLossInfo", "TRPOEvaluationLossInfo", "VineExperience"]


class VineExperience(NamedTuple):
    """A vine rollout set (Section 5.2), the input of `TRPOAgent.train` for vine sampling.

    observation: [N, ...] raw observations of the rollout-set states s_n.
    action: [N, K, ...] the K actions a_{n,k} tried at each state.
    q_value: [N, K] Q̂(s_n, a_{n,k}), discounted returns of the branch rollouts.
    all_actions: scalar bool, True when the K actions enumerate a discrete space
      (exact surrogate) rather than being sampled from π_θold (importance weights).
    """

    observation: object
    action: object
    q_value: tf.Tensor
    all_actions: tf.Tensor


class TRPOEvaluationLossInfo(NamedTuple):
    """The `extra` of the `LossInfo` returned by `TRPOAgent.loss`: the current policy and value
    net on a batch, nothing updated."""

    policy_loss: tf.Tensor  # −L(θ) at θ = θ_old (importance ratio 1): −Ê[Â] (and −c·entropy)
    value_loss: tf.Tensor  # mean squared error of V_φ on the batch's returns (Â + V)
    entropy: tf.Tensor  # mean policy entropy
    explained_variance: tf.Tensor  # 1 − Var(R − V)/Var(R)


class TRPOLossInfo(NamedTuple):
    """The `extra` of the `LossInfo` returned by `TRPOAgent.train`."""

    kl: tf.Tensor  # mean KL(π_old ‖ π_new) after the step (0 if rejected)
    expected_improvement: tf.Tensor  # gᵀΔθ of the last line-search candidate
    actual_improvement: tf.Tensor  # L(θ_new) − L(θ_old) of the last candidate
    line_search_backtracks: tf.Tensor  # shrinks before acceptance (max if rejected)
    step_rejected: tf.Tensor  # bool: θ restored exactly
    step_fraction: tf.Tensor  # accepted fraction of the full step β·s
    surrogate: tf.Tensor  # L(θ) after the step (normalised advantages)
    entropy: tf.Tensor  # mean policy entropy before the step
    value_loss: tf.Tensor  # mean squared error of V_φ on the returns, after fitting
    explained_variance: tf.Tensor  # 1 − Var(R − V)/Var(R), V before fitting
    num_samples: tf.Tensor  # trainable (s, a) pairs in the batch


def _repeat(times, fn):
    """Calls fn() `times` times in one `tf.while_loop` (fn's effects are variable updates)."""
    def once(i):
        fn()
        return i + 1

    tf.while_loop(lambda i: i < times, once, (tf.constant(0),))


def minibatch_orders(weights, epochs: int, size: int, seed=None):
    """[epochs, N + size] sample orders for minibatch epochs over the N samples of `weights`.

    Row e lists the samples with weight > 0 in a fresh random order, then the others,
    then `size` copies of N − 1 (a zero-weight padding sample), so that every slice
    [k·size, (k+1)·size) with k·size < #valid exists: minibatches of static size whose
    zero-weight entries do not count in a weighted-mean loss. `seed`: a [2] integer
    tensor for stateless draws (the same seed, the same orders); None: TF's stateful RNG.
    """
    num = tf.shape(weights)[0]
    shape = tf.stack([epochs, num])
    uniform = tf.random.uniform(shape) if seed is None else tf.random.stateless_uniform(shape, seed)
    keys = uniform + tf.cast(weights <= 0, tf.float32)
    return tf.concat([tf.argsort(keys, axis=1, stable=True), tf.fill([epochs, size], num - 1)], axis=1)


def _checked_finite(experience, fields, what: str, **extra):
    """`experience` (a namedtuple) whose `fields`, and the tensors `extra`, come out only once every
    floating leaf of all of them is finite (`tf.debugging.check_numerics`); returns (experience,
    extra). An update that computes from what this returns raises on NaN or Inf before it changes
    any state (observation and reward statistics, networks, train step), so a refused batch leaves
    the agent as it was; assertions whose results went unused would not hold those changes back."""
    named = {**{what + f: getattr(experience, f) for f in fields}, **extra}
    checks = [tf.debugging.check_numerics(t, f"TRPOAgent.train: {name} contains NaN or Inf (leaf {i})")
              for name, nest in named.items() for i, t in enumerate(tf.nest.flatten(nest)) if t.dtype.is_floating]
    with tf.control_dependencies(checks):
        passed = {name: tf.nest.map_structure(tf.identity, nest) for name, nest in named.items()}
    return experience._replace(**{f: passed[what + f] for f in fields}), {k: passed[k] for k in extra}


def _step_weights(weights, step_type) -> tf.Tensor:
    """`train`'s `weights` as a [B, T] float tensor: None (all 1), a scalar, one per row ([B]) or
    one per step ([B, T]), each >= 0. Each step's terms in the surrogate, the mean KL, the
    advantage statistics and the value loss are weighted by it; rows or steps of weight 0
    (padding) drop out, also of the observation and reward statistics."""
    shape = tf.shape(step_type)
    if weights is None:
        return tf.ones(shape, tf.float32)
    weights = tf.cast(weights, tf.float32)
    rank = weights.shape.rank
    if rank is None or rank > 2 or any(w is not None and s is not None and w not in (1, s) for w, s in zip(
            weights.shape.as_list(), step_type.shape.as_list())):
        raise ValueError(f"TRPOAgent.train: weights must be a scalar, [B] (per row) or [B, T] (per step) for "
                         f"experience of outer shape {step_type.shape.as_list()}; got shape {weights.shape}")
    if rank == 1:
        weights = weights[:, None]
    return tf.broadcast_to(weights, shape)


@gin.configurable
class TRPOAgent(tf_agent.TFAgent):
    """Trust Region Policy Optimization (Schulman et al. 2015) for TF-Agents.

    Args:
      time_step_spec: `TimeStep` spec of the environment.
      action_spec: (nest of) `BoundedTensorSpec` of the actions.
      actor_net: a TF-Agents `Network` mapping observations to a distribution
        over actions (`ActorDistributionNetwork`, or any network whose output
        spec is a distribution spec); MLP, CNN or RNN.
      value_net: a TF-Agents `Network` mapping observations to V(s), shape [B].
      optimizer: optimizer of the value net (e.g. `tf.keras.optimizers.Adam(1e-3)`).
        The policy is moved by the natural-gradient step, not by an optimizer.
      max_kl: δ, the trust-region radius on the mean KL (Eq. 12): the KL of the
        whole action distribution, averaged over states. (sb3-contrib also averages
        a diagonal Gaussian's KL over the d action dimensions: its target_kl δ and
        cg_damping λ are max_kl = d·δ and cg_damping = d·λ here.)
      cg_iters: conjugate-gradient iterations (Appendix C).
      cg_damping: λ added to the Fisher, F + λI.
      line_search_max_backtracks: candidates tried, each `line_search_shrink`
        times the previous.
      line_search_shrink: step shrink factor of the line search.
      accept_ratio: a candidate must achieve at least this fraction of the
        improvement predicted by the linear model gᵀΔθ.
      discount_factor: γ.
      lambda_value: λ of GAE; 1.0 gives the paper's Monte-Carlo Q̂ − V.
      value_train_epochs: passes of value regression per `train` call.
      value_minibatch_size: minibatch size of value regression (feed-forward
        value nets; recurrent value nets are fitted on whole sequences).
      normalize_observations: keep running mean/variance of observations in the
        agent (checkpointed, and applied inside `policy` and `collect_policy`, so
        an exported SavedModel takes raw observations).
      observation_clip_value: clip normalised observations to ±this value.
      observation_statistics_before_update: when a batch joins the observation
        statistics. True (default): *before* its update, so the update (policy step
        and value fit) is taken with the statistics its policy then collects with,
        and the trust region bounds the policy that acts; VecNormalize updates them
        at every step, which is the same to within one batch. π_θold is then
        re-evaluated on inputs normalised with statistics one batch newer than those
        the batch was collected with. False: *after* its update, as TF-Agents' PPO
        does: the update sees the statistics its batch was collected with, one batch
        behind those its policy then collects with, and the first update sees raw
        observations. On Hopper's first 100k steps True raises the area under the
        learning curve by 0.40 SD (111 seeds paired; bench/README.md, stop 25).
        Either way each batch is counted once.
      prime_observation_normalizer: with `observation_statistics_before_update=False`,
        add a batch *before* its update only while there are no statistics yet (and
        not again after it): the first update sees normalised observations, later
        ones the same statistics as without it. (Implied by the default.)
      normalize_rewards: divide rewards by the running standard deviation of the
        discounted return (VecNormalize's scheme; checkpointed with the agent).
      normalize_advantages: standardise Â over each batch.
      entropy_regularization: coefficient of the mean entropy added to L.
      fisher_vector_product: how F·v (the Hessian of the mean KL times v) is
        computed: "hessian" differentiates the KL's gradient (double backward);
        "auto" uses the equal Gauss-Newton form Jᵀ(∇²_p KL)J v, about twice as
        fast, for feed-forward Gaussian and categorical policies, and "hessian"
        otherwise (recurrent actors, other distributions).
      cg_precision: "float32" computes the Fisher-vector products and conjugate
        gradient in the networks' float32; "float64" in float64, on a float64 copy
        of the actor (`network.copy(dtype=tf.float64)`, re-synced each update),
        the direction then cast back. Late in training the Fisher's condition
        number reaches ~3000 (Hopper) and float32 rounding in the products costs
        CG much of its progress: at the same `cg_iters` the float64 solve is
        closer to F⁻¹g (bench/experiments/cg_precision.py). Products cost ~2×.
      jit_compile: compile with XLA the value net's minibatch regression
        (feed-forward value nets) and the conjugate-gradient solve with its
        Gauss-Newton Fisher-vector products: the same updates, on Hopper
        `train()` takes ~0.7× the time (each new batch shape compiles once).
        False runs them as plain TF graphs (for ops or optimizers XLA lacks).
      debug_summaries: write histograms (advantages, returns, values, actions).
      summarize_grads_and_vars: write histograms of the policy gradient (flat, before
        CG) and of the actor's and critic's variables.
      train_step_counter: counter incremented by each `train` call.
      name: the agent's name scope (summaries are written under it).
    """

    def __init__(
        self,
        time_step_spec: ts.TimeStep,
        action_spec,
        actor_net: network.Network,
        value_net: network.Network,
        optimizer: tf.keras.optimizers.Optimizer,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 0.1,
        line_search_max_backtracks: int = 10,
        line_search_shrink: float = 0.8,
        accept_ratio: float = 0.1,
        discount_factor: float = 0.99,
        lambda_value: float = 0.95,
        value_train_epochs: int = 10,
        value_minibatch_size: int = 128,
        normalize_observations: bool = True,
        observation_clip_value: float = 10.0,
        prime_observation_normalizer: bool = False,
        observation_statistics_before_update: bool = True,
        normalize_rewards: bool = False,
        normalize_advantages: bool = True,
        entropy_regularization: float = 0.0,
        fisher_vector_product: str = "auto",
        cg_precision: str = "float32",
        jit_compile: bool = True,
        debug_summaries: bool = False,
        summarize_grads_and_vars: bool = False,
        train_step_counter: Optional[tf.Variable] = None,
        name: Optional[str] = None,
    ):
        tf.Module.__init__(self, name=name or "TRPOAgent")
        if not isinstance(time_step_spec, ts.TimeStep):
            raise TypeError(f"TRPOAgent: time_step_spec must be a TimeStep of specs, got {type(time_step_spec)}.")
        time_step_spec = tensor_spec.from_spec(time_step_spec)  # also accept py environments' ArraySpecs
        action_spec = tensor_spec.from_spec(action_spec)
        if fisher_vector_product not in ("auto", "hessian"):
            raise ValueError(f"TRPOAgent: fisher_vector_product must be 'auto' or 'hessian', got {fisher_vector_product!r}")
        self._fisher_method = fisher_vector_product
        if cg_precision not in ("float32", "float64"):
            raise ValueError(f"TRPOAgent: cg_precision must be 'float32' or 'float64', got {cg_precision!r}")
        self._check_hyperparameters(
            max_kl, cg_iters, cg_damping, line_search_max_backtracks, line_search_shrink,
            accept_ratio, discount_factor, lambda_value, value_train_epochs, value_minibatch_size,
        )
        self._check_networks(time_step_spec, action_spec, actor_net, value_net)
        self._actor_net = actor_net
        self._value_net = value_net
        # The float64 copy of the actor for the Fisher-vector products (cg_precision="float64").
        # Out of checkpoint tracking: its weights are the actor's, set at every update, so a
        # checkpoint of either cg_precision restores into an agent of the other.
        self._fisher = _Untracked(
            _float64_copy(actor_net, time_step_spec.observation) if cg_precision == "float64" else None)
        self._optimizer = optimizer
        self._max_kl = float(max_kl)
        self._cg_iters = int(cg_iters)
        self._cg_damping = float(cg_damping)
        self._max_backtracks = int(line_search_max_backtracks)
        self._shrink = float(line_search_shrink)
        self._accept_ratio = float(accept_ratio)
        self._discount_factor = float(discount_factor)
        self._lambda = float(lambda_value)
        self._value_epochs = int(value_train_epochs)
        self._value_minibatch_size = int(value_minibatch_size)
        self._normalize_advantages = bool(normalize_advantages)
        self._entropy_regularization = float(entropy_regularization)

        # The value regression's minibatch orders are stateless draws keyed by this seed and the
        # train step: a run restored from a checkpoint shuffles as the uninterrupted one would
        # (a stateful RNG op restarts its sequence in a new process). Drawn from TF's global
        # generator, so `tf.keras.utils.set_random_seed` fixes it.
        self._minibatch_seed = tf.Variable(tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int64),
                                           trainable=False, name="minibatch_seed")

        self._observation_normalizer = None
        if normalize_observations:
            for spec in tf.nest.flatten(time_step_spec.observation):
                if not spec.dtype.is_floating:
                    raise ValueError(
                        f"TRPOAgent: normalize_observations=True needs floating-point observations, "
                        f"got {spec.dtype.name} spec {spec}; pass normalize_observations=False "
                        "(image networks scale uint8 frames themselves)."
                    )
            self._observation_normalizer = ObservationNormalizer(
                time_step_spec.observation, clip_value=observation_clip_value
            )

        self._prime_observation_normalizer = bool(prime_observation_normalizer)
        self._statistics_before_update = bool(observation_statistics_before_update)
        self._reward_normalizer = RewardNormalizer(discount_factor) if normalize_rewards else None

        def make_actor_policy(clip):
            return actor_policy.ActorPolicy(
                time_step_spec=time_step_spec,
                action_spec=action_spec,
                actor_network=actor_net,
                policy_state_spec=actor_net.state_spec,
                observation_normalizer=self._observation_normalizer,
                clip=clip,
                training=False,
            )

        # Collection samples unclipped actions (their log-probabilities are exact);
        # environments clip to their bounds. The greedy policy clips to the spec.
        collect_policy = make_actor_policy(clip=False)
        policy = greedy_policy.GreedyPolicy(make_actor_policy(clip=True))
        super().__init__(
            time_step_spec,
            action_spec,
            policy,
            collect_policy,
            train_sequence_length=None,
            debug_summaries=debug_summaries,
            summarize_grads_and_vars=summarize_grads_and_vars,
            train_step_counter=train_step_counter,
        )
        self._as_trajectory = data_converter.AsTrajectory(self.data_context, sequence_length=None)
        # Create the optimizer's slots now: variables created inside the first call
        # of a tf.function force a second trace.
        if hasattr(optimizer, "build"):
            optimizer.build(value_net.trainable_variables)
        batched_spec = tensor_spec.add_outer_dims_nest(self.collect_data_spec, (None, None))
        # Never inlined into a caller's function (tf_agents.train.Learner, a user's common.function):
        # with the caller's static batch shape Grappler infers the reward normaliser's per-row
        # running return (a variable whose length follows the batch) from its assignment and folds
        # away the test of its length; and the update runs the same optimised graph however called.
        not_inlined = {"_noinline": True}
        self._update = common.function(
            self._update_fn,
            input_signature=(batched_spec, tf.TensorSpec([None, None], tf.float32)),
            autograph=False, experimental_attributes=not_inlined,
        )
        self._vine_update = common.function(
            self._vine_update_fn, input_signature=(self.vine_data_spec,), autograph=False,
            experimental_attributes=not_inlined)
        # XLA fuses the small ops of the 64-unit value regression: ~2x faster on CPU.
        self._value_regression = tf.function(self._value_regression_fn, autograph=False, jit_compile=jit_compile)
        self._jit_cg = jit_compile

    @property
    def vine_data_spec(self) -> "VineExperience":
        """Spec of the vine rollout sets `train` accepts: [N] states × K branches."""
        obs = tensor_spec.add_outer_dims_nest(self.time_step_spec.observation, (None,))
        return VineExperience(
            observation=obs,
            action=tensor_spec.add_outer_dims_nest(self.action_spec, (None, None)),
            q_value=tf.TensorSpec([None, None], tf.float32),
            all_actions=tf.TensorSpec([], tf.bool),
        )

    # ----------------------------------------------------------------- checks
    @staticmethod
    def _check_hyperparameters(max_kl, cg_iters, cg_damping, backtracks, shrink, accept_ratio,
                               gamma, lam, epochs, minibatch):
        problems = []
        if not 0 < max_kl < math.inf:
            problems.append(f"max_kl must be > 0 and finite, got {max_kl}")
        if cg_iters < 1:
            problems.append(f"cg_iters must be >= 1, got {cg_iters}")
        if not 0 <= cg_damping < math.inf:
            problems.append(f"cg_damping must be >= 0 and finite, got {cg_damping}")
        if backtracks < 1:
            problems.append(f"line_search_max_backtracks must be >= 1, got {backtracks}")
        if not 0 < shrink < 1:
            problems.append(f"line_search_shrink must be in (0, 1), got {shrink}")
        if not 0 <= accept_ratio < math.inf:
            problems.append(f"accept_ratio must be >= 0 and finite, got {accept_ratio}")
        if not 0 <= gamma <= 1:
            problems.append(f"discount_factor must be in [0, 1], got {gamma}")
        if not 0 <= lam <= 1:
            problems.append(f"lambda_value must be in [0, 1], got {lam}")
        if epochs < 0:
            problems.append(f"value_train_epochs must be >= 0, got {epochs}")
        if minibatch < 1:
            problems.append(f"value_minibatch_size must be >= 1, got {minibatch}")
        if problems:
            raise ValueError("TRPOAgent: " + "; ".join(problems))

    @staticmethod
    def _check_networks(time_step_spec, action_spec, actor_net, value_net):
        for net, label in ((actor_net, "actor_net"), (value_net, "value_net")):
            if not isinstance(net, network.Network):
                raise TypeError(f"TRPOAgent: {label} must be a tf_agents Network, got {type(net).__name__}.")
            if net.input_tensor_spec is not None:
                try:
                    nest_utils.assert_same_structure(net.input_tensor_spec, time_step_spec.observation)
                    compatible = all(
                        a.shape.is_compatible_with(b.shape) and a.dtype == b.dtype
                        for a, b in zip(tf.nest.flatten(net.input_tensor_spec),
                                        tf.nest.flatten(time_step_spec.observation))
                    )
                except (TypeError, ValueError):
                    compatible = False
                if not compatible:
                    raise ValueError(
                        f"TRPOAgent: {label}.input_tensor_spec {net.input_tensor_spec} does not match "
                        f"the observation spec {time_step_spec.observation}."
                    )
        actor_output = actor_net.create_variables(time_step_spec.observation)
        for out, act in zip(tf.nest.flatten(actor_output), tf.nest.flatten(action_spec)):
            if not isinstance(out, distribution_utils.DistributionSpecV2):
                raise ValueError(
                    f"TRPOAgent: actor_net must output a distribution; its output spec is {out}. "
                    "Use ActorDistributionNetwork or tftrpo.networks.actor_network."
                )
            if not (tf.TensorShape(out.event_shape) == act.shape and out.dtype == act.dtype):
                raise ValueError(
                    f"TRPOAgent: actor_net samples {out.dtype.name}{list(out.event_shape)} "
                    f"but the action spec is {act.dtype.name}{act.shape.as_list()}."
                )
            if act.dtype.is_integer and np.any(np.asarray(act.minimum) != 0):
                raise ValueError(
                    f"TRPOAgent: the discrete action spec {act} does not start at 0: TF-Agents' categorical "
                    "heads sample 0..n-1 whatever the spec's minimum. Shift the actions to start at 0 (tftrpo's "
                    "Gymnasium adapter does: tftrpo.envs.GymnasiumEnvironment).")
        if len(tf.nest.flatten(actor_output)) != len(tf.nest.flatten(action_spec)):
            raise ValueError(f"TRPOAgent: actor_net output {actor_output} does not match action spec {action_spec}.")
        value_output = value_net.create_variables(time_step_spec.observation)
        if value_output.shape.rank != 0:
            raise ValueError(
                f"TRPOAgent: value_net must output one scalar per observation; its output spec is {value_output}."
            )

    # --------------------------------------------------------------- networks
    def _normalize(self, observations):
        if self._observation_normalizer is None:
            return observations
        return self._observation_normalizer.normalize(observations)

    def _add_to_statistics(self, observations, outer_dims, counted=None) -> None:
        """Adds this batch's observations to the statistics: all of them, or, with `counted`
        ([B, T] bool: the steps of weight > 0), only those, so that rows and steps of weight 0
        (padding) leave the statistics, and with them the update, as they were."""
        def add_all():
            self._observation_normalizer.update(observations, outer_dims=outer_dims)
            return tf.constant(True)

        if counted is None:
            add_all()
            return

        def add_counted():
            self._observation_normalizer.update(
                tf.nest.map_structure(lambda o: tf.boolean_mask(o, counted), observations), outer_dims=[0])
            return tf.constant(True)

        n, total = tf.reduce_sum(tf.cast(counted, tf.int32)), tf.size(counted)
        tf.cond(tf.equal(n, total), add_all,
                lambda: tf.cond(n > 0, add_counted, lambda: tf.constant(False)))  # none: no update (0/0)

    def _add_to_statistics_if(self, condition, observations, outer_dims, counted=None) -> tf.Tensor:
        """Adds this batch to the observation statistics where `condition` holds; returns it."""
        def add():
            self._add_to_statistics(observations, outer_dims, counted)
            return tf.constant(True)

        return tf.cond(condition, add, lambda: tf.constant(False))

    def _prime_normalizer(self, observations, outer_dims, counted=None) -> Union[bool, tf.Tensor]:
        """Adds this batch to the observation statistics before its update, where an option asks:
        always (`observation_statistics_before_update`: a plain update, returns True) or when they
        are still empty (`prime_observation_normalizer`: returns the condition's tensor); False
        otherwise. `tf.function`'s automatic control dependencies order the update before the
        reads that `_normalize` then makes."""
        if self._observation_normalizer is None:
            return False
        if self._statistics_before_update:
            self._add_to_statistics(observations, outer_dims, counted)
            return True
        if not self._prime_observation_normalizer:
            return False
        return self._add_to_statistics_if(
            tf.logical_not(self._observation_normalizer.has_statistics()), observations, outer_dims, counted)

    def _update_normalizer(self, observations, outer_dims, primed: Union[bool, tf.Tensor], counted=None) -> None:
        """Adds this batch to the observation statistics after its update, unless it was added before."""
        if self._observation_normalizer is None or primed is True:
            return
        if primed is False:
            self._add_to_statistics(observations, outer_dims, counted)
        else:
            self._add_to_statistics_if(tf.logical_not(primed), observations, outer_dims, counted)

    def _initial_state(self, net, batch_size):
        return net.get_initial_state(batch_size) if net.state_spec else ()

    def action_distribution(self, observations, step_types, training=False, net=None):
        """π_θ(·|s) over [B, T] (normalised) observations, RNN state reset at episode starts.

        `net` is the actor network by default (its float64 copy for the Fisher products)."""
        net = self._actor_net if net is None else net
        batch_size = tf.shape(step_types)[0]
        distribution, _ = net(
            observations, step_type=step_types,
            network_state=self._initial_state(net, batch_size), training=training,
        )
        return distribution

    def value_predictions(self, observations, step_types, training=False):
        """V_φ(s) over [B, T] (normalised) observations."""
        batch_size = tf.shape(step_types)[0]
        values, _ = self._value_net(
            observations, step_type=step_types,
            network_state=self._initial_state(self._value_net, batch_size), training=training,
        )
        return values

    # ------------------------------------------------------------- estimation
    def compute_advantages(self, experience, values, rewards=None):
        """GAE(γ, λ) advantages and returns (Â + V) for a [B, T] trajectory batch."""
        adv = advantages_lib.generalized_advantage_estimation(
            experience.reward if rewards is None else rewards, values, experience.discount, experience.next_step_type,
            self._discount_factor, self._lambda,
        )
        return adv, adv + values

    # ------------------------------------------------------------------ train
    def _train(self, experience, weights=None):
        if isinstance(experience, VineExperience):
            if weights is not None:
                raise ValueError("TRPOAgent.train: weights are not supported with vine experience")
            return self._with_summaries(*self._vine_update(experience))
        experience = self._as_trajectory(experience)
        time_dim = tf.compat.dimension_value(tf.nest.flatten(experience.step_type)[0].shape[1])
        if time_dim is not None and time_dim < 2:
            raise ValueError(
                f"TRPOAgent.train: experience must have at least 2 time steps per row (got T={time_dim}); "
                "the last step of each row only provides the bootstrap value."
            )
        return self._with_summaries(*self._update(experience, _step_weights(weights, experience.step_type)))

    def _loss(self, experience, weights=None, training=False):
        """The update's losses on a [B, T] single-path batch at the current θ and φ, changing
        nothing (statistics, networks, counters): for `tf_agents.train.Learner.loss()` and
        held-out evaluation. The policy term is the surrogate at θ = θ_old, where the natural
        gradient step starts: −Ê[Â] (0 with normalised advantages); the value term is the
        regression's mean squared error on the returns. `LossInfo.extra` is a
        `TRPOEvaluationLossInfo`."""
        del training
        if isinstance(experience, VineExperience):
            raise ValueError("TRPOAgent.loss: takes single-path experience, not VineExperience")
        experience = self._as_trajectory(experience)
        mask = advantages_lib.training_mask(experience.step_type) * _step_weights(weights, experience.step_type)
        observations = self._normalize(experience.observation)
        rewards = experience.reward
        if self._reward_normalizer is not None:
            rewards = self._reward_normalizer.normalize(rewards)
        values, advantages, returns = self._advantage_estimates(experience, observations, rewards, mask)
        entropy = self._mean_entropy(self.action_distribution(observations, experience.step_type), mask)
        policy_loss = -ng.masked_mean(advantages, mask) - self._entropy_regularization * entropy
        value_loss = ng.masked_mean(tf.square(values - returns), mask)
        return tf_agent.LossInfo(policy_loss + value_loss, TRPOEvaluationLossInfo(
            policy_loss=policy_loss, value_loss=value_loss, entropy=entropy,
            explained_variance=_explained_variance(values, returns, mask)))

    def _advantage_estimates(self, experience, observations, rewards, mask):
        """V_φ(s), the GAE advantages Â (standardised over `mask` where the agent does) and the
        returns Â + V of a [B, T] batch, from (normalised) observations and (scaled) rewards."""
        values = self.value_predictions(observations, experience.step_type)
        advantages, returns = self.compute_advantages(experience, values, rewards)
        if self._normalize_advantages:
            advantages = _standardize(advantages, mask)
        return values, advantages, returns

    def _mean_entropy(self, distribution, mask):
        """Ê[H(π(·|s))] over the masked entries of a [B, T] (or [N, 1]) batch."""
        return ng.masked_mean(common.entropy(distribution, self.action_spec, outer_rank=2), mask)

    def _with_summaries(self, loss_info, summary_tensors):
        """Writes the update's summaries here, in the caller's context, not in the compiled
        update: a `tf.function` binds the summary writer that is the default when it is
        traced, and the update is traced once (often before any writer exists, e.g. by
        `tf_agents.train.Learner`, which sets its writer only around `run()`)."""
        self._write_summaries(loss_info.extra, **summary_tensors)
        return loss_info

    def _update_fn(self, experience, weights):
        """One TRPO iteration on a [B, T] batch; compiled once by `tf.function`. Returns the
        `LossInfo` and the tensors the summaries need (`_summary_tensors`)."""
        # NaN is not < 0: the finite check names it. The checked tensors below all wait for this.
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(tf.reduce_any(weights < 0)),
                                                          ["TRPOAgent.train: weights must be >= 0"])]):
            weights = tf.identity(weights)
        experience, checked = _checked_finite(
            experience, ("step_type", "observation", "action", "reward", "discount"), "experience.", weights=weights)
        weights = checked["weights"]
        step_types = experience.step_type
        mask = advantages_lib.training_mask(step_types) * weights
        counted = weights > 0  # the steps the statistics take in: weight-0 rows and steps are padding
        primed = self._prime_normalizer(experience.observation, outer_dims=[0, 1], counted=counted)
        observations = self._normalize(experience.observation)

        rewards = experience.reward
        if self._reward_normalizer is not None:
            rewards = self._reward_normalizer.scale(rewards, step_types, counted)
        values, advantages, returns = self._advantage_estimates(experience, observations, rewards, mask)

        actions = experience.action
        # π_θold: evaluated before any tape records, so it is a constant below.
        old_distribution = self.action_distribution(observations, step_types)
        old_log_prob = common.log_probability(old_distribution, actions, self.action_spec)
        entropy = self._mean_entropy(old_distribution, mask)

        def distribution_fn(net=None):
            return self.action_distribution(observations, step_types, training=True, net=net)

        def kl_of(distribution, old=old_distribution):
            return ng.mean_kl(ppo_utils.nested_kl_divergence(old, distribution, outer_dims=[0, 1]), mask)

        def surrogate_and_kl():
            distribution = distribution_fn()
            log_prob = common.log_probability(distribution, actions, self.action_spec)
            surrogate = ng.surrogate_advantage(log_prob, old_log_prob, advantages, mask)
            if self._entropy_regularization:
                surrogate += self._entropy_regularization * self._mean_entropy(distribution, mask)
            return surrogate, kl_of(distribution)

        result, surrogate_after, gradient = self._natural_gradient_step(
            surrogate_and_kl, distribution_fn, old_distribution, kl_of)

        value_loss = self._fit_value_net(observations, step_types, returns, mask)
        explained_variance = _explained_variance(values, returns, mask)

        self._update_normalizer(experience.observation, [0, 1], primed, counted)
        with tf.control_dependencies([value_loss, result.kl]):  # after the checks, which these follow
            self.train_step_counter.assign_add(1)

        extra = TRPOLossInfo(
            kl=result.kl,
            expected_improvement=result.expected_improvement,
            actual_improvement=result.actual_improvement,
            line_search_backtracks=result.backtracks,
            step_rejected=tf.logical_not(result.accepted),
            step_fraction=result.step_fraction,
            surrogate=surrogate_after,
            entropy=entropy,
            value_loss=value_loss,
            explained_variance=explained_variance,
            num_samples=tf.reduce_sum(tf.cast(mask > 0, tf.int32)),
        )
        return (tf_agent.LossInfo(loss=-surrogate_after + value_loss, extra=extra),
                self._summary_tensors(gradient, advantages, returns, values, actions, mask))

    def _natural_gradient_step(self, surrogate_and_kl, distribution_fn, old_distribution, kl_of):
        """g, s ≈ F⁻¹g by CG, β = sqrt(2δ/sᵀFs), line search (Section 6, Appendix C).

        `surrogate_and_kl()` evaluates (L(θ), D̄_KL(θ_old, θ)) at the actor's current
        variables, `distribution_fn(net)` is π_θ by `net` (the actor by default) and
        `kl_of(π, old)` the mean KL(old ‖ π), old being π_θold by default.
        Returns the line-search result, L after the step, and g.
        """
        actor_vars = self._actor_net.trainable_variables
        with tf.GradientTape() as tape:
            surrogate_before, _ = surrogate_and_kl()
        gradient = ng.flatten(tape.gradient(surrogate_before, actor_vars,
                                            unconnected_gradients=tf.UnconnectedGradients.ZERO))

        # The products and CG run on the actor's variables, or on its float64 copy set to them.
        fisher_net, fisher_old = self._actor_net, old_distribution
        if self._fisher.value is not None:
            if not _has_tensor_parameters(old_distribution):
                raise ValueError(
                    "TRPOAgent: cg_precision='float64' needs Normal, MultivariateNormalDiag or Categorical "
                    f"action distributions, got {[type(d).__name__ for d in tf.nest.flatten(old_distribution)]}.")
            fisher_net = self._fisher.value
            for copy, variable in zip(fisher_net.trainable_variables, actor_vars):
                copy.assign(tf.cast(variable, copy.dtype))
            fisher_old = _with_parameters(old_distribution, [
                {k: tf.cast(v, tf.float64) for k, v in p.items()} for p in _distribution_parameters(old_distribution)])
        fisher_vars = fisher_net.trainable_variables

        # Forward-mode J·v does not pass through recurrent unrolls: RNN actors use the Hessian form.
        gauss_newton = (self._fisher_method == "auto" and not self._actor_net.state_spec
                        and _has_tensor_parameters(old_distribution))
        if gauss_newton:
            def fisher_product(v):
                return ng.gauss_newton_fisher_vector_product(
                    lambda: _distribution_parameters(distribution_fn(fisher_net)),
                    lambda params: kl_of(_with_parameters(fisher_old, params), fisher_old),
                    fisher_vars, v, self._cg_damping)
        else:
            def fisher_product(v):
                return ng.fisher_vector_product(lambda: kl_of(distribution_fn(fisher_net), fisher_old), fisher_vars,
                                                v, self._cg_damping)

        def solve(g):
            return ng.conjugate_gradient(fisher_product, g, self._cg_iters, return_residual=True)

        if self._jit_cg and gauss_newton:  # the products' forward and reverse passes fuse under XLA
            solve = tf.function(solve, autograph=False, jit_compile=True)
        direction, residual = solve(tf.cast(gradient, fisher_vars[0].dtype))
        fisher_direction = tf.cast(tf.cast(gradient, direction.dtype) - residual, gradient.dtype)  # F s = g − r
        direction = tf.cast(direction, gradient.dtype)
        step_size = ng.max_step_size(direction, fisher_direction, self._max_kl)
        full_step = step_size * direction
        expected_full = tf.tensordot(gradient, full_step, 1)
        usable = tf.logical_and(tf.math.is_finite(step_size), expected_full > 0.0)
        # A non-finite or zero direction cannot be searched: zero step, which the
        # line search rejects (no improvement), restoring θ exactly.
        full_step = tf.where(usable, full_step, tf.zeros_like(full_step))
        result = ng.backtracking_line_search(
            actor_vars, ng.unflatten(full_step, actor_vars), tf.where(usable, expected_full, 0.0),
            surrogate_and_kl, surrogate_before, self._max_kl,
            self._max_backtracks, self._shrink, self._accept_ratio,
        )
        surrogate_after = tf.where(result.accepted, surrogate_before + result.actual_improvement, surrogate_before)
        return result, surrogate_after, gradient

    def _vine_update_fn(self, experience):
        """One TRPO iteration on a vine rollout set (Section 5.2); compiled once."""
        experience, _ = _checked_finite(experience, ("observation", "action", "q_value"), "vine experience ")
        num_states = tf.shape(experience.q_value)[0]
        # Each rollout-set state is a length-1 sequence starting an episode.
        step_types = tf.fill([num_states, 1], tf.cast(ts.StepType.FIRST, tf.int32))
        primed = self._prime_normalizer(experience.observation, outer_dims=[0])
        observations = tf.nest.map_structure(lambda o: o[:, None], self._normalize(experience.observation))
        q_values = experience.q_value
        # Baseline: the mean Q̂ over the K branches of each state.
        advantages = q_values - tf.reduce_mean(q_values, axis=1, keepdims=True)
        ones = tf.ones_like(advantages)
        if self._normalize_advantages:
            advantages = _standardize(advantages, ones)
        state_mask = tf.ones([num_states, 1])

        def branch_log_prob(distribution):
            # actions [N, K, ...] → [K, N, 1, ...], broadcast against the [N, 1] batch.
            actions = tf.nest.map_structure(
                lambda a: tf.expand_dims(tf.experimental.numpy.moveaxis(a, 1, 0), 2), experience.action)
            log_prob = common.log_probability(distribution, actions, self.action_spec)
            return tf.transpose(tf.squeeze(log_prob, 2))

        old_distribution = self.action_distribution(observations, step_types)
        old_log_prob = branch_log_prob(old_distribution)
        entropy = self._mean_entropy(old_distribution, state_mask)

        def distribution_fn(net=None):
            return self.action_distribution(observations, step_types, training=True, net=net)

        def kl_of(distribution, old=old_distribution):
            return ng.mean_kl(ppo_utils.nested_kl_divergence(old, distribution, outer_dims=[0, 1]), state_mask)

        def surrogate_and_kl():
            distribution = distribution_fn()
            surrogate = ng.vine_surrogate(branch_log_prob(distribution), old_log_prob, advantages,
                                          experience.all_actions)
            if self._entropy_regularization:
                surrogate += self._entropy_regularization * self._mean_entropy(distribution, state_mask)
            return surrogate, kl_of(distribution)

        result, surrogate_after, gradient = self._natural_gradient_step(
            surrogate_and_kl, distribution_fn, old_distribution, kl_of)
        self._update_normalizer(experience.observation, [0], primed)
        with tf.control_dependencies([result.kl]):  # after the checks, which it follows
            self.train_step_counter.assign_add(1)
        zero = tf.constant(0.0)
        extra = TRPOLossInfo(
            kl=result.kl, expected_improvement=result.expected_improvement,
            actual_improvement=result.actual_improvement, line_search_backtracks=result.backtracks,
            step_rejected=tf.logical_not(result.accepted), step_fraction=result.step_fraction,
            surrogate=surrogate_after, entropy=entropy, value_loss=zero, explained_variance=zero,
            num_samples=tf.size(q_values),
        )
        return (tf_agent.LossInfo(loss=-surrogate_after, extra=extra),
                self._summary_tensors(gradient, advantages, q_values, q_values, experience.action, ones))

    def _fit_value_net(self, observations, step_types, returns, mask):
        """Regresses V_φ on the returns by minibatch MSE; returns the loss after fitting."""
        if self._value_net.state_spec:
            # Recurrent value nets keep their sequences: full-batch steps on [B, T].
            def sequence_loss():
                values = self.value_predictions(observations, step_types, training=True)
                return ng.masked_mean(tf.square(values - returns), mask)

            _repeat(self._value_epochs, lambda: self._value_gradient_step(sequence_loss))
            return sequence_loss()

        # [B·T] samples plus one zero-weight padding row, so that every minibatch has the
        # static size the XLA-compiled regression needs (padding and masked steps carry
        # weight 0, and each minibatch loss is a weighted mean: the same steps as
        # minibatches cut from the valid samples alone).
        def flat(x):
            x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
            return tf.concat([x, tf.zeros_like(x[:1])], 0)

        flat_obs = tf.nest.map_structure(flat, observations)
        flat_returns, flat_weights = flat(returns), flat(mask)
        num = tf.shape(flat_weights)[0] - 1
        if self._value_epochs:
            seed = tf.stack([self._minibatch_seed, tf.cast(self.train_step_counter, tf.int64)])
            orders = minibatch_orders(flat_weights, self._value_epochs, self._value_minibatch_size, seed)
            num_valid = tf.reduce_sum(tf.cast(flat_weights > 0, tf.int32))
            self._value_regression(flat_obs, flat_returns, flat_weights, orders, num_valid)
        return self._value_minibatch_loss(flat_obs, flat_returns, flat_weights, tf.range(num))

    def _value_minibatch_loss(self, flat_obs, flat_returns, flat_weights, indices):
        """Weighted mean squared error of V_φ on the samples `indices` of the flat batch."""
        obs = tf.nest.map_structure(lambda o: tf.gather(o, indices), flat_obs)
        values, _ = self._value_net(obs, training=True)
        return ng.masked_mean(tf.square(values - tf.gather(flat_returns, indices)), tf.gather(flat_weights, indices))

    def _value_regression_fn(self, flat_obs, flat_returns, flat_weights, orders, num_valid):
        """The value net's minibatch Adam epochs: `orders[e]` is epoch e's sample order."""
        size = self._value_minibatch_size

        def epoch(e):
            def minibatch(start):
                indices = tf.slice(orders[e], [start], [size])
                self._value_gradient_step(
                    lambda: self._value_minibatch_loss(flat_obs, flat_returns, flat_weights, indices))
                return start + size

            tf.while_loop(lambda start: start < num_valid, minibatch, (tf.constant(0),))
            return e + 1

        tf.while_loop(lambda e: e < self._value_epochs, epoch, (tf.constant(0),))
        return tf.constant(0)

    def _value_gradient_step(self, loss_fn):
        value_vars = self._value_net.trainable_variables
        with tf.GradientTape() as tape:
            loss = loss_fn()
        self._optimizer.apply_gradients(zip(tape.gradient(loss, value_vars), value_vars))

    # -------------------------------------------------------------- summaries
    def _summary_tensors(self, gradient, advantages, returns, values, actions, mask) -> dict:
        """What the histograms of `debug_summaries` / `summarize_grads_and_vars` read, returned
        by the compiled update (nothing when both are off)."""
        tensors = {}  # by the constructor's flags: the compiled update's outputs stay fixed
        if self._debug_summaries:
            tensors.update(advantages=advantages, returns=returns, values=values, actions=actions, mask=mask)
        if self._debug_summaries or self._summarize_grads_and_vars:
            tensors.update(gradient=gradient)
        return tensors

    def _write_summaries(self, extra, gradient=None, advantages=None, returns=None, values=None, actions=None,
                         mask=None):
        if not self.summaries_enabled:
            return
        if tf.executing_eagerly() and not bool(tf.summary.should_record_summaries()):
            return  # no default writer (or record_if off): skip the casts of an eager call
        step = self.train_step_counter
        with self.name_scope:
            for group, keys in _SUMMARY_GROUPS:
                for key in keys:
                    tf.summary.scalar(f"{group}/{key}", tf.cast(getattr(extra, key), tf.float32), step=step)
            if self.debug_summaries:
                valid = mask > 0
                tf.summary.histogram("Debug/advantages", tf.boolean_mask(advantages, valid), step=step)
                tf.summary.histogram("Debug/returns", tf.boolean_mask(returns, valid), step=step)
                tf.summary.histogram("Debug/values", tf.boolean_mask(values, valid), step=step)
                for i, a in enumerate(tf.nest.flatten(actions)):
                    tf.summary.histogram(f"Debug/actions_{i}", a, step=step)
                tf.summary.scalar("Debug/policy_gradient_norm", tf.norm(gradient), step=step)
            if self.summarize_grads_and_vars:
                tf.summary.histogram("Gradients/policy_gradient", gradient, step=step)
                for var in self._actor_net.trainable_variables + self._value_net.trainable_variables:
                    tf.summary.histogram(f"Variables/{var.name.replace(':', '_')}", var, step=step)


_TENSOR_PARAMETER_DISTRIBUTIONS = (
    tfp.distributions.MultivariateNormalDiag, tfp.distributions.Normal, tfp.distributions.Categorical)


class _Untracked:
    """Holds `value` where TensorFlow's checkpoint tracking does not look (an attribute of a
    tf.Module is tracked, and so are lists and dicts assigned to one)."""

    def __init__(self, value):
        self.value = value


def _float64_copy(actor_net, observation_spec):
    """A copy of `actor_net` whose layers and variables are float64, for the Fisher products.

    Built by TF-Agents' `Network.copy` with `dtype=tf.float64` and float64 action specs,
    under Keras' float64 default (the projection layers take no dtype argument); its
    weights are set from the actor's at each update.
    """
    def float64_spec(spec):
        if not spec.dtype.is_floating:
            return spec
        return tensor_spec.BoundedTensorSpec(spec.shape, tf.float64, spec.minimum, spec.maximum, spec.name)

    floatx = tf.keras.backend.floatx()
    tf.keras.backend.set_floatx("float64")
    try:
        copy = actor_net.copy(name=actor_net.name + "Float64", dtype=tf.float64,
                              output_tensor_spec=tf.nest.map_structure(float64_spec, actor_net.output_tensor_spec))
        copy.create_variables(observation_spec)
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"TRPOAgent: cg_precision='float64' needs an actor network that `copy(dtype=tf.float64, "
            f"output_tensor_spec=...)` rebuilds in float64 (TF-Agents' ActorDistributionNetwork does); "
            f"{type(actor_net).__name__} could not: {error}") from error
    finally:
        tf.keras.backend.set_floatx(floatx)
    shapes = [(v.shape, v.dtype) for v in copy.trainable_variables]
    if shapes != [(v.shape, tf.float64) for v in actor_net.trainable_variables]:
        raise ValueError(f"TRPOAgent: the float64 copy of {actor_net.name} has variables {shapes}, not the "
                         "actor's in float64; use cg_precision='float32' with this network.")
    return copy


def _has_tensor_parameters(distribution) -> bool:
    """Whether every leaf is a family whose parameters are plain tensors (Gauss-Newton FVP)."""
    return all(type(d) in _TENSOR_PARAMETER_DISTRIBUTIONS for d in tf.nest.flatten(distribution))


def _distribution_parameters(distribution):
    """The floating-point tensor parameters of each leaf distribution (loc, scale_diag, logits)."""
    return [{k: v for k, v in d.parameters.items() if tf.is_tensor(v) and v.dtype.is_floating}
            for d in tf.nest.flatten(distribution)]


def _with_parameters(distribution, params):
    """`distribution` with its tensor parameters replaced by `params`."""
    leaves = [d.copy(**p) for d, p in zip(tf.nest.flatten(distribution), params)]
    return tf.nest.pack_sequence_as(distribution, leaves)


_SUMMARY_GROUPS = (
    ("TrustRegion", ("kl", "expected_improvement", "actual_improvement", "line_search_backtracks",
                     "step_rejected", "step_fraction")),
    ("Losses", ("surrogate", "entropy", "value_loss", "explained_variance")),
)


def _standardize(x, mask):
    mean = ng.masked_mean(x, mask)
    var = ng.masked_mean(tf.square(x - mean), mask)
    return (x - mean) / (tf.sqrt(var) + 1e-8)


def _explained_variance(values, returns, mask):
    """1 − Var(R − V) / Var(R) over the masked entries (1 is perfect, ≤ 0 is useless)."""
    def variance(x):
        mean = ng.masked_mean(x, mask)
        return ng.masked_mean(tf.square(x - mean), mask)

    var_returns = variance(returns)
    return tf.where(var_returns > 0, 1.0 - variance(returns - values) / tf.maximum(var_returns, 1e-12), 0.0)
