"""Simulator snapshot/restore for vine sampling (tftrpo.sampling.env_state)."""

import gymnasium as gym
import numpy as np
import pytest

from tftrpo.envs import GymnasiumEnvironment, load
from tftrpo.sampling import env_state
from tftrpo.sampling.env_state import UnsupportedEnvError

FIRST, LAST = 0, 2

# (env_id, load kwargs, warm-up steps, replayed steps, a reset must happen
# inside the replayed steps).
CASES = [
    ('Hopper-v5', dict(max_episode_steps=15), 5, 30, True),
    ('InvertedPendulum-v5', {}, 3, 30, True),  # random actions drop it
    ('Ant-v5', {}, 5, 10, False),  # reads xpos before stepping
    ('CartPole-v1', dict(max_episode_steps=12), 4, 30, True),
    ('Pendulum-v1', dict(max_episode_steps=15), 5, 30, True),
    ('ALE/Pong-v5', dict(max_episode_steps=20), 30, 50, True),
    ('ALE/Pong-v5', {}, 30, 50, False),  # sticky actions only
]
IDS = ['-'.join([c[0]] + [f'{k}={v}' for k, v in c[1].items()]) for c in CASES]


def _actions(env, rng, n):
    spec = env.action_spec()
    if np.issubdtype(spec.dtype, np.integer):
        return [np.asarray(rng.integers(spec.minimum, spec.maximum + 1), spec.dtype) for _ in range(n)]
    return [rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype) for _ in range(n)]


def _rollout(env, actions):
    out = []
    for a in actions:
        t = env.step(a)
        out.append((np.array(t.observation), np.array(t.reward), np.array(t.step_type), np.array(t.discount)))
    return out


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for s, t in zip(a, b) for x, y in zip(s, t))


