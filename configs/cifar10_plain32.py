"""Plain-32 on CIFAR-10: ResNet-32 without its shortcuts, the paper's recipe (degradation)."""

from configs import paper_cifar


def get_config():
    config = paper_cifar.get_config("resnet32")
    config.residual = False
    return config
