"""ResNet-50 on ImageNet, the standard large-batch recipe (Goyal et al. 2017, with the
cosine schedule, label smoothing and no BN/bias decay of He et al. 2019, "Bag of Tricks"):
global batch 1024, SGD momentum 0.9, lr 0.1 x batch/256, 5 epochs of linear warm-up then
cosine, 90 epochs, weight decay 1e-4, label smoothing 0.1, bfloat16 compute.

Step counts and cadences are derived from epochs here, when the config is built, so a
run can be cut short from the command line (--config.num_train_steps=...)."""

import os

from configs import base

TRAIN_EXAMPLES = 1_281_167  # ImageNet-1k (ILSVRC 2012) training images
EPOCHS = 90
WARMUP_EPOCHS = 5


def train_epochs(config, batch_size: int, epochs: int) -> int:
    """Set ``config`` to ``epochs`` of ImageNet at global ``batch_size``, evaluating and
    saving once an epoch; the steps an epoch takes."""
    config.batch_size = batch_size
    steps_per_epoch = TRAIN_EXAMPLES // batch_size
    config.num_train_steps = epochs * steps_per_epoch
    config.eval_every_steps = steps_per_epoch
    config.checkpoint_every_steps = steps_per_epoch
    return steps_per_epoch


def get_config(model: str = "resnet50"):
    config = base.get_config(model)
    config.num_classes = 1000
    config.dtype = "bfloat16"
    config.dataset = "imagenet2012"  # or "folder:PATH" (PATH/train/<class>/, PATH/val/<class>/)
    config.pipeline = "streaming"
    config.image_size = 224  # random-resized crops; evaluation: resize 256, centre crop 224
    config.eval_resize = 256
    config.data_workers = max(1, (os.cpu_count() or 2) - 2)
    config.eval_batch_size = 1024
    steps_per_epoch = train_epochs(config, 1024, EPOCHS)
    config.log_every_steps = 100
    config.learning_rate = 0.1 * config.batch_size / 256
    config.schedule = "cosine"
    config.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
    config.lr_boundaries = ()
    config.lr_scales = ()
    config.weight_decay = 1e-4
    config.decay_norm = False
    config.decay_bias = False
    config.label_smoothing = 0.1
    config.steps_per_call = 1  # a streamed batch is large: one per compiled call
    return config
