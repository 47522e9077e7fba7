#!/usr/bin/env python3
"""Where the time of tftrpo's compiled update goes: a TF profiler trace, aggregated.

Run with tftrpo's venv python (it imports TensorFlow itself):

  PYTHONPATH=. /work/venv/bin/python bench/profile_tftrpo_update.py [--config policy] [--calls 3]

Builds the same agent and Hopper-v5 batch as bench/update_speed.py's tftrpo worker
(1 intra-op, 1 inter-op thread), traces `--calls` train calls with
`tf.profiler.experimental`, converts the trace with TF's own profiler converter
(trace_viewer) and sums kernel time per op type and per op-name prefix (the
outermost scopes: `while/body` is the conjugate-gradient loop when it is the first
while loop of the graph, `scan*` the GAE / reward scans, ...). It also reports the
executor time (`ExecutorState::Process`), which includes per-op scheduling and loop
overhead that kernel times do not: cheap ops inside `tf.scan` loops show up there,
not as kernels. Profiling itself slows ops down; use the proportions, and
bench/update_speed.py for absolute times.

Writes bench/results/profile_tftrpo_update[_<config>].json.
"""
import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "workers"))

import common  # noqa: E402
import tftrpo_update_worker as worker  # noqa: E402
import update_speed  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="policy", choices=sorted(update_speed.CONFIGS))
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    settings = dict(update_speed.SETTINGS, steps_per_env=update_speed.TF_STEPS_PER_ENV)
    setup = worker.setup({"settings": settings, "configs": {args.config: update_speed.CONFIGS[args.config][0]},
                          "seed": 0, "warmup": 2, "intra_threads": 1, "inter_threads": 1})
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler

    unprofiled = worker.time_cfg({"config": args.config, "repeats": args.calls})
    logdir = tempfile.mkdtemp(prefix="tftrpo-profile-")
    tf.profiler.experimental.start(logdir)
    profiled = worker.time_cfg({"config": args.config, "repeats": args.calls})
    tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    data, ok = _pywrap_profiler.xspace_to_tools_data(paths, "trace_viewer@", {})
    if not ok:
        raise SystemExit("could not convert the profile")
    trace = json.loads(data)
    frames = trace.get("stackFrames", {})
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    threads = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"]
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    compute = {tid for tid, n in threads.items() if n.startswith("tf_Compute")}
    executor_us = sum(e["dur"] for e in events if e["name"] == "ExecutorState::Process")
    kernels = [e for e in events if e["tid"] in compute and e["name"] != "ExecutorState::Process"]
    kernel_us = sum(e["dur"] for e in kernels)

    by_type = collections.defaultdict(lambda: [0, 0.0])
    by_scope = collections.defaultdict(lambda: [0, 0.0])
    for e in kernels:
        by_type[e["name"]][0] += 1
        by_type[e["name"]][1] += e["dur"]
        full = frames.get(str(e.get("sf")), {}).get("name", "?")
        parts = full.split("/")
        scope = "/".join(parts[:2]) if parts[0].startswith(("while", "scan")) else re.sub(r"_\d+$", "", parts[0])
        by_scope[scope][0] += 1
        by_scope[scope][1] += e["dur"]

    def table(d):
        rows = sorted(d.items(), key=lambda kv: -kv[1][1])[: args.top]
        return [{"name": k, "count": c, "total_ms": us / 1e3, "per_call_ms": us / 1e3 / args.calls,
                 "share_of_kernel_time": us / kernel_us} for k, (c, us) in rows]

    result = {
        "benchmark": "profile_tftrpo_update",
        "config": args.config,
        "calls": args.calls,
        "machine": common.machine_info(),
        "setup": setup,
        "unprofiled_seconds": unprofiled["times"],
        "profiled_seconds": profiled["times"],
        "executor_ms_per_call": executor_us / 1e3 / args.calls,
        "kernel_ms_per_call": kernel_us / 1e3 / args.calls,
        "by_op_type": table(by_type),
        "by_scope": table(by_scope),
    }
    suffix = "" if args.config == "policy" else f"_{args.config}"
    out = os.path.join(common.RESULTS_DIR, f"profile_tftrpo_update{suffix}.json")
    common.write_json(out, result)
    print(f"unprofiled {[round(t * 1e3) for t in unprofiled['times']]} ms, "
          f"profiled {[round(t * 1e3) for t in profiled['times']]} ms")
    print(f"executor {result['executor_ms_per_call']:.1f} ms/call, kernels {result['kernel_ms_per_call']:.1f} ms/call")
    for title, rows in (("op type", result["by_op_type"]), ("scope", result["by_scope"])):
        print(f"\n{title:40s} {'count':>7s} {'ms/call':>8s} {'share':>6s}")
        for r in rows[:15]:
            print(f"{r['name'][:40]:40s} {r['count']:7d} {r['per_call_ms']:8.1f} {r['share_of_kernel_time']:6.1%}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
