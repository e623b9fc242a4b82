"""train_and_evaluate(): the training run, from a config and a work directory to results."""

from __future__ import annotations

import contextlib
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from tqdm import tqdm

from resnet_jax import checkpoints, data, list_models
from resnet_jax.metrics import MetricWriter, plot_curves, read_metrics, write_summary
from resnet_jax.training import (
    build_model,
    create_train_state,
    mean_metrics,
    parallel_steps,
    placement,
    process_share,
)

# Changing any of these makes a saved run a different experiment: resuming is refused.
RESUME_KEYS = ("model", "num_classes", "residual", "zero_init_residual", "optimizer",
               "nesterov", "dataset", "batch_size", "seed", "dtype")


class ConfigError(ValueError):
    """The config or the command line cannot work; the message says what to change."""


class TrainingDiverged(RuntimeError):
    """The train loss became NaN or infinite; nothing after the last good step was saved."""


def check_finite(recent: list[tuple[int, dict[str, jax.Array]]],
                 manager: ocp.CheckpointManager) -> None:
    """Raise TrainingDiverged naming the first step whose loss is not finite."""
    for step, metrics in jax.device_get(recent):
        if not np.isfinite(metrics["train_loss"]):
            manager.wait_until_finished()
            raise TrainingDiverged(
                f"train loss became {metrics['train_loss']} at step {step} (learning rate "
                f"{metrics['learning_rate']:.4g}); nothing after it was saved, the last good "
                f"checkpoint is step {manager.latest_step()}; lower --config.learning_rate "
                "(or add warm-up) and start again with the same --workdir to resume from it")


def check_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    choices = {"model": list_models(), "optimizer": ("sgd", "adam", "adamw"),
               "schedule": ("piecewise", "cosine", "onecycle"), "dtype": ("float32", "bfloat16"),
               "parallel": ("pmap", "shard_map")}
    for key, valid in choices.items():
        if config[key] not in valid:
            raise ConfigError(f"unknown {key} {config[key]!r}; set --config.{key} to one of: "
                              f"{', '.join(valid)}")
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % num_devices:
            raise ConfigError(f"{key}={config[key]} is not divisible by the {num_devices} "
                              f"devices; use a multiple of {num_devices}")


def prepare_workdir(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Create the work directory; refuse to resume a different experiment there."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"cannot write to workdir {workdir} ({error.strerror}); "
                          "pass a --workdir you can write to") from None
    saved = checkpoints.load_config(workdir)
    if saved is not None and checkpoints.has_checkpoints(workdir):
        changed = [k for k in RESUME_KEYS if k in saved and saved[k] != config[k]]
        if changed:
            details = ", ".join(f"{k}: {saved[k]!r} -> {config[k]!r}" for k in changed)
            raise ConfigError(f"{workdir} holds a run with a different setup ({details}); "
                              "use a new --workdir, or the saved config to resume")


def check_dataset(dataset: data.Dataset, config: ml_collections.ConfigDict) -> None:
    top = int(max(dataset.train.labels.max(), dataset.test.labels.max()))
    if top >= config.num_classes or min(dataset.train.labels.min(), dataset.test.labels.min()) < 0:
        raise data.DataError(f"labels run from 0 to {top} but num_classes={config.num_classes}; "
                             f"set --config.num_classes={top + 1}")
    if config.batch_size > len(dataset.train):
        raise ConfigError(f"batch_size={config.batch_size} exceeds the {len(dataset.train)} "
                          "training examples; use a smaller --config.batch_size")


def agreed_stop(received: list[int], at_log_step: bool) -> bool:
    """Whether to stop after this step. Several processes must stop at the same step:
    they compare their signals at log steps (a collective), and stop if any got one."""
    if jax.process_count() == 1:
        return bool(received)
    if not at_log_step:
        return False
    return bool(multihost_utils.process_allgather(np.int32(bool(received))).any())


