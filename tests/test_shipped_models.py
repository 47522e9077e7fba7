"""The policies shipped in savedmodels/: signature and returns, loaded with plain TensorFlow."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tftrpo.envs import load
from tftrpo.play import load_policy, run_episodes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(REPO, "savedmodels", "*", "tftrpo_run.json")))


def test_the_default_task_and_the_benchmark_tasks_are_shipped():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {f"{env}-v5-shipped" for env in ("InvertedPendulum", "Hopper", "Walker2d", "HalfCheetah", "Swimmer")} <= names


@pytest.mark.parametrize("export_dir", SHIPPED, ids=os.path.basename)
def test_shipped_policy_signature_and_returns(export_dir):
    with open(os.path.join(export_dir, "tftrpo_run.json")) as f:
        meta = json.load(f)
    env = load(meta["env"], seed=2024)
    action_fn = load_policy(export_dir)

    # The signature is called with "0/step_type" etc.; TF reports them sanitised ("arg_0_step_type").
    inputs = {k.replace("arg_0_", "0/"): v for k, v in action_fn.structured_input_signature[1].items()}
    assert set(inputs) == {"0/step_type", "0/reward", "0/discount", "0/observation"}
    obs_spec = env.observation_spec()
    assert inputs["0/observation"].shape.as_list() == [None, *obs_spec.shape]
    assert inputs["0/observation"].dtype == tf.as_dtype(obs_spec.dtype)
    action_spec = env.action_spec()
    out_spec = action_fn.structured_outputs["action"]
    assert out_spec.shape.as_list() == [None, *action_spec.shape]

    returns = run_episodes(action_fn, env, episodes=3)
    random_returns = _random_returns(meta["env"], episodes=3)
    # A trained policy, not a random one: near its recorded evaluation, far above random play.
    assert np.mean(returns) >= 0.5 * meta["final_eval_return"], (returns, meta["final_eval_return"])
    assert np.mean(returns) > 3 * max(np.mean(random_returns), 1.0), (returns, random_returns)


def _random_returns(env_id, episodes):
    env = load(env_id, seed=7)
    rng = np.random.default_rng(0)
    spec = env.action_spec()
    returns = []
    for _ in range(episodes):
        step, total = env.reset(), 0.0
        while True:
            step = env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype))
            total += float(step.reward)
            if step.is_last():
                break
        returns.append(total)
    return returns


def test_the_default_run_does_not_collide_with_a_shipped_policy():
    """`tftrpo-train` with no arguments exports to savedmodels/<env>-seed0: that must not be shipped."""
    from tftrpo import presets

    default_export = os.path.join(REPO, "savedmodels", f"{presets.DEFAULT_ENV}-seed0")
    assert not os.path.exists(default_export)
    assert all(os.path.basename(p).endswith("-shipped") for p in SHIPPED)
