"""Reading state dicts from files, by what the files hold rather than by their names:
torch.save's formats and safetensors, both without torch (tensors only: nothing pickled
is ever run), with the timm ``config.json`` of a hub snapshot beside them,
every field used checked. Each problem is a WeightsError naming the file and what is
wrong with it."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from resnet_jax import arguments, data, hints
from resnet_jax.data.pipelines import images
from resnet_jax.errors import WeightsError
from resnet_jax.models import list_models
from resnet_jax.weights import pth

SAFETENSORS_FILE = "model.safetensors"  # a hub snapshot: this file and timm's config.json


def published_cifar_layout(state: dict[str, Any]) -> bool:
    """Whether a state dict is in the layout of the published CIFAR ResNets
    (github.com/akamaster/pytorch_resnet_cifar10): a classifier named ``linear`` (with or
    without DataParallel's ``module.``), which torchvision's models never name so."""
    return any(key.removeprefix("module.") == "linear.weight" for key in state)


def read_torch(source: Any) -> dict[str, Any]:
    """The state dict in a torch.save file (its zip or its older format; a path, or the
    bytes of a download), read without torch (:mod:`resnet_jax.weights.pth`: tensors only),
    floats as float32, unwrapped from the common checkpoint layouts around it
    (``{'state_dict': ...}``, ``{'model': ...}``)."""
    name = str(source) if isinstance(source, Path) else "the download"
    if isinstance(source, Path):
        with source.open("rb") as file:
            head = file.read(4)
        if not head:
            raise WeightsError(f"{name} is empty; download or copy it again")
        if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip, or pickle
            raise WeightsError(f"{name} is not a file torch.save wrote, nor a safetensors file "
                               f"(it starts {head!r}); pass a .pth state dict, a .safetensors "
                               "file, a hub snapshot's folder, or a training run's work "
                               "directory")
    loaded = pth.read(source, name)
    for wrapper in ("state_dict", "model"):  # common checkpoint layouts around a state dict
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, np.ndarray) for v in loaded.values()):
        what = type(loaded).__name__ if not isinstance(loaded, dict) else "dict of other values"
        raise WeightsError(f"{name} holds a {what}, not a state_dict (names to tensors); save "
                           "model.state_dict() with torch.save and pass that")
    return {key: value.astype(np.float32) if _floating(value) else value
            for key, value in loaded.items()}  # bfloat16 and float16 too


def _floating(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating) or array.dtype == ml_dtypes.bfloat16


def holds_safetensors(path: Path) -> bool:
    """Whether the file is safetensors (its header's length, 8 bytes, then the JSON header)
    rather than torch.save's zip or pickle; by its name where it is neither."""
    with path.open("rb") as file:
        head = file.read(9)
    header = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    if head[8:9] == b"{" and 0 < header < path.stat().st_size:
        return True
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save's zip, or a pickle
        return False
    return path.suffix == ".safetensors"


def read_state(path: Path) -> tuple[dict[str, Any], bool]:
    """The state dict a file holds, read by its bytes (safetensors or torch.save's), and
    whether it is safetensors."""
    safetensors = holds_safetensors(path)
    return (read_safetensors(path) if safetensors else read_torch(path)), safetensors


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, read without torch."""
    try:
        from safetensors.numpy import load_file

        return load_file(str(path))
    except Exception as error:  # safetensors raises its own kinds for a damaged header
        raise WeightsError(f"{path} cannot be read as a safetensors file: it is truncated or "
                           f"damaged ({type(error).__name__}: {' '.join(str(error).split())[:120]}"
                           "); download it again") from None


def torchvision_names(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict's keys as torchvision's: DataParallel's ``module.`` prefix removed, and a
    classifier named ``linear`` (as the common PyTorch CIFAR ResNets name it) named ``fc``."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if "linear.weight" in state and "fc.weight" not in state:
        state = {("fc." + key.removeprefix("linear.") if key.startswith("linear.") else key): value
                 for key, value in state.items()}
    return state


def is_timm_config(path: Path) -> bool:
    """Whether ``path`` is timm's config.json (not a training run's): it names an
    ``architecture`` or holds a ``pretrained_cfg``."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and ("architecture" in found or "pretrained_cfg" in found)


def hub_architecture(path: Path, cfg: dict[str, Any] | None) -> str | None:
    """The model timm's config.json beside ``path`` (``cfg``, from :func:`timm_config`)
    names (``architecture``, its tag left out); None where it names none."""
    named = (cfg or {}).get("architecture")
    if named is None:
        return None
    return timm_model(named, str(path.parent))


def timm_model(architecture: str, holder: str) -> str:
    """This project's model of timm's ``architecture`` (``resnet50.a1_in1k``: its tag left
    out); WeightsError, saying how timm's differs, where this project has none."""
    named = architecture.split(".")[0]
    if named not in list_models():
        raise WeightsError(f"{holder} holds timm's {named}, {timm_difference(named)}")
    return named


# How timm's ResNet variants differ from torchvision's layout, which this project's models
# have: by a prefix of timm's model name, then by the letters after its depth.
TIMM_PREFIXES = (
    ("seresne", "whose blocks add squeeze-and-excitation attention"),
    ("ecaresne", "whose blocks add ECA channel attention"),
    ("skresne", "whose blocks use selective-kernel convolutions"),
    ("gcresne", "whose blocks add global-context attention"),
    ("resnetrs", "a ResNet-RS (deep stem, squeeze-and-excitation, average-pool shortcuts)"),
    ("resnetblur", "whose downsampling is anti-aliased (blur pooling)"),
    ("resnetaa", "whose downsampling is anti-aliased"),
    ("resnetv2", "a pre-activation ResNet (v2 blocks)"),
)
TIMM_SUFFIXES = {
    "c": "a deep stem (three 3x3 convolutions)",
    "d": "a deep stem (three 3x3 convolutions) and average-pool shortcuts",
    "s": "a deep, wider stem (three 3x3 convolutions of 64, 64, 128)",
    "t": "a tiered deep stem and average-pool shortcuts",
    "e": "a deep, wider stem and average-pool shortcuts",
}


def timm_difference(architecture: str) -> str:
    """How timm's model ``architecture`` (``resnet50d``) differs from this project's ResNets,
    which have torchvision's layout, as a phrase that ends with the fix."""
    fix = ("; this project's models have torchvision's layout (7x7 stem, strided shortcuts, "
           "plain blocks: resnet_jax.list_models()), so pass one of those, e.g. "
           "hf-hub:timm/resnet50.a1_in1k")
    for prefix, difference in TIMM_PREFIXES:
        if architecture.startswith(prefix):
            return difference + fix
    variant = re.fullmatch(r"(resnet|resnext|wide_resnet)(\d+)([a-z]*)(_\w+)?", architecture)
    if variant is None:
        close = hints.closest(architecture, list_models(), cutoff=0.8)
        if close:
            return f"a name neither timm nor this project has: did you mean {close}?"
        return "not a ResNet in torchvision's layout" + fix
    family, depth, letters, rest = variant.groups()
    if letters in TIMM_SUFFIXES:
        return f"which has {TIMM_SUFFIXES[letters]}" + fix
    if rest and rest.startswith("_gn"):
        return "which normalises with GroupNorm, not BatchNorm" + fix
    if f"{family}{depth}" not in list_models():
        return f"of depth {depth}, which this project does not build" + fix
    return f"a variant ({letters or rest}) whose layers differ" + fix


def timm_config(path: Path) -> dict[str, Any] | None:
    """timm's config.json beside ``path``, with every field used here checked (types,
    ranges, sizes: a number given as a JSON string is refused, not converted); None where
    there is none. WeightsError naming the first field that is missing or broken."""
    config = path.with_name("config.json")
    if config.is_symlink() and not config.exists():
        raise WeightsError(f"{config} is a link that leads nowhere (a loop, or its file "
                           "removed); download the snapshot again")
    if not config.exists():
        return None
    try:
        found = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise WeightsError(f"{config} cannot be read as JSON ({type(error).__name__}); restore "
                           "it as the hub snapshot has it") from None
    if not isinstance(found, dict):
        raise WeightsError(f"{config} holds a JSON {type(found).__name__}, not timm's config "
                           "(an object with pretrained_cfg)")
    cfg = found.get("pretrained_cfg", found)
    where = "pretrained_cfg." if "pretrained_cfg" in found else ""
    if not isinstance(cfg, dict):
        raise WeightsError(f"{config}: pretrained_cfg is a JSON {type(cfg).__name__}, not an "
                           "object")
    cfg = {key: value for key, value in cfg.items() if value is not None}  # null: not given
    for key, problem in ((key, check(cfg[key])) for key, check in TIMM_FIELDS.items()
                         if key in cfg):
        if problem:
            raise WeightsError(f"{config}: {where}{key}={json.dumps(cfg[key])} {problem}")
    if "input_size" not in cfg:
        raise WeightsError(f"{config} lacks {where}input_size (channels, height, width); it is "
                           "what the weights were made for")
    architecture = found.get("architecture")
    if architecture is not None and not isinstance(architecture, str):
        raise WeightsError(f"{config}: architecture={json.dumps(architecture)} is not a model "
                           "name (a string such as \"resnet50.a1_in1k\")")
    classes = found.get("num_classes", cfg.get("num_classes"))
    if classes is not None and not (isinstance(classes, int) and not isinstance(classes, bool)
                                    and classes >= 0):
        raise WeightsError(f"{config}: num_classes={json.dumps(classes)} is not a class count "
                           "(a whole number >= 0; 0: no classifier)")
    return {**cfg, "architecture": architecture, "num_classes": classes}


def _json_number(value: Any) -> bool:
    """A JSON number (not a bool, not a string), finite."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _as_timm(value: Any) -> str:
    """The fix for a value written as a string where timm writes numbers."""
    texts = isinstance(value, str) or (isinstance(value, list)
                                       and any(isinstance(v, str) for v in value))
    return ("; write it as timm's config.json has it (a JSON number, not a string)" if texts
            else "")


def _channels(low: float, high: float, low_open: bool) -> Callable[[Any], str | None]:
    """Three per-channel values on the 0..1 scale, each in [low, high] ((low, high] with
    ``low_open``)."""
    def check(value: Any) -> str | None:
        if (not isinstance(value, list) or len(value) != 3
                or not all(_json_number(v) for v in value)):
            return ("must be a list of three finite numbers, one per channel (RGB)"
                    + _as_timm(value))
        if not all((low < v if low_open else low <= v) and v <= high for v in value):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            return f"must lie in {interval} in every channel, on the 0..1 scale of the pixels"
        return None
    return check


def _input_size(value: Any) -> str | None:
    if (not isinstance(value, list) or len(value) != 3
            or not all(arguments.is_int(v) and v >= 1 for v in value)):
        return "must be [channels, height, width], three whole numbers >= 1" + _as_timm(value)
    if value[0] != 3 or value[1] != value[2]:
        return "is not [3, size, size]: predict and evaluate take square RGB crops only"
    if value[1] > arguments.MAX_IMAGE_SIDE:
        return f"is above {arguments.MAX_IMAGE_SIDE} pixels a side, which no door takes"
    return None


def _crop_pct(value: Any) -> str | None:
    if _json_number(value) and 0.1 <= value <= 1:
        return None
    return ("must be a number in [0.1, 1], the crop's share of the resized side"
            + _as_timm(value))


def _supported(what: str, *choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return f"is not supported: predict and evaluate {what} {' or '.join(choices)} only"
    return check


# The fields of timm's pretrained_cfg read here, each with its check, and the value timm
# takes where the config names none.
TIMM_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "input_size": _input_size, "crop_pct": _crop_pct,
    "test_input_size": _input_size, "test_crop_pct": _crop_pct,
    "mean": _channels(0, 1, low_open=False), "std": _channels(0, 1, low_open=True),
    "interpolation": _supported("resize with", *images.RESAMPLING),
    "crop_mode": _supported("take the crop mode", "center"),
}
TIMM_DEFAULTS = {"crop_pct": 0.875, "mean": list(data.IMAGENET_STATS[0]),
                 "std": list(data.IMAGENET_STATS[1]), "interpolation": "bilinear"}


