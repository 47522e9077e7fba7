"""Raw Gymnasium stepping loops shared by both venvs' stepping workers (gymnasium + numpy only)."""
import time


def gym_single(env_id, steps, seed=0):
    """`steps` steps of one `gymnasium.make(env_id)` with uniform random actions drawn
    beforehand (as for the batched measurements, so none of them times action sampling),
    resetting on termination/truncation. Returns (seconds, episodes)."""
    import gymnasium as gym
    import numpy as np

    env = gym.make(env_id)
    env.reset(seed=seed)
    space = env.action_space
    actions = np.random.default_rng(seed).uniform(space.low, space.high,
                                                  size=(steps + 200,) + space.shape).astype(space.dtype)
    for i in range(200):  # warm-up
        _, _, term, trunc, _ = env.step(actions[steps + i])
        if term or trunc:
            env.reset()
    episodes = 0
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(actions[i])
        if term or trunc:
            env.reset()
            episodes += 1
    seconds = time.perf_counter() - t0
    env.close()
    return seconds, episodes
