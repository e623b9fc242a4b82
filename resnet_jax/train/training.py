"""The train state, the optimizer, and the per-device train step.

The step is written for one device with collectives over the axis 'batch' and
receives images already prepared by the input pipeline. :func:`parallel_train`
puts the pipeline's device-side ``prepare`` in front of it, runs up to
``config.steps_per_call`` steps inside one compiled loop, and runs them on every
device of every process (``config.parallel``, see :mod:`resnet_jax.parallel`). The
evaluation step is :mod:`resnet_jax.train.scoring`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util
from flax.training import train_state
from jax import lax

from resnet_jax.data.pipelines.base import Pipeline, step_key
from resnet_jax.models import ResNet
from resnet_jax.parallel import AXIS, on_every_device
from resnet_jax.train import ema, erasing, mixing
from resnet_jax.train.metrics import NORMS


class TrainState(train_state.TrainState):
    """Parameters, optimizer state, BatchNorm statistics, and the train metrics summed
    since the last log (checkpointed with the rest, so a resumed run logs the same)."""

    batch_stats: Any
    metric_sums: dict[str, jax.Array]


class AveragedTrainState(TrainState):
    """A train state that also keeps a moving average of the weights (``ema_decay``)."""

    ema: dict[str, Any]


DTYPES = ("float32", "bfloat16")


def metric_names(config: ml_collections.ConfigDict, params: Any) -> list[str]:
    """The train metrics the step reports, in the order they are logged."""
    names = ["train_loss", "train_accuracy", "learning_rate", *NORMS]
    if config.log_grad_norms:
        names += list(stage_grad_norms(params))
    return names


def step_norms(grads: Any, params: Any, new_params: Any) -> dict[str, jnp.ndarray]:
    """The NORMS of one step."""
    param_norm = optax.tree.norm(params)
    update = jax.tree.map(jnp.subtract, new_params, params)
    return {"train_grad_norm": optax.tree.norm(grads), "train_param_norm": param_norm,
            "train_update_ratio": optax.tree.norm(update) / param_norm}


def zero_metric_sums(names: list[str]) -> dict[str, jax.Array]:
    """Per metric: [sum, count]. Each metric keeps its own count, so one turned on when a
    run resumes averages over the steps it was measured."""
    return {name: jnp.zeros((2,), jnp.float32) for name in names}


def mean_metrics(sums: dict[str, Any]) -> dict[str, float]:
    """Averages of the summed train metrics (host values); metrics not yet measured are left
    out."""
    return {name: float(total) / float(count) for name, (total, count) in sums.items() if count}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: how to build it, and the config keys it reads."""

    build: Callable[[ml_collections.ConfigDict], optax.Schedule]
    keys: tuple[str, ...]


def _warmup_factor(config: ml_collections.ConfigDict, step: jnp.ndarray) -> jnp.ndarray:
    """From ``warmup_start_factor`` at step 0, linearly to 1 at ``warmup_steps``."""
    start = config.warmup_start_factor
    return start + (1.0 - start) * jnp.minimum(1.0, step / config.warmup_steps)


def _piecewise(config: ml_collections.ConfigDict) -> optax.Schedule:
    """``learning_rate`` scaled at each of ``lr_boundaries`` (absolute steps) by its
    ``lr_scales`` factor, times the linear warm-up over ``warmup_steps``."""
    steps = optax.piecewise_constant_schedule(
        config.learning_rate, dict(zip(config.lr_boundaries, config.lr_scales, strict=True)))
    if not config.warmup_steps:
        return steps
    return lambda step: steps(step) * _warmup_factor(config, step)


