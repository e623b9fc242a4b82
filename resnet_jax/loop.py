"""train_and_evaluate(): the training run, from a config and a work directory to results."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from resnet_jax import checkpoints, config_schema, data
from resnet_jax.config_schema import ConfigError
from resnet_jax.interrupts import StopRequests, all_or_none, stop_requests
from resnet_jax.metrics import MetricWriter, plot_curves, read_metrics, write_summary
from resnet_jax.training import (
    build_model,
    create_train_state,
    mean_metrics,
    parallel_steps,
    placement,
    process_share,
)
from resnet_jax.workdir import (
    CURVES_FILE,
    SUMMARY_FILE,
    Lock,
    check_ownership,
    create,
    latest_checkpoint_step,
    read_config,
    read_metrics_file,
    remove_if_empty,
)


class TrainingDiverged(RuntimeError):
    """The train loss became NaN or infinite; nothing after the last good step was saved."""


def check_finite(recent: list[tuple[int, dict[str, jax.Array]]],
                 manager: ocp.CheckpointManager) -> None:
    """Raise TrainingDiverged naming the first step whose loss is not finite."""
    for step, metrics in jax.device_get(recent):
        if not np.isfinite(metrics["train_loss"]):
            manager.wait_until_finished()
            kept = manager.latest_step()
            kept = (f"the last good checkpoint is step {kept}" if kept is not None
                    else "no checkpoint had been saved yet")
            raise TrainingDiverged(
                f"train loss became {metrics['train_loss']} at step {step} (learning rate "
                f"{metrics['learning_rate']:.4g}); nothing after it was saved, {kept}; lower "
                "--config.learning_rate (or add warm-up) and start again with the same --workdir")


def claim_workdir(workdir: Path, cleanup: contextlib.ExitStack) -> None:
    """Make ``workdir`` this run's: refuse a directory of somebody else's or one in use;
    undo on exit what a start that never trained created."""
    check_ownership(workdir)
    if jax.process_index() != 0:
        return
    cleanup.callback(remove_if_empty, create(workdir))
    lock = Lock(workdir)
    lock.acquire()
    cleanup.callback(lock.release)


def check_previous_run(workdir: Path, config: ml_collections.ConfigDict) -> int | None:
    """Refuse to resume a run with changed fixed keys, damaged records or fewer steps
    than it has done; the latest step saved, None if the run is new."""
    saved = read_config(workdir)
    read_metrics_file(workdir)
    latest = latest_checkpoint_step(workdir)
    if latest is None:
        return None
    if saved is None:
        raise ConfigError(f"{workdir} holds checkpoints but no config.json, so a resume cannot "
                          "be checked against the run's settings; put config.json back, or "
                          "pass a new --workdir")
    changes = config_schema.changed_fixed_keys(saved, config)
    if changes:
        raise ConfigError(f"{workdir} holds a run with a different setup ({'; '.join(changes)}); "
                          "resume with the saved values, or pass a new --workdir for a new run")
    if config.num_train_steps < latest:
        raise ConfigError(f"num_train_steps={config.num_train_steps} is below step {latest}, "
                          f"where the run in {workdir} stands; pass --config.num_train_steps="
                          f"{latest} or more")
    return latest


def check_dataset(dataset: data.Dataset, config: ml_collections.ConfigDict) -> None:
    if dataset.num_classes < 2:
        raise data.DataError(f"the dataset has {dataset.num_classes} class; a classifier needs "
                             "at least 2: add class folders")
    if dataset.num_classes != config.num_classes:
        raise data.DataError(f"the dataset has {dataset.num_classes} classes but num_classes="
                             f"{config.num_classes}; set --config.num_classes="
                             f"{dataset.num_classes}")
    labels = np.concatenate([dataset.train.labels, dataset.test.labels])
    if labels.min() < 0 or labels.max() >= config.num_classes:
        raise data.DataError(f"labels run from {labels.min()} to {labels.max()} but num_classes="
                             f"{config.num_classes}; set --config.num_classes={labels.max() + 1}")
    if config.batch_size > len(dataset.train):
        raise ConfigError(f"batch_size={config.batch_size} exceeds the {len(dataset.train)} "
                          "training examples; use a smaller --config.batch_size")


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
    curves.png under ``workdir``; returns the summary. Everything is checked
    before anything is written: a refused start (ConfigError, DataError,
    WorkdirError, CheckpointError) leaves ``workdir`` as it was, and so does
    StartInterrupted (SIGTERM or SIGINT before the first step is done). After it,
    such a signal saves a checkpoint of the current step and returns early
    (``summary['interrupted']``). A finished run is not trained again: its
    summary is returned. Under ``jax.distributed`` every process calls this
    with the same arguments: each feeds its own devices, all save checkpoints
    together, process 0 alone writes metrics, summary and plot.
    """
    started = time.time()
    workdir = Path(workdir)
    with stop_requests() as stop, contextlib.ExitStack() as cleanup:
        with all_or_none():
            config_schema.validate(config, jax.device_count())
            claim_workdir(workdir, cleanup)
            latest = check_previous_run(workdir, config)
            if latest == config.num_train_steps:
                return report_finished(workdir, config)
            dataset = data.load_dataset(config)
            check_dataset(dataset, config)
        where = placement(config)
        state = jax.device_put(create_train_state(config, build_model(config),
                                                  dataset.train.images.shape[1:]), where)
        manager = None
        if latest is not None:
            manager = cleanup.enter_context(
                checkpoints.checkpoint_manager(workdir, config.keep_checkpoints))
            state = checkpoints.restore_latest(manager, state)
        start = int(state.step)

        def begin() -> tuple[ocp.CheckpointManager, MetricWriter | None]:
            """The first step is done (compiled): the run starts, and from here on writes."""
            stop.training()
            writer = None
            if jax.process_index() == 0:
                checkpoints.save_config(workdir, config)
                writer = MetricWriter(workdir, resume_step=start)
                cleanup.callback(writer.close)
            return manager or cleanup.enter_context(
                checkpoints.checkpoint_manager(workdir, config.keep_checkpoints)), writer

        state, timing, interrupted = train_loop(config, state, dataset, where, begin, stop)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("resnet_jax: metrics written")
        return finish_run(workdir, config, int(state.step), started, timing.compile_seconds,
                          timing.throughput, interrupted, devices=jax.device_count(),
                          write=jax.process_index() == 0)


