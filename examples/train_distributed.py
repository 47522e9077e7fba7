"""TRPO with distributed collection: one learner, N actor processes, a Reverb server, top to bottom.

    python examples/train_distributed.py --env CartPole-v1 --actors 2
    python examples/train_distributed.py --env Hopper-v5 --actors 4 --iterations 500
    python examples/train_distributed.py --env Hopper-v5 --actors 1 --remote-actors 2   # + 2 started by hand

The learner process holds a `reverb.Server` on localhost with tftrpo's two tables
(`tftrpo.sampling.distributed.reverb_tables`: a queue of one iteration's rows and the
published policy), starts the actors as processes of this same script (`--actor-of
ADDRESS`), and trains with TF-Agents' own `tf_agents.train.Learner` on the queue's dataset
(checkpoints and TensorBoard summaries under `--root-dir`). After each update a
`PolicyPublisher` trigger publishes the collect policy with its version (the train step);
each actor waits for it, collects `num_envs` x `steps_per_env` steps of its own envs with
it, and writes the rows tagged with that version and their place in the batch (actor
index x num_envs + env). Every update trains on rows of the policy being updated, as TRPO
requires: the batch of one iteration is the actors' rows together, `(actors +
remote_actors) x num_envs` rows of the preset's `steps_per_env` steps.

The hyperparameters are `tftrpo.presets.preset(env)`'s, the same as `tftrpo-train`'s.
`--remote-actors K` makes the learner wait for K more actors that it does not start: run
each on any machine that reaches the learner's port, with the command the learner prints
(`--actor-of HOST:PORT --actor-index I`, I from `--actors` to `--actors + K - 1`).
At the end the greedy policy is exported with `PolicySaver` into `savedmodels/`.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--env", default="CartPole-v1")
parser.add_argument("--actors", type=int, default=2,
                    help="actor processes the learner starts (each steps the preset's num_envs envs)")
parser.add_argument("--remote-actors", type=int, default=0,
                    help="actors the learner waits for but does not start (started by hand, see above)")
parser.add_argument("--iterations", type=int, default=60,
                    help="TRPO updates in this run (a rerun with the same --root-dir continues from the "
                         "Learner's last checkpoint, saved every --eval-interval updates)")
parser.add_argument("--target-return", type=float, default=None,
                    help="stop once the greedy evaluation reaches this return")
parser.add_argument("--eval-interval", type=int, default=5, help="updates between greedy evaluations")
parser.add_argument("--root-dir", default="runs/distributed")
parser.add_argument("--export-dir", default=None, help="default: savedmodels/<env>-distributed-seed<seed>")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--port", type=int, default=None, help="the Reverb server's port (default: a free one)")
parser.add_argument("--timeout", type=float, default=600.0,
                    help="longest wait (s) for a new policy (actors) or for an update's rows, counted from the "
                         "previous update's rows (learner: so it must exceed one update plus one collection)")
parser.add_argument("--actor-of", metavar="HOST:PORT", help="run as an actor of the learner's Reverb server")
parser.add_argument("--actor-index", type=int, default=None,
                    help="with --actor-of: this actor's index (its rows are index x num_envs onwards)")
args = parser.parse_args()
if args.actor_of is not None and (args.actor_index is None or args.actor_index < 0):
    parser.error("--actor-of needs --actor-index I >= 0 (each actor its own: its rows in the batch follow from it)")
if (args.actors < 0 or args.remote_actors < 0 or args.actors + args.remote_actors < 1 or args.iterations < 1
        or args.eval_interval < 1):
    parser.error("--actors and --remote-actors must be >= 0 with at least one actor in all; --iterations and "
                 "--eval-interval must be >= 1")

import tensorflow as tf  # noqa: E402  (after argparse: --help does not wait for TensorFlow)
from tf_agents.drivers import dynamic_episode_driver  # noqa: E402
from tf_agents.environments import tf_py_environment  # noqa: E402
from tf_agents.metrics import tf_metrics  # noqa: E402
from tf_agents.policies import policy_saver  # noqa: E402
from tf_agents.train import learner as tfa_learner  # noqa: E402
from tf_agents.utils import common  # noqa: E402

from tftrpo.envs import load, load_batched  # noqa: E402
from tftrpo.presets import preset  # noqa: E402
from tftrpo.sampling import distributed  # noqa: E402
from tftrpo.train import make_agent  # noqa: E402

config = preset(args.env)
tf.keras.utils.set_random_seed(args.seed)  # the learner's and every actor's networks start alike anyway:
# the actors load the published weights before they act.


def build_agent(env_seed):
    """The preset's agent: learner and actors build the same one, so their collect policies'
    variables line up."""
    py_env = load_batched(args.env, num_envs=config.num_envs, seed=env_seed)
    train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
    return py_env, make_agent(config, tf_py_environment.TFPyEnvironment(py_env), train_step), train_step


# ------------------------------------------------------------------------ an actor
if args.actor_of:
    env_seed = args.seed + 1000 * (args.actor_index + 1)  # every env of every actor has its own seed
    py_env, agent, _ = build_agent(env_seed)
    actor = distributed.ReverbActor(args.actor_of, py_env, agent.collect_policy, config.steps_per_env,
                                    first_row=args.actor_index * config.num_envs, seed=env_seed, timeout_s=args.timeout)
    batches = actor.run()  # until the learner publishes distributed.FINISHED
    mean_return, _ = actor.collector.recent_episodes()
    print(f"actor {args.actor_index}: {batches} batches, {actor.rows_written} rows; "
          f"last episodes' mean return {mean_return:.1f}", flush=True)
    sys.exit(0)

# ----------------------------------------------------------------------- the learner
_, agent, train_step = build_agent(args.seed)
rows = (args.actors + args.remote_actors) * config.num_envs
server = distributed.make_reverb_server(agent, config.steps_per_env, rows, port=args.port)
address = f"localhost:{server.port}"
publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
queue = distributed.ExperienceQueue(address, agent.collect_data_spec, publisher, config.steps_per_env, rows,
                                    timeout_s=args.timeout)
root_dir = os.path.join(args.root_dir, f"{args.env.replace('/', '_')}-seed{args.seed}")
learner = tfa_learner.Learner(root_dir, train_step, agent, experience_dataset_fn=queue.dataset,
                              triggers=[publisher],  # after each update: publish the new policy
                              checkpoint_interval=args.eval_interval, summary_interval=1)
first = publisher.publish().step  # the first version's train step (> 0 when the Learner restored a checkpoint)
print(f"learner: Reverb server at {address}, {rows} rows of {config.steps_per_env} steps per update "
      f"from {args.actors + args.remote_actors} actors" + (f"; resumed at update {first} from {root_dir}" if first else ""),
      flush=True)
for i in range(args.actors, args.actors + args.remote_actors):
    print(f"learner: waiting for remote actor {i}: python {' '.join(sys.argv[:1])} --env {args.env} --seed {args.seed} "
          f"--actor-of {socket.getfqdn()}:{server.port} --actor-index {i}", flush=True)
actors = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--env", args.env, "--seed", str(args.seed),
                            "--timeout", str(args.timeout), "--actor-of", address, "--actor-index", str(i)])
          for i in range(args.actors)]

eval_env = tf_py_environment.TFPyEnvironment(load(args.env, seed=args.seed + 100))
eval_return = tf_metrics.AverageReturnMetric(buffer_size=config.eval_episodes)
evaluate = common.function(dynamic_episode_driver.DynamicEpisodeDriver(
    eval_env, agent.policy, observers=[eval_return], num_episodes=config.eval_episodes).run)
eval_writer = tf.summary.create_file_writer(os.path.join(root_dir, "eval"))

history, start, greedy = [], time.time(), float("nan")
try:
    for iteration in range(1, args.iterations + 1):
        try:
            loss_info = learner.run(iterations=1)  # waits for the rows of the current policy
        except tf.errors.OutOfRangeError:  # the queue's dataset ended: no row within --timeout
            exited = {i: actor.poll() for i, actor in enumerate(actors) if actor.poll() is not None}
            sys.exit(f"learner: update {int(train_step.numpy()) + 1} got fewer than {rows} rows within "
                     f"{args.timeout:g} s of the previous update's (local actors that exited, with their codes: "
                     f"{exited or 'none'})")
        row = {"update": int(train_step.numpy()), "kl": float(loss_info.extra.kl),
               "seconds": round(time.time() - start, 2)}
        if row["update"] % args.eval_interval == 0 or iteration == args.iterations:
            eval_return.reset()
            evaluate(eval_env.reset())
            greedy = row["greedy_return"] = float(eval_return.result())
            with eval_writer.as_default():
                tf.summary.scalar("Metrics/AverageReturn", greedy, step=train_step)
            print(f"update {row['update']}: greedy return {greedy:.1f}, KL {row['kl']:.4f}, "
                  f"{row['seconds']:.0f} s", flush=True)
        history.append(row)
        if args.target_return is not None and greedy >= args.target_return:
            break
finally:
    publisher.finish()  # the actors return from run()
    codes = [actor.wait(timeout=args.timeout) for actor in actors]
    server.stop()

export_dir = args.export_dir or os.path.join("savedmodels", f"{args.env.replace('/', '_')}-distributed-seed{args.seed}")
policy_saver.PolicySaver(agent.policy, train_step=train_step).save(export_dir)
summary = {"env": args.env, "actors": args.actors, "remote_actors": args.remote_actors, "rows_per_update": rows, "steps_per_env": config.steps_per_env,
           "updates": int(train_step.numpy()), "greedy_return": greedy, "actor_exit_codes": codes,
           "export_dir": export_dir, "history": history}
with open(os.path.join(root_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(f"learner: {summary['updates']} updates, greedy return {greedy:.1f}; policy exported to {export_dir}", flush=True)
sys.exit(0 if all(code == 0 for code in codes) else 1)
