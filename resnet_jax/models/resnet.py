"""The linen ResNet: stem, stages of residual blocks, pool and classifier.

The ImageNet layout follows torchvision (ResNet v1.5: the stride of a
bottleneck sits on its 3x3 convolution), so torchvision weights load one to
one. The CIFAR family follows He et al. (2015), section 4.2, with the paper's
parameter-free "option A" shortcut.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax import arguments
from resnet_jax.errors import ArgumentError
from resnet_jax.models.blocks import (
    ModuleDef,
    dense_kernel_init,
    pad,
    relation_problems,
    torch_like_batch_norm,
    torch_like_conv,
    torch_linear_bias_init,
)


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
