"""ResNet-50 on ImageNet in FFCV's fast recipe, ffcv-imagenet's rn50_88_epochs.yaml
(78.4% top-1 in 77 minutes on 8 A100s, its README's table). The values, one by one:

- 8 GPUs (world_size) x batch_size 512: global batch 4096; SGD, momentum 0.9, lr 1.7
- lr_schedule_type cyclic: from 1e-4 x lr, linearly up to lr at lr_peak_epoch 2 (default),
  then linearly down to 0 at the last of 88 epochs
- weight_decay 1e-4, none on BatchNorm's parameters (bn_wd 0; the classifier's bias keeps
  it); label_smoothing 0.1
- progressive resizing: min_res 160 until start_ramp epoch 65, then up to max_res 192 at
  end_ramp epoch 76, rounded to multiples of 32
- validation: resolution 256 from a centre crop of 224/256 of the image, lr_tta (logits of
  each image and its mirror)

Where this differs from the source (see docs/imagenet.md, "Where we differ from the sources"): no
BlurPool (use_blurpool 1 in FFCV); the resolution and the rate change by step where FFCV
changes them by epoch (the rate per iteration, as FFCV); evaluation resizes the shorter
side to 292 (256 / (224/256), rounded) then crops 256, where FFCV crops 224/256 of the
side then resizes to 256; test-time flips average the logits where FFCV sums them (the
same top-1); compute is bfloat16 (FFCV: float16 autocast).
"""

from configs import imagenet_resnet50

EPOCHS = 88
PEAK_EPOCH = 2
RAMP_EPOCHS = (65, 76)


def get_config(model: str = "resnet50"):
    config = imagenet_resnet50.get_config(model)
    steps_per_epoch = imagenet_resnet50.train_epochs(config, 8 * 512, EPOCHS)
    config.learning_rate = 1.7
    config.schedule = "linear"
    config.warmup_steps = PEAK_EPOCH * steps_per_epoch
    config.warmup_start_factor = 1e-4
    config.weight_decay = 1e-4
    config.decay_norm = False
    config.decay_bias = True
    config.label_smoothing = 0.1
    config.min_image_size = 160
    config.image_size = 192
    config.ramp_steps = tuple(epoch * steps_per_epoch for epoch in RAMP_EPOCHS)
    config.eval_resize = 292
    config.eval_image_size = 256
    config.eval_flip = True
    return config
