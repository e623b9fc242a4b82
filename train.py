"""Train a ResNet on every device, resuming from --workdir if it holds a run.

    python train.py --config configs/cifar10_resnet20.py --workdir runs/resnet20 \\
        [--config.key=value ...]

Several processes (hosts) train as one under jax.distributed: run the same
command on each, adding --coordinator_address=HOST0:PORT --num_processes=N
--process_id=I, or nothing on clusters JAX detects by itself (SLURM, TPU pods...).
"""

import os
import sys

from resnet_jax.command_line import exit_on_stop_signals

# Until the run installs its own handlers: Ctrl-C while importing gives one line, no traceback.
exit_on_stop_signals()

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from resnet_jax.command_line import chosen_config_keys, parse_flags  # noqa: E402

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
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])!r}; flags are written "
                 "--name=value (see python train.py --help)")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep Orbax's INFO lines out of the progress bar
    start_distributed()
    from resnet_jax.parallel import devices_line, nvidia_gpu_present

    if jax.process_index() == 0:
        print(devices_line(jax.default_backend(), jax.device_count(), jax.process_count(),
                           nvidia_gpu_present()), flush=True)
    from resnet_jax.errors import ResNetError
    from resnet_jax.interrupts import StartInterrupted
    from resnet_jax.loop import train_and_evaluate

    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir, chosen_config_keys())
    except StartInterrupted as stopped:
        print(f"error: {stopped}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + stopped.signum)  # XLA threads cut short can crash a normal teardown
    except ResNetError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
