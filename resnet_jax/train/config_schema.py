"""Every config key: what values it takes, and whether a resumed run may change it.

A key is *fixed* when changing it changes the trajectory or the structure of the
saved state (model, data, batch, seed, optimizer, schedule...): a run resumed
with another value would no longer be the run its config.json describes, so
that is refused. A *free* key (length, cadences, logging, where the data is
read from) takes effect on resume. The valid choices come from the registries
the code itself uses, so a new option is valid the moment it exists.

Each key also says under which settings it has no effect (a momentum under Adam,
boundaries under a cosine schedule, worker counts in memory...). A key the user
*chose* (gave on the command line) that would have no effect is refused, unless
it is off (0, False, empty): no setting is ignored in silence. The config file's
own values are its recipe and are not second-guessed, except for learning-rate
boundaries that a shortened run will not reach, which are named in a warning.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from resnet_jax import data, hints, parallel, weights
from resnet_jax.data import pipelines
from resnet_jax.data.pipelines import autoaugment
from resnet_jax.errors import ConfigError
from resnet_jax.models import create_model, list_models, relation_problems
from resnet_jax.train import train_calls, training
from resnet_jax.train.key_checks import (
    FIXED,
    FREE,
    IN_MEMORY,
    INT32_MAX,
    NO_DECAY,
    NO_MOMENTUM,
    NOT_PIECEWISE,
    NOT_SGD,
    POSITIVE,
    SIDE,
    SIDE_OR_OFF,
    STEPS,
    Key,
    always,
    boolean,
    dataset,
    directory,
    either,
    integer,
    number,
    one_of,
    sequence,
    text,
    unused_when,
)


def _no_warmup(config: Mapping[str, Any]) -> str | None:
    if config["schedule"] == "onecycle":
        return "under schedule=onecycle, which has a warm-up of its own"
    return None if config["warmup_steps"] else "with warmup_steps=0, which has no warm-up"


_no_warmup.why = ("under schedule=onecycle, which has a warm-up of its own; with warmup_steps=0, "
                  "which has no warm-up")


KEYS: dict[str, Key] = {
    # The model.
    "model": Key(FIXED, one_of(list_models), always),
    "num_classes": Key(FIXED, integer(2), always),
    "residual": Key(FIXED, boolean, always),
    "init_from": Key(FIXED, text, always),  # "" or weights to start from: a name, a .pth, a run
    "init_from_raw": Key(FIXED, boolean, unused_when(  # a run's trained weights, not its average
        lambda c: not c["init_from"], "without init_from, which names no weights to start from")),
    "drop_path_rate": Key(FIXED, number(0, 1, below_high=True), always),  # stochastic depth
    "drop_rate": Key(FIXED, number(0, 1, below_high=True), always),  # dropout before the head
    "remat": Key(FREE, boolean, always),  # recompute each block in the backward pass
    "zero_init_residual": Key(FIXED, boolean, unused_when(
        lambda c: c["init_from"],
        "with init_from={init_from}: the weights replace the initialisation")),
    "dtype": Key(FIXED, one_of(lambda: training.DTYPES), always),
    # The data.
    "dataset": Key(FIXED, dataset, always),
    "data_dir": Key(FREE, text, unused_when(  # where TFDS keeps the same data
        lambda c: not data.is_tfds_name(c["dataset"]),
        "with dataset={dataset}; only a TFDS name is read from a data_dir")),
    "synthetic_examples": Key(FIXED, sequence(POSITIVE, 2), unused_when(
        lambda c: c["dataset"] != "synthetic",
        "with dataset={dataset}; only dataset=synthetic generates examples")),
    "pipeline": Key(FIXED, one_of(lambda: pipelines.PIPELINES), always),
    "image_size": Key(FIXED, SIDE, always),  # the side of the square images the model sees
    "eval_resize": Key(FIXED, SIDE, unused_when(  # streaming: shorter side before the crop
        lambda c: c["pipeline"] != "streaming",
        IN_MEMORY + "evaluates the images at their own size, image_size={image_size}")),
    "eval_image_size": Key(FIXED, SIDE_OR_OFF, unused_when(  # streaming: the crop; 0: image_size
        lambda c: c["pipeline"] != "streaming",
        IN_MEMORY + "evaluates the images at their own size, image_size={image_size}")),
    "min_image_size": Key(FIXED, SIDE_OR_OFF, unused_when(  # progressive resizing; 0: none
        lambda c: c["pipeline"] != "streaming",
        IN_MEMORY + "trains at the images' own size, image_size={image_size}")),
    "ramp_steps": Key(FIXED, sequence(integer(0, INT32_MAX), 2), unused_when(
        lambda c: not c["min_image_size"],
        "with min_image_size=0, which keeps the training size at image_size")),
    "data_workers": Key(FREE, integer(0, 1024), unused_when(  # streaming: decoding processes
        lambda c: c["pipeline"] != "streaming",
        IN_MEMORY + "decodes the whole dataset once, without workers")),
    "augment": Key(FIXED, boolean, always),
    "auto_augment": Key(FIXED, one_of(lambda: ("", *autoaugment.POLICIES)), unused_when(
        lambda c: c["pipeline"] != "streaming" or not c["augment"],
        "with pipeline={pipeline}, augment={augment}; the streaming pipeline's augmented "
        "training crops take it")),
    "ra_magnitude": Key(FIXED, integer(0, autoaugment.BINS - 1), unused_when(
        lambda c: c["auto_augment"] != "ra", "with auto_augment={auto_augment!r}; only "
        "RandAugment ('ra') takes a magnitude")),
    "ra_reps": Key(FIXED, integer(1, 1024), always),  # repeated augmentation: copies a batch
    "eval_flip": Key(FIXED, boolean, always),  # test accuracy of each image and its mirror
    "batch_size": Key(FIXED, POSITIVE, always),
    "eval_batch_size": Key(FREE, POSITIVE, always),
    # Length and cadences.
    "num_train_steps": Key(FREE, STEPS, always),  # fixed too where the schedule reads it
    "eval_every_steps": Key(FREE, STEPS, always),
    "checkpoint_every_steps": Key(FREE, STEPS, always),
    "log_every_steps": Key(FREE, STEPS, always),
    "keep_checkpoints": Key(FREE, POSITIVE, always),
    # The optimizer and its schedule.
    "optimizer": Key(FIXED, one_of(lambda: training.OPTIMIZERS), always),
    "momentum": Key(FIXED, number(0, 1, below_high=True), NOT_SGD),
    "nesterov": Key(FIXED, boolean, either(NOT_SGD, NO_MOMENTUM)),
    "learning_rate": Key(FIXED, number(0), always),
    "schedule": Key(FIXED, one_of(lambda: training.SCHEDULES), always),
    "lr_boundaries": Key(FIXED, sequence(integer(0, INT32_MAX)), unused_when(
        lambda c: c["schedule"] != "piecewise", NOT_PIECEWISE)),
    "lr_scales": Key(FIXED, sequence(number(0)), unused_when(
        lambda c: c["schedule"] != "piecewise", NOT_PIECEWISE)),
    "warmup_steps": Key(FIXED, integer(0, INT32_MAX), unused_when(  # linear, from 0
        lambda c: c["schedule"] == "onecycle",
        "under schedule=onecycle, which warms up over its first 30% of steps by itself")),
    "warmup_start_factor": Key(FIXED, number(0, 1), _no_warmup),  # the rate's first fraction
    "weight_decay": Key(FIXED, number(0), always),
    "decay_norm": Key(FIXED, boolean, NO_DECAY),  # False: none on BatchNorm's scale and bias
    "decay_bias": Key(FIXED, boolean, NO_DECAY),  # False: none on the classifier's bias
    "label_smoothing": Key(FIXED, number(0, 1, below_high=True), always),
    "random_erasing": Key(FIXED, number(0, 1), always),  # torchvision's RandomErasing(p)
    "mixup_alpha": Key(FIXED, number(0), always),  # Beta(a, a) blending of whole images; 0 off
    "cutmix_alpha": Key(FIXED, number(0), always),  # Beta(a, a) boxes; both set: one per batch
    "ema_decay": Key(FIXED, number(0, 1, below_high=True), always),  # 0: no moving average
    "ema_every_steps": Key(FIXED, integer(1, INT32_MAX), unused_when(
        lambda c: not c["ema_decay"], "with ema_decay=0, which keeps no moving average")),
    "sync_batch_stats": Key(FIXED, boolean, always),  # one device: one batch either way
    # How it runs.
    "parallel": Key(FREE, one_of(lambda: parallel.PARALLEL), always),
    "steps_per_call": Key(FREE, integer(1, 10_000), train_calls.pipeline_limit_problem),
    "log_grad_norms": Key(FREE, boolean, always),
    "profile_steps": Key(FREE, sequence(integer(0, INT32_MAX), 2), always),  # (0, 0): off
    "peak_tflops": Key(FREE, number(0), always),  # per device, for mfu; 0: the device kind's
    "compile_cache_dir": Key(FREE, directory, always),  # compiled programs kept; "": none
    "seed": Key(FIXED, integer(0, INT32_MAX), always),
}


def _key_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in config:
        if hints.split_key(key):
            problems.append(hints.split_key(key))
        elif key not in KEYS:
            close = hints.closest(key, KEYS)
            hint = f" (did you mean {close!r}?)" if close else ""
            problems.append(f"unknown config key {key!r}{hint}; remove it")
    replaced = {new for old in config if old in hints.SPLIT_KEYS for new in hints.SPLIT_KEYS[old]}
    problems += [f"the config lacks {key!r}; add it (configs/base.py lists every key)"
                 for key in KEYS if key not in config and key not in replaced]
    return problems


def _value_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, spec in KEYS.items():
        problem = spec.check(config[key])
        if problem:
            fix = "" if "--config." in problem else f"; set --config.{key}"
            problems.append(f"{key}={config[key]!r} {problem}{fix}")
    return problems


def _profile_problems(config: Mapping[str, Any]) -> list[str]:
    """A profiling window that is not a window of the run's steps after the first."""
    start, end = config["profile_steps"]
    if (start, end) == (0, 0) or 1 <= start < end <= config["num_train_steps"]:
        return []
    return [f"profile_steps=({start}, {end}) is not a window of this run's steps: give (FIRST, "
            f"LAST) with 1 <= FIRST < LAST <= num_train_steps={config['num_train_steps']} "
            "(step 0's call compiles), or (0, 0) for none"]


