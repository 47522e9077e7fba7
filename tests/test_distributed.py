"""Distributed single-path collection through a real Reverb server on localhost
(tftrpo.sampling.distributed), with TF-Agents' own Learner."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import reverb
import tensorflow as tf
from tf_agents.environments import tf_py_environment
from tf_agents.train import learner as tfa_learner

from tftrpo.envs import load_batched
from tftrpo.presets import preset
from tftrpo.sampling import distributed
from tftrpo.sampling.single_path import SinglePathCollector
from tftrpo.train import make_agent

ENV, T, ROWS = "CartPole-v1", 32, 4
EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "train_distributed.py")


def _agent(init_seed):
    tf.keras.utils.set_random_seed(init_seed)
    env = tf_py_environment.TFPyEnvironment(load_batched(ENV, 2, seed=0))
    train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
    return make_agent(preset(ENV), env, train_step), train_step


def _values(variables):
    return [v.numpy() for v in variables]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture
def learner_side():
    agent, train_step = _agent(1)
    server = distributed.make_reverb_server(agent, train_step, T, ROWS)
    address = f"localhost:{server.port}"
    yield agent, train_step, address
    server.stop()


def _actor(address, policy, env_seed, seed, **kwargs):
    return distributed.ReverbActor(address, load_batched(ENV, 2, seed=env_seed), policy, T, seed=seed, **kwargs)


def _local_rows(policy, env_seed, seed):
    """The same rows collected locally: same env seeds, same sampling seed, same weights."""
    return SinglePathCollector(load_batched(ENV, 2, seed=env_seed), policy, T, seed=seed).collect()


def _concat(*batches):
    return tf.nest.map_structure(lambda *rows: np.concatenate([np.asarray(r) for r in rows]), *batches)


def test_the_learners_batch_is_the_actors_rows_collected_with_the_published_policy(learner_side):
    """Two actors whose own networks start elsewhere load the published weights (and observation
    statistics), collect, and the dataset's [B, T] batch equals, bit for bit, the rows a local
    collector gathers with the learner's policy from the same env and sampling seeds."""
    agent, train_step, address = learner_side
    reference, _ = _agent(1)
    actor_agent, _ = _agent(2)
    assert not np.array_equal(actor_agent.collect_policy.variables()[0].numpy(),
                              agent.collect_policy.variables()[0].numpy())
    agent._observation_normalizer.update(tf.random.normal([64, 4], mean=1.0, seed=3), outer_dims=[0])
    reference._observation_normalizer.update(tf.random.normal([64, 4], mean=1.0, seed=3), outer_dims=[0])
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    assert publisher.publish() == 0
    actors = [_actor(address, actor_agent.collect_policy, 10, 5), _actor(address, actor_agent.collect_policy, 20, 6)]
    for actor in actors:
        assert actor.run(iterations=1) == 1 and actor.rows_written == 2
    _assert_same(_values(actor_agent.collect_policy.variables()), _values(agent.collect_policy.variables()))

    experience, info = next(iter(distributed.ExperienceQueue(
        address, agent.collect_data_spec, train_step, T, ROWS).dataset()))
    assert experience.step_type.shape == (ROWS, T)
    np.testing.assert_array_equal(info.priority.numpy(), 0.0)
    expected = _concat(_local_rows(reference.collect_policy, 10, 5), _local_rows(reference.collect_policy, 20, 6))
    for got, want in zip(tf.nest.flatten(experience), tf.nest.flatten(expected)):
        np.testing.assert_array_equal(got.numpy(), want)


