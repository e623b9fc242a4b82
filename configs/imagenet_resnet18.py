"""ResNet-18 on ImageNet with the ResNet-50 recipe (configs/imagenet_resnet50.py)."""

from configs import imagenet_resnet50


def get_config():
    return imagenet_resnet50.get_config("resnet18")
