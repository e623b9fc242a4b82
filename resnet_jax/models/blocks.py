"""The parts of a linen ResNet: torchvision's initialisers and padding, the shortcuts,
the options that clash, and the basic and bottleneck residual blocks."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from resnet_jax import hints
from resnet_jax.errors import ArgumentError, ResNetWarning

ModuleDef = Any

# Kaiming normal, fan_out, gain sqrt(2): torchvision's init for convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def pad(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric PyTorch-style padding for a k x k kernel ('SAME' differs at stride 2)."""
    return ((k // 2, k // 2), (k // 2, k // 2))


def torch_linear_bias_init(fan_in: int) -> Callable:
    """PyTorch's default nn.Linear bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = fan_in ** -0.5

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def last_bn_scale_init(zero: bool) -> Callable:
    """Zero-initialised last BN scale makes each residual block start as identity."""
    return nn.initializers.zeros if zero else nn.initializers.ones


def torch_like_conv(dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> ModuleDef:
    """Bias-free convolution with torchvision's initialisation."""
    return functools.partial(nn.Conv, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                             kernel_init=conv_kernel_init)


def torch_like_batch_norm(train: bool = False, axis_name: str | None = None,
                          dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> ModuleDef:
    """BatchNorm with PyTorch's defaults (its momentum 0.1 is Flax's 0.9, epsilon 1e-5).

    The batch variance is computed in two passes, as PyTorch does, for parity.
    """
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, use_fast_variance=False, axis_name=axis_name,
                             dtype=dtype, param_dtype=param_dtype)


def option_a_shortcut(x: jnp.ndarray, features: int, strides: int) -> jnp.ndarray:
    """The paper's parameter-free shortcut: subsample, and zero-pad the new channels."""
    # lax.slice sizes its output as the strided 3x3 convolution beside it does, (n - 1) // s
    # + 1, so the two agree for symbolic sizes too (jax.export), where x[:, ::s] does not
    x = lax.slice(x, (0, 0, 0, 0), x.shape, (1, strides, strides, 1))
    extra = features - x.shape[-1]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


def _shortcut(x: jnp.ndarray, features: int, strides: int, kind: str,
              conv: ModuleDef, norm: ModuleDef) -> jnp.ndarray:
    """Identity, or the path that matches a block's changed output shape.

    'projection' is a strided 1x1 convolution with BatchNorm (torchvision's
    ``downsample``); 'option_a' is :func:`option_a_shortcut`.
    Called inside a block's compact method, so its layers belong to the block.
    """
    if strides == 1 and x.shape[-1] == features:
        return x
    if kind == "projection":
        x = conv(features, (1, 1), (strides, strides), padding="VALID",
                 name="downsample_conv")(x)
        return norm(name="downsample_bn")(x)
    return option_a_shortcut(x, features, strides)


def bottleneck_width(features: int, groups: int, width_per_group: int) -> int:
    """The width of a bottleneck's 3x3 convolution, as torchvision's Bottleneck computes it."""
    return int(features * (width_per_group / 64.0)) * groups


# Options that cannot work together, whichever door sets them (create_model, NNX, a training
# config): (does the pair clash, why, the setting that fixes it).
RELATIONS: tuple[tuple[Callable[[Mapping[str, Any]], Any], str, tuple[str, Any]], ...] = (
    (lambda o: o["drop_path_rate"] and not o["residual"],
     "drop_path_rate={drop_path_rate} with residual=False: the plain net has no residual branch "
     "to drop", ("drop_path_rate", 0)),
    (lambda o: o.get("drop_rate") and (not o.get("num_classes", 1)
                                       or o.get("output", "logits") == "features"),
     "drop_rate={drop_rate} without a classifier (num_classes=0 or output='features'): there "
     "is no head to drop features before", ("drop_rate", 0)),
    (lambda o: o["zero_init_residual"] and not o["residual"],
     "zero_init_residual=True with residual=False zeroes every block's output (the plain net "
     "has no shortcut around the zeroed scale)", ("zero_init_residual", False)),
)


def relation_problems(options: Mapping[str, Any]) -> list[str]:
    """Each clash among ``options`` (ResNet fields, or a config's keys of the same names),
    with its fix as the current door spells it."""
    return [f"{why.format(**options)}; set {hints.setting(*fix)}"
            for clashes, why, fix in RELATIONS if clashes(options)]


def cast_variables(given: Mapping[Any, Any], like: Mapping[Any, Any], what: str) -> dict:
    """``given``'s arrays in the dtypes of ``like``'s (the model's ``param_dtype``), keyed
    alike; a ResNetWarning, once, where any dtype differs; ArgumentError for an array that
    is not floating point."""
    cast, changed = {}, set()
    for key, value in given.items():
        want, have = jnp.dtype(like[key].dtype), jnp.result_type(value)
        if not jnp.issubdtype(have, jnp.floating):
            name = "/".join(map(str, key)) if isinstance(key, tuple) else key
            raise ArgumentError(f"{what}: {name} holds {have} values, not floating point "
                                "numbers; pass the variables as saved")
        if have != want:
            changed.add(f"{have} -> {want}")
        cast[key] = value if have == want else (
            value.astype(want) if hasattr(value, "astype") else jnp.asarray(value, want))
    if changed:
        warnings.warn(ResNetWarning(f"{what} were cast to the model's dtype "
                                    f"({', '.join(sorted(changed))})"), stacklevel=3)
    return cast


def check_basic_block(groups: int, width_per_group: int) -> None:
    """ArgumentError unless the options are a plain BasicBlock's (as torchvision's)."""
    if (groups, width_per_group) != (1, 64):
        raise ArgumentError("BasicBlock takes groups=1 and width_per_group=64 only (as "
                         "torchvision's); grouped or wider blocks are Bottlenecks")


class ResidualBlock(nn.Module):
    """What both block types share: their options and the residual connection."""

    features: int
    strides: int = 1
    conv: ModuleDef = torch_like_conv()
    norm: ModuleDef = torch_like_batch_norm()
    residual: bool = True
    shortcut: str = "projection"
    zero_init_last_bn: bool = False
    groups: int = 1
    width_per_group: int = 64
    drop_path: float = 0.0
    deterministic: bool = True

    def last_norm(self, name: str) -> nn.Module:
        return self.norm(scale_init=last_bn_scale_init(self.zero_init_last_bn),
                         name=name)

    def add_shortcut(self, y: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        """relu(y + shortcut(x)), or relu(y) in the plain network."""
        if self.residual:
            features = self.features * self.expansion
            y = self.drop_residual(y)
            y = y + _shortcut(x, features, self.strides, self.shortcut, self.conv, self.norm)
        return nn.relu(y)

    def drop_residual(self, y: jnp.ndarray) -> jnp.ndarray:
        """Stochastic depth (timm's DropPath): in training, each example's residual branch
        is dropped with probability ``drop_path``, the kept ones scaled by 1/(1 - p); the
        masks come from the 'dropout' rng."""
        if self.deterministic or not self.drop_path:
            return y
        keep = 1.0 - self.drop_path
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0], 1, 1, 1))
        return y / keep * mask.astype(y.dtype)


class BasicBlock(ResidualBlock):
    """Two 3x3 conv-BN layers and a residual connection (ResNet-18/34, CIFAR nets)."""

    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_basic_block(self.groups, self.width_per_group)
        y = self.conv(self.features, (3, 3), (self.strides, self.strides),
                      padding=pad(3), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.features, (3, 3), padding=pad(3), name="conv2")(y)
        return self.add_shortcut(self.last_norm("bn2")(y), x)


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (strided, as torchvision), 1x1 expand x4 (ResNet-50/101/152); with
    ``groups`` and ``width_per_group`` as torchvision's: the 3x3 convolution grouped
    (ResNeXt) or wider (Wide ResNet), ``features * width_per_group / 64 * groups`` wide."""

    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        width = bottleneck_width(self.features, self.groups, self.width_per_group)
        y = self.conv(width, (1, 1), padding="VALID", name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(width, (3, 3), (self.strides, self.strides), padding=pad(3),
                      feature_group_count=self.groups, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(self.features * self.expansion, (1, 1), padding="VALID", name="conv3")(y)
        return self.add_shortcut(self.last_norm("bn3")(y), x)
