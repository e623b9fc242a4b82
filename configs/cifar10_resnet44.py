"""ResNet-44 on CIFAR-10, the paper's recipe (configs/paper_cifar.py)."""

from configs import paper_cifar


def get_config():
    return paper_cifar.get_config("resnet44")