def test_tf_agents_learner_trains_publishes_and_the_actors_follow(learner_side, tmp_path):
    """`tf_agents.train.Learner` on the queue's dataset, with the publisher as its trigger: one
    update per `run()`, the same update as `agent.train` on the local rows (bit for bit here, since
    the update is never inlined into the Learner's function; asserted to 2% of the step, the margin
    `test_train_inside_user_common_function` allows for float32 CG), then version 1 is published and
    an actor's next batch is collected with the updated weights."""
    agent, train_step, address = learner_side
    reference, reference_step = _agent(1)
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    queue = distributed.ExperienceQueue(address, agent.collect_data_spec, train_step, T, ROWS, timeout_s=60)
    learner = tfa_learner.Learner(str(tmp_path), train_step, agent, experience_dataset_fn=queue.dataset,
                                  triggers=[publisher], checkpoint_interval=-1)
    publisher.publish()
    actor_agent, _ = _agent(2)
    actors = [_actor(address, actor_agent.collect_policy, 10, 5), _actor(address, actor_agent.collect_policy, 20, 6)]
    for actor in actors:
        actor.run(iterations=1)
    before = _values(agent._actor_net.trainable_variables)
    learner.run(iterations=1)
    assert int(train_step.numpy()) == 1
    reference.train(tf.nest.map_structure(tf.convert_to_tensor, _concat(
        _local_rows(reference.collect_policy, 10, 5), _local_rows(reference.collect_policy, 20, 6))))
    assert int(reference_step.numpy()) == 1
    step = np.concatenate([(a - b).ravel() for a, b in zip(_values(agent._actor_net.trainable_variables), before)])
    want = np.concatenate([(a - b).ravel() for a, b in zip(_values(reference._actor_net.trainable_variables), before)])
    assert np.linalg.norm(want) > 0
    assert np.linalg.norm(step - want) <= 0.02 * np.linalg.norm(want)

    assert actors[0].wait_for_policy() == 1
    _assert_same(_values(actor_agent.collect_policy.variables()), _values(agent.collect_policy.variables()))


def test_rows_of_another_policy_version_are_dropped_not_trained_on(learner_side):
    """Rows written for another version (say before the learner restarted from an older
    checkpoint) are skipped; the batch is made of the current version's rows only."""
    agent, train_step, address = learner_side
    distributed.PolicyPublisher(address, agent.collect_policy, train_step).publish()
    actor = _actor(address, agent.collect_policy, 10, 5, timeout_s=60)
    stale, fresh = actor.collector.collect(), [actor.collector.collect(), actor.collector.collect()]

    def write():  # 6 rows for a queue of 4: the writer waits until the learner takes rows
        actor.write(stale, version=7)
        for rows in fresh:
            actor.write(rows, version=0)

    writer = threading.Thread(target=write)
    writer.start()
    experience, info = next(iter(distributed.ExperienceQueue(
        address, agent.collect_data_spec, train_step, T, ROWS, timeout_s=60).dataset()))
    writer.join(timeout=60)
    assert not writer.is_alive() and actor.rows_written == 6
    np.testing.assert_array_equal(info.priority.numpy(), 0.0)
    for got, want in zip(tf.nest.flatten(experience), tf.nest.flatten(_concat(*fresh))):
        np.testing.assert_array_equal(got.numpy(), want)


def test_an_actor_waits_for_a_new_version_and_stops_at_finish(learner_side):
    agent, train_step, address = learner_side
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    actor = _actor(address, agent.collect_policy, 10, 5, timeout_s=1.0)
    with pytest.raises(TimeoutError, match=f"no policy version .* was published at {address} within 1 s"):
        actor.wait_for_policy()
    publisher.publish()
    assert actor.run(iterations=1) == 1
    with pytest.raises(TimeoutError, match="other than 0"):  # version 0 again: already collected with
        actor.run(iterations=1)
    publisher.finish()
    assert actor.run() == 0 and actor.rows_written == 2


