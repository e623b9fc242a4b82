"""The base of every config: each key with its default, which is the paper's CIFAR-10 recipe
(He et al. 2015, section 4.2, shared by ResNet-20/32/44/56/110); the other configs change
some keys of it."""

import ml_collections


def get_config(model: str = "resnet20") -> ml_collections.ConfigDict:
    """Batch 128, SGD momentum 0.9, wd 1e-4, lr 0.1 / 10 at 32k and 48k, stop at 64k."""
    config = ml_collections.ConfigDict()
    config.model = model
    config.num_classes = 10
    config.residual = True  # False: the plain counterpart (degradation experiment)
    config.zero_init_residual = False
    config.drop_path_rate = 0.0  # stochastic depth (timm's), rising linearly to the last block
    config.drop_rate = 0.0  # dropout of the pooled features before the classifier (timm's)
    config.remat = False  # True: each block recomputed in the backward pass (less memory)
    config.profile_steps = (0, 0)  # (FIRST, LAST): a jax.profiler trace of those steps
    config.init_from = ""  # fine-tune: IMAGENET1K_V1 (a torchvision name), PATH.pth or a run
    config.init_from_raw = False  # init_from a run keeping a moving average: its trained weights
    config.dtype = "float32"  # or "bfloat16" (compute; parameters stay float32)

    config.dataset = "cifar10"  # TFDS name, "folder:PATH", "cifar:PATH" or "synthetic"
    config.data_dir = ""  # TFDS data_dir ("" for TFDS's default)
    config.synthetic_examples = (1024, 256)  # train, test (dataset="synthetic" only)
    config.pipeline = "in_memory"  # the whole dataset on every device; or "streaming"
    config.image_size = 32  # in_memory: the data's size; streaming: the crops' size
    config.eval_resize = 32  # streaming: shorter side resized to this, then centre crop...
    config.eval_image_size = 0  # ...of this side (0: image_size, the training crop)
    config.min_image_size = 0  # streaming: > 0, training crops grow from this to image_size...
    config.ramp_steps = (0, 0)  # ...between these steps, in multiples of 32 (FFCV's)
    config.data_workers = 0  # streaming: decoding processes (0: a thread of the trainer)
    config.augment = True  # in_memory: pad 4 + random crop + flip; streaming: resized crop + flip
    config.auto_augment = ""  # streaming: "ta_wide" (TrivialAugmentWide) or "ra" (RandAugment)
    config.ra_magnitude = 9  # RandAugment's magnitude bin, 0-30
    config.ra_reps = 1  # > 1: repeated augmentation (torchvision's RASampler), copies a batch
    config.eval_flip = False  # True: logits averaged over each test image and its mirror

    config.batch_size = 128  # global, over all devices
    config.eval_batch_size = 1000
    config.num_train_steps = 64_000
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 2_000
    config.log_every_steps = 100
    config.keep_checkpoints = 3  # the latest N, plus the best by test accuracy

    config.optimizer = "sgd"  # "sgd", "adam" or "adamw"
    config.momentum = 0.9
    config.nesterov = False
    config.learning_rate = 0.1
    config.schedule = "piecewise"  # "piecewise", "cosine", "linear" (to 0) or "onecycle"
    config.lr_boundaries = (32_000, 48_000)  # piecewise: steps where the rate is scaled...
    config.lr_scales = (0.1, 0.1)  # ...by these factors
    config.warmup_steps = 0  # piecewise, cosine and linear: a linear warm-up...
    config.warmup_start_factor = 0.0  # ...from this fraction of the rate (torchvision's: 0.01)
    config.weight_decay = 1e-4  # added to the gradient, as PyTorch's SGD does
    config.decay_norm = True  # False: no weight decay on BatchNorm's scale and bias...
    config.decay_bias = True  # ...or on the classifier's bias
    config.label_smoothing = 0.0
    config.random_erasing = 0.0  # the probability of torchvision's RandomErasing, per image
    config.mixup_alpha = 0.0  # > 0: MixUp of each batch with Beta(alpha, alpha)...
    config.cutmix_alpha = 0.0  # ...or CutMix; with both, one of the two per batch
    config.ema_decay = 0.0  # > 0: a moving average of the weights, evaluated beside them...
    config.ema_every_steps = 1  # ...updated every this many steps (as torchvision's)
    config.sync_batch_stats = True  # False: per-device BN statistics, as PyTorch DDP
    config.parallel = "pmap"  # or "shard_map": the same per-device step over a jax Mesh
    config.steps_per_call = 100  # train steps per compiled call, at most (host events end one)

    config.log_grad_norms = False  # per-stage gradient norms in the metrics
    config.compile_cache_dir = ""  # a directory: compiled programs kept for restarts
    config.peak_tflops = 0.0  # one device's peak, for mfu; 0: the known peak of its kind
    config.seed = 0
    return config
