"""Single-path collection by actors in other processes, through a Reverb server.

The paper's single-path batch (Section 5.1) gathered by several actor processes (or
machines) for one learner, in TF-Agents' actor/learner layout: a `reverb.Server` holds the
experience and the policy's weights, `tf_agents.train.Learner` trains on a Reverb
dataset, and each actor steps its own batched envs with a `SinglePathCollector`, so a row
means what it means in a local run: `steps_per_env` slots of one env, episodes continuing
from row to row, resets taking slots.

TRPO is on-policy: the batch of an update must come from π_θold, the policy being
updated. Staleness is ruled out by a version, the learner's train step:

- `PolicyPublisher` (learner) pushes the collect policy's variables (weights and
  observation statistics) with the train step into a variable table laid out as TF-Agents'
  `ReverbVariableContainer`'s, before the first update and after each one (as a `Learner`
  trigger);
- a `ReverbActor` collects one batch per version: it waits until a version other than the
  one it last collected with is published, loads it, collects, and writes each row as one
  Reverb item (one step of [steps_per_env, ...] arrays) whose priority is that version;
- the experience table is a FIFO queue that hands each row out once;
- `ExperienceQueue.dataset()` drops rows whose version is not the learner's train step (rows
  written for a version before a learner restarted from an older checkpoint) and batches
  `rows_per_iteration` current rows: one update's [B, T] batch.

The update is synchronous, as in the paper: the learner waits for every row of the
iteration, so `rows_per_iteration` must equal the actors' envs together.
"""
import time
from typing import Optional

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.experimental.distributed import reverb_variable_container
from tf_agents.specs import tensor_spec

from tftrpo.sampling.single_path import SinglePathCollector

__all__ = ["EXPERIENCE_TABLE", "VARIABLES_TABLE", "FINISHED", "reverb_tables", "make_reverb_server",
           "PolicyPublisher", "ReverbActor", "ExperienceQueue"]

EXPERIENCE_TABLE = "tftrpo_experience"
VARIABLES_TABLE = reverb_variable_container.DEFAULT_TABLE
FINISHED = -1  # the version `PolicyPublisher.finish()` publishes: actors stop


def _policy_variables(policy, version: tf.Variable) -> dict:
    """The nest the variable table holds: the policy's variables and the version (the layout
    of TF-Agents' `ReverbVariableContainer`)."""
    return {reverb_variable_container.POLICY_KEY: policy.variables(),
            reverb_variable_container.TRAIN_STEP_KEY: version}


# Variables travel through Reverb's Python client, not TF-Agents' `ReverbVariableContainer`:
# its `reverb.TFClient` is a TF resource private to an eager kernel, and `tf.random.set_seed`
# (which clears the eager kernel caches) deletes it: the next push fails with "Resource ...
# ReverbClient ... does not exist".
def _push(client: reverb.Client, values) -> None:
    client.insert([np.asarray(v) for v in tf.nest.flatten(values)], priorities={VARIABLES_TABLE: 1.0})


def _pull_into(client: reverb.Client, variables) -> None:
    sample = next(client.sample(VARIABLES_TABLE, num_samples=1, emit_timesteps=False))
    for variable, value in zip(tf.nest.flatten(variables), sample.data):
        variable.assign(value[0])


def _tables(client: reverb.Client, address: str, timeout_s: float, who: str) -> dict:
    """The server's tables ({name: TableInfo}), or a ConnectionError naming the address."""
    try:
        tables = client.server_info(timeout=int(max(1, min(timeout_s, 60))))
    except (reverb.errors.ReverbError, RuntimeError) as e:  # no answer, or "Socket closed"
        raise ConnectionError(f"{who}: the Reverb server at {address} does not answer "
                              f"({type(e).__name__}: {e}); has the learner stopped?") from None
    missing = {EXPERIENCE_TABLE, VARIABLES_TABLE} - set(tables)
    if missing:
        raise ValueError(f"{who}: the Reverb server at {address} has no table(s) {sorted(missing)}: "
                         "make its tables with tftrpo.sampling.distributed.reverb_tables")
    return tables


