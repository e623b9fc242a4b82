"""What a user can cause and fix: one base class, :class:`ResNetError`, whose message says
what went wrong and what to do. Every command catches it alone and prints its message
on one line; anything else is a bug and keeps its traceback.

    try:
        train_and_evaluate(config, workdir)
    except resnet_jax.errors.ResNetError as error:
        sys.exit(f"error: {error}")

What is worth saying but stops nothing (a damaged checkpoint passed over, variables cast
to the model's dtype) is a :class:`ResNetWarning`, which every command prints as one line.
"""


class ResNetError(Exception):
    """Something the user can fix; the message says how."""


class ArgumentError(ResNetError, ValueError, TypeError):
    """An argument of a library function is of the wrong type or outside its values (a
    model option, variables of another model, an image batch of another layout); the
    message names it and what it takes."""


class ConfigError(ResNetError, ValueError):
    """The config or the command line cannot work; the message says what to change."""


class DataError(ResNetError, ValueError):
    """The data named in the config cannot be used; the message says how to fix it."""


class UnreadableImage(DataError):
    """The bytes are not an image PIL can decode fully (corrupt, truncated, not an image)."""


class WeightsError(ResNetError, ValueError):
    """The weights cannot be found, fetched or read; the message says what to do."""


class WorkdirError(ResNetError, ValueError):
    """The work directory cannot take this run; the message says what to do."""


class CheckpointError(ResNetError, RuntimeError):
    """No checkpoint of a run could be read, or not the one asked for; the message names
    each one and its error, and the steps that can be read."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint holds a state of another structure: another setup, not damage."""


class StartRefused(ResNetError, RuntimeError):
    """Another process of the run could not start; its own output says why."""


class TrainingDiverged(ResNetError, RuntimeError):
    """The train loss became NaN or infinite; nothing after the last good step was saved."""


class ResNetWarning(UserWarning):
    """Worth saying once, and stops nothing; a command prints it as ``warning: ...``."""
