"""ResNet in JAX/Flax linen, with exact torchvision weight parity."""

from resnet_jax.models import BasicBlock, Bottleneck, ResNet, create_model, list_models


def __getattr__(name: str):
    # Imported on first use: Orbax and the image libraries are not needed for the models alone.
    if name == "restore":
        from resnet_jax.checkpoints import restore

        return restore
    if name == "pretrained":
        from resnet_jax.weights import pretrained

        return pretrained
    if name in ("weights", "nnx"):
        import importlib

        return importlib.import_module(f"resnet_jax.{name}")
    raise AttributeError(f"module 'resnet_jax' has no attribute {name!r}")


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models", "pretrained",
           "restore"]