def _ramps(config: Mapping[str, Any]) -> bool:
    """Whether the run resizes progressively: min_image_size set where it takes effect."""
    return ignored("min_image_size", config) is None and bool(config["min_image_size"])


def _ramp_problems(config: Mapping[str, Any]) -> list[str]:
    """Progressive resizing that cannot run as meant."""
    if not _ramps(config):
        return []
    problems = []
    start, end = config["ramp_steps"]
    if (start, end) == (0, 0):
        problems.append(f"min_image_size={config['min_image_size']} starts a resolution ramp, "
                        "which needs ramp_steps, the steps where it starts and ends; set "
                        "--config.ramp_steps=(FIRST,LAST)")
    elif start >= end:
        problems.append(f"ramp_steps=({start}, {end}) must start before it ends; give "
                        "(first step, last step) of the ramp, the first below the last")
    if config["min_image_size"] > config["image_size"]:
        problems.append(f"min_image_size={config['min_image_size']} exceeds image_size="
                        f"{config['image_size']}, where the ramp ends; set it lower")
    if config["eval_image_size"] and config["image_size"] > config["eval_image_size"]:
        problems.append(f"image_size={config['image_size']}, the ramp's end, exceeds "
                        f"eval_image_size={config['eval_image_size']}; end the ramp at or "
                        "below the evaluation size")
    return problems


