"""Train a ResNet on every device, resuming from --workdir if it holds a run.

    python train.py --config configs/cifar10_resnet20.py --workdir runs/resnet20 \\
        [--config.key=value ...]
    python train.py --workdir runs/resnet20 [--config.key=value ...]   # continue a run

Without --config, the run in --workdir continues with the config it recorded
(config.json); overrides change its free keys (num_train_steps, cadences...).
Several processes (hosts) train as one under jax.distributed: run the same
command on each, adding --coordinator_address=HOST0:PORT --num_processes=N
--process_id=I, or nothing on clusters JAX detects by itself (SLURM, TPU pods...).
"""

import os
import sys

if __name__ == "__main__":  # from the start: Ctrl-C while the libraries load is one line too
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

from pathlib import Path  # noqa: E402

from resnet_jax.command_line import TrainCommand, parse_train_command  # noqa: E402
from resnet_jax.errors import ResNetError  # noqa: E402

RECORDED_CONFIG = Path(__file__).resolve().parent / "configs" / "recorded.py"


def parse(argv: list[str]) -> TrainCommand:
    """train.py's command line (``argv`` without the program's name); ConfigError, one line,
    for any mistake."""
    return parse_train_command(argv, RECORDED_CONFIG)


def start_distributed(distributed: tuple) -> None:
    """Join the other processes named by the flags, or found by JAX's cluster detection;
    alone, stay one process. Must run before anything touches a device."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only hosts
    try:
        jax.distributed.initialize(*distributed)
    except (ValueError, RuntimeError) as error:
        if distributed[0] is not None:
            raise ResNetError(f"cannot join the other processes ({error}); check the three "
                              "flags") from None
        # No flags, and no cluster detected (or JAX already running here, as when a test
        # calls main in its own process): one process.


def run(command: TrainCommand) -> int:
    """Train as ``command`` says: the exit status (1 for what the user can fix, said in one
    line on stderr; 128 + the signal's number for a stop before training began)."""
    import jax
    from absl import logging

    from resnet_jax.command_line import one_line_warnings
    from resnet_jax.parallel import devices_line, nvidia_gpu_present
    from resnet_jax.train.interrupts import StartInterrupted
    from resnet_jax.train.loop import train_and_evaluate

    logging.set_verbosity(logging.WARNING)  # keep Orbax's INFO lines out of the progress bar
    if jax.process_index() == 0:
        print(devices_line(jax.default_backend(), jax.device_count(), jax.process_count(),
                           nvidia_gpu_present()), flush=True)
    try:
        with one_line_warnings():
            train_and_evaluate(command.config, command.workdir, command.chosen)
    except StartInterrupted as stopped:
        print(f"error: {stopped}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + stopped.signum)  # XLA threads cut short can crash a normal teardown
    except ResNetError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """The whole command on ``argv`` (without the program's name): the exit status."""
    if {"-h", "--help", "--helpfull"} & set(argv):
        print(__doc__)
        return 0
    try:
        command = parse(argv)
        start_distributed(command.distributed)
    except ResNetError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return run(command)


if __name__ == "__main__":
    from absl import app, flags

    # absl sets up its logging; the command line is read by parse_train_command alone.
    app.run(lambda argv: sys.exit(main(argv[1:])),
            flags_parser=lambda argv: flags.FLAGS.mark_as_parsed() or argv)
