"""The streaming pipeline: images decoded and augmented on the host, by grain worker
processes, a few batches ahead of the devices.

Batches are addressed by step, as in the in-memory pipeline: the global batch of
step ``s`` is the same slice of the same seeded epoch permutation, each process
reads its contiguous share of it, and each example's crop and flip are drawn from
(seed, step, its place in the global batch). So any number of processes, devices
and workers sees the same batches, and a resumed run continues at its step. A file
that cannot be read is skipped: the next readable example of the epoch's order
takes its place (every batch keeps its size), it is named once in a warning, and
counted (``skipped_examples``, kept in the checkpoints).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image
from tqdm import tqdm

from resnet_jax.data.pipelines import autoaugment, images
from resnet_jax.data.pipelines.base import (
    Batch,
    Pipeline,
    epoch_permutation,
    normalize,
    order_positions,
    ramp_size,
)
from resnet_jax.data.pipelines.sources import Sources
from resnet_jax.errors import DataError
from resnet_jax.parallel import gather_json, process_slice
from resnet_jax.signals import ignore_stop_signals

MAX_UNREADABLE_IN_A_ROW = 100
LAST_STEP = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Transform:
    """What the host does to each image: crop sizes (training's, evaluation's resize and
    crop), seed, whether training augments."""

    image_size: int
    eval_resize: int
    seed: int
    augment: bool
    eval_image_size: int = 0  # 0: image_size
    repeats: int = 1  # repeated augmentation: each example this many times a batch
    min_image_size: int = 0  # progressive resizing from this training crop (0: none)...
    ramp_steps: tuple[int, int] = (0, 0)  # ...to image_size, between these steps
    auto_augment: str = ""  # "ta_wide" or "ra" after the crop and flip (autoaugment.POLICIES)
    ra_magnitude: int = 9  # RandAugment's magnitude bin

    def train_size(self, step: int) -> int:
        """The training crop of ``step``: image_size, or its progressive ramp."""
        if not self.min_image_size:
            return self.image_size
        return ramp_size(step, self.min_image_size, self.image_size, tuple(self.ramp_steps))


def _grain_flags_ready() -> None:
    """grain reads absl flags: outside an absl app (a notebook, a test), take the defaults."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _worker_init(index: int, count: int) -> None:
    """In each worker process: stop signals are the trainer's to handle (it closes the
    workers), and a worker whose trainer is gone (kill -9) exits."""
    ignore_stop_signals()
    trainer = os.getppid()

    def exit_when_orphaned() -> None:
        while os.getppid() == trainer:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()


@dataclasses.dataclass
class TrainBatch:
    """Step -> this process's share of that step's global batch (runs in the workers)."""

    source: Any
    transform: Transform
    batch_size: int
    first: int  # this process's first place in the global batch
    local: int

    def __call__(self, step: int) -> Batch:
        n = len(self.source)
        epoch, positions = order_positions(step, self.batch_size, n, self.transform.repeats)
        order = epoch_permutation(self.transform.seed, epoch, n)
        size = self.transform.train_size(step)
        batch = {"image": np.zeros((self.local, size, size, 3), np.uint8),
                 "label": np.zeros((self.local,), np.int32), "skipped": {}}
        for j in range(self.local):
            place = self.first + j
            rng = np.random.default_rng([self.transform.seed, step, place])
            image, batch["label"][j] = self._readable(order, positions[place],
                                                      batch["skipped"])
            if self.transform.augment:
                batch["image"][j] = images.train_crop(image, size, rng)
                if self.transform.auto_augment:
                    batch["image"][j] = autoaugment.augment(
                        batch["image"][j], self.transform.auto_augment, rng,
                        self.transform.ra_magnitude)
            else:
                batch["image"][j] = images.eval_crop(Image.fromarray(image),
                                                     self.transform.eval_resize, size)
        return batch

    def _readable(self, order: np.ndarray, at: int, skipped: dict[str, str]):
        """The image at ``at`` in the epoch's order, or the next readable one after it."""
        for offset in range(MAX_UNREADABLE_IN_A_ROW):
            data, label, name = self.source.read(int(order[(at + offset) % len(order)]))
            try:
                return images.decode_fast(data), label
            except images.UnreadableImage as error:
                skipped[name] = str(error)
        raise DataError(f"{MAX_UNREADABLE_IN_A_ROW} unreadable images in a row, the last "
                        f"{name}; check the dataset's files")


