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
  trigger). The version is (epoch, train step): each publisher draws a random epoch, so a
  learner restarted at a train step the actors have already collected for still gets new
  rows. With the variables go a few probe observations and actions and the policy's log
  probabilities of them, which an actor checks its own policy against after loading the
  weights: an actor whose networks compute something else (another activation, another
  normaliser clip) is refused, not trained on;
- a `ReverbActor` collects one batch per version: it waits until a version other than the
  one it last collected with is published, loads it, collects, and writes each row as one
  Reverb item (one step of [steps_per_env, ...] arrays) tagged with the version and the row's
  place in the update's batch (`first_row` + its env's index);
- the experience table is a FIFO queue that hands each row out once;
- `ExperienceQueue.dataset()` drops rows of any other version (rows written before a
  learner restarted) and batches `rows_per_iteration` current rows in row order: one
  update's [B, T] batch, each row position holding the same env on every update (the reward
  normaliser carries each row's running return into the next batch's row).

The update is synchronous, as in the paper: the learner waits for every row of the
iteration, so `rows_per_iteration` must equal the actors' envs together, and the actors'
rows must cover 0..B-1 once each.
"""
import secrets
import time
from typing import NamedTuple, Optional

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.experimental.distributed import reverb_variable_container
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from tftrpo.sampling.single_path import SinglePathCollector

__all__ = ["EXPERIENCE_TABLE", "VARIABLES_TABLE", "FINISHED", "PolicyVersion", "reverb_tables", "make_reverb_server",
           "PolicyPublisher", "ReverbActor", "ExperienceQueue"]

EXPERIENCE_TABLE = "tftrpo_experience"
VARIABLES_TABLE = reverb_variable_container.DEFAULT_TABLE
FINISHED = -1  # the train step `PolicyPublisher.finish()` publishes: actors stop
EPOCH_KEY, PROBE_KEY = "epoch", "probe"
PROBES = 4  # probe observations published with the weights


class PolicyVersion(NamedTuple):
    """Which policy a row was collected with: the publisher's epoch and the train step."""
    epoch: int
    step: int


def _message(variables, train_step, epoch, probe) -> dict:
    """The nest the variable table holds: the layout of TF-Agents' `ReverbVariableContainer`
    (the policy's variables, the train step) with the epoch and the probe."""
    return {reverb_variable_container.POLICY_KEY: variables,
            reverb_variable_container.TRAIN_STEP_KEY: train_step, EPOCH_KEY: epoch, PROBE_KEY: probe}


def _probe_inputs(policy) -> dict:
    """Fixed observations and actions of the policy's specs (a seeded draw: the same in every
    process): standard normal floats clipped to the bounds, uniform integers within them.
    Not TF-Agents' `sample_spec_nest`: it draws uniformly between the bounds, and MuJoCo's
    observation specs span the float32 range, whose values overflow an unnormalised ReLU net."""
    rng = np.random.default_rng(0)

    def draw(spec):
        shape, dtype = (PROBES,) + tuple(spec.shape), spec.dtype.as_numpy_dtype
        low = getattr(spec, "minimum", None)
        high = getattr(spec, "maximum", None)
        if spec.dtype.is_floating:
            x = rng.standard_normal(shape)
            return (x if low is None else np.clip(x, low, high)).astype(dtype)
        low, high = (0, 9) if low is None else (low, high)
        return rng.integers(np.broadcast_to(low, shape[1:]), np.broadcast_to(high, shape[1:]) + 1, shape).astype(dtype)

    return {"observation": tf.nest.map_structure(draw, policy.time_step_spec.observation),
            "action": tf.nest.map_structure(draw, policy.action_spec)}


