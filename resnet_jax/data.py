"""Image-classification datasets read whole into host memory: uint8 NHWC images, int32
labels, and the per-channel statistics that normalise them.

Sources (``config.dataset``):
  - a TFDS name (``cifar10``, ``cifar100``, ...), read from ``config.data_dir``
  - ``folder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``val/``) images
  - ``cifar:PATH``: a ``cifar-10-batches-py`` or ``cifar-100-python`` directory
  - ``synthetic``: learnable random images, for smoke tests
TensorFlow is imported for the TFDS source alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pickle
import socket
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from resnet_jax.errors import DataError
from resnet_jax.quiet import absl_logs_quiet

# Per-channel (mean, std) of the training sets, on the 0..1 scale, as commonly published.
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TFDS_STATS = {"cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}



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


def resolved_dataset(name: str) -> str:
    """``config.dataset`` with the path of ``folder:`` or ``cifar:`` made absolute and
    resolved (a relative one is the current directory's, links followed): the same data
    wherever a run is resumed or evaluated from, however the path was written."""
    prefix = next((p for p in PATH_SOURCES if name.startswith(p)), "")
    path = name.removeprefix(prefix).strip()
    if not prefix or not path:
        return name
    return prefix + str(Path(path).expanduser().resolve())


def description_change(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How the data described by ``now`` differs from the description a run saved (see
    dataset.json; the keys both hold are compared), or None if it does not."""
    def both(key: str) -> bool:
        return key in saved and key in now

    change = both("class_names") and class_change(saved["class_names"], now["class_names"])
    if change:
        return change
    for key, what in (("train_examples", "training images"), ("eval_examples",
                                                              "evaluation images")):
        if both(key) and saved[key] != now[key]:
            return f"{saved[key]} {what} then, {now[key]} now"
    for key in ("mean", "std"):
        if both(key) and not np.allclose(saved[key], now[key], rtol=1e-6):
            return (f"the training images' per-channel {key} was {_rounded(saved[key])}, now "
                    f"{_rounded(now[key])}")
    return None


def _rounded(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def class_change(trained: list[str], found: list[str]) -> str | None:
    """How the classes ``found`` in the data now differ from those a run ``trained`` on
    (in order), or None if they are the same."""
    if list(found) == list(trained):
        return None
    gone = [name for name in trained if name not in found]
    new = [name for name in found if name not in trained]
    if not gone and not new:
        return "the same classes in another order"
    return f"classes only in the run: {listed(gone)}; only in the data now: {listed(new)}"


def listed(names: list[str]) -> str:
    """Up to ten names, and how many more."""
    return (", ".join(names[:10]) + (f" (and {len(names) - 10} more)" if len(names) > 10 else "")
            if names else "none")


def imagenet_synsets() -> list[str]:
    """ImageNet-1k's 1,000 WordNet synsets (n01440764 ...) in the order of its class indices,
    from the label file tensorflow-datasets ships (read without importing it); [] if absent."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "imagenet2012" / "labels.txt"
    return path.read_text().split() if path.is_file() else []


def is_tfds_name(name: str) -> bool:
    """Whether ``config.dataset`` names a TFDS dataset (not a path source, not synthetic)."""
    return name != "synthetic" and not name.startswith(tuple(PATH_SOURCES))


def dataset_name_problem(name: str) -> str | None:
    """What is wrong with a ``config.dataset`` value before anything is read, or None."""
    if not name.strip():
        return ("is empty; set --config.dataset to a TFDS name such as cifar10, folder:PATH, "
                "cifar:PATH or synthetic")
    prefix = next((p for p in PATH_SOURCES if name.startswith(p)), None)
    if prefix and not name.removeprefix(prefix).strip():
        return f"names no path; write --config.dataset={prefix}PATH"
    looks_like_path = name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()
    if prefix is None and name != "synthetic" and looks_like_path:
        guess = "cifar" if (Path(name).expanduser() / "data_batch_1").exists() else "folder"
        return f"looks like a path, not a TFDS name; write --config.dataset={guess}:{name}"
    return None


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


def class_folders(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted by name: its subfolders but hidden ones (a name
    starting with '.', such as .ipynb_checkpoints); [] if ``split_dir`` is not a directory."""
    if not split_dir.is_dir():
        return []
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not _hidden(p.name))


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return not _hidden(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES


def images_under(directory: Path) -> list[Path]:
    """The image files under ``directory`` at any depth, as torchvision's ImageFolder walks a
    class folder (links followed, sorted by folder then name), hidden ones left out. A
    broken link is listed too: reading it fails, and says so."""
    walked = []
    for root, folders, names in os.walk(directory, followlinks=True):
        folders[:] = [name for name in folders if not _hidden(name)]
        walked.append((root, sorted(name for name in names if _is_image_name(name))))
    return [Path(root) / name for root, names in sorted(walked) for name in names]


def _decode(path: Path) -> np.ndarray | str:
    """The image as RGB uint8, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of saying "not an image"
        return f"{path} ({type(error).__name__})"


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
        raise DataError(f"images under {split_dir} differ in size ({sorted(shapes)[:3]}...); "
                        "resize them to one size first, or stream them "
                        "(--config.pipeline=streaming crops and resizes each)")
    return Split(np.stack(images), np.asarray(labels, np.int32))


def decode_all(files: list[Path], what: str) -> list[np.ndarray | str]:
    """Decode ``files`` on every core, showing ``what`` with a progress bar; a stop request
    cancels what has not started."""
    pool = ThreadPoolExecutor()
    try:
        images, decoded = [], pool.map(_decode, files)  # submitted before the clock starts
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


EVAL_SPLITS = ("test", "val")  # the evaluation split of a class-per-folder tree


def image_files(split_dir: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The image files under ``split_dir/<class>/`` for each of ``classes``, with labels;
    DataError naming the class folders that hold no image. Images directly in
    ``split_dir``, in no class folder, are named in a warning and left out."""
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        found = images_under(split_dir / name)
        if not found:
            empty.append(name)
        files += found
        labels += [label] * len(found)
    if empty:
        shown = f"{empty[:10]}{' ...' if len(empty) > 10 else ''}"
        raise DataError(f"class folder(s) {shown} under {split_dir} hold no images "
                        f"({len(empty)} of {len(classes)}; images are "
                        f"{'/'.join(sorted(IMAGE_SUFFIXES))} files); every class needs images "
                        "in every split: add some, or remove the folder from every split")
    loose = sorted(p.name for p in split_dir.iterdir() if p.is_file() and _is_image_name(p.name))
    if loose:
        print(f"warning: {len(loose)} image(s) directly under {split_dir} are in no class folder "
              f"and are left out: {listed(loose)}", file=sys.stderr)
    return files, labels


def folder_splits(root: Path) -> tuple[Path, Path, list[str]]:
    """(train dir, evaluation dir, class names) of a class-per-folder tree:
    ``root/train/<class>/`` and ``root/test/<class>/`` (or ``root/val/<class>/``)."""
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise DataError(f"folder: path {root} {what}; point it at a directory "
                        "holding train/<class>/ and test/<class>/ (or val/<class>/) image folders")
    eval_dir = next((root / s for s in EVAL_SPLITS if (root / s).is_dir()), root / "test")
    train_classes = class_folders(root / "train")
    eval_classes = class_folders(eval_dir)
    if not train_classes or not eval_classes:
        parent = (f"; did you mean folder:{root.parent}?"
                  if root.name in ("train", *EVAL_SPLITS) and (root.parent / "train").is_dir()
                  else "")
        raise DataError(f"{root} needs train/<class>/ and test/<class>/ (or val/<class>/) image "
                        f"folders; found train: {len(train_classes)} classes, "
                        f"{eval_dir.name}: {len(eval_classes)}{parent}")
    if train_classes != eval_classes:
        only_train = sorted(set(train_classes) - set(eval_classes))
        only_eval = sorted(set(eval_classes) - set(train_classes))
        raise DataError(f"train and {eval_dir.name} class folders under {root} differ (only in "
                        f"train: {only_train}, only in {eval_dir.name}: {only_eval}); both "
                        "splits need the same class folders")
    return root / "train", eval_dir, train_classes


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


def load_cifar_python(root: Path, split: str) -> LoadedSplit:
    """One split of the pickled "python version" of CIFAR-10 or CIFAR-100, as torchvision
    downloads it."""
    cifar10 = {"train": [root / f"data_batch_{i}" for i in range(1, 6)],
               "test": [root / "test_batch"]}
    cifar100 = {"train": [root / "train"], "test": [root / "test"]}
    if all(p.is_file() for paths in cifar10.values() for p in paths):
        return LoadedSplit(_cifar_split([_unpickle(p) for p in cifar10[split]], b"labels"),
                           list(CIFAR10_CLASSES), CIFAR10_STATS)
    if all(p.is_file() for paths in cifar100.values() for p in paths):
        meta = root / "meta"
        names = ([n.decode() for n in _unpickle(meta)[b"fine_label_names"]]
                 if meta.is_file() else [str(i) for i in range(100)])
        return LoadedSplit(_cifar_split([_unpickle(p) for p in cifar100[split]], b"fine_labels"),
                           names, CIFAR100_STATS)
    raise DataError(f"cifar: path {root} is not a cifar-10-batches-py directory (data_batch_1..5, "
                    f"test_batch) nor a cifar-100-python one (train, test files); found "
                    f"{_listing(root)}{_folder_hint(root)}")


def _listing(root: Path) -> str:
    if not root.is_dir():
        return "no directory there" if not root.exists() else "a file"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return (", ".join(names[:6]) + (", ..." if len(names) > 6 else "")) if names else "nothing"


def _folder_hint(root: Path) -> str:
    if (root / "train").is_dir() and (root / "test").is_dir():
        return f"; a class-per-folder tree is read with --config.dataset=folder:{root}"
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


def import_tfds() -> Any:
    """tensorflow_datasets, with TensorFlow's C++ start-up notices left out (its log level, and
    the oneDNN notice that bypasses it): TFDS only reads files here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow_datasets as tfds

    return tfds


def load_tfds(name: str, data_dir: str | None, split: str) -> LoadedSplit:
    """One split of a TFDS image-classification dataset ('train' or 'test'), read into
    memory; downloaded and prepared first where there is network."""
    tfds = import_tfds()
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # TensorFlow only reads files here
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"TFDS has no dataset named {name!r}; use a TFDS name such as cifar10, "
                        "or folder:PATH, cifar:PATH or synthetic") from None
    with absl_logs_quiet():  # TFDS warns that the folder it looks for has no dataset_info
        prepared = builder.is_prepared()
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
