"""Helpers of the benchmark orchestrators (standard library + matplotlib).

The orchestrators (`update_speed.py`, `raw_stepping.py`) never import
TensorFlow or torch: each library runs in a worker subprocess of its own
virtualenv, driven over a JSON-lines protocol (`_worker_io.py`), and the
orchestrator alternates requests between the workers (A B A B ...) so that both
sides see the same background load of this shared machine.
"""
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
# Where results go: bench/results, or TFTRPO_BENCH_RESULTS (the `pytest -m bench` smoke tests write
# there into a temporary directory, so they never touch the committed results).
RESULTS_DIR = os.environ.get("TFTRPO_BENCH_RESULTS") or os.path.join(BENCH_DIR, "results")
DEFAULT_TF_PYTHON = os.environ.get("TFTRPO_BENCH_TF_PYTHON", "/work/venv/bin/python")
DEFAULT_SB3_PYTHON = os.environ.get("TFTRPO_BENCH_SB3_PYTHON", "/tmp/tftrpo-bench-sb3/bin/python")


# ------------------------------------------------------------------ machine
def machine_info():
    info = {"platform": platform.platform(), "python_orchestrator": sys.version.split()[0],
            "logical_cpus": os.cpu_count(), "hostname": platform.node()}
    try:
        info["sched_affinity_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["cpuinfo_processors"] = text.count("\nprocessor") + text.startswith("processor")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# ------------------------------------------------- in-process experiments
def tensorflow_one_thread():
    """TensorFlow with one intra-op and one inter-op thread, the benchmarks' setting (for the
    experiments that time tftrpo in their own process; call before any TF op runs)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  (the orchestrators never load it)

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


# ------------------------------------------------------------------- worker
class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker subprocess answering one JSON line per JSON request line."""

    def __init__(self, name, python, script, env=None, log_dir=None, start_timeout=300):
        self.name = name
        self.python = python
        if not os.path.exists(python):
            raise WorkerError(f"{name}: python {python} not found"
                              + (" (run bench/setup_sb3_env.sh first)" if "sb3" in name else ""))
        full_env = dict(os.environ)
        full_env.update(env or {})
        log_dir = log_dir or os.path.join(RESULTS_DIR, "logs")
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"{name}.stderr.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([python, "-u", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=full_env, cwd=REPO_ROOT, text=True, bufsize=1)
        hello = self._read(start_timeout)
        if not hello.get("ready"):
            raise WorkerError(f"{name}: unexpected greeting {hello}")

    def _read(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError(f"{self.name}: no answer within {timeout}s (log: {self.log_path})")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 5.0))
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise WorkerError(f"{self.name}: worker exited (rc={self.proc.poll()}); "
                                      f"see {self.log_path}:\n{self._tail()}")
                return json.loads(line)
            if self.proc.poll() is not None:
                raise WorkerError(f"{self.name}: worker exited (rc={self.proc.returncode}); "
                                  f"see {self.log_path}:\n{self._tail()}")

    def _tail(self, n=3000):
        try:
            with open(self.log_path) as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def send(self, **request):
        self._pending = request.get("cmd")
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout=600):
        reply = self._read(timeout)
        if "error" in reply:
            raise WorkerError(f"{self.name}: {self._pending} failed:\n{reply['error']}")
        return reply

    def request(self, timeout=600, **request):
        self.send(**request)
        return self.receive(timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------- child processes
def run_child(cmd, env, log_path, timeout):
    """Runs cmd; returns wall seconds, CPU seconds, peak RSS (MiB) of that process, rc."""
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{cmd[:4]} failed (rc={proc.returncode}); log {log_path}:\n{tail}")
    return {"process_wall_s": wall, "cpu_user_s": ru.ru_utime, "cpu_sys_s": ru.ru_stime,
            "cpu_over_wall": (ru.ru_utime + ru.ru_stime) / wall, "peak_rss_mib": ru.ru_maxrss / 1024.0}


# ------------------------------------------------------------------- stats
def summary(values):
    values = [float(v) for v in values]
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "mean": statistics.fmean(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")


def box_strip_plot(path, panels, title, ylabel, log_y=False):
    """Box plots with the raw points jittered on top, one panel per entry of
    `panels` = [(panel_title, [(label, values), ...]), ...]."""
    import random

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    width = sum(max(2.2, 1.3 * len(groups)) for _, groups in panels) + 1.0
    fig, axes = plt.subplots(1, n, figsize=(max(6.0, width), 5.0), squeeze=False)
    rng = random.Random(0)
    for ax, (panel_title, groups) in zip(axes[0], panels):
        labels = [g[0] for g in groups]
        data = [g[1] for g in groups]
        ax.boxplot(data, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, fontsize=8, rotation=15 if len(labels) > 2 else 0)
        for i, values in enumerate(data, start=1):
            xs = [i + rng.uniform(-0.15, 0.15) for _ in values]
            ax.scatter(xs, values, s=10, alpha=0.55, zorder=3)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(panel_title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_info(repo=REPO_ROOT):
    def git(*args):
        try:
            return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    return {"commit": git("rev-parse", "HEAD"), "tftrpo_diff_stat": git("diff", "--stat", "HEAD", "--", "tftrpo"),
            "untracked_in_tftrpo": git("ls-files", "--others", "--exclude-standard", "--", "tftrpo")}


def provenance(tftrpo_path, snapshot, machine=None):
    """What every benchmark's JSON records about its run: the machine (`machine`, if taken
    earlier), the command line, and the tftrpo source it imported (`snapshot`: a snapshot of
    this repo's, rather than a `--tftrpo-path` given)."""
    return {"machine": machine or machine_info(), "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "tftrpo_source": {"path": tftrpo_path, "snapshot_of": REPO_ROOT if snapshot else None, **git_info()}}


def result_paths(name):
    """bench/results/<name>.json and .png."""
    return os.path.join(RESULTS_DIR, f"{name}.json"), os.path.join(RESULTS_DIR, f"{name}.png")


def snapshot_tftrpo(repo=REPO_ROOT, dest=None):
    """Copies the package as it is now into `dest` (default: a new temp dir), so that a run
    imports one consistent version even while the working tree is being edited."""
    import shutil
    import tempfile

    dest = dest or tempfile.mkdtemp(prefix="tftrpo-bench-snapshot-")
    shutil.copytree(os.path.join(repo, "tftrpo"), os.path.join(dest, "tftrpo"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def bench_env(threads=1, tftrpo_path=REPO_ROOT):
    """Environment of the workers: tftrpo and the bench dir importable, one BLAS/OpenMP thread."""
    n = str(threads)
    return {"PYTHONPATH": os.pathsep.join([tftrpo_path, BENCH_DIR]), "OMP_NUM_THREADS": n,
            "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"}
