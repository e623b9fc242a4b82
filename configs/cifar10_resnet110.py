"""ResNet-110 on CIFAR-10: the paper's recipe, warmed up at lr 0.01 for 400 iterations."""

from configs import base


def get_config():
    config = base.get_config("resnet110")
    config.learning_rate = 0.01
    config.lr_boundaries = (400, 32_000, 48_000)
    config.lr_scales = (10.0, 0.1, 0.1)
    return config
