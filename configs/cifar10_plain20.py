"""Plain-20 on CIFAR-10: ResNet-20 without its shortcuts, the paper's recipe (degradation)."""

from configs import base


def get_config():
    config = base.get_config("resnet20")
    config.residual = False
    return config
