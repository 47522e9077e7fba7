"""The single-path sampling scheme of Section 5.1.

Whole trajectories from π_θold, as the [B, T] `Trajectory` batch `TRPOAgent.train`
takes. For Python environments (a batched `PyEnvironment`, or the `TFPyEnvironment`
around one) there are two rollouts of the same batch layout and meaning (their samples
come from different random generators):

- by default, for the feed-forward actor policies it reproduces (tftrpo's MLP actors), a
  Python loop with the policy mirrored in NumPy (`NumpyActorPolicy`): 64 µs per batched
  step beyond the environments on 2 Hopper-v5 envs;
- otherwise (or with `numpy_policy=False`) one compiled `tf.while_loop`: the policy runs
  in the graph, the envs are stepped by one `tf.numpy_function` per step, and the
  trajectory is gathered in `TensorArray`s: 277 µs per batched step beyond the
  environments (bench/experiments/collect_policy.py; TF-Agents' `DynamicStepDriver` +
  `TFUniformReplayBuffer` cost more, bench/README.md).

Both learn alike: 300k-step HalfCheetah runs from 20 env seeds each gave last-quarter
training returns of 1855 (NumPy) and 1929 (TF) on average, a difference well inside the
seed-to-seed spread (sd ~1000; bench/experiments/collect_policy_learning.py).

Other batched `TFEnvironment`s run in the same compiled loop, stepped in the graph
(`env.current_time_step()` / `env.step(action)`): exactly T batched steps per call, the
same [B, T] batch as for Python environments.
"""
import copy
from typing import Optional, Union

import numpy as np
import tensorflow as tf
from tf_agents.environments import batched_py_environment, py_environment, tf_environment, tf_py_environment
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory
from tf_agents.utils import common

from tftrpo.sampling import env_state
from tftrpo.sampling.episodes import BatchedEpisodeTracker
from tftrpo.sampling.numpy_policy import NumpyActorPolicy, unsupported_reason

__all__ = ["SinglePathCollector"]


