"""Random-access sources of encoded images for the streaming pipeline: a split of a
class-per-folder tree, or of a TFDS dataset in array_record format (read through
``tfds.data_source``, without TensorFlow). ``read(i)`` gives (bytes, label, name)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from resnet_jax import data
from resnet_jax.data import DataError, folders

Record = tuple[bytes, int, str]  # encoded image, label, a name to report it by


@dataclasses.dataclass(frozen=True)
class Sources:
    """Both splits of a dataset, its class names and normalisation statistics."""

    train: Any
    eval: Any
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class FolderSplit:
    """The image files of ``split_dir/<class>/``, listed once, read on demand."""

    def __init__(self, split_dir: Path, classes: list[str]):
        files, labels = folders.image_files(split_dir, classes)
        self.root = split_dir
        # Paths relative to the split, in one array: cheap to send to worker processes.
        self.names = np.array([str(f.relative_to(split_dir)) for f in files])
        self.labels = np.asarray(labels, np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> Record:
        path = self.root / str(self.names[index])
        try:
            return path.read_bytes(), int(self.labels[index]), str(path)
        except OSError:  # a file gone since the listing reads as an unreadable image
            return b"", int(self.labels[index]), str(path)


class TfdsSplit:
    """One split of a prepared TFDS dataset in array_record format, opened lazily in each
    process that reads it."""

    def __init__(self, name: str, split: str, data_dir: str | None, length: int):
        self.name, self.split, self.data_dir, self.length = name, split, data_dir, length
        self._source = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None}

    def __len__(self) -> int:
        return self.length

    def read(self, index: int) -> Record:
        if self._source is None:
            tfds = data.import_tfds()
            self._source = tfds.data_source(
                self.name, split=self.split, data_dir=self.data_dir, download=False,
                decoders={"image": tfds.decode.SkipDecoding()})
        record = self._source[index]
        return record["image"], int(record["label"]), f"{self.name} {self.split}[{index}]"


def open_folder(root: Path) -> Sources:
    """``root/train/<class>/`` and ``root/val/<class>/`` (or ``test/``), images of any size;
    normalised with ImageNet's statistics."""
    train_dir, eval_dir, classes = folders.folder_splits(root)
    return Sources(FolderSplit(train_dir, classes), FolderSplit(eval_dir, classes), classes,
                   *data.IMAGENET_STATS)


def open_tfds(name: str, data_dir: str | None) -> Sources:
    """A prepared TFDS image-classification dataset in array_record format; its
    'validation' split (else 'test') evaluates."""
    builder, prepared = data.tfds_builder(name, data_dir)
    build = f"tfds build {name} --file_format=array_record"
    if not prepared:
        raise DataError(f"TFDS dataset {name} is not prepared in {builder.data_dir}; prepare "
                        f"it with `{build}` (--data_dir to choose where), then pass that "
                        "--config.data_dir, or use --config.dataset=folder:PATH")
    file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
    if file_format != "array_record":
        raise DataError(f"TFDS dataset {name} in {builder.data_dir} is stored as {file_format}, "
                        f"which cannot be read at random; prepare it again with `{build}`")
    splits = builder.info.splits
    eval_split = next((s for s in ("validation", "test") if s in splits), None)
    if "train" not in splits or eval_split is None:
        raise DataError(f"TFDS dataset {name} has splits {sorted(splits)}; streaming needs "
                        "'train' and 'validation' (or 'test')")
    label = builder.info.features["label"]
    stats = data.TFDS_STATS.get(name.split(":")[0].split("/")[0], data.IMAGENET_STATS)
    data_dir = str(data_dir) if data_dir else None
    return Sources(TfdsSplit(name, "train", data_dir, splits["train"].num_examples),
                   TfdsSplit(name, eval_split, data_dir, splits[eval_split].num_examples),
                   list(label.names), *stats)


def open_sources(dataset: str, data_dir: str | None) -> Sources:
    """The sources ``config.dataset`` names: ``folder:PATH`` or a TFDS name."""
    if dataset.startswith("folder:"):
        return open_folder(Path(dataset.removeprefix("folder:")).expanduser())
    if dataset == "synthetic" or dataset.startswith("cifar:"):
        raise DataError(f"dataset={dataset} is held in memory, not streamed; set "
                        "--config.pipeline=in_memory, or stream folder:PATH or a TFDS name")
    return open_tfds(dataset, data_dir)
