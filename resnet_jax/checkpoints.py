"""Orbax checkpoints of the train state under ``WORKDIR/checkpoints``, and restore for inference."""

from __future__ import annotations

import json
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

from resnet_jax.metrics import write_atomically
from resnet_jax.models import ResNet
from resnet_jax.training import build_model, replicated

CONFIG_FILE = "config.json"
SET_ASIDE_DIR = "unreadable_checkpoints"


class CheckpointError(RuntimeError):
    """No checkpoint of a run could be read; the message names each one and its error."""


def checkpoint_manager(workdir: str | Path, keep: int) -> ocp.CheckpointManager:
    """Keeps the latest ``keep`` checkpoints plus the best one by test accuracy."""
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=lambda metrics: metrics["test_accuracy"], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=preservation, create=True)
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


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


def save(manager: ocp.CheckpointManager, state: Any,
         metrics: dict[str, float] | None = None) -> None:
    """Save ``state`` (replicated) at its step; every process calls this together."""
    step = int(state.step)
    if step in manager.all_steps():
        return
    everywhere = _resharded(state, replicated(jax.devices()))
    manager.save(step, args=ocp.args.StandardSave(everywhere), metrics=metrics)


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> Any:
    """The latest readable saved state, placed like ``state``; ``state`` if none was saved.

    Checkpoints that cannot be read (truncated, damaged, unreadable files) are
    moved to ``WORKDIR/unreadable_checkpoints/STEP``, never deleted, with a
    warning, and the one before is restored. If none can be read, CheckpointError.
    """
    everywhere = replicated(jax.devices())
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=everywhere), state)
    failures = {}
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            saved = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as error:  # Orbax and TensorStore raise many kinds for damaged files
            failures[step] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            continue
        if failures:
            _set_aside(manager, failures, step)
        return _resharded(saved, state.step.sharding)
    if failures:
        listing = "; ".join(f"step {s}: {e}" for s, e in failures.items())
        raise CheckpointError(f"no checkpoint under {manager.directory} can be read ({listing}); "
                              "move them away (nothing was changed) to start afresh there, "
                              "or pass another --workdir")
    return state


def _set_aside(manager: ocp.CheckpointManager, failures: dict[int, str], restored: int) -> None:
    aside = Path(manager.directory).parent / SET_ASIDE_DIR
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


def has_checkpoints(workdir: str | Path) -> bool:
    directory = Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def save_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    write_atomically(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))


def load_config(workdir: str | Path) -> ml_collections.ConfigDict | None:
    path = Path(workdir) / CONFIG_FILE
    return ml_collections.ConfigDict(json.loads(path.read_text())) if path.exists() else None


def restore(workdir: str | Path, step: int | None = None) -> tuple[ResNet, dict[str, Any]]:
    """The model and its ``{'params', 'batch_stats'}`` from a training run, for inference.

    ``step`` defaults to the latest checkpoint.
    """
    config = load_config(workdir)
    if config is None:
        raise FileNotFoundError(f"{Path(workdir) / CONFIG_FILE} not found; is {workdir} the "
                                "--workdir of a training run?")
    with ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints") as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints")
        saved = manager.restore(step, args=ocp.args.StandardRestore())
    model = build_model(config).clone(bn_axis_name=None)
    return model, {"params": saved["params"], "batch_stats": saved["batch_stats"]}


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... if a checkpoint was set aside there before."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
