"""The parts the config schema (:mod:`resnet_jax.train.config_schema`) is made of: checks
of a key's value (each returns the problem, "must be ...", or None), the rules of where
a key has no effect, and :class:`Key`, which pairs them with fixed or free on resume."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from resnet_jax import data, hints
from resnet_jax.arguments import MAX_IMAGE_SIDE

Check = Callable[[Any], "str | None"]  # a value's problem ("must be ..."), or None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and value == value  # not NaN


def integer(low: int, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if _is_int(value) and value >= low and (high is None or value <= high):
            return None
        return f"must be an integer {_range(low, high)}"
    return check


def number(low: float, high: float | None = None, *, below_high: bool = False) -> Check:
    def check(value: Any) -> str | None:
        ok = _is_number(value) and value >= low and value != float("inf")
        if ok and high is not None:
            ok = value < high if below_high else value <= high
        return None if ok else f"must be a finite number {_range(low, high, below_high)}"
    return check


def _range(low: float, high: float | None, below_high: bool = False) -> str:
    if high is None:
        return f">= {low}"
    return f"in [{low}, {high}{')' if below_high else ']'}"


def one_of(choices: Callable[[], Any]) -> Check:
    def check(value: Any) -> str | None:
        valid = list(choices())
        if value in valid:
            return None
        close = hints.closest(str(value), [str(v) for v in valid])
        hint = f" (did you mean {close!r}?)" if close else ""
        shown = ["'' (off)" if v == "" else str(v) for v in valid]
        return f"must be one of: {', '.join(shown)}{hint}"
    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def directory(value: Any) -> str | None:
    """A directory path, or "" for none."""
    problem = text(value)
    if problem or not value:
        return problem
    return "is a file; give a directory" if Path(value).expanduser().is_file() else None


def dataset(value: Any) -> str | None:
    return text(value) or data.dataset_name_problem(value)


def sequence(item: Check, length: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, tuple | list) or (length is not None and len(value) != length):
            return f"must be a tuple of {length or 'any number of'} values"
        problems = ((v, item(v)) for v in value)
        return next((f"has {v!r}, which {problem}" for v, problem in problems if problem), None)
    return check


Unused = Callable[[Mapping[str, Any]], "str | None"]  # why a key has no effect here, or None


def always(config: Mapping[str, Any]) -> None:
    """The key takes effect under every setting."""
    return None


def unused_when(test: Callable[[Mapping[str, Any]], Any], why: str) -> Unused:
    """No effect where ``test(config)`` holds; ``why`` (formatted with the config) says so."""
    def unused(config: Mapping[str, Any]) -> str | None:
        return why.format(**config) if test(config) else None
    unused.why = why
    return unused


def either(*rules: Unused) -> Unused:
    """No effect where any of ``rules`` says so (the first one's reason)."""
    def unused(config: Mapping[str, Any]) -> str | None:
        return next((why for why in (rule(config) for rule in rules) if why), None)
    unused.why = "; ".join(rule.why for rule in rules)
    return unused


@dataclasses.dataclass(frozen=True)
class Key:
    fixed: bool  # True: part of the experiment; False: free to change on resume
    check: Check
    unused: Unused  # where the key's value has no effect (a chosen one there is refused)


FIXED, FREE = True, False
INT32_MAX = 2**31 - 1  # the step counter is int32


STEPS = integer(1, INT32_MAX)
POSITIVE = integer(1)
SIDE, SIDE_OR_OFF = integer(1, MAX_IMAGE_SIDE), integer(0, MAX_IMAGE_SIDE)  # image sides
IN_MEMORY = "under pipeline={pipeline}, which "
NOT_SGD = unused_when(lambda c: c["optimizer"] != "sgd", "with optimizer={optimizer}, which has "
                      "no momentum (Adam's moment decay is fixed)")
NOT_PIECEWISE = "under schedule={schedule}; only the piecewise schedule has boundaries"
NO_DECAY = unused_when(lambda c: not c["weight_decay"], "with weight_decay=0, which decays nothing")
NO_MOMENTUM = unused_when(lambda c: not c["momentum"],
                          "with momentum=0, without which Nesterov's step is plain SGD's")
