"""An exponential moving average of the weights and BatchNorm statistics, updated as
torchvision's references update ``--model-ema`` (``ExponentialMovingAverage`` with
``use_buffers=True``).

Every ``every_steps`` steps (after the optimizer steps 0, every, 2 every...) the average
becomes ``decay * average + (1 - decay) * weights``, except that it is a copy of the
weights at each update during the learning-rate warm-up and at the first one after it
(torchvision resets its count of averaged models during the warm-up epochs, and its first
update copies).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def torchvision_decay(decay: float, global_batch: int, every_steps: int, epochs: int) -> float:
    """The per-update decay torchvision's ``train.py`` derives from ``--model-ema-decay``:
    ``1 - min(1, (1 - decay) * global_batch * every_steps / epochs)`` (its world size
    times batch size is the global batch)."""
    return 1.0 - min(1.0, (1.0 - decay) * global_batch * every_steps / epochs)


def start(params: Any, batch_stats: Any) -> dict[str, Any]:
    """The average before any update: a copy of the starting weights."""
    return jax.tree.map(jnp.array, {"params": params, "batch_stats": batch_stats})


def update(average: dict[str, Any], params: Any, batch_stats: Any, step: jnp.ndarray, *,
           decay: float, every_steps: int, warmup_steps: int) -> dict[str, Any]:
    """The average after the optimizer step ``step`` (0-based) produced ``params`` and
    ``batch_stats``."""
    due = step % every_steps == 0
    copies = step - every_steps < warmup_steps  # the previous update was in the warm-up
    weight = jnp.where(copies, 0.0, decay)
    current = {"params": params, "batch_stats": batch_stats}
    return jax.tree.map(
        lambda old, new: jnp.where(due, weight * old + (1.0 - weight) * new, old),
        average, current)
