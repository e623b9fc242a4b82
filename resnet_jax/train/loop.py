"""train_and_evaluate(): the training run, from a config and a work directory to results.

The phases: what :mod:`resnet_jax.train.start` checks before anything is written; the train
state, new or restored; the first compiled call (:mod:`resnet_jax.train.train_calls`); the
run's files opened; the loop of calls and :mod:`resnet_jax.train.host_events`; the summary
(:mod:`resnet_jax.train.report`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jax
import ml_collections
from jax.experimental import multihost_utils

from resnet_jax import hints, weights
from resnet_jax.data import description
from resnet_jax.data.pipelines import build_pipeline
from resnet_jax.models import build_model
from resnet_jax.parallel import placement
from resnet_jax.progress import warn
from resnet_jax.runs import checkpoints
from resnet_jax.runs.workdir import (
    TENSORBOARD_DIR,
    read_data_description,
    write_config,
    write_data_description,
)
from resnet_jax.train import config_schema
from resnet_jax.train.host_events import HostEvents, run_meter
from resnet_jax.train.interrupts import all_or_none, stop_requests
from resnet_jax.train.metrics import MetricWriter, RunClock, timing_summary
from resnet_jax.train.report import Ending, finish_run, report_finished, resume_line
from resnet_jax.train.start import (
    check_config,
    check_previous_run,
    claim_workdir,
    use_compile_cache,
)
from resnet_jax.train.train_calls import FirstCall, TrainCalls, first_call
from resnet_jax.train.training import create_train_state


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
    workdir = Path(workdir).expanduser()  # a quoted ~ too
    with hints.door(hints.CONFIG), stop_requests() as stop, contextlib.ExitStack() as cleanup:
        settled = settle(config, workdir, chosen, cleanup)
        if settled.summary is not None:
            return settled.summary
        config, pipeline, latest = settled.config, settled.pipeline, settled.latest
        for warning in settled.warnings if jax.process_index() == 0 else ():
            warn(f"{warning}")
        def open_checkpoints() -> Any:
            return cleanup.enter_context(
                checkpoints.checkpoint_manager(workdir, config.keep_checkpoints))

        manager = None if latest is None else open_checkpoints()  # a new run: not yet
        state, where = train_state(config, pipeline, manager, latest, settled.start_from)
        if latest is not None and jax.process_index() == 0:
            print(resume_line(workdir, int(state.step), config.num_train_steps), flush=True)
        measure = run_meter(config, pipeline)
        calls = TrainCalls(config, pipeline, where)
        first = first_call(calls, state)
        stop.training()  # compiled: the run starts, and from here on writes
        manager = manager or open_checkpoints()
        clock, writer = open_run_files(workdir, config, pipeline, first, started,
                                       settled.data_seconds, cleanup)
        events = HostEvents(config, calls, manager, writer, measure, stop,
                            workdir / TENSORBOARD_DIR)
        state, interrupted = train_loop(config, calls, first, events)
        clock.tick(int(state.step))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("resnet_jax: metrics written")
        ending = Ending(int(state.step), timing_summary(clock.segments()),
                        events.throughput.rates, jax.device_count(), interrupted,
                        pipeline.skipped_examples(), int(state.step) / pipeline.steps_per_epoch)
        return finish_run(workdir, config, ending, write=jax.process_index() == 0)


@dataclasses.dataclass(frozen=True)
class Settled:
    """What a start settles before it writes anything: the resolved config, and either the
    summary of a run already finished, or the data pipeline (and the seconds it took to
    open), the step to resume from (None: a new run), the weights a new run starts from
    and the config's warnings."""

    config: ml_collections.ConfigDict
    summary: dict[str, Any] | None = None
    pipeline: Any = None
    data_seconds: float = 0.0
    latest: int | None = None
    start_from: Any = None
    warnings: tuple[str, ...] = ()


def settle(config: ml_collections.ConfigDict, workdir: Path, chosen: Collection[str],
           cleanup: contextlib.ExitStack) -> Settled:
    """Everything checked, in every process alike (all raise, or none), before anything is
    written (see :mod:`resnet_jax.train.start`)."""
    with all_or_none():
        warnings = tuple(check_config(config, chosen))
        config = config_schema.resolved(config)  # the caller's stays as it is
        use_compile_cache(config)
        claim_workdir(workdir, cleanup)
        latest = check_previous_run(workdir, config)
        if latest == config.num_train_steps:
            return Settled(config, summary=finished(workdir, config))
        data_started = time.time()
        pipeline = build_pipeline(config)
        cleanup.callback(pipeline.close)
        if latest is not None:
            description.check_same(workdir, pipeline, config)
        data_seconds = time.time() - data_started
        start_from = weights.initial_variables(config) if latest is None else None
    return Settled(config, None, pipeline, data_seconds, latest, start_from, warnings)


def finished(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A finished run started again: its summary (and its dataset.json, if lost, written
    back from the checkpoints' copy)."""
    if jax.process_index() == 0 and read_data_description(workdir) is None:
        description.restore(workdir)
    return report_finished(workdir, config)


def train_state(config: ml_collections.ConfigDict, pipeline: Any, manager: Any = None,
                latest: int | None = None, start_from: Any = None) -> tuple[Any, Any]:
    """The train state on every device (new, from ``start_from``'s weights if any, or the
    checkpoint of step ``latest``, with the pipeline's position), and its placement."""
    where = placement(config)
    fit_start = (None if start_from is None
                 else functools.partial(weights.fit_variables, loaded=start_from))
    state = jax.device_put(create_train_state(config, build_model(config),
                                              pipeline.image_shape, fit_start), where)
    if latest is not None:
        state, pipeline_state = checkpoints.restore_latest(manager, state)
        if pipeline_state is not None:
            pipeline.set_state(pipeline_state, int(state.step))
    return state, where


def open_run_files(workdir: Path, config: ml_collections.ConfigDict, pipeline: Any,
                   first: FirstCall, started: float, data_seconds: float,
                   cleanup: contextlib.ExitStack) -> tuple[RunClock, MetricWriter | None]:
    """The run's records, from the compiled first call on: config.json, dataset.json,
    the clock of its segments and, on process 0, the metric writer."""
    writes = jax.process_index() == 0
    if writes:
        write_config(workdir, config)
        write_data_description(workdir, description.describe(config, pipeline))
    start = first.recent[0]
    clock = RunClock(workdir if writes else None, start, started,
                     data_seconds + first.fetch_seconds, first.compile_seconds)
    writer = (cleanup.enter_context(contextlib.closing(
        MetricWriter(workdir, resume_step=start, clock=clock))) if writes else None)
    return clock, writer


# The host runs at most this many calls ahead of the devices.
MAX_CALLS_IN_FLIGHT = 2


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
