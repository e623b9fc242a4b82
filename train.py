"""Train a ResNet on every device, resuming from --workdir if it holds a run.

    python train.py --config configs/cifar10_resnet20.py --workdir runs/resnet20 \\
        [--config.key=value ...]

Several processes (hosts) train as one under jax.distributed: run the same
command on each, adding --coordinator_address=HOST0:PORT --num_processes=N
--process_id=I, or nothing on clusters JAX detects by itself (SLURM, TPU pods...).
"""

import ast
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots "
                    "(shared by all processes).")
flags.DEFINE_string("coordinator_address", None,
                    "HOST:PORT of process 0, for several processes (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "How many processes train together.")
flags.DEFINE_integer("process_id", None, "This process's number, 0 to num_processes - 1.")
flags.mark_flags_as_required(["config", "workdir"])
DISTRIBUTED_FLAGS = ("coordinator_address", "num_processes", "process_id")


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


def start_distributed() -> None:
    """Join the other processes named by the flags, or found by JAX's cluster detection;
    alone, stay one process. Must run before anything touches a device."""
    given = [FLAGS[name].value for name in DISTRIBUTED_FLAGS]
    if any(value is not None for value in given) and None in given:
        sys.exit("error: --coordinator_address, --num_processes and --process_id go together; "
                 "pass all three, or none")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only hosts
    try:
        jax.distributed.initialize(*given)
    except ValueError as error:
        if given[0] is not None:
            sys.exit(f"error: cannot join the other processes ({error}); check the three flags")
        # No cluster detected and no flags: one process.


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep Orbax's INFO lines out of the progress bar
    start_distributed()
    from resnet_jax.checkpoints import CheckpointError
    from resnet_jax.data import DataError
    from resnet_jax.loop import ConfigError, TrainingDiverged, train_and_evaluate

    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except (CheckpointError, ConfigError, DataError, TrainingDiverged) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
