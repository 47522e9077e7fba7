"""Gymnasium -> TF-Agents env layer, checked against real gymnasium envs."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.policies import random_tf_policy
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from tf_agents.environments import batched_py_environment

from tftrpo import TRPOAgent, networks
from tftrpo.envs import BatchedGymnasiumEnvironment, GymnasiumEnvironment, family, load, load_batched
from tftrpo.envs.gymnasium_env import to_gym_actions
from tftrpo.sampling.single_path import SinglePathCollector

FIRST, MID, LAST = (int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST))


def _actions(env_id, n, seed=0):
    rng = np.random.default_rng(seed)
    if env_id == 'CartPole-v1':
        return rng.integers(0, 2, size=n).astype(np.int64)
    # Hopper: deliberately out of [-1, 1] so that clipping is exercised.
    return rng.uniform(-1.5, 1.5, size=(n, 3)).astype(np.float32)


@pytest.mark.parametrize('env_id', ['CartPole-v1', 'Hopper-v5'])
def test_matches_raw_gymnasium_over_episodes(env_id):
    seed, n = 123, 400
    env = load(env_id, seed=seed, discount=0.99)
    raw = gym.make(env_id)
    actions = _actions(env_id, n)
    step = env.reset()
    obs, _ = raw.reset(seed=seed)
    assert step.step_type == FIRST
    np.testing.assert_allclose(step.observation, np.float32(obs))
    assert step.observation.dtype == np.float32
    episodes, done = 0, False
    for a in actions:
        step = env.step(a)
        if done:
            obs, _ = raw.reset()  # no seed: gymnasium continues its RNG
            want = (FIRST, 0.0, 1.0)
        else:
            raw_a = np.clip(a, -1, 1) if a.ndim else int(a)
            obs, r, term, trunc, _ = raw.step(raw_a)
            want = (LAST if term or trunc else MID, r, 0.0 if term else 0.99)
        done = want[0] == LAST
        episodes += done
        np.testing.assert_allclose(step.observation, np.float32(obs), rtol=1e-6)
        assert (int(step.step_type), float(step.reward)) == (want[0], pytest.approx(want[1], rel=1e-6))
        assert float(step.discount) == pytest.approx(want[2])
    assert episodes >= 3


def test_truncation_is_not_termination():
    # CartPole with a 5-step limit: random actions cannot fail that fast.
    env = load('CartPole-v1', seed=0, discount=0.9, max_episode_steps=5)
    env.reset()
    steps = [env.step(np.int64(i % 2)) for i in range(5)]
    assert [int(s.step_type) for s in steps] == [MID] * 4 + [LAST]
    assert float(steps[-1].discount) == pytest.approx(0.9)
    assert env.step(np.int64(0)).step_type == FIRST  # auto-reset after LAST
    # Always pushing right makes the pole fall: termination, discount 0.
    env = load('CartPole-v1', seed=0)
    env.reset()
    for t in range(100):
        s = env.step(np.int64(1))
        if s.is_last():
            break
    assert t < 50 and float(s.discount) == 0.0
    # Pendulum never terminates; the 200-step TimeLimit truncates it.
    env = load('Pendulum-v1', seed=0)
    env.reset()
    lasts = [t for t in range(1, 201) if env.step(np.zeros(1, np.float32)).is_last()]
    assert lasts == [200]
    assert float(env.current_time_step().discount) == 1.0


def test_specs_info_and_action_validation():
    env = load('Hopper-v5', seed=0)
    obs_spec, act_spec = env.observation_spec(), env.action_spec()
    assert obs_spec.shape == (11,) and obs_spec.dtype == np.float32
    assert act_spec.shape == (3,) and act_spec.dtype == np.float32
    assert float(act_spec.minimum) == -1.0 and float(act_spec.maximum) == 1.0
    env.reset()
    raw_space = gym.make('Hopper-v5').action_space
    raw_space.seed(0)  # the first reset seeds the action space too
    np.testing.assert_array_equal(env.gym_env.action_space.sample(), raw_space.sample())
    env.step(np.zeros(3, np.float32))
    assert 'x_position' in env.get_info()
    assert isinstance(env.gym_env, gym.Env)
    with pytest.raises(ValueError, match=r'expected \(3,\), got \(2,\)'):
        env.step(np.zeros(2, np.float32))
    cart = load('CartPole-v1').action_spec()
    assert (cart.shape, cart.dtype, cart.minimum, cart.maximum) == ((), np.int64, 0, 1)
    assert (family('Hopper-v5'), family('CartPole-v1'), family('ALE/Pong-v5'), family('LunarLander-v3')) == (
        'mujoco',
        'classic',
        'atari',
        'other',
    )


class _TinyEnv(gym.Env):
    """One-step env with configurable spaces."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 1.0, True, False, {}


