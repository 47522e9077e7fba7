#!/usr/bin/env python3
"""Time one TRPO update on Hopper-sized data: tftrpo vs sb3-contrib (issue 5).

Both libraries train on 2048 samples of a real Hopper-v5 rollout (11-dim
observations, 3-dim actions, 64x64 tanh actor and critic) with rl-zoo3's MuJoCo
TRPO settings: cg 25 steps, damping 0.1, target KL 0.01, line search 10 × 0.8,
20 critic epochs of minibatch 128 with Adam 1e-3, γ 0.99, λ 0.95, observation
and reward normalisation. Each side runs in a worker process of its own venv
with 1 intra-op and 1 inter-op thread; the orchestrator (this script, any
python with matplotlib, no TF/torch needed) alternates the workers round by
round, so both see the same background load.

Configurations (each a separate agent/model, identical initial weights per library). tftrpo
gets the trust region sb3-contrib's numbers mean (max_kl 3·0.01, cg_damping 3·0.1 on Hopper:
sb3 averages its KL over the 3 action dimensions), so both solve the same damped system, as
tftrpo-train's MuJoCo preset does; sb3 runs rl-zoo3's numbers as they are:
  full        the whole train call (natural-gradient step + value fitting)
  policy      the policy step only: value epochs 0 (tftrpo) / n_critic_updates 0 (sb3)
  policy_cg1  the policy step with 1 CG iteration (breakdown: the per-CG-iteration
              cost is (policy - policy_cg1) / (difference in Fisher-vector products))
  policy_literal  the policy step with tftrpo given δ 0.01 and λ 0.1 literally (a 3x less
              damped system, as the update benchmark's runs before 2026-12-06 had it for
              full, policy and policy_cg1)

Every repeat restores the agent's/model's state first (outside the timing), so
all repeats do identical work.

  python bench/update_speed.py              # default, ~3-4 min
  python bench/update_speed.py --quick      # ~1-1.5 min smoke run
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

sys.path.insert(0, common.REPO_ROOT)  # tftrpo.presets (no TensorFlow) for the trust region

SETTINGS = dict(
    env_id="Hopper-v5", num_envs=2, max_kl=0.01, cg_iters=25, cg_damping=0.1,
    line_search_max_backtracks=10, line_search_shrink=0.8, accept_ratio=0.1,
    gamma=0.99, gae_lambda=0.95, value_epochs=20, value_minibatch_size=128, value_lr=1e-3,
    hidden=[64, 64], normalize_observations=True, normalize_rewards=True,
)
# tftrpo's [B, T] batch needs one extra step per row: the last column only provides
# the bootstrap value V(s_T), so 2 × 1025 steps give (up to) 2 × 1024 trainable pairs
# (episode-boundary steps are masked), the same as sb3's 2 × 1024 rollout buffer.
TF_STEPS_PER_ENV = 1025
SB3_STEPS_PER_ENV = 1024


def sb3_trust_region(env_id=SETTINGS["env_id"]):
    """tftrpo's (max_kl, cg_damping) for sb3-contrib's target_kl δ and cg_damping λ: d·δ and d·λ for
    d action dimensions (sb3 averages its Gaussian KL over them; tftrpo.presets.rl_zoo3_trust_region,
    bench/experiments/sb3_trust_region.py), exactly what the MuJoCo preset uses (TF-free import)."""
    from tftrpo.presets import action_dimension

    d = action_dimension(env_id)
    return {"max_kl": d * SETTINGS["max_kl"], "cg_damping": d * SETTINGS["cg_damping"]}


SB3_TRUST_REGION = sb3_trust_region()

CONFIGS = {
    "full": (dict(SB3_TRUST_REGION), {}),
    "policy": ({"value_train_epochs": 0, **SB3_TRUST_REGION}, {"n_critic_updates": 0}),
    "policy_cg1": ({"value_train_epochs": 0, "cg_iters": 1, **SB3_TRUST_REGION}, {"n_critic_updates": 0, "cg_max_steps": 1}),
    "policy_literal": ({"value_train_epochs": 0}, {"n_critic_updates": 0}),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds × 3 repeats, no breakdown")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 8, quick 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per config per round (5, quick 3)")
    parser.add_argument("--tf-python", default=common.DEFAULT_TF_PYTHON, help="python of tftrpo's venv")
    parser.add_argument("--sb3-python", default=common.DEFAULT_SB3_PYTHON, help="python of the sb3 venv")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both libraries (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tftrpo-path", default=None,
                        help="directory holding the tftrpo package (default: a snapshot of this repo's tftrpo/ "
                             "taken at start, so concurrent edits cannot mix versions within a run)")
    parser.add_argument("--name", default=None, help="results name (default update_speed[_quick])")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 8)
    repeats = args.repeats or (3 if args.quick else 5)
    name = args.name or ("update_speed_quick" if args.quick else "update_speed")
    configs = {k: v for k, v in CONFIGS.items() if not (args.quick and k in ("policy_cg1", "policy_literal"))}

    started = time.time()
    tftrpo_path = args.tftrpo_path or common.snapshot_tftrpo()
    env = common.bench_env(args.threads, tftrpo_path)
    here = os.path.dirname(os.path.abspath(__file__))
    log_dir = os.path.join(common.RESULTS_DIR, "logs", name)
    tfw = common.Worker("tftrpo", args.tf_python, os.path.join(here, "workers", "tftrpo_update_worker.py"),
                        env=env, log_dir=log_dir)
    sbw = common.Worker("sb3", args.sb3_python, os.path.join(here, "workers", "sb3_update_worker.py"),
                        env=env, log_dir=log_dir)
    workers = {"tftrpo": tfw, "sb3": sbw}
    try:
        common_req = dict(cmd="setup", seed=args.seed, warmup=2, intra_threads=args.threads, inter_threads=1)
        # Both set up at once (tracing dominates tftrpo's setup); timing starts after both are ready.
        tfw.send(settings=dict(SETTINGS, steps_per_env=TF_STEPS_PER_ENV),
                 configs={k: v[0] for k, v in configs.items()}, **common_req)
        sbw.send(settings=dict(SETTINGS, steps_per_env=SB3_STEPS_PER_ENV),
                 configs={k: v[1] for k, v in configs.items()}, **common_req)
        setup = {"tftrpo": tfw.receive(900), "sb3": sbw.receive(900)}
        print(f"setup done in {time.time() - started:.0f}s "
              f"(tftrpo traces: {setup['tftrpo']['trace_plus_first_call_seconds']})", flush=True)

        raw = {lib: {cfg: [] for cfg in configs} for lib in workers}
        rounds_log = []
        for r in range(rounds):
            order = ["tftrpo", "sb3"] if r % 2 == 0 else ["sb3", "tftrpo"]
            entry = {"round": r, "order": order, "median_s": {}}
            for cfg in configs:
                for lib in order:
                    reply = workers[lib].request(cmd="time", config=cfg, repeats=repeats)
                    raw[lib][cfg].append(reply["times"])
                    entry["median_s"].setdefault(cfg, {})[lib] = common.summary(reply["times"])["median"]
            rounds_log.append(entry)
            line = "  ".join(f"{cfg}: tf {m['tftrpo'] * 1e3:.0f} ms / sb3 {m['sb3'] * 1e3:.0f} ms"
                             for cfg, m in entry["median_s"].items())
            print(f"round {r + 1}/{rounds}  {line}", flush=True)

        diagnostics = {}
        if not args.quick:
            for cfg in configs:
                diagnostics[cfg] = {"tftrpo": tfw.request(cmd="diagnose", config=cfg, timeout=600),
                                    "sb3": sbw.request(cmd="diagnose", config=cfg, timeout=600)}
        micro = tfw.request(cmd="micro", config="full", repeats=10 if args.quick else 30)
    finally:
        for w in workers.values():
            w.close()

    summary = {}
    for cfg in configs:
        flat = {lib: [t for rep in raw[lib][cfg] for t in rep] for lib in workers}
        s = {lib: common.summary(flat[lib]) for lib in workers}
        per_round = [e["median_s"][cfg]["tftrpo"] / e["median_s"][cfg]["sb3"] for e in rounds_log]
        s["ratio_tftrpo_over_sb3_of_medians"] = s["tftrpo"]["median"] / s["sb3"]["median"]
        s["ratio_tftrpo_over_sb3_of_mins"] = s["tftrpo"]["min"] / s["sb3"]["min"]
        s["ratio_per_round"] = common.summary(per_round)
        summary[cfg] = s

    breakdown = _breakdown(summary, diagnostics, micro)
    payload = {
        "benchmark": "update_speed",
        "description": "one TRPO update (train call) on 2048 Hopper-v5 samples, tftrpo vs sb3-contrib",
        **common.provenance(tftrpo_path, not args.tftrpo_path),
        "settings": {**SETTINGS, "tftrpo_steps_per_env": TF_STEPS_PER_ENV, "sb3_n_steps": SB3_STEPS_PER_ENV,
                     "intra_op_threads": args.threads, "inter_op_threads": 1, "rounds": rounds,
                     "repeats_per_round": repeats, "seed": args.seed,
                     "configs": {k: {"tftrpo": v[0], "sb3": v[1]} for k, v in configs.items()},
                     "state_restored_before_each_repeat": True},
        "setup": setup,
        "summary": summary,
        "diagnostics": diagnostics,
        "tftrpo_micro_ms": micro,
        "breakdown": breakdown,
        "rounds": rounds_log,
        "raw_seconds": raw,
        "wall_seconds": time.time() - started,
    }
    os.makedirs(common.RESULTS_DIR, exist_ok=True)
    json_path, png_path = common.result_paths(name)
    common.write_json(json_path, payload)
    _plot(png_path, summary, raw, configs, setup)
    _report(summary, breakdown, json_path, png_path)
    return payload


def _breakdown(summary, diagnostics, micro):
    """Per-part cost estimates from the configuration differences (medians, ms)."""
    out = {}
    for lib in ("tftrpo", "sb3"):
        med = {cfg: summary[cfg][lib]["median"] * 1e3 for cfg in summary}
        b = {"train_call_ms": med.get("full"), "policy_step_ms": med.get("policy")}
        if "full" in med and "policy" in med:
            b["value_fitting_ms"] = med["full"] - med["policy"]
        if "policy_cg1" in med and diagnostics:
            key = "fisher_vector_products" if lib == "tftrpo" else "hessian_vector_products"
            n25 = diagnostics["policy"][lib][key]
            n1 = diagnostics["policy_cg1"][lib][key]
            b["cg_iterations_policy"] = diagnostics["policy"][lib]["cg_iterations"]
            b["cg_iterations_policy_cg1"] = diagnostics["policy_cg1"][lib]["cg_iterations"]
            if n25 > n1:
                b["per_fisher_vector_product_ms"] = (med["policy"] - med["policy_cg1"]) / (n25 - n1)
                b["all_fisher_vector_products_ms"] = b["per_fisher_vector_product_ms"] * n25
                b["policy_step_without_fvps_ms"] = med["policy"] - b["all_fisher_vector_products_ms"]
        out[lib] = b
    if micro:
        out["tftrpo"]["micro_ms"] = {k: v.get("median_ms", v.get("error")) for k, v in micro.items()}
    return out


def _plot(path, summary, raw, configs, setup):
    panels = []
    for cfg in configs:
        groups = [(lib, [t * 1e3 for rep in raw[lib][cfg] for t in rep]) for lib in ("tftrpo", "sb3")]
        ratio = summary[cfg]["ratio_per_round"]["median"]
        panels.append((f"{cfg}\ntftrpo/sb3 = {ratio:.2f}", groups))
    tv, sv = setup["tftrpo"]["versions"], setup["sb3"]["versions"]
    title = (f"One TRPO update, Hopper-v5, 2048 samples, 1 thread\n"
             f"tftrpo {tv['tftrpo']} (TF {tv['tensorflow']}) vs sb3-contrib {sv['sb3_contrib']} (torch {sv['torch']}); "
             f"train call tftrpo/sb3 = {summary['full']['ratio_per_round']['median']:.2f} (median per round)")
    common.box_strip_plot(path, panels, title, "ms per train() call")


def _report(summary, breakdown, json_path, png_path):
    print()
    print(f"{'config':14s} {'lib':7s} {'min ms':>8s} {'median':>8s} {'max':>8s}   tftrpo/sb3 per round: median (min-max)")
    for cfg, s in summary.items():
        for lib in ("tftrpo", "sb3"):
            x = s[lib]
            r = s["ratio_per_round"]
            extra = f"   {r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})" if lib == "tftrpo" else ""
            print(f"{cfg:14s} {lib:7s} {x['min'] * 1e3:8.1f} {x['median'] * 1e3:8.1f} {x['max'] * 1e3:8.1f}{extra}")
    print()
    for lib, b in breakdown.items():
        print(lib, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in b.items()})
    print(f"\nwrote {json_path}\nwrote {png_path}")


if __name__ == "__main__":
    main()