def _relation_problems(config: Mapping[str, Any], num_devices: int) -> list[str]:
    problems = []
    piecewise = config["schedule"] == "piecewise"
    if piecewise and len(config["lr_boundaries"]) != len(config["lr_scales"]):
        problems.append(f"lr_boundaries has {len(config['lr_boundaries'])} steps but lr_scales "
                        f"{len(config['lr_scales'])} factors; give one factor per boundary")
    elif piecewise and list(config["lr_boundaries"]) != sorted(set(config["lr_boundaries"])):
        problems.append(f"lr_boundaries={tuple(config['lr_boundaries'])} must increase")
    if piecewise and config["warmup_steps"] > config["num_train_steps"]:
        problems.append(f"warmup_steps={config['warmup_steps']} exceeds num_train_steps="
                        f"{config['num_train_steps']}; set "
                        f"{hints.setting('warmup_steps', config['num_train_steps'])} or less")
    decays = config["schedule"] in ("cosine", "linear")
    if decays and config["warmup_steps"] >= config["num_train_steps"]:
        problems.append(f"warmup_steps={config['warmup_steps']} leaves no steps of "
                        f"num_train_steps={config['num_train_steps']} for the "
                        f"{config['schedule']} decay; set "
                        f"{hints.setting('warmup_steps', config['num_train_steps'] - 1)} or less")
    problems += relation_problems(config)  # the model's own rules, as create_model's
    crop_key = "eval_image_size" if config["eval_image_size"] else "image_size"
    if config["pipeline"] == "streaming" and config["eval_resize"] < config[crop_key]:
        problems.append(f"eval_resize={config['eval_resize']} is below {crop_key}="
                        f"{config[crop_key]}; the centre crop must fit in the resized image: "
                        f"set --config.eval_resize={config[crop_key]} or more")
    problems += _ramp_problems(config)
    problems += _profile_problems(config)
    stride = create_model(config["model"]).total_stride
    for key in ("image_size", "eval_image_size", "min_image_size"):
        if 0 < config[key] < stride:
            problems.append(f"{key}={config[key]} is below {config['model']}'s total stride "
                            f"of {stride}: its last stage would see less than one pixel; set "
                            f"--config.{key}={stride} or more")
    if config["batch_size"] % config["ra_reps"]:
        problems.append(f"batch_size={config['batch_size']} is not divisible by ra_reps="
                        f"{config['ra_reps']}: each example's copies share a batch; use a "
                        f"multiple of {config['ra_reps']}")
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % num_devices:
            problems.append(f"{key}={config[key]} is not divisible by the {num_devices} "
                            f"devices; use a multiple of {num_devices}")
    return problems


