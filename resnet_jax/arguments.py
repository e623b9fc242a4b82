"""The library's own arguments, checked before anything is looked up: each problem an
:class:`~resnet_jax.errors.ArgumentError` that names the argument as the caller's door
spells it (:mod:`resnet_jax.hints`) and what it takes."""

from __future__ import annotations

import numbers
import os
from typing import Any, NoReturn

from resnet_jax import hints
from resnet_jax.errors import ArgumentError


def is_int(value: Any) -> bool:
    """A whole number, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def refuse(key: str, value: Any, takes: str, example: Any = None) -> NoReturn:
    """ArgumentError: ``key``'s ``value`` is not ``takes``; pass e.g. ``example``."""
    shown = f"{value!r}" + ("" if isinstance(value, str) or value is None
                            else f" ({type(value).__name__})")
    fix = "" if example is None else f"; pass e.g. {hints.setting(key, example)}"
    raise ArgumentError(f"{hints.name(key)} {shown} is not {takes}{fix}")


def step(value: Any) -> int | None:
    """A checkpoint's step: None (the newest readable one) or a whole number >= 0."""
    if value is None or (is_int(value) and value >= 0):
        return None if value is None else int(value)
    refuse("step", value, "a checkpoint's step, a whole number >= 0 (None: the newest readable "
           "checkpoint)", 40)


def path(key: str, value: Any, example: str) -> os.PathLike | str:
    """A file or folder name: a non-empty str or os.PathLike."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and value.strip()):
        return value
    refuse(key, value, "a path (a str naming a file or folder, or a pathlib.Path)", example)


def switch(key: str, value: Any) -> bool:
    """True or False (not 1, not 'yes')."""
    if isinstance(value, bool):
        return value
    refuse(key, value, "True or False")


# The longest image side any door takes: one such image is 48 MiB as float32, a batch of
# them more than a machine holds.
MAX_IMAGE_SIDE = 4096


def pixels(key: str, value: Any) -> int | None:
    """An image side: None (the weights' own) or a whole number from 1 to MAX_IMAGE_SIDE."""
    if value is None or (is_int(value) and 1 <= value <= MAX_IMAGE_SIDE):
        return value
    nearest = min(max(value, 1), MAX_IMAGE_SIDE) if is_int(value) else 224
    refuse(key, value, f"an image side of 1 to {MAX_IMAGE_SIDE} pixels (None: the weights' own)",
           nearest)
