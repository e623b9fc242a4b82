"""What the host does between a run's compiled calls, on the config's cadences: check the
loss, log, evaluate, save, agree on a stop request, and keep the progress bar."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax.data import description
from resnet_jax.data.pipelines import Pipeline
from resnet_jax.errors import TrainingDiverged
from resnet_jax.models import build_model
from resnet_jax.progress import progress_bar, showing, warn
from resnet_jax.runs import checkpoints
from resnet_jax.train import scoring, utilisation
from resnet_jax.train.interrupts import StopRequests
from resnet_jax.train.metrics import MetricWriter, Throughput
from resnet_jax.train.train_calls import TrainCalls
from resnet_jax.train.training import AveragedTrainState, mean_metrics


class HostEvents:
    """What the host does between calls on the config's cadences: check the loss, log,
    evaluate, save, and agree with the other processes on a stop request; the progress
    bar, the throughput and the metric rows."""

    def __init__(self, config: ml_collections.ConfigDict, calls: TrainCalls,
                 manager: ocp.CheckpointManager, writer: MetricWriter | None,
                 measure: utilisation.Meter, stop: StopRequests, trace_dir: Path):
        self.config, self.calls, self.manager, self.writer = config, calls, manager, writer
        self.profile = ProfileWindow(tuple(config.get("profile_steps", (0, 0))), trace_dir)
        self.measure, self.stop = measure, stop
        self.meters = {calls.pipeline.image_shape[0]: measure}
        pipeline = calls.pipeline
        self.p_eval = scoring.parallel_eval(build_model(config).apply, pipeline.prepare_eval,
                                               config.parallel, config.eval_flip)
        self.eval_batch = scoring.batch_size(config.eval_batch_size, pipeline.eval_examples,
                                                jax.device_count())
        self.description = description.describe(config, pipeline)  # kept in every checkpoint too
        self.throughput = Throughput(config.batch_size)
        self.recent: list = []  # the calls since the loss was last checked
        self.shown: dict[str, str] = {}  # the latest metrics, on the bar
        self.bar = None
        self.peak_warned = False

    def begin(self, step: int, first: tuple) -> None:
        """The first call has run up to ``step``: the steps' bar and the throughput start."""
        self.bar = progress_bar(step, self.config.num_train_steps)
        self.recent = [first]
        self.throughput.restart()
        self.profile.begin(first[0], self.bar)  # where the first call began

    def dispatched(self, step: int, count: int, watched: dict[str, jax.Array]) -> None:
        self.recent.append((step, count, watched))
        self.throughput.count(count)
        self.bar.update(count)

    def at(self, state: Any, step: int) -> tuple[Any, bool]:
        """The events due at ``step``; (state, whether a signal asked the run to stop, in
        which case a checkpoint of ``step`` has been saved)."""
        config, last = self.config, self.config.num_train_steps
        self.profile.stop_at(step, state, self.bar)
        log_now = _due(step, config.log_every_steps, last)
        save_now = _due(step, config.checkpoint_every_steps, last)
        eval_now = _due(step, config.eval_every_steps, last)
        if save_now or eval_now or log_now:
            check_finite(self.recent, self.manager)  # waits for the device
            self.recent = []
        interrupted = self.stop.agreed(log_now)  # after the wait: a signal meanwhile counts
        if interrupted and self.recent:
            check_finite(self.recent, self.manager)
        record = {}
        if log_now:
            side = self.calls.pipeline.train_size(step - 1)
            state, record = log_window(state, self.throughput, self.calls.where,
                                       self.meter(side))
            if config.min_image_size:  # the figures are of the window's last size
                record["image_size"] = side
            self.check_peak(record)
        with self.throughput.paused():
            if eval_now:
                record.update(self.evaluate(state))
            self.show(record)
            if record and self.writer:
                self.writer.write(step, {"epoch": step / self.calls.pipeline.steps_per_epoch,
                                         **record})
            if save_now or interrupted:
                self.save(state, record.get("test_accuracy"))
        if interrupted:
            self.bar.write(f"stop requested by a signal: checkpoint saved at step {step}")
        self.profile.start_at(step)
        return state, interrupted

    def meter(self, side: int) -> utilisation.Meter:
        """The run's meter for training images of ``side`` (progressive resizing)."""
        if side not in self.meters:
            self.meters[side] = dataclasses.replace(self.measure, image_flops=(
                utilisation.flops_per_image(build_model(self.config), (side, side, 3))))
        return self.meters[side]

    def check_peak(self, record: dict[str, float]) -> None:
        """Warn once when the run goes faster than its peak: the peak is wrong."""
        if record.get("mfu", 0.0) > 1.0 and not self.peak_warned:
            self.peak_warned = True
            self.bar.write(f"warning: mfu {record['mfu']:.0%} is above 100%: the peak of "
                           f"{record['peak_tflops']:g} TFLOP/s per device is below what the "
                           "devices do; give the right one with --config.peak_tflops",
                           file=sys.stderr)

    def evaluate(self, state: Any) -> dict[str, float]:
        with showing(self.bar, "evaluating"):
            return evaluate(self.p_eval, state, self.calls.resident, self.calls.pipeline,
                            self.eval_batch, self.config.num_classes)

    def show(self, record: dict[str, float]) -> None:
        """The record's figures on the progress bar."""
        formats = {"train_loss": ("loss", "{:.3f}"), "train_accuracy": ("acc", "{:.3f}"),
                   "images_per_sec": ("img_s", "{:.0f}"), "mfu": ("mfu", "{:.1%}"),
                   "test_accuracy": ("test_acc", "{:.3f}"),
                   "test_top5_accuracy": ("top5", "{:.3f}"),
                   "ema_test_accuracy": ("ema_acc", "{:.3f}")}
        shown = {name: form.format(record[key]) for key, (name, form) in formats.items()
                 if key in record}
        if shown:
            self.shown.update(shown)
            self.bar.set_postfix(self.shown, refresh=False)

    def save(self, state: Any, accuracy: float | None) -> None:
        best = None if accuracy is None else {"test_accuracy": accuracy}
        with showing(self.bar, "saving checkpoint"):
            checkpoints.save(self.manager, state, best, self.calls.pipeline.get_state(),
                             self.description)

    def finish(self) -> None:
        """Wait for the last checkpoint to be written (and end a trace a stop cut short)."""
        self.profile.stop_at(None, None, self.bar)
        with showing(self.bar, "saving checkpoint"):
            self.manager.wait_until_finished()


