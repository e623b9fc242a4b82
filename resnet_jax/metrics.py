"""What a run writes for people: metrics.jsonl, TensorBoard events, summary.json, curves.png."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CURVES_FILE = "curves.png"


def write_atomically(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` whole: a kill at any moment leaves the old or the new file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricWriter:
    """Appends one JSON object per logged step, and mirrors scalars to TensorBoard.

    Opened at ``resume_step``, it drops records of later steps: the resumed run
    writes them again, identically.
    """

    def __init__(self, workdir: str | Path, resume_step: int = 0):
        from tensorboardX import SummaryWriter

        self.path = Path(workdir) / METRICS_FILE
        kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
        write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.tensorboard = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            if name != "epoch":
                self.tensorboard.add_scalar(name, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def write_summary(workdir: str | Path, summary: dict[str, Any]) -> None:
    write_atomically(Path(workdir) / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def plot_curves(records: list[dict[str, Any]], path: str | Path,
                labels: tuple[str, ...] = ("",)) -> None:
    """Loss and accuracy against epoch, train and test; several runs share the axes.

    ``records`` is one run's metrics, or a list of runs' metrics with one label each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = records if records and isinstance(records[0], list) else [records]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
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
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", yscale="log", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
