"""ResNet-50 on ImageNet with torchvision's V2 recipe, the one behind its IMAGENET1K_V2
weights (80.858% top-1). The values, one by one, from torchvision's
references/classification (the README's ResNet-50 command and train.py's defaults):

- 8 GPUs x --batch-size 128: global batch 1024; SGD, momentum 0.9 (default), --lr 0.5
- --lr-scheduler cosineannealinglr after --lr-warmup-epochs 5 --lr-warmup-method linear,
  starting at --lr-warmup-decay 0.01 (default) x lr; --epochs 600
- --weight-decay 2e-5, --norm-weight-decay 0.0 (biases keep the weight decay)
- --label-smoothing 0.1, --mixup-alpha 0.2, --cutmix-alpha 1.0
- --auto-augment ta_wide (TrivialAugmentWide), --random-erase 0.1
- --ra-sampler --ra-reps 4 (repeated augmentation)
- --model-ema, --model-ema-steps 32, --model-ema-decay 0.99998 (defaults), adjusted by
  world size x batch size x ema steps / epochs
- --train-crop-size 176, --val-resize-size 232, --val-crop-size 224 (default), bilinear

Where this differs from the source (see the README's "Modern ImageNet recipes"): the
schedule, the warm-up and the EMA updates count steps where torchvision counts epochs
and each epoch's batches; compute is bfloat16 (torchvision's command runs float32).
"""

from configs import imagenet_resnet50
from resnet_jax.train.ema import torchvision_decay

EPOCHS = 600
WARMUP_EPOCHS = 5
EMA_STEPS = 32


def get_config(model: str = "resnet50"):
    config = imagenet_resnet50.get_config(model)
    steps_per_epoch = imagenet_resnet50.train_epochs(config, 8 * 128, EPOCHS)
    config.learning_rate = 0.5
    config.schedule = "cosine"
    config.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
    config.warmup_start_factor = 0.01
    config.weight_decay = 2e-5
    config.decay_norm = False
    config.decay_bias = True
    config.label_smoothing = 0.1
    config.mixup_alpha = 0.2
    config.cutmix_alpha = 1.0
    config.auto_augment = "ta_wide"
    config.random_erasing = 0.1
    config.ra_reps = 4
    config.ema_every_steps = EMA_STEPS
    config.ema_decay = torchvision_decay(0.99998, config.batch_size, EMA_STEPS, EPOCHS)
    config.image_size = 176
    config.eval_resize = 232
    config.eval_image_size = 224
    return config
