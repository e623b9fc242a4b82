"""What a run reports: the summary of its metrics and timing (summary.json, curves.png, the
printed table), and the line a resumed run starts with."""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from pathlib import Path
from typing import Any

import jax
import ml_collections

from resnet_jax.errors import ResNetWarning
from resnet_jax.progress import warn
from resnet_jax.runs import checkpoints
from resnet_jax.runs.workdir import (
    CURVES_FILE,
    METRICS_FILE,
    SEGMENTS_FILE,
    SUMMARY_FILE,
    read_metrics,
    read_metrics_file,
    read_segments,
    read_summary,
    write_summary,
)
from resnet_jax.train import config_schema
from resnet_jax.train.metrics import plot_curves, timing_summary


@dataclasses.dataclass(frozen=True)
class Ending:
    """How a run (or a segment of it) ended: the steps done, its timing (see
    metrics.timing_summary), the images/s of its log windows, the devices it ran on,
    whether a signal stopped it, the unreadable images it skipped and the epochs run
    (None: the last metrics row's)."""

    steps: int
    timing: dict[str, Any]
    rates: list[float]
    devices: int | str
    interrupted: bool = False
    skipped_examples: int | None = 0
    epochs: float | None = None


def resume_line(workdir: Path, step: int, last: int) -> str:
    """What a resumed run says: where it continues, and the steps it trains again."""
    line = f"resuming at step {step} of {last} from the checkpoint in {workdir}"
    reached = max((s["last_step"] for s in read_segments(workdir)), default=step)
    again = min(reached, last) - step  # a run shortened below the step reached ends first
    if again > 0:
        end = f", to the end at {last}," if reached > last else ""
        line += (f"; the last start was seen at step {reached}: the {again} steps after "
                 f"its last checkpoint{end} are trained again")
    return line


def report_finished(workdir: Path, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A finished run started again: its summary, printed by process 0; nothing changes
    (a summary lost to a kill after the last checkpoint is written again)."""
    summary = read_summary(workdir)
    if summary is None:
        warn(f"{workdir / SUMMARY_FILE} is missing or unreadable; rebuilt it from "
             f"metrics.jsonl and {SEGMENTS_FILE}")
        rates = [r["images_per_sec"] for r in read_metrics(workdir) if "images_per_sec" in r]
        pipeline_state = checkpoints.latest_json_item(workdir, checkpoints.PIPELINE) or {}
        ending = Ending(config.num_train_steps, timing_summary(read_segments(workdir)), rates,
                        jax.device_count(),
                        skipped_examples=len(pipeline_state.get("skipped", {})))
        return finish_run(workdir, config, ending, write=jax.process_index() == 0)
    if jax.process_index() == 0:
        check_finished_files(workdir)
        longer = ("raise --config.num_train_steps" if "num_train_steps" not in
                  config_schema.fixed_keys(config.to_dict()) else
                  f"start a new run: its {config.schedule} schedule is drawn over "
                  f"{config.num_train_steps} steps, which fixes them")
        print(f"{workdir} holds a finished run of {config.num_train_steps} steps; to train "
              f"longer, {longer}")
        print(format_summary(summary))
    return summary


def check_finished_files(workdir: Path) -> None:
    """Say what a finished run lost since it ended (nothing is changed): a metrics line cut
    short, a damaged newest checkpoint (CheckpointError where none can be read)."""
    if read_metrics_file(workdir).cut_last_line:
        warn(f"the last line of {workdir / METRICS_FILE} was cut short (an interrupted write): "
             "that row is lost, and the file is left as it is")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResNetWarning)
        checkpoints.read_checkpoint(workdir)
    for warning in caught:
        warn(str(warning.message))


def finish_run(workdir: Path, config: ml_collections.ConfigDict, ending: Ending,
               write: bool = True) -> dict[str, Any]:
    """The summary of metrics.jsonl and ``ending``; with ``write``, also summary.json,
    curves.png and the printed table."""
    records = read_metrics(workdir)
    evals = [r for r in records if "test_accuracy" in r]
    final = evals[-1] if evals else {}
    best = max(evals, key=lambda r: r["test_accuracy"], default={})
    epochs = ending.epochs
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "steps": ending.steps,
        "epochs": epochs if epochs is not None else records[-1]["epoch"] if records else 0.0,
        "final_test_accuracy": final.get("test_accuracy"),
        "final_test_top5_accuracy": final.get("test_top5_accuracy"),
        "final_test_step": final.get("step"),
        "final_test_loss": final.get("test_loss"),
        **({"eval_flip": True} if config.eval_flip else {}),
        **({"ema_final_test_accuracy": final.get("ema_test_accuracy"),
            "ema_final_test_top5_accuracy": final.get("ema_test_top5_accuracy"),
            "ema_final_test_loss": final.get("ema_test_loss")} if config.ema_decay else {}),
        "best_test_accuracy": best.get("test_accuracy"),
        "best_step": best.get("step"),
        "eval_examples": final.get("eval_examples", 0),
        "skipped_examples": ending.skipped_examples,
        "final_train_loss": next((r["train_loss"] for r in reversed(records)
                                  if "train_loss" in r), None),
        **ending.timing,
        "median_images_per_sec": statistics.median(ending.rates) if ending.rates else None,
        "median_tflops": _median(records, "tflops"),
        **mfu_summary(records),
        "devices": ending.devices,
        "interrupted": ending.interrupted,
    }
    if write:
        write_summary(workdir, summary)
        if records:
            plot_curves(records, workdir / CURVES_FILE)
        print(format_summary(summary))
    return summary


def mfu_summary(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """The median mfu against the latest peak (rows logged under another peak, before a
    resume that changed it, left out), and that peak (TFLOP/s per device)."""
    peak = next((r["peak_tflops"] for r in reversed(records) if "peak_tflops" in r), None)
    same = [r for r in records if peak is not None and r.get("peak_tflops") == peak]
    return {"median_mfu": _median(same, "mfu"), "peak_tflops": peak}


def _median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if key in r]
    return statistics.median(values) if values else None


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as an aligned two-column table."""
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
