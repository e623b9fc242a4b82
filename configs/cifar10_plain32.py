"""Plain-32 on CIFAR-10: ResNet-32 without its shortcuts, the paper's recipe (degradation)."""

from configs import base


def get_config():
    config = base.get_config("resnet32")
    config.residual = False
    return config
