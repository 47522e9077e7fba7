"""What both command lines do before TensorFlow loads."""
import contextlib
import io
import os


def quiet_startup() -> None:
    """Keeps the terminal for the run's own output.

    TensorFlow's C++ INFO and WARNING lines (oneDNN, CPU features, TF-TRT) are off unless
    TF_CPP_MIN_LOG_LEVEL is already set; its errors still show. tf-agents imports the old
    `gym` package, which prints a notice about itself when imported; tftrpo runs Gymnasium,
    so that notice is not about this program and is dropped (only that import is silenced).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            import gym  # noqa: F401  pylint: disable=unused-import
        except ImportError:
            pass