def _unused_problems(config: Mapping[str, Any], chosen: Collection[str]) -> list[str]:
    """Each chosen key that would have no effect, and boundaries the run would not reach."""
    problems = [f"{key}={_shown(config[key])} has no effect {why}; leave out --config.{key}"
                for key in KEYS if key in chosen and (why := ignored(key, config))]
    unreached = ", ".join(map(str, unreached_boundaries(config)))
    given = [f"{key}={_shown(config[key])}" for key in ("lr_boundaries", "lr_scales")
             if key in chosen]
    if unreached and given:
        problems.append(f"{' and '.join(given)}: the run ends at num_train_steps="
                        f"{config['num_train_steps']}, before step {unreached} of lr_boundaries, "
                        "where the rate would be scaled; drop the boundary or raise "
                        "--config.num_train_steps")
    short = unreached_ramp(config)
    if short and {"ramp_steps", "min_image_size", "image_size"} & set(chosen):
        problems.append(f"{short}; end the ramp by then or raise --config.num_train_steps")
    rare = unreached_average(config)
    if rare and {"ema_decay", "ema_every_steps"} & set(chosen):
        problems.append(f"{rare}; set --config.ema_every_steps below it")
    return problems


def unreached_average(config: Mapping[str, Any]) -> str | None:
    """How a moving average of the weights updated less often than the run is long would
    average nothing, or None."""
    if not config["ema_decay"] or config["ema_every_steps"] < config["num_train_steps"]:
        return None
    return (f"ema_every_steps={config['ema_every_steps']} is not below num_train_steps="
            f"{config['num_train_steps']}: the moving average is updated after step 1 alone (a "
            "copy), so its ema_ figures would be the weights after one step")


def unreached_ramp(config: Mapping[str, Any]) -> str | None:
    """How a progressive resizing ramp outlasts the run, or None."""
    if not _ramps(config):
        return None
    start, end = config["ramp_steps"]
    if config["num_train_steps"] >= end:
        return None
    return (f"the run ends at num_train_steps={config['num_train_steps']}, before the end of "
            f"ramp_steps=({start}, {end}): its training crops never reach image_size="
            f"{config['image_size']}")


