"""The models: linen ResNets built by name (:func:`create_model`), their blocks, the NNX
twins (:mod:`resnet_jax.models.nnx`), the torchvision conversion
(:mod:`resnet_jax.models.torch_compat`) and the layer table
(:mod:`resnet_jax.models.layer_table`)."""

from resnet_jax.models.blocks import (
                                      BasicBlock,
                                      Bottleneck,
                                      ResidualBlock,
                                      bottleneck_width,
                                      cast_variables,
                                      check_basic_block,
                                      relation_problems,
)
from resnet_jax.models.resnet import ResNet
from resnet_jax.models.table import (
                                      IMAGENET_DEPTHS,
                                      MODELS,
                                      build_model,
                                      create_model,
                                      list_models,
                                      variable_shapes,
                                      variables_problem,
)

__all__ = ["IMAGENET_DEPTHS", "MODELS", "BasicBlock", "Bottleneck", "ResNet", "ResidualBlock",
           "bottleneck_width", "build_model", "cast_variables", "check_basic_block",
           "create_model", "list_models", "relation_problems", "variable_shapes",
           "variables_problem"]
