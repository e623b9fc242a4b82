"""The in-memory pipeline: the whole uint8 dataset resident on every device.

The host sends index arrays only; each step gathers its batch on the device,
pads and crops it at random, flips half of it and normalises it, fused into the
compiled step. The batch order is a function of (seed, step), and each
augmentation draw of (seed, step, the example's place in the global batch), so
any number of devices and processes sees the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.data.pipelines.base import Batch, Pipeline, normalize, train_indices
from resnet_jax.data.pipelines.datasets import Dataset
from resnet_jax.parallel import process_share


class InMemory(Pipeline):
    """``dataset`` held on every device; pad-4 crop and flip when ``augment``; each example
    ``repeats`` times a batch where repeated augmentation is asked for."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, augment: bool,
                 dtype: str = "float32", repeats: int = 1):
        self.dataset, self.repeats = dataset, repeats
        self.image_shape = self.eval_image_shape = dataset.train.images.shape[1:]
        self.num_classes = dataset.num_classes
        self.class_names = list(dataset.class_names)
        self.train_examples = len(dataset.train)
        self.eval_examples = len(dataset.test)
        self.batch_size = batch_size
        self.mean, self.std = dataset.mean, dataset.std
        self.seed, self.augment, self.dtype = seed, augment, jnp.dtype(dtype)

    def resident(self) -> Batch:
        return {"train_images": self.dataset.train.images,
                "train_labels": self.dataset.train.labels,
                "test_images": self.dataset.test.images, "test_labels": self.dataset.test.labels}

    def train_batches(self, step: int, count: int) -> Batch:
        indices = np.stack([train_indices(self.seed, s, self.batch_size, self.train_examples,
                                          self.repeats) for s in range(step, step + count)])
        return {"indices": process_share(indices, axis=1)}

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        for indices, mask in eval_batches(self.eval_examples, batch_size):
            yield {"indices": process_share(indices), "mask": process_share(mask)}

    def prepare(self, resident: Batch, batch: Batch, key: jax.Array,
                positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        images = resident["train_images"][batch["indices"]]
        if self.augment:
            images = augment(images, key, positions)
        return (normalize(images, self.mean, self.std, self.dtype),
                resident["train_labels"][batch["indices"]])

    def prepare_eval(self, resident: Batch, batch: Batch) -> tuple[jnp.ndarray, jnp.ndarray]:
        return (normalize(resident["test_images"][batch["indices"]], self.mean, self.std,
                          self.dtype), resident["test_labels"][batch["indices"]])


def eval_batches(num_examples: int, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(indices, mask) per eval batch: every example once, the last batch padded and masked."""
    batches = []
    for start in range(0, num_examples, batch_size):
        indices = np.arange(start, start + batch_size)
        mask = indices < num_examples
        batches.append((np.where(mask, indices, 0).astype(np.int32), mask.astype(np.float32)))
    return batches


def augmentation_draws(key: jax.Array, positions: jnp.ndarray,
                       pad: int = 4) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per example: the crop offset (dy, dx) in [0, 2 * pad] and whether to flip.

    Each draw depends on ``key`` and the example's position in the global batch,
    so any number of devices, or another framework, can make the same draws.
    """
    def one(position: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        crop_key, flip_key = jax.random.split(jax.random.fold_in(key, position))
        return (jax.random.randint(crop_key, (2,), 0, 2 * pad + 1),
                jax.random.bernoulli(flip_key))

    return jax.vmap(one)(positions)


def augment(images: jnp.ndarray, key: jax.Array, positions: jnp.ndarray,
            pad: int = 4) -> jnp.ndarray:
    """Pad ``pad`` pixels (zeros), crop back at a random offset, flip half the images."""
    offsets, flips = augmentation_draws(key, positions, pad)
    height, width, channels = images.shape[1:]
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(image: jnp.ndarray, offset: jnp.ndarray, flip: jnp.ndarray) -> jnp.ndarray:
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flips)
