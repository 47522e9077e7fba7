#!/usr/bin/env python3
"""Experiment: what moving an iteration through Reverb costs, against the iteration itself.

One Hopper-preset agent, a `reverb.Server` on localhost with tftrpo's tables
(`tftrpo.sampling.distributed`), one `ReverbActor` with 2 Hopper-v5 envs and the learner's
`ExperienceQueue` dataset, all in this process (1 TF thread). Each round is one synchronous
iteration of distributed TRPO, every phase timed:

  publish   `PolicyPublisher.publish()`: the collect policy's variables to the server
  pull      `ReverbActor.wait_for_policy()`: the new version's variables into the actor's policy
  collect   `SinglePathCollector.collect()`: 2 x 1024 steps (what a local run does too)
  write     `ReverbActor.write()`: the 2 rows to the experience queue
  sample    `next()` of the learner's dataset: the [2, 1024] batch back, version-checked
  train     `agent.train()` (what a local run does too)

The transport is publish + pull + write + sample; it is reported per round as a fraction of
collect + train, the local iteration's work. Clients in the server's process may bypass gRPC
where Reverb allows it (its sampler does: "accessed directly without gRPC"); an actor in another
process, as in examples/train_distributed.py, goes through localhost gRPC.

  python bench/experiments/reverb_transport.py [--rounds 20]

Writes bench/results/reverb_transport.json (every timing, ms) and reverb_transport.png.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
import common  # noqa: E402

PHASES = ("publish", "pull", "collect", "write", "sample", "train")
TRANSPORT = ("publish", "pull", "write", "sample")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (after 3 warm-up)")
    args = parser.parse_args()

    import numpy as np

    tf = common.tensorflow_one_thread()
    from tf_agents.environments import tf_py_environment

    from tftrpo import presets
    from tftrpo.envs import load_batched
    from tftrpo.sampling import distributed
    from tftrpo.train import make_agent

    config = presets.preset("Hopper-v5")
    tf.keras.utils.set_random_seed(0)
    train_step = tf.Variable(0, dtype=tf.int64)
    agent = make_agent(config, tf_py_environment.TFPyEnvironment(load_batched("Hopper-v5", 2, seed=0)), train_step)
    actor_agent = make_agent(config, tf_py_environment.TFPyEnvironment(load_batched("Hopper-v5", 2, seed=0)),
                             tf.Variable(0, dtype=tf.int64))
    rows, length = config.num_envs, config.steps_per_env
    server = distributed.make_reverb_server(agent, length, rows)
    address = f"localhost:{server.port}"
    publisher = distributed.PolicyPublisher(address, agent.collect_policy, train_step)
    actor = distributed.ReverbActor(address, load_batched("Hopper-v5", rows, seed=1), actor_agent.collect_policy,
                                    length, 0, seed=1)
    batches = iter(distributed.ExperienceQueue(address, agent.collect_data_spec, publisher, length, rows).dataset())

    def iteration(times=None):
        marks = [time.perf_counter()]
        version = publisher.publish()
        marks.append(time.perf_counter())
        assert actor.wait_for_policy() == version
        marks.append(time.perf_counter())
        experience = actor.collector.collect()
        marks.append(time.perf_counter())
        actor.write(experience, version)
        marks.append(time.perf_counter())
        batch, _ = next(batches)
        marks.append(time.perf_counter())
        agent.train(batch)
        marks.append(time.perf_counter())
        if times is not None:
            for phase, start, end in zip(PHASES, marks, marks[1:]):
                times[phase].append(1e3 * (end - start))

    for _ in range(3):  # warm-up: traces and XLA compiles
        iteration()
    times = {phase: [] for phase in PHASES}
    for _ in range(args.rounds):
        iteration(times)
    server.stop()
    transport = [sum(times[p][r] for p in TRANSPORT) for r in range(args.rounds)]
    local = [times["collect"][r] + times["train"][r] for r in range(args.rounds)]
    fraction = [t / w for t, w in zip(transport, local)]
    summary = {phase: common.summary(v) for phase, v in times.items()}
    for phase, s in summary.items():
        print(f"{phase:8s} median {s['median']:7.1f} ms (min {s['min']:.1f}, max {s['max']:.1f})")
    print(f"transport {np.median(transport):.1f} ms per iteration = {np.median(fraction):.3f} of collect + train "
          f"(rounds {min(fraction):.3f}-{max(fraction):.3f})")
    out = os.path.join(common.RESULTS_DIR, "reverb_transport")
    common.write_json(out + ".json", {
        "experiment": "reverb_transport", "env": "Hopper-v5", "rows": rows, "steps_per_env": length,
        "rounds": args.rounds, "machine": common.machine_info(), "git": common.git_info(),
        "summary_ms": summary, "transport_ms": common.summary(transport), "local_iteration_ms": common.summary(local),
        "transport_over_local_iteration_per_round": common.summary(fraction), "timings_ms": times})
    common.box_strip_plot(out + ".png", [
        ("one distributed iteration, by phase", [(p, times[p]) for p in PHASES]),
        ("transport vs the local iteration's work", [("transport", transport), ("collect + train", local)])],
        f"Reverb transport of a 2x1024 Hopper-v5 iteration ({args.rounds} rounds, median "
        f"{np.median(fraction):.3f} of collect + train)", "ms")
    print(f"wrote {out}.json, .png")


if __name__ == "__main__":
    main()
