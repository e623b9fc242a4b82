"""ResNet in JAX/Flax (linen and NNX), with exact torchvision weight parity."""

import importlib
import importlib.util

# Each name is imported on first use: the command lines start (and take stop signals) before
# JAX loads, and Orbax and the image libraries are not needed for the models alone.
_HOMES = {"BasicBlock": "models", "Bottleneck": "models", "ResNet": "models",
          "create_model": "models", "list_models": "models", "restore": "checkpoints",
          "pretrained": "weights"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"resnet_jax.{_HOMES[name]}"), name)
    if importlib.util.find_spec(f"resnet_jax.{name}") is not None:  # resnet_jax.errors...
        return importlib.import_module(f"resnet_jax.{name}")
    raise AttributeError(f"module 'resnet_jax' has no attribute {name!r}")


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models", "pretrained",
           "restore"]