@contextlib.contextmanager
def stop_requests() -> Iterator[list[int]]:
    """Catch SIGTERM and SIGINT; the list holds the signals received."""
    received: list[int] = []
    handlers = {sig: signal.signal(sig, lambda s, _: received.append(s))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def evaluate(p_eval, state, test: tuple[jax.Array, jax.Array], num_examples: int,
             batch_size: int) -> dict[str, float]:
    """Loss and accuracy over the whole test split, each example exactly once."""
    sums = []
    for indices, mask in data.eval_batches(num_examples, batch_size):
        sums.append(p_eval(state, *test, process_share(indices), process_share(mask)))
    totals = {k: float(np.sum([s[k] for s in jax.device_get(sums)])) for k in sums[0]}
    return {"test_loss": totals["loss"] / totals["count"],
            "test_accuracy": totals["correct"] / totals["count"],
            "eval_examples": int(totals["count"])}


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` on every device, resuming from ``workdir`` if it holds a run.

    Writes metrics.jsonl, TensorBoard events, checkpoints, summary.json and
    curves.png under ``workdir``; returns the summary. SIGTERM or SIGINT saves a
    checkpoint of the current step and returns early (``summary['interrupted']``).
    Under ``jax.distributed`` every process calls this with the same arguments:
    each feeds its own devices, all save checkpoints together, process 0 alone
    writes metrics, summary and plot.
    """
    started = time.time()
    workdir = Path(workdir)
    chief = jax.process_index() == 0
    check_config(config, jax.device_count())
    prepare_workdir(workdir, config)
    dataset = data.load_dataset(config)
    check_dataset(dataset, config)
    if chief:
        checkpoints.save_config(workdir, config)

    where = placement(config)
    model = build_model(config)
    state = create_train_state(config, model, dataset.train.images.shape[1:])
    state = jax.device_put(state, where)
    manager = checkpoints.checkpoint_manager(workdir, config.keep_checkpoints)
    state = checkpoints.restore_latest(manager, state)
    start = int(state.step)
    train = jax.device_put((dataset.train.images, dataset.train.labels), where)
    test = jax.device_put((dataset.test.images, dataset.test.labels), where)
    p_train, p_eval = parallel_steps(config)
    writer = MetricWriter(workdir, resume_step=start) if chief else None

    steps_per_epoch = len(dataset.train) // config.batch_size
    last = config.num_train_steps
    timed_steps, throughput, compile_seconds, recent = 0, [], 0.0, []
    with stop_requests() as stop, tqdm(total=last, initial=start, unit="step", disable=not chief,
                                       dynamic_ncols=True, mininterval=1.0) as bar:
        for step in range(start, last):
            indices = data.train_indices(config.seed, step, config.batch_size, len(dataset.train))
            state, metrics = p_train(state, *train, process_share(indices))
            if step == start:  # the first step compiles: time it, keep it out of images/s
                jax.block_until_ready(metrics)
                compile_seconds = time.time() - started
                window_start = time.time()
            else:
                timed_steps += 1
            bar.update(1)
            done, record = step + 1, {}
            recent.append((done, metrics))
            log_now = _due(done, config.log_every_steps, last)
            interrupted = agreed_stop(stop, log_now)
            save_now = _due(done, config.checkpoint_every_steps, last) or interrupted
            eval_now = _due(done, config.eval_every_steps, last)
            if save_now or eval_now or log_now:
                check_finite(recent, manager)
                recent = []
            if log_now:
                record_sums = jax.device_get(state.metric_sums)
                record = mean_metrics(record_sums)
                state = state.replace(metric_sums=jax.device_put(
                    jax.tree.map(np.zeros_like, record_sums), where))
                if timed_steps:
                    record["images_per_sec"] = (timed_steps * config.batch_size
                                                / (time.time() - window_start))
                    throughput.append(record["images_per_sec"])
                bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                                acc=f"{record['train_accuracy']:.3f}",
                                img_s=f"{record.get('images_per_sec', 0):.0f}")
                timed_steps, window_start = 0, time.time()
            pause_start = time.time()
            eval_metrics = None
            if eval_now:
                eval_metrics = evaluate(p_eval, state, test, len(dataset.test),
                                        config.eval_batch_size)
                record.update(eval_metrics)
            if record and writer:
                writer.write(done, {"epoch": done / steps_per_epoch, **record})
            if save_now:
                best_metric = eval_metrics and {"test_accuracy": eval_metrics["test_accuracy"]}
                checkpoints.save(manager, state, best_metric)
            window_start += time.time() - pause_start  # evaluation is not training time
            if interrupted:
                bar.write(f"stop requested by a signal: checkpoint saved at step {done}")
                break
    manager.wait_until_finished()
    manager.close()
    if writer:
        writer.close()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("resnet_jax: metrics written")
    return finish_run(workdir, config, int(state.step), started, compile_seconds, throughput,
                      interrupted, devices=jax.device_count(), write=chief)


def finish_run(workdir: Path, config: ml_collections.ConfigDict, steps: int, started: float,
               compile_seconds: float, throughput: list[float], interrupted: bool,
               devices: int | str, write: bool = True) -> dict[str, Any]:
    """The summary of metrics.jsonl; with ``write``, also summary.json, curves.png and
    the printed table."""
    records = read_metrics(workdir)
    evals = [r for r in records if "test_accuracy" in r]
    best = max(evals, key=lambda r: r["test_accuracy"], default={})
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "steps": steps,
        "epochs": records[-1]["epoch"] if records else 0.0,
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "final_test_loss": evals[-1]["test_loss"] if evals else None,
        "best_test_accuracy": best.get("test_accuracy"),
        "best_step": best.get("step"),
        "eval_examples": evals[-1]["eval_examples"] if evals else 0,
        "final_train_loss": next((r["train_loss"] for r in reversed(records)
                                  if "train_loss" in r), None),
        "wall_seconds": time.time() - started,
        "compile_seconds": compile_seconds,
        "median_images_per_sec": statistics.median(throughput) if throughput else None,
        "devices": devices,
        "interrupted": interrupted,
    }
    if write:
        write_summary(workdir, summary)
        if records:
            plot_curves(records, workdir / "curves.png")
        print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
        return str(value)

    width = max(len(k) for k in summary)
    return "\n".join(f"{k:<{width}}  {show(v)}" for k, v in summary.items())
