"""Every model as a native Flax NNX module, laid out as torchvision's.

The modules are built from ``nnx.Conv``, ``nnx.BatchNorm`` and ``nnx.Linear`` with the
linen models' architecture, initialisation and options (one table,
:mod:`resnet_jax.models`), and read like torchvision's: ``model.conv1``, ``model.bn1``,
``model.layer2[0].conv1``, ``model.layer3``, ``model.fc``::

    from flax import nnx
    from resnet_jax.models.nnx import create_model

    model = create_model("resnet50", rngs=nnx.Rngs(0))   # in eval mode
    logits = model(images)                              # running BatchNorm statistics
    model.train()                                       # batch statistics, stochastic depth

As Flax's NNX tutorial writes its steps: ``model(images, rngs)`` (the rngs, optional, feed
the dropout layers), ``nnx.view(model, deterministic=False, use_running_average=False)``
for training and ``nnx.view(model, deterministic=True, use_running_average=True)`` for
evaluation (every model has a head dropout, ``drop_rate``, 0 by default, so
``deterministic`` is always a known view key).

Linen variables (torchvision weights, a run's checkpoint) load into them and come back
unchanged: :func:`load_variables`, :func:`linen_variables`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

from resnet_jax.errors import ArgumentError, ResNetWarning
from resnet_jax.models import blocks, resnet, table


class _Layers:
    """Makes the layers of one network, with its dtypes, BatchNorm axis and rngs."""

    def __init__(self, spec: resnet.ResNet, rngs: nnx.Rngs):
        self.spec, self.rngs = spec, rngs

    def conv(self, in_features: int, out_features: int, size: int, strides: int = 1,
             groups: int = 1) -> nnx.Conv:
        return nnx.Conv(in_features, out_features, (size, size), (strides, strides),
                        padding=blocks.pad(size), feature_group_count=groups, use_bias=False,
                        dtype=self.spec.dtype, param_dtype=self.spec.param_dtype,
                        kernel_init=blocks.conv_kernel_init, rngs=self.rngs)

    def norm(self, features: int, last_in_block: bool = False) -> nnx.BatchNorm:
        zero = last_in_block and self.spec.zero_init_residual
        return nnx.BatchNorm(features, use_running_average=True, momentum=0.9, epsilon=1e-5,
                             use_fast_variance=False, axis_name=self.spec.bn_axis_name,
                             dtype=self.spec.dtype, param_dtype=self.spec.param_dtype,
                             scale_init=blocks.last_bn_scale_init(zero), rngs=self.rngs)

    def linear(self, in_features: int, out_features: int) -> nnx.Linear:
        return nnx.Linear(in_features, out_features, dtype=self.spec.dtype,
                          param_dtype=self.spec.param_dtype,
                          kernel_init=blocks.dense_kernel_init,
                          bias_init=blocks.torch_linear_bias_init(in_features), rngs=self.rngs)

    def drop_path(self, rate: float) -> nnx.Dropout | None:
        """timm's DropPath: nnx.Dropout of whole examples (one draw per example)."""
        return self.dropout(rate, "drop_path_rate", broadcast_dims=(1, 2, 3)) if rate else None

    def dropout(self, rate: float, field: str, broadcast_dims: tuple[int, ...] = ()
                ) -> nnx.Dropout:
        """An nnx.Dropout in eval mode (deterministic), drawing from the ``dropout`` stream
        of the rngs, else their ``default`` one, unless rngs are given at the call."""
        stream = next((name for name in ("dropout", "default") if name in self.rngs), None)
        if stream is None and rate:
            raise ArgumentError(f"{field} needs a 'dropout' (or 'default') stream in rngs: "
                                "pass rngs=nnx.Rngs(0) or nnx.Rngs(params=0, dropout=1)")
        return nnx.Dropout(rate, broadcast_dims=broadcast_dims, deterministic=True,
                           rngs=self.rngs[stream] if stream else None)


