"""ResNet-20 on CIFAR-10, the paper's recipe (configs/base.py)."""

from configs import base


def get_config():
    return base.get_config("resnet20")
