"""A run's trained weights for inference: :func:`restore` (``resnet_jax.restore``), the
moving average where the run keeps one, with the model its config.json names."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import ml_collections

from resnet_jax import arguments, hints
from resnet_jax.errors import (
    CheckpointError,
    ResNetError,
    ResNetWarning,
)
from resnet_jax.models import ResNet, build_model, variables_problem
from resnet_jax.runs import workdir
from resnet_jax.runs.checkpoints import read_checkpoint, run_directory


def restore(run_dir: str | Path, step: int | None = None,
            raw: bool = False) -> tuple[ResNet, dict[str, Any]]:
    """The model and its ``{'params', 'batch_stats'}`` from a training run, for inference,
    on this process's first device (any device count may have trained it): the moving
    average of the weights where the run keeps one (``ema_decay``), the trained weights
    themselves where it does not or with ``raw``.

    ``step`` defaults to the newest readable checkpoint (a newer unreadable one is passed
    over with a ResNetWarning; nothing is moved). Errors are ResNetErrors: a
    ``run_dir`` that is no run, a ``step`` that is missing or unreadable (the message lists
    the readable ones), ``raw`` for a run that keeps no average.
    """
    model, variables, _ = read_weights(run_dir, step, raw)
    _say_averaged(run_dir, raw)
    return model, variables


def _say_averaged(run_dir: str | Path, raw: bool) -> None:
    """A ResNetWarning where the weights handed out are a run's moving average."""
    if not raw and (workdir.read_config(Path(run_dir)) or {}).get("ema_decay"):
        warnings.warn(ResNetWarning(f"{run_dir} keeps a moving average of its weights: these "
                                    "are the average (raw=True: the trained weights)"),
                      stacklevel=3)


def read_weights(run_dir: str | Path, step: int | None = None,
                 raw: bool = False) -> tuple[ResNet, dict[str, Any], int]:
    """:func:`restore`, with the step of the checkpoint read."""
    step, raw = arguments.step(step), arguments.switch("raw", raw)
    path = run_directory(run_dir)
    config = ml_collections.ConfigDict(workdir.read_config(path))
    edited = f"{path / workdir.CONFIG_FILE} was edited or replaced; put back the run's own"
    try:
        model = build_model(config).clone(bn_axis_name=None)
    except (ResNetError, AttributeError, KeyError, TypeError) as error:
        raise CheckpointError(f"the model of {path / workdir.CONFIG_FILE} cannot be made "
                              f"({error}): {edited}") from None
    step, saved = read_checkpoint(run_dir, step)
    averaged = saved.get("ema") is not None
    if averaged != bool(config.get("ema_decay")):
        raise CheckpointError(f"config.json names ema_decay={config.get('ema_decay')}, but the "
                              f"checkpoint of step {step} keeps {'a' if averaged else 'no'} "
                              f"moving average of the weights: {edited}")
    if raw and not averaged:
        raise CheckpointError(f"{hints.setting('raw', True)} picks a run's trained weights over "
                              f"the moving average it keeps; {run_dir} keeps none (ema_decay=0): "
                              f"leave out {hints.name('raw')}")
    variables = (dict(saved["ema"]) if averaged and not raw
                 else {"params": saved["params"], "batch_stats": saved["batch_stats"]})
    problem = variables_problem(model, variables)
    if problem:
        raise CheckpointError(f"the checkpoint of step {step} under {run_dir} does not fit the "
                              f"{config.model} its config.json names ({problem}): config.json "
                              "was edited or replaced; put back the run's own")
    return model, variables, step
