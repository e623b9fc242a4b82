"""Orbax checkpoints of the train state under ``WORKDIR/checkpoints``, and restore for inference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from resnet_jax.models import ResNet
from resnet_jax.training import build_model

CONFIG_FILE = "config.json"


def checkpoint_manager(workdir: str | Path, keep: int) -> ocp.CheckpointManager:
    """Keeps the latest ``keep`` checkpoints plus the best one by test accuracy."""
    preservation = policies.AnyPreservationPolicy([
        policies.LatestN(n=keep),
        policies.BestN(get_metric_fn=lambda metrics: metrics["test_accuracy"], n=1,
                       keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=preservation, create=True)
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(manager: ocp.CheckpointManager, state: Any,
         metrics: dict[str, float] | None = None) -> None:
    step = int(state.step)
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> Any:
    """The latest saved state shaped and placed like ``state``, or ``state`` if none exists."""
    step = manager.latest_step()
    if step is None:
        return state
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(step, args=ocp.args.StandardRestore(target))


def has_checkpoints(workdir: str | Path) -> bool:
    directory = Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def save_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))


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
