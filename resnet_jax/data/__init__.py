"""What a dataset is called, for every pipeline: the names ``config.dataset`` takes,
published statistics and class names (a class-per-folder tree's rules are
:mod:`resnet_jax.data.folders`'; a run's record of its data, :mod:`resnet_jax.data.description`).

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
from pathlib import Path
from typing import Any

from resnet_jax.errors import DataError
from resnet_jax.quiet import absl_logs_quiet, tensorflow_notices_off

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


def listed(names: list[str]) -> str:
    """Up to ten names, and how many more."""
    return (", ".join(names[:10]) + (f" (and {len(names) - 10} more)" if len(names) > 10 else "")
            if names else "none")


def moved(before: str, now: str) -> bool:
    """Whether ``now`` names the same kind of data source as ``before`` elsewhere (``folder:``
    or ``cifar:``): data that may have moved, which its description tells once it is read
    (:func:`resnet_jax.data.description.check_same`)."""
    return any(before.startswith(prefix) and now.startswith(prefix) and before != now
               for prefix in PATH_PREFIXES)


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
    """tensorflow_datasets, with TensorFlow's start-up notices left out."""
    tensorflow_notices_off()
    import tensorflow_datasets as tfds

    return tfds