def _setup(env_id, kwargs, warmup, seed=0):
    env = load(env_id, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    env.reset()
    _rollout(env, _actions(env, rng, warmup))
    return env, rng


def _step_types(traj):
    return [int(s[2]) for s in traj]


@pytest.mark.parametrize('env_id,kwargs,warmup,n,has_reset', CASES, ids=IDS)
def test_restore_replays_bit_for_bit(env_id, kwargs, warmup, n, has_reset):
    env, rng = _setup(env_id, kwargs, warmup)
    actions = _actions(env, rng, n)
    before = env.current_time_step()
    state = env_state.snapshot(env)
    first = _rollout(env, actions)

    restored = env_state.restore(env, state)
    assert _same([restored], [before])
    second = _rollout(env, actions)
    assert _same(first, second)

    # The snapshot is not consumed: restoring it again replays again.
    env_state.restore(env, state)
    third = _rollout(env, actions)
    assert _same(first, third)

    types = _step_types(first)
    if has_reset:  # an episode ended and a new one (reset noise) started
        last = types.index(LAST)
        assert last < n - 1 and types[last + 1] == FIRST, types
    else:
        assert LAST not in types, types


@pytest.mark.parametrize('env_id,kwargs,warmup,n,has_reset', CASES, ids=IDS)
def test_other_actions_give_other_trajectory(env_id, kwargs, warmup, n, has_reset):
    del has_reset
    env, rng = _setup(env_id, kwargs, warmup)
    state = env_state.snapshot(env)
    first = _rollout(env, _actions(env, rng, n))
    env_state.restore(env, state)
    other = _rollout(env, _actions(env, rng, n))
    assert not _same(first, other)


@pytest.mark.parametrize(
    'env_id,kwargs,warmup,n',
    [c[:4] for c in CASES if c[4] and 'ALE' not in c[0]],
    ids=[i for c, i in zip(CASES, IDS) if c[4] and 'ALE' not in c[0]],
)
def test_reset_noise_comes_from_the_restored_rng(env_id, kwargs, warmup, n):
    # Without the restored np_random the replay matches up to the episode end
    # and differs from the reset on: the replay test above checks the RNG.
    env, rng = _setup(env_id, kwargs, warmup)
    actions = _actions(env, rng, n)
    state = env_state.snapshot(env)
    first = _rollout(env, actions)
    env_state.restore(env, state)
    env_state.set_rng(env, 12345)
    reseeded = _rollout(env, actions)
    last = _step_types(first).index(LAST)
    assert _same(first[: last + 1], reseeded[: last + 1])
    assert not np.array_equal(first[last + 1][0], reseeded[last + 1][0])


@pytest.mark.parametrize('env_id,steps', [('CartPole-v1', 12), ('Hopper-v5', 6)])
def test_snapshot_at_episode_end_auto_resets_after_restore(env_id, steps):
    env, rng = _setup(env_id, dict(max_episode_steps=steps), steps)
    assert env.current_time_step().is_last()
    state = env_state.snapshot(env)
    actions = _actions(env, rng, 3)
    first = _rollout(env, actions)
    assert _step_types(first) == [FIRST, 1, 1]  # TF-Agents auto-reset
    assert env_state.restore(env, state).is_last()
    assert _same(first, _rollout(env, actions))


def test_atari_step_ending_inside_frame_skip_uses_restored_buffers():
    # ALE's own truncation stops a step inside AtariPreprocessing's frame
    # skip, before both max-pool buffers are refreshed: that observation is
    # pooled from the buffers the previous step left, i.e. wrapper state.
    kwargs = dict(max_num_frames_per_episode=120)
    env, _ = _setup('ALE/Pong-v5', kwargs, 0)
    actions = _actions(env, np.random.default_rng(1), 40)
    end = _step_types(_rollout(env, actions)).index(LAST)
    env, _ = _setup('ALE/Pong-v5', kwargs, 0)
    _rollout(env, actions[:end])
    state = env_state.snapshot(env)
    first = _rollout(env, actions[end:])
    assert _step_types(first)[:2] == [LAST, FIRST]
    env_state.restore(env, state)
    assert _same(first, _rollout(env, actions[end:]))


@pytest.mark.parametrize(
    'env_id,kwargs',
    [
        ('CartPole-v1', dict(max_episode_steps=12)),
        ('ALE/Pong-v5', dict(max_episode_steps=20)),
    ],
)
def test_common_random_numbers_across_branches(env_id, kwargs):
    env, rng = _setup(env_id, kwargs, 5)
    state = env_state.snapshot(env)
    actions = _actions(env, rng, 30)

    def branch(seed=None):
        env_state.restore(env, state)
        if seed is not None:
            env_state.set_rng(env, seed)
        return _rollout(env, actions)

    trunk = branch()
    # Restoring alone: every branch sees the trunk's env noise.
    assert all(_same(trunk, branch()) for _ in range(2))
    # set_rng after restore: branches share a noise that differs from trunk's.
    b1, b2, b3 = branch(7), branch(7), branch(8)
    assert _same(b1, b2)
    assert not _same(b1, trunk)
    assert not _same(b1, b3)


def test_raw_gymnasium_env():
    env = gym.make('CartPole-v1', max_episode_steps=10)
    obs, _ = env.reset(seed=3)
    for _ in range(4):
        obs, *_ = env.step(env.action_space.sample())
    state = env_state.snapshot(env, observation=obs)
    actions = [i % 2 for i in range(25)]

    def run():
        out = []
        for a in actions:
            o, r, term, trunc, _ = env.step(a)
            if term or trunc:
                o, _ = env.reset()
            out.append((o, np.array(r), np.array(term), np.array(trunc)))
        return out

    first = run()
    assert np.array_equal(env_state.restore(env, state), obs)
    assert _same(first, run())


def test_restore_into_a_different_env_fails():
    state = env_state.snapshot(load('CartPole-v1', seed=0))
    with pytest.raises(ValueError, match='cannot be restored'):
        env_state.restore(load('Pendulum-v1', seed=0), state)
    # Two Atari games share their wrapper chain; the snapshot knows its game.
    pong = load('ALE/Pong-v5', seed=0)
    pong.reset()
    with pytest.raises(ValueError, match=r"snapshot of game \('pong', .*cannot be restored into \('breakout'"):
        env_state.restore(load('ALE/Breakout-v5', seed=0), env_state.snapshot(pong))


class _CoinEnv(gym.Env):
    """A custom env whose state no handler knows about."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.heads = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.heads += int(self.np_random.integers(2))
        return np.full(1, self.heads % 2, np.float32), 1.0, False, False, {}


class _CountingWrapper(gym.Wrapper):
    """A wrapper holding state (a step counter) that affects observations."""

    def __init__(self, env):
        super().__init__(env)
        self.count = 0

    def step(self, action):
        self.count += 1
        obs, r, term, trunc, info = self.env.step(action)
        return obs + self.count, r, term, trunc, info


class _StatefulClip(gym.wrappers.ClipAction):
    """A subclass of an allow-listed wrapper that adds state."""

    def action(self, action):
        self.calls = getattr(self, 'calls', 0) + 1
        return super().action(action)


def test_unsupported_env_raises_up_front():
    for env in (_CoinEnv(), GymnasiumEnvironment(_CoinEnv())):
        with pytest.raises(UnsupportedEnvError, match=r'_CoinEnv.*simulator state restore.*vine'):
            env_state.check_supported(env)
    with pytest.raises(UnsupportedEnvError):
        env_state.snapshot(GymnasiumEnvironment(_CoinEnv()))
    with pytest.raises(NotImplementedError):  # UnsupportedEnvError is one
        env_state.set_rng(_CoinEnv(), 0)


def test_unknown_stateful_wrapper_raises():
    env = GymnasiumEnvironment(_CountingWrapper(gym.make('CartPole-v1')))
    with pytest.raises(UnsupportedEnvError, match=r"'CartPole-v1'.*_CountingWrapper.*register_wrapper"):
        env_state.check_supported(env)
    subclassed = _StatefulClip(gym.make('Pendulum-v1'))  # exact types only
    with pytest.raises(UnsupportedEnvError, match='_StatefulClip'):
        env_state.check_supported(subclassed)
    with pytest.raises(TypeError, match='GymnasiumEnvironment or a gymnasium'):
        env_state.check_supported(object())


def test_registering_a_wrapper_makes_it_restorable():
    env = GymnasiumEnvironment(_CountingWrapper(gym.make('CartPole-v1', max_episode_steps=8)), seed=1)
    env.reset()
    env_state.register_wrapper(_CountingWrapper, lambda w: w.count, lambda w, c: setattr(w, 'count', c))
    try:
        state = env_state.snapshot(env)
        actions = [np.asarray(i % 2, np.int64) for i in range(12)]
        first = _rollout(env, actions)
        env_state.restore(env, state)
        assert _same(first, _rollout(env, actions))
    finally:
        env_state._WRAPPER_STATE.pop(_CountingWrapper)  # pylint: disable=protected-access


@pytest.mark.parametrize('warmup', [9, 13], ids=['at-episode-end', 'mid-episode'])
@pytest.mark.parametrize('env_id', ['Hopper-v5', 'CartPole-v1'])
def test_a_pickled_environment_snapshot_continues_a_fresh_batched_tf_env(env_id, warmup):
    """`snapshot_environment` of a TFPyEnvironment over `load_batched` envs, pickled, restored
    into one made afresh with another seed: the same actions give the same time steps, bit for
    bit, across episode ends and auto-resets (what a training run's checkpoint relies on)."""
    import pickle

    from tf_agents.environments import tf_py_environment

    from tftrpo.envs import load_batched

    def make(seed):
        return tf_py_environment.TFPyEnvironment(load_batched(env_id, 2, seed=seed, max_episode_steps=9))

    rng = np.random.default_rng(0)
    env = make(1)
    spec = env.action_spec()

    def actions(n):
        if spec.dtype.is_integer:
            return [rng.integers(spec.minimum, spec.maximum + 1, size=(2,)).astype(spec.dtype.as_numpy_dtype)
                    for _ in range(n)]
        return [rng.uniform(spec.minimum, spec.maximum, (2,) + spec.shape).astype(np.float32) for _ in range(n)]

    def steps(tf_env, acts):
        return [[np.array(x) for x in tf_env.step(a)] for a in acts]

    env.reset()
    warm = steps(env, actions(warmup))  # 9: the time limit's LAST step; 13: mid-episode after an auto-reset
    assert (warm[-1][0] == LAST).all() if warmup == 9 else not (warm[-1][0] == LAST).any()
    blob = pickle.dumps(env_state.snapshot_environment(env))
    at_snapshot = [np.array(x) for x in env.current_time_step()]
    replay = actions(25)
    expected = steps(env, replay)
    fresh = make(7)
    fresh.reset()
    env_state.restore_environment(fresh, pickle.loads(blob))
    for x, y in zip(at_snapshot, fresh.current_time_step()):
        np.testing.assert_array_equal(x, np.array(y))
    got = steps(fresh, replay)
    assert sum(int(np.sum(s[0] == LAST)) for s in expected) >= 2  # episodes end inside the replay
    for a, b in zip(expected, got):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
