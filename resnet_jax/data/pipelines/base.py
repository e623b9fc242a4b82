"""The seam between data and step: what the trainer asks of an input pipeline.

Host side, a pipeline hands out this process's share of the batches of the
train steps from a given step on, and of the evaluation batches, as pytrees of
NumPy arrays. Device side, inside the compiled step, its ``prepare`` turns a
batch (and the arrays it keeps resident on every device) into normalised images
and labels. The step never knows where the data lives; the trainer never knows
how it is augmented.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, Any]


class Pipeline(abc.ABC):
    """An input pipeline for a run of global batch ``batch_size``.

    Attributes: ``image_shape`` (H, W, C) of the images the model trains on, and
    ``eval_image_shape`` of those it is evaluated on, ``num_classes`` and their
    ``class_names``, ``train_examples``, ``eval_examples``, and the dataset's
    per-channel ``mean`` and ``std`` on the 0..1 scale.
    """

    image_shape: tuple[int, int, int]
    eval_image_shape: tuple[int, int, int]
    num_classes: int
    class_names: list[str]
    train_examples: int
    eval_examples: int
    batch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def train_size(self, step: int) -> int:
        """The side of the training images of ``step`` (progressive resizing may vary it)."""
        return self.image_shape[0]

    @property
    def steps_per_epoch(self) -> int:
        return self.train_examples // self.batch_size

    @abc.abstractmethod
    def resident(self) -> Batch:
        """Host arrays to place on every device once, for the whole run (may be empty)."""

    @abc.abstractmethod
    def train_batches(self, step: int, count: int) -> Batch:
        """This process's share of the global batches of steps ``step`` to
        ``step + count - 1``: arrays of shape (count, local batch, ...)."""

    @abc.abstractmethod
    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """This process's share of each evaluation batch of ``batch_size`` (global):
        every example exactly once; ``batch['mask']`` is 1 for an example, 0 for padding."""

    @abc.abstractmethod
    def prepare(self, resident: Batch, batch: Batch, key: jax.Array,
                positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Device side: (normalised images, labels) of one train batch on one device.
        ``key`` is the step's random key, ``positions`` the examples' places in the
        global batch (so that augmentation draws do not depend on the device count)."""

    @abc.abstractmethod
    def prepare_eval(self, resident: Batch, batch: Batch) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Device side: (normalised images, labels) of one evaluation batch."""

    def get_state(self) -> dict[str, Any] | None:
        """What a checkpoint must keep beyond the train state to resume this pipeline
        exactly (JSON), or None; every process calls this together."""
        return None

    def set_state(self, state: dict[str, Any], step: int) -> None:  # noqa: B027
        """Resume from ``get_state()``'s value saved with the train state of ``step``."""

    def skipped_examples(self) -> int:
        """Unreadable examples skipped so far; every process calls this together."""
        return 0

    def close(self) -> None:  # noqa: B027 (optional: most pipelines hold nothing)
        """Release workers and files (nothing to release by default)."""


def step_key(seed: int, step: jnp.ndarray | int) -> jax.Array:
    """The random key of one train step's augmentation draws."""
    return jax.random.fold_in(jax.random.key(seed), step)


def normalize(images: jnp.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: jnp.dtype = jnp.float32) -> jnp.ndarray:
    """uint8 -> float, standardised per channel (``mean``, ``std`` on the 0..1 scale)."""
    mean = jnp.asarray(mean, jnp.float32) * 255.0
    std = jnp.asarray(std, jnp.float32) * 255.0
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


@functools.lru_cache(maxsize=2)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order of the training examples in one epoch: a function of (seed, epoch) alone."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)
    order.flags.writeable = False  # shared by every step of the epoch
    return order


def ramp_size(step: int, min_size: int, max_size: int, ramp: tuple[int, int]) -> int:
    """FFCV's progressive resizing (ffcv-imagenet's get_resolution), by step: ``min_size``
    up to step ``ramp[0]``, ``max_size`` from step ``ramp[1]``, between them the linear
    interpolation rounded to a multiple of 32."""
    start, end = ramp
    if step <= start:
        return min_size
    if step >= end:
        return max_size
    interpolated = np.interp([step], [start, end], [min_size, max_size])[0]
    return int(np.round(interpolated / 32)) * 32


def order_positions(step: int, batch_size: int, num_examples: int,
                    repeats: int = 1) -> tuple[int, np.ndarray]:
    """The epoch of ``step`` and, for each place in its global batch, the position in that
    epoch's order of the example it holds (an epoch's last partial batch is dropped).

    With ``repeats`` > 1 (repeated augmentation, torchvision's RASampler), the batches take
    the epoch's order with each example ``repeats`` times in a row, still
    ``num_examples // batch_size`` batches an epoch (so an epoch sees 1/repeats of the
    examples, each ``repeats`` times); a batch holds ``batch_size / repeats`` examples,
    their copies ``batch_size / repeats`` places apart, so that the devices sharing the
    batch get different copies (as RASampler deals the copies to different replicas)."""
    epoch, position = divmod(step, num_examples // batch_size)
    distinct = batch_size // repeats
    places = np.arange(batch_size)
    return epoch, position * distinct + places % distinct


def train_indices(seed: int, step: int, batch_size: int, num_examples: int,
                  repeats: int = 1) -> np.ndarray:
    """Indices of the examples of the global batch of ``step`` (see :func:`order_positions`)."""
    epoch, positions = order_positions(step, batch_size, num_examples, repeats)
    return epoch_permutation(seed, epoch, num_examples)[positions]
