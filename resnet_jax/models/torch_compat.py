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

import numpy as np
from flax import traverse_util

from resnet_jax.errors import ArgumentError, ResNetWarning
from resnet_jax.models import (
    MODELS,
    cast_variables,
    create_model,
    variable_shapes,
    variables_problem,
)

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
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16: float32 holds it
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def _variable_shapes(name: str, **model_overrides: Any) -> dict[tuple[str, ...], Any]:
    """Flat {(collection, *modules, leaf): ShapeDtypeStruct} of a model, without computing it."""
    return variable_shapes(create_model(name, **model_overrides))


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
        raise ArgumentError(f"from_torchvision takes a state_dict, a mapping of parameter names "
                            f"to tensors; got {type(state_dict).__name__}{hint}")
    shapes = _variable_shapes(name, **model_overrides)
    given = _mapped(state_dict, shapes, name, warn=True)
    problems = _problems(shapes, given)
    if problems:
        raise ArgumentError(f"state_dict does not fit {name}: {problems}. "
                            f"{_hint(given, name, shapes)}")
    integral = next((key for key, value in given.items() if "float" not in str(value.dtype)
                     and not key.endswith("num_batches_tracked")), None)
    if integral:
        raise ArgumentError(f"{integral} holds {given[integral].dtype} values, not floating point "
                            "numbers: these are not a model's weights as trained (damaged, or "
                            "quantized); pass the floating point state_dict")
    flat = {path: _from_torch_layout(_as_numpy(given[_torch_key(path)]), path[-1])
            for path in shapes}
    return traverse_util.unflatten_dict(cast_variables(flat, shapes, "the state_dict's tensors"))


def state_dict_problems(state_dict: Mapping[str, Any], name: str,
                        **model_overrides: Any) -> str | None:
    """The missing, unexpected or mis-shaped keys of a state_dict for ``create_model(name)``
    (the first four, and how many more), or None where it fits."""
    shapes = _variable_shapes(name, **model_overrides)
    return _problems(shapes, _mapped(state_dict, shapes, name, warn=False))


def _mapped(state_dict: Mapping[str, Any], shapes: dict[tuple[str, ...], Any], name: str,
            warn: bool) -> dict[str, Any]:
    """The keys of a state_dict that map to variables: PyTorch's ``num_batches_tracked``
    left out, and ``fc`` where the model has no classifier (said, with ``warn``)."""
    given = {k: v for k, v in state_dict.items() if not k.endswith(_UNMAPPED_SUFFIX)}
    if ("params", "fc", "kernel") not in shapes and "fc.weight" in given:  # headless
        given = {k: v for k, v in given.items() if not k.startswith("fc.")}
        if warn:
            warnings.warn(ResNetWarning(
                f"{name} without its classifier (num_classes=0 or output='features'): the "
                "state_dict's fc.weight and fc.bias are left out"), stacklevel=3)
    return given


def _problems(shapes: dict[tuple[str, ...], Any], given: Mapping[str, Any]) -> str | None:
    expected = {_torch_key(path): path for path in shapes}
    problems = _key_problems(set(expected), set(given))
    for key in sorted(set(expected) & set(given)):
        path = expected[key]
        have = _from_torch_layout(np.empty(np.shape(given[key]), np.bool_), path[-1]).shape
        want = tuple(shapes[path].shape)
        if have != want:
            problems.append(f"{key}: shape {_torch_shape(want, path[-1])} expected, "
                            f"got {_torch_shape(have, path[-1])}")
    if not problems:
        return None
    return "; ".join(problems[:4]) + (f"; {len(problems) - 4} more" if len(problems) > 4 else "")


def _key_problems(expected: set[str], given: set[str]) -> list[str]:
    problems = []
    for what, keys in (("missing", expected - given), ("unexpected", given - expected)):
        if keys:
            shown = sorted(keys)[:3]
            problems.append(f"{len(keys)} {what} keys ({', '.join(shown)}"
                            f"{', ...' if len(keys) > 3 else ''})")
    return problems


def _classes(shapes: Mapping[tuple[str, ...], Any]) -> int | None:
    """The class count of a model's classifier, from its variable shapes; None without one."""
    head = shapes.get(("params", "fc", "bias"))
    return head.shape[0] if head is not None else None


def _hint(given: Mapping[str, Any], name: str, shapes: Mapping[tuple[str, ...], Any]) -> str:
    if isinstance(given.get("state_dict"), Mapping):
        return "It is a checkpoint around a state_dict: pass checkpoint['state_dict']"
    if given and all(k.startswith("module.") for k in given):
        return ("Its keys carry DataParallel's 'module.' prefix: pass "
                "{k.removeprefix('module.'): v for k, v in state_dict.items()}")
    if "linear.weight" in given and "fc.weight" not in given:
        return ("Its classifier is named 'linear' (torchvision names it 'fc'): rename "
                "linear.weight and linear.bias to fc.weight and fc.bias")
    guess = looks_like(given)
    classes = np.shape(given["fc.weight"])[0] if "fc.weight" in given else None
    other_head = f", num_classes={classes}" if classes and classes != _classes(shapes) else ""
    if guess and guess != name:
        return f"It looks like a {guess} state_dict: pass name={guess!r}{other_head}"
    if guess == name and other_head:
        return f"Its layers are a {name}'s, with a head of {classes} classes: pass{other_head[1:]}"
    if guess == name:
        return (f"Its layers are a {name}'s: leave out the keys a {name} has not, or pass the "
                "num_classes of its fc")
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

    Raises ArgumentError (a ValueError) naming how the variables differ from the named
    model's, with the model they fit where one does.
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        nnx_state = type(variables).__name__ == "State"
        raise ArgumentError("to_torchvision takes linen variables {'params': ..., "
                            "'batch_stats': ...}" + (
                                ", not an NNX State: pass resnet_jax.nnx.linen_variables(model)"
                                if nnx_state else f"; got {type(variables).__name__}"))
    flat = traverse_util.flatten_dict(dict(variables))
    model = create_model(name, **model_overrides)
    problem = variables_problem(model, variables)
    if problem:
        shapes = variable_shapes(model)
        headless = all(p[1] == "fc" for p in shapes if p not in flat) and not any(
            p[1] == "fc" for p in flat)
        guess = looks_like({_torch_key(p): np.empty(_torch_shape(np.shape(v), p[-1]), np.bool_)
                            for p, v in flat.items() if (p[0], p[-1]) in _LEAF_NAMES})
        bias = flat.get(("params", "fc", "bias"))
        classes = np.shape(bias)[0] if bias is not None else None
        other_head = classes is not None and _classes(shapes) not in (None, classes)
        hint = (" They hold no classifier: pass num_classes=0 (or output='features')."
                if headless else f" They look like a {guess}'s: pass name={guess!r}."
                if guess and guess != name else
                f" Their head has {classes} classes: pass num_classes={classes}."
                if other_head else "")
        raise ArgumentError(f"variables do not fit {name}: {problem}.{hint}")
    state_dict = {}
    for path, value in flat.items():
        key = _torch_key(path)  # a writable copy: torch.from_numpy warns of read-only arrays
        state_dict[key] = np.array(_to_torch_layout(np.asarray(value), path[-1]), order="C")
        if path[:1] == ("batch_stats",) and path[-1] == "var":
            state_dict[key.replace("running_var", _UNMAPPED_SUFFIX)] = np.array(0, np.int64)
    return state_dict