def _linear(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The linear warm-up, then linearly to 0 at ``num_train_steps`` (FFCV's ``cyclic``
    schedule with ``warmup_start_factor=1e-4``)."""
    peak, warmup = config.learning_rate, config.warmup_steps
    decay = optax.linear_schedule(peak, 0.0, config.num_train_steps - warmup)
    if not warmup:
        return decay
    return optax.join_schedules(
        [optax.linear_schedule(config.warmup_start_factor * peak, peak, warmup), decay], [warmup])


_WARMED_UP = ("learning_rate", "warmup_steps", "warmup_start_factor")
SCHEDULES = {
    "piecewise": Schedule(_piecewise, (*_WARMED_UP, "lr_boundaries", "lr_scales")),
    "cosine": Schedule(lambda c: optax.warmup_cosine_decay_schedule(
        c.warmup_start_factor * c.learning_rate, c.learning_rate, c.warmup_steps,
        c.num_train_steps), (*_WARMED_UP, "num_train_steps")),
    "linear": Schedule(_linear, (*_WARMED_UP, "num_train_steps")),
    "onecycle": Schedule(lambda c: optax.cosine_onecycle_schedule(
        c.num_train_steps, c.learning_rate), ("learning_rate", "num_train_steps")),
}


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Learning rate as a function of the step, from ``config.schedule``."""
    return SCHEDULES[config.schedule].build(config)


def _decay_mask(params: Any, decay_norm: bool, decay_bias: bool) -> Any:
    """Which parameters weight decay reaches: kernels always; BatchNorm's scale and bias
    (a module holding a ``scale``) if ``decay_norm``; other biases if ``decay_bias``."""
    flat = traverse_util.flatten_dict(params)
    norms = {path[:-1] for path in flat if path[-1] == "scale"}
    return traverse_util.unflatten_dict({
        path: decay_norm if path[:-1] in norms else decay_bias if path[-1] == "bias" else True
        for path in flat})


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
    mask = None
    if not (config.decay_norm and config.decay_bias):
        mask = functools.partial(_decay_mask, decay_norm=config.decay_norm,
                                 decay_bias=config.decay_bias)
    return OPTIMIZERS[config.optimizer](config, schedule, mask)


def create_train_state(config: ml_collections.ConfigDict, model: ResNet,
                       image_shape: tuple[int, ...],
                       fit_start: Callable[[Any], Any] | None = None) -> TrainState:
    """Initialise parameters from ``config.seed`` (``fit_start`` replaces the initialised
    variables by those a run starts from) and wrap them with the optimizer."""
    variables = jax.jit(model.init)(jax.random.key(config.seed),
                                    jnp.zeros((1, *image_shape), model.dtype))
    if fit_start is not None:
        variables = fit_start(variables)
    tx = make_optimizer(config, learning_rate_schedule(config))
    sums = zero_metric_sums(metric_names(config, variables["params"]))
    fields = dict(apply_fn=model.apply, params=variables["params"], tx=tx,
                  batch_stats=variables["batch_stats"], metric_sums=sums)
    if config.ema_decay:
        return AveragedTrainState.create(
            **fields, ema=ema.start(variables["params"], variables["batch_stats"]))
    return TrainState.create(**fields)


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, label_smoothing: float) -> jnp.ndarray:
    return soft_cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                       label_smoothing: float) -> jnp.ndarray:
    """Cross-entropy against (soft) targets smoothed as PyTorch's CrossEntropyLoss smooths
    probability targets: ``(1 - e) * targets + e / classes``."""
    return optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, label_smoothing))


def stage_grad_norms(grads: Any) -> dict[str, jnp.ndarray]:
    """Gradient norm per stage: stem (conv1, bn1), stage1..N (layerN_*), head (fc)."""
    groups: dict[str, list] = {}
    for name, subtree in grads.items():
        group = f"stage{name[5:].split('_')[0]}" if name.startswith("layer") else (
            "head" if name == "fc" else "stem")
        groups.setdefault(group, []).append(subtree)
    return {f"grad_norm/{group}": optax.tree.norm(trees) for group, trees in groups.items()}


def uses_dropout(config: ml_collections.ConfigDict) -> bool:
    """Whether a training step draws dropout masks (stochastic depth, head dropout)."""
    return bool(config.drop_path_rate or config.get("drop_rate", 0.0))