class _Block(nnx.Module):
    """What both block types share: the shortcut, stochastic depth, the residual sum."""

    expansion = 1

    def __init__(self, in_features: int, features: int, strides: int, make: _Layers,
                 drop_path: float):
        out_features = features * self.expansion
        self.residual, self.strides, self.out_features = (make.spec.residual, strides,
                                                          out_features)
        reshaped = strides != 1 or in_features != out_features
        projection = reshaped and make.spec.shortcut == "projection"
        self.option_a = reshaped and not projection
        self.downsample_conv = nnx.data(
            make.conv(in_features, out_features, 1, strides) if projection else None)
        self.downsample_bn = nnx.data(make.norm(out_features) if projection else None)
        self.drop_path = nnx.data(make.drop_path(drop_path))

    def shortcut(self, x: jax.Array) -> jax.Array:
        if self.downsample_conv is not None:
            return self.downsample_bn(self.downsample_conv(x))
        if self.option_a:
            return blocks.option_a_shortcut(x, self.out_features, self.strides)
        return x

    def add_shortcut(self, y: jax.Array, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
        """relu(y + shortcut(x)), or relu(y) in the plain network."""
        if self.residual:
            if self.drop_path is not None:
                y = self.drop_path(y, rngs=rngs)
            y = y + self.shortcut(x)
        return nnx.relu(y)


class BasicBlock(_Block):
    """Two 3x3 conv-BN layers and a residual connection (ResNet-18/34, CIFAR nets)."""

    def __init__(self, in_features: int, features: int, strides: int, make: _Layers,
                 drop_path: float = 0.0):
        blocks.check_basic_block(make.spec.groups, make.spec.width_per_group)
        self.conv1 = make.conv(in_features, features, 3, strides)
        self.bn1 = make.norm(features)
        self.conv2 = make.conv(features, features, 3)
        self.bn2 = make.norm(features, last_in_block=True)
        super().__init__(in_features, features, strides, make, drop_path)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        return self.add_shortcut(self.bn2(self.conv2(y)), x, rngs)


class Bottleneck(_Block):
    """1x1 reduce, 3x3 (strided, grouped or wider as torchvision's), 1x1 expand x4."""

    expansion = 4

    def __init__(self, in_features: int, features: int, strides: int, make: _Layers,
                 drop_path: float = 0.0):
        spec = make.spec
        width = blocks.bottleneck_width(features, spec.groups, spec.width_per_group)
        self.conv1 = make.conv(in_features, width, 1)
        self.bn1 = make.norm(width)
        self.conv2 = make.conv(width, width, 3, strides, groups=spec.groups)
        self.bn2 = make.norm(width)
        self.conv3 = make.conv(width, features * self.expansion, 1)
        self.bn3 = make.norm(features * self.expansion, last_in_block=True)
        super().__init__(in_features, features, strides, make, drop_path)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        return self.add_shortcut(self.bn3(self.conv3(y)), x, rngs)


class Stage(nnx.List):
    """The blocks of one stage (torchvision's ``layer1``...), indexable and callable; with
    ``remat``, each block recomputed in the backward pass."""

    def __init__(self, blocks: list[_Block], remat: bool = False):
        super().__init__(blocks)
        self.remat = nnx.static(remat)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        for block in self:
            x = nnx.remat(_call_block)(block, x, rngs) if self.remat else block(x, rngs)
        return x


def _call_block(block: _Block, x: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
    return block(x, rngs)


_BLOCKS = {blocks.BasicBlock: BasicBlock, blocks.Bottleneck: Bottleneck}


class ResNet(nnx.Module):
    """A ResNet as an NNX module, built from a linen :class:`resnet_jax.models.ResNet`'s
    fields (``spec``): the same layers, options and validation.

    Attributes as torchvision's: ``conv1``, ``bn1``, ``layer1``... (each a :class:`Stage`
    of blocks: ``layer2[0].conv1``, ``layer2[0].downsample_conv``), ``fc`` (None when
    headless or giving features). ``model(x)`` takes a float NHWC batch and returns what
    ``spec.output`` says: logits, the pooled features (``num_classes=0``) or the dict of
    stage outputs. Made in eval mode; ``model.train()`` switches BatchNorm to batch
    statistics (updating the running ones in place) and turns stochastic depth on.
    """

    def __init__(self, spec: resnet.ResNet, *, rngs: nnx.Rngs):
        spec.check_options()
        if spec.block_cls not in _BLOCKS:
            raise ArgumentError(f"block_cls must be resnet_jax.models.BasicBlock or Bottleneck; "
                             f"got {spec.block_cls!r}")
        make = _Layers(spec, rngs)
        self.spec = nnx.static(spec)
        width = spec.stage_widths[0]
        imagenet = spec.stem == "imagenet"
        self.conv1 = make.conv(spec.input_channels, width, 7 if imagenet else 3,
                               2 if imagenet else 1)
        self.bn1 = make.norm(width)
        block_cls, rates = _BLOCKS[spec.block_cls], iter(spec.drop_path_rates)
        for stage, (num_blocks, features) in enumerate(
                zip(spec.stage_sizes, spec.stage_widths, strict=True)):
            stage_blocks = []
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                stage_blocks.append(block_cls(width, features, strides, make, next(rates)))
                width = features * block_cls.expansion
            setattr(self, f"layer{stage + 1}", Stage(stage_blocks, spec.remat))
        headless = not spec.num_classes or spec.output == "features"
        self.dropout = make.dropout(0.0 if headless else spec.drop_rate, "drop_rate")
        self.fc = nnx.data(None if headless else make.linear(width, spec.num_classes))

    @property
    def training(self) -> bool:
        """True in train mode (batch statistics), False in eval mode."""
        return not self.bn1.use_running_average

    def stem(self, x: jax.Array) -> jax.Array:
        """conv1, bn1, relu and (ImageNet stem) the max-pool: the ``stem`` feature."""
        self.spec.check_images(x)
        x = nnx.relu(self.bn1(self.conv1(jnp.asarray(x, self.spec.dtype))))
        if self.spec.stem == "imagenet":
            x = nnx.max_pool(x, (3, 3), (2, 2), padding=blocks.pad(3))
        return x

    def features(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> dict[str, jax.Array]:
        """Every stage's output, keyed ``stem``, ``layer1``... (as ``output="features"``)."""
        x = self.stem(x)
        features = {"stem": x}
        for name in self.spec.stage_names[1:]:
            x = features[name] = getattr(self, name)(x, rngs)
        return features

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None
                 ) -> jax.Array | dict[str, jax.Array]:
        """``rngs`` (optional, as Flax's NNX tutorial passes them) feed the dropout layers
        in train mode, in place of the streams the model was made with."""
        if rngs is not None and not isinstance(rngs, nnx.Rngs):
            raise ArgumentError(f"rngs must be an nnx.Rngs (or None), as model(x, rngs); got "
                                f"{type(rngs).__name__}")
        if rngs is not None and not ("dropout" in rngs or "default" in rngs):
            raise ArgumentError("rngs feed the dropout layers from their 'dropout' (or "
                                "'default') stream, which these lack: pass nnx.Rngs(0) or "
                                "nnx.Rngs(dropout=1)")
        features = self.features(x, rngs)
        if self.spec.output == "features":
            return {name: features[name] for name in self.spec.feature_stages
                    or self.spec.stage_names}
        pooled = jnp.mean(features[self.spec.stage_names[-1]], axis=(1, 2))
        if self.fc is None:
            return jnp.asarray(pooled, jnp.float32)
        return jnp.asarray(self.fc(self.dropout(pooled, rngs=rngs)), jnp.float32)


def create_model(name: str, *, rngs: nnx.Rngs | None = None,
                 variables: dict[str, Any] | None = None, **overrides: Any) -> ResNet:
    """The model ``name`` (see :func:`resnet_jax.list_models`) as an NNX module, in eval
    mode, its variables drawn from ``rngs`` (the ``dropout`` stream, or ``default``, also
    feeds stochastic depth), or taken from linen ``variables`` ({'params',
    'batch_stats'}: from ``resnet_jax.pretrained``, ``from_torchvision`` or
    ``resnet_jax.restore``). ``overrides`` are :class:`resnet_jax.models.ResNet` fields.
    """
    if not isinstance(rngs, nnx.Rngs):
        raise ArgumentError(f"rngs must be an nnx.Rngs, e.g. rngs=nnx.Rngs(0); got {rngs!r}")
    model = ResNet(table.create_model(name, **overrides), rngs=rngs)
    if variables is not None:
        load_variables(model, variables)
    return model


def _linen_path(path: tuple[Any, ...]) -> tuple[str, ...]:
    """('layer2', 0, 'conv1', 'kernel') -> ('layer2_0', 'conv1', 'kernel')."""
    names: list[str] = []
    for part in path:
        if isinstance(part, int):
            names[-1] = f"{names[-1]}_{part}"
        else:
            names.append(str(part))
    return tuple(names)


def _flat(model: ResNet, kind: type[nnx.Variable]) -> dict[tuple[Any, ...], Any]:
    return traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, kind)))


