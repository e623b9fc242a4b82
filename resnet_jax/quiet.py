"""Library log lines that we report better ourselves, or that mislead, left out."""

from __future__ import annotations

import contextlib
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
