"""The one reader of weights every door calls (predict, evaluate, init_from,
:func:`pretrained`): :func:`load_weights`, and the fitting of loaded variables to a
new model."""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from resnet_jax import arguments, hints
from resnet_jax.errors import ArgumentError, ResNetWarning, WeightsError
from resnet_jax.models import ResNet, cast_variables, list_models
from resnet_jax.progress import warn
from resnet_jax.runs import workdir
from resnet_jax.weights import table
from resnet_jax.weights.loaded import Preprocessing, Weights
from resnet_jax.weights.sources import from_file, from_hub, from_name, from_run
from resnet_jax.weights.state_dicts import (
    SAFETENSORS_FILE,
    is_timm_config,
)


def load_weights(model: str | None, weights: str | None = None, resize: int | None = None,
                 crop: int | None = None, step: int | None = None, raw: bool = False,
                 classifier: bool = True) -> Weights:
    """``weights``: a name of ``model``'s weights in the weights table (``IMAGENET1K_V1``,
    ``CIFAR10_AKAMASTER``, ``DEFAULT``...), a Hugging Face Hub repository
    (``hf-hub:timm/resnet50.a1_in1k``), a ``.pth``/``.th`` or ``.safetensors`` state dict
    of ``model`` in torchvision's layout (a folder holding ``model.safetensors`` and timm's
    ``config.json``: its preprocessing too; a file the table knows by its SHA-256: all the
    table says of it), or a training
    run's work directory (its model is read from the run; its checkpoint of ``step``, else
    the newest readable one; the moving average of its weights where it keeps one, unless
    ``raw``). ``resize``/``crop`` replace the preprocessing's sizes. A state dict without
    ``fc`` gives a headless model (``num_classes=0``), refused where a ``classifier`` is
    needed. The one reader of weights for every door (predict, evaluate, init_from,
    :func:`pretrained`): every argument is checked before anything is read, and every
    problem is a ResNetError naming the fix in the caller's own terms."""
    _check_arguments(model, weights, resize, crop, raw, classifier)
    step = arguments.step(step)
    path = Path(weights).expanduser()
    kind = _source_kind(weights, path)
    given = {key: value for key, value in (("step", step), ("raw", raw))
             if value is not None and value is not False}  # step 0 is a step
    if kind != "run" and given:
        key, value = next(iter(given.items()))
        raise WeightsError(f"{hints.setting(key, value)} picks among a training run's "
                           f"checkpoints; {weights} is not a run's work directory: leave out "
                           f"{hints.name(key)}")
    if kind == "run":
        loaded = from_run(path, model, step, raw)
    elif kind == "file":
        loaded = from_file(model, path / SAFETENSORS_FILE if path.is_dir() else path)
    elif kind == "hub":
        loaded = from_hub(model, weights)
    else:
        loaded = from_name(model, weights)
    _check_values(loaded.variables, weights)
    if classifier and not loaded.model.num_classes:
        raise WeightsError(f"{weights} holds no classifier (no fc.weight): it gives features, "
                           "not classes; predict and evaluate need a classifier's weights "
                           "(as --config.init_from it starts a run with a new head)")
    sizes = {key: value for key, value in (("resize", resize), ("crop", crop)) if value}
    preprocessing = dataclasses.replace(loaded.preprocessing, **sizes)
    if sizes and preprocessing.assumed:
        preprocessing = dataclasses.replace(preprocessing, assumed=(
            f"sizes as given; the rest {preprocessing.assumed}"))
    _check_sizes(preprocessing, loaded.model, sizes)
    return dataclasses.replace(loaded, preprocessing=preprocessing, sizes_given=bool(sizes))


