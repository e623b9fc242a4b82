"""How to fix it, in the words of the command at hand.

An error raised deep in the library names the setting that fixes it through
:func:`setting` and :func:`name`; which spelling it gets depends on the door the call
came through, set by each command around its work (:func:`door`)::

    with hints.door("predict"):          # --model resnet18
    with hints.door("config"):           # --config.model=resnet18 (train.py, init_from)
    # nothing set: the library's own argument, model='resnet18'
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from collections.abc import Iterable, Iterator
from typing import Any

LIBRARY, CONFIG, PREDICT, EVALUATE, EVIDENCE = ("library", "config", "predict", "evaluate",
                                               "evidence")
_DOOR = contextvars.ContextVar("resnet_jax_door", default=LIBRARY)

# Each door's name for a setting, where it differs from the library's argument name.
_CONFIG_KEYS = {"weights": "init_from", "raw": "init_from_raw"}
_COMMAND_FLAGS = {"model": "--model", "weights": "--weights", "step": "--step", "raw": "--raw",
                  "resize": "--resize", "crop": "--crop", "top": "--top", "flip": "--flip",
                  "batch_size": "--batch-size"}
_FLAGS = {PREDICT: _COMMAND_FLAGS,
          EVALUATE: {**_COMMAND_FLAGS, "dataset": "--dataset", "workdir": "--workdir"},
          EVIDENCE: {"dataset": "--data"}}


@contextlib.contextmanager
def door(which: str) -> Iterator[None]:
    """Errors raised inside name their fixes as ``which`` (a command) spells them."""
    if which not in (LIBRARY, CONFIG, *_FLAGS):
        raise KeyError(f"unknown door {which!r}")
    token = _DOOR.set(which)
    try:
        yield
    finally:
        _DOOR.reset(token)


def current() -> str:
    """The door the current call came through."""
    return _DOOR.get()


def name(key: str) -> str:
    """The setting ``key`` as the current door calls it: ``--model``, ``--config.model``,
    or the library's argument ``model``."""
    which = _DOOR.get()
    if which == CONFIG:
        return f"--config.{_CONFIG_KEYS.get(key, key)}"
    return _FLAGS.get(which, {}).get(key, key)


def setting(key: str, value: Any) -> str:
    """``key`` set to ``value`` as the current door writes it: ``--model resnet18``,
    ``--config.model=resnet18``, ``model='resnet18'``; a switch turned on is its bare
    flag (``--raw``)."""
    which, spelled = _DOOR.get(), name(key)
    if which == LIBRARY or spelled == key:
        return f"{key}={value!r}"
    if which == CONFIG:
        return f"{spelled}={value}"
    return spelled if value is True else f"{spelled} {value}"


# Config keys that became several, each its own choice (a saved run's old key reads as all).
SPLIT_KEYS = {"decay_norm_and_bias": ("decay_norm", "decay_bias")}


def split_key(key: str) -> str | None:
    """What became of ``key`` if it is a config key that was split, as an error says it."""
    if key not in SPLIT_KEYS:
        return None
    return (f"config key {key} is now {' and '.join(SPLIT_KEYS[key])}, each its own choice; "
            "set those instead")


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice ``word`` most likely means, or None: of those difflib finds alike, the
    fewest edits away (resnet21 means resnet20, not resnet32)."""
    alike = difflib.get_close_matches(word, list(choices), n=5, cutoff=cutoff)
    return min(alike, key=lambda choice: _edits(word, choice), default=None)


def _edits(a: str, b: str) -> int:
    """Levenshtein's distance: the fewest insertions, deletions and substitutions."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]
