"""train_and_evaluate(): the training run, from a config and a work directory to results."""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import statistics
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

from resnet_jax import checkpoints, config_schema, data, utilisation, weights
from resnet_jax.config_schema import ConfigError
from resnet_jax.interrupts import StopRequests, all_or_none, stop_requests
from resnet_jax.metrics import (
    MetricWriter,
    RunClock,
    Throughput,
    plot_curves,
    read_metrics,
    read_segments,
    timing_summary,
    write_summary,
)
from resnet_jax.models import build_model
from resnet_jax.parallel import placement
from resnet_jax.pipelines import Pipeline, build_pipeline
from resnet_jax.training import create_train_state, mean_metrics, parallel_steps
from resnet_jax.workdir import (
    CURVES_FILE,
    DATA_FILE,
    SEGMENTS_FILE,
    SUMMARY_FILE,
    Lock,
    check_ownership,
    create,
    latest_checkpoint_step,
    read_config,
    read_data_description,
    read_metrics_file,
    remove_if_empty,
    write_atomically,
)


class TrainingDiverged(RuntimeError):
    """The train loss became NaN or infinite; nothing after the last good step was saved."""


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
             batch_size: int) -> dict[str, float]:
    """Loss and accuracy over the whole test split, each readable example exactly once
    (only ``eval_examples``, 0, if none could be read)."""
    sums = [p_eval(state, resident, batch) for batch in pipeline.eval_batches(batch_size)]
    totals = {k: float(np.sum([s[k] for s in jax.device_get(sums)])) for k in sums[0]}
    if not totals["count"]:
        logging.warning("no evaluation image could be read: no test metrics at this step")
        return {"eval_examples": 0}
    return {"test_loss": totals["loss"] / totals["count"],
            "test_accuracy": totals["correct"] / totals["count"],
            "eval_examples": int(totals["count"])}


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


def save_data_description(run_dir: Path, config: ml_collections.ConfigDict,
                          pipeline: Pipeline) -> None:
    write_atomically(run_dir / DATA_FILE, json.dumps(data_description(config, pipeline),
                                                     indent=1))


def restore_data_description(workdir: Path) -> None:
    """dataset.json, lost from a finished run, written back from its checkpoints' copy."""
    copy = checkpoints.latest_json_item(workdir, checkpoints.DATA)
    if copy is None:
        print(f"warning: {workdir / DATA_FILE} is missing and the run's checkpoints predate the "
              "copy they now keep: predict and evaluate cannot use this run", file=sys.stderr)
        return
    write_atomically(workdir / DATA_FILE, json.dumps(copy, indent=1))
    print(f"warning: {workdir / DATA_FILE} was missing; wrote it back from the latest "
          "checkpoint's copy", file=sys.stderr, flush=True)


def resume_line(workdir: Path, step: int, last: int) -> str:
    """What a resumed run says: where it continues, and the steps it trains again."""
    line = f"resuming at step {step} of {last} from the checkpoint in {workdir}"
    reached = max((s["last_step"] for s in read_segments(workdir)), default=step)
    if reached > step:
        line += (f"; the last start was seen at step {reached}: the {reached - step} steps after "
                 "its last checkpoint are trained again")
    return line


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
        start, clock = int(state.step), None
        if latest is not None and jax.process_index() == 0:
            print(resume_line(workdir, start, config.num_train_steps), flush=True)

        def begin(compile_seconds: float,
                  first_batch_seconds: float) -> tuple[ocp.CheckpointManager, MetricWriter | None]:
            """The train step is compiled: the run starts, and from here on writes."""
            nonlocal clock
            stop.training()
            writer, writes = None, jax.process_index() == 0
            if writes:
                checkpoints.save_config(workdir, config)
                save_data_description(workdir, config, pipeline)
            clock = RunClock(workdir if writes else None, start, started,
                             data_seconds + first_batch_seconds, compile_seconds)
            if writes:
                writer = MetricWriter(workdir, resume_step=start, clock=clock)
                cleanup.callback(writer.close)
            return manager or cleanup.enter_context(
                checkpoints.checkpoint_manager(workdir, config.keep_checkpoints)), writer

        state, throughput, interrupted = train_loop(config, state, pipeline, where, begin, stop)
        skipped = pipeline.skipped_examples()
        clock.tick(int(state.step))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("resnet_jax: metrics written")
        return finish_run(workdir, config, int(state.step), timing_summary(clock.segments()),
                          throughput.rates, interrupted, devices=jax.device_count(),
                          write=jax.process_index() == 0, skipped_examples=skipped,
                          epochs=int(state.step) / pipeline.steps_per_epoch)


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


