"""A one-minute CPU check of the whole pipeline: synthetic data, ResNet-20."""

from configs import base


def get_config():
    config = base.get_config("resnet20")
    config.dataset = "synthetic"
    config.synthetic_examples = (512, 200)
    config.batch_size = 64
    config.eval_batch_size = 64
    config.num_train_steps = 40
    config.eval_every_steps = 20
    config.checkpoint_every_steps = 10
    config.log_every_steps = 5
    config.learning_rate = 0.05
    config.lr_boundaries = (30,)
    config.lr_scales = (0.1,)
    return config
