"""Input pipelines behind one interface (:class:`Pipeline`); :func:`build_pipeline` picks
and checks the one a config asks for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections
import numpy as np

from resnet_jax import data
from resnet_jax.data import folders
from resnet_jax.data.pipelines import datasets
from resnet_jax.data.pipelines.base import Pipeline, normalize, step_key
from resnet_jax.data.pipelines.in_memory import InMemory
from resnet_jax.models import create_model

__all__ = ["Pipeline", "build_pipeline", "check_dataset", "describe_source",
           "evaluation_pipeline", "normalize", "step_key"]


def _in_memory(config: ml_collections.ConfigDict) -> Pipeline:
    dataset = datasets.load_dataset(config)
    check_dataset(dataset, config)
    return InMemory(dataset, batch_size=config.batch_size, seed=config.seed,
                    augment=config.augment, dtype=config.dtype, repeats=config.ra_reps)


def _streaming(config: ml_collections.ConfigDict) -> Pipeline:
    from resnet_jax.data.pipelines import sources, streaming  # grain, only when streaming

    found = sources.open_sources(config.dataset, config.data_dir or None)
    labels = getattr(found.train, "labels", np.zeros(1, np.int32))
    _check_fit(len(found.class_names), labels, len(found.train), config)
    transform = streaming.Transform(
        config.image_size, config.eval_resize, config.seed, config.augment,
        eval_image_size=config.eval_image_size, repeats=config.ra_reps,
        min_image_size=config.min_image_size, ramp_steps=tuple(config.ramp_steps),
        auto_augment=config.auto_augment, ra_magnitude=config.ra_magnitude)
    return streaming.Streaming(found, batch_size=config.batch_size, transform=transform,
                               workers=config.data_workers, dtype=config.dtype)


# A pipeline's name (config.pipeline) -> how a config builds it (its data opened and checked).
PIPELINES = {"in_memory": _in_memory, "streaming": _streaming}


def build_pipeline(config: ml_collections.ConfigDict) -> Pipeline:
    """The pipeline ``config.pipeline`` over the data of ``config``, checked against the
    config (classes, labels, batch size, image size): DataError names what does not fit."""
    return PIPELINES[config.pipeline](config)


def evaluation_pipeline(config: ml_collections.ConfigDict, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> Pipeline:
    """The pipeline of a run's ``config`` for its evaluation alone, normalising with the
    statistics the run trained with; in memory, only the test split is read."""
    if config.pipeline != "in_memory":
        return build_pipeline(config)
    test = datasets.load_split(config, "test")
    height, width = test.split.images.shape[1:3]
    if (height, width) != (config.image_size, config.image_size):
        raise data.DataError(f"the evaluation images are {height}x{width}, but the run trained "
                             f"at image_size={config.image_size}: the data has changed since; "
                             "restore it")
    nothing = datasets.Split(test.split.images[:0], test.split.labels[:0])
    dataset = datasets.Dataset(nothing, test.split, len(test.class_names), tuple(mean), tuple(std),
                           tuple(test.class_names))
    return InMemory(dataset, batch_size=config.batch_size, seed=config.seed, augment=False,
                    dtype=config.dtype)


@dataclasses.dataclass(frozen=True)
class SourceFacts:
    """What a ``folder:`` or ``cifar:`` dataset holds, read without decoding it: its class
    names, its training images and the size (height, width) of the first."""

    class_names: list[str]
    train_examples: int
    image_size: tuple[int, int]


def describe_source(dataset: str) -> SourceFacts:
    """The facts of a ``folder:`` or ``cifar:`` dataset, through the checks its loaders
    make of the layout (every file listed, every class folder holding images, the first
    image readable): for commands that check the data long before they train on it (the
    evidence command's --data). DataError for what the loaders would refuse."""
    root = Path(dataset.partition(":")[2]).expanduser()
    if dataset.startswith("cifar:"):
        layout = datasets.cifar_layout(root)
        datasets.load_cifar_python(root, "test")  # the smaller split: the batches read
        return SourceFacts(layout.class_names, 50_000, (32, 32))  # the format's own
    if not dataset.startswith("folder:"):
        raise data.DataError(f"dataset={dataset}: only folder:PATH and cifar:PATH are described "
                             "ahead")
    train_dir, eval_dir, classes = folders.folder_splits(root)
    files, _ = folders.image_files(train_dir, classes)
    folders.image_files(eval_dir, classes)
    first = datasets.decode(files[0])
    if isinstance(first, str):
        raise data.DataError(f"{first}: the first training image cannot be read")
    return SourceFacts(classes, len(files), first.shape[:2])


def check_dataset(dataset: datasets.Dataset, config: ml_collections.ConfigDict) -> None:
    """Refuse in-memory data that does not fit the config, naming the setting that fixes it."""
    labels = np.concatenate([dataset.train.labels, dataset.test.labels])
    _check_fit(dataset.num_classes, labels, len(dataset.train), config)
    _check_image_size(*dataset.train.images.shape[1:3], config)


def _check_image_size(height: int, width: int, config: ml_collections.ConfigDict) -> None:
    """In memory, the model trains at the images' own size."""
    stride = create_model(config.model).total_stride
    if min(height, width) < stride:
        raise data.DataError(f"the images are {height}x{width}, smaller than {config.model}'s "
                             f"total stride of {stride}: stream them resized "
                             f"(--config.pipeline=streaming --config.image_size={stride} or "
                             "more), or use larger images")
    if (height, width) != (config.image_size, config.image_size):
        raise data.DataError(f"the images are {height}x{width} but image_size="
                             f"{config.image_size}; the in_memory pipeline trains at the data's "
                             f"size: set --config.image_size={height}" + (
                                 "" if height != width else
                                 ", or --config.pipeline=streaming to crop and resize"))


def _check_fit(num_classes: int, labels: np.ndarray, train_examples: int,
               config: ml_collections.ConfigDict) -> None:
    if num_classes < 2:
        raise data.DataError(f"the dataset has {num_classes} class; a classifier needs "
                             "at least 2: add class folders")
    if num_classes != config.num_classes:
        raise data.DataError(f"the dataset has {num_classes} classes but num_classes="
                             f"{config.num_classes}; set --config.num_classes={num_classes}")
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise data.DataError(f"labels run from {labels.min()} to {labels.max()} but num_classes="
                             f"{config.num_classes}; set --config.num_classes={labels.max() + 1}")
    if config.batch_size > train_examples:
        raise data.DataError(f"batch_size={config.batch_size} exceeds the {train_examples} "
                             "training examples; use a smaller --config.batch_size")
