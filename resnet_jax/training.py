"""The train state, the optimizer, and the per-device train and eval steps.

Each step is written for one device with collectives over the axis 'batch';
:func:`parallel_steps` runs it on every device of every process, with
``jax.pmap`` or with ``jax.shard_map`` over a one-axis Mesh (config.parallel).
The state and the dataset hold one whole copy per device (:func:`placement`);
each process passes only its own share of the global batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from resnet_jax import data
from resnet_jax.models import ResNet, create_model

AXIS = "batch"


class TrainState(train_state.TrainState):
    """Parameters, optimizer state, BatchNorm statistics, and the train metrics summed
    since the last log (checkpointed with the rest, so a resumed run logs the same)."""

    batch_stats: Any
    metric_sums: dict[str, jax.Array]


DTYPES = ("float32", "bfloat16")


def metric_names(config: ml_collections.ConfigDict, params: Any) -> list[str]:
    """The train metrics the step reports, in the order they are logged."""
    names = ["train_loss", "train_accuracy", "learning_rate"]
    if config.log_grad_norms:
        names += list(stage_grad_norms(params))
    return names


def zero_metric_sums(names: list[str]) -> dict[str, jax.Array]:
    """Per metric: [sum, count]. Each metric keeps its own count, so one turned on when a
    run resumes averages over the steps it was measured."""
    return {name: jnp.zeros((2,), jnp.float32) for name in names}


def mean_metrics(sums: dict[str, Any]) -> dict[str, float]:
    """Averages of the summed train metrics (host values); metrics not yet measured are left
    out."""
    return {name: float(total) / float(count) for name, (total, count) in sums.items() if count}


def build_model(config: ml_collections.ConfigDict) -> ResNet:
    """The model a config names, with synced BatchNorm over the device axis if asked."""
    return create_model(
        config.model, num_classes=config.num_classes, residual=config.residual,
        zero_init_residual=config.zero_init_residual, dtype=jnp.dtype(config.dtype),
        bn_axis_name=AXIS if config.sync_batch_stats else None)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: how to build it, and the config keys it reads."""

    build: Callable[[ml_collections.ConfigDict], optax.Schedule]
    keys: tuple[str, ...]


SCHEDULES = {
    "piecewise": Schedule(lambda c: optax.piecewise_constant_schedule(
        c.learning_rate, dict(zip(c.lr_boundaries, c.lr_scales, strict=True))),
        ("learning_rate", "lr_boundaries", "lr_scales")),
    "cosine": Schedule(lambda c: optax.warmup_cosine_decay_schedule(
        0.0, c.learning_rate, c.warmup_steps, c.num_train_steps),
        ("learning_rate", "warmup_steps", "num_train_steps")),
    "onecycle": Schedule(lambda c: optax.cosine_onecycle_schedule(
        c.num_train_steps, c.learning_rate), ("learning_rate", "num_train_steps")),
}


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Learning rate as a function of the step, from ``config.schedule``."""
    return SCHEDULES[config.schedule].build(config)


def _decay_mask(params: Any) -> Any:
    """True for convolution and dense kernels; False for BatchNorm parameters and biases."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def _sgd(config: ml_collections.ConfigDict, schedule: optax.Schedule, mask: Any):
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask),
                       optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov))


def _adam(config: ml_collections.ConfigDict, schedule: optax.Schedule, mask: Any):
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask), optax.adam(schedule))


def _adamw(config: ml_collections.ConfigDict, schedule: optax.Schedule, mask: Any):
    return optax.adamw(schedule, weight_decay=config.weight_decay, mask=mask)


# SGD and Adam add weight decay to the gradient (PyTorch's semantics); AdamW decouples it.
OPTIMIZERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimizer ``config.optimizer`` names, driven by ``schedule``."""
    mask = None if config.decay_norm_and_bias else _decay_mask
    return OPTIMIZERS[config.optimizer](config, schedule, mask)


def create_train_state(config: ml_collections.ConfigDict, model: ResNet,
                       image_shape: tuple[int, ...]) -> TrainState:
    """Initialise parameters from ``config.seed`` and wrap them with the optimizer."""
    variables = jax.jit(model.init)(jax.random.key(config.seed),
                                    jnp.zeros((1, *image_shape), model.dtype))
    tx = make_optimizer(config, learning_rate_schedule(config))
    sums = zero_metric_sums(metric_names(config, variables["params"]))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables["batch_stats"], metric_sums=sums)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float) -> jnp.ndarray:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def stage_grad_norms(grads: Any) -> dict[str, jnp.ndarray]:
    """Gradient norm per stage: stem (conv1, bn1), stage1..N (layerN_*), head (fc)."""
    groups: dict[str, list] = {}
    for name, subtree in grads.items():
        group = f"stage{name[5:].split('_')[0]}" if name.startswith("layer") else (
            "head" if name == "fc" else "stem")
        groups.setdefault(group, []).append(subtree)
    return {f"grad_norm/{group}": optax.tree.norm(trees) for group, trees in groups.items()}


def train_step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray,
               indices: jnp.ndarray, *, config: ml_collections.ConfigDict,
               schedule: optax.Schedule) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One SGD step on this device's share of the global batch (indices into the data)."""
    local_batch = indices.shape[0]
    positions = lax.axis_index(AXIS) * local_batch + jnp.arange(local_batch)
    x, y = images[indices], labels[indices]
    if config.augment:
        x = data.augment(x, data.step_key(config.seed, state.step), positions)
    x = data.normalize(x, jnp.dtype(config.dtype))

    def loss_fn(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                         x, train=True, mutable=["batch_stats"])
        loss = cross_entropy(logits, y, config.label_smoothing).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS)
    # Synced BN already agrees across devices; per-device statistics are averaged.
    batch_stats = lax.pmean(batch_stats, AXIS)
    metrics = {
        "train_loss": lax.pmean(loss, AXIS),
        "train_accuracy": lax.pmean(jnp.mean(jnp.argmax(logits, -1) == y), AXIS),
        "learning_rate": schedule(state.step),
    }
    if config.log_grad_norms:
        metrics.update(stage_grad_norms(grads))
    sums = {name: total + jnp.stack([metrics[name], 1.0])
            for name, total in state.metric_sums.items()}
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats, metric_sums=sums)
    return new_state, metrics


