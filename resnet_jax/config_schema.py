"""Every config key: what values it takes, and whether a resumed run may change it.

A key is *fixed* when changing it changes the trajectory or the structure of the
saved state (model, data, batch, seed, optimizer, schedule...): a run resumed
with another value would no longer be the run its config.json describes, so
that is refused. A *free* key (length, cadences, logging, where the data is
read from) takes effect on resume. The valid choices come from the registries
the code itself uses, so a new option is valid the moment it exists.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from resnet_jax import data, parallel, pipelines, training
from resnet_jax.models import list_models


class ConfigError(ValueError):
    """The config or the command line cannot work; the message says what to change."""


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
        close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of: {', '.join(map(str, valid))}{hint}"
    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def dataset(value: Any) -> str | None:
    return text(value) or data.dataset_name_problem(value)


def sequence(item: Check, length: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, tuple | list) or (length is not None and len(value) != length):
            return f"must be a tuple of {length or 'any number of'} values"
        problems = ((v, item(v)) for v in value)
        return next((f"has {v!r}, which {problem}" for v, problem in problems if problem), None)
    return check


@dataclasses.dataclass(frozen=True)
class Key:
    fixed: bool  # True: part of the experiment; False: free to change on resume
    check: Check


FIXED, FREE = True, False
INT32_MAX = 2**31 - 1  # the step counter is int32
STEPS = integer(1, INT32_MAX)
POSITIVE = integer(1)
KEYS: dict[str, Key] = {
    # The model.
    "model": Key(FIXED, one_of(list_models)),
    "num_classes": Key(FIXED, integer(2)),
    "residual": Key(FIXED, boolean),
    "init_from": Key(FIXED, text),  # "" or weights to start from: a name, a .pth, a run
    "zero_init_residual": Key(FIXED, boolean),
    "dtype": Key(FIXED, one_of(lambda: training.DTYPES)),
    # The data.
    "dataset": Key(FIXED, dataset),
    "data_dir": Key(FREE, text),  # where TFDS keeps the same data
    "synthetic_examples": Key(FIXED, sequence(POSITIVE, 2)),
    "pipeline": Key(FIXED, one_of(lambda: pipelines.PIPELINES)),
    "image_size": Key(FIXED, POSITIVE),  # the side of the square images the model sees
    "eval_resize": Key(FIXED, POSITIVE),  # streaming: shorter side before the centre crop
    "data_workers": Key(FREE, integer(0, 1024)),  # streaming: decoding processes (0: a thread)
    "augment": Key(FIXED, boolean),
    "batch_size": Key(FIXED, POSITIVE),
    "eval_batch_size": Key(FREE, POSITIVE),
    # Length and cadences.
    "num_train_steps": Key(FREE, STEPS),  # fixed too where the schedule reads it
    "eval_every_steps": Key(FREE, STEPS),
    "checkpoint_every_steps": Key(FREE, STEPS),
    "log_every_steps": Key(FREE, STEPS),
    "keep_checkpoints": Key(FREE, POSITIVE),
    # The optimizer and its schedule.
    "optimizer": Key(FIXED, one_of(lambda: training.OPTIMIZERS)),
    "momentum": Key(FIXED, number(0, 1, below_high=True)),
    "nesterov": Key(FIXED, boolean),
    "learning_rate": Key(FIXED, number(0)),
    "schedule": Key(FIXED, one_of(lambda: training.SCHEDULES)),
    "lr_boundaries": Key(FIXED, sequence(integer(0, INT32_MAX))),
    "lr_scales": Key(FIXED, sequence(number(0))),
    "warmup_steps": Key(FIXED, integer(0, INT32_MAX)),
    "weight_decay": Key(FIXED, number(0)),
    "decay_norm_and_bias": Key(FIXED, boolean),
    "label_smoothing": Key(FIXED, number(0, 1, below_high=True)),
    "sync_batch_stats": Key(FIXED, boolean),
    # How it runs.
    "parallel": Key(FREE, one_of(lambda: parallel.PARALLEL)),
    "steps_per_call": Key(FREE, integer(1, 10_000)),  # the batches of a call are held at once
    "log_grad_norms": Key(FREE, boolean),
    "seed": Key(FIXED, integer(0, INT32_MAX)),
}


def _key_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in config:
        if key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown config key {key!r}{hint}; remove it")
    problems += [f"the config lacks {key!r}; add it (configs/paper_cifar.py lists every key)"
                 for key in KEYS if key not in config]
    return problems


def _value_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, spec in KEYS.items():
        problem = spec.check(config[key])
        if problem:
            fix = "" if "--config." in problem else f"; set --config.{key}"
            problems.append(f"{key}={config[key]!r} {problem}{fix}")
    return problems


def _relation_problems(config: Mapping[str, Any], num_devices: int) -> list[str]:
    problems = []
    if len(config["lr_boundaries"]) != len(config["lr_scales"]):
        problems.append(f"lr_boundaries has {len(config['lr_boundaries'])} steps but lr_scales "
                        f"{len(config['lr_scales'])} factors; give one factor per boundary")
    elif list(config["lr_boundaries"]) != sorted(set(config["lr_boundaries"])):
        problems.append(f"lr_boundaries={tuple(config['lr_boundaries'])} must increase")
    if config["schedule"] == "cosine" and config["warmup_steps"] > config["num_train_steps"]:
        problems.append(f"warmup_steps={config['warmup_steps']} exceeds num_train_steps="
                        f"{config['num_train_steps']}; shorten the warm-up")
    if config["pipeline"] == "streaming" and config["eval_resize"] < config["image_size"]:
        problems.append(f"eval_resize={config['eval_resize']} is below image_size="
                        f"{config['image_size']}; the centre crop must fit in the resized image: "
                        f"set --config.eval_resize={config['image_size']} or more")
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % num_devices:
            problems.append(f"{key}={config[key]} is not divisible by the {num_devices} "
                            f"devices; use a multiple of {num_devices}")
    return problems


def validate(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """ConfigError naming every problem of ``config`` (one line), before anything runs."""
    values = config.to_dict()
    problems = _key_problems(values)
    if not problems:
        problems = _value_problems(values)
    if not problems:
        problems = _relation_problems(values, num_devices)
    if problems:
        raise ConfigError("; ".join(problems))


def fixed_keys(config: Mapping[str, Any]) -> set[str]:
    """The keys a resumed run must keep: the fixed ones and those its schedule reads."""
    schedule = training.SCHEDULES.get(config.get("schedule"))
    return {k for k, spec in KEYS.items() if spec.fixed} | set(schedule.keys if schedule else ())


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def changed_fixed_keys(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """'key: saved -> new' for each fixed key that ``config`` changes (keys the saved run
    predates are taken as they are now)."""
    by_schedule = fixed_keys(saved) - {k for k, spec in KEYS.items() if spec.fixed}
    return [f"{key}: {_comparable(saved[key])!r} -> {_comparable(config[key])!r}"
            + (f" (fixed by schedule={saved['schedule']})" if key in by_schedule else "")
            for key in sorted(fixed_keys(saved))
            if key in saved and _comparable(saved[key]) != _comparable(config[key])]
