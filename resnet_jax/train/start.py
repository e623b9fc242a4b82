"""What a run settles before it writes anything: the config, the work directory, the
previous run, the data; a refusal here leaves the work directory as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from pathlib import Path

import jax
import ml_collections

from resnet_jax.errors import ConfigError, WorkdirError
from resnet_jax.runs.workdir import (
    CHECKPOINT_DIR,
    Lock,
    check_ownership,
    checkpoints_removed,
    create,
    latest_checkpoint_step,
    read_config,
    read_metrics_file,
    remove_if_empty,
)
from resnet_jax.train import config_schema
from resnet_jax.train.train_calls import chosen_steps_problem


def check_config(config: ml_collections.ConfigDict, chosen: Collection[str] = ()) -> list[str]:
    """ConfigError for a config this trainer cannot run as given, here (see
    :func:`config_schema.validate`, and a chosen steps_per_call on a CPU); the warnings."""
    warnings = config_schema.validate(config, jax.device_count(), chosen)
    problem = chosen_steps_problem(config.steps_per_call)
    if "steps_per_call" in chosen and problem:
        raise ConfigError(f"steps_per_call={config.steps_per_call} {problem}; leave out "
                          "--config.steps_per_call")
    return warnings


def use_compile_cache(config: ml_collections.ConfigDict) -> None:
    """Keep the compiled programs in ``config.compile_cache_dir`` (JAX's persistent
    compilation cache), where it is set: a restart, and each size of a resolution ramp
    once compiled, loads them instead of compiling again."""
    if config.compile_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compile_cache_dir)


def claim_workdir(workdir: Path, cleanup: contextlib.ExitStack) -> None:
    """Make ``workdir`` this run's: refuse a directory of somebody else's or one in use;
    undo on exit what a start that never trained created."""
    check_ownership(workdir)
    if jax.process_index() != 0:
        return
    cleanup.callback(remove_if_empty, create(workdir))
    lock = Lock(workdir)
    lock.acquire()
    cleanup.callback(lock.release)


def check_previous_run(workdir: Path, config: ml_collections.ConfigDict) -> int | None:
    """Refuse to resume a run with changed fixed keys, damaged records or fewer steps
    than it has done; the latest step saved, None if the run is new."""
    saved = read_config(workdir)
    read_metrics_file(workdir)
    latest = latest_checkpoint_step(workdir)
    if saved is not None and not (workdir / CHECKPOINT_DIR).is_dir():
        raise WorkdirError(f"{workdir} holds a run (its config.json) but no {CHECKPOINT_DIR}/ "
                           "folder, which every start of a run makes: it was removed, and the "
                           f"run cannot resume; put {CHECKPOINT_DIR}/ back, or pass a new "
                           "--workdir")
    removed = checkpoints_removed(workdir) if saved is not None and latest is None else None
    if removed:
        raise WorkdirError(f"{removed}, and the run cannot resume; put them back, or pass a new "
                           "--workdir")
    if latest is None:
        return None
    if saved is None:
        raise ConfigError(f"{workdir} holds checkpoints but no config.json, so a resume cannot "
                          "be checked against the run's settings; put config.json back, or "
                          "pass a new --workdir")
    changes = config_schema.changed_fixed_keys(  # a finished run reads no data to check
        saved, config, data_read=config.num_train_steps > latest)
    if changes:
        raise ConfigError(f"{workdir} holds a run with a different setup ({'; '.join(changes)}); "
                          "resume with the saved values, or pass a new --workdir for a new run")
    if config.num_train_steps < latest:
        raise ConfigError(f"num_train_steps={config.num_train_steps} is below step {latest}, "
                          f"where the run in {workdir} stands; pass --config.num_train_steps="
                          f"{latest} or more")
    return latest