def ignored(key: str, config: Mapping[str, Any]) -> str | None:
    """Why the value of ``key`` has no effect under ``config``'s other settings, or None;
    a key that is off (0, False, empty) leaves nothing to ignore."""
    return KEYS[key].unused(config) if config[key] else None


def _shown(value: Any) -> str:
    return repr(tuple(value) if isinstance(value, list) else value)


def unreached_boundaries(config: Mapping[str, Any]) -> list[int]:
    """The learning-rate boundaries at or after the run's last step (none off piecewise)."""
    if config["schedule"] != "piecewise":
        return []
    return [b for b in config["lr_boundaries"] if b >= config["num_train_steps"]]


def validate(config: ml_collections.ConfigDict, num_devices: int,
             chosen: Collection[str] = ()) -> list[str]:
    """ConfigError naming every problem of ``config`` (one line), before anything runs.

    ``chosen``: the keys the user set (train.py: those given on the command line); a
    chosen key that has no effect under the other settings is a problem, and so are
    chosen learning-rate boundaries the run will not reach. Returns the warnings to
    show: the config file's boundaries that a shortened run will not reach.
    """
    values = config.to_dict()
    problems = _key_problems(values)
    if not problems:
        problems = _value_problems(values)
    if not problems:
        with hints.door(hints.CONFIG):
            problems = _relation_problems(values, num_devices) + _unused_problems(values, chosen)
    if problems:
        raise ConfigError("; ".join(problems))
    warnings = []
    unreached = unreached_boundaries(values)
    if unreached and not {"lr_boundaries", "lr_scales"} & set(chosen):
        warnings.append(f"the run ends at num_train_steps={values['num_train_steps']}, before "
                        f"lr_boundaries {', '.join(map(str, unreached))} of the config: the "
                        "learning rate is not scaled there (a shortened recipe)")
    for short in (unreached_ramp(values), unreached_average(values)):
        if short:
            warnings.append(f"{short} (a shortened recipe)")
    return warnings


def fixed_keys(config: Mapping[str, Any]) -> set[str]:
    """The keys a resumed run must keep: the fixed ones and those its schedule reads."""
    schedule = training.SCHEDULES.get(config.get("schedule"))
    return {k for k, spec in KEYS.items() if spec.fixed} | set(schedule.keys if schedule else ())


# Keys whose value may be a path: made absolute once, so that the same data and weights are
# named the same way wherever a run is started, resumed or evaluated from.
PATHS = {"dataset": data.resolved_dataset, "init_from": weights.resolved_source,
         "compile_cache_dir": lambda path: str(Path(path).expanduser().absolute()) if path else ""}


def resolved(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with its paths absolute (see PATHS)."""
    config = config.copy_and_resolve_references()
    for key, resolve in PATHS.items():
        config[key] = resolve(config[key])
    return config


def _comparable(key: str, value: Any) -> Any:
    """A value as saved in config.json compares (a relative path: from here)."""
    if key in PATHS:
        return PATHS[key](value)
    return list(value) if isinstance(value, tuple | list) else value


def changed_fixed_keys(saved: Mapping[str, Any], config: ml_collections.ConfigDict,
                       data_read: bool = False) -> list[str]:
    """'key: saved -> new' for each fixed key that ``config`` changes, leaving out keys that
    have no effect in either run (keys the saved run predates are taken as they are now)
    and, where the run will read its data (and check it), a dataset path moved."""
    new = {**saved, **config.to_dict()}  # keys one side predates: taken as the other's
    old = {**new, **saved}
    by_schedule = fixed_keys(saved) - {k for k, spec in KEYS.items() if spec.fixed}
    return [f"{key}: {_comparable(key, old[key])!r} -> {_comparable(key, new[key])!r}"
            + (f" (fixed by schedule={saved['schedule']})" if key in by_schedule else "")
            for key in sorted(fixed_keys(saved) & old.keys())  # keys both predate: left out
            if _comparable(key, old[key]) != _comparable(key, new[key])
            and not (KEYS[key].unused(old) and KEYS[key].unused(new))
            and not (key == "dataset" and data_read and data.moved(old[key], new[key]))]
