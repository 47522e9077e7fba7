"""tftrpo side of bench/update_speed.py (runs in tftrpo's venv, /work/venv).

Setup ("setup" request): one Hopper-v5 batch of 2 envs × 1025 steps collected by
the agent's collect policy through TFPyEnvironment + DynamicStepDriver into a
TFUniformReplayBuffer, `gather_all()`; then one TRPOAgent per configuration
(same network seed), each trained once on the batch to trace its tf.function.

Timing ("time" request): `agent.train(experience)` `repeats` times. Before each
call every variable of the agent (networks, normalisers, counter, Adam slots) is
restored to the snapshot taken after warm-up, outside the timed region, so all
repeats do identical work (same line-search path).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _worker_io import serve  # noqa: E402

STATE = {}


def _threads(intra, inter):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return tf


def setup(req):
    t_start = time.perf_counter()
    tf = _threads(int(req.get("intra_threads", 1)), int(req.get("inter_threads", 1)))
    import numpy as np
    import tf_agents
    from tf_agents.drivers import dynamic_step_driver
    from tf_agents.environments import tf_py_environment
    from tf_agents.replay_buffers import tf_uniform_replay_buffer
    from tf_agents.utils import common

    import tftrpo
    from tftrpo import TRPOAgent, networks
    from tftrpo.envs import load_batched

    s = req["settings"]
    seed = int(req.get("seed", 0))
    tf.random.set_seed(seed)
    np.random.seed(seed)
    num_envs, steps_per_env = int(s["num_envs"]), int(s["steps_per_env"])
    env = tf_py_environment.TFPyEnvironment(load_batched(s["env_id"], num_envs=num_envs, seed=seed))
    obs_spec, action_spec = env.observation_spec(), env.action_spec()

    def make_agent(overrides):
        kwargs = dict(
            max_kl=s["max_kl"], cg_iters=s["cg_iters"], cg_damping=s["cg_damping"],
            line_search_max_backtracks=s["line_search_max_backtracks"],
            line_search_shrink=s["line_search_shrink"], accept_ratio=s["accept_ratio"],
            discount_factor=s["gamma"], lambda_value=s["gae_lambda"],
            value_train_epochs=s["value_epochs"], value_minibatch_size=s["value_minibatch_size"],
            normalize_observations=s["normalize_observations"], normalize_advantages=True,
        )
        if "normalize_rewards" in s:
            kwargs["normalize_rewards"] = s["normalize_rewards"]
        kwargs.update(overrides)
        actor = networks.actor_network(obs_spec, action_spec, tuple(s["hidden"]), seed=seed)
        value = networks.value_network(obs_spec, tuple(s["hidden"]), seed=seed + 1)
        return TRPOAgent(env.time_step_spec(), action_spec, actor, value,
                         tf.keras.optimizers.Adam(s["value_lr"]),
                         train_step_counter=tf.Variable(0, dtype=tf.int64), **kwargs)

    configs = req["configs"]  # {name: {agent kwarg overrides}}
    agents = {name: make_agent(over) for name, over in configs.items()}
    first = agents[next(iter(agents))]

    # Rollout: a real one, with the (untrained) collect policy of the first agent.
    buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        first.collect_data_spec, batch_size=num_envs, max_length=steps_per_env)
    driver = dynamic_step_driver.DynamicStepDriver(
        env, first.collect_policy, observers=[buffer.add_batch], num_steps=num_envs * steps_per_env)
    t0 = time.perf_counter()
    common.function(driver.run)()
    collect_s = time.perf_counter() - t0
    experience = buffer.gather_all()

    states, traces = {}, {}
    for name, agent in agents.items():
        t0 = time.perf_counter()
        info = agent.train(experience)  # traces the update
        float(info.loss)
        traces[name] = time.perf_counter() - t0
        for _ in range(int(req.get("warmup", 2))):
            float(agent.train(experience).loss)
        variables = _all_variables(agent)
        states[name] = (variables, [v.numpy() for v in variables])

    STATE.update(tf=tf, agents=agents, experience=experience, states=states, make_agent=make_agent,
                 configs=configs)
    step_type = experience.step_type.numpy()
    return {
        "library": "tftrpo",
        "versions": {"tftrpo": getattr(tftrpo, "__version__", "?"), "tensorflow": tf.__version__,
                     "tf_agents": tf_agents.__version__, "numpy": np.__version__,
                     "gymnasium": __import__("gymnasium").__version__, "mujoco": __import__("mujoco").__version__,
                     "python": sys.version.split()[0]},
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "batch_shape": list(step_type.shape),
        "episode_boundaries_in_batch": int((step_type == 2).sum()),
        "collect_seconds": collect_s,
        "trace_plus_first_call_seconds": traces,
        "num_actor_params": int(sum(v.shape.num_elements() for v in first._actor_net.trainable_variables)),
        "num_value_params": int(sum(v.shape.num_elements() for v in first._value_net.trainable_variables)),
        "setup_seconds": time.perf_counter() - t_start,
    }


def _all_variables(agent):
    seen, out = set(), []
    opt_vars = agent._optimizer.variables
    opt_vars = opt_vars() if callable(opt_vars) else opt_vars
    for v in list(agent.variables) + list(opt_vars):
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _restore(name):
    variables, values = STATE["states"][name]
    for v, x in zip(variables, values):
        v.assign(x)


def time_cfg(req):
    name, repeats = req["config"], int(req["repeats"])
    agent, experience = STATE["agents"][name], STATE["experience"]
    times, extras = [], []
    for _ in range(repeats):
        _restore(name)
        t0 = time.perf_counter()
        info = agent.train(experience)
        loss = float(info.loss)  # forces completion
        times.append(time.perf_counter() - t0)
        e = info.extra
        extras.append({"loss": loss, "kl": float(e.kl), "backtracks": int(e.line_search_backtracks),
                       "rejected": bool(e.step_rejected), "num_samples": int(e.num_samples)})
    return {"times": times, "diagnostics": extras[-1], "backtracks": [x["backtracks"] for x in extras]}


def micro(req):
    """Pieces of the update timed alone (same thread settings), in ms per call."""
    tf = STATE["tf"]
    from tftrpo import advantages as adv_lib

    agent = STATE["agents"][req["config"]]
    exp = STATE["experience"]
    repeats = int(req.get("repeats", 20))
    values = tf.zeros_like(exp.reward)

    @tf.function
    def gae():
        return adv_lib.generalized_advantage_estimation(exp.reward, values, exp.discount, exp.next_step_type,
                                                        0.99, 0.95)

    obs = agent._normalize(exp.observation)
    from tftrpo.normalization import RewardNormalizer

    reward_normalizer = RewardNormalizer(0.99)  # a fresh one: the agent's state stays untouched
    reward_normalizer.scale(exp.reward, exp.step_type)  # eagerly once: running return now [B]

    @tf.function
    def reward_scan():
        return reward_normalizer.scale(exp.reward, exp.step_type)

    @tf.function
    def actor_forward():
        return agent.action_distribution(obs, exp.step_type).mean()

    out = {}
    for label, fn in (("gae_scan", gae), ("reward_normalizer_scan", reward_scan), ("actor_forward", actor_forward)):
        try:
            fn()
        except Exception as e:  # a piece whose internals changed: report, keep the others
            out[label] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            continue
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = fn()
            _ = r.numpy()
            ts.append(time.perf_counter() - t0)
        ts.sort()
        out[label] = {"median_ms": 1e3 * ts[len(ts) // 2], "min_ms": 1e3 * ts[0]}
    return out


def diagnose(req):
    """Counts the Fisher-vector products of one update (one per CG iteration; both product forms).

    Builds a second agent of the same configuration while `natural_gradient.fisher_vector_product`
    is wrapped (in this process only) with a graph-side counter, loads the timed agent's
    snapshot into it and trains once: the same work as a timed repeat, plus the counter.
    """
    tf = STATE["tf"]
    import tftrpo.natural_gradient as ng

    name = req["config"]
    counter = tf.Variable(0, dtype=tf.int64)
    residual = tf.Variable(0.0)  # ||b - F x||² after CG, from one extra (subtracted) product
    rhs = tf.Variable(0.0)  # ||b||²
    original_fvp, original_gn, original_cg = (ng.fisher_vector_product, ng.gauss_newton_fisher_vector_product,
                                              ng.conjugate_gradient)

    def counting(fn):
        def counted(*args, **kwargs):
            with tf.control_dependencies([counter.assign_add(1)]):
                return tf.identity(fn(*args, **kwargs))
        return counted

    def cg_with_residual(matvec, b, *args, **kwargs):
        out = original_cg(matvec, b, *args, **kwargs)
        x = out[0] if isinstance(out, tuple) else out
        r = b - matvec(x)
        with tf.control_dependencies([residual.assign(tf.tensordot(r, r, 1)), rhs.assign(tf.tensordot(b, b, 1))]):
            return tf.nest.map_structure(tf.identity, out)

    ng.fisher_vector_product, ng.gauss_newton_fisher_vector_product = counting(original_fvp), counting(original_gn)
    ng.conjugate_gradient = cg_with_residual
    try:
        agent = STATE["make_agent"](STATE["configs"][name])
        experience = STATE["experience"]
        agent.train(experience)  # trace (and create any lazily built variables)
        _, values = STATE["states"][name]
        for v, x in zip(_all_variables(agent), values):
            v.assign(x)
        counter.assign(0)
        extra = agent.train(experience).extra
    finally:
        ng.fisher_vector_product, ng.gauss_newton_fisher_vector_product = original_fvp, original_gn
        ng.conjugate_gradient = original_cg
    fvps = int(counter.numpy()) - 1  # minus the residual check
    return {"fisher_vector_products": fvps, "cg_iterations": fvps,
            "cg_final_residual_sq": float(residual.numpy()), "cg_rhs_sq": float(rhs.numpy()),
            "line_search_candidates": int(extra.line_search_backtracks) + (0 if bool(extra.step_rejected) else 1),
            "step_rejected": bool(extra.step_rejected), "num_samples": int(extra.num_samples)}


if __name__ == "__main__":
    serve({"setup": setup, "time": time_cfg, "micro": micro, "diagnose": diagnose})
