"""The table of named models (the paper's Table 1, torchvision's variants, the CIFAR
nets) and :func:`create_model`, which builds one by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.errors import ArgumentError
from resnet_jax.models.blocks import BasicBlock, Bottleneck
from resnet_jax.models.resnet import ResNet
from resnet_jax.parallel import AXIS

IMAGENET_DEPTHS = {
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), Bottleneck),
    101: ((3, 4, 23, 3), Bottleneck),
    152: ((3, 8, 36, 3), Bottleneck),
}
# torchvision's ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko and Komodakis 2016):
# the ImageNet layout with grouped or wider 3x3 convolutions in its bottlenecks.
IMAGENET_VARIANTS = {
    "resnext50_32x4d": (50, 32, 4),
    "resnext101_32x8d": (101, 32, 8),
    "resnext101_64x4d": (101, 64, 4),
    "wide_resnet50_2": (50, 1, 128),
    "wide_resnet101_2": (101, 1, 128),
}
# The paper's CIFAR nets (section 4.2): 6n+2 layers, three stages of n blocks.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)


def _model_table() -> dict[str, dict[str, Any]]:
    table = {}
    for depth, (stage_sizes, block_cls) in IMAGENET_DEPTHS.items():
        table[f"resnet{depth}"] = dict(stage_sizes=stage_sizes, block_cls=block_cls)
    for name, (depth, groups, width_per_group) in IMAGENET_VARIANTS.items():
        stage_sizes, block_cls = IMAGENET_DEPTHS[depth]
        table[name] = dict(stage_sizes=stage_sizes, block_cls=block_cls, groups=groups,
                           width_per_group=width_per_group)
    for depth in CIFAR_DEPTHS:
        n = (depth - 2) // 6
        table[f"resnet{depth}"] = dict(
            stage_sizes=(n, n, n), block_cls=BasicBlock, stage_widths=(16, 32, 64),
            stem="cifar", shortcut="option_a", num_classes=10)
    for depth, (stage_sizes, block_cls) in IMAGENET_DEPTHS.items():
        table[f"resnet{depth}_cifar"] = dict(
            stage_sizes=stage_sizes, block_cls=block_cls, stem="cifar", num_classes=10)
    return table


MODELS = _model_table()


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(MODELS)


def create_model(name: str, **overrides: Any) -> ResNet:
    """Build a named ResNet; keyword overrides replace any :class:`ResNet` field.

    >>> model = create_model("resnet20", num_classes=100, dtype=jnp.bfloat16)
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ArgumentError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}.")
    fields = {f.name for f in dataclasses.fields(ResNet)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ArgumentError(f"unknown ResNet option(s) {unknown}; valid ones: {sorted(fields)}.")
    # Sequences as tuples: a module's fields must hash (NNX keeps them in its graph).
    overrides = {key: tuple(value) if isinstance(value, list) else value
                 for key, value in overrides.items()}
    model = ResNet(**{**MODELS[name], **overrides})
    model.check_options()
    return model


def variable_shapes(model: ResNet) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    """Flat {(collection, *modules, leaf): shape and dtype} of ``model``'s variables, without
    computing them."""
    size = 64 if model.stem == "imagenet" else 32
    x = jax.ShapeDtypeStruct((1, size, size, model.input_channels), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return flax.traverse_util.flatten_dict(dict(shapes))


def variables_problem(model: ResNet, variables: Mapping[str, Any]) -> str | None:
    """How ``variables`` ({'params', 'batch_stats'}) differ from ``model``'s (the first
    array missing, extra or of another shape, and how many differ), or None."""
    expected = {path: tuple(leaf.shape) for path, leaf in variable_shapes(model).items()}
    given = {path: tuple(np.shape(leaf)) for path, leaf in
             flax.traverse_util.flatten_dict({k: dict(v) for k, v in variables.items()
                                              if k in ("params", "batch_stats")}).items()}
    differing = sorted(p for p in expected.keys() | given.keys()
                       if expected.get(p) != given.get(p))
    if not differing:
        return None
    path = differing[0]
    return (f"{len(differing)} arrays differ, e.g. {'/'.join(path)}: "
            f"{given.get(path, 'absent')} in the variables, {expected.get(path, 'absent')} in "
            "the model")


def build_model(config: Any) -> ResNet:
    """The model a training config names, with BatchNorm statistics synced over the
    device axis if ``config.sync_batch_stats`` (a key a run's saved config predates is
    taken as off)."""
    return create_model(
        config.model, num_classes=config.num_classes, residual=config.get("residual", True),
        zero_init_residual=config.get("zero_init_residual", False),
        dtype=jnp.dtype(config.get("dtype", "float32")),
        drop_path_rate=config.get("drop_path_rate", 0.0),
        drop_rate=config.get("drop_rate", 0.0), remat=config.get("remat", False),
        bn_axis_name=AXIS if config.get("sync_batch_stats", True) else None)
