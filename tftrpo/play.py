"""tftrpo-play: run an exported policy (a PolicySaver SavedModel) in its environment.

    tftrpo-play savedmodels/InvertedPendulum-v5-shipped --episodes 5
    tftrpo-play savedmodels/Hopper-v5-shipped --episodes 1 --video hopper.gif
    tftrpo-play savedmodels/Hopper-v5-shipped --episodes 1 --video hopper.mp4   # pip install "tftrpo[video]"

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

__all__ = ["load_policy", "run_episodes", "check_policy_fits", "check_video_path", "write_video", "main"]

VIDEO_FPS = 30


def check_video_path(path: str) -> None:
    """Raises ValueError unless `path` is a .gif, or an .mp4 with imageio's ffmpeg plugin installed
    (the `video` extra), before any episode runs."""
    import importlib.util

    extension = os.path.splitext(path)[1].lower()
    if extension not in (".gif", ".mp4"):
        raise ValueError(f"--video {path}: the file must end in .gif or .mp4")
    if extension == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ValueError(f"--video {path}: writing .mp4 needs imageio's ffmpeg plugin "
                         "(pip install \"tftrpo[video]\"); a .gif needs nothing more")


def write_video(path: str, frames: list, fps: int = VIDEO_FPS) -> None:
    """Writes RGB `frames` to an .mp4 (ffmpeg) at `fps` frames per second, or to a looping .gif
    whose frames last 1/fps s to GIF's resolution of 10 ms (30 ms at 30 fps). (imageio's pillow
    plugin takes durations in milliseconds: a duration of 1/30 was a 0 ms frame, which viewers
    play as fast as they can or at their own default.)"""
    import imageio

    if os.path.splitext(path)[1].lower() == ".gif":
        imageio.mimsave(path, frames, duration=10 * round(100 / fps), loop=0)
    else:
        imageio.mimsave(path, frames, fps=fps)


def check_policy_fits(action_fn, env) -> None:
    """Raises ValueError if the SavedModel's observation input does not take `env`'s observations
    or its actions are not `env`'s (a policy exported for another environment)."""
    import tensorflow as tf

    inputs = action_fn.structured_input_signature[1].values()
    expected = next((s for s in inputs if s.name == "0/observation"), None)
    if expected is None:  # not a PolicySaver export of a single observation tensor: nothing to compare
        return
    spec = env.observation_spec()
    if not (expected.shape[1:].is_compatible_with(spec.shape) and expected.dtype == tf.as_dtype(spec.dtype)):
        raise ValueError(f"the policy takes observations of shape {expected.shape[1:].as_list()} and dtype "
                         f"{expected.dtype.name}, but the env gives {list(spec.shape)} {tf.as_dtype(spec.dtype).name}: "
                         "was it exported for another env? (pass the right --env)")
    action = action_fn.structured_outputs.get("action")
    spec = env.action_spec()
    if isinstance(action, tf.TensorSpec) and not (action.shape[1:].is_compatible_with(spec.shape)
                                                  and action.dtype == tf.as_dtype(spec.dtype)):
        raise ValueError(f"the policy's actions have shape {action.shape[1:].as_list()} and dtype {action.dtype.name}, "
                         f"but the env takes {list(spec.shape)} {tf.as_dtype(spec.dtype).name}: "
                         "was it exported for another env? (pass the right --env)")


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
                if frames is not None:
                    frames.append(env.render())  # the state the episode ended in
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
    if args.video:
        try:
            check_video_path(args.video)
        except ValueError as e:
            parser.error(str(e))
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
    import gymnasium as gym
    from tftrpo.envs import load

    try:
        env = load(env_id, seed=args.seed, render_mode="rgb_array" if args.video else None)
        check_policy_fits(action_fn, env)
    except (ValueError, TypeError, ImportError, gym.error.Error) as e:
        # unknown ids, unsupported spaces, missing extras (gymnasium's DependencyNotInstalled), another env's policy
        print(f"tftrpo-play: error: {e}", file=sys.stderr)
        return 2
    frames = [] if args.video else None
    returns = run_episodes(action_fn, env, 1, frames) if args.video else []
    returns += run_episodes(action_fn, env, args.episodes - len(returns))
    if args.video:
        write_video(args.video, frames)
        print(f"video of episode 1 written to {args.video}")
    for i, ret in enumerate(returns, 1):
        print(f"episode {i}: return {ret:.1f}")
    mean = sum(returns) / len(returns)
    std = (sum((r - mean) ** 2 for r in returns) / len(returns)) ** 0.5
    print(f"{env_id}: mean return {mean:.1f} ± {std:.1f} over {len(returns)} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
