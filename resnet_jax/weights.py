"""Pretrained weights with what using them needs (preprocessing, class names, published
accuracy): by name from the weights table (:mod:`resnet_jax.weights_table`), from the
Hugging Face Hub (``hf-hub:timm/...``: :mod:`resnet_jax.hub`), from a state dict file in
torchvision's layout (``.pth``, ``.th``, ``.safetensors``, a hub snapshot's folder: read by
:mod:`resnet_jax.weight_files`, without torch), or from a training run (read by
:mod:`resnet_jax.checkpoints`). :func:`load_weights` is the one reader every door calls:
predict, evaluate, init_from and :func:`pretrained`.

Named weights are downloaded once from the table's address, checked against its SHA-256
and kept under ``$RESNET_JAX_CACHE`` (else ``~/.cache/resnet_jax``) as the publisher's
file. ``python -m resnet_jax.weights`` prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import hashlib
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from tqdm import tqdm

from resnet_jax import arguments, data, hints, hub, weights_table, workdir
from resnet_jax.errors import ArgumentError, ResNetWarning, WeightsError
from resnet_jax.models import ResNet, cast_variables, create_model, list_models
from resnet_jax.pipelines import images
from resnet_jax.progress import warn
from resnet_jax.torch_compat import from_torchvision, looks_like, state_dict_problems
from resnet_jax.weight_files import (
    SAFETENSORS_FILE,
    TIMM_DEFAULTS,
    hub_architecture,
    is_timm_config,
    published_cifar_layout,
    read_state,
    timm_config,
    torchvision_names,
)
from resnet_jax.weights_table import HUB_PREFIX, Entry, Published


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """torchvision's evaluation transform: the shorter side resized to ``resize``, the
    centre ``crop``, then standardised with ``mean`` and ``std`` (0..1 scale)."""

    resize: int
    crop: int
    mean: tuple[float, ...] = data.IMAGENET_STATS[0]
    std: tuple[float, ...] = data.IMAGENET_STATS[1]
    interpolation: str = "bilinear"  # or bicubic (see images.RESAMPLING)
    assumed: str = ""  # where the weights say nothing of their preprocessing: whose it is

    def describe(self) -> str:
        text = (f"shorter side resized to {self.resize} ({self.interpolation}), centre crop "
                f"{self.crop}")
        if (self.mean, self.std) != data.IMAGENET_STATS:
            text += f", mean {list(self.mean)}, std {list(self.std)}"
        return f"{text} ({self.assumed})" if self.assumed else text

    def __call__(self, encoded: bytes | str | os.PathLike) -> np.ndarray:
        """An image file (its bytes, or its path) -> float32 (crop, crop, 3); UnreadableImage
        if it is not one."""
        if isinstance(encoded, str | os.PathLike):
            try:
                encoded = Path(encoded).expanduser().read_bytes()
            except OSError as error:
                raise ArgumentError(f"{encoded} cannot be read ({error.strerror}); pass an "
                                    "image file's path, or its bytes") from None
        pixels = images.eval_crop(images.open_rgb(encoded), self.resize, self.crop,
                                  self.interpolation)
        mean, std = np.float32(self.mean), np.float32(self.std)
        return (pixels.astype(np.float32) / np.float32(255) - mean) / std


@dataclasses.dataclass(frozen=True)
class Weights:
    """A model, its variables, and what using them needs."""

    model: ResNet
    variables: dict[str, Any]
    class_names: list[str]  # '0', '1', ... where ``names_known`` is False
    preprocessing: Preprocessing
    published: Published | None  # its publisher's accuracy, where known
    source: str
    step: int | None = None  # a training run's checkpoint
    names_known: bool = True
    averaged: bool = False  # a run's moving average of the weights
    raw: bool = False  # a run's trained weights, chosen over the moving average it keeps
    eval_flip: bool = False  # a run evaluated with test-time flips
    sizes_given: bool = False  # resize or crop as given, not the weights' own

    def flips(self, chosen: bool | None) -> bool:
        """Test-time flips: as ``chosen``, else as the run the weights come from evaluated."""
        return self.eval_flip if chosen is None else chosen

    def describe(self) -> str:
        """Where the weights come from, for the first line of a report."""
        if self.step is None:
            return self.source
        average = (f", the moving average of its weights ({hints.setting('raw', True)}: the "
                   "trained ones)" if self.averaged else
                   ", its trained weights, not the moving average it keeps" if self.raw else "")
        return f"{self.source}, checkpoint of step {self.step}{average}"


def placeholder_names(count: int) -> list[str]:
    """The class names of weights that carry none: '0', '1', ..."""
    return [str(i) for i in range(count)]


def cache_dir() -> Path:
    return Path(os.environ.get("RESNET_JAX_CACHE") or Path.home() / ".cache" / "resnet_jax")


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
        loaded = _from_run(path, model, step, raw)
    elif kind == "file":
        loaded = _from_file(model, path / SAFETENSORS_FILE if path.is_dir() else path)
    elif kind == "hub":
        loaded = _from_hub(model, weights)
    else:
        loaded = _from_name(model, weights)
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
    with_default = weights_table.models_named(weights_table.DEFAULT)
    arguments.path("weights", weights,
                   weights_table.DEFAULT if model in with_default else "PATH.pth")
    if model is not None and model not in list_models():
        close = difflib.get_close_matches(str(model), list_models(), n=1)
        arguments.refuse("model", model, "a model of this project (list_models())",
                         close[0] if close else "resnet50")
    arguments.pixels("resize", resize)
    arguments.pixels("crop", crop)
    arguments.switch("raw", raw)
    arguments.switch("classifier", classifier)


def _source_kind(weights: str, path: Path) -> str:
    """What ``weights`` names: 'name' (the weights table's), 'hub' (a Hugging Face Hub
    repository), 'file' (a state dict, or a hub snapshot's folder), or 'run' (a training
    run's work directory); WeightsError where it names nothing of these, saying what it
    found."""
    if str(weights).startswith(weights_table.HUB_SPELLINGS):
        return "hub"
    if not path.exists():
        if weights_table.NAME.fullmatch(str(weights)):
            return "name"
        close = weights_table.close_name(str(weights))
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
    if weights_table.models_named(str(weights)):
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


# Named weights.

def _from_name(model: str | None, name: str) -> Weights:
    """The table's weights ``name`` of ``model``: its file, downloaded into the cache once
    (checked against the table's SHA-256), read as any file is."""
    if not model:
        models = weights_table.models_named(name)
        if len(models) != 1:
            which = (f"weights of {', '.join(models)}" if models
                     else "no weights of the table (python -m resnet_jax.weights lists them)")
            raise WeightsError(f"{name} names {which}: pass "
                               f"{hints.setting('model', models[0] if models else 'resnet50')}, "
                               "the one you mean")
        model = models[0]
    entry = weights_table.find(model, name)
    path = cache_dir() / model / entry.name / Path(urllib.parse.urlparse(entry.url).path).name
    if not path.is_file():
        _fetch(entry, path)
    return _from_file(model, path, expected=entry)


def _fetch(entry: Entry, path: Path) -> None:
    raw = _download(entry.url)
    digest = hashlib.sha256(raw).hexdigest()
    if not entry.matches(digest):
        raise WeightsError(f"{entry.url} arrived with SHA-256 {digest[:12]}..., not the "
                           f"{entry.sha256[:12]}... {entry.table} names: try again (a download "
                           "cut short), or, if the file is right, fix the entry's sha256")
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # one per writer
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(raw)
        partial.replace(path)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise WeightsError(f"cannot keep the download as {path} ({error.strerror}); point "
                           "RESNET_JAX_CACHE at a folder you can write") from None


def _from_hub(model: str | None, name: str) -> Weights:
    """A Hub repository's safetensors weights, with its timm config.json."""
    name = HUB_PREFIX + name.split(":", 1)[1]  # timm's other spelling, hf_hub:, too
    folder, revision = hub.snapshot(name, model)
    loaded = _from_file(model, folder / SAFETENSORS_FILE)
    entry = weights_table.hub_entry(name.removeprefix(HUB_PREFIX))
    return dataclasses.replace(loaded, source=f"{name} (revision {revision[:12]}, {folder})",
                               published=entry.published if entry else None)


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0)
            chunks = []
            with tqdm(total=total or None, unit="B", unit_scale=True, desc="downloading",
                      leave=False) as bar:
                while chunk := response.read(1 << 20):
                    chunks.append(chunk)
                    bar.update(len(chunk))
            return b"".join(chunks)
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsError(f"cannot download {url} ({reason}); fetch that file where there is "
                           f"network and pass its path, {hints.setting('weights', 'PATH.pth')} "
                           "(its SHA-256 brings the table's preprocessing, classes and "
                           "accuracy with it)") from None


def _from_file(model: str | None, path: Path, expected: Entry | None = None) -> Weights:
    """A state dict in torchvision's layout from a file, read by what it holds (torch.save's
    formats, or safetensors, read without torch, with timm's config.json beside it), not by
    its name; a file whose SHA-256 is a table entry's is that entry (its model, classes,
    preprocessing and published accuracy). ``expected``: the entry the file must be (a
    cached download)."""
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    entry = weights_table.by_digest(digest)
    if expected is not None and entry is not expected:
        raise WeightsError(f"the cached copy of {expected.model} {expected.name} ({path}) has "
                           f"SHA-256 {digest[:12]}..., not the {expected.sha256[:12]}... "
                           f"{expected.table} names: delete it (the next use downloads it "
                           "again), or, if the file is right, fix the entry's sha256")
    if entry is not None:
        return _from_entry(model, path, entry)
    state, safetensors = read_state(path)
    published_cifar = published_cifar_layout(state)
    beside = path.with_name("config.json")  # a link to nowhere: timm_config says so
    state = torchvision_names(state)
    named = None
    timm = is_timm_config(beside) or (beside.is_symlink() and not beside.exists())
    if timm or (safetensors and not published_cifar):
        cfg = timm_config(path)
        named, preprocessing = hub_architecture(path, cfg), _timm_preprocessing(path, cfg)
        _check_head(path, state, cfg)
    elif published_cifar:  # their test transform: ImageNet's mean and std on 32x32, no resize
        preprocessing = Preprocessing(32, 32, assumed=(
            f"the published CIFAR ResNets' (akamaster/pytorch_resnet_cifar10): {path.name} is "
            "in their layout, its classifier named linear"))
    else:
        preprocessing = Preprocessing(256, 224, assumed=f"torchvision V1's: {path.name} "
                                      "carries none")
    return _from_state_dict(_chosen_model(model, named, state, path), state, path,
                            preprocessing)


def _from_entry(model: str | None, path: Path, entry: Entry) -> Weights:
    """The file of a table entry, with all the entry says of it."""
    if model and model != entry.model:
        raise WeightsError(f"{path} is the file of {entry.model} {entry.name} (its SHA-256 is "
                           f"the weights table's), not a {model}'s; {_leave_out_model()}pass "
                           f"{hints.setting('model', entry.model)}")
    state = torchvision_names(read_state(path)[0])
    preprocessing = Preprocessing(entry.resize, entry.crop, entry.mean, entry.std,
                                  entry.interpolation)
    try:
        loaded = _from_state_dict(entry.model, state, path, preprocessing)
    except WeightsError:
        fits = looks_like(state)
        raise WeightsError(f"{entry.table} says {entry.name} is a {entry.model}'s, but its file "
                           f"{path} {f'fits a {fits}' if fits else 'fits no model of this project'}"
                           f": fix the entry's model") from None
    names = entry.class_names()
    if len(names) != loaded.model.num_classes:
        raise WeightsError(f"{entry.table} says {entry.model} {entry.name} has {len(names)} "
                           f"classes, but its file holds {loaded.model.num_classes}; fix the "
                           "entry's classes")
    return dataclasses.replace(loaded, class_names=names, published=entry.published,
                               names_known=True,
                               source=f"{entry.model} {entry.name} ({entry.source}; {path})")


def _leave_out_model() -> str:
    """'leave out model, or ' where the door may leave it out (a config file always names
    one)."""
    return "" if hints.current() == hints.CONFIG else f"leave out {hints.name('model')}, or "


def _check_head(path: Path, state: dict[str, Any], cfg: dict[str, Any] | None) -> None:
    """WeightsError where timm's config.json beside ``path`` (``cfg``) names another class
    count than the state dict's classifier has."""
    named = (cfg or {}).get("num_classes")
    held = int(np.shape(state["fc.weight"])[0]) if "fc.weight" in state else 0
    if named is not None and named != held:
        raise WeightsError(f"{path.with_name('config.json')} names num_classes={named}, but "
                           f"{path.name} holds a classifier of {held} classes: the snapshot "
                           "contradicts itself; fix num_classes in its config.json")


def _chosen_model(model: str | None, named: str | None, state: dict[str, Any],
                  path: Path) -> str:
    """The model the state dict is read as: the one asked for, else the one timm's
    config.json names; WeightsError where the snapshot contradicts itself, the two
    disagree, or neither names one (with the model its layers fit, if one does)."""
    looks = looks_like(state)
    if named and looks and looks != named:
        raise WeightsError(f"{path.with_name('config.json')} names {named}, but {path.name} "
                           f"holds a {looks}'s weights: the snapshot contradicts itself; fix "
                           "the architecture in its config.json")
    if model and named and model != named:
        raise WeightsError(f"{path.parent} holds timm's {named}, not a {model}; "
                           f"{_leave_out_model()}pass {hints.setting('model', named)}")
    if model or named:
        return model or named
    fit = (f"its layers fit a {looks}: pass {hints.setting('model', looks)}" if looks else
           f"pass {hints.setting('model', 'resnet50')}, or the model it was made for")
    raise WeightsError(f"{path} does not say which model it is for; {fit}")


def _timm_preprocessing(path: Path, cfg: dict[str, Any] | None) -> Preprocessing:
    """The evaluation transform timm's config.json beside ``path`` (``cfg``, from
    :func:`timm_config`) gives (its ``pretrained_cfg``: the test size and crop fraction where
    it names them, as timm's results table reports, else the input size and crop fraction;
    interpolation, mean, std; timm's defaults for those it leaves out, said where they are
    used); without one, torchvision V1's, said too."""
    if cfg is None:
        return Preprocessing(256, 224, assumed="torchvision V1's: no config.json beside "
                             f"{path.name}")
    missing = [key for key in TIMM_DEFAULTS if key not in cfg]
    cfg = {**TIMM_DEFAULTS, **cfg}
    size = cfg.get("test_input_size", cfg["input_size"])[-1]
    crop_pct = cfg.get("test_crop_pct", cfg["crop_pct"])
    assumed = (f"timm's default {', '.join(missing)}: {path.with_name('config.json')} names "
               "none" if missing else "")
    return Preprocessing(int(math.floor(size / crop_pct)), size, tuple(cfg["mean"]),
                         tuple(cfg["std"]), cfg["interpolation"], assumed=assumed)


def _from_state_dict(model: str, state: dict[str, Any], path: Path,
                     preprocessing: Preprocessing) -> Weights:
    """Weights from a state dict in torchvision's layout (``num_batches_tracked`` ignored,
    the class count read from its ``fc``: none without one)."""
    classes = int(np.shape(state["fc.weight"])[0]) if "fc.weight" in state else 0
    try:
        variables = from_torchvision(state, model, num_classes=classes)
    except ArgumentError as error:
        guess = looks_like(state)
        problems = state_dict_problems(state, model, num_classes=classes)
        if guess == model and problems is None:  # the keys and shapes fit: the values do not
            raise WeightsError(f"{path}: {error}") from None
        hint = (f"{problems}: it is not a {model} state dict in torchvision's layout"
                if guess == model else
                f"it looks like a {guess} state dict: pass {hints.setting('model', guess)}"
                if guess else "no ResNet of this project has its layers")
        raise WeightsError(f"{path} does not fit {model}; {hint}") from None
    names = (weights_table.class_set_names("ImageNet-1k") if classes == 1000
             else [] if not classes else None)
    return Weights(create_model(model, num_classes=classes), variables,
                   names or placeholder_names(classes), preprocessing, None, str(path),
                   names_known=names is not None)


# A training run.

def _from_run(run_dir: Path, model_name: str | None, step: int | None,
              raw: bool = False) -> Weights:
    from resnet_jax.checkpoints import read_weights, run_directory

    if not (run_dir / workdir.CONFIG_FILE).exists():
        raise WeightsError(f"{run_dir} holds checkpoints but no {workdir.CONFIG_FILE}, which "
                           "names the run's model; put it back from a copy of the run")
    config = workdir.read_config(run_directory(run_dir))
    trained = config["model"]
    if model_name and model_name != trained:
        raise WeightsError(f"{run_dir} trained a {trained}, not a {model_name}; its weights fit "
                           f"a {trained} only: leave out {hints.name('model')}, or pass "
                           f"{hints.setting('model', trained)}")
    model, variables, read = read_weights(run_dir, step, raw)
    if step is None:
        _warn_if_training(run_dir, read)
    saved = run_data(run_dir)
    if len(saved["class_names"]) != model.num_classes:
        raise WeightsError(f"{run_dir / workdir.DATA_FILE} names {len(saved['class_names'])} "
                           f"classes, but the run's {trained} has {model.num_classes} outputs; "
                           "put back the run's own file (or delete it: the copy its "
                           "checkpoints keep is read)")
    return Weights(model, variables, saved["class_names"],
                   Preprocessing(saved["eval_resize"],
                                 saved.get("eval_image_size", saved["image_size"]),
                                 tuple(saved["mean"]), tuple(saved["std"])), None, str(run_dir),
                   read, saved["class_names"] != placeholder_names(len(saved["class_names"])),
                   averaged=bool(config.get("ema_decay")) and not raw, raw=raw,
                   eval_flip=bool(config.get("eval_flip")))


def _warn_if_training(run_dir: Path, step: int) -> None:
    trainer = workdir.live_trainer(run_dir)
    if trainer:
        last = (workdir.read_config(run_dir) or {}).get("num_train_steps", "?")
        warn(f"{run_dir} is still training ({trainer}): its latest checkpoint, step "
             f"{step} of {last}, is used, not the finished run ({hints.setting('step', 'N')} "
             "picks another)")


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


def run_data(run_dir: Path) -> dict[str, Any]:
    """What a run saved about its data (class names, statistics, image sizes): its
    dataset.json, else the copy in its newest readable checkpoint; every field inference
    reads checked (WeightsError naming the first that is missing or broken)."""
    from resnet_jax.checkpoints import saved_data_description

    saved = saved_data_description(run_dir)
    if saved is None:
        raise WeightsError(f"{run_dir / workdir.DATA_FILE} is missing or unreadable, and the "
                           "run's checkpoints keep no copy of it (they predate it); put it back "
                           "from a copy of the run")
    problem = data.description_problem(saved)
    if problem:
        raise WeightsError(f"{run_dir / workdir.DATA_FILE}: {problem}; put the file back from a "
                           "copy of the run (or delete it: it is read from the checkpoints' copy)")
    return saved


def main(argv: list[str] | None = None) -> int:
    """``python -m resnet_jax.weights``: the weights table."""
    parser = argparse.ArgumentParser(prog="python -m resnet_jax.weights",
                                     description="The named weights: " + __doc__.split(":")[0])
    parser.add_argument("--markdown", action="store_true", help="as the README shows it")
    args = parser.parse_args(argv)
    try:
        print(weights_table.markdown() if args.markdown else weights_table.text())
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
