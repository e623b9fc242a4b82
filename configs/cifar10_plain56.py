"""Plain-56 on CIFAR-10: ResNet-56 without its shortcuts, the paper's recipe (degradation)."""

from configs import base


def get_config():
    config = base.get_config("resnet56")
    config.residual = False
    return config
