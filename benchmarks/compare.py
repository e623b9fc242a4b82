"""One report for a JAX run and a PyTorch run of the same recipe.

    python -m benchmarks.compare RUN_JAX RUN_TORCH [--out DIR]

Writes DIR/comparison.png (both frameworks' loss and accuracy curves against
epoch) and DIR/comparison.md (final and best accuracy, wall time, median
images/s, and their ratios); DIR defaults to RUN_TORCH's parent directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from resnet_jax.command_line import ArgumentParser
from resnet_jax.metrics import plot_curves, read_metrics
from resnet_jax.workdir import SUMMARY_FILE

ROWS = [("final test accuracy", "final_test_accuracy"),
        ("best test accuracy", "best_test_accuracy"),
        ("wall seconds", "wall_seconds"),
        ("median images/s", "median_images_per_sec")]


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def comparison_table(jax_summary: dict, torch_summary: dict) -> str:
    lines = ["| | JAX | PyTorch | JAX / PyTorch |", "|---|---|---|---|"]
    for label, key in ROWS:
        ours, theirs = jax_summary.get(key), torch_summary.get(key)
        ratio = ours / theirs if ours is not None and theirs else None
        lines.append(f"| {label} | {_cell(ours)} | {_cell(theirs)} | {_cell(ratio)} |")
    lines.append(f"| steps | {jax_summary['steps']} | {torch_summary['steps']} | |")
    lines.append(f"| devices | {jax_summary['devices']} | {torch_summary['devices']} | |")
    return "\n".join(lines)


def compare(jax_run: Path, torch_run: Path, out: Path) -> str:
    summaries = [json.loads((run / SUMMARY_FILE).read_text()) for run in (jax_run, torch_run)]
    out.mkdir(parents=True, exist_ok=True)
    plot_curves([read_metrics(jax_run), read_metrics(torch_run)], out / "comparison.png",
                labels=("JAX", "PyTorch"))
    report = (f"# {summaries[0]['model']} on {summaries[0]['dataset']}: JAX vs PyTorch\n\n"
              + comparison_table(*summaries) + "\n\n![curves](comparison.png)\n")
    (out / "comparison.md").write_text(report)
    return report


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jax_run", type=Path)
    parser.add_argument("torch_run", type=Path)
    parser.add_argument("--out", type=Path, help="report directory (default: RUN_TORCH/..)")
    args = parser.parse_args()
    for run in (args.jax_run, args.torch_run):
        if not (run / SUMMARY_FILE).exists():
            parser.error(f"{run / SUMMARY_FILE} not found: pass the --workdir of a finished run")
    print(compare(args.jax_run, args.torch_run, args.out or args.torch_run.parent))


if __name__ == "__main__":
    main()
