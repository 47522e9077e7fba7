"""What both command lines do before TensorFlow loads."""
import contextlib
import io
import logging
import os
import warnings

# Notices TensorFlow prints while saving or loading a PolicySaver SavedModel. They describe
# TensorFlow's own handling of TF-Agents' signature names and spec types, not a problem with
# the run, so the command lines drop exactly these (library users still see them).
_SAVED_MODEL_ABSL_NOTICES = ("is not a valid tf.function parameter name. Sanitizing to",)
_SAVED_MODEL_WARNINGS = (r"Encoding a StructuredValue with type",)


class _DropMessages(logging.Filter):
    """A logging filter that drops records whose message contains one of `fragments`."""

    def __init__(self, fragments):
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


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

    absl_logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _DropMessages) for f in absl_logger.filters):
        absl_logger.addFilter(_DropMessages(_SAVED_MODEL_ABSL_NOTICES))
    for message in _SAVED_MODEL_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