@dataclasses.dataclass
class EvalBatch:
    """Evaluation batch number -> this process's share, unreadable images masked out."""

    source: Any
    transform: Transform
    batch_size: int
    first: int
    local: int

    def __call__(self, number: int) -> Batch:
        size = self.transform.eval_image_size or self.transform.image_size
        batch = {"image": np.zeros((self.local, size, size, 3), np.uint8),
                 "label": np.zeros((self.local,), np.int32),
                 "mask": np.zeros((self.local,), np.float32), "skipped": {}}
        start = number * self.batch_size + self.first
        for j, index in enumerate(range(start, min(start + self.local, len(self.source)))):
            data, label, name = self.source.read(index)
            try:
                image = images.open_rgb(data)
            except images.UnreadableImage as error:
                batch["skipped"][name] = str(error)
                continue
            batch["image"][j] = images.eval_crop(image, self.transform.eval_resize, size)
            batch["label"][j], batch["mask"][j] = label, 1.0
        return batch


class Streaming(Pipeline):
    """``sources`` decoded and augmented by ``workers`` processes (0: one thread of this
    process), a batch or two ahead of the devices."""

    def train_size(self, step: int) -> int:
        return self.transform.train_size(step)

    def __init__(self, sources: Sources, *, batch_size: int, transform: Transform, workers: int,
                 dtype: str = "float32"):
        self.sources, self.transform, self.workers = sources, transform, workers
        self.image_shape = (transform.image_size, transform.image_size, 3)
        eval_size = transform.eval_image_size or transform.image_size
        self.eval_image_shape = (eval_size, eval_size, 3)
        self.num_classes = len(sources.class_names)
        self.class_names = sources.class_names
        self.train_examples, self.eval_examples = len(sources.train), len(sources.eval)
        self.batch_size = batch_size
        self.mean, self.std, self.dtype = sources.mean, sources.std, jnp.dtype(dtype)
        self.skipped: dict[str, str] = {}  # file -> why it cannot be read
        self._iterator, self._next_step = None, None

    def resident(self) -> Batch:
        return {}

    def train_batches(self, step: int, count: int) -> Batch:
        if self._next_step != step:
            self._start(step)
        batches = [self._take(next(self._iterator)) for _ in range(count)]
        self._next_step = step + count
        return {key: np.stack([b[key] for b in batches]) for key in ("image", "label")}

    def _start(self, step: int) -> None:
        self._stop()
        _grain_flags_ready()
        first, local = process_slice(self.batch_size)
        dataset = grain.MapDataset.range(step, LAST_STEP).map(
            TrainBatch(self.sources.train, self.transform, self.batch_size, first, local))
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                            prefetch_buffer_size=2))
        if self.workers:
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.workers, per_worker_buffer_size=1), worker_init_fn=_worker_init)
        self._iterator = iter(dataset)

    def _take(self, batch: Batch) -> Batch:
        for name, why in batch.pop("skipped").items():
            if name not in self.skipped:
                self.skipped[name] = why
                tqdm.write(f"warning: skipped {name}: cannot be read as an image ({why}); "
                           "counted in summary.json as skipped_examples", file=sys.stderr)
        return batch

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        first, local = process_slice(batch_size)
        count = -(-self.eval_examples // batch_size)
        dataset = grain.MapDataset.range(count).map(
            EvalBatch(self.sources.eval, self.transform, batch_size, first, local))
        threads = max(1, self.workers)
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                            prefetch_buffer_size=threads))
        for batch in dataset:
            yield self._take(batch)

    def prepare(self, resident: Batch, batch: Batch, key: jax.Array,
                positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        return normalize(batch["image"], self.mean, self.std, self.dtype), batch["label"]

    def prepare_eval(self, resident: Batch, batch: Batch) -> tuple[jnp.ndarray, jnp.ndarray]:
        return normalize(batch["image"], self.mean, self.std, self.dtype), batch["label"]

    def get_state(self) -> dict[str, Any]:
        """The position (next step) and the unreadable files met by any process; every
        process calls this together."""
        skipped = {}
        for part in gather_json(self.skipped):
            skipped.update(part)
        return {"next_step": self._next_step, "skipped": skipped}

    def set_state(self, state: dict[str, Any], step: int) -> None:
        if state.get("next_step") not in (None, step):
            raise DataError(f"the checkpoint of step {step} holds the input pipeline at step "
                            f"{state['next_step']}; the checkpoint is inconsistent")
        self.skipped = dict(state.get("skipped", {}))

    def skipped_examples(self) -> int:
        return len(self.get_state()["skipped"])

    def _stop(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close:
            close()
        self._iterator = None

    def close(self) -> None:
        self._stop()
