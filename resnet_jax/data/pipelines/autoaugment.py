"""TrivialAugmentWide and RandAugment on the host, as torchvision's ``transforms``
(``autoaugment.py``) apply them to PIL images: the same op lists, magnitude bins (31),
nearest-neighbour interpolation and black fill, each op through the same PIL call. The
draws come from the example's own generator (seed, step, place), so a resumed run repeats
them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

BINS = 31
POLICIES = ("ta_wide", "ra")  # torchvision references' --auto-augment names
RA_OPS = 2  # RandAugment's num_ops


def _linspace(start: float, end: float) -> np.ndarray:
    """torch.linspace(start, end, BINS) in float32, as torch's CPU kernel computes it: a
    float32 step, from the start for the first half and from the end for the second, each
    value one fused multiply-add (rounded once: exact in float64, then to float32)."""
    first, last = np.float32(start), np.float32(end)
    step = np.float64((last - first) / np.float32(BINS - 1))
    i = np.arange(BINS, dtype=np.float64)
    values = np.where(i < BINS // 2, np.float64(first) + step * i,
                      np.float64(last) - step * (BINS - 1 - i))
    return values.astype(np.float32)


def _posterize_bits(levels: int) -> np.ndarray:
    return 8 - np.round(np.arange(BINS) / ((BINS - 1) / levels)).astype(np.int32)


def space(policy: str, height: int, width: int) -> dict[str, tuple[np.ndarray | None, bool]]:
    """Each op's magnitudes (None: it takes none) and whether they are signed."""
    wide = policy == "ta_wide"
    shear, rotate, enhance = (0.99, 135.0, 0.99) if wide else (0.3, 30.0, 0.9)
    signed_ops = {"ShearX": _linspace(0.0, shear), "ShearY": _linspace(0.0, shear),
                  "TranslateX": _linspace(0.0, 32.0 if wide else 150.0 / 331.0 * width),
                  "TranslateY": _linspace(0.0, 32.0 if wide else 150.0 / 331.0 * height),
                  "Rotate": _linspace(0.0, rotate),
                  **{name: _linspace(0.0, enhance)
                     for name in ("Brightness", "Color", "Contrast", "Sharpness")}}
    return {"Identity": (None, False), **{k: (v, True) for k, v in signed_ops.items()},
            "Posterize": (_posterize_bits(6 if wide else 4), False),
            "Solarize": (_linspace(255.0, 0.0), False),
            "AutoContrast": (None, False), "Equalize": (None, False)}


def _inverse_affine(center: tuple[float, float], translate: tuple[float, float],
                    shear: tuple[float, float]) -> list[float]:
    """The output-to-input pixel map PIL's AFFINE transform takes, for a shear (degrees)
    about ``center`` followed by a translation (no rotation, scale 1), as torchvision
    derives it."""
    shear_x, shear_y = math.radians(shear[0]), math.radians(shear[1])
    a = math.cos(-shear_y) / math.cos(shear_y)
    b = -math.cos(-shear_y) * math.tan(shear_x) / math.cos(shear_y)
    c = math.sin(-shear_y) / math.cos(shear_y)
    d = -math.sin(-shear_y) * math.tan(shear_x) / math.cos(shear_y) + 1.0
    matrix = [d, -b, 0.0, -c, a, 0.0]
    (cx, cy), (tx, ty) = center, translate
    matrix[2] += matrix[0] * (-cx - tx) + matrix[1] * (-cy - ty) + cx
    matrix[5] += matrix[3] * (-cx - tx) + matrix[4] * (-cy - ty) + cy
    return matrix


def _affine(image: Image.Image, center: tuple[float, float], translate: tuple[float, float],
            shear: tuple[float, float]) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, _inverse_affine(center, translate, shear),
                           Image.NEAREST, fillcolor=(0,) * len(image.getbands()))


def _half(image: Image.Image) -> tuple[float, float]:
    return image.size[0] * 0.5, image.size[1] * 0.5


OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "Identity": lambda image, m: image,
    "ShearX": lambda image, m: _affine(image, (0.0, 0.0), (0.0, 0.0),
                                       (math.degrees(math.atan(m)), 0.0)),
    "ShearY": lambda image, m: _affine(image, (0.0, 0.0), (0.0, 0.0),
                                       (0.0, math.degrees(math.atan(m)))),
    "TranslateX": lambda image, m: _affine(image, _half(image), (int(m), 0), (0.0, 0.0)),
    "TranslateY": lambda image, m: _affine(image, _half(image), (0, int(m)), (0.0, 0.0)),
    "Rotate": lambda image, m: image.rotate(m, Image.NEAREST, False, None,
                                            fillcolor=(0,) * len(image.getbands())),
    "Brightness": lambda image, m: ImageEnhance.Brightness(image).enhance(1.0 + m),
    "Color": lambda image, m: ImageEnhance.Color(image).enhance(1.0 + m),
    "Contrast": lambda image, m: ImageEnhance.Contrast(image).enhance(1.0 + m),
    "Sharpness": lambda image, m: ImageEnhance.Sharpness(image).enhance(1.0 + m),
    "Posterize": lambda image, m: ImageOps.posterize(image, int(m)),
    "Solarize": lambda image, m: ImageOps.solarize(image, m),
    "AutoContrast": lambda image, m: ImageOps.autocontrast(image),
    "Equalize": lambda image, m: ImageOps.equalize(image),
}


def apply(image: Image.Image, op: str, magnitude: float) -> Image.Image:
    """One op at one magnitude (torchvision's ``_apply_op`` on a PIL image)."""
    return OPS[op](image, magnitude)


def augment(image: np.ndarray, policy: str, rng: np.random.Generator,
            ra_magnitude: int = 9) -> np.ndarray:
    """A uint8 (H, W, 3) image through ``policy``: TrivialAugmentWide (one op, a random
    bin) or RandAugment (two ops at bin ``ra_magnitude``), a random sign where the op's
    magnitudes are signed."""
    picture = Image.fromarray(image)
    ops = space(policy, *image.shape[:2])
    names = list(ops)
    for _ in range(1 if policy == "ta_wide" else RA_OPS):
        name = names[rng.integers(len(names))]
        magnitudes, signed = ops[name]
        magnitude = 0.0
        if magnitudes is not None:
            magnitude = float(magnitudes[rng.integers(BINS) if policy == "ta_wide"
                                         else ra_magnitude])
        if signed and rng.integers(2):
            magnitude = -magnitude
        picture = apply(picture, name, magnitude)
    return np.asarray(picture)
