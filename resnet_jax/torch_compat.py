"""Convert between torchvision ``state_dict`` layouts and Flax variables.

Every model from :func:`resnet_jax.create_model` names its layers as
torchvision does (``layer2_0/conv1`` here is ``layer2.0.conv1`` there, and a
projection shortcut is ``downsample.0`` / ``downsample.1``), so a
``state_dict`` maps one to one. This module never imports torch: values may be
torch tensors or numpy arrays, and the export is plain numpy.

One known difference remains after a faithful load: during training, Flax
updates BatchNorm's running variance with the biased batch variance, PyTorch
with the unbiased one (factor n / (n - 1), n values per channel). Inference
with given statistics is identical. PyTorch's ``num_batches_tracked`` counter
has no Flax counterpart: it is ignored on import and exported as 0 (it only
matters for BatchNorm with ``momentum=None``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from resnet_jax.errors import ArgumentError
from resnet_jax.models import MODELS, cast_variables, create_model

# Flax (collection, leaf) -> torch parameter suffix.
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_UNMAPPED_SUFFIX = "num_batches_tracked"


def _torch_module_name(flax_path: tuple[str, ...]) -> str:
    name = ".".join(flax_path)
    name = re.sub(r"layer(\d+)_(\d+)", r"layer\1.\2", name)
    return name.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")


def _torch_key(path: tuple[str, ...]) -> str:
    collection, *modules, leaf = path
    return f"{_torch_module_name(tuple(modules))}.{_LEAF_NAMES[collection, leaf]}"


def _to_torch_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:  # HWIO -> OIHW
        return array.transpose(3, 2, 0, 1)
    if leaf == "kernel":  # Dense (in, out) -> Linear (out, in)
        return array.T
    return array


def _from_torch_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:  # OIHW -> HWIO
        return array.transpose(2, 3, 1, 0)
    if leaf == "kernel":
        return array.T
    return array


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _variable_shapes(name: str, **model_overrides: Any) -> dict[tuple[str, ...], Any]:
    """Flat {(collection, *modules, leaf): ShapeDtypeStruct} of a model, without computing it."""
    model = create_model(name, **model_overrides)
    size = 64 if model.stem == "imagenet" else 32
    x = jax.ShapeDtypeStruct((1, size, size, model.input_channels), np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return traverse_util.flatten_dict(dict(shapes))


def from_torchvision(state_dict: Mapping[str, Any], name: str,
                     **model_overrides: Any) -> dict[str, Any]:
    """Flax variables ``{'params', 'batch_stats'}`` for ``create_model(name)`` from a state_dict.

    Raises ArgumentError (a TypeError) for anything but a mapping of names to tensors, and
    ArgumentError (a ValueError) naming the missing, unexpected or mis-shaped keys, with a
    hint where the keys carry DataParallel's ``module.`` prefix or fit another depth.
    """
    if not isinstance(state_dict, Mapping):
        hint = (" (a module: pass model.state_dict())" if hasattr(state_dict, "state_dict")
                else "")
        raise ArgumentError(f"from_torchvision takes a state_dict, a mapping of parameter names to "
                        f"tensors; got {type(state_dict).__name__}{hint}")
    shapes = _variable_shapes(name, **model_overrides)
    expected = {_torch_key(path): path for path in shapes}
    given = {k: v for k, v in state_dict.items() if not k.endswith(_UNMAPPED_SUFFIX)}
    if "fc.weight" not in expected and "fc.weight" in given:  # headless, or features
        given = {k: v for k, v in given.items() if not k.startswith("fc.")}
        warnings.warn(f"{name} without its classifier (num_classes=0 or output='features'): "
                      "the state_dict's fc.weight and fc.bias are left out", stacklevel=2)
    problems = _key_problems(set(expected), set(given))
    flat = {}
    for key in sorted(set(expected) & set(given)):
        path = expected[key]
        array = _from_torch_layout(_as_numpy(given[key]), path[-1])
        want = tuple(shapes[path].shape)
        if array.shape != want:
            problems.append(f"{key}: shape {_torch_shape(want, path[-1])} expected, "
                            f"got {_torch_shape(array.shape, path[-1])}")
            continue
        flat[path] = array
    if problems:
        raise ArgumentError(f"state_dict does not fit {name}: " + "; ".join(problems[:4])
                         + (f"; {len(problems) - 4} more" if len(problems) > 4 else "")
                         + f". {_hint(given, name)}")
    return traverse_util.unflatten_dict(cast_variables(flat, shapes, "the state_dict's tensors"))


def _key_problems(expected: set[str], given: set[str]) -> list[str]:
    problems = []
    for what, keys in (("missing", expected - given), ("unexpected", given - expected)):
        if keys:
            shown = sorted(keys)[:3]
            problems.append(f"{len(keys)} {what} keys ({', '.join(shown)}"
                            f"{', ...' if len(keys) > 3 else ''})")
    return problems


def _hint(given: Mapping[str, Any], name: str) -> str:
    if given and all(k.startswith("module.") for k in given):
        return ("Its keys carry DataParallel's 'module.' prefix: pass "
                "{k.removeprefix('module.'): v for k, v in state_dict.items()}")
    guess = looks_like(given)
    if guess and guess != name:
        return f"It looks like a {guess} state_dict: pass name={guess!r}"
    return "Check the model name and num_classes"


def looks_like(given: Mapping[str, Any]) -> str | None:
    """The model whose depth table fits the keys of a state_dict, if one does."""
    blocks: dict[int, set[int]] = {}
    for key in given:
        match = re.match(r"layer(\d+)\.(\d+)\.", key)
        if match:
            blocks.setdefault(int(match[1]), set()).add(int(match[2]))
    stage_sizes = tuple(len(blocks[stage]) for stage in sorted(blocks))
    bottleneck = any(".conv3." in key for key in given)
    stem = np.shape(given.get("conv1.weight", np.empty((0, 0, 0, 0))))[-1]
    grouped = np.shape(given.get("layer1.0.conv2.weight", np.empty((0, 0))))[:2]
    for candidate, spec in MODELS.items():
        layout_stem = 3 if spec.get("stem") == "cifar" else 7
        if (tuple(spec["stage_sizes"]) == stage_sizes and layout_stem == stem
                and (spec["block_cls"].expansion == 4) == bottleneck
                and (not bottleneck or _first_conv2(spec) == grouped)):
            return candidate
    return None


def _first_conv2(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(out, in per group) of a bottleneck model's first 3x3 convolution."""
    groups = spec.get("groups", 1)
    width = int(spec.get("stage_widths", (64,))[0] * spec.get("width_per_group", 64) / 64)
    return width * groups, width


