"""Stop requests (SIGTERM, Ctrl-C) and agreement between the processes of one run.

Before a run starts, a stop request ends the start at once (StartInterrupted);
once it trains, the request is recorded and the loop stops at the next step
with a checkpoint. Several processes agree on both: a start goes ahead only if
every process is ready, and a stop happens at the same step everywhere.
"""

from __future__ import annotations

import contextlib
import gc
import types
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from resnet_jax import signals
from resnet_jax.errors import StartRefused


class StartInterrupted(BaseException):
    """A stop signal arrived before training began; nothing was written.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` takes it
    for an ordinary error. Where a library swallows it, :meth:`StopRequests.training`
    raises it again.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signals.name(signum)} before training started; "
                         "nothing was written")



def _in_gc_callback(frame: types.FrameType | None) -> bool:
    """Whether the signal interrupted a garbage-collector callback (JAX registers one),
    where Python would print an exception and drop it: :meth:`StopRequests.training`
    raises it later instead."""
    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    return frame is not None and frame.f_code in codes


class StopRequests:
    """The stop signals received; before :meth:`training` they raise StartInterrupted."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.started = False

    def handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.received.append(signum)
        if not self.started and not _in_gc_callback(frame):
            raise StartInterrupted(signum)

    def training(self) -> None:
        """From now on signals are recorded, for the loop to stop at a step boundary."""
        self.started = True
        if self.received:
            raise StartInterrupted(self.received[0])

    def agreed(self, at_log_step: bool) -> bool:
        """Whether to stop after this step. Several processes compare their signals at
        log steps (a collective), and all stop if any got one."""
        if jax.process_count() == 1:
            return bool(self.received)
        if not at_log_step:
            return False
        return bool(multihost_utils.process_allgather(np.int32(bool(self.received))).any())


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Catch SIGTERM and SIGINT for the duration of a run."""
    requests = StopRequests()
    with signals.handled(requests.handle):
        yield requests


def _all_ready(ready: bool) -> bool:
    if jax.process_count() == 1:
        return ready
    return bool(multihost_utils.process_allgather(np.int32(ready)).all())


@contextlib.contextmanager
def all_or_none() -> Iterator[None]:
    """Every process runs the block; if it fails in any, it fails in all (StartRefused
    where it did not fail itself). Put no collective inside."""
    try:
        yield
    except BaseException:
        _all_ready(False)
        raise
    if not _all_ready(True):
        raise StartRefused("another process of this run could not start; its output says why")
