"""Learning-curve PNGs from a run's progress.csv."""
import csv
import os

__all__ = ["read_progress", "plot_learning_curve"]


def read_progress(path: str):
    """The rows of a progress.csv as dicts of floats (empty strings → None)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def plot_learning_curve(progress_csv: str, png_path: str, title: str = "") -> str:
    """Writes training and evaluation return against environment steps to `png_path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_progress(progress_csv)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["env_steps"], r["train_return"]) for r in rows if r.get("train_return") is not None]
    evals = [(r["env_steps"], r["eval_return"]) for r in rows if r.get("eval_return") is not None]
    if train:
        ax.plot(*zip(*train), label="training episodes (stochastic policy)", alpha=0.7)
    if evals:
        ax.plot(*zip(*evals), "o-", label="evaluation (greedy policy)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
