"""Hyperparameter presets per task family, overridable field by field.

The MuJoCo preset follows rl-zoo3's tuned TRPO settings (2 envs × 1024 steps per
iteration, observation and reward normalisation, CG 25, damping 0.1, 20 critic
epochs; HalfCheetah δ 0.04, Swimmer γ 0.9999). rl-zoo3 tuned δ and the damping with
sb3-contrib, whose Gaussian KL is averaged over the d action dimensions, so in this
library's units (the paper's KL of the whole action distribution) they are
max_kl = d·δ and cg_damping = d·λ: `rl_zoo3_trust_region`. Atari follows the paper's
networks (Appendix E) with OpenAI Baselines' δ 0.001; classic control is tuned to
solve CartPole-v1 in a few thousand steps.
"""
import dataclasses
import functools
import re
from typing import Dict, Optional, Tuple

from tftrpo.envs.registry import family

__all__ = ["TRPOConfig", "preset", "rl_zoo3_trust_region", "action_dimension", "DEFAULT_ENV"]

DEFAULT_ENV = "InvertedPendulum-v5"


@dataclasses.dataclass
class TRPOConfig:
    """Everything a run needs besides the env id, seed and budget."""

    steps: int = 1_000_000  # environment steps of a run (it ends at the whole iteration nearest this)
    num_envs: int = 2
    steps_per_env: int = 1024  # one iteration collects num_envs × steps_per_env steps
    max_kl: float = 0.01
    cg_iters: int = 25
    cg_damping: float = 0.1
    # "float64": Fisher-vector products and CG in float64 on a float64 copy of the actor (TRPOAgent's
    # cg_precision): closer to F⁻¹g at the same cg_iters late in training, products ~2x the cost.
    cg_precision: str = "float32"
    line_search_max_backtracks: int = 10
    line_search_shrink: float = 0.8
    accept_ratio: float = 0.1
    discount_factor: float = 0.99
    lambda_value: float = 0.95
    value_learning_rate: float = 1e-3
    value_train_epochs: int = 20
    value_minibatch_size: int = 128
    normalize_observations: bool = True
    # TRPOAgent's observation_statistics_before_update: every batch joins the observation statistics
    # before its update (the update sees those the next batch is collected with, as VecNormalize's).
    # On since stop 25 (Hopper 100k, 111 seeds paired: area under the curve +0.40 SD; bench/README.md).
    observation_statistics_before_update: bool = True
    # TRPOAgent's prime_observation_normalizer (only with the above off): the first batch only.
    prime_observation_normalizer: bool = False
    normalize_rewards: bool = True
    normalize_advantages: bool = True
    entropy_regularization: float = 0.0
    hidden_layers: Tuple[int, ...] = (64, 64)
    conv_layers: Optional[Tuple[Tuple[int, int, int], ...]] = None
    activation: str = "tanh"
    # Output-layer init (networks.actor_network / value_network): the policy head's weights have
    # std policy_output_gain/sqrt(fan_in); value_output_gain > 0 makes the value head orthogonal
    # with that gain (0: TF-Agents' uniform ±0.03). The value net's Adam epsilon. sb3-contrib's
    # values; TF-Agents' (0.1, 0, 1e-7) were the defaults before the 1M-step comparison of
    # bench/README.md ("tftrpo, TF-Agents' init" there).
    policy_output_gain: float = 0.01
    value_output_gain: float = 1.0
    value_adam_epsilon: float = 1e-5
    # Vine sampling (Section 5.2): N states, K actions (0: all actions of a discrete
    # space, else 4 for continuous), branch rollouts of length L, trunk length (0: 4N).
    vine_states: int = 64
    vine_actions_per_state: int = 0
    vine_rollout_length: int = 100
    vine_trunk_steps: int = 0
    vine_branch_envs: int = 64
    eval_interval: int = 10  # iterations between deterministic evaluations
    eval_episodes: int = 5
    # Iterations between checkpoints (the last iteration is always saved). A resumed run
    # continues from the last one; a save costs ~35 ms, ~4% of a 2048-step MuJoCo iteration.
    checkpoint_interval: int = 10
    # Single-path collection acts with the NumPy mirror of the collect policy where it can
    # (`SinglePathCollector(numpy_policy=None)`; feed-forward MLP actors): ~0.7x the TF loop's
    # collection time on MuJoCo, the same learning (a 20-seed A/B, bench/README.md). CNN
    # actors keep the TF loop. `--no-numpy-policy` always uses the TF loop; an explicit
    # `--numpy-policy` refuses a policy the mirror cannot reproduce.
    numpy_policy: bool = True
    # XLA for the value net's minibatch regression and the conjugate-gradient solve: the same
    # update, rounded differently, and train() ~0.7x the time on CPU. `--no-jit-compile` skips
    # the compiles (0.2 s of a Hopper run's first iteration on a quiet machine, ~1 s on a busy
    # one) and their 64 MiB of peak resident memory (bench/memory.py, memory_stop30).
    jit_compile: bool = True

    def agent_kwargs(self) -> Dict:
        """The `TRPOAgent` keyword arguments of this config."""
        names = ("max_kl", "cg_iters", "cg_damping", "cg_precision", "line_search_max_backtracks", "line_search_shrink",
                 "accept_ratio", "discount_factor", "lambda_value", "value_train_epochs",
                 "value_minibatch_size", "normalize_observations", "prime_observation_normalizer",
                 "observation_statistics_before_update", "normalize_rewards",
                 "normalize_advantages", "entropy_regularization", "jit_compile")
        return {n: getattr(self, n) for n in names}