def train_loop(config: ml_collections.ConfigDict, state: Any, pipeline: Pipeline,
               where: Any, begin: Callable[[float, float], tuple[ocp.CheckpointManager, Any]],
               stop: StopRequests) -> tuple[Any, Throughput, bool]:
    """Train from ``state.step`` to ``config.num_train_steps`` (or a stop request), logging,
    evaluating and saving on the config's cadences; the steps between two of these host
    events run in compiled calls of at most ``config.steps_per_call`` steps (one on a
    CPU, see :func:`compiled_loops`). Returns (state, throughput, interrupted).

    The first call compiles: its time is the compile time, its steps are left out of
    the throughput and of the progress bar's rate, and ``begin(compile seconds, seconds
    to fetch its batches)`` follows it, opening the checkpoint manager and the metric
    writer (None outside process 0).
    """
    step, last = int(state.step), config.num_train_steps
    resident = jax.device_put(pipeline.resident(), where)
    description = data_description(config, pipeline)  # kept in every checkpoint too
    looped = compiled_loops()
    capacity = min(config.steps_per_call, pipeline.max_steps_per_call or config.steps_per_call)
    if not looped and capacity > 1:
        capacity = 1
        if jax.process_index() == 0:
            print(f"on CPU one train step runs per compiled call: {CPU_LOOPS}")
    p_train, p_eval = parallel_steps(config, pipeline, looped)
    measure = utilisation.meter(build_model(config), pipeline.image_shape, config.dtype,
                                config.peak_tflops)
    if measure.peak is None and jax.process_index() == 0:
        print(f"mfu: no peak TFLOP/s known for {jax.devices()[0].device_kind} ({config.dtype}); "
              "--config.peak_tflops=N (per device) gives one")
    devices = jax.device_count()  # no larger eval batch than the test split, padded
    eval_batch = min(config.eval_batch_size, -(-pipeline.eval_examples // devices) * devices)
    throughput, recent, interrupted = Throughput(config.batch_size), [], False
    bar = progress_bar(step, last, "compiling")  # the steps' bar replaces it once compiled
    in_flight = collections.deque()  # the calls dispatched but maybe not run yet
    compiled, shown = False, {}  # shown: the latest metrics, on the bar
    try:
        while True:
            count = min(capacity, next_event(step, config) - step)
            fetch_started = time.perf_counter()
            batches = padded(pipeline.train_batches(step, count), capacity)
            call_started = time.perf_counter()
            state, watched = p_train(state, resident, np.int32(count), batches)
            recent.append((step, count, watched))
            in_flight.append(watched)
            if len(in_flight) > MAX_CALLS_IN_FLIGHT:  # bounds the batches held on the devices
                jax.block_until_ready(in_flight.popleft())
            step += count
            if not compiled:  # the first call compiles: it is timed apart, and the run begins
                jax.block_until_ready(watched)
                manager, writer = begin(time.perf_counter() - call_started,
                                        call_started - fetch_started)
                bar.close()
                bar, compiled = progress_bar(step, last), True
                throughput.restart()
            else:
                throughput.count(count)
                bar.update(count)
            record = {}
            log_now = _due(step, config.log_every_steps, last)
            save_now = _due(step, config.checkpoint_every_steps, last)
            eval_now = _due(step, config.eval_every_steps, last)
            if save_now or eval_now or log_now:
                check_finite(recent, manager)  # waits for the device
                recent = []
            interrupted = stop.agreed(log_now)  # after the wait: a signal meanwhile counts here
            if interrupted and recent:
                check_finite(recent, manager)
            save_now = save_now or interrupted
            if log_now:
                state, record = log_window(state, throughput, where, measure)
                shown.update(loss=f"{record['train_loss']:.3f}",
                             acc=f"{record['train_accuracy']:.3f}",
                             img_s=f"{record.get('images_per_sec', 0):.0f}")
                if "mfu" in record:
                    shown["mfu"] = f"{record['mfu']:.1%}"
                bar.set_postfix(shown, refresh=False)
            with throughput.paused():
                eval_metrics = None
                if eval_now:
                    with showing(bar, "evaluating"):
                        eval_metrics = evaluate(p_eval, state, resident, pipeline, eval_batch)
                    record.update(eval_metrics)
                    if "test_accuracy" in eval_metrics:
                        shown["test_acc"] = f"{eval_metrics['test_accuracy']:.3f}"
                        bar.set_postfix(shown, refresh=False)
                if record and writer:
                    writer.write(step, {"epoch": step / pipeline.steps_per_epoch, **record})
                if save_now:
                    accuracy = (eval_metrics or {}).get("test_accuracy")
                    best = None if accuracy is None else {"test_accuracy": accuracy}
                    with showing(bar, "saving checkpoint"):
                        checkpoints.save(manager, state, best, pipeline.get_state(),
                                         description)
            if interrupted:
                bar.write(f"stop requested by a signal: checkpoint saved at step {step}")
            if interrupted or step == last:
                break
        with showing(bar, "saving checkpoint"):
            manager.wait_until_finished()
    finally:  # also on a refused or interrupted start: the bar ends its line
        bar.close()
    return state, throughput, interrupted


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


def report_finished(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A finished run started again: its summary, printed by process 0; nothing changes
    (a summary lost to a kill after the last checkpoint is written again)."""
    path = workdir / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"warning: {path} is missing or unreadable; rebuilt it from metrics.jsonl and "
              f"{SEGMENTS_FILE}", file=sys.stderr, flush=True)
        rates = [r["images_per_sec"] for r in read_metrics(workdir) if "images_per_sec" in r]
        pipeline_state = checkpoints.latest_json_item(workdir, checkpoints.PIPELINE) or {}
        return finish_run(workdir, config, config.num_train_steps,
                          timing_summary(read_segments(workdir)), rates, False,
                          devices=jax.device_count(), write=jax.process_index() == 0,
                          skipped_examples=len(pipeline_state.get("skipped", {})))
    if jax.process_index() == 0:
        print(f"{workdir} holds a finished run of {config.num_train_steps} steps; to train "
              "longer, raise --config.num_train_steps")
        print(format_summary(summary))
    return summary


def finish_run(workdir: Path, config: ml_collections.ConfigDict, steps: int,
               timing: dict[str, Any], throughput: list[float], interrupted: bool,
               devices: int | str, write: bool = True, skipped_examples: int | None = 0,
               epochs: float | None = None) -> dict[str, Any]:
    """The summary of metrics.jsonl and ``timing`` (see metrics.timing_summary); with
    ``write``, also summary.json, curves.png and the printed table. ``epochs``: those
    run (else the last record's)."""
    records = read_metrics(workdir)
    evals = [r for r in records if "test_accuracy" in r]
    best = max(evals, key=lambda r: r["test_accuracy"], default={})
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "steps": steps,
        "epochs": epochs if epochs is not None else records[-1]["epoch"] if records else 0.0,
        "final_test_accuracy": evals[-1]["test_accuracy"] if evals else None,
        "final_test_step": evals[-1]["step"] if evals else None,
        "final_test_loss": evals[-1]["test_loss"] if evals else None,
        "best_test_accuracy": best.get("test_accuracy"),
        "best_step": best.get("step"),
        "eval_examples": evals[-1]["eval_examples"] if evals else 0,
        "skipped_examples": skipped_examples,
        "final_train_loss": next((r["train_loss"] for r in reversed(records)
                                  if "train_loss" in r), None),
        **timing,
        "median_images_per_sec": statistics.median(throughput) if throughput else None,
        **{f"median_{key}": _median(records, key) for key in ("tflops", "mfu")},
        "devices": devices,
        "interrupted": interrupted,
    }
    if write:
        write_summary(workdir, summary)
        if records:
            plot_curves(records, workdir / CURVES_FILE)
        print(format_summary(summary))
    return summary


def _median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return statistics.median(values) if values else None


def format_summary(summary: dict[str, Any]) -> str:
    def show(key: str, value: Any) -> str:
        if isinstance(value, list):
            return f"{len(value)}"
        if isinstance(value, float) and (value >= 10 or key.endswith("_seconds")):
            return f"{value:,.1f}"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    width = max(len(k) for k in summary)
    return "\n".join(f"{k:<{width}}  {show(k, v)}" for k, v in summary.items())