_COLLECTIONS = (("params", nnx.Param), ("batch_stats", nnx.BatchStat))


def linen_variables(model: ResNet) -> dict[str, Any]:
    """The model's variables in linen's form: ``{'params': ..., 'batch_stats': ...}``,
    for ``resnet_jax.models`` and ``resnet_jax.models.torch_compat.to_torchvision``."""
    _check_nnx_model("linen_variables", model)
    return {collection: traverse_util.unflatten_dict(
                {_linen_path(path): value for path, value in _flat(model, kind).items()})
            for collection, kind in _COLLECTIONS}


def load_variables(model: ResNet, variables: dict[str, Any]) -> None:
    """Replace the model's parameters and batch statistics by linen ``variables``, cast to
    the model's ``param_dtype`` (a ResNetWarning says so once); ArgumentError naming the
    first array whose name or shape differs. A classifier's ``fc`` is left out, with a
    warning, when the model has none (headless, features)."""
    _check_nnx_model("load_variables", model)
    if isinstance(variables, Mapping) and any("." in str(key) for key in variables):
        raise ArgumentError("the variables are a PyTorch state_dict (keys such as "
                         f"{next(iter(variables))!r}); convert them first with "
                         "resnet_jax.models.torch_compat.from_torchvision(state_dict, name)")
    if not isinstance(variables, Mapping) or "params" not in variables:
        given = list(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ArgumentError("variables must be {'params': ..., 'batch_stats': ...}, as model.init, "
                         f"resnet_jax.pretrained and resnet_jax.restore give; got {given}")
    params = dict(variables["params"])
    if model.fc is None and "fc" in params:
        del params["fc"]
        warnings.warn(ResNetWarning("the model has no classifier (num_classes=0 or "
                                    "output='features'): the variables' fc is left out"),
                      stacklevel=2)
    if not variables.get("batch_stats"):
        raise ArgumentError("the variables hold no batch_stats (BatchNorm's running mean and "
                            "variance): pass {'params': ..., 'batch_stats': ...} whole, as "
                            "model.init, resnet_jax.pretrained and resnet_jax.restore give them")
    given = {"params": params, "batch_stats": variables["batch_stats"]}
    expected, given_flat = {}, {}
    for collection, kind in _COLLECTIONS:
        ours = {(collection, *_linen_path(p)): v for p, v in _flat(model, kind).items()}
        theirs = {(collection, *p): v
                  for p, v in traverse_util.flatten_dict(dict(given[collection])).items()}
        _check_same_arrays(collection, {p[1:]: v for p, v in ours.items()},
                           {p[1:]: v for p, v in theirs.items()})
        expected.update(ours)
        given_flat.update(theirs)
    cast = blocks.cast_variables(given_flat, expected, "the variables")
    for collection, kind in _COLLECTIONS:
        state = nnx.state(model, kind)
        nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(
            {path: jnp.asarray(cast[(collection, *_linen_path(path))])
             for path in _flat(model, kind)}))
        nnx.update(model, state)


