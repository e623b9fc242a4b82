"""Where weights come from: a name of the weights table (downloaded once into the cache,
checked against its SHA-256), a Hugging Face Hub repository, a state dict file, or a
training run; each read into :class:`~resnet_jax.weights.loaded.Weights`."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from resnet_jax import hints
from resnet_jax.data import description
from resnet_jax.errors import ArgumentError, WeightsError
from resnet_jax.models import create_model
from resnet_jax.models.torch_compat import from_torchvision, looks_like, state_dict_problems
from resnet_jax.progress import warn
from resnet_jax.runs import workdir
from resnet_jax.weights import hub, table
from resnet_jax.weights.loaded import Preprocessing, Weights, cache_dir, placeholder_names
from resnet_jax.weights.state_dicts import (
    SAFETENSORS_FILE,
    TIMM_DEFAULTS,
    hub_architecture,
    is_timm_config,
    published_cifar_layout,
    read_state,
    timm_config,
    torchvision_names,
)
from resnet_jax.weights.table import HUB_PREFIX, Entry

# Named weights.

def from_name(model: str | None, name: str) -> Weights:
    """The table's weights ``name`` of ``model``: its file, downloaded into the cache once
    (checked against the table's SHA-256), read as any file is."""
    if not model:
        models = table.models_named(name)
        if len(models) != 1:
            which = (f"weights of {', '.join(models)}" if models
                     else "no weights of the table (python -m resnet_jax.weights lists them)")
            raise WeightsError(f"{name} names {which}: pass "
                               f"{hints.setting('model', models[0] if models else 'resnet50')}, "
                               "the one you mean")
        model = models[0]
    entry = table.find(model, name)
    path = cache_dir() / model / entry.name / Path(urllib.parse.urlparse(entry.url).path).name
    if not path.is_file():
        _fetch(entry, path)
    return from_file(model, path, expected=entry)


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


def from_hub(model: str | None, name: str) -> Weights:
    """A Hub repository's safetensors weights, with its timm config.json."""
    name = HUB_PREFIX + name.split(":", 1)[1]  # timm's other spelling, hf_hub:, too
    folder, revision = hub.snapshot(name, model)
    loaded = from_file(model, folder / SAFETENSORS_FILE)
    entry = table.hub_entry(name.removeprefix(HUB_PREFIX))
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


def from_file(model: str | None, path: Path, expected: Entry | None = None) -> Weights:
    """A state dict in torchvision's layout from a file, read by what it holds (torch.save's
    formats, or safetensors, read without torch, with timm's config.json beside it), not by
    its name; a file whose SHA-256 is a table entry's is that entry (its model, classes,
    preprocessing and published accuracy). ``expected``: the entry the file must be (a
    cached download)."""
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    entry = table.by_digest(digest)
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
    names = (table.class_set_names("ImageNet-1k") if classes == 1000
             else [] if not classes else None)
    return Weights(create_model(model, num_classes=classes), variables,
                   names or placeholder_names(classes), preprocessing, None, str(path),
                   names_known=names is not None)


# A training run.

def from_run(run_dir: Path, model_name: str | None, step: int | None,
              raw: bool = False) -> Weights:
    from resnet_jax.runs.checkpoints import run_directory
    from resnet_jax.runs.trained import read_weights

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


def run_data(run_dir: Path) -> dict[str, Any]:
    """What a run saved about its data (class names, statistics, image sizes): its
    dataset.json, else the copy in its newest readable checkpoint; every field inference
    reads checked (WeightsError naming the first that is missing or broken)."""
    saved = description.saved(run_dir)
    if saved is None:
        raise WeightsError(f"{run_dir / workdir.DATA_FILE} is missing or unreadable, and the "
                           "run's checkpoints keep no copy of it (they predate it); put it back "
                           "from a copy of the run")
    problem = description.problem(saved)
    if problem:
        raise WeightsError(f"{run_dir / workdir.DATA_FILE}: {problem}; put the file back from a "
                           "copy of the run (or delete it: it is read from the checkpoints' copy)")
    return saved
