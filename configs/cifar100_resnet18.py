"""CIFAR-stem ResNet-18 on CIFAR-100, the same recipe as on CIFAR-10."""

from configs import cifar10_resnet18


def get_config():
    config = cifar10_resnet18.get_config()
    config.dataset = "cifar100"
    config.num_classes = 100
    return config