def _check_nnx_model(function: str, model: Any) -> None:
    if not isinstance(model, ResNet):
        raise ArgumentError(f"{function} takes a resnet_jax.nnx model; got a "
                            f"{type(model).__module__}.{type(model).__name__} (a linen model "
                            "holds no variables: they are what its init returns)")


def _check_same_arrays(collection: str, expected: dict[tuple[str, ...], Any],
                       given: dict[tuple[str, ...], Any]) -> None:
    for path in sorted(set(expected) | set(given)):
        name = "/".join((collection, *path))
        if path not in given and path[0] == "fc" and not any(p[0] == "fc" for p in given):
            raise ArgumentError(f"the variables lack {name}: they hold no classifier (a headless "
                             "model's); create the model with num_classes=0 (or "
                             "output='features'), or give a classifier's variables")
        if path not in given:
            raise ArgumentError(f"the variables lack {name}; they are not this model's "
                             "(another family or depth?)")
        if path not in expected:
            raise ArgumentError(f"the variables hold {name}, which this model does not have "
                             "(another family or depth?)")
        if jnp.shape(given[path]) != jnp.shape(expected[path]):
            hint = ("pass the num_classes the variables were made for" if path[0] == "fc"
                    else "they are not this model's (another family, depth or width?)")
            raise ArgumentError(f"{name} has shape {jnp.shape(given[path])}, the model "
                             f"{jnp.shape(expected[path])}; {hint}")