_FAMILY = {
    "mujoco": {},
    "classic": dict(steps=100_000, steps_per_env=512, max_kl=0.02, cg_iters=10, value_train_epochs=10,
                    normalize_rewards=False, eval_interval=5),
    "atari": dict(steps=10_000_000, num_envs=2, steps_per_env=2048, max_kl=0.001, cg_damping=1e-3, cg_iters=10,
                  value_train_epochs=3, value_minibatch_size=256, normalize_observations=False,
                  normalize_rewards=False, hidden_layers=(20,), conv_layers=((16, 4, 2), (16, 4, 2)),
                  activation="relu", eval_interval=20, eval_episodes=3),
}
_FAMILY["other"] = _FAMILY["classic"]

# rl-zoo3's MuJoCo δ and damping λ, in sb3-contrib's units (KL averaged over action dimensions).
_RL_ZOO3_TRUST_REGION = dict(max_kl=0.01, cg_damping=0.1)
_RL_ZOO3_ENV_TRUST_REGION = {"HalfCheetah": dict(max_kl=0.04)}

# Per task, whatever its version (HalfCheetah-v4 and -v5 alike).
_ENV = {
    "Swimmer": dict(discount_factor=0.9999, vine_rollout_length=50),
    "InvertedPendulum": dict(steps=60_000, steps_per_env=512, eval_interval=5),
    "Pendulum": dict(steps_per_env=1024, normalize_rewards=True, max_kl=0.02, lambda_value=0.95),
}


def _task(env_id: str) -> str:
    """The env id without its version: "HalfCheetah-v5" -> "HalfCheetah"."""
    return re.sub(r"-v\d+$", "", env_id)


@functools.lru_cache(maxsize=None)
def action_dimension(env_id: str) -> int:
    """d, the number of action dimensions of a Box-action env (1 for a scalar action)."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(env_id)
    try:
        return int(np.prod(env.action_space.shape))
    finally:
        env.close()


def rl_zoo3_trust_region(env_id: str) -> Tuple[float, float, int]:
    """(δ, λ, d): rl-zoo3's max KL and CG damping for a MuJoCo task as it states them
    (sb3-contrib's units: the Gaussian KL averaged over the d action dimensions), and d.

    The MuJoCo preset uses max_kl = d·δ and cg_damping = d·λ: the same trust region in
    the paper's units (bench/experiments/sb3_trust_region.py checks the equality on a real
    sb3-contrib batch). InvertedPendulum (d = 1) is unchanged by the conversion.
    """
    values = {**_RL_ZOO3_TRUST_REGION, **_RL_ZOO3_ENV_TRUST_REGION.get(_task(env_id), {})}
    return values["max_kl"], values["cg_damping"], action_dimension(env_id)


def preset(env_id: str, **overrides) -> TRPOConfig:
    """The config for `env_id`: family defaults, then per-env settings, then `overrides`."""
    values = {**_FAMILY[family(env_id)], **_ENV.get(_task(env_id), {})}
    if family(env_id) == "mujoco":
        delta, damping, d = rl_zoo3_trust_region(env_id)
        values.update(max_kl=round(d * delta, 12), cg_damping=round(d * damping, 12))
    fields = {f.name for f in dataclasses.fields(TRPOConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(fields)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TRPOConfig(**values)
