"""One report for a JAX run and a PyTorch run of the same recipe.

    python -m benchmarks.compare RUN_JAX RUN_TORCH [--out DIR]

Writes DIR/comparison.png (both frameworks' loss and accuracy curves against
epoch) and DIR/comparison.md (final and best accuracy, wall time, median
images/s, and their ratios); DIR defaults to RUN_TORCH's parent directory.
"""

from __future__ import annotations

from pathlib import Path

from ml_collections import ConfigDict

from resnet_jax.command_line import ArgumentParser
from resnet_jax.runs.workdir import (
    SUMMARY_FILE,
    WorkdirError,
    read_config,
    read_metrics,
    read_summary,
    read_twin_config,
)
from resnet_jax.train.config_schema import changed_fixed_keys
from resnet_jax.train.metrics import plot_curves

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
    summaries = [read_summary(run) for run in (jax_run, torch_run)]
    out.mkdir(parents=True, exist_ok=True)
    plot_curves([read_metrics(jax_run), read_metrics(torch_run)], out / "comparison.png",
                labels=("JAX", "PyTorch"))
    report = (f"# {summaries[0]['model']} on {summaries[0]['dataset']}: JAX vs PyTorch\n\n"
              + comparison_table(*summaries) + "\n\n![curves](comparison.png)\n")
    (out / "comparison.md").write_text(report)
    return report


def run_problem(jax_run: Path, torch_run: Path) -> str | None:
    """Why the two directories are not a finished JAX run and the PyTorch twin's run of the
    same recipe, in that order, or None."""
    summaries = [read_summary(run) for run in (jax_run, torch_run)]
    for run, summary in zip((jax_run, torch_run), summaries, strict=True):
        if summary is None:
            return (f"{run / SUMMARY_FILE} is missing or unreadable: pass the --workdir of a "
                    "finished run")
    if jax_run.resolve() == torch_run.resolve():
        return f"both runs are {jax_run}: pass a JAX run and a PyTorch run"
    try:
        jax_config, torch_config = read_config(jax_run), read_config(torch_run)
    except WorkdirError as error:
        return str(error)
    if jax_config is None:
        swapped = " (the order is JAX, then PyTorch)" if torch_config is not None else ""
        return f"{jax_run} is not a train.py run (it has no config.json){swapped}"
    if torch_config is not None:
        return (f"{torch_run} is a train.py run; the second run must be the PyTorch twin's "
                "(python -m torch_side.train)")
    if summaries[0].get("interrupted") or summaries[0]["steps"] != jax_config["num_train_steps"]:
        return (f"{jax_run} is unfinished (step {summaries[0]['steps']} of "
                f"{jax_config['num_train_steps']}); finish it with its train.py command first")
    differing = [f"{key} {summaries[0][key]!r} and {summaries[1][key]!r}"
                 for key in ("model", "dataset", "steps") if summaries[0][key] != summaries[1][key]]
    twin = read_twin_config(torch_run)  # older twin runs have none: the summary's keys only
    if not differing and twin is not None:
        differing = changed_fixed_keys(jax_config, ConfigDict(twin))
    if differing:
        return f"the runs follow different recipes ({'; '.join(differing)})"
    return None


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jax_run", type=Path)
    parser.add_argument("torch_run", type=Path)
    parser.add_argument("--out", type=Path, help="report directory (default: RUN_TORCH/..)")
    args = parser.parse_args()
    problem = run_problem(args.jax_run, args.torch_run)
    if problem:
        parser.error(problem)
    out = args.out or args.torch_run.parent
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; pass a directory for the report")
    print(compare(args.jax_run, args.torch_run, out))


if __name__ == "__main__":
    main()
