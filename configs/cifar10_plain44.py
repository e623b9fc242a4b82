"""Plain-44 on CIFAR-10: ResNet-44 without its shortcuts, the paper's recipe (degradation)."""

from configs import base


def get_config():
    config = base.get_config("resnet44")
    config.residual = False
    return config
