"""ResNet in JAX/Flax linen, with exact torchvision weight parity."""

from resnet_jax.models import BasicBlock, Bottleneck, ResNet, create_model, list_models


def __getattr__(name: str):
    if name == "restore":  # imported on first use: Orbax is not needed for the models alone
        from resnet_jax.checkpoints import restore

        return restore
    raise AttributeError(f"module 'resnet_jax' has no attribute {name!r}")


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models", "restore"]
