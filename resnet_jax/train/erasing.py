"""Random erasing on the device, after normalisation, as torchvision's
``transforms.RandomErasing(p)`` with its defaults (scale 2%-33% of the area, aspect
ratio 0.3-3.3, value 0): with probability ``p`` an image gets one box of zeros.

torchvision tries up to ten (area, log aspect ratio) draws and takes the first box that
fits inside the image, at a uniform position; none fitting leaves the image as it was.
The same ten draws are made here at once, from (seed, step, the example's place in the
global batch), so the result does not depend on how many devices share the batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SCALE = (0.02, 0.33)
RATIO = (0.3, 3.3)
ATTEMPTS = 10


def box_sides(height: int, width: int, area_fraction: jnp.ndarray,
              log_ratio: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """torchvision's box height and width for one draw: ``round(sqrt(area * ratio))`` and
    ``round(sqrt(area / ratio))`` (half to even, as Python's round)."""
    area = height * width * area_fraction
    ratio = jnp.exp(log_ratio)
    return (jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32),
            jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32))


def box_mask(height: int, width: int, top: jnp.ndarray, bottom: jnp.ndarray,
             left: jnp.ndarray, right: jnp.ndarray) -> jnp.ndarray:
    """(height, width) booleans: True on rows top:bottom, columns left:right (traced
    bounds, so the box may differ per example without recompiling)."""
    rows, columns = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    return (rows >= top) & (rows < bottom) & (columns >= left) & (columns < right)


def erase(image: jnp.ndarray, top: jnp.ndarray, left: jnp.ndarray, box_h: jnp.ndarray,
          box_w: jnp.ndarray) -> jnp.ndarray:
    """``image`` (H, W, C) with rows top:top+box_h, columns left:left+box_w set to 0."""
    inside = box_mask(*image.shape[:2], top, top + box_h, left, left + box_w)
    return jnp.where(inside[:, :, None], jnp.zeros((), image.dtype), image)


def random_erase(key: jax.Array, image: jnp.ndarray, probability: float) -> jnp.ndarray:
    """One image (H, W, C), erased as torchvision's RandomErasing(probability) would."""
    height, width = image.shape[:2]
    apply_key, area_key, ratio_key, top_key, left_key = jax.random.split(key, 5)
    fractions = jax.random.uniform(area_key, (ATTEMPTS,), minval=SCALE[0], maxval=SCALE[1])
    log_ratios = jax.random.uniform(ratio_key, (ATTEMPTS,), minval=math.log(RATIO[0]),
                                    maxval=math.log(RATIO[1]))
    heights, widths = box_sides(height, width, fractions, log_ratios)
    fits = (heights < height) & (widths < width)
    first = jnp.argmax(fits)
    box_h, box_w = heights[first], widths[first]
    top = jax.random.randint(top_key, (), 0, height - box_h + 1)
    left = jax.random.randint(left_key, (), 0, width - box_w + 1)
    erased = erase(image, top, left, box_h, box_w)
    chosen = jax.random.uniform(apply_key) < probability
    return jnp.where(chosen & jnp.any(fits), erased, image)
