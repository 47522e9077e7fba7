"""What both command lines do before TensorFlow loads."""
import contextlib
import io
import logging
import os
import warnings

# Notices TensorFlow prints while saving or loading a PolicySaver SavedModel. They describe
# TensorFlow's own handling of TF-Agents' signature names and spec types, not a problem with
# the run, so the command lines drop exactly these (library users still see them).
_SANITIZING_NOTICE = "is not a valid tf.function parameter name. Sanitizing to"
_SPEC_TYPE_WARNING = r"Encoding a StructuredValue with type"


def _drop_sanitizing_notice(record: logging.LogRecord) -> bool:
    """absl logger filter (`Filterer.addFilter` adds a callable once): False drops the record."""
    return _SANITIZING_NOTICE not in record.getMessage()


def quiet_startup() -> None:
    """Keeps the terminal for the run's own output.

    TensorFlow's C++ INFO and WARNING lines (oneDNN, CPU features, TF-TRT) are off unless
    TF_CPP_MIN_LOG_LEVEL is already set; its errors still show. tf-agents imports the old
    `gym` package, which prints a notice about itself when imported; tftrpo runs Gymnasium,
    so that notice is not about this program and is dropped (only that import is silenced).
    The SavedModel notices above are dropped too: absl's "Sanitizing `0/step_type`" warnings,
    one per signature input, and the UserWarning that loading needs the TFP spec types
    registered (tftrpo-play and `tftrpo.play.load_policy` import tensorflow_probability).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            import gym  # noqa: F401  pylint: disable=unused-import
        except ImportError:
            pass
    from absl import logging as absl_logging

    absl_logging.get_absl_logger().addFilter(_drop_sanitizing_notice)
    warnings.filterwarnings("ignore", message=_SPEC_TYPE_WARNING, category=UserWarning)
