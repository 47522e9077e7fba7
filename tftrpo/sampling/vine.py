"""The vine sampling scheme of Section 5.2: trunk, rollout set, branches, Q̂.

1. Trunk: run π_θold in one environment for `trunk_steps` steps.
2. Rollout set: N states chosen uniformly at random along the trunk; the full
   simulator state is snapshotted at each (`tftrpo.sampling.env_state`).
3. At each state s_n, K actions: every action of a small discrete space, or K
   samples from π_θold(·|s_n).
4. Each (s_n, a_k) is followed by a rollout of length L from the restored state,
   all branches stepped together (one batched policy call per step). Common
   random numbers: every branch of s_n starts from the same snapshot (same
   environment RNG state) and its policy actions are driven by the same uniform
   noise u_{n,t} (inverse CDF for Gaussians, Gumbel-max for categoricals).
5. Q̂(s_n, a_k) = Σ_{t<L} γᵗ r_t, the branch's discounted return (`vine_q_estimates`).

The result is a `tftrpo.VineExperience` for `TRPOAgent.train`.
"""
import copy
import dataclasses
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from tftrpo.agent import VineExperience
from tftrpo.sampling import env_state
from tftrpo.sampling.episodes import RecentEpisodes
from tftrpo.sampling.numpy_policy import sampling_generator

__all__ = ["VineCollector", "VineStats", "vine_q_estimates", "sample_with_noise"]


def vine_q_estimates(rewards: np.ndarray, alive: np.ndarray, discount: float) -> np.ndarray:
    """Q̂ = Σ_t γᵗ r_t over branch rollouts (Section 5.2), [P, L] → [P].

    `alive[p, t]` is 1 while branch p has not ended before step t (a branch stops
    at the end of its episode; no value is bootstrapped after L steps).
    """
    discounts = discount ** np.arange(rewards.shape[1])
    return (rewards * alive * discounts).sum(axis=1)


def sample_with_noise(distribution, uniform):
    """An action sample that is a deterministic function of uniform noise u ∈ (0, 1).

    Gaussians: μ + σ·Φ⁻¹(u) (u: [P, action_size]); categoricals: Gumbel-max,
    argmax(logits − log(−log u)) (u: [P, num_actions]). Equal u gives equal
    actions under equal distributions: the common random numbers of the vine.
    """
    if isinstance(distribution, tfp.distributions.Categorical):
        logits = distribution.logits_parameter()
        gumbel = -tf.math.log(-tf.math.log(uniform))
        return tf.cast(tf.argmax(logits + gumbel, axis=-1), distribution.dtype)
    if isinstance(distribution, (tfp.distributions.MultivariateNormalDiag, tfp.distributions.Normal)):
        mean, stddev = distribution.mean(), distribution.stddev()
        return mean + stddev * tf.reshape(tf.math.ndtri(uniform), tf.shape(mean))
    raise TypeError(f"vine sampling supports Gaussian and categorical policies, got {type(distribution).__name__}")


@dataclasses.dataclass
class VineStats:
    """Simulator steps spent by one `collect` (resets not counted, as in single-path
    sampling) and the trunk's finished episodes."""

    trunk_steps: int
    branch_steps: int
    episode_returns: List[float]
    episode_lengths: List[int]


