"""Train a ResNet on every local device, resuming from --workdir if it holds a run.

    python train.py --config configs/cifar10_resnet20.py --workdir runs/resnet20 \\
        [--config.key=value ...]
"""

import ast
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.mark_flags_as_required(["config", "workdir"])


def _unquote(text: str) -> str:
    """ml_collections wraps its message in reprs, KeyError in AttributeError."""
    while text[:1] in "'\"" and text[-1:] == text[:1]:
        try:
            text = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            break
    return text


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes (unknown key, bad value) as one line."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as error:  # ml_collections: a key the config lacks
        key, _, hint = _unquote(str(error)).partition("\n")
        sys.exit(f"error: unknown config key {key}. {hint} (the config file lists valid keys)")
    except (flags.Error, TypeError, ValueError) as error:
        sys.exit(f"error: {error} (see python train.py --help)")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep Orbax's INFO lines out of the progress bar
    from resnet_jax.data import DataError
    from resnet_jax.loop import ConfigError, TrainingDiverged, train_and_evaluate

    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (ConfigError, DataError, TrainingDiverged) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
