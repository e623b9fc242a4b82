"""ResNet in JAX/Flax linen, with exact torchvision weight parity."""

from resnet_jax.models import BasicBlock, Bottleneck, ResNet, create_model, list_models

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models"]
