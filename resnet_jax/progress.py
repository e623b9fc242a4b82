"""The progress bar of a run: steps done, their rate and ETA, and what the run is doing
while the steps stand still; warnings printed clear of it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm


def progress_bar(step: int, last: int, what: str = "") -> tqdm:
    """Steps done of ``last`` from ``step`` on, with their rate and ETA, on process 0."""
    import jax  # here: warn is imported by the command line before the libraries load

    return tqdm(total=last, initial=step, desc=what, unit="step", dynamic_ncols=True,
                mininterval=1.0, smoothing=0.0, leave=not what, disable=jax.process_index() != 0)


@contextlib.contextmanager
def showing(bar: tqdm, what: str) -> Iterator[None]:
    """The progress bar says ``what`` the run is doing while the steps stand still; the
    time it takes is left out of the bar's rate and ETA."""
    bar.set_description_str(what)
    try:
        yield
    finally:
        bar.set_description_str("", refresh=False)
        bar.unpause()


def warn(message: str) -> None:
    """``warning: message`` on a line of its own on stderr, clear of a progress bar that is
    showing (the bar is drawn again below it)."""
    tqdm.write(f"warning: {message}", file=sys.stderr)
