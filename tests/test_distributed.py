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
    server = distributed.make_reverb_server(agent, T, ROWS)
    address = f"localhost:{server.port}"
    yield agent, train_step, address
    server.stop()


def _actor(address, policy, env_seed, seed, first_row=0, **kwargs):
    return distributed.ReverbActor(address, load_batched(ENV, 2, seed=env_seed), policy, T, first_row, seed=seed,
                                   **kwargs)


def _local_rows(policy, env_seed, seed):
    """The same rows collected locally: same env seeds, same sampling seed, same weights."""
    return SinglePathCollector(load_batched(ENV, 2, seed=env_seed), policy, T, seed=seed).collect()


def _concat(*batches):
    return tf.nest.map_structure(lambda *rows: np.concatenate([np.asarray(r) for r in rows]), *batches)


def test_the_learners_batch_is_the_actors_rows_collected_with_the_published_policy(learner_side):
    """Two actors whose own networks start elsewhere load the published weights (and observation
    statistics), collect, and the dataset's [B, T] batch equals, bit for bit, the rows a local
    collector gathers with the learner's policy from the same env and sampling seeds, in row
    order (the actor of rows 2-3 writes first)."""
    agent, train_step, address = learner_side
    reference, _ = _agent(1)
    actor_agent, _ = _agent(2)
    assert not np.array_equal(actor_agent.collect_policy.variables()[0].numpy(),
                              agent.collect_policy.variables()[0].numpy())
    agent._observation_normalizer.update(tf.random.normal([64, 4], mean=1.0, seed=3), outer_dims=[0])
    reference._observation_normalizer.update(tf.random.normal([64, 4], mean=1.0, seed=3), outer_dims=[0])
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    assert publisher.publish() == (publisher.epoch, 0)
    actors = [_actor(address, actor_agent.collect_policy, 10, 5, first_row=0),
              _actor(address, actor_agent.collect_policy, 20, 6, first_row=2)]
    for actor in reversed(actors):
        assert actor.run(iterations=1) == 1 and actor.rows_written == 2
    _assert_same(_values(actor_agent.collect_policy.variables()), _values(agent.collect_policy.variables()))

    experience, info = next(iter(distributed.ExperienceQueue(
        address, agent.collect_data_spec, publisher, T, ROWS).dataset()))
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
    queue = distributed.ExperienceQueue(address, agent.collect_data_spec, publisher, T, ROWS, timeout_s=60)
    learner = tfa_learner.Learner(str(tmp_path), train_step, agent, experience_dataset_fn=queue.dataset,
                                  triggers=[publisher], checkpoint_interval=-1)
    publisher.publish()
    actor_agent, _ = _agent(2)
    actors = [_actor(address, actor_agent.collect_policy, 10, 5, first_row=0),
              _actor(address, actor_agent.collect_policy, 20, 6, first_row=2)]
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

    assert actors[0].wait_for_policy() == (publisher.epoch, 1)
    _assert_same(_values(actor_agent.collect_policy.variables()), _values(agent.collect_policy.variables()))


def test_rows_of_another_policy_version_are_dropped_not_trained_on(learner_side):
    """Rows written for another version (say before the learner restarted from an older
    checkpoint) are skipped; the batch is made of the current version's rows only."""
    agent, train_step, address = learner_side
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    publisher.publish()
    actor = _actor(address, agent.collect_policy, 10, 5, timeout_s=60)
    other = _actor(address, agent.collect_policy, 10, 5, first_row=2, timeout_s=60)
    stale, fresh = actor.collector.collect(), [actor.collector.collect(), other.collector.collect()]

    def write():  # 6 rows for a queue of 4: the writer waits until the learner takes rows
        actor.write(stale, version=distributed.PolicyVersion(publisher.epoch, 7))
        actor.write(fresh[0], version=distributed.PolicyVersion(publisher.epoch, 0))
        other.write(fresh[1], version=distributed.PolicyVersion(publisher.epoch, 0))

    writer = threading.Thread(target=write)
    writer.start()
    experience, info = next(iter(distributed.ExperienceQueue(
        address, agent.collect_data_spec, publisher, T, ROWS, timeout_s=60).dataset()))
    writer.join(timeout=60)
    assert not writer.is_alive() and actor.rows_written + other.rows_written == 6
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
        actor.write(rows, version=distributed.PolicyVersion(0, 0))
    with pytest.raises(TimeoutError, match="took no row for 1 s"):
        actor.write(rows, version=distributed.PolicyVersion(0, 0))