def test_space_conversion_and_unsupported_spaces():
    box = gym.spaces.Box(0.0, 1.0, (2,), np.float64)
    env = GymnasiumEnvironment(_TinyEnv(gym.spaces.Discrete(3, start=-1), gym.spaces.MultiDiscrete([2, 5])))
    assert env.observation_spec().dtype == np.int64
    assert (env.observation_spec().minimum, env.observation_spec().maximum) == (-1, 1)
    np.testing.assert_array_equal(env.action_spec().maximum, [1, 4])
    # An integer Box takes float actions (the policy's), rounded to the nearest value, then clipped.
    int_box = gym.spaces.Box(0, 5, (3,), np.int64)
    assert GymnasiumEnvironment(_TinyEnv(box, int_box)).action_spec().dtype == np.float32
    got = to_gym_actions(int_box, np.array([[3.7, 0.4, 7.2], [-0.6, 2.5, 4.51]], np.float32))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[4, 0, 5], [0, 2, 5]])
    # A bool Box likewise: 0.45 is False, 0.55 True (a cast alone makes any non-zero value True).
    bool_box = gym.spaces.Box(0, 1, (3,), np.bool_)
    np.testing.assert_array_equal(to_gym_actions(bool_box, np.array([0.05, 0.45, 0.55], np.float32)),
                                  [False, False, True])
    with pytest.raises(TypeError, match='bool Box.*DtypeObservation'):
        GymnasiumEnvironment(_TinyEnv(bool_box, box))
    with pytest.raises(TypeError, match='observation space Dict'):
        GymnasiumEnvironment(_TinyEnv(gym.spaces.Dict({'a': box}), box))
    with pytest.raises(TypeError, match='action space MultiBinary'):
        GymnasiumEnvironment(_TinyEnv(box, gym.spaces.MultiBinary(3)))


