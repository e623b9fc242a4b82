"""One evaluation for every caller (the trainer, ``evaluate --workdir`` and ``evaluate
--weights``): a compiled step that sums the loss, top-1 and top-5 hits and the real
examples of a masked batch on every device, and the metrics those sums make.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from resnet_jax.parallel import AXIS, on_every_device
from resnet_jax.train.training import cross_entropy

TOP5_FROM = 6  # classes: among five or fewer, every label is in the top five


def batch_sums(logits: jnp.ndarray, labels: jnp.ndarray,
               mask: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Summed loss (the trainer's cross-entropy, from the logits), top-1 and top-5 hits and
    examples over the batch's real examples (``mask`` 1, padding 0)."""
    top = lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "loss": jnp.sum(cross_entropy(logits, labels, 0.0) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "top5": jnp.sum(jnp.any(top == labels[:, None], axis=-1) * mask),
        "count": jnp.sum(mask),
    }


def batch_size(requested: int, examples: int, devices: int) -> int:
    """``requested`` rounded up to a multiple of ``devices``, no larger than the examples
    need (padded to ``devices``)."""
    return min(-(-requested // devices), -(-examples // devices)) * devices


def eval_step(variables: Any, resident: Any, batch: Any, *, apply_fn: Callable,
              prepare: Callable, flip: bool = False) -> dict[str, jnp.ndarray]:
    """:func:`batch_sums` of this device's share of ``batch``, summed over every device;
    with ``flip``, of the logits averaged over each image and its mirror image."""
    images, labels = prepare(resident, batch)
    logits = apply_fn(variables, images, train=False)
    if flip:
        logits = (logits + apply_fn(variables, images[:, :, ::-1], train=False)) / 2
    return lax.psum(batch_sums(logits, labels, batch["mask"]), AXIS)


def parallel_eval(apply_fn: Callable, prepare: Callable, parallel: str,
                  flip: bool = False) -> Callable:
    """``eval_step`` on every device: ``(variables, resident, batch)`` -> summed totals;
    ``prepare(resident, batch)`` makes the images and labels (a pipeline's
    ``prepare_eval``), ``parallel`` is 'pmap' or 'shard_map', ``flip`` averages each
    image's logits with its mirror image's (test-time flips)."""
    step = functools.partial(eval_step, apply_fn=apply_fn, prepare=prepare, flip=flip)
    return on_every_device(step, parallel)


def totals(p_eval: Callable, variables: Any, resident: Any,
           batches: Iterable[Any]) -> dict[str, float]:
    """The sums of ``p_eval`` over ``batches`` (each example counted once, padding not)."""
    sums = [p_eval(variables, resident, batch) for batch in batches]
    keys = ("loss", "correct", "top5", "count")
    return {k: float(np.sum([s[k] for s in jax.device_get(sums)])) for k in keys}


def test_metrics(sums: dict[str, float], classes: int) -> dict[str, float]:
    """test_loss, test_accuracy, test_top5_accuracy (more than five classes only) and
    eval_examples from :func:`totals`; only ``eval_examples``, 0, when nothing was
    counted."""
    count = sums["count"]
    if not count:
        return {"eval_examples": 0}
    top5 = {"test_top5_accuracy": sums["top5"] / count} if classes >= TOP5_FROM else {}
    return {"test_loss": sums["loss"] / count, "test_accuracy": sums["correct"] / count,
            **top5, "eval_examples": int(count)}
