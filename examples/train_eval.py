"""Train and evaluate TRPO with plain TF-Agents parts, top to bottom.

    python examples/train_eval.py --env CartPole-v1 --steps 60000
    python examples/train_eval.py --env InvertedPendulum-v5 --steps 60000

Every piece but the environments is TF-Agents' own: a `TFPyEnvironment` over tftrpo's batch
of two Gymnasium envs (`tftrpo.envs.load_batched`), a
`DynamicStepDriver` writing into a `TFUniformReplayBuffer`, `gather_all()` into
`agent.train`, a `Checkpointer`, TensorBoard summaries and a `PolicySaver` export.
`tftrpo-train` is the full command-line tool; this file shows the moving parts.
"""
import argparse
import os

import tensorflow as tf
from tf_agents.drivers import dynamic_episode_driver, dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.metrics import tf_metrics
from tf_agents.policies import policy_saver
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.utils import common

import tftrpo
from tftrpo.envs import load, load_batched

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--env", default="CartPole-v1")
parser.add_argument("--steps", type=int, default=60_000, help="environment steps to train for")
parser.add_argument("--root-dir", default="runs/example")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

# ---------------------------------------------------------------- hyperparameters
NUM_ENVS = 2
STEPS_PER_ENV = 512  # one TRPO iteration = NUM_ENVS * STEPS_PER_ENV steps
MAX_KL = 0.02
CG_ITERS = 10
DISCOUNT, GAE_LAMBDA = 0.99, 0.95
VALUE_LR, VALUE_EPOCHS, VALUE_MINIBATCH = 1e-3, 10, 128
EVAL_EPISODES = 5

root_dir = os.path.join(args.root_dir, args.env.replace("/", "_"))
tf.keras.utils.set_random_seed(args.seed)  # Python, NumPy and TF: Keras seeds initializers from Python's random

# ------------------------------------------------------------------ environments
env = tf_py_environment.TFPyEnvironment(load_batched(args.env, num_envs=NUM_ENVS, seed=args.seed))
eval_env = tf_py_environment.TFPyEnvironment(load(args.env, seed=args.seed + 1000))

# ---------------------------------------------------------------------- the agent
actor_net = tftrpo.networks.actor_network(env.observation_spec(), env.action_spec())
value_net = tftrpo.networks.value_network(env.observation_spec())
train_step = tf.Variable(0, dtype=tf.int64, name="train_step")
agent = tftrpo.TRPOAgent(
    env.time_step_spec(), env.action_spec(), actor_net, value_net,
    optimizer=tf.keras.optimizers.Adam(VALUE_LR),
    max_kl=MAX_KL, cg_iters=CG_ITERS, discount_factor=DISCOUNT, lambda_value=GAE_LAMBDA,
    value_train_epochs=VALUE_EPOCHS, value_minibatch_size=VALUE_MINIBATCH,
    train_step_counter=train_step,
)
agent.initialize()

# ------------------------------------------------------ collection into a buffer
# Headroom: the driver counts non-boundary steps only (not the LAST -> FIRST resets), so it
# takes a few more batched steps than STEPS_PER_ENV when episodes end; a buffer of exactly
# STEPS_PER_ENV would wrap and gather_all() would silently drop the oldest transitions.
replay_buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
    agent.collect_data_spec, batch_size=NUM_ENVS, max_length=2 * STEPS_PER_ENV)
env_steps = tf_metrics.EnvironmentSteps()
average_return = tf_metrics.AverageReturnMetric(batch_size=NUM_ENVS, buffer_size=20)
collect_driver = dynamic_step_driver.DynamicStepDriver(
    env, agent.collect_policy, observers=[replay_buffer.add_batch, env_steps, average_return],
    num_steps=NUM_ENVS * STEPS_PER_ENV)
eval_return = tf_metrics.AverageReturnMetric(buffer_size=EVAL_EPISODES)
eval_driver = dynamic_episode_driver.DynamicEpisodeDriver(
    eval_env, agent.policy, observers=[eval_return], num_episodes=EVAL_EPISODES)
collect_driver.run = common.function(collect_driver.run)
eval_driver.run = common.function(eval_driver.run)
agent.train = common.function(agent.train)

# ----------------------------------------------- checkpoints, summaries, exports
checkpointer = common.Checkpointer(
    ckpt_dir=os.path.join(root_dir, "checkpoints"), max_to_keep=2,
    agent=agent, train_step=train_step, env_steps=env_steps.environment_steps)
checkpointer.initialize_or_restore()
writer = tf.summary.create_file_writer(os.path.join(root_dir, "tensorboard"))
writer.set_as_default()

# ------------------------------------------------------------------- train loop
while env_steps.result().numpy() < args.steps:
    collect_driver.run()
    loss_info = agent.train(replay_buffer.gather_all())  # all of it: [NUM_ENVS, >= STEPS_PER_ENV]
    replay_buffer.clear()
    step = env_steps.result()
    tf.summary.scalar("Metrics/AverageReturn", average_return.result(), step=train_step)
    tf.summary.scalar("Metrics/EnvironmentSteps", step, step=train_step)
    if train_step.numpy() % 5 == 0:
        eval_return.reset()
        eval_driver.run()
        tf.summary.scalar("Metrics/EvalReturn", eval_return.result(), step=train_step)
        checkpointer.save(train_step)
        print(f"steps {step.numpy():>8d}  train return {average_return.result().numpy():8.1f}  "
              f"eval return {eval_return.result().numpy():8.1f}  kl {loss_info.extra.kl.numpy():.4f}  "
              f"explained var {loss_info.extra.explained_variance.numpy():.2f}", flush=True)

checkpointer.save(train_step)
if train_step.numpy() % 5:  # the last iteration was not evaluated in the loop
    eval_return.reset()
    eval_driver.run()
    tf.summary.scalar("Metrics/EvalReturn", eval_return.result(), step=train_step)
export_dir = os.path.join(root_dir, "policy")
policy_saver.PolicySaver(agent.policy, batch_size=None).save(export_dir)
print(f"SavedModel written to {export_dir}; TensorBoard: tensorboard --logdir {root_dir}")
print(f"final eval return {eval_return.result().numpy():.1f} (greedy, after {train_step.numpy()} iterations)")
