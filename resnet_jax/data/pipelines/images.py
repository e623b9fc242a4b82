"""Decoding any image file to RGB, and torchvision's ImageNet transforms on the host.

Training: an Inception-style random-resized crop (torchvision's RandomResizedCrop
draws) plus a horizontal flip. Evaluation: the shorter side resized, then the
centre crop, both through PIL exactly as torchvision's evaluation transform, so
that the same file gives the same pixels. Training decodes JPEGs with
libjpeg-turbo's fast DCT and upsampling (simplejpeg): faster, and one grey level
or so away from PIL's decode, which evaluation keeps.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import simplejpeg
from PIL import Image

from resnet_jax.errors import UnreadableImage

RGB = "RGB"
JPEG_START = b"\xff\xd8"
SCALE = (0.08, 1.0)  # RandomResizedCrop: fraction of the image's area...
RATIO = (3 / 4, 4 / 3)  # ...and aspect ratio of the crop



def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey (PNG 'I;16', 'I', 'F') scaled to 8 bits, not clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
    grey = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert(RGB)


def open_rgb(data: bytes) -> Image.Image:
    """The decoded image as an RGB PIL image (grey, palette, alpha, CMYK and 16-bit
    converted, as torchvision's loader does for 8-bit modes); UnreadableImage if not."""
    try:
        with warnings.catch_warnings():  # e.g. palette transparency: converted all the same
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            image.load()
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                return _wide_to_rgb(image)
            return image if image.mode == RGB else image.convert(RGB)
    except Image.UnidentifiedImageError:
        raise UnreadableImage("not an image format PIL knows") from None
    except Exception as error:  # PIL raises many kinds for bad files (OSError, SyntaxError...)
        raise UnreadableImage(f"{type(error).__name__}: {error}") from None


def decode_fast(data: bytes) -> np.ndarray:
    """For training, as a uint8 (H, W, 3) array: JPEGs through libjpeg-turbo's fast paths,
    anything else through PIL."""
    if data[:2] == JPEG_START:
        try:
            return simplejpeg.decode_jpeg(data, colorspace=RGB, fastdct=True, fastupsample=True)
        except (ValueError, RuntimeError):  # CMYK, truncated...: PIL converts or refuses
            pass
    return np.asarray(open_rgb(data))


def random_resized_crop_box(height: int, width: int,
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width): torchvision's RandomResizedCrop draw
    (10 tries of area and aspect ratio, then the centre crop of clamped aspect ratio)."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        w, h = int(round(height * max(RATIO))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random-resized crop of a uint8 (H, W, 3) image to ``size`` x ``size`` (bilinear,
    antialiased), flipped left-right with probability 1/2."""
    top, left, h, w = random_resized_crop_box(*image.shape[:2], rng)
    crop = Image.fromarray(image[top:top + h, left:left + w]).resize((size, size),
                                                                     Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


# Interpolations of the evaluation transform, as torchvision's Resize applies them to PIL images.
RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def resize_shorter_side(image: Image.Image, size: int,
                        interpolation: str = "bilinear") -> Image.Image:
    """torchvision's Resize(size) of a PIL image: the shorter side to ``size``, the longer
    side scaled and truncated, ``interpolation`` (bilinear or bicubic) with antialiasing."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), RESAMPLING[interpolation])


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """torchvision's CenterCrop(size) of an image at least ``size`` on each side."""
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))


def eval_crop(image: Image.Image, resize: int, size: int,
              interpolation: str = "bilinear") -> np.ndarray:
    """torchvision's evaluation transform (Resize(resize, interpolation), CenterCrop(size))
    as uint8."""
    return center_crop(resize_shorter_side(image, resize, interpolation), size)
