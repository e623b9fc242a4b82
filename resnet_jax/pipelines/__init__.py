"""Input pipelines behind one interface (:class:`Pipeline`); :func:`build_pipeline` picks
and checks the one a config asks for."""

from __future__ import annotations

import ml_collections
import numpy as np

from resnet_jax import data
from resnet_jax.pipelines.base import Pipeline, normalize, step_key
from resnet_jax.pipelines.in_memory import InMemory

__all__ = ["Pipeline", "build_pipeline", "check_dataset", "normalize", "step_key"]


def _in_memory(config: ml_collections.ConfigDict) -> Pipeline:
    dataset = data.load_dataset(config)
    check_dataset(dataset, config)
    return InMemory(dataset, batch_size=config.batch_size, seed=config.seed,
                    augment=config.augment, dtype=config.dtype)


# A pipeline's name -> how a config builds it (its data loaded and checked).
PIPELINES = {"in_memory": _in_memory}


def build_pipeline(config: ml_collections.ConfigDict, name: str = "in_memory") -> Pipeline:
    """The pipeline ``name`` over the data of ``config``, checked against the config
    (classes, labels, batch size): DataError names what does not fit."""
    return PIPELINES[name](config)


def check_dataset(dataset: data.Dataset, config: ml_collections.ConfigDict) -> None:
    """Refuse data that does not fit the config, naming the setting that would fix it."""
    if dataset.num_classes < 2:
        raise data.DataError(f"the dataset has {dataset.num_classes} class; a classifier needs "
                             "at least 2: add class folders")
    if dataset.num_classes != config.num_classes:
        raise data.DataError(f"the dataset has {dataset.num_classes} classes but num_classes="
                             f"{config.num_classes}; set --config.num_classes="
                             f"{dataset.num_classes}")
    labels = np.concatenate([dataset.train.labels, dataset.test.labels])
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise data.DataError(f"labels run from {labels.min()} to {labels.max()} but num_classes="
                             f"{config.num_classes}; set --config.num_classes={labels.max() + 1}")
    if config.batch_size > len(dataset.train):
        raise data.DataError(f"batch_size={config.batch_size} exceeds the {len(dataset.train)} "
                             "training examples; use a smaller --config.batch_size")
