"""Orbax checkpoints under ``WORKDIR/checkpoints`` (the train state, item ``default``, the
input pipeline's position, item ``pipeline``, and a copy of the run's dataset.json, item
``dataset``): written by the trainer, read by resume, and by the readers of a run's trained
weights (:mod:`resnet_jax.runs.trained`)."""

from __future__ import annotations

import contextlib
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from orbax.checkpoint import checkpoint_managers as policies

from resnet_jax import arguments, hints
from resnet_jax.errors import (
    CheckpointError,
    CheckpointMismatch,
    ResNetWarning,
    WorkdirError,
)
from resnet_jax.files import free_name
from resnet_jax.parallel import replicated
from resnet_jax.progress import warn
from resnet_jax.quiet import absl_logs_quiet, damage_quiet
from resnet_jax.runs import workdir

STATE, PIPELINE, DATA = "default", "pipeline", "dataset"  # the items of a checkpoint


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
    return {STATE: ocp.StandardCheckpointHandler(), PIPELINE: ocp.JsonCheckpointHandler(),
            DATA: ocp.JsonCheckpointHandler()}


def checkpoint_manager(run_dir: str | Path, keep: int) -> ocp.CheckpointManager:
    """Keeps the latest ``keep`` checkpoints plus the best one by test accuracy."""
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=lambda metrics: metrics["test_accuracy"], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=preservation, create=True)
    with absl_logs_quiet():  # a damaged checkpoint is reported by restore_latest
        return ocp.CheckpointManager(Path(run_dir).absolute() / workdir.CHECKPOINT_DIR,
                                     options=options, item_handlers=_item_handlers())


def _resharded(tree: Any, sharding: NamedSharding) -> Any:
    """The same per-device copies of a replicated tree, as arrays of ``sharding``.

    pmap's state lives on each process's own devices; Orbax needs one array over
    the devices of all processes. Nothing is copied.
    """
    def view(array: jax.Array) -> jax.Array:
        if array.sharding == sharding:
            return array
        return jax.make_array_from_single_device_arrays(
            array.shape, sharding, [shard.data for shard in array.addressable_shards])

    return jax.tree.map(view, tree)


