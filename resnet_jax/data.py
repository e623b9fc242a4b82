"""What a dataset is called and how it is laid out, for every pipeline: the names
``config.dataset`` takes, a class-per-folder tree's rules, published statistics and class
names, and how a run's data description tells the same data again.

Names (``config.dataset``):
  - a TFDS name (``cifar10``, ``cifar100``, ``imagenet2012``, ...), read from ``config.data_dir``
  - ``folder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``val/``) images
  - ``cifar:PATH``: a ``cifar-10-batches-py`` or ``cifar-100-python`` directory
  - ``synthetic``: learnable random images, for smoke tests
The loaders are :mod:`resnet_jax.pipelines.datasets` (in memory) and
:mod:`resnet_jax.pipelines.sources` (streaming).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

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
PATH_PREFIXES = ("folder:", "cifar:")  # config.dataset values that name a path


def resolved_dataset(name: str) -> str:
    """``config.dataset`` with the path of ``folder:`` or ``cifar:`` made absolute and
    resolved (a relative one is the current directory's, links followed): the same data
    wherever a run is resumed or evaluated from, however the path was written."""
    prefix = next((p for p in PATH_PREFIXES if name.startswith(p)), "")
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
    return name != "synthetic" and not name.startswith(PATH_PREFIXES)


def dataset_name_problem(name: str) -> str | None:
    """What is wrong with a ``config.dataset`` value before anything is read, or None."""
    if not name.strip():
        return ("is empty; set --config.dataset to a TFDS name such as cifar10, folder:PATH, "
                "cifar:PATH or synthetic")
    prefix = next((p for p in PATH_PREFIXES if name.startswith(p)), None)
    if prefix and not name.removeprefix(prefix).strip():
        return f"names no path; write --config.dataset={prefix}PATH"
    looks_like_path = name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()
    if prefix is None and name != "synthetic" and looks_like_path:
        guess = "cifar" if (Path(name).expanduser() / "data_batch_1").exists() else "folder"
        return f"looks like a path, not a TFDS name; write --config.dataset={guess}:{name}"
    return None


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


def tfds_builder(name: str, data_dir: str | None) -> tuple[Any, bool]:
    """TFDS's builder of ``name`` in ``data_dir`` and whether its data are prepared there;
    DataError for a name TFDS does not know."""
    tfds = import_tfds()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"TFDS has no dataset named {name!r}; use a TFDS name such as cifar10 "
                        "or imagenet2012, or folder:PATH (in memory also cifar:PATH or "
                        "synthetic)") from None
    with absl_logs_quiet():  # TFDS warns that the folder it looks for has no dataset_info
        return builder, builder.is_prepared()


def import_tfds() -> Any:
    """tensorflow_datasets, with TensorFlow's C++ start-up notices left out (its log level, and
    the oneDNN notice that bypasses it): TFDS only reads files here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow_datasets as tfds

    return tfds
