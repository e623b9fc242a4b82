"""train_and_evaluate(): the training run, from a config and a work directory to results."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from resnet_jax import checkpoints, config_schema, data, evaluation, utilisation, weights
from resnet_jax.config_schema import ConfigError
from resnet_jax.errors import TrainingDiverged
from resnet_jax.interrupts import StopRequests, all_or_none, stop_requests
from resnet_jax.metrics import (
    MetricWriter,
    RunClock,
    Throughput,
    timing_summary,
)
from resnet_jax.models import build_model
from resnet_jax.parallel import placement
from resnet_jax.pipelines import Pipeline, build_pipeline
from resnet_jax.report import Ending, finish_run, report_finished, resume_line
from resnet_jax.training import create_train_state, mean_metrics, parallel_train
from resnet_jax.workdir import (
    DATA_FILE,
    Lock,
    check_ownership,
    create,
    latest_checkpoint_step,
    read_config,
    read_data_description,
    read_metrics_file,
    remove_if_empty,
    write_config,
    write_data_description,
)


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


def check_config(config: ml_collections.ConfigDict, chosen: Collection[str] = ()) -> list[str]:
    """ConfigError for a config this trainer cannot run as given, here (see
    :func:`config_schema.validate`, and a chosen steps_per_call on a CPU); the warnings."""
    warnings = config_schema.validate(config, jax.device_count(), chosen)
    if "steps_per_call" in chosen and config.steps_per_call > 1 and not compiled_loops():
        raise ConfigError(f"steps_per_call={config.steps_per_call} has no effect on a CPU, "
                          f"which runs one train step per compiled call ({CPU_LOOPS}); leave "
                          "out --config.steps_per_call")
    return warnings


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


def check_same_data(workdir: Path, pipeline: Pipeline, config: ml_collections.ConfigDict) -> None:
    """A resumed run's data must be the data it trained on (classes, image counts and, in
    memory, statistics: see dataset.json, or its copy in the checkpoints)."""
    saved = checkpoints.saved_data_description(workdir)
    if saved is None:
        if jax.process_index() == 0:
            print(f"warning: {workdir} has no {DATA_FILE}, nor a copy in its checkpoints (they "
                  "predate it): the data cannot be checked against the run's; resuming on the "
                  "data as it is", file=sys.stderr, flush=True)
        return
    change = data.description_change(saved, data_description(config, pipeline))
    if change:
        raise data.DataError(f"the data has changed since the run in {workdir} trained on it "
                             f"({change}); restore the data, or pass a new --workdir")


def evaluate(p_eval: Callable, state: Any, resident: Any, pipeline: Pipeline,
             batch_size: int, classes: int) -> dict[str, float]:
    """The test metrics of ``state`` over the whole test split, each readable example
    exactly once (see :func:`evaluation.test_metrics`)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    sums = evaluation.totals(p_eval, variables, resident, pipeline.eval_batches(batch_size))
    metrics = evaluation.test_metrics(sums, classes)
    if not metrics["eval_examples"]:
        logging.warning("no evaluation image could be read: no test metrics at this step")
    return metrics


def data_description(config: ml_collections.ConfigDict, pipeline: Pipeline) -> dict[str, Any]:
    """What inference needs to know of the run's data (classes, statistics, image sizes; in
    memory, evaluation images are used at their size: no resize beyond it), and what tells
    the same data again (where it is, how many images each split holds)."""
    streaming = config.pipeline == "streaming"
    return {"dataset": config.dataset, "class_names": list(pipeline.class_names),
            "mean": list(pipeline.mean), "std": list(pipeline.std),
            "image_size": config.image_size,
            "eval_resize": config.eval_resize if streaming else config.image_size,
            "train_examples": pipeline.train_examples, "eval_examples": pipeline.eval_examples}


