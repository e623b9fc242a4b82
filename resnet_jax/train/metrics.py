"""What a run measures as it goes: throughput, its wall time over segments, metrics rows
(metrics.jsonl and TensorBoard) and the curves they make."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resnet_jax.files import write_atomically
from resnet_jax.progress import warn
from resnet_jax.runs import workdir

# What a researcher watches when a run goes wrong, in every log row: the global gradient
# norm (after the devices' mean), the parameter norm before the step, and the norm of the
# step's update over it.
NORMS = ("train_grad_norm", "train_param_norm", "train_update_ratio")
# The keys of a metrics row measured by the clock: they differ from run to run of the same
# code, where every other value is the same bit for bit.
TIMINGS = ("images_per_sec", "wall_seconds", "tflops", "mfu", "peak_tflops")


class Throughput:
    """Training images per second over windows of steps, each ended by the caller once the
    device has caught up; time spent inside :meth:`paused` (evaluation, checkpoints) is left
    out. Shared by the trainer, the PyTorch twin and the benchmark."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.rates: list[float] = []
        self.restart()

    def restart(self) -> None:
        """A new window starts now (after compilation or warm-up)."""
        self._steps, self._start = 0, time.perf_counter()

    def count(self, steps: int) -> None:
        self._steps += steps

    def window(self) -> float | None:
        """The rate of the window now ending, None if it ran no steps; a new window starts."""
        rate = None
        if self._steps:
            rate = self._steps * self.batch_size / (time.perf_counter() - self._start)
            self.rates.append(rate)
        self.restart()
        return rate

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        pause_start = time.perf_counter()
        try:
            yield
        finally:
            self._start += time.perf_counter() - pause_start


def timing_summary(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's time keys: the run's total wall seconds over all its segments, and
    the last segment's wall, data-loading and compile seconds (None where unknown)."""
    last = segments[-1] if segments else {}
    return {"wall_seconds": sum(s["wall_seconds"] for s in segments) if segments else None,
            "segment_wall_seconds": last.get("wall_seconds"),
            "data_seconds": last.get("data_seconds"),
            "compile_seconds": last.get("compile_seconds"),
            "segments": segments}


class RunClock:
    """The wall time of a run over all its segments, one per start that trained.

    Each segment's first and last step, wall seconds (since ``started``, when its call
    to train began), data-loading and compile seconds are kept in segments.json,
    rewritten at every :meth:`tick`: a kill loses at most the time since the last one.
    ``run_dir=None`` keeps them in memory only (processes other than 0).
    """

    def __init__(self, run_dir: str | Path | None, first_step: int, started: float,
                 data_seconds: float, compile_seconds: float):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.earlier = [] if run_dir is None else workdir.read_segments(Path(run_dir))
        self.started = started
        self.segment = {"first_step": first_step, "last_step": first_step, "wall_seconds": 0.0,
                        "data_seconds": data_seconds, "compile_seconds": compile_seconds}
        self.tick(first_step)

    def tick(self, step: int) -> float:
        """Record that the run stands at ``step`` now; its total wall seconds so far."""
        self.segment.update(last_step=step, wall_seconds=time.time() - self.started)
        if self.run_dir is not None:
            workdir.write_segments(self.run_dir, self.segments())
        return sum(s["wall_seconds"] for s in self.segments())

    def segments(self) -> list[dict[str, Any]]:
        return [*self.earlier, dict(self.segment)]


class MetricWriter:
    """Appends one JSON object per logged step, and mirrors scalars to TensorBoard.

    Opened at ``resume_step``, it drops records of later steps: the resumed run
    writes them again, identically. With a ``clock``, each record gets the run's
    ``wall_seconds`` so far (all segments, compilation included).
    """

    def __init__(self, run_dir: str | Path, resume_step: int = 0, clock: RunClock | None = None):
        from tensorboardX import SummaryWriter

        self.clock = clock
        self.path = Path(run_dir) / workdir.METRICS_FILE
        found = workdir.read_metrics_file(Path(run_dir))
        if found.cut_last_line:
            warn(f"the last line of {self.path} was cut short (an interrupted write); "
                 f"dropped it (what it held is lost; the rows after step {resume_step}, where "
                 "the run resumes, are logged again)")
        kept = [r for r in found.rows if r["step"] <= resume_step]
        write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.tensorboard = SummaryWriter(str(Path(run_dir) / workdir.TENSORBOARD_DIR))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if self.clock is not None:
            metrics = {**metrics, "wall_seconds": self.clock.tick(step)}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            if name not in ("epoch", "wall_seconds"):
                self.tensorboard.add_scalar(name, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def plot_curves(records: list[dict[str, Any]], path: str | Path,
                labels: tuple[str, ...] = ("",)) -> None:
    """Loss and accuracy against epoch, train and test, and (where the rows hold them) the
    gradient and parameter norms and the update-to-parameter ratio; several runs share the
    axes.

    ``records`` is one run's metrics, or a list of runs' metrics with one label each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = records if records and isinstance(records[0], list) else [records]
    normed = any(NORMS[0] in row for run in runs for row in run)
    fig, axes = plt.subplots(1, 3 if normed else 2, figsize=(16.5 if normed else 11, 4))
    loss_ax, acc_ax = axes[:2]
    for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
        prefix = f"{label} " if label else ""
        line = "-" if index == 0 else "--"  # later runs dashed, so overlapping curves show
        for split, style in (("train", line), ("test", "o" + line)):
            rows = [r for r in run if f"{split}_loss" in r]
            epochs = [r["epoch"] for r in rows]
            loss_ax.plot(epochs, [r[f"{split}_loss"] for r in rows], style,
                         label=f"{prefix}{split}", markersize=3)
            acc_ax.plot(epochs, [100 * r[f"{split}_accuracy"] for r in rows], style,
                        label=f"{prefix}{split}", markersize=3)
        for name in NORMS if normed else ():
            rows = [r for r in run if name in r]
            axes[2].plot([r["epoch"] for r in rows], [r[name] for r in rows], line,
                         label=f"{prefix}{name.removeprefix('train_').replace('_', ' ')}")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if normed:
        axes[2].set(xlabel="epoch", yscale="log", title="gradient and parameter norms, "
                    "update / parameters")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
