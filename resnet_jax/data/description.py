"""A run's data description: ``dataset.json`` and the copy each checkpoint keeps of it.

What is recorded of the data a run trained on (:func:`describe`: where it is, its classes,
statistics, image sizes and image counts), how data found later is compared with it
(:func:`change`, :func:`check_same`), what makes it usable for inference (:func:`problem`),
and how it is read and a lost file restored from the checkpoints (:func:`saved`,
:func:`restore`). The file's name and its reading and writing are
:mod:`resnet_jax.runs.workdir`'s.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from resnet_jax import data
from resnet_jax.arguments import MAX_IMAGE_SIDE
from resnet_jax.data import listed
from resnet_jax.data.pipelines import Pipeline
from resnet_jax.errors import DataError, ResNetWarning, WorkdirError
from resnet_jax.files import free_name
from resnet_jax.progress import warn
from resnet_jax.runs import checkpoints
from resnet_jax.runs import workdir as workdir_files


def describe(config: ml_collections.ConfigDict, pipeline: Pipeline) -> dict[str, Any]:
    """What inference needs to know of the run's data (classes, statistics, image sizes; in
    memory, evaluation images are used at their size: no resize beyond it), and what tells
    the same data again (where it is, how many images each split holds)."""
    streaming = config.pipeline == "streaming"
    return {"dataset": config.dataset, "class_names": list(pipeline.class_names),
            "mean": list(pipeline.mean), "std": list(pipeline.std),
            "image_size": config.image_size, "eval_image_size": pipeline.eval_image_shape[0],
            "eval_resize": config.eval_resize if streaming else config.image_size,
            "train_examples": pipeline.train_examples, "eval_examples": pipeline.eval_examples}


def change(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
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


def problem(saved: Any) -> str | None:
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


def saved(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's dataset.json, or the copy its newest readable checkpoint keeps of it (with
    a ResNetWarning where the file is there but unreadable); None if neither is there.
    WorkdirError where the file and the copy disagree: the file was edited or replaced."""
    path = Path(run_dir) / workdir_files.DATA_FILE
    found = workdir_files.read_data_description(Path(run_dir))
    copy = checkpoints.latest_json_item(run_dir, checkpoints.DATA)
    if found is None:
        if path.exists() and copy is not None:
            warnings.warn(ResNetWarning(f"{path} cannot be read as JSON; read the copy the "
                                        "run's checkpoints keep"), stacklevel=2)
        return copy
    differing = sorted(key for key in found.keys() & (copy or {}).keys()
                       if found[key] != copy[key])
    if differing:
        raise WorkdirError(f"{path} differs from the copy the run's checkpoints keep (in "
                           f"{', '.join(differing)}): it was edited or replaced; put back the "
                           "run's own (or delete it: the copy is read)")
    return found


def check_same(workdir: Path, pipeline: Pipeline, config: ml_collections.ConfigDict) -> None:
    """A resumed run's data must be the data it trained on (classes, image counts and, in
    memory, statistics: see dataset.json, or its copy in the checkpoints), wherever it is
    now: a dataset path moved is said, and its data checked like any other."""
    recorded = saved(workdir)
    before = (workdir_files.read_config(workdir) or {}).get("dataset", config.dataset)
    moved = data.resolved_dataset(before) != config.dataset
    if recorded is None and moved:
        raise DataError(f"the run in {workdir} keeps no {workdir_files.DATA_FILE} to tell "
                        f"whether {config.dataset} holds the data it trained on ({before}); "
                        f"resume with --config.dataset={before}, or pass a new --workdir")
    if recorded is None:
        if jax.process_index() == 0:
            warn(f"{workdir} has no {workdir_files.DATA_FILE}, nor a copy in its checkpoints "
                 "(they predate it): the data cannot be checked against the run's; resuming on "
                 "the data as it is")
        return
    changed = change(recorded, describe(config, pipeline))
    if changed:
        raise DataError(f"the data has changed since the run in {workdir} trained on it "
                        f"({changed}); restore the data, or pass a new --workdir")
    if moved and jax.process_index() == 0:
        warn(f"the run's data moved: {before} -> {config.dataset} (the same classes and image "
             "counts as it trained on); resuming on it")


def restore(workdir: Path) -> None:
    """dataset.json, lost from a finished run or unreadable, written back from its
    checkpoints' copy; an unreadable file is set aside (``dataset.json.unreadable``), never
    replaced."""
    path = workdir / workdir_files.DATA_FILE
    state = "cannot be read as JSON" if path.exists() else "is missing"
    copy = checkpoints.latest_json_item(workdir, checkpoints.DATA)
    if copy is None:
        warn(f"{path} {state} and the run's checkpoints predate the copy they now keep: "
             "predict and evaluate cannot use this run")
        return
    aside = ""
    if path.exists():
        kept = free_name(path.with_name(path.name + ".unreadable"))
        path.rename(kept)
        aside = f" (the unreadable file is kept as {kept.name})"
    workdir_files.write_data_description(workdir, copy)
    warn(f"{path} {state}; wrote the latest checkpoint's copy in its place{aside}")
