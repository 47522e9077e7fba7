"""tftrpo-train: train a TRPO policy on a Gymnasium task, end to end.

    tftrpo-train                                   # the built-in default: InvertedPendulum-v5
    tftrpo-train --env Hopper-v5 --steps 1000000 --seed 1
    tftrpo-train --env CartPole-v1 --max-kl 0.02 --run-dir runs/cp
    tftrpo-train --run-dir runs/cp --resume        # continue a run exactly where it stopped

A run directory holds config.json, TensorBoard logs (tensorboard/), checkpoints
(checkpoints/, written by TF-Agents' Checkpointer every --checkpoint-interval iterations
and at the end, each with a run-state-N.pkl of the envs' and sampler's state, so that
--resume continues bit for bit where env_state can snapshot the envs), progress.csv and
learning_curve.png. At the end the greedy policy is exported with PolicySaver to
savedmodels/<run>/ (observation normalisation included).
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from typing import List, Optional

from tftrpo import presets
from tftrpo.console import quiet_startup

PROGRESS_FIELDS = ["iteration", "env_steps", "trunk_steps", "branch_steps", "train_return", "train_episode_length", "eval_return",
                   "kl", "surrogate_improvement", "line_search_backtracks", "step_rejected", "entropy",
                   "value_loss", "explained_variance", "steps_per_second", "wall_time"]


class UsageError(Exception):
    """A problem with the command line or the run directory, reported without a traceback."""


# ------------------------------------------------------------------------ CLI
def _parse_tuple(text):
    try:
        widths = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tftrpo-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default=None, help=f"Gymnasium env id (default {presets.DEFAULT_ENV})")
    parser.add_argument("--seed", type=int, default=None, help="random seed of weights, policy noise, envs and minibatches (default 0): the same seed repeats a run exactly on the same machine")
    parser.add_argument("--run-dir", default=None, help="run directory (default runs/<env>-seed<seed>)")
    parser.add_argument("--export-dir", default=None, help="SavedModel directory (default savedmodels/<run>)")
    parser.add_argument("--sampling", choices=["single_path", "vine"], default=None,
                        help="sampling scheme of the paper (Section 5; default single_path)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow's intra- and inter-op threads (default: TensorFlow's, one per core); "
                             "float sums depend on it, so a seed repeats a run exactly only with the same "
                             "count. The benchmarks run with --threads 1")
    group = parser.add_argument_group("hyperparameters (defaults: the env family's preset)")
    for field in dataclasses.fields(presets.TRPOConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in (bool, "bool"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif field.name == "hidden_layers":
            group.add_argument(flag, type=_parse_tuple, default=None, help="e.g. 64,64")
        elif field.name == "conv_layers":
            continue
        else:
            kind = {int: int, float: float, str: str}.get(field.type, None) or \
                {"int": int, "float": float, "str": str}[field.type]
            group.add_argument(flag, type=kind, default=None)
    # Python 3.11's argparse takes "-1e-3" for an option ("--max-kl: expected one argument");
    # with scientific notation counted as a negative number the value reaches our own checks.
    parser._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    return parser


def _overrides(args) -> dict:
    names = {f.name for f in dataclasses.fields(presets.TRPOConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _check_positive(config: presets.TRPOConfig):
    for name in ("steps", "num_envs", "steps_per_env", "eval_interval", "eval_episodes", "checkpoint_interval"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.steps_per_env < 2:
        raise UsageError("--steps-per-env must be >= 2")
    for name in ("policy_output_gain", "value_adam_epsilon", "value_learning_rate"):
        if not 0 < getattr(config, name) < math.inf:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0 and finite, got {getattr(config, name)}")
    if not 0 <= config.value_output_gain < math.inf:
        raise UsageError(f"--value-output-gain must be >= 0 and finite (0: TF-Agents' head), got "
                         f"{config.value_output_gain}")


def _in_flag_terms(error: Exception) -> str:
    """An agent's complaint as the command line's: `max_kl` becomes `--max-kl`, without the
    class prefix and the line gin appends ("In call to configurable 'TRPOAgent' ...")."""
    message = str(error).split("\n  In call to configurable")[0]
    message = re.sub(r"^TRPOAgent: ", "", message)
    for field in dataclasses.fields(presets.TRPOConfig):
        if "_" in field.name:  # plain words ("steps") may be prose
            message = re.sub(rf"\b{field.name}\b", "--" + field.name.replace("_", "-"), message)
    return message


# ------------------------------------------------------------------- run dir
# Flags that only one sampling scheme reads: given with the other, they would be ignored.
_VINE_ONLY = ("vine_states", "vine_actions_per_state", "vine_rollout_length", "vine_trunk_steps", "vine_branch_envs")
_SINGLE_PATH_ONLY = ("num_envs", "steps_per_env", "numpy_policy")


def _resolve_run(args):
    """(env_id, seed, sampling, config, run_dir, export_dir), checking the run directory.

    A new run's config.json records both directories as absolute paths, so `--resume` from
    another working directory finds (and replaces) the same export."""
    if args.resume:
        return _resolve_resumed_run(args)

    env_id = args.env or presets.DEFAULT_ENV
    seed = 0 if args.seed is None else args.seed
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be in [0, 2**32), got {seed}")
    sampling = args.sampling or "single_path"
    other_scheme = _SINGLE_PATH_ONLY if sampling == "vine" else _VINE_ONLY
    ignored = ["--" + name.replace("_", "-") for name in other_scheme if getattr(args, name) is not None]
    if ignored:
        raise UsageError(f"{', '.join(ignored)} {'applies' if len(ignored) == 1 else 'apply'} to "
                         f"{'single-path' if sampling == 'vine' else 'vine'} sampling, not to this "
                         f"{sampling.replace('_', '-')} run")
    _check_env_id(env_id)
    try:
        config = presets.preset(env_id, **_overrides(args))
    except ValueError as e:
        raise UsageError(str(e))
    name = f"{env_id.replace('/', '_')}-{'vine-' if sampling == 'vine' else ''}seed{seed}"
    run_dir = os.path.abspath(args.run_dir or os.path.join("runs", name))
    export_dir = os.path.abspath(args.export_dir or os.path.join("savedmodels", os.path.basename(run_dir)))
    if os.path.realpath(run_dir) == os.path.realpath(export_dir) or \
            os.path.realpath(run_dir).startswith(os.path.realpath(export_dir) + os.sep):
        raise UsageError(f"--export-dir {export_dir} would hold the run directory {run_dir}, and the export "
                         "replaces it at the end: choose an export directory outside the run directory")
    for path, what in ((run_dir, "run directory"), (export_dir, "export directory")):
        if os.path.exists(path) and os.listdir(path):
            raise UsageError(f"{what} {path} already exists and is not empty; pass --resume --run-dir {run_dir} "
                             "to continue that run, or choose another --run-dir / --export-dir")
    return env_id, seed, sampling, config, run_dir, export_dir


def _resolve_resumed_run(args):
    if not args.run_dir:
        raise UsageError("--resume needs --run-dir (the run to continue)")
    config_path = os.path.join(args.run_dir, "config.json")
    if not os.path.exists(config_path):
        raise UsageError(f"nothing to resume: {config_path} does not exist")
    with open(config_path) as f:
        saved = json.load(f)
    given = [flag for flag, value in (("--env", args.env), ("--seed", args.seed), ("--sampling", args.sampling),
                                      ("--export-dir", args.export_dir)) if value is not None]
    given += ["--" + name.replace("_", "-") for name in sorted(_overrides(args)) if name != "steps"]
    if given:
        raise UsageError("--resume continues the run as configured in its config.json; of its settings only "
                         f"--steps may be given with it (got {', '.join(given)})")
    if args.threads is None:  # the run's own thread pools, so that it continues bit for bit
        args.threads = saved.get("threads")
    elif args.threads != saved.get("threads"):
        print(f"tftrpo-train: the run was made with --threads {saved.get('threads') or 'unset'}; with "
              f"--threads {args.threads} it continues, but not bit for bit", file=sys.stderr, flush=True)
    config_fields = dict(saved["config"])
    known = {field.name: field for field in dataclasses.fields(presets.TRPOConfig)}
    unknown = sorted(set(config_fields) - set(known))
    if unknown:
        raise UsageError(f"{config_path} has settings this tftrpo does not know ({', '.join(unknown)}): it was "
                         "written by another version; resume it with that version")
    defaulted = [name for name in known if name not in config_fields]
    if defaulted:  # an older tftrpo's run: settings added since take today's defaults
        default = presets.TRPOConfig()
        print(f"tftrpo-train: {config_path} (an older tftrpo's) has no "
              + ", ".join(f"{name} (today's default {getattr(default, name)!r} applies)" for name in defaulted),
              file=sys.stderr, flush=True)
    config_fields["hidden_layers"] = tuple(config_fields.get("hidden_layers", presets.TRPOConfig.hidden_layers))
    if config_fields.get("conv_layers"):
        config_fields["conv_layers"] = tuple(tuple(c) for c in config_fields["conv_layers"])
    if args.steps is not None and args.steps != config_fields.get("steps"):
        config_fields["steps"] = args.steps
        # The new budget is the run's from now on: a later plain --resume keeps it.
        _write_json_atomically(config_path, dict(saved, config=dict(saved["config"], steps=args.steps)))
    config = presets.TRPOConfig(**config_fields)
    # Runs of earlier tftrpo versions recorded the export relative to the directory they started in.
    run_dir, export_dir = os.path.abspath(args.run_dir), os.path.abspath(saved["export_dir"])
    if os.path.exists(export_dir) and os.listdir(export_dir) and not _is_export_of(export_dir, run_dir):
        raise UsageError(f"the run's export directory {export_dir} holds something other than this run's export "
                         f"(a run recorded with a relative path resolves it against the working directory: "
                         f"resume from the directory the run started in, or move {export_dir} away)")
    return saved["env"], saved["seed"], saved["sampling"], config, run_dir, export_dir


def _is_export_of(export_dir, run_dir) -> bool:
    """Whether `export_dir` holds an earlier export of the run in `run_dir` (its tftrpo_run.json)."""
    try:
        with open(os.path.join(export_dir, "tftrpo_run.json")) as f:
            recorded = json.load(f)["run_dir"]
    except (OSError, ValueError, KeyError):
        return False
    return os.path.realpath(recorded) == os.path.realpath(run_dir)


def _write_json_atomically(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def _check_env_id(env_id):
    from tftrpo.envs import registry

    try:
        registry.check_env_id(env_id)
    except ValueError as e:
        raise UsageError(str(e))


# ---------------------------------------------------------------------- train
def make_agent(config: presets.TRPOConfig, tf_env, train_step, **agent_overrides):
    """The TRPOAgent a run of `config` trains on `tf_env`: the preset's networks and settings
    (`agent_overrides`: other `TRPOAgent` keyword arguments, e.g. `jit_compile=False`)."""
    import tensorflow as tf

    from tftrpo import TRPOAgent, networks

    keras_helpers = (tf.keras.activations.get, tf.keras.activations.serialize, tf.keras.activations.deserialize)
    try:
        activation = tf.keras.activations.get(config.activation)
    except ValueError:
        activation = None
    if activation is None or any(activation is helper for helper in keras_helpers):  # names of the module's helpers
        raise ValueError(f"--activation: {config.activation!r} is not a Keras activation (e.g. tanh, relu, elu)")
    obs_spec, action_spec = tf_env.observation_spec(), tf_env.action_spec()
    actor_net = networks.actor_network(obs_spec, action_spec, config.hidden_layers, config.conv_layers,
                                       activation_fn=activation, output_gain=config.policy_output_gain)
    value_net = networks.value_network(obs_spec, config.hidden_layers, config.conv_layers, activation_fn=activation,
                                       output_gain=config.value_output_gain)
    optimizer = tf.keras.optimizers.Adam(config.value_learning_rate, epsilon=config.value_adam_epsilon)
    return TRPOAgent(tf_env.time_step_spec(), action_spec, actor_net, value_net, optimizer, train_step_counter=train_step,
                     **{**config.agent_kwargs(), **agent_overrides})


def run(args) -> dict:
    env_id, seed, sampling, config, run_dir, export_dir = _resolve_run(args)
    args.resolved_run_dir = run_dir  # for main's message if the run is interrupted
    _check_positive(config)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")

    import numpy as np
    import tensorflow as tf

    if args.threads is not None:  # before any op runs: TensorFlow fixes its pools then
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from tf_agents.drivers import dynamic_episode_driver
    from tf_agents.environments import tf_py_environment
    from tf_agents.metrics import tf_metrics
    from tf_agents.policies import policy_saver
    from tf_agents.utils import common

    from tftrpo.envs import load, load_batched
    from tftrpo.plotting import plot_learning_curve
    from tftrpo.sampling import env_state
    from tftrpo.sampling.single_path import SinglePathCollector
    from tftrpo.sampling.vine import VineCollector

    # Python's `random` too: Keras draws the seeds of unseeded initializers from it.
    tf.keras.utils.set_random_seed(seed)

    try:
        env = tf_py_environment.TFPyEnvironment(load_batched(env_id, num_envs=config.num_envs, seed=seed))
        eval_py_env = load(env_id)
        eval_env = tf_py_environment.TFPyEnvironment(eval_py_env)
    except (TypeError, ImportError) as e:  # unsupported spaces, missing optional dependencies
        raise UsageError(f"cannot use {env_id}: {e}")
    action_spec = env.action_spec()
    train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
    try:
        agent = make_agent(config, env, train_step)
    except ValueError as e:  # invalid hyperparameters
        raise UsageError(_in_flag_terms(e))

    env_steps = tf.Variable(0, dtype=tf.int64, name="env_steps")
    branch_steps = tf.Variable(0, dtype=tf.int64, name="branch_steps")
    if sampling == "vine":
        try:
            collector = VineCollector(
                lambda s: load(env_id, seed=s), agent.collect_policy, num_states=config.vine_states,
                actions_per_state=config.vine_actions_per_state or (None if _discrete(action_spec) else 4),
                rollout_length=config.vine_rollout_length, trunk_steps=config.vine_trunk_steps or None,
                discount=config.discount_factor, num_branch_envs=config.vine_branch_envs, seed=seed)
        except (env_state.UnsupportedEnvError, ValueError) as e:
            raise UsageError(f"vine sampling on {env_id}: {e}")
    else:
        # An explicit --numpy-policy insists on the mirror; the config's True means "where it can".
        numpy_policy = True if args.numpy_policy else (None if config.numpy_policy else False)
        try:
            collector = SinglePathCollector(env, agent.collect_policy, config.steps_per_env,
                                            numpy_policy=numpy_policy, seed=seed)
        except ValueError as e:  # --numpy-policy with a policy NumPy cannot mirror
            raise UsageError(str(e))

    def collect_and_train():
        """One iteration: (LossInfo, simulator steps, of which branch steps)."""
        if sampling == "vine":
            experience, stats = collector.collect()
            return agent.train(experience), stats.trunk_steps + stats.branch_steps, stats.branch_steps
        experience = collector.collect()
        return agent.train(experience), collector.last_env_steps, 0

    eval_return = tf_metrics.AverageReturnMetric(buffer_size=config.eval_episodes)
    evaluate_fn = common.function(dynamic_episode_driver.DynamicEpisodeDriver(
        eval_env, agent.policy, observers=[eval_return], num_episodes=config.eval_episodes).run)

    def evaluate(iteration, final=False):
        """Mean greedy return over fresh episodes whose env seed depends only on the run's seed
        and `iteration` (the final evaluation has its own): the same at this iteration in a run
        resumed from a checkpoint as in the uninterrupted run, whatever was evaluated before."""
        eval_py_env.seed(int(np.random.SeedSequence((seed, iteration), spawn_key=(2 if final else 1,)).generate_state(1)[0]))
        eval_return.reset()
        evaluate_fn(eval_env.reset())
        return float(eval_return.result())

    # The run directory is made only once the config has built an agent and a collector, so a
    # rejected command line leaves nothing behind that the next attempt would refuse to overwrite.
    os.makedirs(run_dir, exist_ok=True)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    resume = args.resume and _has_checkpoint(ckpt_dir)
    if args.resume and not resume:  # stopped before its first checkpoint: nothing of it to keep
        print(f"tftrpo-train: {run_dir} has no checkpoint yet (the run stopped before its first): it starts again "
              "from its beginning", file=sys.stderr, flush=True)
        shutil.rmtree(os.path.join(run_dir, "tensorboard"), ignore_errors=True)
    if not args.resume:
        _write_json_atomically(os.path.join(run_dir, "config.json"), {
            "env": env_id, "seed": seed, "run_dir": run_dir, "export_dir": export_dir, "sampling": sampling,
            "threads": args.threads, "config": dataclasses.asdict(config)})
    checkpointer = _checkpointer(run_dir, resume, agent=agent, train_step=train_step,
                                 env_steps=env_steps, branch_steps=branch_steps)
    if resume:
        state = _load_run_state(ckpt_dir, int(train_step.numpy()))
        if state is None:
            print("tftrpo-train: this checkpoint has no saved env and sampler state (a run from an older "
                  "tftrpo): the run continues, with its episodes restarted", file=sys.stderr, flush=True)
        else:
            try:
                envs_restored = collector.set_state(state["collector"])
            except (ValueError, TypeError, KeyError) as e:
                raise UsageError(f"cannot restore the envs' and sampler's state saved with the checkpoint in "
                                 f"{ckpt_dir} ({type(e).__name__}: {e})")
            if not envs_restored:
                print(f"tftrpo-train: {env_id}'s envs cannot be snapshotted (tftrpo.sampling.env_state): they "
                      "restart their episodes from the run's seeds, so this resumed run is not bit for bit the "
                      "uninterrupted one", file=sys.stderr, flush=True)

    def save_checkpoint():
        """The run's state after this iteration: the envs, the sampler's RNG and episodes (a
        pickle, first) and the agent and counters (TF-Agents' Checkpointer, after)."""
        _save_run_state(ckpt_dir, int(train_step.numpy()), {"collector": collector.get_state()})
        checkpointer.save(train_step)
        _prune_run_states(ckpt_dir)
    progress_csv = os.path.join(run_dir, "progress.csv")
    _truncate_progress(progress_csv, int(train_step.numpy()))
    writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))

    bar = _progress_bar(config.steps, int(env_steps.numpy()), env_id, args.no_progress)
    last_eval = None
    start = time.time()

    def batch_steps():
        """An iteration's simulator steps, for the budget rule: single path's B·T slots; vine's
        mean so far (its bound, trunk + N·K·L, is several times what branches cut short by
        episode ends take), from counters the checkpoint holds, so a resume stops alike."""
        iterations = int(train_step.numpy())
        if sampling == "vine" and iterations:
            return int(env_steps.numpy()) / iterations
        return collector.simulator_steps_per_collect
    with writer.as_default():
        while another_iteration(int(env_steps.numpy()), config.steps, batch_steps()):
            t0 = time.time()
            info, iteration_steps, branch = collect_and_train()
            env_steps.assign_add(iteration_steps)
            branch_steps.assign_add(branch)
            extra = info.extra
            iteration = int(train_step.numpy())
            step = int(env_steps.numpy())
            steps_per_second = iteration_steps / (time.time() - t0)
            eval_value = None
            final = not another_iteration(step, config.steps, batch_steps())
            if iteration % config.eval_interval == 0 or final:
                eval_value = last_eval = evaluate(iteration)
                tf.summary.scalar("Metrics/EvalAverageReturn", eval_value, step=step)
            recent_return, recent_length = collector.recent_episodes()
            if recent_length == 0:  # no training episode has finished yet (each has >= 1 step): none to report
                recent_return = recent_length = None
            else:
                tf.summary.scalar("Metrics/AverageReturn", recent_return, step=step)
                tf.summary.scalar("Metrics/AverageEpisodeLength", recent_length, step=step)
            tf.summary.scalar("Metrics/StepsPerSecond", steps_per_second, step=step)
            if sampling == "vine":
                tf.summary.scalar("Vine/trunk_steps", step - int(branch_steps.numpy()), step=step)
                tf.summary.scalar("Vine/branch_steps", branch_steps, step=step)
            row = dict(iteration=iteration, env_steps=step, trunk_steps=step - int(branch_steps.numpy()),
                       branch_steps=int(branch_steps.numpy()),
                       train_return=recent_return, train_episode_length=recent_length,
                       eval_return=eval_value, kl=float(extra.kl),
                       surrogate_improvement=float(extra.actual_improvement),
                       line_search_backtracks=int(extra.line_search_backtracks),
                       step_rejected=int(bool(extra.step_rejected)), entropy=float(extra.entropy),
                       value_loss=float(extra.value_loss), explained_variance=float(extra.explained_variance),
                       steps_per_second=round(steps_per_second, 1), wall_time=round(time.time() - start, 2))
            _append_progress(progress_csv, row)
            if iteration % config.checkpoint_interval == 0 or final:
                save_checkpoint()
            _report(bar, row, last_eval)
    if bar is not None:
        bar.close()
    writer.flush()

    final_eval = evaluate(int(train_step.numpy()), final=True)
    for closable in (collector if sampling == "vine" else None, env, eval_env):
        if closable is not None:
            closable.close()
    if os.path.exists(export_dir):
        shutil.rmtree(export_dir)  # only ever our own export of this run (checked at start)
    policy_saver.PolicySaver(agent.policy, batch_size=None, train_step=train_step).save(export_dir)
    summary = {"env": env_id, "seed": seed, "sampling": sampling, "env_steps": int(env_steps.numpy()), "iterations": int(train_step.numpy()),
               # as TensorFlow reports them (0: its default, one thread per core)
               "tf_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                              "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
               "numpy_policy_collection": sampling != "vine" and collector.uses_numpy_policy,
               "final_eval_return": final_eval, "eval_episodes": config.eval_episodes,
               "wall_time_s": round(time.time() - start, 1), "run_dir": run_dir, "export_dir": export_dir}
    with open(os.path.join(export_dir, "tftrpo_run.json"), "w") as f:
        json.dump({**summary, "config": dataclasses.asdict(config)}, f, indent=2)
    plot_learning_curve(progress_csv, os.path.join(run_dir, "learning_curve.png"), title=f"TRPO on {env_id}")
    print(f"tftrpo-train: {env_id}: {summary['env_steps']} env steps in {summary['wall_time_s']} s; "
          f"final greedy return {final_eval:.1f} over {config.eval_episodes} episodes\n"
          f"  SavedModel:      {export_dir}\n  TensorBoard:     tensorboard --logdir {run_dir}\n"
          f"  learning curve:  {os.path.join(run_dir, 'learning_curve.png')}", flush=True)
    return summary