def _probe_log_prob_fn(policy):
    """A compiled function: the policy's log probability of each probe action at its probe
    observation, [PROBES] (eager, the distribution call cost ~20 ms a publish)."""
    def log_prob(observation, action):
        time_step = tensor_spec.zero_spec_nest(policy.time_step_spec, outer_dims=(PROBES,))
        time_step = time_step._replace(step_type=tf.fill([PROBES], ts.StepType.MID), observation=observation)
        distribution = policy.distribution(time_step, policy.get_initial_state(PROBES)).action
        log_probs = tf.nest.map_structure(lambda d, a: tf.reshape(d.log_prob(a), [PROBES, -1]), distribution, action)
        return tf.add_n([tf.reduce_sum(lp, axis=1) for lp in tf.nest.flatten(log_probs)])

    function = tf.function(log_prob, autograph=False)
    return lambda probe: function(probe["observation"], probe["action"]).numpy()


# Variables travel through Reverb's Python client, not TF-Agents' `ReverbVariableContainer`:
# its `reverb.TFClient` is a TF resource private to an eager kernel, and `tf.random.set_seed`
# (which clears the eager kernel caches) deletes it: the next push fails with "Resource ...
# ReverbClient ... does not exist".
def _push(client: reverb.Client, values) -> None:
    client.insert([np.asarray(v) for v in tf.nest.flatten(values)], priorities={VARIABLES_TABLE: 1.0})


def _pull(client: reverb.Client, structure) -> dict:
    """The published message, as NumPy arrays in `structure`'s nest."""
    sample = next(client.sample(VARIABLES_TABLE, num_samples=1, emit_timesteps=False))
    return tf.nest.pack_sequence_as(structure, [value[0] for value in sample.data])


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


def _item_spec(data_spec, steps_per_env: int) -> dict:
    """An experience item: one row, its place in the update's batch and its policy's epoch
    (the train step is the item's priority)."""
    return {"trajectory": _row_spec(data_spec, steps_per_env), "row": tf.TensorSpec([], tf.int64),
            EPOCH_KEY: tf.TensorSpec([], tf.int64)}


def _message_signature(policy) -> dict:
    scalar = tf.TensorSpec([], tf.int64)
    probe = tf.nest.map_structure(lambda x: tf.TensorSpec(x.shape, x.dtype), _probe_inputs(policy))
    probe["log_prob"] = tf.TensorSpec([PROBES], tf.float32)
    return {reverb_variable_container.POLICY_KEY: _signature(policy.variables()),
            reverb_variable_container.TRAIN_STEP_KEY: scalar, EPOCH_KEY: scalar, PROBE_KEY: probe}


def reverb_tables(agent, steps_per_env: int, rows_per_iteration: int) -> list:
    """The two tables of a `reverb.Server` for `agent`'s distributed collection.

    - `EXPERIENCE_TABLE`: a queue of one iteration's rows (FIFO, each row handed out once;
      writers wait while it is full), each one item of [steps_per_env, ...] `agent.collect_data_spec`
      arrays with the row's place in the batch and its policy's epoch;
    - `VARIABLES_TABLE`: the latest published collect-policy variables, version and probe.
    """
    if steps_per_env < 2:
        raise ValueError(f"reverb_tables: steps_per_env must be >= 2, got {steps_per_env}")
    if rows_per_iteration < 1:
        raise ValueError(f"reverb_tables: rows_per_iteration must be >= 1, got {rows_per_iteration}")
    return [
        reverb.Table.queue(EXPERIENCE_TABLE, max_size=rows_per_iteration,
                           signature=_item_spec(agent.collect_data_spec, steps_per_env)),
        reverb.Table(VARIABLES_TABLE, sampler=reverb.selectors.Uniform(), remover=reverb.selectors.Fifo(),
                     rate_limiter=reverb.rate_limiters.MinSize(1), max_size=1, max_times_sampled=0,
                     signature=_message_signature(agent.collect_policy)),
    ]


