"""How close training runs to the device's limit: achieved TFLOP/s and the fraction of the
device's peak (MFU), as big_vision and MaxText report them.

FLOPs count 6 per multiply-accumulate of the forward pass (forward, and twice that
backward) at the run's image size; XLA's own cost analysis cannot be used, as it leaves
out cuDNN's convolutions on a GPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Dense peak TFLOP/s per device, (float32, bfloat16), by a piece of the device kind JAX
# reports; the first piece found in the kind wins, so a longer name comes before its prefix.
# float32 matrix products run as TF32 on these GPUs (XLA's default there); on TPUs JAX's
# default precision multiplies float32 in one bfloat16 pass. Sources: the vendors' data
# sheets (NVIDIA H100/H200/B200/A100/L40S/L4, Google Cloud TPU system architecture).
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H100 PCIe": (378.0, 756.0),
    "H100": (494.7, 989.4),  # SXM
    "H200": (494.7, 989.4),
    "B200": (1100.0, 2250.0),
    "A100": (156.0, 312.0),
    "L40S": (183.0, 362.0),
    "L4": (60.0, 121.0),
    "TPU v4": (275.0, 275.0),
    "TPU v5 lite": (197.0, 197.0),  # v5e
    "TPU v5": (459.0, 459.0),  # v5p
    "TPU v6 lite": (918.0, 918.0),  # v6e (Trillium)
}


def peak_tflops(device_kind: str, dtype: str, given: float = 0.0) -> float | None:
    """The dense peak TFLOP/s of one device of ``device_kind`` for ``dtype`` ('float32' or
    'bfloat16'): ``given`` if not 0 (any device, the CPU included), else the table's, else
    None."""
    if given:
        return given
    for piece, (fp32, bf16) in PEAK_TFLOPS.items():
        if piece in device_kind:
            return bf16 if dtype == "bfloat16" else fp32
    return None


def flops_per_image(model: Any, image_shape: tuple[int, ...]) -> float:
    """Training FLOPs of one image: 6 per multiply-accumulate of the forward pass."""
    from resnet_jax.models.layer_table import summarize

    return 6.0 * summarize(model, image_shape).total_macs


@dataclasses.dataclass(frozen=True)
class Meter:
    """Images/s -> ``tflops`` achieved over all ``devices``, and ``mfu``, their fraction of
    ``devices`` times the per-device ``peak`` (given with it as ``peak_tflops``), where the
    peak is known."""

    image_flops: float
    peak: float | None
    devices: int

    def __call__(self, images_per_sec: float) -> dict[str, float]:
        tflops = images_per_sec * self.image_flops / 1e12
        if not self.peak:
            return {"tflops": tflops}
        return {"tflops": tflops, "mfu": tflops / (self.peak * self.devices),
                "peak_tflops": self.peak}


def meter(model: Any, image_shape: tuple[int, ...], dtype: str, given_peak: float = 0.0) -> Meter:
    """The meter of a run of ``model`` on images of ``image_shape`` on every device here."""
    import jax

    kind = jax.devices()[0].device_kind
    return Meter(flops_per_image(model, image_shape), peak_tflops(kind, dtype, given_peak),
                 jax.device_count())