def restore_data_description(workdir: Path) -> None:
    """dataset.json, lost from a finished run, written back from its checkpoints' copy."""
    copy = checkpoints.latest_json_item(workdir, checkpoints.DATA)
    if copy is None:
        print(f"warning: {workdir / DATA_FILE} is missing and the run's checkpoints predate the "
              "copy they now keep: predict and evaluate cannot use this run", file=sys.stderr)
        return
    write_data_description(workdir, copy)
    print(f"warning: {workdir / DATA_FILE} was missing; wrote it back from the latest "
          "checkpoint's copy", file=sys.stderr, flush=True)


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       chosen: Collection[str] = ()) -> dict[str, Any]:
    """Train ``config`` on every device, resuming from ``workdir`` if it holds a run.

    Writes metrics.jsonl, TensorBoard events, checkpoints, summary.json and
    curves.png under ``workdir``; returns the summary. ``chosen`` names the config
    keys the user set (train.py: those on its command line): one that would have no
    effect is refused (see :func:`config_schema.validate`). Everything is checked
    before anything is written: a refused start (ConfigError, DataError,
    WorkdirError, CheckpointError) leaves ``workdir`` as it was, and so does
    StartInterrupted (SIGTERM or SIGINT before the train step is compiled). After
    that, such a signal ends the compiled call under way, saves a checkpoint of the
    step reached and returns early (``summary['interrupted']``). A finished run is
    not trained again: its summary is returned. Under ``jax.distributed`` every
    process calls this with the same arguments: each feeds its own devices, all save
    checkpoints together, process 0 alone writes metrics, summary and plot.
    """
    started = time.time()
    workdir = Path(workdir)
    with stop_requests() as stop, contextlib.ExitStack() as cleanup:
        with all_or_none():
            warnings = check_config(config, chosen)
            config = config_schema.resolved(config)  # the caller's stays as it is
            claim_workdir(workdir, cleanup)
            latest = check_previous_run(workdir, config)
            if latest == config.num_train_steps:
                if jax.process_index() == 0 and read_data_description(workdir) is None:
                    restore_data_description(workdir)
                return report_finished(workdir, config)
            data_started = time.time()
            pipeline = build_pipeline(config)
            cleanup.callback(pipeline.close)
            if latest is not None:
                check_same_data(workdir, pipeline, config)
            data_seconds = time.time() - data_started
            start_from = weights.initial_variables(config) if latest is None else None
        for warning in warnings if jax.process_index() == 0 else ():
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        where = placement(config)
        fit_start = (None if start_from is None
                     else functools.partial(weights.fit_variables, loaded=start_from))
        state = jax.device_put(create_train_state(config, build_model(config),
                                                  pipeline.image_shape, fit_start), where)
        manager = None
        if latest is not None:
            manager = cleanup.enter_context(
                checkpoints.checkpoint_manager(workdir, config.keep_checkpoints))
            state, pipeline_state = checkpoints.restore_latest(manager, state)
            if pipeline_state is not None:
                pipeline.set_state(pipeline_state, int(state.step))
        start = int(state.step)
        if latest is not None and jax.process_index() == 0:
            print(resume_line(workdir, start, config.num_train_steps), flush=True)

        measure = run_meter(config, pipeline)
        calls = TrainCalls(config, pipeline, where)
        first = first_call(calls, state)
        stop.training()  # compiled: the run starts, and from here on writes
        manager = manager or cleanup.enter_context(
            checkpoints.checkpoint_manager(workdir, config.keep_checkpoints))
        writes = jax.process_index() == 0
        if writes:
            write_config(workdir, config)
            write_data_description(workdir, data_description(config, pipeline))
        clock = RunClock(workdir if writes else None, start, started,
                         data_seconds + first.fetch_seconds, first.compile_seconds)
        writer = (cleanup.enter_context(contextlib.closing(
            MetricWriter(workdir, resume_step=start, clock=clock))) if writes else None)
        events = HostEvents(config, calls, manager, writer, measure, stop)
        state, interrupted = train_loop(config, calls, first, events)
        skipped = pipeline.skipped_examples()
        clock.tick(int(state.step))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("resnet_jax: metrics written")
        ending = Ending(int(state.step), timing_summary(clock.segments()), events.throughput.rates,
                        jax.device_count(), interrupted, skipped,
                        int(state.step) / pipeline.steps_per_epoch)
        return finish_run(workdir, config, ending, write=jax.process_index() == 0)


