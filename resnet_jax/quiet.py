"""Library log lines that we report better ourselves, or that mislead, left out."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

from absl import logging


@contextlib.contextmanager
def absl_logs_quiet() -> Iterator[None]:
    """Only fatal absl log lines inside the block: Orbax logs each unreadable file as an
    error (we report them in one line), TFDS warns of folders that do not exist."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.FATAL)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


@contextlib.contextmanager
def damage_quiet() -> Iterator[None]:
    """Reading a damaged checkpoint: absl logs quiet, and the exceptions Orbax's abandoned
    reads leave to the garbage collector ("Exception ignored in: <coroutine ...>", dozens
    of lines per missing array) dropped; the read's own error is reported in one line."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        with absl_logs_quiet():
            yield
    finally:
        gc.collect()  # the abandoned reads end here, not later
        sys.unraisablehook = hook
