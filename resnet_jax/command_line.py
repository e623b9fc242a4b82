"""Command lines: the trainers' config flags, and the argparse of the other commands, with
every mistake as one line instead of a usage text or a traceback."""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from absl import flags
from ml_collections import config_flags

from resnet_jax import hints
from resnet_jax.errors import ConfigError, ResNetError, ResNetWarning
from resnet_jax.progress import warn

FLAGS = flags.FLAGS


def _unquote(text: str) -> str:
    """ml_collections wraps its message in reprs, KeyError in AttributeError."""
    while text[:1] in "'\"" and text[-1:] == text[:1]:
        try:
            text = ast.literal_eval(text)
        except (SyntaxError, ValueError):
            break
    return text


def _config_file(argv: list[str]) -> str | None:
    return _flag_argument(argv, "config")


def _config_file_error(error: BaseException, path: str | None) -> str | None:
    """One line for an error raised while loading the config file itself, else None."""
    if path is None:
        return None
    file, _, argument = path.partition(":")
    shape = _config_file_shape_error(str(error), file, argument)
    if shape:
        return shape
    if isinstance(error, OSError) and "Failed loading config file" in str(error):
        return f"cannot read config file {path} (no such file?); pass --config configs/NAME.py"
    if isinstance(error, SyntaxError) and error.filename and error.filename.endswith(path):
        return f"config file {path} line {error.lineno}: {error.msg}; fix the file"
    frames = traceback.extract_tb(error.__traceback__)
    line = next((f.lineno for f in reversed(frames) if f.filename.endswith(path)), None)
    if line is None:
        return None
    return (f"config file {path} line {line} raised {type(error).__name__}: {error}; "
            "fix the file (it must define get_config())")


def _config_file_shape_error(message: str, file: str, argument: str) -> str | None:
    """One line for a config file that is not one: a folder, no get_config(), a get_config()
    that returns something else than a ConfigDict or takes no ``:argument``."""
    if Path(file).is_dir():
        return f"config file {file} is a directory; pass --config configs/NAME.py"
    if "has no attribute 'get_config'" in message:
        return (f"config file {file} defines no get_config(); define one that returns an "
                "ml_collections.ConfigDict")
    returned = re.search(r"'(\w+)' object has no attribute 'keys'", message)
    if returned:
        return (f"config file {file}: get_config() returned {returned[1]}, not an "
                "ml_collections.ConfigDict; return one")
    if "get_config() takes 0 positional arguments" in message:
        return (f"config file {file}: get_config() takes no argument, but --config "
                f"{file}:{argument} passes one; leave out :{argument}")
    return None


def _flag_value_message(message: str) -> str:
    """Python's parse errors ("invalid literal for int()") in the flag's own terms."""
    bad = re.match(r"flag (--config\.\S+?=.*?): (invalid literal for int|could not convert "
                   r"string to float)", message)
    if bad:
        kind = "an integer" if "int" in bad[2] else "a number"
        return f"{bad[1]} is not {kind}; pass {kind} (see the config file)"
    return f"{message} (see --help)"


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes (unknown key, bad value, a config file that
    does not load) as one line."""
    try:
        return _parse(FLAGS, argv)
    except ConfigError as error:
        sys.exit(f"error: {error}")


def _parse(values: flags.FlagValues, argv: list[str]) -> list[str]:
    """Parse ``argv`` into ``values``; ConfigError (one line) for a mistake in a flag, a
    config key or the config file."""
    try:
        rest = values(argv)
        values.config.keys()  # a config file that failed to load raises here
        return rest
    except Exception as error:  # noqa: BLE001 (each kind becomes one line below)
        raised = _first_resnet_error(error)
        if raised is not None:  # by the config file itself (a run's recorded config)
            raise raised from None
        raise ConfigError(_flag_problem(error, argv)) from None


def _first_resnet_error(error: BaseException) -> ResNetError | None:
    """The ResNetError at the root of ``error`` (ml_collections wraps what a config file
    raises, twice, the inner copy holding the traceback as its message), or None."""
    found = None
    while error is not None:
        if isinstance(error, ResNetError):
            found = error
        error = error.__context__
    return found


def _flag_problem(error: Exception, argv: list[str]) -> str:
    message = _config_file_error(error, _config_file(argv))
    if message:
        return message
    if isinstance(error, AttributeError | KeyError):  # ml_collections: a key the config lacks
        key, _, hint = _unquote(str(error)).partition("\n")
        if hints.split_key(key):
            return hints.split_key(key)
        hint = f" {hint.strip()}" if hint.strip() else ""
        return f"unknown config key {key}.{hint} (the config file lists valid keys)"
    if isinstance(error, flags.Error | TypeError | ValueError):
        return _flag_value_message(str(error))
    raise error


def _config_values(argv: list[str]) -> flags.FlagValues:
    """A FlagValues of its own holding ``--config`` (a config file, and a flag for each
    ``--config.KEY=VALUE`` of ``argv``)."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                    flag_values=values, lock_config=True, sys_argv=argv)
    return values


def load_config(config_file: str, overrides: list[str]) -> tuple[Any, set[str]]:
    """A config file with ``--config.KEY=VALUE`` overrides, read as train.py reads them
    (mistakes as one line), and the keys the overrides chose."""
    argv = ["load_config", f"--config={config_file}", *overrides]
    values = _config_values(argv)
    try:
        _parse(values, argv)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    return values.config, set(config_flags.get_override_values(values["config"]))


