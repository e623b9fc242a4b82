"""Orbax checkpoints under ``WORKDIR/checkpoints`` (the train state, item ``default``, the
input pipeline's position, item ``pipeline``, and a copy of the run's dataset.json, item
``dataset``), and restore for inference."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from orbax.checkpoint import checkpoint_managers as policies

from resnet_jax import workdir
from resnet_jax.errors import CheckpointError, CheckpointMismatch
from resnet_jax.models import ResNet, build_model
from resnet_jax.parallel import replicated
from resnet_jax.quiet import absl_logs_quiet

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
    failures = {}
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            with absl_logs_quiet():
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
            with absl_logs_quiet():
                restored = manager.restore(step, args=ocp.args.Composite(**items))
        except CheckpointMismatch:
            raise
        except Exception as error:  # Orbax and TensorStore raise many kinds for damaged files
            failures[step] = _describe(error)
            continue
        if failures:
            _set_aside(manager, failures, step)
        train_state = restored[STATE].replace(metric_sums=_adapt_metric_sums(
            restored[STATE].metric_sums, jax.device_put(state.metric_sums, everywhere)))
        return _resharded(train_state, state.step.sharding), restored.get(PIPELINE)
    if failures:
        listing = "; ".join(f"step {s}: {e}" for s, e in failures.items())
        raise CheckpointError(f"no checkpoint under {manager.directory} can be read ({listing}); "
                              "move them away (nothing was changed) to start afresh there, "
                              "or pass another --workdir")
    return state, None


def _describe(error: Exception) -> str:
    """A short, one-line reason (some TensorStore messages are bound-method reprs)."""
    text = " ".join(str(error).split())
    if "<bound method" in text:
        text = text.split("<bound method")[0].strip()
    return f"{type(error).__name__}: {text[:240]}" if text else type(error).__name__


def _set_aside(manager: ocp.CheckpointManager, failures: dict[int, str], restored: int) -> None:
    aside = Path(manager.directory).parent / workdir.SET_ASIDE_DIR
    if jax.process_index() == 0:
        aside.mkdir(exist_ok=True)
        for step, error in failures.items():
            destination = _free_name(aside / str(step))
            shutil.move(Path(manager.directory) / str(step), destination)
            logging.warning("checkpoint %d cannot be read (%s); moved it to %s and resumed from "
                            "step %d", step, error, destination, restored)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("resnet_jax: unreadable checkpoints moved")
    manager.reload()


def restore(run_dir: str | Path, step: int | None = None,
            raw: bool = False) -> tuple[ResNet, dict[str, Any]]:
    """The model and its ``{'params', 'batch_stats'}`` from a training run, for inference,
    on this process's first device (any device count may have trained it): the moving
    average of the weights where the run keeps one (``ema_decay``), the trained weights
    themselves where it does not or with ``raw``.

    ``step`` defaults to the latest checkpoint.
    """
    saved = workdir.read_config(Path(run_dir))
    if saved is None:
        raise FileNotFoundError(f"{Path(run_dir) / workdir.CONFIG_FILE} not found; is {run_dir} "
                                "the --workdir of a training run?")
    config = ml_collections.ConfigDict(saved)
    with ocp.CheckpointManager(Path(run_dir).absolute() / workdir.CHECKPOINT_DIR,
                               item_handlers=_item_handlers()) as manager:
        saved_steps = sorted(manager.all_steps())
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {run_dir}/{workdir.CHECKPOINT_DIR}")
        if step not in saved_steps:
            raise FileNotFoundError(f"no checkpoint of step {step} under {run_dir}/"
                                    f"{workdir.CHECKPOINT_DIR}; saved steps: {saved_steps}")
        target = _on_one_device(manager.item_metadata(step)[STATE].tree)
        saved = manager.restore(step, args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(target)}))[STATE]
    model = build_model(config).clone(bn_axis_name=None)
    if saved.get("ema") is not None and not raw:
        return model, dict(saved["ema"])
    return model, {"params": saved["params"], "batch_stats": saved["batch_stats"]}


def saved_steps(run_dir: str | Path) -> list[int]:
    """The steps of a run's checkpoints, oldest first ([] if it has none)."""
    directory = Path(run_dir).absolute() / workdir.CHECKPOINT_DIR
    if not directory.is_dir():
        return []
    with ocp.CheckpointManager(directory, item_handlers=_item_handlers()) as manager:
        return sorted(manager.all_steps())


def saved_data_description(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's dataset.json, or the copy its latest checkpoint keeps of it; None if neither
    is there."""
    return (workdir.read_data_description(Path(run_dir))
            or latest_json_item(run_dir, DATA))


def latest_json_item(run_dir: str | Path, item: str) -> dict[str, Any] | None:
    """The JSON ``item`` (PIPELINE or DATA) of a run's latest checkpoint, None if it has no
    checkpoint or that one holds no such item."""
    directory = Path(run_dir).absolute() / workdir.CHECKPOINT_DIR
    if not directory.is_dir():
        return None
    with ocp.CheckpointManager(directory, item_handlers=_item_handlers()) as manager:
        step = manager.latest_step()
        if step is None or not (Path(manager.directory) / str(step) / item).is_dir():
            return None
        return manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.JsonRestore()}))[item]


def _on_one_device(saved: Any) -> Any:
    """Abstract arrays of the saved shapes on this process's first device, whatever the
    devices the run was trained on."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                        saved, is_leaf=lambda leaf: hasattr(leaf, "shape"))


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... if a checkpoint was set aside there before."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
