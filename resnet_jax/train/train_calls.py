"""The compiled train calls of a run: how many steps each runs (the config, the pipeline
and the backend decide, in one place), their batches, and the first call, which
compiles."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from resnet_jax.data.pipelines import Pipeline
from resnet_jax.progress import progress_bar
from resnet_jax.train.training import parallel_train

# XLA:CPU runs gradient convolutions 10-30x slower inside a compiled loop than outside
# (measured with jax 0.10.2: jax-ml/jax#12868), so on a CPU each call runs one step,
# without a loop (whose rounding differs).
LOOPS_ON_CPU = False
CPU_LOOPS = "XLA:CPU runs gradient convolutions 10-30x slower inside a compiled loop"


def compiled_loops() -> bool:
    """Whether train steps run in compiled loops here (not on a CPU, unless LOOPS_ON_CPU)."""
    return jax.default_backend() != "cpu" or LOOPS_ON_CPU


# The most train steps one call of a pipeline runs, where it is fewer than a config asks:
# the streaming pipeline holds a call's images on the devices at once.
PIPELINE_LIMITS = {"streaming": 1}


def steps_per_call(config: ml_collections.ConfigDict) -> tuple[int, str]:
    """How many train steps one compiled call runs, and why, when that is fewer than
    ``config.steps_per_call``: a CPU runs one (see :func:`compiled_loops`), a pipeline
    may hold fewer calls' batches on the devices at once ('' when none is fewer)."""
    wanted = config.steps_per_call
    if wanted > 1 and not compiled_loops():
        return 1, f"one train step runs per compiled call on a CPU: {CPU_LOOPS}"
    limit = PIPELINE_LIMITS.get(config.pipeline, wanted)
    if limit < wanted:
        return limit, (f"the {config.pipeline} pipeline runs at most {limit} train step(s) per "
                       "compiled call")
    return wanted, ""


def pipeline_limit_problem(config: Mapping[str, Any]) -> str | None:
    """Why the config's steps_per_call has no effect under its pipeline, or None."""
    limit = PIPELINE_LIMITS.get(config["pipeline"])
    if limit is not None and config["steps_per_call"] > limit:
        steps = "one step" if limit == 1 else f"{limit} steps"
        return (f"under pipeline={config['pipeline']}, which runs {steps} per compiled call (a "
                "call's images are held on the devices at once)")
    return None


pipeline_limit_problem.why = ("under pipeline=streaming, which runs one step per compiled call "
                              "(a call's images are held on the devices at once)")


def chosen_steps_problem(steps: int) -> str | None:
    """Why ``steps`` per call, chosen by the user, has no effect on this backend, or None."""
    if steps > 1 and not compiled_loops():
        return ("has no effect on a CPU, which runs one train step per compiled call "
                f"({CPU_LOOPS})")
    return None


def next_event(step: int, config: ml_collections.ConfigDict) -> int:
    """The first step after ``step`` at which the host logs, evaluates, saves or ends."""
    cadences = (config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps)
    profiled = [edge for edge in config.get("profile_steps", (0, 0)) if edge > step]
    return min([config.num_train_steps, *profiled]
               + [(step // every + 1) * every for every in cadences])


def padded(batches: Any, capacity: int) -> Any:
    """``batches`` (leading axis: steps) filled with zeros up to ``capacity`` steps, so
    that every call has the same shapes and runs one compiled program."""
    def fill(leaf: np.ndarray) -> np.ndarray:
        missing = capacity - leaf.shape[0]
        if not missing:  # the usual call: no copy
            return leaf
        return np.concatenate([leaf, np.zeros((missing, *leaf.shape[1:]), leaf.dtype)])

    return jax.tree.map(fill, batches)


class TrainCalls:
    """The run's compiled train calls: each runs the steps up to the next host event, at
    most :func:`steps_per_call` of them, on batches padded to that many."""

    def __init__(self, config: ml_collections.ConfigDict, pipeline: Pipeline, where: Any):
        self.config, self.pipeline, self.where = config, pipeline, where
        self.capacity, why = steps_per_call(config)
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