def test_older_atari_ids_are_known_before_anything_registers_ale():
    """tftrpo-train checks ids before TensorFlow (whose tf_agents import registers ale_py's envs)
    loads: the pre-ALE/ ids must be found then too, in a fresh process."""
    code = ("from tftrpo.envs import registry; registry.check_env_id('PongNoFrameskip-v4'); "
            "print(registry.family('PongNoFrameskip-v4'), registry.family('Breakout-v4'))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['atari', 'atari']


def test_unknown_env_id_suggests_close_match():
    with pytest.raises(ValueError, match="'Hoper-v5'.*Hopper-v5"):
        load('Hoper-v5')


@pytest.mark.parametrize('parallel', ['serial', 'threads', 'processes'])
def test_batched_equals_sequential(parallel):
    seed, n = 7, 120
    batched = load_batched('Hopper-v5', num_envs=2, seed=seed, parallel=parallel)
    singles = [load('Hopper-v5', seed=seed), load('Hopper-v5', seed=seed + 1)]
    acts = _actions('Hopper-v5', 2 * n, seed=1).reshape(n, 2, 3)
    try:
        b = batched.reset()
        s = [e.reset() for e in singles]
        lasts = 0
        for a in acts:
            np.testing.assert_array_equal(b.observation, np.stack([x.observation for x in s]))
            np.testing.assert_array_equal(b.reward, [x.reward for x in s])
            np.testing.assert_array_equal(b.step_type, [x.step_type for x in s])
            lasts += int(np.sum(b.step_type == LAST))
            b = batched.step(a)
            s = [e.step(a[i]) for i, e in enumerate(singles)]
        assert lasts >= 2  # the comparison covered auto-resets
        assert not np.allclose(b.observation[0], b.observation[1])
    finally:
        batched.close()


@pytest.mark.parametrize('env_id,num_envs', [('Hopper-v5', 2), ('CartPole-v1', 3), ('Pendulum-v1', 1)])
def test_batched_gymnasium_env_equals_tf_agents_batching(env_id, num_envs):
    # Short time limits so that truncations (discount 0.9) and terminations (0) both occur,
    # and Hopper's actions leave [-1, 1] so that the batched clipping is exercised.
    def envs(seed):
        return [load(env_id, seed=seed + i, discount=0.9, max_episode_steps=25) for i in range(num_envs)]

    ours = BatchedGymnasiumEnvironment(envs(11))
    reference = batched_py_environment.BatchedPyEnvironment(envs(11), multithreading=False)
    assert ours.batched and ours.batch_size == num_envs
    assert ours.time_step_spec() == reference.time_step_spec()
    if env_id == 'Pendulum-v1':
        acts = np.random.default_rng(2).uniform(-3, 3, size=(150, 1, 1)).astype(np.float32)
    else:
        acts = _actions(env_id, 150 * num_envs, seed=2).reshape((150, num_envs) + ours.action_spec().shape)
    pairs = []
    for i, a in enumerate(acts):
        if i == 60:  # a reset in the middle starts every env afresh, on both sides
            got, want = ours.reset(), reference.reset()
        else:
            got, want = ours.step(a), reference.step(a)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
        np.testing.assert_array_equal(ours.current_time_step().observation, got.observation)
        pairs.extend(zip(got.step_type.tolist(), got.discount.tolist()))
        for mine, theirs in zip(ours.get_info(), reference.envs):  # each env's latest gymnasium info
            tf.nest.map_structure(np.testing.assert_array_equal, mine, theirs.get_info())
    types = [t for t, _ in pairs]
    assert types.count(FIRST) >= 4 and types.count(LAST) >= 4
    nine = float(np.float32(0.9))
    ends = {(FIRST, 1.0), (MID, nine), (LAST, nine)} | ({(LAST, 0.0)} if env_id != 'Pendulum-v1' else set())
    assert set(pairs) == ends  # truncations bootstrap (0.9), terminations do not (0)


def test_batched_gymnasium_env_errors():
    env = load_batched('Hopper-v5', num_envs=2, seed=0)
    assert isinstance(env, BatchedGymnasiumEnvironment)
    env.reset()
    with pytest.raises(ValueError, match=r'expected \(2, 3\) \(batch of 2\), got \(3,\)'):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r'got \(1, 3\)'):
        env.step(np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match='GymnasiumEnvironments'):
        BatchedGymnasiumEnvironment([gym.make('Hopper-v5')])
    with pytest.raises(TypeError, match='non-empty'):
        BatchedGymnasiumEnvironment([])
    with pytest.raises(ValueError, match='same action spec'):
        BatchedGymnasiumEnvironment([load('Hopper-v5'), load('Walker2d-v5')])


def test_atari_pong_preprocessing():
    pytest.importorskip('cv2', reason='AtariPreprocessing needs ' 'opencv-python-headless<4.12')
    env = load('ALE/Pong-v5', seed=0)
    spec = env.observation_spec()
    assert (spec.shape, spec.dtype) == ((84, 84, 4), np.uint8)
    act = env.action_spec()
    assert (act.shape, act.dtype, int(act.minimum), int(act.maximum)) == ((), np.int64, 0, 5)
    prev = env.reset().observation
    assert prev.shape == (84, 84, 4) and prev.dtype == np.uint8
    for a in [0, 2, 3, 1, 2]:
        obs = env.step(np.int64(a)).observation
        assert obs.shape == (84, 84, 4) and obs.dtype == np.uint8
        # Channels-last frame stack rolls: new channel k == old channel k + 1.
        np.testing.assert_array_equal(obs[..., :3], prev[..., 1:])
        prev = obs
    assert prev.std() > 0