def train_step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray, *,
               config: ml_collections.ConfigDict, schedule: optax.Schedule,
               dropout_key: jax.Array | None = None,
               mix_key: jax.Array | None = None) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """One SGD step on this device's share of the global batch (images normalised);
    ``dropout_key`` drives stochastic depth where ``config.drop_path_rate`` is set,
    ``mix_key`` MixUp and CutMix where their alphas are (train accuracy then counts the
    dominant label)."""
    rngs = {"dropout": dropout_key} if uses_dropout(config) else None
    targets = None
    if config.mixup_alpha or config.cutmix_alpha:
        images, targets, labels = mixing.mix(mix_key, images, labels, config.num_classes,
                                             config.mixup_alpha, config.cutmix_alpha)

    def loss_fn(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                         images, train=True, mutable=["batch_stats"], rngs=rngs)
        if targets is None:
            loss = cross_entropy(logits, labels, config.label_smoothing).mean()
        else:
            loss = soft_cross_entropy(logits, targets, config.label_smoothing).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS)
    # Synced BN already agrees across devices; per-device statistics are averaged.
    batch_stats = lax.pmean(batch_stats, AXIS)
    metrics = {
        "train_loss": lax.pmean(loss, AXIS),
        "train_accuracy": lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), AXIS),
        "learning_rate": schedule(state.step),
    }
    if config.log_grad_norms:
        metrics.update(stage_grad_norms(grads))
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics.update(step_norms(grads, state.params, new_state.params))
    new_state = new_state.replace(metric_sums={
        name: total + jnp.stack([metrics[name], 1.0])
        for name, total in state.metric_sums.items()})
    if config.ema_decay:
        new_state = new_state.replace(ema=ema.update(
            state.ema, new_state.params, batch_stats, state.step, decay=config.ema_decay,
            every_steps=config.ema_every_steps,
            warmup_steps=0 if config.schedule == "onecycle" else config.warmup_steps))
    return new_state, metrics


DROPOUT_STREAM = 0x64726F70  # the stochastic-depth draws: apart from the augmentation's
MIX_STREAM = 0x6D697821  # the MixUp and CutMix draws
ERASE_STREAM = 0x65726173  # the random erasing draws

# Per step of a call, kept to name the step where training diverged.
WATCHED = ("train_loss", "learning_rate")


def _device_key(step_key: jax.Array, stream: int) -> jax.Array:
    """The step's key for one stream of draws, each device its own (as each GPU of
    PyTorch's DDP draws its own masks and mixes its own batch)."""
    return jax.random.fold_in(jax.random.fold_in(step_key, stream), lax.axis_index(AXIS))


def train_steps(state: TrainState, resident: Any, count: jnp.ndarray, batches: Any, *,
                prepare: Callable, config: ml_collections.ConfigDict, schedule: optax.Schedule,
                looped: bool = True) -> tuple[TrainState, dict[str, jnp.ndarray]]:
    """The first ``count`` of ``batches`` (leading axis: one batch per step), one step each,
    in one compiled loop; the metrics stay summed in the state. Returns the state and,
    per step, the WATCHED metrics (zeros past ``count``). The loop's length is a traced
    value, so every ``count`` runs the same compiled code. ``looped=False``: one batch,
    its step run without a loop (``count`` must be 1)."""
    capacity = jax.tree.leaves(batches)[0].shape[0]

    def one_step(i, carry):
        state, watched = carry
        batch = jax.tree.map(lambda leaf: leaf[i], batches)
        local = jax.tree.leaves(batch)[0].shape[0]
        positions = lax.axis_index(AXIS) * local + jnp.arange(local)
        key = step_key(config.seed, state.step)
        images, labels = prepare(resident, batch, key, positions)
        if config.random_erasing:  # per example, after normalisation, as torchvision
            keys = jax.vmap(jax.random.fold_in, (None, 0))(
                jax.random.fold_in(key, ERASE_STREAM), positions)
            images = jax.vmap(erasing.random_erase, (0, 0, None))(keys, images,
                                                                  config.random_erasing)
        state, metrics = train_step(
            state, images, labels, config=config, schedule=schedule,
            dropout_key=_device_key(key, DROPOUT_STREAM) if uses_dropout(config) else None,
            mix_key=(_device_key(key, MIX_STREAM)
                     if config.mixup_alpha or config.cutmix_alpha else None))
        return state, {k: v.at[i].set(metrics[k]) for k, v in watched.items()}

    watched = {name: jnp.zeros((capacity,), jnp.float32) for name in WATCHED}
    if not looped:
        return one_step(0, (state, watched))
    return lax.fori_loop(0, count, one_step, (state, watched))


def parallel_train(config: ml_collections.ConfigDict, pipeline: Pipeline,
                   looped: bool = True) -> Callable:
    """train_steps with ``pipeline``'s preparation, on every device:
    ``(state, resident, count, batches)``, ``batches`` being this process's share of
    ``pipeline.train_batches(step, n)`` padded to the call's capacity, of which the first
    ``count`` run (in a compiled loop unless not ``looped``). The state and ``resident``
    are placed with :func:`resnet_jax.parallel.placement`; the state is donated.
    """
    train = functools.partial(train_steps, prepare=pipeline.prepare, config=config,
                              schedule=learning_rate_schedule(config), looped=looped)
    return on_every_device(train, config.parallel, batch_axis=1, donate_first=True)
