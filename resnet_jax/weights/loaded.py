"""What every door of :mod:`resnet_jax.weights` returns: the variables with their
preprocessing, class names and published accuracy."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from resnet_jax import data, hints
from resnet_jax.data.pipelines import images
from resnet_jax.errors import ArgumentError
from resnet_jax.models import ResNet
from resnet_jax.weights.table import Published


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """torchvision's evaluation transform: the shorter side resized to ``resize``, the
    centre ``crop``, then standardised with ``mean`` and ``std`` (0..1 scale)."""

    resize: int
    crop: int
    mean: tuple[float, ...] = data.IMAGENET_STATS[0]
    std: tuple[float, ...] = data.IMAGENET_STATS[1]
    interpolation: str = "bilinear"  # or bicubic (see images.RESAMPLING)
    assumed: str = ""  # where the weights say nothing of their preprocessing: whose it is

    def describe(self) -> str:
        def rounded(values: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

        statistics = ("ImageNet's mean and std" if (self.mean, self.std) == data.IMAGENET_STATS
                      else f"mean {rounded(self.mean)}, std {rounded(self.std)}")
        text = (f"shorter side resized to {self.resize} ({self.interpolation}), centre crop "
                f"{self.crop}, {statistics}")
        return f"{text} ({self.assumed})" if self.assumed else text

    def __call__(self, encoded: bytes | str | os.PathLike) -> np.ndarray:
        """An image file (its bytes, or its path) -> float32 (crop, crop, 3); UnreadableImage
        if it is not one."""
        if isinstance(encoded, str | os.PathLike):
            try:
                encoded = Path(encoded).expanduser().read_bytes()
            except OSError as error:
                raise ArgumentError(f"{encoded} cannot be read ({error.strerror}); pass an "
                                    "image file's path, or its bytes") from None
        pixels = images.eval_crop(images.open_rgb(encoded), self.resize, self.crop,
                                  self.interpolation)
        mean, std = np.float32(self.mean), np.float32(self.std)
        return (pixels.astype(np.float32) / np.float32(255) - mean) / std


@dataclasses.dataclass(frozen=True)
class Weights:
    """A model, its variables, and what using them needs."""

    model: ResNet
    variables: dict[str, Any]
    class_names: list[str]  # '0', '1', ... where ``names_known`` is False
    preprocessing: Preprocessing
    published: Published | None  # its publisher's accuracy, where known
    source: str
    step: int | None = None  # a training run's checkpoint
    names_known: bool = True
    averaged: bool = False  # a run's moving average of the weights
    raw: bool = False  # a run's trained weights, chosen over the moving average it keeps
    eval_flip: bool = False  # a run evaluated with test-time flips
    sizes_given: bool = False  # resize or crop as given, not the weights' own

    def flips(self, chosen: bool | None) -> bool:
        """Test-time flips: as ``chosen``, else as the run the weights come from evaluated."""
        return self.eval_flip if chosen is None else chosen

    def describe(self) -> str:
        """Where the weights come from, for the first line of a report."""
        if self.step is None:
            return self.source
        average = (f", the moving average of its weights ({hints.setting('raw', True)}: the "
                   "trained ones)" if self.averaged else
                   ", its trained weights, not the moving average it keeps" if self.raw else "")
        return f"{self.source}, checkpoint of step {self.step}{average}"


def placeholder_names(count: int) -> list[str]:
    """The class names of weights that carry none: '0', '1', ..."""
    return [str(i) for i in range(count)]


def cache_dir() -> Path:
    return Path(os.environ.get("RESNET_JAX_CACHE") or Path.home() / ".cache" / "resnet_jax")
