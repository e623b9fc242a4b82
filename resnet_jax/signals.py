"""Stop signals (Ctrl-C's SIGINT, SIGTERM): the one module that names them and sets their
handlers. A command that has written nothing ends at once; a run records the request and
stops at a step (:mod:`resnet_jax.train.interrupts`); a pipeline's worker leaves them to its
trainer; a script waiting on a child passes them on."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], Any] | int
_PARTS: list[str] = []  # what a command is writing, removed if it is stopped at once


def name(signum: int) -> str:
    """``SIGTERM``, ``SIGINT``."""
    return signal.Signals(signum).name


def on_stop(handler: Handler, which: tuple[int, ...] = STOP_SIGNALS) -> dict[int, Any]:
    """``handler`` for the stop signals ``which`` from now on; the handlers it replaced."""
    return {signum: signal.signal(signum, handler) for signum in which}


@contextlib.contextmanager
def handled(handler: Handler, which: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """``handler`` for the stop signals ``which`` inside the block, the previous ones after."""
    previous = on_stop(handler, which)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def exit_on_stop_signals() -> None:
    """From now on Ctrl-C or SIGTERM ends the command at once, in one line, with the exit
    status 128 + the signal's number: for a command that has written nothing (yet). Installed
    first, before the heavy libraries load."""
    def stop(signum: int, frame: object) -> None:
        ends_a_bar = "\n" if sys.stderr.isatty() or _open_progress_bars() else ""
        for part in _PARTS:
            shutil.rmtree(part, ignore_errors=True)
        print(f"{ends_a_bar}error: stopped by {name(signum)}; nothing was written",
              file=sys.stderr, flush=True)
        os._exit(128 + signum)  # XLA threads cut short can crash a normal teardown

    on_stop(stop)


@contextlib.contextmanager
def removed_if_stopped(folder: str | os.PathLike) -> Iterator[None]:
    """A stop signal inside the block (under :func:`exit_on_stop_signals`) removes
    ``folder``, which the command is writing, before it ends."""
    _PARTS.append(os.fspath(folder))
    try:
        yield
    finally:
        _PARTS.remove(os.fspath(folder))


def _open_progress_bars() -> bool:
    """Whether a tqdm bar is open (it may hold the line unfinished, even off a terminal)."""
    bars = getattr(sys.modules.get("tqdm"), "tqdm", None)
    return bool(getattr(bars, "_instances", None))


def ignore_stop_signals() -> None:
    """The stop signals change nothing from now on: a command's results are out (a late
    Ctrl-C during the interpreter's shutdown is no failure), or this process is a worker
    whose trainer handles them."""
    on_stop(signal.SIG_IGN)
