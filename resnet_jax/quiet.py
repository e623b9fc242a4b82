"""Library log lines that we report better ourselves, or that mislead, left out."""

from __future__ import annotations

import contextlib
import logging as python_logging
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any

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


def _from_abandoned_read(error: BaseException | None, where: Any = None) -> bool:
    """Whether an exception is one that Orbax's reads of a damaged checkpoint leave behind
    once the read has failed: a read's own error (from Orbax's code, or TensorStore's
    OCDBT store), or a TensorStore callback reaching the read's event loop after it
    closed."""
    if error is None:
        return False
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return ("/orbax/" in "".join(frame.filename for frame in frames)
            or any(mark in str(error) for mark in ("OCDBT", "TensorStore", "tensorstore"))
            or "_read_array_index_and_device_put" in repr(where))


class _AbandonedReadRecords(python_logging.Filter):
    """asyncio's "... exception was never retrieved" for Orbax's abandoned reads."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not _from_abandoned_read(error, record.args)


def drop_abandoned_reads() -> None:
    """From now on, in this process, the exceptions Orbax's reads of a damaged checkpoint
    leave behind after the read has failed (dozens of tracebacks per array, some printed
    when the process ends) are dropped; the read's own error is reported in one line.
    Every other unraisable exception and asyncio error is shown as before."""
    if getattr(sys.unraisablehook, "drops_abandoned_reads", False):
        return
    shown = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _from_abandoned_read(unraisable.exc_value, unraisable.object):
            shown(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook
    python_logging.getLogger("asyncio").addFilter(_AbandonedReadRecords())


@contextlib.contextmanager
def damage_quiet() -> Iterator[None]:
    """Reading a checkpoint that may be damaged: absl logs quiet, and what abandoned reads
    leave behind dropped (see :func:`drop_abandoned_reads`)."""
    drop_abandoned_reads()
    with absl_logs_quiet():
        yield


def tensorflow_notices_off() -> None:
    """TensorFlow's C++ start-up notices left out (its log level, and the oneDNN notice that
    bypasses it), unless the user set them: TFDS only reads files here, and export only
    writes a SavedModel. Call before TensorFlow loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