class SinglePathCollector:
    """Collects `steps_per_env` steps from each of a batched environment's envs per call.

    Args:
      env: a `PyEnvironment` (batched or not), a `TFPyEnvironment`, or any batched
        `TFEnvironment` (stepped in the compiled loop).
      policy: the TF policy that acts (`agent.collect_policy`).
      steps_per_env: T, the length of each row of the batch.
      episodes_to_average: finished episodes averaged by `recent_episodes()`.
      numpy_policy: act with `NumpyActorPolicy(policy)` in a Python loop (Python
        environments only). None (default): when the policy can be mirrored, else the
        compiled TF loop; True: always (an error says why a policy cannot be mirrored);
        False: never.
      seed: seed of the policy's sampling (the NumPy policy's generator; in the TF loop,
        stateless draws keyed by (seed, collect, step) where the policy samples from its
        `distribution`); None draws one from TF's global generator, so
        `tf.keras.utils.set_random_seed` makes runs repeatable.
    """

    def __init__(self, env: Union[py_environment.PyEnvironment, tf_environment.TFEnvironment], policy,
                 steps_per_env: int, episodes_to_average: int = 20, numpy_policy: Optional[bool] = None,
                 seed: Optional[int] = None):
        if steps_per_env < 2:
            raise ValueError(f"SinglePathCollector: steps_per_env must be >= 2, got {steps_per_env}")
        self._policy = policy
        self._single_action = not tf.nest.is_nested(policy.action_spec)
        self._length = int(steps_per_env)
        py_env = env.pyenv if isinstance(env, tf_py_environment.TFPyEnvironment) else env
        if isinstance(py_env, py_environment.PyEnvironment) and not py_env.batched:
            py_env = batched_py_environment.BatchedPyEnvironment([py_env], multithreading=False)  # no pool for one env
        self._numpy_policy = None
        if seed is None:
            seed = int(tf.random.uniform([], maxval=2**31 - 1, dtype=tf.int64))
        self._seed, self._collects = int(seed), 0
        self._stateless = _samples_from_its_distribution(policy)
        if isinstance(py_env, py_environment.PyEnvironment):
            self._py_env = py_env
            self._num_envs = py_env.batch_size
            reason = unsupported_reason(policy) if numpy_policy is not False else "numpy_policy=False"
            if reason is None:
                self._numpy_policy = NumpyActorPolicy(policy, seed=seed)
                self._collect = self._numpy_rollout
            elif numpy_policy:
                raise ValueError(f"SinglePathCollector(numpy_policy=True): NumPy cannot mirror this policy: {reason}.")
            else:
                self._env_time_step = lambda: self._numpy_time_step(self._current_time_step)
                self._env_step = lambda action: self._numpy_time_step(self._step, *tf.nest.flatten(action))
                self._collect = self._compiled_rollout()
        elif numpy_policy:
            raise ValueError("SinglePathCollector(numpy_policy=True) needs a Python environment (or a "
                             f"TFPyEnvironment around one), got a {type(env).__name__}")
        elif isinstance(env, tf_environment.TFEnvironment) and env.batched:
            self._py_env = None
            self._num_envs = env.batch_size
            self._env_time_step, self._env_step = env.current_time_step, env.step
            self._collect = self._compiled_rollout()
        else:
            raise TypeError(f"SinglePathCollector: env must be a PyEnvironment or a batched TFEnvironment, "
                            f"got {type(env).__name__}")
        self._episodes = BatchedEpisodeTracker(self._num_envs, episodes_to_average)
        self._last_env_steps = 0

    @property
    def num_envs(self) -> int:
        return self._num_envs

    @property
    def simulator_steps_per_collect(self) -> int:
        """Upper bound: B·T (the resets between episodes take slots of the batch)."""
        return self._num_envs * self._length

    @property
    def uses_numpy_policy(self) -> bool:
        """Whether the rollout acts with a `NumpyActorPolicy` (else with the TF policy)."""
        return self._numpy_policy is not None

    @property
    def last_env_steps(self) -> int:
        """Environment steps taken by the last `collect()` (resets not counted)."""
        return self._last_env_steps

    def collect(self) -> trajectory.Trajectory:
        """The next [num_envs, steps_per_env] trajectory batch, continuing the envs' episodes."""
        experience = self._collect()
        self._collects += 1
        step_type = experience.step_type.numpy()
        self._episodes.update(step_type, experience.next_step_type.numpy(), experience.reward.numpy())
        self._last_env_steps = int(np.sum(step_type != ts.StepType.LAST))
        return experience

    def recent_episodes(self):
        """(mean return, mean length) of the last finished episodes (0, 0 before any)."""
        return self._episodes.recent.mean()

    def get_state(self) -> dict:
        """What the next `collect()` depends on besides the policy's weights, picklable: the
        envs (`env_state.snapshot_environment`), the NumPy policy's generator, the episodes
        in progress. With it a resumed run collects what the uninterrupted one would have,
        bit for bit (the TF loop's draws are keyed by the collect count it holds, for policies
        that sample from their `distribution`; others draw from TensorFlow's stateful RNG ops,
        which restart with the process). Envs that cannot be snapshotted
        (`env_state.UnsupportedEnvError`) are left out: they restart their episodes."""
        envs = None
        if self._py_env is not None:
            try:
                envs = env_state.snapshot_environment(self._py_env)
            except (env_state.UnsupportedEnvError, TypeError):
                pass
        rng = None if self._numpy_policy is None else self._numpy_policy.generator.bit_generator.state  # a new dict
        return {"envs": envs, "policy_rng": rng, "collects": self._collects,
                "episodes": copy.deepcopy(self._episodes)}

    def set_state(self, state: dict) -> bool:
        """Continues from a `get_state()` of a collector built the same way. Returns whether the
        envs were restored too (False: they could not be snapshotted and restart their episodes,
        so collection does not repeat the uninterrupted run's)."""
        if state["envs"] is not None:
            env_state.restore_environment(self._py_env, state["envs"])
        if state["policy_rng"] is not None and self._numpy_policy is not None:
            self._numpy_policy.generator.bit_generator.state = copy.deepcopy(state["policy_rng"])
        self._collects = state["collects"]
        self._episodes = copy.deepcopy(state["episodes"])
        return state["envs"] is not None

    # ------------------------------------------------------------ the rollout
    def _numpy_time_step(self, fn, *args):
        """Calls a Python env method returning a batched TimeStep, as graph tensors of its spec."""
        spec = tensor_spec.add_outer_dims_nest(self._policy.time_step_spec, (self._num_envs,))
        flat_spec = tf.nest.flatten(spec)
        dtypes = [s.dtype.as_numpy_dtype for s in flat_spec]
        # A TimeStep with one observation array flattens to its own fields, in order; the
        # per-step call skips tf.nest then (it runs 1024 times an iteration, GIL held).
        flatten = tf.nest.flatten if tf.nest.is_nested(self._policy.time_step_spec.observation) else list

        def call(*flat_args):
            return [x if type(x) is np.ndarray and x.dtype == d else np.asarray(x, d)  # pylint: disable=unidiomatic-typecheck
                    for x, d in zip(flatten(fn(*flat_args)), dtypes)]

        flat = tf.numpy_function(call, list(args), [s.dtype for s in flat_spec], stateful=True)
        for tensor, s in zip(flat, flat_spec):
            tensor.set_shape(s.shape)
        return tf.nest.pack_sequence_as(spec, flat)

    def _current_time_step(self):
        try:
            return self._py_env.current_time_step()
        except ValueError:  # never reset yet (TF-Agents raises 'Current timestep not initialized')
            return self._py_env.reset()

    def _step(self, *flat_action):
        if self._single_action:
            return self._py_env.step(flat_action[0])
        return self._py_env.step(tf.nest.pack_sequence_as(self._policy.action_spec, list(flat_action)))

    def _numpy_rollout(self):
        """T steps of the NumPy mirror of π in the batched env, written into [B, T] arrays."""
        policy, env = self._numpy_policy, self._py_env
        policy.sync()
        spec = tensor_spec.add_outer_dims_nest(self._policy.trajectory_spec, (self._num_envs, self._length))
        batch = tf.nest.map_structure(lambda s: np.empty(s.shape, s.dtype.as_numpy_dtype), spec)
        time_step = self._current_time_step()
        for t in range(self._length):
            action = policy.action(time_step).action
            next_time_step = env.step(action)
            # trajectory.from_transition(time_step, action, next_time_step), column t
            batch.step_type[:, t] = time_step.step_type
            batch.observation[:, t] = time_step.observation
            batch.action[:, t] = action
            batch.next_step_type[:, t] = next_time_step.step_type
            batch.reward[:, t] = next_time_step.reward
            batch.discount[:, t] = next_time_step.discount
            time_step = next_time_step
        return tf.nest.map_structure(tf.convert_to_tensor, batch)

    def _compiled_rollout(self):
        rollout = common.function(self._rollout, autograph=False)
        return lambda: rollout(tf.constant([self._seed, self._collects], tf.int64))

    def _action(self, time_step, policy_state, seed):
        """π's action step: drawn from `policy.distribution` with a stateless seed where the
        policy samples from it (a resumed run then repeats the draws), else `policy.action`."""
        if not self._stateless:
            return self._policy.action(time_step, policy_state)
        step = self._policy.distribution(time_step, policy_state)
        leaves = tf.nest.flatten(step.action)
        seeds = tf.random.experimental.stateless_split(seed, len(leaves))
        actions = [d.sample(seed=seeds[i]) for i, d in enumerate(leaves)]
        return step._replace(action=tf.nest.pack_sequence_as(step.action, actions))

    def _rollout(self, seed):
        """T steps of π in the batched env: one policy call and one env step per t; step t
        samples with the stateless seed fold_in(seed, t).

        The env is stepped by `self._env_step` (a `tf.numpy_function` for Python envs, the
        TF environment's own `step` otherwise).
        """
        spec = tensor_spec.add_outer_dims_nest(self._policy.trajectory_spec, (self._num_envs,))
        arrays = tf.nest.map_structure(
            lambda s: tf.TensorArray(s.dtype, size=self._length, element_shape=s.shape), spec)
        def body(t, time_step, policy_state, arrays):
            action_step = self._action(time_step, policy_state, tf.random.experimental.stateless_fold_in(seed, t))
            next_time_step = self._env_step(action_step.action)
            transition = trajectory.from_transition(time_step, action_step, next_time_step)
            arrays = tf.nest.map_structure(lambda ta, x: ta.write(t, x), arrays, transition)
            return t + 1, next_time_step, action_step.state, arrays

        _, _, _, arrays = tf.while_loop(
            lambda t, *_: t < self._length, body,
            (tf.constant(0), self._env_time_step(),
             self._policy.get_initial_state(self._num_envs), arrays),
            parallel_iterations=1)
        # [T, B, ...] → [B, T, ...]
        return tf.nest.map_structure(lambda ta: tf.experimental.numpy.swapaxes(ta.stack(), 0, 1), arrays)


def _samples_from_its_distribution(policy) -> bool:
    """Whether `policy.action` is a plain draw from `policy.distribution` (TF-Agents' default
    `_action`, no clipping, no emitted log-probability), so that the rollout may draw it
    itself with a stateless seed."""
    return (isinstance(policy, tf_policy.TFPolicy) and type(policy)._action is tf_policy.TFPolicy._action  # pylint: disable=protected-access
            and not policy.emit_log_probability and not getattr(policy, "_clip", True))