def another_iteration(env_steps: int, budget: int, iteration_steps: int) -> bool:
    """Whether one more iteration brings the run's simulator steps nearer to `budget`.

    An iteration collects whole batches of about `iteration_steps` (the collector's
    `simulator_steps_per_collect`: B·T slots for single path, of which resets take a few;
    for vine the mean of the run's iterations so far), so a run cannot end exactly on its budget. It
    runs a first iteration, then another while the shortfall exceeds half an iteration:
    `--steps 4096` with 2 × 1024 slots is 2 iterations (4092 steps), not 3 (6138) for
    the 4 slots that resets took. The rule reads only counters the checkpoint holds, so
    a resumed run stops where the uninterrupted one would.
    """
    shortfall = budget - env_steps
    return shortfall > 0 and (env_steps == 0 or shortfall > iteration_steps / 2)


def _discrete(action_spec) -> bool:
    return action_spec.dtype.is_integer


def _checkpointer(run_dir, resume, **objects):
    from tf_agents.utils import common
    import tensorflow as tf

    ckpt_dir = os.path.join(run_dir, "checkpoints")
    try:
        checkpointer = common.Checkpointer(ckpt_dir=ckpt_dir, max_to_keep=3, **objects)
        status = checkpointer.initialize_or_restore()
        if resume:
            try:
                status.assert_existing_objects_matched()
            except AssertionError as e:
                if not _lacks_only_the_minibatch_seed(e):
                    raise
                print("tftrpo-train: this checkpoint (an older tftrpo's) has no minibatch seed; the value "
                      "regression shuffles with a new one from here on", file=sys.stderr, flush=True)
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise UsageError(f"cannot restore the checkpoint in {ckpt_dir}: it is unreadable or does not match "
                         f"this run's configuration ({type(e).__name__}: {str(e).splitlines()[0]})")
    return checkpointer


