"""The same recipe in PyTorch: same model, initial weights, batches, augmentation and schedule.

    python -m benchmarks.torch_train --config configs/cifar10_resnet20.py \\
        --workdir runs/r20_torch [--config.key=value ...] [--amp] [--channels_last] [--compile]

The initial weights are the JAX initialisation of the same config, exported
through resnet_jax.torch_compat; the batch order and the crop/flip draws are
made by resnet_jax.data's functions of (seed, step), so both frameworks train
the same function on the same batches. Writes metrics.jsonl, summary.json and
curves.png in the JAX trainer's schema. No resume: this is the reference side.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

try:
    import torch
except ModuleNotFoundError:  # not in the README's main install
    raise SystemExit("error: this script runs PyTorch too; install it with "
                     "pip install -r requirements-dev.txt") from None
import torch.nn.functional as F
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

if not __package__:  # run as a file (python benchmarks/torch_train.py): import from the repository
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.torch_models import torch_model
from resnet_jax import data
from resnet_jax.config_schema import ConfigError
from resnet_jax.loop import finish_run
from resnet_jax.metrics import MetricWriter, Throughput, timing_summary
from resnet_jax.models import build_model
from resnet_jax.pipelines import build_pipeline, step_key
from resnet_jax.pipelines.in_memory import augmentation_draws, eval_batches
from resnet_jax.torch_compat import to_torchvision
from resnet_jax.training import create_train_state, learning_rate_schedule, mean_metrics

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
    """The optimizer of resnet_jax.training.make_optimizer (learning rate set per step)."""
    decay = [p for p in model.parameters() if config.decay_norm_and_bias or p.ndim > 1]
    no_decay = [p for p in model.parameters() if not (config.decay_norm_and_bias or p.ndim > 1)]
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=0.0)
    return torch.optim.AdamW(groups, lr=0.0)


def augment(images: np.ndarray, seed: int, step: int, pad: int = 4) -> np.ndarray:
    """The crop and flip of the in-memory pipeline, with the very same draws."""
    offsets, flips = jax.device_get(augmentation_draws(
        step_key(seed, step), np.arange(len(images)), pad))
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    crops = np.stack([padded[i, dy:dy + height, dx:dx + width]
                      for i, (dy, dx) in enumerate(offsets)])
    return np.where(flips[:, None, None, None], crops[:, :, ::-1], crops)


def to_input(images: np.ndarray, dataset: data.Dataset, dev: torch.device,
             channels_last: bool) -> torch.Tensor:
    """uint8 NHWC -> float NCHW normalised with the dataset's statistics, as the pipeline."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dev).float()
    mean = torch.tensor(dataset.mean, device=dev) * 255.0
    std = torch.tensor(dataset.std, device=dev) * 255.0
    x = ((x - mean) / std).permute(0, 3, 1, 2)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=layout)


def evaluate(model: torch.nn.Module, dataset: data.Dataset, batch_size: int,
             dev: torch.device, channels_last: bool, amp: bool) -> dict[str, float]:
    model.eval()
    loss = correct = count = 0.0
    split = dataset.test
    with torch.no_grad(), torch.autocast(dev.type, torch.bfloat16, enabled=amp):
        for indices, mask in eval_batches(len(split), batch_size):
            logits = model(to_input(split.images[indices], dataset, dev, channels_last)).float()
            labels = torch.from_numpy(split.labels[indices]).long().to(dev)
            weight = torch.from_numpy(mask).to(dev)
            loss += float((F.cross_entropy(logits, labels, reduction="none") * weight).sum())
            correct += float(((logits.argmax(-1) == labels) * weight).sum())
            count += float(weight.sum())
    model.train()
    return {"test_loss": loss / count, "test_accuracy": correct / count,
            "eval_examples": int(count)}


def train(config: ml_collections.ConfigDict, workdir: str | Path, amp: bool = False,
          channels_last: bool = False, compile_model: bool = False) -> dict[str, Any]:
    """Train ``config`` in PyTorch on one device; returns the summary (JAX trainer's schema)."""
    started = time.time()
    if config.pipeline != "in_memory":
        raise ConfigError(f"pipeline={config.pipeline}: the PyTorch twin draws its batches from "
                          "the in_memory pipeline; pass --config.pipeline=in_memory")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(config)
    dataset = pipeline.dataset
    data_seconds = time.time() - started
    dev = device()
    model = initial_model(config, pipeline.image_shape).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model)
    forward = torch.compile(model) if compile_model else model
    rates = np.asarray(jax.vmap(learning_rate_schedule(config))(np.arange(config.num_train_steps)))
    writer = MetricWriter(workdir)
    sums, throughput, compile_seconds = {}, Throughput(config.batch_size), 0.0
    model.train()
    first_step_started = time.time()
    for step in tqdm(range(config.num_train_steps), unit="step", mininterval=1.0):
        indices = pipeline.train_batches(step, 1)["indices"][0]
        images = dataset.train.images[indices]
        if config.augment:
            images = augment(images, config.seed, step)
        x = to_input(images, dataset, dev, channels_last)
        y = torch.from_numpy(dataset.train.labels[indices]).long().to(dev)
        for group in optimizer.param_groups:
            group["lr"] = float(rates[step])
        with torch.autocast(dev.type, torch.bfloat16, enabled=amp):
            logits = forward(x).float()
        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        metrics = {"train_loss": float(loss.detach()),
                   "train_accuracy": float((logits.argmax(-1) == y).float().mean()),
                   "learning_rate": float(rates[step])}
        sums = {k: sums.get(k, np.zeros(2)) + (v, 1.0) for k, v in metrics.items()}
        if step == 0:  # the first step warms up (and compiles): not timed
            compile_seconds = time.time() - first_step_started
            throughput.restart()
        else:
            throughput.count(1)
        done, record = step + 1, {}
        if done % config.log_every_steps == 0 or done == config.num_train_steps:
            record = mean_metrics(sums)
            rate = throughput.window()
            if rate is not None:
                record["images_per_sec"] = rate
            sums = {}
        if done % config.eval_every_steps == 0 or done == config.num_train_steps:
            with throughput.paused():
                record.update(evaluate(model, dataset, config.eval_batch_size, dev,
                                       channels_last, amp))
        if record:
            writer.write(done, {"epoch": done / pipeline.steps_per_epoch, **record,
                                "wall_seconds": time.time() - started})
    writer.close()
    segment = {"first_step": 0, "last_step": config.num_train_steps,
               "wall_seconds": time.time() - started, "data_seconds": data_seconds,
               "compile_seconds": compile_seconds}
    return finish_run(workdir, config, config.num_train_steps, timing_summary([segment]),
                      throughput.rates, False, devices=str(dev))


def main(argv: list[str]) -> None:
    del argv
    try:
        train(FLAGS.config, FLAGS.workdir, FLAGS.amp, FLAGS.channels_last,
              FLAGS["compile"].value)
    except (ConfigError, data.DataError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