class Timing:
    """Compile time of the first step, and images/s of each log window after it."""

    def __init__(self) -> None:
        self.compile_seconds = 0.0
        self.throughput: list[float] = []
        self.timed_steps = 0
        self.window_start = time.time()

    def step_done(self, first: bool, started: float) -> None:
        if first:  # the first step compiles: time it, keep it out of images/s
            self.compile_seconds = time.time() - started
            self.window_start = time.time()
        else:
            self.timed_steps += 1

    def images_per_sec(self, batch_size: int) -> float | None:
        """The rate of the window now ending; a new window starts."""
        rate = None
        if self.timed_steps:
            rate = self.timed_steps * batch_size / (time.time() - self.window_start)
            self.throughput.append(rate)
        self.timed_steps, self.window_start = 0, time.time()
        return rate

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside (evaluation, checkpoints) is not training time."""
        pause_start = time.time()
        yield
        self.window_start += time.time() - pause_start


def train_loop(config: ml_collections.ConfigDict, state: Any, dataset: data.Dataset,
               where: Any, begin: Callable[[], tuple[ocp.CheckpointManager, Any]],
               stop: StopRequests) -> tuple[Any, Timing, bool]:
    """Train from ``state.step`` to ``config.num_train_steps`` (or a stop request), logging,
    evaluating and saving on the config's cadences; (state, timing, interrupted).

    ``begin()``, called once the first step is done, opens the checkpoint manager and
    the metric writer (None outside process 0).
    """
    start, last = int(state.step), config.num_train_steps
    train = jax.device_put((dataset.train.images, dataset.train.labels), where)
    test = jax.device_put((dataset.test.images, dataset.test.labels), where)
    p_train, p_eval = parallel_steps(config)
    steps_per_epoch = len(dataset.train) // config.batch_size
    devices = jax.device_count()  # no larger eval batch than the test split, padded
    eval_batch = min(config.eval_batch_size, -(-len(dataset.test) // devices) * devices)
    timing, recent, interrupted, loop_started = Timing(), [], False, time.time()
    with tqdm(total=last, initial=start, unit="step", disable=jax.process_index() != 0,
              dynamic_ncols=True, mininterval=1.0) as bar:
        for step in range(start, last):
            indices = data.train_indices(config.seed, step, config.batch_size, len(dataset.train))
            state, metrics = p_train(state, *train, process_share(indices))
            if step == start:
                jax.block_until_ready(metrics)
                manager, writer = begin()
            timing.step_done(step == start, loop_started)
            bar.update(1)
            done, record = step + 1, {}
            recent.append((done, metrics))
            log_now = _due(done, config.log_every_steps, last)
            interrupted = stop.agreed(log_now)
            save_now = _due(done, config.checkpoint_every_steps, last) or interrupted
            eval_now = _due(done, config.eval_every_steps, last)
            if save_now or eval_now or log_now:
                check_finite(recent, manager)
                recent = []
            if log_now:
                state, record = log_window(state, timing, config.batch_size, where)
                bar.set_postfix(loss=f"{record['train_loss']:.3f}",
                                acc=f"{record['train_accuracy']:.3f}",
                                img_s=f"{record.get('images_per_sec', 0):.0f}")
            with timing.paused():
                eval_metrics = None
                if eval_now:
                    eval_metrics = evaluate(p_eval, state, test, len(dataset.test), eval_batch)
                    record.update(eval_metrics)
                if record and writer:
                    writer.write(done, {"epoch": done / steps_per_epoch, **record})
                if save_now:
                    best = eval_metrics and {"test_accuracy": eval_metrics["test_accuracy"]}
                    checkpoints.save(manager, state, best)
            if interrupted:
                bar.write(f"stop requested by a signal: checkpoint saved at step {done}")
                break
    manager.wait_until_finished()
    return state, timing, interrupted


def log_window(state: Any, timing: Timing, batch_size: int,
               where: Any) -> tuple[Any, dict[str, float]]:
    """The means of the metrics summed since the last log (then reset), and images/s."""
    sums = jax.device_get(state.metric_sums)
    record = mean_metrics(sums)
    state = state.replace(metric_sums=jax.device_put(jax.tree.map(np.zeros_like, sums), where))
    rate = timing.images_per_sec(batch_size)
    if rate is not None:
        record["images_per_sec"] = rate
    return state, record


def report_finished(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A finished run started again: its summary, printed by process 0; nothing changes
    (a summary lost to a kill after the last checkpoint is written again)."""
    path = workdir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        logging.warning("%s is missing or unreadable; rebuilt it from metrics.jsonl (the wall "
                        "and compile times of the run are unknown)", path)
        rates = [r["images_per_sec"] for r in read_metrics(workdir) if "images_per_sec" in r]
        return finish_run(workdir, config, config.num_train_steps, None, None, rates, False,
                          devices=jax.device_count(), write=jax.process_index() == 0)
    if jax.process_index() == 0:
        print(f"{workdir} holds a finished run of {config.num_train_steps} steps; to train "
              "longer, raise --config.num_train_steps")
        print(format_summary(summary))
    return summary


def finish_run(workdir: Path, config: ml_collections.ConfigDict, steps: int,
               started: float | None, compile_seconds: float | None, throughput: list[float],
               interrupted: bool,
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
        "wall_seconds": None if started is None else time.time() - started,
        "compile_seconds": compile_seconds,
        "median_images_per_sec": statistics.median(throughput) if throughput else None,
        "devices": devices,
        "interrupted": interrupted,
    }
    if write:
        write_summary(workdir, summary)
        if records:
            plot_curves(records, workdir / CURVES_FILE)
        print(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
        return str(value)

    width = max(len(k) for k in summary)
    return "\n".join(f"{k:<{width}}  {show(v)}" for k, v in summary.items())