def _signature(variables):
    """The TensorSpecs of a nest of variables (the variable table's signature)."""
    return tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), variables)


def _row_spec(data_spec, steps_per_env: int):
    return tensor_spec.add_outer_dim(data_spec, steps_per_env)


def reverb_tables(agent, train_step: tf.Variable, steps_per_env: int, rows_per_iteration: int) -> list:
    """The two tables of a `reverb.Server` for `agent`'s distributed collection.

    - `EXPERIENCE_TABLE`: a queue of one iteration's rows (FIFO, each row handed out once;
      writers wait while it is full), each one item of [steps_per_env, ...] `agent.collect_data_spec` arrays;
    - `VARIABLES_TABLE`: the latest published collect-policy variables and version.
    """
    if steps_per_env < 2:
        raise ValueError(f"reverb_tables: steps_per_env must be >= 2, got {steps_per_env}")
    if rows_per_iteration < 1:
        raise ValueError(f"reverb_tables: rows_per_iteration must be >= 1, got {rows_per_iteration}")
    variables = _policy_variables(agent.collect_policy, train_step)
    return [
        reverb.Table.queue(EXPERIENCE_TABLE, max_size=rows_per_iteration,
                           signature=_row_spec(agent.collect_data_spec, steps_per_env)),
        reverb.Table(VARIABLES_TABLE, sampler=reverb.selectors.Uniform(), remover=reverb.selectors.Fifo(),
                     rate_limiter=reverb.rate_limiters.MinSize(1), max_size=1, max_times_sampled=0,
                     signature=_signature(variables)),
    ]


class PolicyPublisher:
    """The learner's side of the weights: publishes the collect policy and its version.

    Callable as a `tf_agents.train.Learner` trigger (`trigger(train_step)`), so that every
    `learner.run()` ends by publishing the updated policy. Call `publish()` once before the
    first update, and `finish()` at the end to stop the actors.
    """

    def __init__(self, server_address: str, policy, train_step: tf.Variable):
        self._client = reverb.Client(server_address)
        self._variables = _policy_variables(policy, train_step)

    def publish(self) -> int:
        """Pushes the policy's variables with the current train step; returns that version."""
        _push(self._client, self._variables)
        return int(self._variables[reverb_variable_container.TRAIN_STEP_KEY].numpy())

    def __call__(self, train_step=None) -> None:
        self.publish()

    def finish(self) -> None:
        """Publishes the version `FINISHED`: each actor returns from `run()` when it sees it."""
        _push(self._client, dict(self._variables, **{reverb_variable_container.TRAIN_STEP_KEY: np.int64(FINISHED)}))


