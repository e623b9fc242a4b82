"""Batch-level MixUp and CutMix on the device, as torchvision's ``transforms.v2.MixUp`` and
``CutMix`` (and its classification references' choice of one of the two per batch).

Each batch is mixed with itself rolled by one example: MixUp blends whole images with
weight ``lam ~ Beta(alpha, alpha)``; CutMix pastes a box of the rolled batch, centred on
a uniform pixel with sides ``sqrt(1 - lam)`` of the image's (clipped at the borders), and
weighs the labels by the area actually kept. Labels become soft targets; the dominant
label (the one weighted at least one half) is what train accuracy is counted against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resnet_jax.train.erasing import box_mask


def mixup(images: jnp.ndarray, targets: jnp.ndarray,
          lam: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(1 - lam) * rolled + lam * batch`` for the images and the targets alike."""
    rolled_images, rolled_targets = jnp.roll(images, 1, axis=0), jnp.roll(targets, 1, axis=0)
    return (rolled_images * (1.0 - lam) + images * lam,
            rolled_targets * (1.0 - lam) + targets * lam)


def cutmix_box(height: int, width: int, lam: jnp.ndarray, centre_y: jnp.ndarray,
               centre_x: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """torchvision's box: rows y1:y2, columns x1:x2, and the kept area's weight."""
    r = 0.5 * jnp.sqrt(1.0 - lam)
    half_w = jnp.floor(r * width).astype(jnp.int32)
    half_h = jnp.floor(r * height).astype(jnp.int32)
    x1, y1 = jnp.maximum(centre_x - half_w, 0), jnp.maximum(centre_y - half_h, 0)
    x2, y2 = jnp.minimum(centre_x + half_w, width), jnp.minimum(centre_y + half_h, height)
    kept = 1.0 - ((x2 - x1) * (y2 - y1)) / (width * height)
    return y1, y2, x1, x2, kept


def cutmix(images: jnp.ndarray, targets: jnp.ndarray, lam: jnp.ndarray, centre_y: jnp.ndarray,
           centre_x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The rolled batch's box pasted into each image (NHWC); the targets weighed by the area
    kept, which is returned too."""
    height, width = images.shape[1:3]
    y1, y2, x1, x2, kept = cutmix_box(height, width, lam, centre_y, centre_x)
    inside = box_mask(height, width, y1, y2, x1, x2)
    mixed = jnp.where(inside[None, :, :, None], jnp.roll(images, 1, axis=0), images)
    rolled_targets = jnp.roll(targets, 1, axis=0)
    return mixed, rolled_targets * (1.0 - kept) + targets * kept, kept


def mix(key: jax.Array, images: jnp.ndarray, labels: jnp.ndarray, num_classes: int,
        mixup_alpha: float, cutmix_alpha: float) -> tuple[jnp.ndarray, ...]:
    """MixUp or CutMix (either with probability one half where both alphas are set) of one
    batch: the images, the soft targets and the dominant labels."""
    choose, mixup_key, cutmix_key, y_key, x_key = jax.random.split(key, 5)
    targets = jax.nn.one_hot(labels, num_classes, dtype=images.dtype)
    height, width = images.shape[1:3]
    results = []
    if mixup_alpha:
        lam = jax.random.beta(mixup_key, mixup_alpha, mixup_alpha)
        results.append((*mixup(images, targets, lam), lam))
    if cutmix_alpha:
        lam = jax.random.beta(cutmix_key, cutmix_alpha, cutmix_alpha)
        centre_y = jax.random.randint(y_key, (), 0, height)
        centre_x = jax.random.randint(x_key, (), 0, width)
        results.append(cutmix(images, targets, lam, centre_y, centre_x))
    if len(results) == 2:
        use_cutmix = jax.random.bernoulli(choose)
        results = [jax.tree.map(lambda a, b: jnp.where(use_cutmix, b, a), *results)]
    mixed, soft, weight = results[0]
    dominant = jnp.where(weight >= 0.5, labels, jnp.roll(labels, 1, axis=0))
    return mixed, soft, dominant