@dataclasses.dataclass(frozen=True)
class TrainCommand:
    """train.py's command line, read: the config and the keys its overrides chose, the work
    directory, and the three flags of jax.distributed (all None, or all given)."""

    config: Any
    chosen: set[str]
    workdir: str
    distributed: tuple[Any, Any, Any]


def parse_train_command(argv: list[str], recorded_config: Path) -> TrainCommand:
    """train.py's ``argv`` (without the program's name) into flags of its own, so that it can
    be read more than once in a process (the tests do). Without ``--config``, ``--workdir
    RUN`` continues the run from its recorded config.json, read by the config file
    ``recorded_config`` (``--config.KEY=VALUE`` overrides work as ever). ConfigError, one
    line, for every mistake."""
    workdir = _flag_argument(argv, "workdir")
    folder = Path(workdir).expanduser() if workdir else None
    if folder and folder.is_file():
        raise ConfigError(f"--workdir {workdir} is a file; pass a directory")
    if _config_file(argv) is None and folder:
        if (folder / "checkpoints").is_dir() and not (folder / "config.json").is_file():
            raise ConfigError(f"--workdir {workdir} holds checkpoints but no config.json, which a "
                              "run continues from; put it back from a copy of the run")
        if not (folder / "config.json").is_file():
            raise ConfigError(f"--config is needed: --workdir {workdir} holds no run to continue "
                              "(no config.json there); pass --config configs/NAME.py to start "
                              "one")
        argv = [f"--config={recorded_config}:{workdir}", *argv]
    argv = ["train.py", *argv]
    values = _config_values(argv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots (shared "
                        "by all processes).", flag_values=values)
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for several "
                        "processes (jax.distributed).", flag_values=values)
    flags.DEFINE_integer("num_processes", None, "How many processes train together.",
                         flag_values=values)
    flags.DEFINE_integer("process_id", None, "This process's number, 0 to num_processes - 1.",
                         flag_values=values)
    rest = _parse(values, argv)
    if len(rest) > 1:
        raise ConfigError(f"unexpected arguments {' '.join(rest[1:])!r}; flags are written "
                          "--name=value (see python train.py --help)")
    if values.config is None or not values.workdir:
        raise ConfigError("--config and --workdir are needed: python train.py --config "
                          "configs/NAME.py --workdir DIR (or --workdir RUN alone, to continue "
                          "a run)")
    distributed = (values.coordinator_address, values.num_processes, values.process_id)
    if any(value is not None for value in distributed) and None in distributed:
        raise ConfigError("--coordinator_address, --num_processes and --process_id go together; "
                          "pass all three, or none")
    return TrainCommand(values.config, set(config_flags.get_override_values(values["config"])),
                        values.workdir, distributed)


def _flag_argument(argv: list[str], name: str) -> str | None:
    """The value of ``--name=VALUE`` or ``--name VALUE`` in ``argv``, None if absent."""
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def chosen_config_keys() -> set[str]:
    """The config keys given on the command line (``--config.KEY=...``): what
    :func:`resnet_jax.train.config_schema.validate` calls the keys the user chose."""
    return set(config_flags.get_override_values(FLAGS["config"]))


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line as one line, ``error: ...`` (exit 2);
    a command run as ``python -m NAME`` is called that in its usage and errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not args and kwargs.get("prog") is None:
            kwargs["prog"] = _command_name()
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _command_name() -> str | None:
    """``python -m NAME`` while the module NAME runs as the program (else argparse's own
    choice, the program file's name)."""
    main = sys.modules.get("__main__")
    spec, file = getattr(main, "__spec__", None), getattr(main, "__file__", None)
    if spec is None or file is None or not sys.argv or os.path.abspath(sys.argv[0]) != file:
        return None
    return f"python -m {spec.name.removesuffix('.__main__')}"


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    parse.__name__ = f"integer >= {low},"  # argparse: "invalid integer >= 1, value: 'x'"
    return parse


def add_checkpoint_options(parser: argparse.ArgumentParser) -> None:
    """The options predict and evaluate share for a run's weights: which checkpoint
    (--step), the trained weights over the run's moving average (--raw), and test-time
    flips (--flip/--no-flip)."""
    parser.add_argument("--step", type=at_least(0),
                        help="a run's checkpoint of this step (default: its latest)")
    parser.add_argument("--raw", action="store_true", help="a run's trained weights, not "
                        "the moving average it keeps (ema_decay)")
    parser.add_argument("--flip", action=Switch,
                        help="average each image's logits with its mirror image's (default: a "
                        "run's own eval_flip, else off)")


class Switch(argparse.BooleanOptionalAction):
    """``--X`` or ``--no-X``; both on one command line are refused, not settled by order."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given = f"_given_{self.dest}"
        earlier = getattr(namespace, given, option_string)
        if earlier != option_string:
            parser.error(f"{earlier} and {option_string} contradict each other; pass one")
        setattr(namespace, given, option_string)
        super().__call__(parser, namespace, values, option_string)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside, each ResNetWarning (a checkpoint passed over, variables cast...) is printed
    as one line, ``warning: ...``, on stderr, as the commands print their own."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if issubclass(category, ResNetWarning):
            warn(str(message))
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("default", ResNetWarning)  # each once in a command
        shown, warnings.showwarning = warnings.showwarning, show
        yield


def check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Refuse an --out file that cannot be written, before any work is done for it."""
    if out.is_dir():
        parser.error(f"--out {out} is a directory; pass a file name")
    if not out.parent.is_dir():
        parser.error(f"--out {out}: the directory {out.parent} does not exist; create it first")
