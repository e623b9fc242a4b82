"""Image-classification datasets read whole into host memory (the in-memory pipeline's
and the PyTorch twin's data): uint8 NHWC images, int32 labels, and the per-channel
statistics that normalise them, from any ``config.dataset`` (see :mod:`resnet_jax.data`).
Images are decoded as streaming decodes them (:func:`images.open_rgb`); TensorFlow is
imported for the TFDS source alone.
"""

from __future__ import annotations

import dataclasses
import pickle
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_collections
import numpy as np
from tqdm import tqdm

from resnet_jax import hints
from resnet_jax.data import (
    CIFAR10_CLASSES,
    CIFAR10_STATS,
    CIFAR100_STATS,
    TFDS_STATS,
    import_tfds,
    tfds_builder,
)
from resnet_jax.data.folders import folder_splits, image_files
from resnet_jax.data.pipelines.images import open_rgb
from resnet_jax.errors import DataError, UnreadableImage


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in host memory: uint8 images (N, H, W, C) and int32 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Both splits, the class count, and the per-channel mean and standard deviation (0..1
    scale) that normalise these images: published ones for CIFAR, else the training split's."""

    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


def make_dataset(train: Split, test: Split, num_classes: int,
                 stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                 class_names: list[str] | tuple[str, ...] | None = None) -> Dataset:
    """A Dataset with ``stats`` (mean, std), measured on ``train`` if not given, and
    ``class_names`` ('0', '1', ... if not given)."""
    mean, std = stats or channel_stats(train.images)
    names = tuple(class_names or (str(i) for i in range(num_classes)))
    return Dataset(train, test, num_classes, tuple(mean), tuple(std), names)


def channel_stats(images: np.ndarray, rows: int = 1 << 22) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and standard deviation of uint8 NHWC images on the 0..1 scale,
    summed in slices (no float copy of the whole set)."""
    pixels = images.reshape(-1, images.shape[-1])
    total = np.zeros(pixels.shape[1], np.float64)
    squares = np.zeros(pixels.shape[1], np.float64)
    for start in range(0, len(pixels), rows):
        part = pixels[start:start + rows].astype(np.float64)
        total += part.sum(0)
        squares += np.square(part).sum(0)
    mean = total / len(pixels)
    std = np.sqrt(np.maximum(squares / len(pixels) - mean**2, 0.0))
    std = np.maximum(std, 1.0)  # a constant channel: no division by zero
    return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in std / 255.0)


HOW_TO_PROVIDE = (
    "provide the data one of three ways: prepare it with TFDS on a machine with network "
    "access and pass its --config.data_dir; or set --config.dataset=folder:PATH "
    "(PATH/train/<class>/*.jpg and PATH/test/<class>/*.jpg); or "
    "--config.dataset=cifar:PATH (a cifar-10-batches-py or cifar-100-python directory)")


Stats = tuple[tuple[float, ...], tuple[float, ...]]


@dataclasses.dataclass(frozen=True)
class LoadedSplit:
    """One split in host memory, with what the dataset says of itself: its class names
    and its published (mean, std), None where they are measured on the training split."""

    split: Split
    class_names: list[str]
    stats: Stats | None


def load_split(config: ml_collections.ConfigDict, split: str) -> LoadedSplit:
    """One split (``"train"`` or ``"test"``) of the dataset ``config.dataset`` names, read
    whole into host memory; nothing of the other split is decoded."""
    name = config.dataset
    if name == "synthetic":
        dataset = synthetic_dataset(*config.synthetic_examples, config.num_classes,
                                    config.image_size)
        return LoadedSplit(getattr(dataset, split), list(dataset.class_names), None)
    for prefix, load in PATH_SOURCES.items():
        if name.startswith(prefix):
            return load(Path(name.removeprefix(prefix)).expanduser(), split)
    return load_tfds(name, config.data_dir or None, split)


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
    """Load the whole dataset named by ``config.dataset`` into host memory."""
    train = load_split(config, "train")
    test = load_split(config, "test")
    return make_dataset(train.split, test.split, len(train.class_names), train.stats,
                        train.class_names)


def synthetic_dataset(train_examples: int, test_examples: int, num_classes: int,
                      image_size: int = 32, seed: int = 0) -> Dataset:
    """Noisy images whose mean colour and brightness pattern depend on the label."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(40, 215, size=(num_classes, 1, 1, 3))

    def split(n: int) -> Split:
        labels = rng.integers(0, num_classes, n).astype(np.int32)
        noise = rng.normal(0, 30, size=(n, image_size, image_size, 3))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        return Split(images, labels)

    return make_dataset(split(train_examples), split(test_examples), num_classes)


def decode(path: Path) -> np.ndarray | str:
    """The image as RGB uint8 (streaming's decoder), or why it cannot be read."""
    try:
        return np.asarray(open_rgb(path.read_bytes()))
    except OSError as error:
        return f"{path} ({error.strerror or type(error).__name__})"
    except UnreadableImage as error:
        return f"{path} ({error})"


def _read_folder_split(split_dir: Path, classes: list[str]) -> Split:
    files, labels = image_files(split_dir, classes)
    images = decode_all(files, f"decoding {split_dir}")
    bad = [image for image in images if isinstance(image, str)]
    if bad:
        raise DataError(f"{len(bad)} file(s) under {split_dir} cannot be read as images: "
                        f"{'; '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}; "
                        "remove or replace them")
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        stream = (f", or stream them ({hints.setting('pipeline', 'streaming')} crops and "
                  "resizes each)" if hints.current() == hints.CONFIG else "")
        raise DataError(f"images under {split_dir} differ in size ({sorted(shapes)[:3]}...); "
                        f"resize them to one size first{stream}")
    return Split(np.stack(images), np.asarray(labels, np.int32))