def _check_arguments(model: Any, weights: Any, resize: Any, crop: Any, raw: Any,
                     classifier: Any) -> None:
    """ArgumentError for a value of the wrong kind, before anything is looked up."""
    if weights is None and isinstance(model, str | os.PathLike) and model not in list_models():
        raise ArgumentError(f"weights is missing, and model={str(model)!r} is not a model but "
                            f"looks like weights: pass (None, {str(model)!r}) to read the model "
                            f"from them, or (MODEL, {str(model)!r})")
    with_default = table.models_named(table.DEFAULT)
    arguments.path("weights", weights,
                   table.DEFAULT if model in with_default else "PATH.pth")
    if model is not None and model not in list_models():
        arguments.refuse("model", model, "a model of this project (list_models())",
                         hints.closest(str(model), list_models()) or "resnet50")
    arguments.pixels("resize", resize)
    arguments.pixels("crop", crop)
    arguments.switch("raw", raw)
    arguments.switch("classifier", classifier)


def _source_kind(weights: str, path: Path) -> str:
    """What ``weights`` names: 'name' (the weights table's), 'hub' (a Hugging Face Hub
    repository), 'file' (a state dict, or a hub snapshot's folder), or 'run' (a training
    run's work directory); WeightsError where it names nothing of these, saying what it
    found."""
    if str(weights).startswith(table.HUB_SPELLINGS):
        return "hub"
    if not path.exists():
        if table.NAME.fullmatch(str(weights)):
            return "name"
        close = table.close_name(str(weights))
        meant = (f"did you mean {close}? (weights names are in capitals: python -m "
                 "resnet_jax.weights lists them)" if close else
                 "pass a weights name such as IMAGENET1K_V1 (python -m resnet_jax.weights "
                 "lists them), hf-hub:timm/NAME, a .pth or .safetensors file, a hub "
                 "snapshot's folder, or a training run's work directory")
        raise WeightsError(f"{weights} does not exist; {meant}")
    if path.is_file():
        return "file"
    inside = path / SAFETENSORS_FILE
    if inside.is_file():
        return "file"
    if inside.is_symlink() or inside.exists():
        what = (f"a link to {os.readlink(inside)}, which does not exist (a hub cache whose "
                "file was removed?)" if inside.is_symlink() and not inside.exists()
                else "a folder, not a file")
        raise WeightsError(f"{inside} is {what}; download the snapshot again")
    run = _checkpoint_of_a_run(path)
    if run is not None:
        which = ("; init_from starts from its newest readable checkpoint"
                 if hints.current() == hints.CONFIG else
                 f" with {hints.setting('step', int(path.name))}")
        raise WeightsError(f"{path} is a checkpoint of the run in {run}: pass "
                           f"{hints.setting('weights', str(run))}{which}")
    if is_timm_config(path / "config.json"):
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6])
        raise WeightsError(f"{path} holds timm's config.json but no {SAFETENSORS_FILE} (found "
                           f"{found}); download the snapshot's {SAFETENSORS_FILE} into it (its "
                           "weights; pytorch_model.bin is not read)")
    if (path / workdir.CONFIG_FILE).is_file() or (path / workdir.CHECKPOINT_DIR).is_dir():
        return "run"
    shown = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
    if table.models_named(str(weights)):
        shown += (f"; {weights} is also a weights name, read as this folder: to use the "
                  "weights, run from another folder")
    raise WeightsError(f"{path} is neither a training run's work directory (config.json, "
                       f"checkpoints/) nor a hub snapshot ({SAFETENSORS_FILE}, config.json); "
                       f"found {shown}")


def _checkpoint_of_a_run(path: Path) -> Path | None:
    """The run whose checkpoint folder ``path`` is (RUN/checkpoints/STEP), or None."""
    run = path.parent.parent
    if path.name.isdigit() and path.parent.name == workdir.CHECKPOINT_DIR and (
            run / workdir.CONFIG_FILE).is_file():
        return run
    return None


def _check_sizes(preprocessing: Preprocessing, model: ResNet, given: dict[str, int]) -> None:
    """Refuse a crop the network cannot take, or one larger than the resized image."""
    crop = (hints.setting("crop", preprocessing.crop) if "crop" in given
            else f"the weights' crop {preprocessing.crop}")
    if preprocessing.crop < model.total_stride:
        raise WeightsError(f"{crop} is below the network's total stride of "
                           f"{model.total_stride}: its last stage would see less than one pixel; "
                           f"pass {hints.setting('crop', model.total_stride)} or more")
    if preprocessing.resize > arguments.MAX_IMAGE_SIDE:
        raise WeightsError(f"resize {preprocessing.resize} is above {arguments.MAX_IMAGE_SIDE} "
                           f"pixels a side, which no door takes; pass "
                           f"{hints.setting('resize', preprocessing.crop)} or more, up to "
                           f"{arguments.MAX_IMAGE_SIDE}")
    if preprocessing.resize < preprocessing.crop:
        raise WeightsError(f"resize {preprocessing.resize} is below crop {preprocessing.crop}: "
                           "the centre crop would reach past the resized image; pass "
                           f"{hints.setting('resize', preprocessing.crop)} or more (or a smaller "
                           f"{hints.name('crop')})")