def test_an_actor_refuses_a_server_or_rows_that_do_not_fit(learner_side):
    agent, _, address = learner_side
    with pytest.raises(ValueError, match=r"steps_per_env or its agent differ"):
        distributed.ReverbActor(address, load_batched(ENV, 2, seed=0), agent.collect_policy, T + 1, 0)
    other, _ = _agent(3)
    pendulum_env = load_batched("Pendulum-v1", 2, seed=0)
    pendulum_agent = make_agent(preset("Pendulum-v1"), tf_py_environment.TFPyEnvironment(pendulum_env),
                                tf.Variable(0, dtype=tf.int64))
    with pytest.raises(ValueError, match="do not fit the server's tftrpo_experience table"):
        distributed.ReverbActor(address, pendulum_env, pendulum_agent.collect_policy, T, 0)
    wider = make_agent(preset(ENV, hidden_layers=(32,)), tf_py_environment.TFPyEnvironment(load_batched(ENV, 2)),
                       tf.Variable(0, dtype=tf.int64))
    with pytest.raises(ValueError, match="this policy's variables do not match those the learner publishes"):
        distributed.ReverbActor(address, load_batched(ENV, 2, seed=0), wider.collect_policy, T, 0)
    bare = reverb.Server([reverb.Table.queue("something_else", 4)])
    try:
        with pytest.raises(ValueError, match=r"has no table\(s\) \['tftrpo_experience', 'variables'\]"):
            distributed.ReverbActor(f"localhost:{bare.port}", load_batched(ENV, 2, seed=0), other.collect_policy, T, 0)
    finally:
        bare.stop()
    with pytest.raises(ValueError, match=r"first_row=3 with 2 envs does not fit the learner's 4 rows per update"):
        _actor(address, agent.collect_policy, 10, 5, first_row=3)
    actor = _actor(address, agent.collect_policy, 10, 5)
    short = SinglePathCollector(load_batched(ENV, 2, seed=0), agent.collect_policy, T - 1).collect()
    with pytest.raises(ValueError, match=f"rows of {T - 1} steps, the table's are {T}"):
        actor.write(short, version=distributed.PolicyVersion(0, 0))


def test_the_learners_queue_refuses_another_size_and_a_missing_server_is_named(learner_side):
    agent, train_step, address = learner_side
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    with pytest.raises(ValueError, match=f"rows_per_iteration={ROWS + 1}, but the server's tftrpo_experience "
                                         f"queue holds {ROWS} rows"):
        distributed.ExperienceQueue(address, agent.collect_data_spec, publisher, T, ROWS + 1)
    with pytest.raises(ValueError, match="rows of 16 steps of data_spec do not fit"):
        distributed.ExperienceQueue(address, agent.collect_data_spec, publisher, 16, ROWS)
    stopped = reverb.Server([reverb.Table.queue("q", 1)])
    gone = f"localhost:{stopped.port}"
    stopped.stop()
    with pytest.raises(ConnectionError, match=f"the Reverb server at {gone} does not answer"):
        distributed.ReverbActor(gone, load_batched(ENV, 2, seed=0), agent.collect_policy, T, 0, timeout_s=2)


def test_reverb_tables_refuse_bad_sizes(learner_side):
    agent, _, _ = learner_side
    with pytest.raises(ValueError, match="steps_per_env must be >= 2"):
        distributed.reverb_tables(agent, 1, 4)
    with pytest.raises(ValueError, match="rows_per_iteration must be >= 1"):
        distributed.reverb_tables(agent, T, 0)


def test_an_update_needs_rows_0_to_b_minus_1_once_each(learner_side):
    """Two actors given the same first_row: the learner refuses the batch, naming its rows, rather
    than train on two copies of one row position (whose reward normaliser state is one env's)."""
    agent, train_step, address = learner_side
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    publisher.publish()
    for env_seed in (10, 20):
        assert _actor(address, agent.collect_policy, env_seed, 5, first_row=0).run(iterations=1) == 1
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be 0..3 once each(.|\n)*\[0 0 1 1\]"):
        next(iter(distributed.ExperienceQueue(address, agent.collect_data_spec, publisher, T, ROWS).dataset()))