class PolicyPublisher:
    """The learner's side of the weights: publishes the collect policy and its version.

    Callable as a `tf_agents.train.Learner` trigger (`trigger(train_step)`): the Learner calls
    its triggers at the end of each `run()`, so with `run(iterations=1)` every update is
    followed by publishing the updated policy. Call `publish()` once before the first update,
    and `finish()` at the end to stop the actors.

    The version is (`epoch`, train step); the epoch is drawn at random for each publisher, so
    the rows of a learner restarted from a checkpoint are told from those of the run before.
    """

    def __init__(self, server_address: str, policy, train_step: tf.Variable):
        self._client = reverb.Client(server_address)
        # policy.variables() walks the module tree (~3 ms on Hopper): once, not per publish.
        self._variables, self._train_step = policy.variables(), train_step
        self.epoch = secrets.randbits(62)
        self._probe, self._probe_log_prob = _probe_inputs(policy), _probe_log_prob_fn(policy)

    @property
    def train_step(self) -> tf.Variable:
        return self._train_step

    def publish(self, step: Optional[int] = None) -> PolicyVersion:
        """Pushes the policy's variables with the current train step (or `step`); returns the version."""
        step = int(self._train_step.numpy()) if step is None else int(step)
        probe = dict(self._probe, log_prob=self._probe_log_prob(self._probe))
        _push(self._client, _message(self._variables, np.int64(step), np.int64(self.epoch), probe))
        return PolicyVersion(self.epoch, step)

    def __call__(self, train_step=None) -> None:
        self.publish()

    def finish(self) -> None:
        """Publishes the train step `FINISHED`: each actor returns from `run()` when it sees it."""
        self.publish(FINISHED)