class ProfileWindow:
    """A jax.profiler trace of the steps of ``window`` (FIRST, LAST; (0, 0): none) into
    ``trace_dir`` (the run's TensorBoard folder: its profile tab, or Perfetto). The calls
    end at both edges (:func:`resnet_jax.train.train_calls.next_event`), so the trace holds those
    steps' calls and no evaluation or checkpoint."""

    def __init__(self, window: tuple[int, int], trace_dir: Path):
        self.first, self.last = window
        self.trace_dir, self.tracing = trace_dir, False

    def begin(self, step: int, bar: Any) -> None:
        """Say where a window already begun (a resumed run) is not traced."""
        if self.first and step >= self.first:
            bar.write(f"warning: profile_steps=({self.first}, {self.last}) begins before step "
                      f"{step}, where this run goes on: nothing is traced; pass a later window",
                      file=sys.stderr)
            self.first = 0

    def start_at(self, step: int) -> None:
        if self.first and step == self.first and jax.process_index() == 0:
            jax.profiler.start_trace(str(self.trace_dir))
            self.tracing = True

    def stop_at(self, step: int | None, state: Any, bar: Any) -> None:
        """End the trace at its last step (``None``: wherever the run stopped)."""
        if not self.tracing or (step is not None and step != self.last):
            return
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        self.tracing = False
        end = self.last if step is not None else "the stop"
        bar.write(f"profile of steps {self.first} to {end}: {self.trace_dir} (TensorBoard's "
                  "profile tab, or Perfetto)", file=sys.stderr)


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def check_finite(recent: list[tuple[int, int, dict[str, jax.Array]]],
                 manager: ocp.CheckpointManager) -> None:
    """Raise TrainingDiverged naming the first step whose loss is not finite; ``recent``
    holds (first step, steps run, per-step watched metrics) of the calls since the last
    check."""
    for first, count, watched in jax.device_get(recent):
        losses = watched["train_loss"][:count]
        bad = np.flatnonzero(~np.isfinite(losses))
        if not bad.size:
            continue
        manager.wait_until_finished()
        kept = manager.latest_step()
        kept = (f"the last good checkpoint is step {kept}" if kept is not None
                else "no checkpoint had been saved yet")
        i = bad[0]
        raise TrainingDiverged(
            f"train loss became {losses[i]} at step {first + i + 1} (learning rate "
            f"{watched['learning_rate'][i]:.4g}); nothing after it was saved, {kept}; lower "
            "--config.learning_rate (or add warm-up) and start again with the same --workdir")


def evaluate(p_eval: Callable, state: Any, resident: Any, pipeline: Pipeline,
             batch_size: int, classes: int) -> dict[str, float]:
    """The test metrics of ``state`` over the whole test split, each readable example
    exactly once (see :func:`scoring.test_metrics`); those of its moving average too,
    prefixed ``ema_``, where it keeps one."""
    def test_metrics(variables: Any) -> dict[str, float]:
        sums = scoring.totals(p_eval, variables, resident, pipeline.eval_batches(batch_size))
        return scoring.test_metrics(sums, classes)

    metrics = test_metrics({"params": state.params, "batch_stats": state.batch_stats})
    if not metrics["eval_examples"]:
        warn("no evaluation image could be read: no test metrics at this step")
    elif isinstance(state, AveragedTrainState):
        metrics.update({f"ema_{name}": value for name, value in test_metrics(state.ema).items()
                        if name.startswith("test_")})
    return metrics


def log_window(state: Any, throughput: Throughput, where: Any,
               measure: utilisation.Meter) -> tuple[Any, dict[str, float]]:
    """The means of the metrics summed since the last log (then reset), images/s, and the
    TFLOP/s and mfu they make."""
    sums = jax.device_get(state.metric_sums)
    record = mean_metrics(sums)
    state = state.replace(metric_sums=jax.device_put(jax.tree.map(np.zeros_like, sums), where))
    rate = throughput.window()
    if rate is not None:
        record.update(images_per_sec=rate, **measure(rate))
    return state, record


def run_meter(config: ml_collections.ConfigDict, pipeline: Pipeline) -> utilisation.Meter:
    """The run's TFLOP/s and mfu meter; without a known peak, a line saying so."""
    measure = utilisation.meter(build_model(config), pipeline.image_shape, config.dtype,
                                config.peak_tflops)
    if measure.peak is None and jax.process_index() == 0:
        print(f"mfu: no peak TFLOP/s known for {jax.devices()[0].device_kind} ({config.dtype}); "
              "--config.peak_tflops=N (per device) gives one")
    return measure