def test_an_actor_whose_policy_computes_something_else_is_refused(learner_side):
    """Same variables, shapes and dtypes, another activation: the weights load, but the policy
    would act with another π and send off-policy rows. The probe catches it."""
    agent, train_step, address = learner_side
    distributed.PolicyPublisher(address, agent.collect_policy, train_step).publish()
    relu = make_agent(preset(ENV, activation="relu"), tf_py_environment.TFPyEnvironment(load_batched(ENV, 2)),
                      tf.Variable(0, dtype=tf.int64))
    actor = _actor(address, relu.collect_policy, 10, 5, timeout_s=5)
    with pytest.raises(ValueError, match="other action probabilities than the learner's"):
        actor.wait_for_policy()
    assert actor.rows_written == 0
    alike, _ = _agent(2)
    assert _actor(address, alike.collect_policy, 10, 5, timeout_s=5).wait_for_policy().step == 0


def test_a_restarted_learner_gets_rows_for_a_train_step_the_actors_already_collected_for(learner_side):
    """A learner restarted from a checkpoint publishes train step 0 again: its publisher's new
    epoch makes it a new version, the actor collects for it, and the queue takes only the rows of
    the new epoch (the old learner's rows are dropped)."""
    agent, train_step, address = learner_side
    before = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    before.publish()
    actors = [_actor(address, agent.collect_policy, 10, 5, first_row=0, timeout_s=30),
              _actor(address, agent.collect_policy, 20, 6, first_row=2, timeout_s=30)]
    assert actors[0].run(iterations=1) == 1  # the learner "dies" before the other actor's rows
    after = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    assert after.epoch != before.epoch
    after.publish()
    old_rows = actors[0].collector  # what actor 0 collects next continues its episodes
    writers = [threading.Thread(target=actor.run, kwargs={"iterations": 1}) for actor in actors]
    for writer in writers:
        writer.start()
    experience, info = next(iter(distributed.ExperienceQueue(
        address, agent.collect_data_spec, after, T, ROWS, timeout_s=30).dataset()))
    for writer in writers:
        writer.join(timeout=30)
    assert not any(writer.is_alive() for writer in writers)
    assert actors[0].rows_written == 4 and actors[1].rows_written == 2
    assert experience.step_type.shape == (ROWS, T) and old_rows is actors[0].collector


def test_the_distributed_example_learns_cartpole_with_two_actor_processes(tmp_path):
    """examples/train_distributed.py end to end: a learner, one actor process it starts and one
    started by hand with the command the learner prints (--remote-actors), and a Reverb server
    on localhost reach a greedy return of 475 on CartPole-v1; the agent's summaries are in the
    Learner's TensorBoard logs and the exported SavedModel loads and acts."""
    export = tmp_path / "policy"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    learner = subprocess.Popen(
        [sys.executable, EXAMPLE, "--env", ENV, "--actors", "1", "--remote-actors", "1", "--iterations", "30",
         "--target-return", "475", "--eval-interval", "3", "--root-dir", str(tmp_path / "runs"),
         "--export-dir", str(export), "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    for line in learner.stdout:  # the learner prints the remote actor's command once its server is up
        lines.append(line)
        if "waiting for remote actor 1:" in line:
            break
    command = lines[-1].split("remote actor 1: ", 1)[1].split()
    assert command[1:3] == [EXAMPLE, "--env"] and command[command.index("--actor-index") + 1] == "1"
    remote = subprocess.run([sys.executable, *command[1:], "--timeout", "120"], capture_output=True, text=True,
                            timeout=600, env=env)
    out, err = learner.communicate(timeout=600)
    stdout = "".join(lines) + out
    assert learner.returncode == 0, stdout[-3000:] + err[-3000:]
    assert remote.returncode == 0, remote.stdout[-3000:] + remote.stderr[-3000:]
    run_dir = tmp_path / "runs" / f"{ENV}-seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["greedy_return"] >= 475, summary
    assert summary["actor_exit_codes"] == [0] and summary["rows_per_update"] == 4
    assert all(row["kl"] <= preset(ENV).max_kl * 1.0001 for row in summary["history"])
    assert "actor 0:" in stdout
    remote_batches = int(remote.stdout.split("actor 1: ", 1)[1].split()[0])
    assert remote_batches in (summary["updates"], summary["updates"] + 1)  # + the last version, unless finish() came first

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
