"""tftrpo-play: run an exported policy (a PolicySaver SavedModel) in its environment.

    tftrpo-play savedmodels/InvertedPendulum-v5-shipped --episodes 5
    tftrpo-play savedmodels/Hopper-v5-shipped --episodes 1 --video hopper.gif

The policy is loaded with plain TensorFlow through its `action` signature, as a
deployment would; tftrpo only provides the Gymnasium environment. The env id is
read from the export's tftrpo_run.json unless --env is given.
"""
import argparse
import json
import os
import sys
from typing import List, Optional

from tftrpo.console import quiet_startup

__all__ = ["load_policy", "run_episodes", "main"]


def load_policy(export_dir: str):
    """The SavedModel's serving `action` function: dict of tensors in, {'action': …} out."""
    import tensorflow as tf
    import tensorflow_probability  # noqa: F401  registers the distribution type specs

    if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        raise FileNotFoundError(f"{export_dir} is not a SavedModel directory (no saved_model.pb)")
    return tf.saved_model.load(export_dir).signatures["action"]


def run_episodes(action_fn, env, episodes: int, frames: Optional[list] = None) -> List[float]:
    """Returns of `episodes` episodes of `env` (a tftrpo GymnasiumEnvironment) under `action_fn`."""
    import numpy as np
    import tensorflow as tf

    returns = []
    for _ in range(episodes):
        time_step = env.reset()
        total = 0.0
        while True:
            if frames is not None:
                frames.append(env.render())
            out = action_fn(**{
                "0/step_type": tf.constant([time_step.step_type], tf.int32),
                "0/reward": tf.constant([time_step.reward], tf.float32),
                "0/discount": tf.constant([time_step.discount], tf.float32),
                "0/observation": tf.constant(np.asarray(time_step.observation)[None]),
            })
            time_step = env.step(out["action"].numpy()[0])
            total += float(time_step.reward)
            if time_step.is_last():
                break
        returns.append(total)
    return returns


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tftrpo-play", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", help="a SavedModel written by tftrpo-train or PolicySaver")
    parser.add_argument("--env", help="Gymnasium env id (default: from the export's tftrpo_run.json)")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--video", help="write the first episode to this .gif or .mp4")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    quiet_startup()

    env_id = args.env
    metadata = os.path.join(args.export_dir, "tftrpo_run.json")
    if env_id is None:
        if not os.path.exists(metadata):
            print(f"tftrpo-play: error: {metadata} not found; pass --env", file=sys.stderr)
            return 2
        with open(metadata) as f:
            env_id = json.load(f)["env"]
    try:
        action_fn = load_policy(args.export_dir)
    except (FileNotFoundError, OSError) as e:
        print(f"tftrpo-play: error: {e}", file=sys.stderr)
        return 2

    if args.video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering (GPU or Mesa)
    from tftrpo.envs import load

    try:
        env = load(env_id, seed=args.seed, render_mode="rgb_array" if args.video else None)
    except (ValueError, TypeError, ImportError) as e:  # unknown ids, unsupported spaces, missing extras
        print(f"tftrpo-play: error: {e}", file=sys.stderr)
        return 2
    frames = [] if args.video else None
    returns = run_episodes(action_fn, env, 1, frames) if args.video else []
    returns += run_episodes(action_fn, env, args.episodes - len(returns))
    if args.video:
        import imageio

        imageio.mimsave(args.video, frames, **({"duration": 1 / 30} if args.video.endswith(".gif") else {"fps": 30}))
        print(f"video of episode 1 written to {args.video}")
    for i, ret in enumerate(returns, 1):
        print(f"episode {i}: return {ret:.1f}")
    mean = sum(returns) / len(returns)
    std = (sum((r - mean) ** 2 for r in returns) / len(returns)) ** 0.5
    print(f"{env_id}: mean return {mean:.1f} ± {std:.1f} over {len(returns)} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