def resolved_source(weights: str) -> str:
    """A weights argument with a path made absolute and resolved (a name, or "", as it is)."""
    path = Path(weights).expanduser()
    return str(path.resolve()) if weights and path.exists() else weights


def pretrained(model: str | None, weights: str | None = None,
               raw: bool = False) -> tuple[ResNet, dict[str, Any]]:
    """``(model, variables)`` for inference (a headless model, ``num_classes=0``, from a
    state dict without a classifier); a run's moving average of its weights where it keeps
    one (said in a ResNetWarning), its trained weights with ``raw``; see
    :func:`load_weights`."""
    loaded = load_weights(model, weights, raw=raw, classifier=False)
    if loaded.averaged:
        warnings.warn(ResNetWarning(loaded.describe()), stacklevel=2)
    return loaded.model, loaded.variables


def _check_values(variables: dict[str, Any], weights: str) -> None:
    """WeightsError naming the first array that holds NaN or infinite values, or a running
    variance below 0."""
    for path, value in traverse_util.flatten_dict(dict(variables)).items():
        array = np.asarray(value)
        if not np.all(np.isfinite(array)):
            raise WeightsError(f"{weights}: {'/'.join(path)} holds NaN or infinite values: the "
                               "file is damaged, or the weights come from a run that diverged")
        if path[0] == "batch_stats" and path[-1] == "var" and np.any(array < 0):
            raise WeightsError(f"{weights}: {'/'.join(path)} holds negative running variances, "
                               "which no BatchNorm computes: the file is damaged")


def initial_variables(config: Any) -> dict[str, Any] | None:
    """The variables ``config.init_from`` names (weights name, .pth or run directory) for
    ``config.model``, or None when it names none: a run's moving average of the weights
    where it keeps one, its trained weights with ``config.init_from_raw``."""
    if not config.init_from:
        return None
    with hints.door(hints.CONFIG):
        loaded = load_weights(config.model, config.init_from, raw=config.init_from_raw,
                              classifier=False)
        print(f"starting from {loaded.describe()}", file=sys.stderr)
    return loaded.variables


def fit_variables(initialised: dict[str, Any], loaded: dict[str, Any]) -> dict[str, Any]:
    """``loaded`` in place of ``initialised`` wherever shapes agree: a classifier head of
    another size keeps its fresh initialisation (a warning says so); any other
    difference is an error."""
    fresh = traverse_util.flatten_dict(dict(initialised))
    given = traverse_util.flatten_dict(dict(loaded))
    differing = sorted(p for p in fresh if np.shape(given.get(p)) != np.shape(fresh[p]))
    if any(path[1] != "fc" for path in differing) or not given:
        shown = ", ".join("/".join(p) for p in differing[:3])
        raise WeightsError(f"init_from does not fit this model ({len(differing)} arrays "
                           f"differ, e.g. {shown}); start from weights of the same model")
    if differing:
        kernel = given.get(("params", "fc", "kernel"))
        head = "no head" if kernel is None else f"a {np.shape(kernel)[-1]}-class head"
        warn(f"init_from has {head}, this model "
             f"{np.shape(fresh[('params', 'fc', 'kernel')])[-1]}: the head (fc) is "
             "re-initialised, everything else starts from the weights")
    same = {p: given[p] for p in fresh if p not in differing}
    cast = cast_variables(same, {p: fresh[p] for p in same}, "init_from's weights")
    return traverse_util.unflatten_dict({p: cast.get(p, fresh[p]) for p in fresh})