class ReverbActor:
    """Collects single-path rows with the learner's latest policy and writes them to Reverb.

    Args:
      server_address: "host:port" of the learner's `reverb.Server` (`reverb_tables`).
      env: this actor's batched Python environment (e.g. `tftrpo.envs.load_batched`), or one env.
      policy: the collect policy to load the published variables into: built like the
        learner's (`agent.collect_policy` of an agent made from the same config), so that
        its variables line up with the published ones.
      steps_per_env: T, the length of each row; the learner's.
      seed: seed of the policy's sampling (`SinglePathCollector`).
      timeout_s: longest wait for a new policy version (a `TimeoutError` then) and for the
        queue to take a row.
      numpy_policy: as in `SinglePathCollector`.
    """

    def __init__(self, server_address: str, env, policy, steps_per_env: int, seed: Optional[int] = None,
                 timeout_s: float = 600.0, numpy_policy: Optional[bool] = None, poll_s: float = 0.01):
        self._address = server_address
        self._client = reverb.Client(server_address)
        tables = _tables(self._client, server_address, timeout_s, "ReverbActor")
        row_signature = tables[EXPERIENCE_TABLE].signature
        self._collector = SinglePathCollector(env, policy, steps_per_env, numpy_policy=numpy_policy, seed=seed)
        row_spec = _row_spec(policy.trajectory_spec, steps_per_env)
        if not _same_signature(row_spec, row_signature):
            raise ValueError(f"ReverbActor: rows of {steps_per_env} steps of this policy's trajectories do not fit "
                             f"the server's {EXPERIENCE_TABLE} table: the learner's steps_per_env or its agent "
                             f"differ.\n  this actor: {row_spec}\n  the server: {row_signature}")
        self._version = tf.Variable(FINISHED, dtype=tf.int64, name="policy_version")
        self._variables = _policy_variables(policy, self._version)
        variable_spec = _signature(self._variables)
        if not _same_signature(variable_spec, tables[VARIABLES_TABLE].signature):
            raise ValueError("ReverbActor: this policy's variables do not match those the learner publishes: build "
                             "the actor's agent as the learner's (same networks, observation normalisation)."
                             f"\n  this actor: {variable_spec}\n  the server: {tables[VARIABLES_TABLE].signature}")
        self._length, self._timeout_s, self._poll_s = int(steps_per_env), float(timeout_s), float(poll_s)
        self._last_version, self._inserts_seen = None, None
        self.rows_written = 0

    @property
    def collector(self) -> SinglePathCollector:
        return self._collector

    def wait_for_policy(self) -> int:
        """Waits until a version other than the last one collected with is published, loads
        its variables into the policy, and returns the version (`FINISHED`: stop)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            table = _tables(self._client, self._address, self._timeout_s, "ReverbActor")[VARIABLES_TABLE]
            # The variables are pulled only after a new insert: polling the table's insert count
            # is one small request, pulling every variable each time would load the learner's CPUs.
            inserts = table.rate_limiter_info.insert_stats.completed
            if table.current_size and inserts != self._inserts_seen:
                self._inserts_seen = inserts
                _pull_into(self._client, self._variables)
                version = int(self._version.numpy())
                if version != self._last_version:
                    return version
            if time.monotonic() > deadline:
                raise TimeoutError(f"ReverbActor: no policy version other than {self._last_version} was published "
                                   f"at {self._address} within {self._timeout_s:g} s: is the learner running and "
                                   "publishing (PolicyPublisher) after each update?")
            time.sleep(self._poll_s)

    def write(self, experience, version: int) -> None:
        """Writes each [T] row of a [n, T] batch as one item of the experience table, with
        `version` as its priority, and records it as the version this actor last collected with
        (`wait_for_policy` then waits for another)."""
        rows, length = np.shape(experience.step_type)[:2]
        if length != self._length:
            raise ValueError(f"ReverbActor.write: rows of {length} steps, the table's are {self._length}")
        batch = tf.nest.map_structure(np.asarray, experience)
        # A row is one Reverb step of [T, ...] arrays: one append per row, where an append per
        # time step cost ~70 µs each (2048 of them took as long as collecting a Hopper batch).
        writer = self._client.trajectory_writer(num_keep_alive_refs=1)
        try:
            for b in range(rows):
                writer.append(tf.nest.map_structure(lambda x: x[b], batch))  # pylint: disable=cell-var-from-loop
                writer.create_item(EXPERIENCE_TABLE, priority=float(version),
                                   trajectory=tf.nest.map_structure(lambda column: column[-1], writer.history))
                # Sends the row (waiting while the queue is full).
                writer.end_episode(timeout_ms=int(self._timeout_s * 1000))
        except reverb.errors.DeadlineExceededError:
            # The writer is abandoned unclosed: closing it would wait for the row it holds.
            raise TimeoutError(f"ReverbActor: the experience queue at {self._address} took no row for "
                               f"{self._timeout_s:g} s (it holds one update's rows until the learner "
                               "samples them: is the learner running?)") from None
        writer.close()
        self.rows_written += int(rows)
        self._last_version = version

    def run(self, iterations: Optional[int] = None) -> int:
        """Collects and writes one batch per published version, until `iterations` batches
        (None: no limit) or the version `FINISHED`; returns the batches written."""
        batches = 0
        while iterations is None or batches < iterations:
            version = self.wait_for_policy()
            if version == FINISHED:
                break
            experience = self._collector.collect()
            self.write(experience, version)
            batches += 1
        return batches


def _same_signature(spec, signature) -> bool:
    try:
        tf.nest.assert_same_structure(spec, signature)
    except (TypeError, ValueError):
        return False
    return all(a.shape == b.shape and a.dtype == b.dtype
               for a, b in zip(tf.nest.flatten(spec), tf.nest.flatten(signature)))


class ExperienceQueue:
    """The learner's side of the experience: one update's rows at a time, as a dataset.

    Args:
      server_address: "host:port" of the `reverb.Server` made with `reverb_tables`.
      data_spec: `agent.collect_data_spec`.
      train_step: the learner's train step (the agent's `train_step_counter`): the version
        the rows of the next update must carry.
      steps_per_env: T, as in `reverb_tables`.
      rows_per_iteration: B, the rows of one update: the actors' envs together.
      timeout_s: longest wait for a row; None waits for ever. After it the dataset ends
        (the learner's `next()` raises `StopIteration` / `OutOfRangeError`).
    """

    def __init__(self, server_address: str, data_spec, train_step: tf.Variable, steps_per_env: int,
                 rows_per_iteration: int, timeout_s: Optional[float] = None):
        table = _tables(reverb.Client(server_address), server_address, 60, "ExperienceQueue")[EXPERIENCE_TABLE]
        if table.max_size != rows_per_iteration:
            raise ValueError(f"ExperienceQueue: rows_per_iteration={rows_per_iteration}, but the server's "
                             f"{EXPERIENCE_TABLE} queue holds {table.max_size} rows: make both with the same number")
        if not _same_signature(_row_spec(data_spec, steps_per_env), table.signature):
            raise ValueError(f"ExperienceQueue: rows of {steps_per_env} steps of data_spec do not fit the server's "
                             f"{EXPERIENCE_TABLE} table (another steps_per_env or agent)")
        self._address, self._row_spec = server_address, _row_spec(data_spec, steps_per_env)
        self._timeout_ms = -1 if timeout_s is None else int(timeout_s * 1000)
        self._train_step, self._rows = train_step, int(rows_per_iteration)

    def dataset(self) -> tf.data.Dataset:
        """(experience [B, T], `reverb.SampleInfo` [B]) per update, the form
        `tf_agents.train.Learner(experience_dataset_fn=...)` takes; only rows whose version
        is the train step's, in the order they were written (one sampling worker)."""
        rows = reverb.TrajectoryDataset(
            self._address, EXPERIENCE_TABLE,
            dtypes=tf.nest.map_structure(lambda spec: spec.dtype, self._row_spec),
            shapes=tf.nest.map_structure(lambda spec: spec.shape, self._row_spec),
            max_in_flight_samples_per_worker=self._rows, num_workers_per_iterator=1,
            rate_limiter_timeout_ms=self._timeout_ms)

        def current(experience, info):
            return tf.equal(info.priority, tf.cast(self._train_step, tf.float64))

        return (rows.map(lambda sample: (sample.data, sample.info)).filter(current)
                .batch(self._rows, drop_remainder=True))


def make_reverb_server(agent, train_step: tf.Variable, steps_per_env: int, rows_per_iteration: int,
                       port: Optional[int] = None) -> reverb.Server:
    """A `reverb.Server` on localhost with `reverb_tables` (port None: a free one)."""
    return reverb.Server(reverb_tables(agent, train_step, steps_per_env, rows_per_iteration), port=port)
