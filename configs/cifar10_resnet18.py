"""CIFAR-stem ResNet-18, the common PyTorch recipe: lr 0.1, wd 5e-4, cosine over 200 epochs."""

from configs import base

EPOCHS = 200
TRAIN_EXAMPLES = 50_000


def get_config():
    config = base.get_config("resnet18_cifar")
    steps_per_epoch = TRAIN_EXAMPLES // config.batch_size
    config.num_train_steps = EPOCHS * steps_per_epoch
    config.eval_every_steps = 5 * steps_per_epoch
    config.checkpoint_every_steps = 5 * steps_per_epoch
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    return config