# XLA:CPU runs gradient convolutions 10-20x slower inside a compiled loop than outside
# (measured with jax 0.10.2: jax-ml/jax#12868), so on a CPU each call runs one step,
# without a loop (whose rounding differs).
LOOPS_ON_CPU = False
CPU_LOOPS = "XLA:CPU runs gradient convolutions 10-20x slower inside a compiled loop"


# The host runs at most this many calls ahead of the devices.
MAX_CALLS_IN_FLIGHT = 2


def compiled_loops() -> bool:
    """Whether train steps run in compiled loops here (not on a CPU, unless LOOPS_ON_CPU)."""
    return jax.default_backend() != "cpu" or LOOPS_ON_CPU


def next_event(step: int, config: ml_collections.ConfigDict) -> int:
    """The first step after ``step`` at which the host logs, evaluates, saves or ends."""
    cadences = (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps)
    return min([config.num_train_steps] + [(step // every + 1) * every for every in cadences])


def padded(batches: Any, capacity: int) -> Any:
    """``batches`` (leading axis: steps) filled with zeros up to ``capacity`` steps, so
    that every call has the same shapes and runs one compiled program."""
    def fill(leaf: np.ndarray) -> np.ndarray:
        missing = capacity - leaf.shape[0]
        if not missing:  # the usual call: no copy
            return leaf
        return np.concatenate([leaf, np.zeros((missing, *leaf.shape[1:]), leaf.dtype)])

    return jax.tree.map(fill, batches)


def steps_per_call(config: ml_collections.ConfigDict, pipeline: Pipeline) -> tuple[int, str]:
    """How many train steps one compiled call runs, and why, when that is fewer than
    ``config.steps_per_call``: a CPU runs one (see :func:`compiled_loops`), a pipeline
    may hold fewer calls' batches on the devices at once ('' when none is fewer)."""
    wanted = config.steps_per_call
    if wanted > 1 and not compiled_loops():
        return 1, f"one train step runs per compiled call on a CPU: {CPU_LOOPS}"
    limit = pipeline.max_steps_per_call
    if limit is not None and limit < wanted:
        return limit, (f"the {config.pipeline} pipeline runs at most {limit} train step(s) per "
                       "compiled call")
    return wanted, ""


class TrainCalls:
    """The run's compiled train calls: each runs the steps up to the next host event, at
    most :func:`steps_per_call` of them, on batches padded to that many."""

    def __init__(self, config: ml_collections.ConfigDict, pipeline: Pipeline, where: Any):
        self.config, self.pipeline, self.where = config, pipeline, where
        self.capacity, why = steps_per_call(config, pipeline)
        if why and jax.process_index() == 0:
            print(why)
        self.p_train = parallel_train(config, pipeline, compiled_loops())
        self.resident = jax.device_put(pipeline.resident(), where)

    def run(self, state: Any, step: int) -> tuple[Any, int, dict[str, jax.Array], float]:
        """Dispatch the call from ``step``: (state, steps it runs, their watched metrics,
        seconds spent fetching its batches). It may still be running on return."""
        count = min(self.capacity, next_event(step, self.config) - step)
        fetch_started = time.perf_counter()
        batches = padded(self.pipeline.train_batches(step, count), self.capacity)
        fetch_seconds = time.perf_counter() - fetch_started
        state, watched = self.p_train(state, self.resident, np.int32(count), batches)
        return state, count, watched, fetch_seconds


@dataclasses.dataclass(frozen=True)
class FirstCall:
    """The first call, run alone: it compiles the train step."""

    state: Any
    recent: tuple[int, int, dict[str, jax.Array]]  # (first step, steps, watched metrics)
    compile_seconds: float
    fetch_seconds: float


def first_call(calls: TrainCalls, state: Any) -> FirstCall:
    """Run the first call and wait for it, the progress bar saying 'compiling': its time
    is the compile time, and its steps are left out of the throughput."""
    step = int(state.step)
    with contextlib.closing(progress_bar(step, calls.config.num_train_steps, "compiling")):
        started = time.perf_counter()
        state, count, watched, fetch_seconds = calls.run(state, step)
        jax.block_until_ready(watched)
    return FirstCall(state, (step, count, watched),
                     time.perf_counter() - started - fetch_seconds, fetch_seconds)


def train_loop(config: ml_collections.ConfigDict, calls: TrainCalls, first: FirstCall,
               events: HostEvents) -> tuple[Any, bool]:
    """Train on from the first call to ``config.num_train_steps`` (or a stop request): a
    call, then the host events due at the step it reached (see :class:`HostEvents`).
    The host runs at most MAX_CALLS_IN_FLIGHT calls ahead of the devices. Returns
    (state, interrupted)."""
    state, (step, count, watched) = first.state, first.recent
    step += count
    events.begin(step, first.recent)
    in_flight = collections.deque()  # the calls dispatched but maybe not run yet
    try:
        while True:
            state, interrupted = events.at(state, step)
            if interrupted or step == config.num_train_steps:
                break
            state, count, watched, _ = calls.run(state, step)
            events.dispatched(step, count, watched)
            in_flight.append(watched)
            if len(in_flight) > MAX_CALLS_IN_FLIGHT:  # bounds the batches held on the devices
                jax.block_until_ready(in_flight.popleft())
            step += count
        events.finish()
    finally:  # also on an error: the bar ends its line
        events.bar.close()
    return state, interrupted


class HostEvents:
    """What the host does between calls on the config's cadences: check the loss, log,
    evaluate, save, and agree with the other processes on a stop request; the progress
    bar, the throughput and the metric rows."""

    def __init__(self, config: ml_collections.ConfigDict, calls: TrainCalls,
                 manager: ocp.CheckpointManager, writer: MetricWriter | None,
                 measure: utilisation.Meter, stop: StopRequests):
        self.config, self.calls, self.manager, self.writer = config, calls, manager, writer
        self.measure, self.stop = measure, stop
        pipeline = calls.pipeline
        self.p_eval = evaluation.parallel_eval(build_model(config).apply, pipeline.prepare_eval,
                                               config.parallel)
        self.eval_batch = evaluation.batch_size(config.eval_batch_size, pipeline.eval_examples,
                                                jax.device_count())
        self.description = data_description(config, pipeline)  # kept in every checkpoint too
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

    def dispatched(self, step: int, count: int, watched: dict[str, jax.Array]) -> None:
        self.recent.append((step, count, watched))
        self.throughput.count(count)
        self.bar.update(count)

    def at(self, state: Any, step: int) -> tuple[Any, bool]:
        """The events due at ``step``; (state, whether a signal asked the run to stop, in
        which case a checkpoint of ``step`` has been saved)."""
        config, last = self.config, self.config.num_train_steps
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
            state, record = log_window(state, self.throughput, self.calls.where, self.measure)
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
        return state, interrupted

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
                   "test_top5_accuracy": ("top5", "{:.3f}")}
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
        """Wait for the last checkpoint to be written."""
        with showing(self.bar, "saving checkpoint"):
            self.manager.wait_until_finished()


def run_meter(config: ml_collections.ConfigDict, pipeline: Pipeline) -> utilisation.Meter:
    """The run's TFLOP/s and mfu meter; without a known peak, a line saying so."""
    measure = utilisation.meter(build_model(config), pipeline.image_shape, config.dtype,
                                config.peak_tflops)
    if measure.peak is None and jax.process_index() == 0:
        print(f"mfu: no peak TFLOP/s known for {jax.devices()[0].device_kind} ({config.dtype}); "
              "--config.peak_tflops=N (per device) gives one")
    return measure


def progress_bar(step: int, last: int, what: str = "") -> tqdm:
    """Steps done of ``last`` from ``step`` on, with their rate and ETA, on process 0."""
    return tqdm(total=last, initial=step, desc=what, unit="step", dynamic_ncols=True,
                mininterval=1.0, leave=not what, disable=jax.process_index() != 0)


@contextlib.contextmanager
def showing(bar: tqdm, what: str) -> Iterator[None]:
    """The progress bar says ``what`` the run is doing while the steps stand still; the
    time it takes is left out of the bar's rate and ETA."""
    bar.set_description_str(what)
    try:
        yield
    finally:
        bar.set_description_str("", refresh=False)
        bar.unpause()


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


