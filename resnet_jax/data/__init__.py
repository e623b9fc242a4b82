"""What a dataset is called, for every pipeline: the names ``config.dataset`` takes,
published statistics and class names, and how a run's data description tells the same
data again (a class-per-folder tree's rules are :mod:`resnet_jax.data.folders`').

Names (``config.dataset``):
  - a TFDS name (``cifar10``, ``cifar100``, ``imagenet2012``, ...), read from ``config.data_dir``
  - ``folder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``val/``) images
  - ``cifar:PATH``: a ``cifar-10-batches-py`` or ``cifar-100-python`` directory
  - ``synthetic``: learnable random images, for smoke tests
The loaders are :mod:`resnet_jax.data.pipelines.datasets` (in memory) and
:mod:`resnet_jax.data.pipelines.sources` (streaming).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from resnet_jax.arguments import MAX_IMAGE_SIDE
from resnet_jax.errors import DataError
from resnet_jax.quiet import absl_logs_quiet

# Per-channel (mean, std) of the training sets, on the 0..1 scale, as commonly published.
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TFDS_STATS = {"cifar10": CIFAR10_STATS, "cifar100": CIFAR100_STATS}
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


def description_problem(saved: Any) -> str | None:
    """What makes a run's data description (dataset.json) unusable for inference (a field
    missing, or of the wrong kind), or None."""
    if not isinstance(saved, dict):
        return f"holds a JSON {type(saved).__name__}, not the run's data description"
    names = saved.get("class_names")
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        return "class_names must be a list of the class names (two or more)"
    for key in ("mean", "std"):
        values = saved.get(key)
        if not (isinstance(values, list) and len(values) == 3
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                        and v <= 1 and (v >= 0 if key == "mean" else v > 0) for v in values)):
            interval = "[0, 1]" if key == "mean" else "(0, 1]"
            return f"{key} must be three numbers in {interval}, one per channel"
    for key in ("image_size", "eval_resize", "eval_image_size"):
        value = saved.get(key, 1 if key == "eval_image_size" else None)
        if not (isinstance(value, int) and not isinstance(value, bool)
                and 1 <= value <= MAX_IMAGE_SIDE):
            return f"{key} must be a whole number of pixels from 1 to {MAX_IMAGE_SIDE}"
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