class ReverbActor:
    """Collects single-path rows with the learner's latest policy and writes them to Reverb.

    Args:
      server_address: "host:port" of the learner's `reverb.Server` (`reverb_tables`).
      env: this actor's batched Python environment (e.g. `tftrpo.envs.load_batched`), or one env.
      policy: the collect policy to load the published variables into: built like the
        learner's (`agent.collect_policy` of an agent made from the same config). Its variables
        must line up with the published ones, and after loading them it must give the
        published probe's log probabilities, else it is refused (`ValueError`).
      steps_per_env: T, the length of each row; the learner's.
      first_row: this actor's first row in the update's [B, T] batch: its envs fill rows
        first_row .. first_row + n - 1 (with actors of n envs each: actor index × n).
      seed: seed of the policy's sampling (`SinglePathCollector`).
      timeout_s: longest wait for a new policy version (a `TimeoutError` then) and for the
        queue to take a row.
      numpy_policy: as in `SinglePathCollector`.
    """

    def __init__(self, server_address: str, env, policy, steps_per_env: int, first_row: int,
                 seed: Optional[int] = None, timeout_s: float = 600.0, numpy_policy: Optional[bool] = None,
                 poll_s: float = 0.01):
        self._address = server_address
        self._client = reverb.Client(server_address)
        tables = _tables(self._client, server_address, timeout_s, "ReverbActor")
        item_signature = tables[EXPERIENCE_TABLE].signature
        self._collector = SinglePathCollector(env, policy, steps_per_env, numpy_policy=numpy_policy, seed=seed)
        item_spec = _item_spec(policy.trajectory_spec, steps_per_env)
        if not _same_signature(item_spec, item_signature):
            raise ValueError(f"ReverbActor: rows of {steps_per_env} steps of this policy's trajectories do not fit "
                             f"the server's {EXPERIENCE_TABLE} table: the learner's steps_per_env or its agent "
                             f"differ.\n  this actor: {item_spec}\n  the server: {item_signature}")
        rows = tables[EXPERIENCE_TABLE].max_size
        if not 0 <= first_row <= rows - self._collector.num_envs:
            raise ValueError(f"ReverbActor: first_row={first_row} with {self._collector.num_envs} envs does not fit the "
                             f"learner's {rows} rows per update (rows 0..{rows - 1})")
        self._variables, self._first_row, self._probe_log_prob = policy.variables(), int(first_row), \
            _probe_log_prob_fn(policy)
        self._structure = _message_signature(policy)
        if not _same_signature(self._structure, tables[VARIABLES_TABLE].signature):
            raise ValueError("ReverbActor: this policy's variables do not match those the learner publishes: build "
                             "the actor's agent as the learner's (same networks, observation normalisation)."
                             f"\n  this actor: {self._structure}\n  the server: {tables[VARIABLES_TABLE].signature}")
        self._length, self._timeout_s, self._poll_s = int(steps_per_env), float(timeout_s), float(poll_s)
        self._last_version, self._inserts_seen = None, None
        self.rows_written = 0

    @property
    def collector(self) -> SinglePathCollector:
        return self._collector

    def wait_for_policy(self) -> PolicyVersion:
        """Waits until a version other than the last one collected with is published, loads
        its variables into the policy, checks the policy against the probe, and returns the
        version (its `step` `FINISHED`: stop)."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            table = _tables(self._client, self._address, self._timeout_s, "ReverbActor")[VARIABLES_TABLE]
            # The variables are pulled only after a new insert: polling the table's insert count
            # is one small request, pulling every variable each time would load the learner's CPUs.
            inserts = table.rate_limiter_info.insert_stats.completed
            if table.current_size and inserts != self._inserts_seen:
                self._inserts_seen = inserts
                message = _pull(self._client, self._structure)
                version = PolicyVersion(int(message[EPOCH_KEY]), int(message[reverb_variable_container.TRAIN_STEP_KEY]))
                if version.step == FINISHED:
                    return version
                if version != self._last_version:
                    self._load(message)
                    return version
            if time.monotonic() > deadline:
                last = "none" if self._last_version is None else self._last_version.step
                raise TimeoutError(f"ReverbActor: no policy version other than {last} was published "
                                   f"at {self._address} within {self._timeout_s:g} s: is the learner running and "
                                   "publishing (PolicyPublisher) after each update?")
            time.sleep(self._poll_s)

    def _load(self, message) -> None:
        """Assigns the published variables and checks that the policy now computes what the
        learner's does on the probe (same variables, but another activation or normaliser clip
        would act with another π and send off-policy rows)."""
        for variable, value in zip(self._variables, message[reverb_variable_container.POLICY_KEY]):
            variable.assign(value)
        probe = message[PROBE_KEY]
        mine, learners = self._probe_log_prob(probe), probe["log_prob"]
        if not np.allclose(mine, learners, rtol=1e-4, atol=1e-4):
            raise ValueError("ReverbActor: with the published weights this policy gives other action probabilities "
                             "than the learner's (log probabilities of the probe actions: this actor "
                             f"{np.round(mine, 4).tolist()}, the learner {np.round(learners, 4).tolist()}): build "
                             "the actor's agent with the learner's configuration (activations, normalisation)")

    def write(self, experience, version: PolicyVersion) -> None:
        """Writes each [T] row of a [n, T] batch as one item of the experience table, tagged
        with `version` and its row (`first_row` + b), and records `version` as the one this
        actor last collected with (`wait_for_policy` then waits for another)."""
        rows, length = np.shape(experience.step_type)[:2]
        if length != self._length:
            raise ValueError(f"ReverbActor.write: rows of {length} steps, the table's are {self._length}")
        batch = tf.nest.map_structure(np.asarray, experience)
        epoch = np.int64(version.epoch)
        # A row is one Reverb step of [T, ...] arrays: one append per row, where an append per
        # time step cost ~70 µs each (2048 of them took as long as collecting a Hopper batch).
        writer = self._client.trajectory_writer(num_keep_alive_refs=1)
        try:
            for b in range(rows):
                writer.append({"trajectory": tf.nest.map_structure(lambda x: x[b], batch),  # pylint: disable=cell-var-from-loop
                               "row": np.int64(self._first_row + b), EPOCH_KEY: epoch})
                writer.create_item(EXPERIENCE_TABLE, priority=float(version.step),
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
        (None: no limit) or the train step `FINISHED`; returns the batches written."""
        batches = 0
        while iterations is None or batches < iterations:
            version = self.wait_for_policy()
            if version.step == FINISHED:
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
      publisher: the learner's `PolicyPublisher`: the rows of the next update must carry its
        epoch and its train step (the agent's `train_step_counter`).
      steps_per_env: T, as in `reverb_tables`.
      rows_per_iteration: B, the rows of one update: the actors' envs together.
      timeout_s: longest wait for the next row; None waits for ever. After it the dataset
        ends (the learner's `next()` raises `StopIteration` / `OutOfRangeError`). Reverb's
        sampler asks for the next rows as soon as a batch is complete, so the clock runs
        through the learner's own update and the actors' collection: it must exceed both.
    """

    def __init__(self, server_address: str, data_spec, publisher: PolicyPublisher, steps_per_env: int,
                 rows_per_iteration: int, timeout_s: Optional[float] = None):
        table = _tables(reverb.Client(server_address), server_address, 60, "ExperienceQueue")[EXPERIENCE_TABLE]
        if table.max_size != rows_per_iteration:
            raise ValueError(f"ExperienceQueue: rows_per_iteration={rows_per_iteration}, but the server's "
                             f"{EXPERIENCE_TABLE} queue holds {table.max_size} rows: make both with the same number")
        self._item_spec = _item_spec(data_spec, steps_per_env)
        if not _same_signature(self._item_spec, table.signature):
            raise ValueError(f"ExperienceQueue: rows of {steps_per_env} steps of data_spec do not fit the server's "
                             f"{EXPERIENCE_TABLE} table (another steps_per_env or agent)")
        self._address, self._publisher = server_address, publisher
        self._timeout_ms = -1 if timeout_s is None else int(timeout_s * 1000)
        self._rows = int(rows_per_iteration)

    def dataset(self) -> tf.data.Dataset:
        """(experience [B, T], `reverb.SampleInfo` [B]) per update, the form
        `tf_agents.train.Learner(experience_dataset_fn=...)` takes: only rows of the publisher's
        epoch and train step, in row order (an `InvalidArgumentError` naming the rows when the
        actors' rows do not cover 0..B-1 once each)."""
        items = reverb.TrajectoryDataset(
            self._address, EXPERIENCE_TABLE,
            dtypes=tf.nest.map_structure(lambda spec: spec.dtype, self._item_spec),
            shapes=tf.nest.map_structure(lambda spec: spec.shape, self._item_spec),
            max_in_flight_samples_per_worker=self._rows, num_workers_per_iterator=1,
            rate_limiter_timeout_ms=self._timeout_ms)
        epoch, train_step = tf.constant(self._publisher.epoch, tf.int64), self._publisher.train_step

        def current(item, info):
            return tf.logical_and(tf.equal(item[EPOCH_KEY], epoch),
                                  tf.equal(info.priority, tf.cast(train_step, tf.float64)))

        def in_row_order(item, info):
            order = tf.argsort(item["row"], stable=True)
            rows = tf.gather(item["row"], order)
            check = tf.debugging.assert_equal(
                rows, tf.range(self._rows, dtype=tf.int64), summarize=self._rows,
                message=f"the rows of an update must be 0..{self._rows - 1} once each (give each ReverbActor "
                        "its own first_row, actor index x its envs); x: this update's rows, sorted")
            with tf.control_dependencies([check]):
                order = tf.identity(order)
            return tuple(tf.nest.map_structure(lambda x: tf.gather(x, order), (item["trajectory"], info)))

        return (items.map(lambda sample: (sample.data, sample.info)).filter(current)
                .batch(self._rows, drop_remainder=True).map(in_row_order))


def make_reverb_server(agent, steps_per_env: int, rows_per_iteration: int, port: Optional[int] = None) -> reverb.Server:
    """A `reverb.Server` on localhost with `reverb_tables` (port None: a free one)."""
    return reverb.Server(reverb_tables(agent, steps_per_env, rows_per_iteration), port=port)
