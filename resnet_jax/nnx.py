"""Every model as a Flax NNX module, through Flax's linen-to-NNX bridge.

The NNX form wraps the linen ResNet of :mod:`resnet_jax.models` (``flax.nnx.bridge.ToNNX``):
the same architecture, initialisation and variable names, so linen variables
(torchvision weights, a training run's checkpoint) load into it and back::

    from flax import nnx
    from resnet_jax.nnx import create_model

    model = create_model("resnet20", rngs=nnx.Rngs(0))
    logits = model(images, train=False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import bridge

from resnet_jax import models

# Variable names are independent of the image size (the pool is global): the variables
# are created on one small image.
_INIT_SIDE = 32


class ResNet(bridge.ToNNX):
    """A linen :class:`resnet_jax.models.ResNet` as an NNX module.

    ``model(x, train=False)``: inference with the running BatchNorm statistics.
    ``model(x, train=True)``: batch statistics, and the running ones updated in place.
    ``x`` is a float NHWC batch.
    """

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:  # type: ignore[override]
        return super().__call__(x, train=train, mutable=["batch_stats"] if train else False)


def create_model(name: str, *, rngs: nnx.Rngs, variables: dict[str, Any] | None = None,
                 **overrides: Any) -> ResNet:
    """The model ``name`` (see :func:`resnet_jax.list_models`) as an NNX module, its
    variables drawn from ``rngs``, or taken from linen ``variables`` ({'params',
    'batch_stats'}: from ``resnet_jax.pretrained``, ``from_torchvision`` or
    ``resnet_jax.restore``). ``overrides`` are :class:`resnet_jax.models.ResNet` fields.
    """
    linen_model = models.create_model(name, **overrides)
    model = ResNet(linen_model, rngs=rngs)
    sample = jnp.zeros((1, _INIT_SIDE, _INIT_SIDE, linen_model.input_channels), jnp.float32)
    bridge.lazy_init(model, sample)
    if variables is not None:
        load_variables(model, variables)
    return model


def linen_variables(model: ResNet) -> dict[str, Any]:
    """The model's variables in linen's form: ``{'params': ..., 'batch_stats': ...}``,
    for ``resnet_jax.models`` and ``resnet_jax.torch_compat.to_torchvision``."""
    return {"params": nnx.to_pure_dict(nnx.state(model, nnx.Param)),
            "batch_stats": nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))}


def load_variables(model: ResNet, variables: dict[str, Any]) -> None:
    """Replace the model's parameters and batch statistics by linen ``variables``;
    ValueError naming the first array whose name or shape differs."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        given = list(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError("variables must be {'params': ..., 'batch_stats': ...}, as model.init, "
                         f"resnet_jax.pretrained and resnet_jax.restore give; got {given}")
    for collection, kind in (("params", nnx.Param), ("batch_stats", nnx.BatchStat)):
        state = nnx.state(model, kind)
        _check_same_arrays(collection, nnx.to_pure_dict(state), variables.get(collection, {}))
        nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, dict(variables[collection])))
        nnx.update(model, state)


def _check_same_arrays(collection: str, expected: Any, given: Any) -> None:
    want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    got = dict(jax.tree_util.tree_flatten_with_path(given)[0])
    for path in sorted(set(want) | set(got), key=str):
        name = f"{collection}/{jax.tree_util.keystr(path, simple=True, separator='/')}"
        if path not in got:
            raise ValueError(f"the variables lack {name}; they are not this model's "
                             "(another depth or class count?)")
        if path not in want:
            raise ValueError(f"the variables hold {name}, which this model does not have")
        if jnp.shape(got[path]) != jnp.shape(want[path]):
            raise ValueError(f"{name} has shape {jnp.shape(got[path])}, the model "
                             f"{jnp.shape(want[path])}; pass num_classes (or the model) "
                             "the variables were made for")
