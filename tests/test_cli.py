"""tftrpo-train / tftrpo-play end to end, in subprocesses, on a short budget."""
import csv
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
SHORT = ["--env", "CartPole-v1", "--steps-per-env", "128", "--eval-interval", "2", "--eval-episodes", "2",
         "--value-train-epochs", "2", "--no-progress"]


def cli(tool, *args, cwd, check=True, **kw):
    proc = subprocess.run([sys.executable, "-m", f"tftrpo.{tool}", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def progress(run_dir):
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return list(csv.DictReader(f))


def tensorboard_tags(logdir):
    from tensorboard.backend.event_processing import event_accumulator

    tags = set()
    for name in os.listdir(logdir):
        acc = event_accumulator.EventAccumulator(str(logdir / name), size_guidance={"tensors": 0})
        acc.Reload()
        tags.update(acc.Tags()["tensors"])
    return tags


def test_train_kill_resume_export_and_play(tmp_path):
    run_dir = tmp_path / "runs" / "cp"
    # A long budget, checkpointed every 2 iterations, killed once a few are done.
    proc = subprocess.Popen([sys.executable, "-m", "tftrpo.train", *SHORT, "--steps", "200000",
                             "--checkpoint-interval", "2", "--run-dir", str(run_dir)], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run_dir / "progress.csv").exists() and len(progress(run_dir)) >= 5:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = progress(run_dir)
    assert len(before) >= 5
    saved = sorted(int(name.split("-")[1].split(".")[0]) for name in os.listdir(run_dir / "checkpoints")
                   if name.startswith("ckpt-") and name.endswith(".index"))
    assert saved and all(n % 2 == 0 for n in saved) and 4 <= saved[-1] <= len(before)

    resumed = cli("train", "--run-dir", str(run_dir), "--resume", "--steps", str(int(before[-1]["env_steps"]) + 1024),
                  cwd=tmp_path)
    rows = progress(run_dir)
    iterations = [int(r["iteration"]) for r in rows]
    steps = [int(r["env_steps"]) for r in rows]
    # The counters continue from the checkpoint: the rows after it were dropped and redone,
    # no iteration repeated, none skipped, steps monotone.
    assert rows[:saved[-1]] == before[:saved[-1]]
    assert iterations == list(range(1, len(rows) + 1))
    assert all(b > a for a, b in zip(steps, steps[1:]))
    assert len(rows) > len(before) - 1
    assert steps[-1] >= int(before[-1]["env_steps"]) + 1024 - 2 * 128

    config = json.loads((run_dir / "config.json").read_text())
    export = tmp_path / config["export_dir"]
    assert (export / "saved_model.pb").exists()
    meta = json.loads((export / "tftrpo_run.json").read_text())
    assert meta["env"] == "CartPole-v1" and meta["iterations"] == iterations[-1]
    assert meta["numpy_policy_collection"] is True  # the default, for an MLP actor
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    tags = tensorboard_tags(run_dir / "tensorboard")
    for tag in ("Metrics/AverageReturn", "Metrics/AverageEpisodeLength", "Metrics/EvalAverageReturn",
                "Metrics/StepsPerSecond", "TRPOAgent/TrustRegion/kl", "TRPOAgent/TrustRegion/actual_improvement",
                "TRPOAgent/TrustRegion/line_search_backtracks", "TRPOAgent/Losses/entropy",
                "TRPOAgent/Losses/value_loss", "TRPOAgent/Losses/explained_variance"):
        assert tag in tags, (tag, sorted(tags))

    played = cli("play", str(export), "--episodes", "2", cwd=tmp_path)
    assert played.stdout.count("episode ") == 2 and "mean return" in played.stdout
    # TensorFlow's notices on saving and loading the SavedModel are not the run's output: dropped.
    for proc in (resumed, played):
        assert "Sanitizing" not in proc.stderr and "Encoding a StructuredValue" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("sampling", ["single_path", "tf_loop", "vine"])
def test_a_resumed_run_repeats_the_uninterrupted_run_bit_for_bit(tmp_path, sampling):
    """A run that stops at a checkpoint and is resumed gives the uninterrupted run's rows exactly.

    The checkpoint holds the agent (the value regression's minibatch seed included) and the
    counters; beside it, the envs' simulator and RNG states, the sampler's generator (the TF
    loop's: its collect count, for stateless draws) and the episodes in progress. Evaluations
    seed their episodes from (seed, iteration). The stopped
    leg's last row carries its final evaluation, which the uninterrupted run has only on its
    --eval-interval; every other field of every row is equal.
    """
    flags = [*SHORT, "--seed", "5", "--checkpoint-interval", "3"]
    if sampling == "vine":  # single path's row length is refused with vine sampling
        flags = [flag for flag in flags if flag not in ("--steps-per-env", "128")]
    # The TF loop's run also sets --threads, which the resumed run takes from its config.json.
    flags += ["--no-numpy-policy", "--threads", "1"] if sampling == "tf_loop" else ["--sampling", sampling]
    budget = 2048
    if sampling == "vine":
        flags += ["--vine-states", "8", "--vine-rollout-length", "20", "--vine-trunk-steps", "64"]
        budget = 3000
    whole, split = tmp_path / "whole", tmp_path / "split"
    cli("train", *flags, "--steps", str(budget), "--run-dir", str(whole), "--export-dir", str(tmp_path / "ew"),
        cwd=tmp_path)
    cli("train", *flags, "--steps", str(budget // 2), "--run-dir", str(split), "--export-dir", str(tmp_path / "es"),
        cwd=tmp_path)
    stopped_at = len(progress(split))
    resumed = cli("train", "--run-dir", str(split), "--resume", "--steps", str(budget), cwd=tmp_path)
    assert "no saved env and sampler state" not in resumed.stderr and "cannot be snapshotted" not in resumed.stderr

    expected, got = progress(whole), progress(split)
    assert 2 <= stopped_at < len(got) == len(expected)
    exact = [c for c in expected[0] if c not in ("steps_per_second", "wall_time", "eval_return")]
    for a, b in zip(expected, got):
        assert [a[c] for c in exact] == [b[c] for c in exact], (a, b)
        if int(b["iteration"]) != stopped_at or a["eval_return"]:
            assert a["eval_return"] == b["eval_return"], (a, b)
    meta = [json.loads((tmp_path / d / "tftrpo_run.json").read_text()) for d in ("ew", "es")]
    assert meta[0]["final_eval_return"] == meta[1]["final_eval_return"]
    assert meta[0]["tf_threads"] == meta[1]["tf_threads"] == ({"intra_op": 1, "inter_op": 1} if sampling == "tf_loop"
                                                                else {"intra_op": 0, "inter_op": 0})
    kept = sorted(name for name in os.listdir(split / "checkpoints") if name.startswith("run-state-"))
    assert len(kept) == 3 and all(name.endswith(".pkl") for name in kept)  # as many as the checkpoints kept



def test_a_run_of_an_older_tftrpo_still_resumes(tmp_path):
    """A run directory from before exact resumes (tests/data: no minibatch seed in the agent's
    checkpoint, no run-state pickle) resumes with both gaps said on stderr, and trains on."""
    shutil.copytree(os.path.join(REPO, "tests", "data", "run_before_exact_resume"), tmp_path / "oldrun")
    resumed = cli("train", "--run-dir", str(tmp_path / "oldrun"), "--resume", "--steps", "512", "--no-progress",
                  cwd=tmp_path)
    assert "has no minibatch seed" in resumed.stderr and "no saved env and sampler state" in resumed.stderr
    rows = progress(tmp_path / "oldrun")
    assert [int(r["iteration"]) for r in rows] == list(range(1, len(rows) + 1)) and len(rows) > 2
    assert (tmp_path / "oldexp" / "saved_model.pb").exists()


def test_same_seed_same_run_in_a_fresh_process(tmp_path):
    """--seed fixes everything random: weights, policy noise, envs, minibatch order.

    With either collect policy: the NumPy mirror (the default) and the TF loop
    (--no-numpy-policy), whose noise comes from another generator.
    """
    def run(name, seed, *flags):
        cli("train", *SHORT, "--steps", "1024", "--seed", str(seed), "--run-dir", str(tmp_path / name),
            "--export-dir", str(tmp_path / "export" / name), *flags, cwd=tmp_path)
        meta = json.loads((tmp_path / "export" / name / "tftrpo_run.json").read_text())
        assert meta["numpy_policy_collection"] is ("--no-numpy-policy" not in flags)
        # TensorFlow's thread pools as it reports them: the flag's count, or 0 (its default).
        threads = int(flags[flags.index("--threads") + 1]) if "--threads" in flags else 0
        assert meta["tf_threads"] == {"intra_op": threads, "inter_op": threads}
        columns = ("env_steps", "train_return", "eval_return", "kl", "surrogate_improvement", "entropy", "value_loss")
        return [[row[c] for c in columns] for row in progress(tmp_path / name)]

    first, again, other = run("a", 3), run("b", 3), run("c", 4, "--threads", "1")
    assert len(first) >= 3
    # The run ends as near its --steps budget as whole iterations of 2 × 128 slots allow.
    assert abs(int(first[-1][0]) - 1024) <= 128 and all(abs(int(r[-1][0]) - 1024) <= 128 for r in (again, other))
    assert first == again
    assert [r[3:] for r in first] != [r[3:] for r in other]
    tf_loop, tf_loop_again = run("d", 3, "--no-numpy-policy"), run("e", 3, "--no-numpy-policy")
    assert tf_loop == tf_loop_again
    assert [r[3:] for r in tf_loop] != [r[3:] for r in first]


def test_help_and_argument_errors_do_not_load_tensorflow(tmp_path):
    probe = ("import sys\nfrom tftrpo import train\ntrain.build_parser()\n"
             "assert 'tensorflow' not in sys.modules, sorted(m for m in sys.modules if 'tensorflow' in m)[:3]\n"
             "import tftrpo\nassert tftrpo.TRPOAgent.__name__ == 'TRPOAgent' and 'tensorflow' in sys.modules\n")
    subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=ENV, check=True, timeout=300)
    unknown = cli("train", "--env", "Nope-v5", cwd=tmp_path, check=False)
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "tftrpo-train: error: Unknown gymnasium env id 'Nope-v5'. Did you mean: Hopper-v5, Hopper-v4, Hopper-v3?"]


def test_the_old_gym_packages_notice_is_not_printed(tmp_path):
    # tf-agents imports gym 0.23, whose import prints "Gym has been unmaintained ..."; the CLIs drop it.
    bad = cli("train", "--env", "CartPole-v1", "--max-kl", "-1", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "unmaintained" not in bad.stderr and "--max-kl must be > 0" in bad.stderr


def test_bad_input_exits_nonzero_with_a_clear_message(tmp_path):
    unknown = cli("train", "--env", "CartPoel-v1", cwd=tmp_path, check=False)
    assert unknown.returncode == 2 and "CartPole-v1" in unknown.stderr and "Unknown" in unknown.stderr

    nonsense = cli("train", "--max-kl", "lots", cwd=tmp_path, check=False)
    assert nonsense.returncode == 2 and "--max-kl" in nonsense.stderr
    negative = cli("train", "--max-kl", "-1", "--env", "CartPole-v1", "--steps", "10", cwd=tmp_path, check=False)
    assert negative.returncode == 2 and "tftrpo-train: error: --max-kl must be > 0 and finite, got -1.0" in negative.stderr
    assert "configurable" not in negative.stderr  # gin's annotation is not for command-line users
    assert not (tmp_path / "runs").exists()  # a rejected run leaves no directory behind
    never = cli("train", "--checkpoint-interval", "0", "--env", "CartPole-v1", cwd=tmp_path, check=False)
    assert never.returncode == 2 and "--checkpoint-interval must be >= 1" in never.stderr
    threads = cli("train", "--threads", "0", "--env", "CartPole-v1", cwd=tmp_path, check=False)
    assert threads.returncode == 2 and "--threads must be >= 1, got 0" in threads.stderr
    for flag, value, message in (("--policy-output-gain", "0", "must be > 0"), ("--value-adam-epsilon", "-1e-5", "must be > 0"),
                                 ("--value-output-gain", "-1", "must be >= 0"), ("--value-learning-rate", "-1e-3", "must be > 0")):
        bad_init = cli("train", flag, value, "--env", "CartPole-v1", cwd=tmp_path, check=False)
        assert bad_init.returncode == 2 and f"{flag} {message}" in bad_init.stderr, bad_init.stderr
    vine_numpy = cli("train", "--sampling", "vine", "--numpy-policy", "--env", "CartPole-v1", "--steps", "10",
                     cwd=tmp_path, check=False)
    assert vine_numpy.returncode == 2 and "--numpy-policy applies to single-path sampling" in vine_numpy.stderr
    no_branches = cli("train", "--sampling", "vine", "--vine-branch-envs", "0", "--env", "CartPole-v1", "--steps", "10",
                      cwd=tmp_path, check=False)
    assert no_branches.returncode == 2 and "num_branch_envs >= 1" in no_branches.stderr, no_branches.stderr[-2000:]
    assert not (tmp_path / "runs").exists()

    missing = cli("train", "--run-dir", str(tmp_path / "nope"), "--resume", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "nothing to resume" in missing.stderr

    # An existing run directory is never overwritten without --resume.
    run_dir = tmp_path / "runs" / "existing"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    existing = cli("train", *SHORT, "--steps", "256", "--run-dir", str(run_dir), cwd=tmp_path, check=False)
    assert existing.returncode == 2 and "already exists" in existing.stderr
    assert (run_dir / "config.json").read_text() == "{}"

    with_flags = cli("train", "--run-dir", str(run_dir), "--resume", "--max-kl", "0.5", "--seed", "3", "--sampling",
                     "vine", "--export-dir", str(tmp_path / "elsewhere"), "--steps", "512", cwd=tmp_path, check=False)
    assert with_flags.returncode == 2 and "only --steps may be given" in with_flags.stderr
    assert with_flags.stderr.strip().endswith("(got --seed, --sampling, --export-dir, --max-kl)"), with_flags.stderr

    for name in ("bogus", "serialize"):  # not a name at all; a helper of keras.activations, not an activation
        activation = cli("train", "--activation", name, "--env", "CartPole-v1", cwd=tmp_path, check=False)
        assert activation.returncode == 2, activation.stderr[-2000:]
        assert f"tftrpo-train: error: --activation: '{name}' is not a Keras activation" in activation.stderr
        assert "Traceback" not in activation.stderr and not (tmp_path / "runs" / "CartPole-v1-seed0").exists()


def test_resume_from_a_corrupt_checkpoint_is_refused(tmp_path):
    run_dir = tmp_path / "runs" / "corrupt"
    cli("train", *SHORT, "--steps", "256", "--run-dir", str(run_dir), cwd=tmp_path)
    ckpt_dir = run_dir / "checkpoints"
    for name in os.listdir(ckpt_dir):
        if name.endswith(".index") or ".data-" in name:
            (ckpt_dir / name).write_bytes(b"garbage")
    corrupt = cli("train", "--run-dir", str(run_dir), "--resume", "--steps", "1024", cwd=tmp_path, check=False)
    assert corrupt.returncode == 2 and "cannot restore the checkpoint" in corrupt.stderr


def test_the_step_budget_ends_a_run_at_the_nearest_whole_iteration():
    from tftrpo.train import another_iteration

    # 2 envs × 1024 slots; resets take a slot each, so an iteration is ~2046 steps.
    assert another_iteration(0, 4096, 2048) and another_iteration(2046, 4096, 2048)
    assert not another_iteration(4092, 4096, 2048)  # 4 short: a third iteration would overshoot by ~2042
    assert another_iteration(4096 - 1025, 4096, 2048) and not another_iteration(4096 - 1024, 4096, 2048)
    assert not another_iteration(4096, 4096, 2048) and not another_iteration(5000, 4096, 2048)
    # A fresh run always trains once, even on a budget below one iteration.
    assert another_iteration(0, 100, 2048) and not another_iteration(2040, 100, 2048)
    # A 1M-step MuJoCo run: Swimmer's 488 iterations of 2046 leave 1552 short, so a 489th runs.
    assert another_iteration(488 * 2046, 1_000_000, 2048) and not another_iteration(489 * 2046, 1_000_000, 2048)


def test_no_jit_compile_trains_without_xla(tmp_path):
    """`--no-jit-compile` reaches the agent: no XLA cluster is compiled (TF logs the first one at
    INFO level), while the default run compiles one; the choice is recorded in config.json."""
    def run(name, *flags):
        proc = subprocess.run([sys.executable, "-m", "tftrpo.train", *SHORT, "--steps", "512", "--run-dir",
                               str(tmp_path / name), "--export-dir", str(tmp_path / "export" / name), *flags],
                              cwd=tmp_path, env={**ENV, "TF_CPP_MIN_LOG_LEVEL": "0"}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        config = json.loads((tmp_path / name / "config.json").read_text())["config"]
        return "Compiled cluster using XLA" in proc.stderr, config["jit_compile"], len(progress(tmp_path / name))

    assert run("xla") == (True, True, 2)
    assert run("graph", "--no-jit-compile") == (False, False, 2)


def test_no_training_return_is_reported_before_an_episode_has_finished(tmp_path):
    """Pendulum's episodes last 200 steps: the first iterations of 2 × 64 slots finish none, and
    their rows leave train_return empty instead of reporting a return of 0."""
    run_dir = tmp_path / "pendulum"
    cli("train", "--env", "Pendulum-v1", "--steps-per-env", "64", "--steps", "640", "--eval-interval", "5",
        "--eval-episodes", "1", "--value-train-epochs", "1", "--no-progress", "--run-dir", str(run_dir),
        "--export-dir", str(tmp_path / "export"), cwd=tmp_path)
    returns = [row["train_return"] for row in progress(run_dir)]
    assert returns[:3] == ["", "", ""] and returns[3] and float(returns[3]) < 0, returns  # first ends at step 200
    lengths = [row["train_episode_length"] for row in progress(run_dir)]
    assert lengths[:3] == ["", "", ""] and float(lengths[3]) == 200.0


def test_resuming_envs_that_cannot_be_snapshotted_says_so(tmp_path):
    """FrozenLake has no simulator-state handler in env_state: its run resumes with the envs'
    episodes restarted, and says that the resumed run is not bit for bit the uninterrupted one."""
    run_dir = tmp_path / "lake"
    flags = ["--env", "FrozenLake-v1", "--no-normalize-observations", "--steps-per-env", "64", "--value-train-epochs",
             "1", "--eval-episodes", "1", "--no-progress", "--run-dir", str(run_dir)]
    first = cli("train", *flags, "--steps", "256", cwd=tmp_path)
    assert "cannot be snapshotted" not in first.stderr
    resumed = cli("train", "--run-dir", str(run_dir), "--resume", "--steps", "512", cwd=tmp_path)
    assert "FrozenLake-v1's envs cannot be snapshotted" in resumed.stderr, resumed.stderr[-2000:]
    assert len(progress(run_dir)) == 4


def test_play_refuses_what_is_not_an_export(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_metadata = cli("play", str(empty), cwd=tmp_path, check=False)
    assert no_metadata.returncode == 2 and "tftrpo_run.json not found; pass --env" in no_metadata.stderr
    no_model = cli("play", str(empty), "--env", "CartPole-v1", cwd=tmp_path, check=False)
    assert no_model.returncode == 2 and "tftrpo-play: error:" in no_model.stderr
    assert "is not a SavedModel directory (no saved_model.pb)" in no_model.stderr
    assert "Traceback" not in no_model.stderr, no_model.stderr[-2000:]
    episodes = cli("play", str(empty), "--episodes", "0", cwd=tmp_path, check=False)
    assert episodes.returncode == 2 and "--episodes must be >= 1" in episodes.stderr


def test_play_refuses_another_envs_policy_and_unwritable_videos(tmp_path):
    shipped = os.path.join(REPO, "savedmodels", "InvertedPendulum-v5-shipped")
    other_env = cli("play", shipped, "--env", "Hopper-v5", "--episodes", "1", cwd=tmp_path, check=False)
    assert other_env.returncode == 2 and "Traceback" not in other_env.stderr, other_env.stderr[-2000:]
    assert "the policy takes observations of shape [4] and dtype float32, but the env gives [11]" in other_env.stderr
    same_observations = cli("play", shipped, "--env", "CartPole-v1", "--episodes", "1", cwd=tmp_path, check=False)
    assert same_observations.returncode == 2 and "Traceback" not in same_observations.stderr
    assert "the policy's actions have shape [1] and dtype float32, but the env takes [] int64" in same_observations.stderr
    avi = cli("play", shipped, "--video", "x.avi", cwd=tmp_path, check=False)
    assert avi.returncode == 2 and "must end in .gif or .mp4" in avi.stderr
    if importlib.util.find_spec("imageio_ffmpeg") is None:  # the `video` extra is not installed
        mp4 = cli("play", shipped, "--video", "x.mp4", cwd=tmp_path, check=False)
        assert mp4.returncode == 2 and 'pip install "tftrpo[video]"' in mp4.stderr
        assert not (tmp_path / "x.mp4").exists()


def test_video_gif_frames_last_a_thirtieth_of_a_second(tmp_path):
    from PIL import Image
    from tftrpo.play import write_video

    frames = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)]
    write_video(str(tmp_path / "v.GIF"), frames)
    with Image.open(tmp_path / "v.GIF") as gif:
        assert gif.n_frames == 5
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert durations == [30] * 5  # 1/30 s in GIF's centiseconds


def _resolve(*argv):
    from tftrpo import train

    return train._resolve_run(train.build_parser().parse_args(list(argv)))


def test_run_directory_and_flag_checks_before_anything_runs(tmp_path, monkeypatch):
    """Checks made before TensorFlow loads, each naming the flag: an export directory that would
    hold the run (the export replaces it at the end), seeds NumPy cannot take, flags of the
    other sampling scheme (they would be ignored), layer widths < 1, infinite gains."""
    from tftrpo import train

    monkeypatch.chdir(tmp_path)
    for export in ("same", "."):
        with pytest.raises(train.UsageError, match="would hold the run directory"):
            _resolve("--env", "CartPole-v1", "--run-dir", "same", "--export-dir", export)
    env_id, seed, sampling, config, run_dir, export_dir = _resolve("--env", "CartPole-v1", "--run-dir", "r")
    assert (run_dir, export_dir) == (str(tmp_path / "r"), str(tmp_path / "savedmodels" / "r"))  # absolute
    for seed in ("-1", str(2**32)):
        with pytest.raises(train.UsageError, match=r"--seed must be in \[0, 2\*\*32\)"):
            _resolve("--env", "CartPole-v1", "--seed", seed)
    with pytest.raises(train.UsageError, match="--vine-states, --vine-rollout-length apply to vine sampling"):
        _resolve("--env", "CartPole-v1", "--vine-states", "8", "--vine-rollout-length", "7")
    with pytest.raises(train.UsageError, match="--steps-per-env applies to single-path sampling"):
        _resolve("--env", "CartPole-v1", "--sampling", "vine", "--steps-per-env", "64")
    with pytest.raises(train.UsageError, match="--no-numpy-policy|--numpy-policy"):
        _resolve("--env", "CartPole-v1", "--sampling", "vine", "--no-numpy-policy")
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--hidden-layers", "0,64"])
    config = _resolve("--env", "CartPole-v1", "--policy-output-gain", "inf")[3]
    with pytest.raises(train.UsageError, match="--policy-output-gain must be > 0 and finite"):
        train._check_positive(config)
    from tftrpo import TRPOAgent

    with pytest.raises(ValueError, match="max_kl must be > 0 and finite, got inf"):
        TRPOAgent._check_hyperparameters(float("inf"), 10, 0.1, 10, 0.8, 0.1, 0.99, 0.95, 1, 1)
    with pytest.raises(ValueError, match="cg_damping must be >= 0 and finite, got nan"):
        TRPOAgent._check_hyperparameters(0.01, 10, float("nan"), 10, 0.8, 0.1, 0.99, 0.95, 1, 1)


def test_resuming_an_older_runs_config_names_the_settings_it_lacks(tmp_path, monkeypatch, capsys):
    """Settings added since an older run take today's defaults, said on stderr; settings this
    version does not know are refused (not a TypeError traceback)."""
    from tftrpo import presets, train

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    config = dataclasses.asdict(presets.preset("CartPole-v1"))
    del config["value_adam_epsilon"], config["observation_statistics_before_update"]
    saved = {"env": "CartPole-v1", "seed": 0, "export_dir": "savedmodels/old", "sampling": "single_path",
             "threads": None, "config": config}
    (run_dir / "config.json").write_text(json.dumps(saved))
    resolved = _resolve("--resume", "--run-dir", str(run_dir))
    err = capsys.readouterr().err
    assert "(an older tftrpo's) has no" in err and "value_adam_epsilon (today's default 1e-05 applies)" in err
    assert "observation_statistics_before_update (today's default True applies)" in err
    assert resolved[3].value_adam_epsilon == 1e-5 and resolved[5] == str(tmp_path / "savedmodels" / "old")
    (run_dir / "config.json").write_text(json.dumps(dict(saved, config=dict(config, from_the_future=1))))
    with pytest.raises(train.UsageError, match=r"settings this tftrpo does not know \(from_the_future\)"):
        _resolve("--resume", "--run-dir", str(run_dir))


def test_resume_from_another_directory_with_a_new_budget_and_before_any_checkpoint(tmp_path):
    """A run started in A with relative paths, resumed from B: its export goes where the run
    recorded it (A/savedmodels/...), never into B's directory of the same name; --steps given
    with --resume becomes the run's budget (a later plain --resume keeps it). A run directory
    without a checkpoint (stopped during its first iteration) is started again by --resume."""
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir(), b.mkdir()
    cli("train", *SHORT, "--steps", "256", "--run-dir", "runs/cp", cwd=a)
    precious = b / "savedmodels" / "cp" / "precious.txt"
    precious.parent.mkdir(parents=True)
    precious.write_text("not tftrpo's")
    resumed = cli("train", "--resume", "--run-dir", "../A/runs/cp", "--steps", "512", "--no-progress", cwd=b)
    assert precious.read_text() == "not tftrpo's", resumed.stderr
    assert json.loads((a / "runs" / "cp" / "config.json").read_text())["config"]["steps"] == 512
    assert json.loads((a / "savedmodels" / "cp" / "tftrpo_run.json").read_text())["env_steps"] > 256
    assert len(progress(a / "runs" / "cp")) == 2

    shutil.rmtree(a / "runs" / "cp" / "checkpoints")  # as if killed during the first iteration
    again = cli("train", "--resume", "--run-dir", "runs/cp", "--no-progress", cwd=a)
    assert "has no checkpoint yet" in again.stderr and "starts again from its beginning" in again.stderr
    rows = progress(a / "runs" / "cp")
    assert [int(r["iteration"]) for r in rows] == [1, 2]


def test_train_eval_example_reports_an_evaluation_of_its_last_iteration(tmp_path):
    """examples/train_eval.py evaluates every 5 iterations; a run of 3 still ends with an
    evaluation of its final policy (it printed 0.0, no evaluation, before) and a SavedModel."""
    example = os.path.join(REPO, "examples", "train_eval.py")
    done = subprocess.run([sys.executable, example, "--env", "CartPole-v1", "--steps", "3000", "--root-dir",
                           str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("final eval return ") and last.endswith("(greedy, after 3 iterations)"), last
    assert float(last.split()[3]) > 0
    assert (tmp_path / "CartPole-v1" / "policy" / "saved_model.pb").exists()