def save(manager: ocp.CheckpointManager, state: Any, metrics: dict[str, float] | None = None,
         pipeline: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> None:
    """Save ``state`` (replicated) at its step, with the input ``pipeline``'s state if it
    has one and the description of the run's ``data``; every process calls this together."""
    step = int(state.step)
    if step in manager.all_steps():
        return
    items = {STATE: ocp.args.StandardSave(_resharded(state, replicated(jax.devices())))}
    for name, value in ((PIPELINE, pipeline), (DATA, data)):
        if value is not None:
            items[name] = ocp.args.JsonSave(value)
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _array_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{'params.fc.kernel': shape, ...}, named as Orbax names a saved state's arrays."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(_key_name(k) for k in path): tuple(leaf.shape) for path, leaf in leaves}


def _saved_shapes(saved: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree.leaves(saved, is_leaf=lambda leaf: hasattr(leaf, "shape"))
    return {leaf.name: tuple(leaf.shape) for leaf in leaves}


def _structure_difference(saved: dict[str, tuple], wanted: dict[str, tuple]) -> str | None:
    """How two states differ (metric sums aside, which adapt), or None."""
    def model_state(shapes: dict[str, tuple]) -> dict[str, tuple]:
        return {k: v for k, v in shapes.items() if not k.startswith("metric_sums.")}

    saved, wanted = model_state(saved), model_state(wanted)
    differing = sorted((k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k)),
                       key=lambda k: (not k.startswith("params."), k))
    if not differing:
        return None
    key = differing[0]
    return (f"{len(differing)} arrays differ, e.g. {key}: "
            f"{saved.get(key, 'absent')} saved, {wanted.get(key, 'absent')} now")


def _restore_target(state: Any, saved: dict[str, Any], everywhere: NamedSharding) -> Any:
    """Abstract arrays to restore into: the state's, with the metric sums as saved."""
    def abstract(leaf: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=everywhere)

    sums = {name: abstract(leaf) for name, leaf in saved.get("metric_sums", {}).items()}
    return jax.tree.map(abstract, state).replace(metric_sums=sums)


def _adapt_metric_sums(saved: dict[str, jax.Array], wanted: dict[str, jax.Array]) -> dict:
    """The saved sums of the metrics this run reports; zeros for metrics turned on now."""
    return {name: saved[name] if name in saved and saved[name].shape == zero.shape else zero
            for name, zero in wanted.items()}


def _newest_readable(steps: list[int], read: Callable[[int], Any]) -> tuple[int | None, Any,
                                                                      dict[int, str]]:
    """The newest of ``steps`` that ``read`` can read: (its step, what ``read`` gave, and
    each newer step that could not be read with why); (None, None, failures) if none can.
    A CheckpointMismatch is not damage: it is raised."""
    failures: dict[int, str] = {}
    for step in sorted(steps, reverse=True):
        try:
            with damage_quiet():
                return step, read(step), failures
        except CheckpointMismatch:
            raise
        except Exception as error:  # Orbax and TensorStore raise many kinds for damaged files
            failures[step] = _describe(error)
    return None, None, failures


def _listing(failures: dict[int, str]) -> str:
    return "; ".join(f"step {step}: {why}" for step, why in failures.items())


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> tuple[Any, dict | None]:
    """The latest readable saved state, placed like ``state``, and the input pipeline's
    saved state (None if it saved none); ``(state, None)`` if nothing was saved.

    A checkpoint whose files cannot be read (truncated, damaged) is moved to
    ``WORKDIR/unreadable_checkpoints/STEP``, never deleted, with a warning, and the
    one before is restored; if none can be read, CheckpointError. A readable one
    that holds a state of another structure raises CheckpointMismatch and moves
    nothing. Metric sums adapt to the metrics turned on or off since.
    """
    everywhere = replicated(jax.devices())
    wanted = _array_shapes(state)

    def read(step: int) -> Any:
        saved = manager.item_metadata(step)[STATE].tree
        difference = _structure_difference(_saved_shapes(saved), wanted)
        if difference:
            raise CheckpointMismatch(
                f"checkpoint {step} under {manager.directory} holds a state of another "
                f"structure ({difference}); resume with the config it was saved with, or "
                "pass another --workdir (nothing was changed)")
        items = {STATE: ocp.args.StandardRestore(_restore_target(state, saved, everywhere))}
        if (Path(manager.directory) / str(step) / PIPELINE).is_dir():
            items[PIPELINE] = ocp.args.JsonRestore()
        return manager.restore(step, args=ocp.args.Composite(**items))

    step, restored, failures = _newest_readable(manager.all_steps(), read)
    if step is None and failures:
        raise CheckpointError(f"no checkpoint under {manager.directory} can be read "
                              f"({_listing(failures)}); move them away (nothing was changed) "
                              "to start afresh there, or pass another --workdir")
    if step is None:
        return state, None
    if failures:
        _set_aside(manager, failures, step)
    train_state = restored[STATE].replace(metric_sums=_adapt_metric_sums(
        restored[STATE].metric_sums, jax.device_put(state.metric_sums, everywhere)))
    return _resharded(train_state, state.step.sharding), restored.get(PIPELINE)


def _describe(error: Exception) -> str:
    """A short, one-line reason (TensorStore's messages carry a whole spec: the array's
    name is kept)."""
    text = " ".join(str(error).split())
    if "TensorStore" in text:
        name = re.findall(r"'path': '([^'/]+)/'", text)  # the array's, among the spec's paths
        text = f"array {name[-1]} cannot be read" if name else "an array cannot be read"
    elif "<bound method" in text:
        text = text.split("<bound method")[0].strip()
    return f"{type(error).__name__}: {text[:240]}" if text else type(error).__name__


def _set_aside(manager: ocp.CheckpointManager, failures: dict[int, str], restored: int) -> None:
    aside = Path(manager.directory).parent / workdir.SET_ASIDE_DIR
    if jax.process_index() == 0:
        aside.mkdir(exist_ok=True)
        for step, error in failures.items():
            destination = free_name(aside / str(step))
            shutil.move(Path(manager.directory) / str(step), destination)
            warn(f"checkpoint {step} cannot be read ({error}); moved it to "
                 f"{destination} and resumed from step {restored}")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("resnet_jax: unreadable checkpoints moved")
    manager.reload()


def run_directory(run_dir: Any) -> Path:
    """``run_dir`` as the work directory of a training run: CheckpointError naming what it
    is instead (missing, a file, a hub snapshot, a folder without a run's config.json)."""
    path = Path(arguments.path("run_dir", run_dir, "runs/r20")).expanduser()
    run = "a training run's work directory (the folder train.py's --workdir names)"
    if not path.is_dir():
        raise CheckpointError(f"{path} {'is a file' if path.exists() else 'does not exist'}: "
                              f"pass {run}")
    if (path / "model.safetensors").exists():
        raise CheckpointError(f"{path} is a hub snapshot of weights, not {run}: pass it as the "
                              f"weights ({hints.setting('weights', str(path))})")
    try:
        config = workdir.read_config(path)
    except WorkdirError as error:
        raise CheckpointError(f"{str(error).split('; ')[0]}: it is not the config of {run} "
                              "(edited or replaced? put back the run's own)") from None
    if config is None:
        raise CheckpointError(f"{path} holds no config.json: it is not {run} (or its "
                              "config.json was lost: put it back)")
    return path


def read_checkpoint(run_dir: str | Path, step: int | None = None) -> tuple[int, Any]:
    """(step, train state as saved, on this process's first device) of a run's checkpoint
    of ``step``, or of its newest readable one: the reader of every door that only reads
    (restore, predict, evaluate, init_from). Nothing is moved or changed: an unreadable
    newer checkpoint is passed over with a ResNetWarning naming it and why; a ``step``
    that is missing or unreadable is a CheckpointError listing the steps that can be read."""
    step = arguments.step(step)
    run = run_directory(run_dir).absolute()
    directory = run / workdir.CHECKPOINT_DIR
    with _reader(directory) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            removed = workdir.checkpoints_removed(run)
            raise CheckpointError(f"{removed}; put them back from a copy of the run" if removed
                                  else f"no checkpoint under {directory}: the run saved none "
                                  "yet (its first comes at checkpoint_every_steps)")

        def read(at: int) -> Any:
            return _read_items(manager, at, (STATE,))[STATE]

        if step is not None:
            return step, _read_asked(manager, steps, step, read)
        found, state, failures = _newest_readable(steps, read)
    if found is None:
        raise CheckpointError(f"no checkpoint under {directory} can be read "
                              f"({_listing(failures)}); nothing was changed")
    if failures:
        warnings.warn(ResNetWarning(
            f"the newest checkpoint(s) under {directory} cannot be read ({_listing(failures)}); "
            f"read step {found}, the newest readable one (nothing was moved)"), stacklevel=2)
    return found, state


def _read_asked(manager: ocp.CheckpointManager, steps: list[int], step: int,
                read: Callable[[int], Any]) -> Any:
    """The checkpoint of ``step``, asked for by name; CheckpointError listing the readable
    steps where it is missing or cannot be read."""
    try:
        if step in steps:
            with damage_quiet():
                return read(step)
        problem = f"there is no checkpoint of step {step} under {manager.directory}"
    except Exception as error:  # as in _newest_readable
        problem = (f"the checkpoint of step {step} under {manager.directory} cannot be read "
                   f"({_describe(error)})")
    readable = []
    for other in steps:
        with contextlib.suppress(Exception), damage_quiet():
            read(other)
            readable.append(other)
    choice = (f"pass one of them ({hints.setting('step', readable[-1])}), or leave out "
              f"{hints.name('step')} for the newest readable one" if readable
              else "none can be read")
    raise CheckpointError(f"{problem}; readable steps: {readable or 'none'}; {choice}")


def _read_items(manager: ocp.CheckpointManager, step: int, items: tuple[str, ...]) -> dict:
    """Items of one checkpoint: the train state onto this process's first device (whatever
    the devices it was trained on), JSON items as they are."""
    args = {}
    for item in items:
        if item == STATE:
            target = _on_one_device(manager.item_metadata(step)[STATE].tree)
            args[item] = ocp.args.StandardRestore(target)
        else:
            args[item] = ocp.args.JsonRestore()
    return dict(manager.restore(step, args=ocp.args.Composite(**args)))


class _NoCheckpoints:
    """Stands in for a manager of a checkpoint folder that does not exist."""

    def all_steps(self) -> list[int]:
        return []


@contextlib.contextmanager
def _reader(directory: Path) -> Iterator[Any]:
    """A manager that only reads ``directory`` (one without steps where it is missing)."""
    if not directory.is_dir():
        yield _NoCheckpoints()
        return
    options = ocp.CheckpointManagerOptions(create=False, read_only=True, save_interval_steps=0)
    with absl_logs_quiet(), ocp.CheckpointManager(directory, options=options,
                                                  item_handlers=_item_handlers()) as manager:
        yield manager


def latest_json_item(run_dir: str | Path, item: str) -> dict[str, Any] | None:
    """The JSON ``item`` (PIPELINE or DATA) of a run's newest readable checkpoint that holds
    one, None if none does. Nothing is moved."""
    directory = Path(run_dir).absolute() / workdir.CHECKPOINT_DIR
    with _reader(directory) as manager:
        steps = [step for step in manager.all_steps() if (directory / str(step) / item).is_dir()]
        found, items, _ = _newest_readable(steps, lambda at: _read_items(manager, at, (item,)))
    return None if found is None else items[item]


def _on_one_device(saved: Any) -> Any:
    """Abstract arrays of the saved shapes on this process's first device, whatever the
    devices the run was trained on."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                        saved, is_leaf=lambda leaf: hasattr(leaf, "shape"))