def _torch_shape(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    return _to_torch_layout(np.empty(flax_shape, np.bool_), leaf).shape


def to_torchvision(variables: dict[str, Any], name: str,
                   **model_overrides: Any) -> dict[str, np.ndarray]:
    """A torchvision-layout state_dict (numpy arrays) from ``create_model(name)``'s variables.

    Raises ArgumentError (a ValueError) naming every variable that does not fit the named model.
    """
    flat = traverse_util.flatten_dict(dict(variables))
    shapes = _variable_shapes(name, **model_overrides)
    problems = [f"missing {'/'.join(p)}" for p in shapes if p not in flat]
    problems += [f"unexpected {'/'.join(p)}" for p in flat if p not in shapes]
    problems += [f"{'/'.join(p)}: shape {tuple(shapes[p].shape)} expected, got {np.shape(v)}"
                 for p, v in flat.items() if p in shapes and np.shape(v) != shapes[p].shape]
    headless = all(p[1] == "fc" for p in shapes if p not in flat) and not any(
        p[1] == "fc" for p in flat)
    hint = (" They hold no classifier: pass num_classes=0 (or output='features')."
            if problems and headless else "")
    if problems:
        raise ArgumentError(f"variables do not fit {name}: " + "; ".join(problems) + "." + hint)
    state_dict = {}
    for path, value in flat.items():
        key = _torch_key(path)  # a writable copy: torch.from_numpy warns of read-only arrays
        state_dict[key] = np.array(_to_torch_layout(np.asarray(value), path[-1]), order="C")
        if path[:1] == ("batch_stats",) and path[-1] == "var":
            state_dict[key.replace("running_var", _UNMAPPED_SUFFIX)] = np.array(0, np.int64)
    return state_dict
