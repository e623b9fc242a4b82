"""ResNet in Flax linen: blocks, the network, and the table of named depths.

The ImageNet layout follows torchvision (ResNet v1.5: the stride of a
bottleneck sits on its 3x3 convolution), so torchvision weights load one to
one. The CIFAR family follows He et al. (2015), section 4.2, with the paper's
parameter-free "option A" shortcut.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from resnet_jax import arguments, hints
from resnet_jax.errors import ArgumentError, ResNetWarning
from resnet_jax.parallel import AXIS

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


class ResNet(nn.Module):
    """A ResNet: stem, stages of residual blocks, global average pool, classifier.

    Call as ``model.apply(variables, x, train=False)`` for inference, or with
    ``train=True, mutable=['batch_stats']`` for training. ``x`` is a float NHWC
    batch. BatchNorm follows PyTorch's defaults (momentum 0.1 there, 0.9 here;
    epsilon 1e-5); set ``bn_axis_name`` to average batch statistics over a
    mapped device axis.

    ``output="features"`` returns the stage outputs instead, a dict keyed by
    :attr:`stage_names` (``stem``: after the max-pool, ``layer1``...: after each
    stage; strides 4, 4, 8, 16, 32 with the ImageNet stem, 1, 1, 2, 4 with the CIFAR
    one), or those of ``feature_stages``; ``num_classes=0`` returns the pooled
    features the classifier would take. Both take the classifier's variables (its
    ``fc`` unused).
    """

    stage_sizes: Sequence[int]
    block_cls: ModuleDef
    num_classes: int = 1000
    stage_widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"
    shortcut: str = "projection"
    residual: bool = True
    zero_init_residual: bool = False
    groups: int = 1
    width_per_group: int = 64
    output: str = "logits"
    feature_stages: Sequence[str] | None = None
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0  # timm's: dropout of the pooled features before the classifier
    remat: bool = False  # each block recomputed in the backward pass (jax.checkpoint)
    input_channels: int = 3
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The keys of ``output="features"``: the stem, then each stage."""
        return ("stem", *(f"layer{i + 1}" for i in range(len(self.stage_sizes))))

    @property
    def drop_path_rates(self) -> list[float]:
        """Each block's stochastic-depth rate, rising linearly from 0 at the first block to
        ``drop_path_rate`` at the last, as timm's ResNet."""
        blocks = sum(self.stage_sizes)
        return [self.drop_path_rate * i / max(1, blocks - 1) for i in range(blocks)]

    @property
    def total_stride(self) -> int:
        """Input pixels per position of the last stage, along each side (32 for the ImageNet
        stem and four stages): a smaller image leaves the last stage less than one pixel."""
        return (4 if self.stem == "imagenet" else 1) * 2 ** (len(self.stage_sizes) - 1)

    def check_options(self) -> None:
        """ArgumentError naming the first field outside its valid values, or the options
        that clash (:data:`RELATIONS`)."""
        for field in ("dtype", "param_dtype"):
            value = getattr(self, field)
            try:
                floating = jnp.issubdtype(jnp.dtype(value), jnp.floating)
            except TypeError:
                floating = False
            if not floating:
                raise ArgumentError(f"{field}={value!r} is not a floating-point dtype; pass "
                                    f"e.g. {field}=jnp.float32 or jnp.bfloat16.")
        counts = {"num_classes": (self.num_classes, 0), "groups": (self.groups, 1),
                  "width_per_group": (self.width_per_group, 1),
                  "input_channels": (self.input_channels, 1)}
        for field, (value, low) in counts.items():
            if not arguments.is_int(value) or value < low:
                raise ArgumentError(f"{field}={value!r} must be an integer >= {low}"
                                 + (" (0: no classifier)." if field == "num_classes" else "."))
        for field in ("stage_sizes", "stage_widths"):
            value = getattr(self, field)
            if isinstance(value, str) or not all(arguments.is_int(v) and v >= 1 for v in value):
                raise ArgumentError(f"{field}={value!r} must be a sequence of integers >= 1.")
        if len(self.stage_sizes) != len(self.stage_widths):
            raise ArgumentError(f"stage_sizes has {len(self.stage_sizes)} stages but stage_widths "
                             f"{len(self.stage_widths)}; give one width per stage.")
        if self.stem not in ("imagenet", "cifar"):
            raise ArgumentError(f"unknown stem {self.stem!r}; use 'imagenet' or 'cifar'.")
        if self.shortcut not in ("projection", "option_a"):
            raise ArgumentError(f"unknown shortcut {self.shortcut!r}; use 'projection' or "
                                "'option_a'.")
        if not isinstance(self.remat, bool):
            raise ArgumentError(f"remat={self.remat!r} must be True or False.")
        for field in ("drop_path_rate", "drop_rate"):
            rate = getattr(self, field)
            if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0 <= rate < 1:
                raise ArgumentError(f"{field}={rate!r} must be a number in [0, 1).")
        if self.output not in ("logits", "features"):
            raise ArgumentError(f"unknown output {self.output!r}; use 'logits' or 'features'.")
        self._check_feature_stages()
        problems = relation_problems({f.name: getattr(self, f.name)
                                      for f in dataclasses.fields(self)})
        if problems:
            raise ArgumentError("; ".join(problems) + ".")

    def _check_feature_stages(self) -> None:
        stages = self.feature_stages
        if stages is None:
            return
        if self.output != "features":
            raise ArgumentError(f"feature_stages={stages!r} chooses among the stage outputs of "
                             "output='features'; add output='features'.")
        if isinstance(stages, str) or not stages:
            raise ArgumentError(f"feature_stages={stages!r} must be a non-empty sequence of stage "
                             f"names, e.g. ('layer2',); leave it out for all of "
                             f"{list(self.stage_names)}.")
        unknown = sorted(set(stages) - set(self.stage_names))
        if unknown:
            raise ArgumentError(f"unknown stage(s) {unknown} in feature_stages; this network's "
                             f"are {list(self.stage_names)}.")

    def check_images(self, x: jnp.ndarray) -> None:
        """ArgumentError unless ``x`` is an NHWC batch this network can take."""
        channels = self.input_channels
        if not hasattr(x, "shape") or not hasattr(x, "ndim"):
            raise ArgumentError(f"ResNet takes an array of images (batch, height, width, "
                                f"{channels}), not a {type(x).__name__}; pass jnp.asarray(x)")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ArgumentError(f"ResNet takes float images standardised per channel, got "
                                f"{x.dtype} ones; pass (x / 255 - mean) / std as float32, with "
                                "the mean and std of the weights (ImageNet's, or the data's)")
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ArgumentError(f"ResNet expects images shaped (batch, height, width, {channels}) "
                                f"(NHWC), got shape {tuple(x.shape)}; {_layout_hint(x, channels)}.")
        try:  # side by side: symbolic sides (jax.export) compare with a constant, not each other
            small = any(side < self.total_stride for side in x.shape[1:3])
        except jax.errors.InconclusiveDimensionOperation:
            raise ArgumentError(f"the symbolic image sides {x.shape[1]} and {x.shape[2]} may be "
                                f"below this network's total stride of {self.total_stride}; "
                                "give them constraints, e.g. jax.export.symbolic_shape('b, h, "
                                f"w', constraints=('h >= {self.total_stride}', 'w >= "
                                f"{self.total_stride}'))") from None
        if small:
            raise ArgumentError(f"images of {x.shape[1]}x{x.shape[2]} are smaller than this "
                             f"network's total stride of {self.total_stride}: its last stage "
                             "would see less than one pixel; use images of at least "
                             f"{self.total_stride}x{self.total_stride}.")

    def check_mode(self, train: Any) -> None:
        """ArgumentError where ``train`` and the mutable collections of ``apply`` disagree:
        training updates the running BatchNorm statistics, so they must be mutable, and
        inference uses them, so they must not be (Flax's examples default to training,
        these models to inference: a step written for them would silently never train)."""
        if not isinstance(train, bool):
            raise ArgumentError(f"train={train!r} must be True or False")
        if self.is_initializing():
            return
        mutable = self.is_mutable_collection("batch_stats")
        if train and not mutable:
            raise ArgumentError("train=True updates BatchNorm's running statistics: pass "
                                "mutable=['batch_stats'] to apply and keep the statistics it "
                                "returns (or train=False for inference)")
        if train and self.drop_path_rate and self.residual and not self.has_rng("dropout"):
            raise ArgumentError(f"drop_path_rate={self.drop_path_rate} drops residual branches "
                                "at random in training: pass rngs={'dropout': key} to apply")
        if (train and self.drop_rate and self.num_classes and self.output == "logits"
                and not self.has_rng("dropout")):
            raise ArgumentError(f"drop_rate={self.drop_rate} drops pooled features at random "
                                "in training: pass rngs={'dropout': key} to apply")
        if mutable and not train:
            raise ArgumentError("batch_stats is mutable but train=False: BatchNorm would use "
                                "its running statistics and return them unchanged, so nothing "
                                "trains; pass train=True to train, or leave batch_stats out of "
                                "mutable for inference")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        self.check_options()
        self.check_mode(train)
        self.check_images(x)
        try:
            out, built = self._layers(x, train)
        except flax.errors.ScopeCollectionNotFound:
            raise ArgumentError("the variables hold no batch_stats (BatchNorm's running mean "
                                "and variance): pass {'params': ..., 'batch_stats': ...} whole, "
                                "as model.init gives them") from None
        except NameError as error:
            if self.bn_axis_name is None or self.bn_axis_name not in str(error):
                raise
            raise ArgumentError(f"bn_axis_name={self.bn_axis_name!r} averages BatchNorm's "
                                "statistics over the devices of a pmap or shard_map axis of that "
                                "name: call the model inside one, or leave bn_axis_name out "
                                "(one device)") from None
        except (flax.errors.ScopeParamShapeError, flax.errors.ScopeParamNotFoundError) as error:
            found = str(error).split(" (https://")[0].split("\n")[0]
            raise ArgumentError(f"the variables do not fit this model ({found}): they are "
                                "another model's (another name, depth, width or num_classes); "
                                "pass the variables made for this one") from None
        extra = sorted(set(self.variables.get("params", {})) - built - {"fc"})
        if extra and not self.is_initializing():
            raise ArgumentError(f"the variables hold {', '.join(extra[:3])}, which this model "
                                "does not have: they are another model's (a deeper one?); "
                                "pass the variables made for this one")
        return out

    def _layers(self, x: jnp.ndarray, train: bool) -> tuple[Any, set[str]]:
        """The forward pass, and the names of the layers it built (inside __call__'s
        compact scope)."""
        conv = torch_like_conv(self.dtype, self.param_dtype)
        norm = torch_like_batch_norm(train, self.bn_axis_name, self.dtype, self.param_dtype)
        x = jnp.asarray(x, self.dtype)
        if self.stem == "imagenet":
            x = conv(self.stage_widths[0], (7, 7), (2, 2), padding=pad(7), name="conv1")(x)
            x = nn.relu(norm(name="bn1")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=pad(3))
        else:
            x = conv(self.stage_widths[0], (3, 3), padding=pad(3), name="conv1")(x)
            x = nn.relu(norm(name="bn1")(x))
        features, built = {"stem": x}, {"conv1", "bn1"}
        stages = zip(self.stage_sizes, self.stage_widths, strict=True)
        rates = iter(self.drop_path_rates)
        block_cls = nn.remat(self.block_cls) if self.remat else self.block_cls
        for stage, (num_blocks, width) in enumerate(stages):
            for index in range(num_blocks):
                name = f"layer{stage + 1}_{index}"
                strides = 2 if stage > 0 and index == 0 else 1
                x = block_cls(width, strides, conv=conv, norm=norm,
                                   drop_path=next(rates), deterministic=not train,
                                   residual=self.residual, shortcut=self.shortcut,
                                   zero_init_last_bn=self.zero_init_residual,
                                   groups=self.groups, width_per_group=self.width_per_group,
                                   name=name)(x)
                built.add(name)
            features[f"layer{stage + 1}"] = x
        if self.output == "features":
            return {name: features[name] for name in self.feature_stages or self.stage_names}, built
        x = jnp.mean(x, axis=(1, 2))
        if not self.num_classes:  # headless: the classifier's input
            return jnp.asarray(x, jnp.float32), built
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=dense_kernel_init,
                     bias_init=torch_linear_bias_init(x.shape[-1]), name="fc")(x)
        return jnp.asarray(x, jnp.float32), built


def _layout_hint(x: jnp.ndarray, channels: int) -> str:
    """How to turn ``x`` into the NHWC batch of ``channels`` channels a model takes."""
    shape = tuple(x.shape)
    if x.ndim == 3:
        return "add a batch axis to a single image: x[None]"
    if x.ndim == 4 and shape[1] == channels:
        return "this looks NCHW: transpose it with x.transpose(0, 2, 3, 1)"
    if x.ndim == 4 and shape[-1] in (1, 3, 4):
        return (f"images of {shape[-1]} channel(s): convert them to {channels} (grey: "
                f"jnp.repeat(x, {channels}, axis=-1); RGBA: x[..., :3]), or create the model "
                f"with input_channels={shape[-1]}")
    return f"give a 4-dimensional batch of {channels}-channel images"


# Stage sizes and block type per depth, as in the paper's Table 1.
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
