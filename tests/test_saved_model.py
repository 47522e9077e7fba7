"""PolicySaver export: the SavedModel, loaded in a fresh process without tftrpo, acts the same."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.trajectories import time_step as ts

from test_agent import CONT_ACTION, DISC_ACTION, make_agent
from trajectories import random_experience

LOADER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_probability  # registers the distribution type specs of the signature
    assert "tftrpo" not in sys.modules
    policy = tf.saved_model.load(sys.argv[1])
    data = np.load(sys.argv[2])
    n = data["observation"].shape[0]
    action_fn = policy.signatures["action"]
    out = action_fn(**{
        "0/step_type": tf.constant(data["step_type"]),
        "0/reward": tf.zeros([n], tf.float32),
        "0/discount": tf.ones([n], tf.float32),
        "0/observation": tf.constant(data["observation"]),
    })
    assert "tftrpo" not in sys.modules
    np.save(sys.argv[3], out["action"].numpy())
    """
)


@pytest.mark.parametrize("action_spec", [CONT_ACTION, DISC_ACTION], ids=["gaussian", "categorical"])
def test_saved_policy_matches_agent_policy_in_fresh_process(tmp_path, action_spec):
    agent = make_agent(action_spec, normalize_observations=True, max_kl=0.05)
    experience = random_experience(agent, seed=11)
    # Shifted observations make the normaliser's statistics far from identity.
    experience = experience._replace(observation=experience.observation * 4.0 + 2.0)
    for _ in range(3):
        agent.train(experience)

    export = tmp_path / "policy"
    policy_saver.PolicySaver(agent.policy, batch_size=None).save(str(export))

    rng = np.random.default_rng(0)
    observation = (rng.normal(size=(16, 11)) * 4.0 + 2.0).astype(np.float32)
    step_type = np.full([16], ts.StepType.MID, np.int32)
    np.savez(tmp_path / "inputs.npz", observation=observation, step_type=step_type)
    expected = agent.policy.action(ts.TimeStep(
        tf.constant(step_type), tf.zeros([16]), tf.ones([16]), tf.constant(observation))).action.numpy()

    script = tmp_path / "load.py"
    script.write_text(LOADER)
    subprocess.run(
        [sys.executable, str(script), str(export), str(tmp_path / "inputs.npz"), str(tmp_path / "out.npy")],
        check=True, cwd=tmp_path, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    loaded = np.load(tmp_path / "out.npy")
    assert loaded.shape == expected.shape
    np.testing.assert_allclose(loaded, expected, rtol=1e-5, atol=1e-6)
    if action_spec is CONT_ACTION:
        # The normaliser is baked in: the bare actor on raw observations acts differently.
        raw = agent._actor_net(tf.constant(observation), step_type=None, network_state=())[0].mode()
        assert not np.allclose(np.clip(raw.numpy(), -1, 1), loaded, atol=1e-3)