def test_tf_agents_driver_collects_batched():
    env = tf_py_environment.TFPyEnvironment(load_batched('CartPole-v1', 2))
    assert env.batch_size == 2
    policy = random_tf_policy.RandomTFPolicy(env.time_step_spec(), env.action_spec())
    rb = tf_uniform_replay_buffer.TFUniformReplayBuffer(policy.trajectory_spec, batch_size=2, max_length=200)
    driver = dynamic_step_driver.DynamicStepDriver(env, policy, observers=[rb.add_batch], num_steps=2 * 40)
    driver.run()
    traj = rb.gather_all()
    steps = traj.step_type.shape[1]
    assert traj.step_type.shape == (2, steps) and steps >= 40
    assert traj.observation.shape == (2, steps, 4)
    assert traj.observation.dtype == tf.float32
    assert traj.action.dtype == tf.int64
    assert int(rb.num_frames()) == 2 * steps
    env.close()


class _StartEnv(gym.Env):
    """Actions from Discrete(3, start=5) (or the MultiDiscrete space given); episodes of 4 steps.

    Rejects any action outside its space and records the ones it receives.
    """

    def __init__(self, action_space=None):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = action_space or gym.spaces.Discrete(3, start=5)
        self.received, self._t = [], 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f'invalid action {action!r} for {self.action_space}')
        self.received.append(np.array(action))
        self._t += 1
        return self.observation_space.sample(), float(np.sum(action)), self._t == 4, False, {}


def test_discrete_start_actions_are_indices_shifted_for_gymnasium():
    """TF-Agents' categorical heads sample 0..n-1: the spec says so, the adapter adds `start`."""
    envs = [GymnasiumEnvironment(_StartEnv(), seed=i) for i in range(2)]
    spec = envs[0].action_spec()
    assert (spec.dtype, int(spec.minimum), int(spec.maximum)) == (np.int64, 0, 2)
    obs_spec, action_spec = tensor_spec.from_spec(envs[0].observation_spec()), tensor_spec.from_spec(spec)
    tf.random.set_seed(0)
    agent = TRPOAgent(ts.time_step_spec(obs_spec), action_spec, networks.actor_network(obs_spec, action_spec),
                      networks.value_network(obs_spec), tf.keras.optimizers.Adam(1e-3),
                      train_step_counter=tf.Variable(0, dtype=tf.int64))
    batched = BatchedGymnasiumEnvironment(envs)
    for numpy_policy in (True, False):
        collector = SinglePathCollector(batched, agent.collect_policy, 10, numpy_policy=numpy_policy, seed=0)
        assert collector.uses_numpy_policy == numpy_policy
        for env in envs:
            env.gym_env.received.clear()
        batch = collector.collect()
        actions, step_type = batch.action.numpy(), batch.step_type.numpy()
        assert set(np.unique(actions)) == {0, 1, 2}  # 20 samples of a near-uniform policy
        for b, env in enumerate(envs):
            # Each env got the sampled index + 5 for every step but the auto-resets.
            np.testing.assert_array_equal(env.gym_env.received, actions[b][step_type[b] != LAST] + 5)
    # The greedy policy in a TF-Agents driver, through the unbatched adapter's own step.
    single = GymnasiumEnvironment(_StartEnv(), seed=9)
    taken = []

    def record(traj):
        if not traj.is_boundary()[0]:
            taken.append(int(traj.action[0]))

    dynamic_episode_driver.DynamicEpisodeDriver(
        tf_py_environment.TFPyEnvironment(single), agent.policy, num_episodes=2, observers=[record]).run()
    assert len(taken) == 8 and set(taken) <= {0, 1, 2}
    np.testing.assert_array_equal(single.gym_env.received, np.array(taken) + 5)


def test_multi_discrete_start_actions_are_indices_shifted_for_gymnasium():
    space = gym.spaces.MultiDiscrete([3, 2], start=[5, -1])
    env = GymnasiumEnvironment(_StartEnv(space), seed=0)
    np.testing.assert_array_equal(env.action_spec().minimum, [0, 0])
    np.testing.assert_array_equal(env.action_spec().maximum, [2, 1])
    env.reset()
    env.step(np.array([2, 0]))
    inner = GymnasiumEnvironment(_StartEnv(space), seed=1)
    batched = BatchedGymnasiumEnvironment([inner])
    batched.reset()
    batched.step(np.array([[0, 1]]))
    np.testing.assert_array_equal(env.gym_env.received, [[7, -1]])
    np.testing.assert_array_equal(inner.gym_env.received, [[5, 0]])
