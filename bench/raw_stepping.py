#!/usr/bin/env python3
"""Raw environment throughput on Hopper-v5 with random actions (issue 5).

Measured in steps per second (environment steps; a step of a 2-env batch counts 2):

  tftrpo venv (TF 2.15, tf-agents, tftrpo's gymnasium):
    gym_single          one raw `gymnasium.make('Hopper-v5')`, uniform random actions
    tftrpo_py_batched   `tftrpo.envs.load_batched('Hopper-v5', 2)` stepped from Python
    tfagents_driver     the same in `TFPyEnvironment` + `DynamicStepDriver` + `RandomTFPolicy`
                        inside `common.function`: the ceiling of TF-Agents collection
  sb3 venv (optional, skipped with --no-sb3 or when the venv is missing):
    gym_single          the same raw loop with that venv's gymnasium
    sb3_dummy_vec_env   `make_vec_env('Hopper-v5', n_envs=2)` (DummyVecEnv), numpy actions

Each round runs every measurement once, alternating the two workers (and the
order of the workers from round to round), so all see the same background load
of this shared machine; the summary is per-measurement min/median/max and the
ratios of medians to raw Gymnasium stepping in the same venv.

  python bench/raw_stepping.py            # default, ~2-3 min
  python bench/raw_stepping.py --quick    # ~1 min smoke run
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TF_MEASUREMENTS = ("gym_single", "tftrpo_py_batched", "tfagents_driver")
SB3_MEASUREMENTS = ("gym_single", "sb3_dummy_vec_env")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds, fewer steps")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 8, quick 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="env steps per measurement (default 8192, quick 2048)")
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--tf-python", default=common.DEFAULT_TF_PYTHON)
    parser.add_argument("--sb3-python", default=common.DEFAULT_SB3_PYTHON)
    parser.add_argument("--no-sb3", action="store_true", help="measure the tftrpo venv only")
    parser.add_argument("--tftrpo-path", default=None,
                        help="directory holding the tftrpo package (default: a snapshot of this repo's tftrpo/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 8)
    steps = args.steps or (2048 if args.quick else 8192)
    name = args.name or ("raw_stepping_quick" if args.quick else "raw_stepping")
    use_sb3 = not args.no_sb3 and os.path.exists(args.sb3_python)
    if not args.no_sb3 and not use_sb3:
        print(f"sb3 venv python {args.sb3_python} not found: measuring the tftrpo venv only "
              "(bash bench/setup_sb3_env.sh creates it)", file=sys.stderr)

    started = time.time()
    here = os.path.dirname(os.path.abspath(__file__))
    tftrpo_path = args.tftrpo_path or common.snapshot_tftrpo()
    env = common.bench_env(1, tftrpo_path)
    log_dir = os.path.join(common.RESULTS_DIR, "logs", name)
    workers = {"tftrpo": common.Worker("tftrpo", args.tf_python,
                                       os.path.join(here, "workers", "tftrpo_step_worker.py"), env=env,
                                       log_dir=log_dir)}
    measurements = {"tftrpo": TF_MEASUREMENTS}
    if use_sb3:
        workers["sb3"] = common.Worker("sb3", args.sb3_python, os.path.join(here, "workers", "sb3_step_worker.py"),
                                       env=env, log_dir=log_dir)
        measurements["sb3"] = SB3_MEASUREMENTS
    try:
        req = dict(cmd="setup", env_id=args.env_id, num_envs=args.num_envs, seed=args.seed,
                   driver_steps=steps, intra_threads=1, inter_threads=1)
        for w in workers.values():
            w.send(**req)
        setup = {lib: w.receive(600) for lib, w in workers.items()}
        print(f"setup done in {time.time() - started:.0f}s", flush=True)

        raw = {lib: {m: [] for m in ms} for lib, ms in measurements.items()}
        rounds_log = []
        libs = list(workers)
        for r in range(rounds):
            order = libs if r % 2 == 0 else libs[::-1]
            entry = {"round": r, "order": order, "steps_per_second": {}}
            # Interleave measurement by measurement: A1 B1 A2 B2 A3 ...
            for i in range(max(len(ms) for ms in measurements.values())):
                for lib in order:
                    if i < len(measurements[lib]):
                        m = measurements[lib][i]
                        reply = workers[lib].request(cmd="measure", what=m, steps=steps, timeout=600)
                        raw[lib][m].append(reply)
                        entry["steps_per_second"][f"{lib}:{m}"] = reply["steps_per_second"]
            rounds_log.append(entry)
            print(f"round {r + 1}/{rounds}  " + "  ".join(f"{k} {v:,.0f}/s" for k, v in
                                                          entry["steps_per_second"].items()), flush=True)
        micro = workers["tftrpo"].request(cmd="micro", number=5000 if args.quick else 20000)
    finally:
        for w in workers.values():
            w.close()

    summary = {}
    for lib, ms in raw.items():
        for m, replies in ms.items():
            summary[f"{lib}:{m}"] = common.summary([x["steps_per_second"] for x in replies])
    ratios = {}
    base_tf = summary["tftrpo:gym_single"]["median"]
    for key in ("tftrpo:tftrpo_py_batched", "tftrpo:tfagents_driver"):
        ratios[f"{key} / tftrpo:gym_single"] = summary[key]["median"] / base_tf
    ratios["tftrpo:tfagents_driver / tftrpo:tftrpo_py_batched"] = (
        summary["tftrpo:tfagents_driver"]["median"] / summary["tftrpo:tftrpo_py_batched"]["median"])
    if use_sb3:
        base_sb3 = summary["sb3:gym_single"]["median"]
        ratios["sb3:sb3_dummy_vec_env / sb3:gym_single"] = summary["sb3:sb3_dummy_vec_env"]["median"] / base_sb3
        ratios["tftrpo:gym_single / sb3:gym_single"] = base_tf / base_sb3
        ratios["tftrpo:tfagents_driver / sb3:sb3_dummy_vec_env"] = (
            summary["tftrpo:tfagents_driver"]["median"] / summary["sb3:sb3_dummy_vec_env"]["median"])
        ratios["tftrpo:tftrpo_py_batched / sb3:sb3_dummy_vec_env"] = (
            summary["tftrpo:tftrpo_py_batched"]["median"] / summary["sb3:sb3_dummy_vec_env"]["median"])

    def per_round(a, b):
        return common.summary([e["steps_per_second"][a] / e["steps_per_second"][b] for e in rounds_log])

    ratio_keys = [k.split(" / ") for k in ratios if "," not in k]
    ratios_per_round = {f"{a} / {b}": per_round(a, b) for a, b in ratio_keys}

    payload = {
        "benchmark": "raw_stepping",
        "description": f"raw {args.env_id} stepping with random actions, env steps per second",
        **common.provenance(tftrpo_path, not args.tftrpo_path),
        "settings": {"env_id": args.env_id, "num_envs": args.num_envs, "steps_per_measurement": steps,
                     "rounds": rounds, "seed": args.seed, "tf_intra_op_threads": 1, "tf_inter_op_threads": 1,
                     "torch_threads": 1, "driver_observers": [], "driver_policy": "RandomTFPolicy"},
        "setup": setup,
        "summary_steps_per_second": summary,
        "ratios_of_medians": ratios,
        "ratios_per_round": ratios_per_round,
        "tftrpo_timestep_micro_us": micro,
        "rounds": rounds_log,
        "raw": raw,
        "wall_seconds": time.time() - started,
    }
    json_path, png_path = common.result_paths(name)
    common.write_json(json_path, payload)

    groups = [(f"{lib} venv\n{m}", [x["steps_per_second"] for x in raw[lib][m]]) for lib in raw for m in measurements[lib]]
    venvs = ", ".join(f"{lib} venv: gymnasium {setup[lib]['versions']['gymnasium']}" for lib in raw)
    panels = [(venvs, groups)]
    title = (f"Raw {args.env_id} stepping, random actions, {args.num_envs} envs for batched/driver/vec\n"
             f"TF-Agents driver / raw gym = {ratios['tftrpo:tfagents_driver / tftrpo:gym_single']:.2f}"
             + (f", driver / sb3 DummyVecEnv = {ratios['tftrpo:tfagents_driver / sb3:sb3_dummy_vec_env']:.2f}"
                if use_sb3 else "") + " (medians)")
    common.box_strip_plot(png_path, panels, title, "env steps per second")

    print()
    print(f"{'measurement':34s} {'min':>10s} {'median':>10s} {'max':>10s}  (env steps/s)")
    for key, s in summary.items():
        print(f"{key:34s} {s['min']:10,.0f} {s['median']:10,.0f} {s['max']:10,.0f}")
    print()
    print(f"{'ratio':60s} {'of medians':>10s} {'median of per-round ratios':>28s}")
    for k, v in ratios.items():
        print(f"{k:60s} {v:10.3f} {ratios_per_round[k]['median']:28.3f}")
    print("\nTimeStep construction (µs per call, min of 5):", {k: round(v, 2) for k, v in micro.items()})
    print(f"\nwrote {json_path}\nwrote {png_path}")
    return payload


if __name__ == "__main__":
    main()