def eval_step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray,
              indices: jnp.ndarray, mask: jnp.ndarray, *,
              config: ml_collections.ConfigDict) -> dict[str, jnp.ndarray]:
    """Summed loss, correct predictions and example count over the whole (masked) batch."""
    x = data.normalize(images[indices], jnp.dtype(config.dtype))
    y = labels[indices]
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                            x, train=False)
    sums = {
        "loss": jnp.sum(cross_entropy(logits, y, 0.0) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == y) * mask),
        "count": jnp.sum(mask),
    }
    return lax.psum(sums, AXIS)


def replicated(devices: list[jax.Device]) -> NamedSharding:
    """Placement of one whole copy on each of ``devices``."""
    return NamedSharding(Mesh(np.array(devices), (AXIS,)), P())


def placement(config: ml_collections.ConfigDict) -> NamedSharding:
    """Where the state and the dataset live for :func:`parallel_steps`: pmap takes this
    process's devices, shard_map one array over the devices of all processes."""
    return replicated(jax.devices() if config.parallel == "shard_map" else jax.local_devices())


def process_share(global_batch: np.ndarray) -> np.ndarray:
    """This process's contiguous share of a global batch (all of it in a single process)."""
    return np.split(global_batch, jax.process_count())[jax.process_index()]


def parallel_steps(config: ml_collections.ConfigDict) -> tuple[Callable, Callable]:
    """(train_step, eval_step) over every device of every process.

    Both take the state and the dataset's images and labels, placed with
    :func:`placement`, then this process's share of the global batch: flat index
    arrays (and, for eval, the mask). Each returns what every device agrees on.
    """
    train = functools.partial(train_step, config=config, schedule=learning_rate_schedule(config))
    evaluate = functools.partial(eval_step, config=config)
    return PARALLEL[config.parallel](train, evaluate)


def _pmapped(train: Callable, evaluate: Callable) -> tuple[Callable, Callable]:
    p_train = jax.pmap(train, axis_name=AXIS, in_axes=(None, None, None, 0),
                       out_axes=(None, None), donate_argnums=(0,))
    p_eval = jax.pmap(evaluate, axis_name=AXIS, in_axes=(None, None, None, 0, 0), out_axes=None)

    def per_device(batch: np.ndarray) -> np.ndarray:
        return batch.reshape(jax.local_device_count(), -1)

    def train_fn(state, images, labels, indices):
        return p_train(state, images, labels, per_device(indices))

    def eval_fn(state, images, labels, indices, mask):
        return p_eval(state, images, labels, per_device(indices), per_device(mask))

    return train_fn, eval_fn


def _shard_mapped(train: Callable, evaluate: Callable) -> tuple[Callable, Callable]:
    mesh = Mesh(np.array(jax.devices()), (AXIS,))
    split = NamedSharding(mesh, P(AXIS))
    # check_vma=False keeps pmap's semantics: with it on, the gradient with respect to the
    # replicated parameters would already be summed over devices before the step's pmean.
    s_train = jax.jit(jax.shard_map(train, mesh=mesh, in_specs=(P(), P(), P(), P(AXIS)),
                                    out_specs=(P(), P()), check_vma=False), donate_argnums=(0,))
    s_eval = jax.jit(jax.shard_map(evaluate, mesh=mesh, in_specs=(P(), P(), P(), P(AXIS), P(AXIS)),
                                   out_specs=P(), check_vma=False))

    def global_batch(share: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(split, share)

    def train_fn(state, images, labels, indices):
        return s_train(state, images, labels, global_batch(indices))

    def eval_fn(state, images, labels, indices, mask):
        return s_eval(state, images, labels, global_batch(indices), global_batch(mask))

    return train_fn, eval_fn


# config.parallel: how the per-device steps run on every device.
PARALLEL = {"pmap": _pmapped, "shard_map": _shard_mapped}