def _lacks_only_the_minibatch_seed(error: AssertionError) -> bool:
    """Whether a restore's only unmatched object is `TRPOAgent`'s minibatch seed, which
    checkpoints of tftrpo before it drew its minibatch orders statelessly do not hold."""
    message = str(error)
    return message.startswith("Found 1 Python objects that were not bound") and "'minibatch_seed:0'" in message


def _has_checkpoint(ckpt_dir) -> bool:
    import tensorflow as tf

    return tf.train.latest_checkpoint(ckpt_dir) is not None


def _run_state_path(ckpt_dir, iteration):
    return os.path.join(ckpt_dir, f"run-state-{iteration}.pkl")


def _save_run_state(ckpt_dir, iteration, state):
    """Pickles `state` beside checkpoint `iteration`, atomically (a temporary file, renamed)."""
    import pickle

    os.makedirs(ckpt_dir, exist_ok=True)
    path = _run_state_path(ckpt_dir, iteration)
    with open(path + ".tmp", "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)


def _load_run_state(ckpt_dir, iteration):
    """The state `_save_run_state` wrote with checkpoint `iteration`, or None if there is none."""
    import pickle

    path = _run_state_path(ckpt_dir, iteration)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # pylint: disable=broad-except
        raise UsageError(f"cannot read {path}, the env and sampler state of the checkpoint being resumed "
                         f"({type(e).__name__}: {e})")


def _prune_run_states(ckpt_dir):
    """Removes the run states of checkpoints the Checkpointer no longer keeps."""
    import tensorflow as tf

    kept = {int(p.rsplit("-", 1)[1]) for p in tf.train.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths}
    for name in os.listdir(ckpt_dir):
        match = re.fullmatch(r"run-state-(\d+)\.pkl", name)
        if match and int(match.group(1)) not in kept:
            os.remove(os.path.join(ckpt_dir, name))


def _truncate_progress(path, iteration):
    """Drops progress rows written after the checkpoint being resumed from."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= iteration]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, PROGRESS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_progress(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, PROGRESS_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _progress_bar(total, initial, env_id, disabled):
    if disabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, desc=env_id, dynamic_ncols=True)


def _report(bar, row, last_eval):
    eval_text = "-" if last_eval is None else f"{last_eval:.1f}"
    train_text = "-" if row["train_return"] is None else f"{row['train_return']:.1f}"
    if bar is not None:
        bar.update(row["env_steps"] - bar.n)
        bar.set_postfix(ret=train_text, eval=eval_text, kl=f"{row['kl']:.4f}",
                        sps=f"{row['steps_per_second']:.0f}")
    elif row["eval_return"] is not None or row["iteration"] == 1:
        print(f"iter {row['iteration']:>5d}  steps {row['env_steps']:>9d}  return {train_text:>9s}  "
              f"eval {eval_text:>8s}  kl {row['kl']:.4f}  steps/s {row['steps_per_second']:7.0f}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_startup()
    try:
        run(args)
    except UsageError as e:
        print(f"tftrpo-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        run_dir = getattr(args, "resolved_run_dir", None)
        if run_dir is None or not os.path.exists(os.path.join(run_dir, "config.json")):
            print("tftrpo-train: interrupted before the run started; nothing was written", file=sys.stderr)
        elif _has_checkpoint(os.path.join(run_dir, "checkpoints")):  # TensorFlow is loaded once config.json exists
            print("tftrpo-train: interrupted; the last checkpoint (saved every --checkpoint-interval iterations) "
                  f"is intact: continue from it with tftrpo-train --resume --run-dir {run_dir}", file=sys.stderr)
        else:
            print("tftrpo-train: interrupted before the first checkpoint; tftrpo-train --resume --run-dir "
                  f"{run_dir} starts the run again from its beginning", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