class VineCollector:
    """Collects vine rollout sets for a TF-Agents policy.

    Args:
      env_factory: `seed -> GymnasiumEnvironment` (e.g. `lambda s: tftrpo.envs.load(id, seed=s)`);
        called once for the trunk and `num_branch_envs` times for the branches.
      policy: the agent's `collect_policy` (π_θold; it applies observation normalisation).
      num_states: N, states in the rollout set per `collect`.
      actions_per_state: K; None enumerates every action of a discrete space.
      rollout_length: L, steps per branch including the first action.
      trunk_steps: trunk length per `collect` (default 4·N).
      discount: γ of Q̂.
      num_branch_envs: environments stepped together for the branches.
      seed: seeds the environments and the collector's noise.
    """

    def __init__(self, env_factory: Callable, policy, num_states: int = 64,
                 actions_per_state: Optional[int] = None, rollout_length: int = 50,
                 trunk_steps: Optional[int] = None, discount: float = 0.99,
                 num_branch_envs: int = 128, seed: int = 0):
        self._trunk_env = env_factory(seed)
        env_state.check_supported(self._trunk_env)  # fail now, not with wrong branches
        self._policy = policy
        self._num_states = int(num_states)
        self._rollout_length = int(rollout_length)
        self._trunk_steps = int(trunk_steps or 4 * num_states)
        self._discount = float(discount)
        # Not default_rng(seed): gymnasium seeds the trunk env's np_random from the same
        # SeedSequence(seed), so the noise would replay the draws of its reset states.
        self._rng = sampling_generator(seed)
        if (self._num_states < 1 or self._rollout_length < 1 or self._trunk_steps < self._num_states
                or num_branch_envs < 1):
            raise ValueError("VineCollector needs num_states >= 1, rollout_length >= 1, trunk_steps >= num_states "
                             f"and num_branch_envs >= 1, got {self._num_states}, {self._rollout_length}, "
                             f"{self._trunk_steps}, {num_branch_envs}")

        spec = self._trunk_env.action_spec()
        if tf.nest.is_nested(spec):
            raise ValueError(f"vine sampling supports a single action tensor, got nested action spec {spec}")
        self._discrete = np.issubdtype(spec.dtype, np.integer)
        if self._discrete:
            if spec.shape != ():
                raise ValueError(f"vine sampling supports scalar discrete actions, got shape {spec.shape}")
            if int(spec.minimum) != 0:
                # TF-Agents' categorical heads sample 0..n-1, and the agent takes the actions
                # as those indices in its log-probabilities (GymnasiumEnvironment's specs
                # start at 0 and add a Discrete space's start for Gymnasium).
                raise ValueError(f"vine sampling needs discrete actions from 0 (categorical indices), got {spec}")
            self._num_actions = int(spec.maximum) + 1
            self._noise_size = self._num_actions
        else:
            self._noise_size = int(np.prod(spec.shape))
        self._all_actions = actions_per_state is None
        if self._all_actions and not self._discrete:
            raise ValueError("continuous actions need actions_per_state (K samples per state)")
        self._k = self._num_actions if self._all_actions else int(actions_per_state)
        if self._k < 2:
            # The baseline is the mean Q̂ over a state's K actions: with one, every advantage is 0.
            raise ValueError(f"vine sampling needs at least 2 actions per state (the baseline is their mean Q̂, "
                             f"so a single action has advantage 0 and no step is ever taken); got {self._k}")
        if policy.policy_state_spec:
            raise ValueError("vine sampling takes a policy without state: it samples each rollout-set state's "
                             "actions from the state alone, and a recurrent policy would need its history there; "
                             f"got policy_state_spec {policy.policy_state_spec}")
        self._action_spec = spec
        # Built once every argument has been checked (up to 128 simulators).
        self._branch_envs = [env_factory(seed + 1 + i) for i in range(num_branch_envs)]

        time_step_spec = tensor_spec.add_outer_dims_nest(policy.time_step_spec, (None,))

        def sample(time_step, uniform):
            return sample_with_noise(policy.distribution(time_step).action, uniform)

        self._sample = tf.function(sample, input_signature=(
            time_step_spec, tf.TensorSpec([None, self._noise_size], tf.float32)))
        self._time_step = self._trunk_env.reset()
        self._recent = RecentEpisodes(20)
        self._episode_return, self._episode_length = 0.0, 0  # the trunk's current episode

    def recent_episodes(self):
        """(mean return, mean length) of the trunk's last finished episodes (0, 0 before any)."""
        return self._recent.mean()

    def close(self) -> None:
        """Closes the trunk env and the branch envs the collector made (up to 1 + num_branch_envs)."""
        for env in [self._trunk_env, *self._branch_envs]:
            env.close()

    def get_state(self) -> dict:
        """What the next `collect()` depends on besides the policy's weights, picklable: the
        trunk env (a snapshot), its current time step and episode, the noise generator and
        the recent episodes. (Each branch env is restored from a trunk snapshot before use.)"""
        return {"trunk": env_state.snapshot(self._trunk_env),  # a copy already
                "time_step": copy.deepcopy(self._time_step), "episode": (self._episode_return, self._episode_length),
                "rng": self._rng.bit_generator.state, "recent": copy.deepcopy(self._recent)}

    def set_state(self, state: dict) -> bool:
        """Continues from a `get_state()` of a collector built the same way (`state` stays
        reusable). Returns True, as `SinglePathCollector.set_state` does when its envs are
        restored: vine's trunk env is always snapshotted (vine needs it)."""
        env_state.restore(self._trunk_env, state["trunk"])
        self._time_step = copy.deepcopy(state["time_step"])
        self._episode_return, self._episode_length = state["episode"]
        self._rng.bit_generator.state = state["rng"]
        self._recent = copy.deepcopy(state["recent"])
        return True

    @property
    def actions_per_state(self) -> int:
        return self._k

    @property
    def simulator_steps_per_collect(self) -> int:
        """Upper bound: trunk steps plus N·K·L branch steps."""
        return self._trunk_steps + self._num_states * self._k * self._rollout_length

    # ------------------------------------------------------------------ trunk
    def _uniform(self, rows):
        return self._rng.uniform(1e-6, 1 - 1e-6, size=(rows, self._noise_size)).astype(np.float32)

    def _act(self, time_steps: List[ts.TimeStep], uniform: np.ndarray) -> np.ndarray:
        batch = tf.nest.map_structure(lambda *xs: tf.constant(np.stack(xs)), *time_steps)
        return self._sample(batch, tf.constant(uniform)).numpy()

    def _run_trunk(self, stats: VineStats):
        """Steps the trunk; returns the snapshots and observations of the rollout set."""
        chosen = set(self._rng.choice(self._trunk_steps, size=self._num_states, replace=False).tolist())
        snapshots, observations, pending = [], [], 0
        t = 0
        while t < self._trunk_steps or pending:  # states chosen at the very end extend the trunk
            if t in chosen:
                pending += 1
            if pending and not self._time_step.is_last():
                snapshots.append(env_state.snapshot(self._trunk_env))
                observations.append(np.array(self._time_step.observation))
                pending -= 1
            action = self._act([self._time_step], self._uniform(1))[0]
            self._time_step = self._trunk_env.step(action)
            t += 1
            if not self._time_step.is_first():  # the step after an episode end is the reset, not a simulator step
                stats.trunk_steps += 1
                self._episode_return += float(self._time_step.reward)
                self._episode_length += 1
            if self._time_step.is_last():
                stats.episode_returns.append(self._episode_return)
                stats.episode_lengths.append(self._episode_length)
                self._episode_return, self._episode_length = 0.0, 0
        return snapshots, np.stack(observations)

    # --------------------------------------------------------------- branches
    def _branch_actions(self, observations: np.ndarray) -> np.ndarray:
        """[N, K] (or [N, K, ...]) first actions: all actions, or K samples from π_θold."""
        n = len(observations)
        if self._all_actions:
            actions = np.arange(self._num_actions)
            return np.tile(actions.astype(self._action_spec.dtype), (n, 1))
        steps = [ts.restart(np.asarray(o)) for o in observations]
        repeated = [s for s in steps for _ in range(self._k)]
        flat = self._act(repeated, self._uniform(n * self._k))
        return flat.reshape((n, self._k) + tuple(self._action_spec.shape))

    def _run_branches(self, snapshots, first_actions, stats: VineStats) -> np.ndarray:
        """Q̂ [N, K] from rollouts of length L, common random numbers per state."""
        n, k, horizon = len(snapshots), self._k, self._rollout_length
        q = np.zeros((n, k), np.float32)
        branches = [(i, j) for i in range(n) for j in range(k)]
        noise = self._rng.uniform(1e-6, 1 - 1e-6, size=(n, horizon, self._noise_size)).astype(np.float32)
        per_chunk = len(self._branch_envs)
        for start in range(0, len(branches), per_chunk):
            chunk = branches[start:start + per_chunk]
            envs = self._branch_envs[:len(chunk)]
            for env, (i, _) in zip(envs, chunk):
                env_state.restore(env, snapshots[i])
            rewards = np.zeros((len(chunk), horizon), np.float32)
            alive = np.zeros((len(chunk), horizon), np.float32)
            running = np.ones(len(chunk), bool)
            actions = np.stack([first_actions[i, j] for i, j in chunk])
            for t in range(horizon):
                if t > 0:
                    live = np.flatnonzero(running)
                    if live.size == 0:
                        break
                    sampled = self._act([current[p] for p in live], noise[[chunk[p][0] for p in live], t])
                    actions[live] = sampled
                current = {}
                for p, env in enumerate(envs):
                    if not running[p]:
                        continue
                    step = env.step(actions[p])
                    stats.branch_steps += 1
                    rewards[p, t], alive[p, t] = float(step.reward), 1.0
                    current[p] = step
                    if step.is_last():
                        running[p] = False
            values = vine_q_estimates(rewards, alive, self._discount)
            for p, (i, j) in enumerate(chunk):
                q[i, j] = values[p]
        return q

    def collect(self):
        """One rollout set: (`VineExperience`, `VineStats`)."""
        stats = VineStats(0, 0, [], [])
        snapshots, observations = self._run_trunk(stats)
        actions = self._branch_actions(observations)
        q = self._run_branches(snapshots, actions, stats)
        for episode in zip(stats.episode_returns, stats.episode_lengths):
            self._recent.add(*episode)
        experience = VineExperience(
            observation=tf.constant(observations),
            action=tf.constant(actions),
            q_value=tf.constant(q),
            all_actions=tf.constant(self._all_actions),
        )
        return experience, stats