def test_an_actor_whose_rows_nobody_takes_times_out(learner_side):
    agent, _, address = learner_side
    actor = _actor(address, agent.collect_policy, 10, 5, timeout_s=1.0)
    rows = actor.collector.collect()
    for _ in range(ROWS // 2):  # fills the queue of one update's rows
        actor.write(rows, version=0)
    with pytest.raises(TimeoutError, match="took no row for 1 s"):
        actor.write(rows, version=0)


def test_an_actor_refuses_a_server_or_rows_that_do_not_fit(learner_side):
    agent, _, address = learner_side
    with pytest.raises(ValueError, match=r"steps_per_env or its agent differ"):
        distributed.ReverbActor(address, load_batched(ENV, 2, seed=0), agent.collect_policy, T + 1)
    other, _ = _agent(3)
    pendulum_env = load_batched("Pendulum-v1", 2, seed=0)
    pendulum_agent = make_agent(preset("Pendulum-v1"), tf_py_environment.TFPyEnvironment(pendulum_env),
                                tf.Variable(0, dtype=tf.int64))
    with pytest.raises(ValueError, match="do not fit the server's tftrpo_experience table"):
        distributed.ReverbActor(address, pendulum_env, pendulum_agent.collect_policy, T)
    wider = make_agent(preset(ENV, hidden_layers=(32,)), tf_py_environment.TFPyEnvironment(load_batched(ENV, 2)),
                       tf.Variable(0, dtype=tf.int64))
    with pytest.raises(ValueError, match="this policy's variables do not match those the learner publishes"):
        distributed.ReverbActor(address, load_batched(ENV, 2, seed=0), wider.collect_policy, T)
    bare = reverb.Server([reverb.Table.queue("something_else", 4)])
    try:
        with pytest.raises(ValueError, match=r"has no table\(s\) \['tftrpo_experience', 'variables'\]"):
            distributed.ReverbActor(f"localhost:{bare.port}", load_batched(ENV, 2, seed=0), other.collect_policy, T)
    finally:
        bare.stop()
    actor = _actor(address, agent.collect_policy, 10, 5)
    short = SinglePathCollector(load_batched(ENV, 2, seed=0), agent.collect_policy, T - 1).collect()
    with pytest.raises(ValueError, match=f"rows of {T - 1} steps, the table's are {T}"):
        actor.write(short, version=0)


def test_the_learners_queue_refuses_another_size_and_a_missing_server_is_named(learner_side):
    agent, train_step, address = learner_side
    with pytest.raises(ValueError, match=f"rows_per_iteration={ROWS + 1}, but the server's tftrpo_experience "
                                         f"queue holds {ROWS} rows"):
        distributed.ExperienceQueue(address, agent.collect_data_spec, train_step, T, ROWS + 1)
    with pytest.raises(ValueError, match="rows of 16 steps of data_spec do not fit"):
        distributed.ExperienceQueue(address, agent.collect_data_spec, train_step, 16, ROWS)
    stopped = reverb.Server([reverb.Table.queue("q", 1)])
    gone = f"localhost:{stopped.port}"
    stopped.stop()
    with pytest.raises(ConnectionError, match=f"the Reverb server at {gone} does not answer"):
        distributed.ReverbActor(gone, load_batched(ENV, 2, seed=0), agent.collect_policy, T, timeout_s=2)


def test_reverb_tables_refuse_bad_sizes(learner_side):
    agent, train_step, _ = learner_side
    with pytest.raises(ValueError, match="steps_per_env must be >= 2"):
        distributed.reverb_tables(agent, train_step, 1, 4)
    with pytest.raises(ValueError, match="rows_per_iteration must be >= 1"):
        distributed.reverb_tables(agent, train_step, T, 0)


def test_the_distributed_example_learns_cartpole_with_two_actor_processes(tmp_path):
    """examples/train_distributed.py end to end: a learner, two actor processes and a Reverb
    server on localhost reach a greedy return of 475 on CartPole-v1; the agent's summaries are
    in the Learner's TensorBoard logs and the exported SavedModel loads and acts."""
    export = tmp_path / "policy"
    completed = subprocess.run(
        [sys.executable, EXAMPLE, "--env", ENV, "--actors", "2", "--iterations", "30", "--target-return", "475",
         "--eval-interval", "3", "--root-dir", str(tmp_path / "runs"), "--export-dir", str(export),
         "--timeout", "120"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run_dir = tmp_path / "runs" / f"{ENV}-seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["greedy_return"] >= 475, summary
    assert summary["actor_exit_codes"] == [0, 0] and summary["rows_per_update"] == 4
    assert all(row["kl"] <= preset(ENV).max_kl * 1.0001 for row in summary["history"])
    assert "actor 0:" in completed.stdout and "actor 1:" in completed.stdout

    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(str(run_dir / "train"), size_guidance={"tensors": 0})
    events.Reload()
    kl = events.Tensors("TRPOAgent/TrustRegion/kl")
    assert len(kl) == summary["updates"]

    policy = tf.saved_model.load(str(export))
    action = policy.signatures["action"](**{
        "0/step_type": tf.zeros([3], tf.int32), "0/reward": tf.zeros([3]), "0/discount": tf.ones([3]),
        "0/observation": tf.zeros([3, 4])})["action"]
    assert action.shape == (3,) and set(action.numpy()) <= {0, 1}
