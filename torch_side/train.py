"""The same recipe in PyTorch: same model, initial weights, batches, augmentation and schedule.

    python -m torch_side.train --config configs/cifar10_resnet20.py \\
        --workdir runs/r20_torch [--config.key=value ...] [--amp] [--channels_last] [--compile]

The initial weights are the JAX initialisation of the same config, exported
through resnet_jax.models.torch_compat; the batch order and the crop/flip draws are
made by the in-memory pipeline's functions of (seed, step), so both frameworks
train the same function on the same batches. PyTorch at its best: the dataset
sits on the device as uint8, the draws of all the steps up to the next log or
evaluation are made at once and sent in one transfer, the gather, crop, flip and
normalisation run on the device, and the host waits for the device only at log
and evaluation steps. Writes metrics.jsonl, summary.json and curves.png in the
JAX trainer's schema. No resume: this is the reference side.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

if not __package__:  # run as a file (python torch_side/train.py): import from the repository
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from resnet_jax.command_line import chosen_config_keys, parse_flags
from resnet_jax.data.pipelines import build_pipeline, datasets, step_key
from resnet_jax.data.pipelines.in_memory import augmentation_draws
from resnet_jax.errors import ConfigError, ResNetError
from resnet_jax.models import build_model
from resnet_jax.models.torch_compat import to_torchvision
from resnet_jax.runs.workdir import CHECKPOINT_DIR, CONFIG_FILE, write_twin_config
from resnet_jax.train.config_schema import resolved, validate
from resnet_jax.train.metrics import MetricWriter, Throughput, timing_summary
from resnet_jax.train.report import Ending, finish_run
from resnet_jax.train.train_calls import next_event
from resnet_jax.train.training import create_train_state, learning_rate_schedule
from torch_side.models import torch_model
from torch_side.required import F, torch

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
flags.DEFINE_string("workdir", None, "Directory for metrics and plots.")
flags.DEFINE_bool("amp", False, "bfloat16 autocast (automatic mixed precision).")
flags.DEFINE_bool("channels_last", False, "NHWC memory format for activations and weights.")
flags.DEFINE_bool("compile", False, "torch.compile the model.")


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def initial_model(config: ml_collections.ConfigDict,
                  image_shape: tuple[int, ...]) -> torch.nn.Module:
    """The PyTorch model holding exactly the JAX initialisation of ``config``."""
    state = create_train_state(config, build_model(config), image_shape)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    state_dict = to_torchvision(jax.device_get(variables), config.model,
                                num_classes=config.num_classes, residual=config.residual)
    model = torch_model(config.model, config.num_classes, config.residual)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    return model


def make_optimizer(config: ml_collections.ConfigDict,
                   model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of resnet_jax.train.training.make_optimizer (learning rate set per step)."""
    exempt = set()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            if not config.decay_norm:
                exempt |= {id(module.weight), id(module.bias)}
        elif getattr(module, "bias", None) is not None and not config.decay_bias:
            exempt.add(id(module.bias))
    groups = [{"params": [p for p in model.parameters() if id(p) not in exempt],
               "weight_decay": config.weight_decay},
              {"params": [p for p in model.parameters() if id(p) in exempt],
               "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=0.0)
    return torch.optim.AdamW(groups, lr=0.0)


PAD = 4  # the in-memory pipeline's crop padding


def stretch_draws(pipeline: Any, config: ml_collections.ConfigDict, first: int,
                  count: int, dev: torch.device) -> dict[str, torch.Tensor]:
    """The batch indices, crop offsets and flips of steps ``first`` .. ``first + count - 1``,
    drawn at once as the JAX side draws them, on ``dev`` in one transfer each."""
    indices = pipeline.train_batches(first, count)["indices"]
    positions = np.arange(indices.shape[1])
    offsets, flips = jax.device_get(jax.vmap(
        lambda step: augmentation_draws(step_key(config.seed, step), positions, PAD))(
        np.arange(first, first + count)))
    if not config.augment:  # no crop (the offset that keeps the image), no flip
        offsets, flips = np.full_like(offsets, PAD), np.zeros_like(flips)
    return {k: torch.from_numpy(np.array(v)).to(dev, non_blocking=True)  # a writable copy
            for k, v in (("indices", indices), ("offsets", offsets), ("flips", flips))}


def crop_and_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                  pad: int = PAD) -> torch.Tensor:
    """uint8 NHWC ``images`` zero-padded by ``pad``, cropped back at ``offsets`` (dy, dx) and
    flipped where ``flips``: the in-memory pipeline's augmentation, as one gather."""
    batch, height, width, channels = images.shape
    padded = images.new_zeros((batch, height + 2 * pad, width + 2 * pad, channels))
    padded[:, pad:pad + height, pad:pad + width] = images
    across = torch.arange(width, device=images.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)
    columns = offsets[:, 1, None] + torch.where(flips[:, None], width - 1 - across, across)
    examples = torch.arange(batch, device=images.device)[:, None, None]
    return padded[examples, rows[:, :, None], columns[:, None, :]]


class DeviceData:
    """Both splits as uint8 and int64 tensors on the device, and their normalisation."""

    def __init__(self, dataset: datasets.Dataset, dev: torch.device, channels_last: bool):
        self.train_images = torch.from_numpy(dataset.train.images).to(dev)
        self.train_labels = torch.from_numpy(dataset.train.labels).long().to(dev)
        self.test_images = torch.from_numpy(dataset.test.images).to(dev)
        self.test_labels = torch.from_numpy(dataset.test.labels).long().to(dev)
        self.mean = torch.tensor(dataset.mean, device=dev).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(dataset.std, device=dev).view(1, -1, 1, 1) * 255.0
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> float NCHW normalised with the dataset's statistics, as the pipeline."""
        x = images.permute(0, 3, 1, 2).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=self.layout)

    def train_batch(self, draws: dict[str, torch.Tensor],
                    index: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = draws["indices"][index]
        images = crop_and_flip(self.train_images[indices], draws["offsets"][index],
                               draws["flips"][index])
        return self.to_input(images), self.train_labels[indices]


def evaluate(model: torch.nn.Module, on_device: DeviceData, batch_size: int,
             amp: bool, flip: bool = False) -> dict[str, float]:
    """Loss and accuracy over the whole test split, read back once (with ``flip``, of the
    logits averaged over each image and its mirror, as the JAX side's eval_flip)."""
    model.eval()
    loss = correct = 0.0
    examples = len(on_device.test_labels)
    with torch.no_grad(), torch.autocast(on_device.mean.device.type, torch.bfloat16,
                                         enabled=amp):
        for start in range(0, examples, batch_size):
            images = on_device.to_input(on_device.test_images[start:start + batch_size])
            labels = on_device.test_labels[start:start + batch_size]
            logits = model(images).float()
            if flip:
                logits = (logits + model(images.flip(-1)).float()) / 2
            loss = loss + F.cross_entropy(logits, labels, reduction="sum")
            correct = correct + (logits.argmax(-1) == labels).sum()
    model.train()
    return {"test_loss": float(loss) / examples, "test_accuracy": float(correct) / examples,
            "eval_examples": examples}


# train.py's settings that the twin has no use for (an off value is nothing to ignore).
TWIN_IGNORES = {"log_grad_norms": "logs no gradient norms", "parallel": "trains on one device",
                "steps_per_call": "runs its steps one at a time",
                "checkpoint_every_steps": "saves no checkpoints",
                "keep_checkpoints": "saves no checkpoints",
                "remat": "keeps every activation (PyTorch's own memory)",
                "profile_steps": "writes no jax.profiler trace"}


def check_twin_config(config: ml_collections.ConfigDict, amp: bool,
                      chosen: Collection[str] = ()) -> list[str]:
    """ConfigError for a config the twin cannot follow as train.py would (``chosen``: as
    train.py's, the keys the user set); the warnings to show."""
    warnings = validate(config, 1, chosen)
    if config.pipeline != "in_memory":
        raise ConfigError(f"pipeline={config.pipeline}: the PyTorch twin draws its batches from "
                          "the in_memory pipeline; pass --config.pipeline=in_memory")
    if config.init_from:
        raise ConfigError("the PyTorch twin starts from the JAX initialisation of the config; "
                          "init_from is not supported: pass --config.init_from=''")
    if config.mixup_alpha or config.cutmix_alpha or config.random_erasing:
        raise ConfigError("the PyTorch twin neither mixes batches (MixUp, CutMix) nor erases "
                          "boxes; pass --config.mixup_alpha=0 --config.cutmix_alpha=0 "
                          "--config.random_erasing=0")
    if config.ema_decay:
        raise ConfigError(f"ema_decay={config.ema_decay}: the PyTorch twin keeps no moving "
                          "average of the weights; pass --config.ema_decay=0")
    if config.drop_path_rate or config.drop_rate:
        raise ConfigError(f"drop_path_rate={config.drop_path_rate}, drop_rate="
                          f"{config.drop_rate}: the PyTorch twin has no stochastic depth or "
                          "head dropout; pass --config.drop_path_rate=0 --config.drop_rate=0")
    if config.dtype == "bfloat16" and not amp:
        raise ConfigError("dtype=bfloat16 computes in bfloat16 in JAX; pass --amp for the same in "
                          "PyTorch")
    ignored = [f"{key}={config[key]!r} has no effect in the PyTorch twin, which {why}; leave "
               f"out --config.{key}" for key, why in TWIN_IGNORES.items()
               if key in chosen and config[key]]
    if ignored:
        raise ConfigError("; ".join(ignored))
    return warnings


def train(config: ml_collections.ConfigDict, workdir: str | Path, amp: bool = False,
          channels_last: bool = False, compile_model: bool = False,
          chosen: Collection[str] = ()) -> dict[str, Any]:
    """Train ``config`` in PyTorch on one device; returns the summary (JAX trainer's schema)."""
    started = time.time()
    for warning in check_twin_config(config, amp, chosen):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    config = resolved(config)  # named as train.py names it
    workdir = Path(workdir)
    if (workdir / CONFIG_FILE).exists() or (workdir / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{workdir} holds a train.py run; pass another --workdir for the "
                          "PyTorch side")
    pipeline = build_pipeline(config)
    workdir.mkdir(parents=True, exist_ok=True)
    write_twin_config(workdir, config)
    data_seconds = time.time() - started
    dev = device()
    model = initial_model(config, pipeline.image_shape).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    forward = torch.compile(model) if compile_model else model
    rates = np.asarray(jax.vmap(learning_rate_schedule(config))(np.arange(config.num_train_steps)))
    on_device = DeviceData(pipeline.dataset, dev, channels_last)
    writer = MetricWriter(workdir)
    throughput, compile_seconds = Throughput(config.batch_size), 0.0
    loss_sum = correct_sum = window_start = 0  # device tensors once training runs
    draws, drawn_from = None, 0
    model.train()
    first_step_started = time.time()
    for step in tqdm(range(config.num_train_steps), unit="step", mininterval=1.0):
        if draws is None or step - drawn_from == len(draws["indices"]):
            draws, drawn_from = stretch_draws(pipeline, config, step,
                                              next_event(step, config) - step, dev), step
        x, y = on_device.train_batch(draws, step - drawn_from)
        for group in optimizer.param_groups:
            group["lr"] = float(rates[step])
        with torch.autocast(dev.type, torch.bfloat16, enabled=amp):
            logits = forward(x).float()
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum = loss_sum + loss.detach()  # no host synchronisation until a log step
        correct_sum = correct_sum + (logits.argmax(-1) == y).sum()
        if step == 0:  # the first step warms up (and compiles): not timed
            loss_sum.item()
            compile_seconds = time.time() - first_step_started
            throughput.restart()
        else:
            throughput.count(1)
        done, record = step + 1, {}
        if done % config.log_every_steps == 0 or done == config.num_train_steps:
            steps = done - window_start
            record = {"train_loss": float(loss_sum) / steps,
                      "train_accuracy": float(correct_sum) / (steps * config.batch_size),
                      "learning_rate": float(np.mean(rates[window_start:done]))}
            rate = throughput.window()
            if rate is not None:
                record["images_per_sec"] = rate
            loss_sum = correct_sum = 0
            window_start = done
        if done % config.eval_every_steps == 0 or done == config.num_train_steps:
            with throughput.paused():
                record.update(evaluate(model, on_device, config.eval_batch_size, amp,
                                       config.eval_flip))
        if record:
            writer.write(done, {"epoch": done / pipeline.steps_per_epoch, **record,
                                "wall_seconds": time.time() - started})
    writer.close()
    segment = {"first_step": 0, "last_step": config.num_train_steps,
               "wall_seconds": time.time() - started, "data_seconds": data_seconds,
               "compile_seconds": compile_seconds}
    ending = Ending(config.num_train_steps, timing_summary([segment]), throughput.rates, str(dev))
    return finish_run(workdir, config, ending)


def main(argv: list[str]) -> None:
    del argv
    jax.config.update("jax_platforms", "cpu")  # JAX only draws here: the GPU is PyTorch's
    try:
        train(FLAGS.config, FLAGS.workdir, FLAGS.amp, FLAGS.channels_last,
              FLAGS["compile"].value, chosen_config_keys())
    except KeyboardInterrupt:
        raise SystemExit("error: stopped by Ctrl-C; the PyTorch side does not resume: start "
                         "it again from the beginning") from None
    except ResNetError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)
