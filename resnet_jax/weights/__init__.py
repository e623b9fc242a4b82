"""Pretrained weights with what using them needs (preprocessing, class names, published
accuracy): by name from the weights table (:mod:`resnet_jax.weights.table`), from the
Hugging Face Hub (``hf-hub:timm/...``: :mod:`resnet_jax.weights.hub`), from a state dict file in
torchvision's layout (``.pth``, ``.th``, ``.safetensors``, a hub snapshot's folder: read by
:mod:`resnet_jax.weights.state_dicts`, without torch), or from a training run (read by
:mod:`resnet_jax.runs.checkpoints`). :func:`load_weights` is the one reader every door calls:
predict, evaluate, init_from and :func:`pretrained`.

Named weights are downloaded once from the table's address, checked against its SHA-256
and kept under ``$RESNET_JAX_CACHE`` (else ``~/.cache/resnet_jax``) as the publisher's
file. ``python -m resnet_jax.weights`` prints the table.
"""

from resnet_jax.weights.load import (
                                    fit_variables,
                                    initial_variables,
                                    load_weights,
                                    pretrained,
                                    resolved_source,
)
from resnet_jax.weights.loaded import Preprocessing, Weights, cache_dir, placeholder_names
from resnet_jax.weights.sources import run_data

__all__ = ["Preprocessing", "Weights", "cache_dir", "fit_variables", "initial_variables",
           "load_weights", "placeholder_names", "pretrained", "resolved_source", "run_data"]