def decode_all(files: list[Path], what: str) -> list[np.ndarray | str]:
    """Decode ``files`` on every core, showing ``what`` with a progress bar; a stop request
    cancels what has not started."""
    pool = ThreadPoolExecutor()
    try:
        images, decoded = [], pool.map(decode, files)  # submitted before the clock starts
        with progress_bar(len(files), what) as bar:
            for image in decoded:
                images.append(image)
                bar.update()
        return images
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def progress_bar(images: int | None, what: str) -> tqdm:
    """A progress bar (images done of ``images``, rate, ETA) on process 0's standard error,
    shown once loading has taken a second."""
    import jax

    return tqdm(total=images, desc=what, unit="img", mininterval=1.0, delay=1.0,
                dynamic_ncols=True, disable=jax.process_index() != 0)


def load_image_folder(root: Path, split: str) -> LoadedSplit:
    """One split of a class-per-folder tree: ``root/train/<class>/*``, or for ``"test"``
    ``root/test/<class>/*`` (or ``root/val/...``); classes sorted by name."""
    train_dir, eval_dir, classes = folder_splits(root)
    return LoadedSplit(_read_folder_split(train_dir if split == "train" else eval_dir, classes),
                       classes, None)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise DataError(f"{path} is not a CIFAR python batch ({type(error).__name__}); "
                        "download the dataset again") from None


def _cifar_split(batches: list[dict], label_key: bytes) -> Split:
    data = np.concatenate([b[b"data"] for b in batches])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.concatenate([b[label_key] for b in batches]).astype(np.int32)
    return Split(np.ascontiguousarray(images, dtype=np.uint8), labels)


@dataclasses.dataclass(frozen=True)
class CifarLayout:
    """The files of each split of a CIFAR python directory, the key of their labels, the
    class names and the published statistics."""

    files: dict[str, list[Path]]
    label_key: bytes
    class_names: list[str]
    stats: Stats


def cifar_layout(root: Path) -> CifarLayout:
    """What a ``cifar:`` directory holds (CIFAR-10's or CIFAR-100's python batches, as
    torchvision downloads them), read without its images; DataError saying what it holds
    instead."""
    cifar10 = {"train": [root / f"data_batch_{i}" for i in range(1, 6)],
               "test": [root / "test_batch"]}
    cifar100 = {"train": [root / "train"], "test": [root / "test"]}
    if all(p.is_file() for paths in cifar10.values() for p in paths):
        return CifarLayout(cifar10, b"labels", list(CIFAR10_CLASSES), CIFAR10_STATS)
    if all(p.is_file() for paths in cifar100.values() for p in paths):
        meta = root / "meta"
        names = ([n.decode() for n in _unpickle(meta)[b"fine_label_names"]]
                 if meta.is_file() else [str(i) for i in range(100)])
        return CifarLayout(cifar100, b"fine_labels", names, CIFAR100_STATS)
    raise DataError(f"cifar: path {root} is not a cifar-10-batches-py directory (data_batch_1..5, "
                    f"test_batch) nor a cifar-100-python one (train, test files); found "
                    f"{_listing(root)}{_folder_hint(root)}")


def load_cifar_python(root: Path, split: str) -> LoadedSplit:
    """One split of the pickled "python version" of CIFAR-10 or CIFAR-100, as torchvision
    downloads it."""
    layout = cifar_layout(root)
    return LoadedSplit(_cifar_split([_unpickle(p) for p in layout.files[split]],
                                    layout.label_key), layout.class_names, layout.stats)


def _listing(root: Path) -> str:
    if not root.is_dir():
        return "no directory there" if not root.exists() else "a file"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return (", ".join(names[:6]) + (", ..." if len(names) > 6 else "")) if names else "nothing"


def _folder_hint(root: Path) -> str:
    if (root / "train").is_dir() and (root / "test").is_dir():
        folder = hints.setting("dataset", f"folder:{root}")
        return f"; a class-per-folder tree is read with {folder}"
    return ""


PATH_SOURCES = {"folder:": load_image_folder, "cifar:": load_cifar_python}


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urllib.parse.urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_tfds(name: str, data_dir: str | None, split: str) -> LoadedSplit:
    """One split of a TFDS image-classification dataset ('train' or 'test'), read into
    memory; downloaded and prepared first where there is network."""
    import_tfds()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only reads files here
    builder, prepared = tfds_builder(name, data_dir)
    if not prepared:
        if not _reachable(builder.info.homepage or ""):
            raise DataError(f"TFDS dataset {name} is not prepared in {builder.data_dir} and "
                            f"cannot be downloaded from here (no network); {HOW_TO_PROVIDE}")
        builder.download_and_prepare()
    return LoadedSplit(_read_tfds_split(builder, split),
                       list(builder.info.features["label"].names),
                       TFDS_STATS.get(name.split(":")[0].split("/")[0]))


def _read_tfds_split(builder, split: str) -> Split:
    import tensorflow_datasets as tfds

    images, labels = [], []
    # Whole-split batch_size=-1 aborts under tfds.testing.mock_data with TF 2.21: iterate.
    splits = builder.info.splits
    total = splits[split].num_examples if split in splits else None
    with progress_bar(total, f"reading {builder.name} {split}") as bar:
        for batch in tfds.as_numpy(builder.as_dataset(split=split).batch(1_000)):
            images.append(batch["image"])
            labels.append(batch["label"])
            bar.update(len(batch["label"]))
    return Split(np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32))
