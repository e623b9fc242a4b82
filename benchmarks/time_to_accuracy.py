"""Time to accuracy, JAX against PyTorch, and the spread over seeds.

    python -m benchmarks.time_to_accuracy --config configs/cifar10_resnet20.py \\
        --workdir runs/tta --config.dataset=folder:data/cifar10-jpeg \\
        [--seeds 0 1 2] [--no-amp] [--no-channels_last] [--no-compile] [--config.key=value ...]

For each seed, trains the config with train.py, then with the PyTorch twin
(torch_side/train.py, with --amp --channels_last --compile unless --no-amp
... say otherwise), each in its own process, one after the other on the same
device, from the same initial weights on the same batches; --config.KEY=VALUE
overrides go to both (a relative data path is made absolute first; those of
train.py's own running, such as checkpoint_every_steps, to train.py alone), and
what either side would refuse is refused before either trains. The runs live in
WORKDIR/jax_seedS and WORKDIR/torch_seedS: started again, train.py resumes or
reports its run (and refuses changed settings), and a finished PyTorch run of the
same command is kept (a stopped one starts over). Evaluate often
(--config.eval_every_steps=1000) so that the crossing times mean something.
Writes WORKDIR/time_to_accuracy.png (test accuracy against wall-clock seconds,
compilation included) and WORKDIR/time_to_accuracy.json, and prints per seed the
wall time at which each framework first reaches PyTorch's final test accuracy and
the other's final accuracy, then the mean and standard deviation of the final
accuracy per framework and their difference with its 95% interval (Welch).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/time_to_accuracy.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from resnet_jax import signals
from resnet_jax.command_line import ArgumentParser, at_least, load_config
from resnet_jax.data import resolved_dataset
from resnet_jax.runs.workdir import (
    create,
    read_config,
    read_metrics,
    read_segments,
    remove_if_empty,
)
from resnet_jax.train.config_schema import ConfigError
from torch_side.train import TWIN_IGNORES, check_twin_config

REPO = Path(__file__).resolve().parents[1]

# Two-sided 95% quantiles of Student's t by degrees of freedom (beyond 30: 1.96).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def accuracy_curve(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(wall seconds, test accuracy) at each evaluation."""
    return [(r["wall_seconds"], r["test_accuracy"]) for r in rows if "test_accuracy" in r]


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The wall seconds of the first evaluation at or above ``target``; None if none is."""
    return next((seconds for seconds, accuracy in curve if accuracy >= target), None)


def difference_interval(ours: list[float], theirs: list[float]) -> dict[str, float | None]:
    """mean(ours) - mean(theirs) and its 95% interval (Welch); no interval under 2 each."""
    difference = statistics.mean(ours) - statistics.mean(theirs)
    if min(len(ours), len(theirs)) < 2:
        return {"difference": difference, "low": None, "high": None}
    var_ours, var_theirs = (statistics.variance(ours) / len(ours),
                            statistics.variance(theirs) / len(theirs))
    spread = math.sqrt(var_ours + var_theirs)
    if spread == 0:
        return {"difference": difference, "low": difference, "high": difference}
    dof = spread ** 4 / (var_ours ** 2 / (len(ours) - 1) + var_theirs ** 2 / (len(theirs) - 1))
    t = T_975[int(dof) - 1] if int(dof) <= len(T_975) else 1.96  # floor: conservative
    return {"difference": difference, "low": difference - t * spread,
            "high": difference + t * spread}


def seed_report(jax_rows: list[dict], torch_rows: list[dict]) -> dict[str, Any]:
    """Final accuracies and crossing times of one seed's two runs."""
    ours, theirs = accuracy_curve(jax_rows), accuracy_curve(torch_rows)
    jax_final, torch_final = ours[-1][1], theirs[-1][1]
    return {"jax_final_accuracy": jax_final, "torch_final_accuracy": torch_final,
            "jax_seconds": ours[-1][0], "torch_seconds": theirs[-1][0],
            "jax_seconds_to_torch_final": time_to_reach(ours, torch_final),
            "torch_seconds_to_torch_final": time_to_reach(theirs, torch_final),
            "torch_seconds_to_jax_final": time_to_reach(theirs, jax_final),
            "jax_seconds_to_jax_final": time_to_reach(ours, jax_final)}


def summarize(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-framework mean and standard deviation of final accuracy, their difference with
    its 95% interval, and JAX's time to PyTorch's final accuracy over PyTorch's."""
    report: dict[str, Any] = {}
    for side in ("jax", "torch"):
        finals = [seed[f"{side}_final_accuracy"] for seed in per_seed.values()]
        report[side] = {"mean": statistics.mean(finals),
                        "std": statistics.stdev(finals) if len(finals) > 1 else None}
    report["jax_minus_torch"] = difference_interval(
        [s["jax_final_accuracy"] for s in per_seed.values()],
        [s["torch_final_accuracy"] for s in per_seed.values()])
    ratios = [s["jax_seconds_to_torch_final"] / s["torch_seconds_to_torch_final"]
              for s in per_seed.values() if s["jax_seconds_to_torch_final"] is not None]
    report["jax_over_torch_time_to_torch_final"] = statistics.mean(ratios) if ratios else None
    report["seeds_where_jax_reached_torch_final"] = len(ratios)
    return report


def plot(runs: dict[int, tuple[list[dict], list[dict]]], path: Path) -> None:
    """Test accuracy against wall-clock seconds: JAX solid, PyTorch dashed, a colour per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for index, (seed, (jax_rows, torch_rows)) in enumerate(runs.items()):
        for rows, style, name in ((jax_rows, "-", "JAX"), (torch_rows, "--", "PyTorch")):
            seconds, accuracy = zip(*accuracy_curve(rows), strict=True)
            ax.plot(seconds, [100 * a for a in accuracy], style, marker="o", markersize=3,
                    color=f"C{index}", label=f"{name}, seed {seed}")
    ax.set(xlabel="wall-clock seconds (compilation included)", ylabel="test accuracy (%)",
           title="test accuracy against time: JAX solid, PyTorch dashed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_in_process(command: list[str], name: str) -> None:
    """Run a trainer to the end in its own process (the whole device to itself). A stop
    signal goes to it too, and this script ends once it has stopped."""
    process = subprocess.Popen(command, cwd=REPO)
    forward = signals.handled(lambda signum, frame: process.send_signal(signum),
                              which=(signal.SIGTERM,))  # Ctrl-C reaches the trainer by itself
    try:
        with forward:
            code = process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the trainer too: let it save and stop
        code = process.wait()
        code = code or 130
    if code == 1:  # a refusal: the trainer's own line above says what to fix
        raise SystemExit(1)
    if code:
        raise SystemExit(f"error: the {name} run stopped (exit status {code}; its message is "
                         "above); if it was interrupted, start the same command again to "
                         "continue")


def torch_run(command: list[str], run_dir: Path, name: str) -> None:
    """The PyTorch twin, unless ``run_dir`` holds a finished run of this very command (it
    does not resume: a stopped run starts over)."""
    stamp = run_dir / "command.json"
    if stamp.exists() and json.loads(stamp.read_text()) == command[1:]:
        return
    stamp.unlink(missing_ok=True)
    train_in_process(command, name)
    stamp.write_text(json.dumps(command[1:]))


def run_both(config: str, overrides: list[str], workdir: Path, seeds: list[int],
             torch_flags: list[str]) -> dict[str, Any]:
    """Train every seed in both frameworks; write and return the report."""
    runs = {}
    for seed in seeds:
        jax_dir, torch_dir = workdir / f"jax_seed{seed}", workdir / f"torch_seed{seed}"
        print(f"== seed {seed}: JAX", flush=True)  # a finished run just prints its summary
        train_in_process([sys.executable, "train.py", "--config", config, *overrides,
                          f"--config.seed={seed}", "--workdir", str(jax_dir)], f"JAX seed {seed}")
        print(f"== seed {seed}: PyTorch", flush=True)
        torch_run([sys.executable, "-m", "torch_side.train", "--config", config,
                   *twin_overrides(overrides), f"--config.seed={seed}", "--workdir",
                   str(torch_dir), *torch_flags], torch_dir, f"PyTorch seed {seed}")
        segments = read_segments(jax_dir)
        if len(segments) > 1:
            print(f"warning: the JAX run of seed {seed} was resumed ({len(segments)} segments): "
                  "its wall times include the interrupted work; for a fair comparison "
                  "remove its directory and run again", flush=True)
        runs[seed] = read_metrics(jax_dir), read_metrics(torch_dir)
    per_seed = {seed: seed_report(*rows) for seed, rows in runs.items()}
    saved = read_config(workdir / f"jax_seed{seeds[0]}")
    report = {"model": saved["model"], "dataset": saved["dataset"],
              "steps": saved["num_train_steps"], "torch_flags": torch_flags,
              "per_seed": per_seed, "summary": summarize(per_seed)}
    plot(runs, workdir / "time_to_accuracy.png")
    (workdir / "time_to_accuracy.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def format_report(report: dict[str, Any]) -> str:
    def seconds(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f} s"

    lines = []
    for seed, row in report["per_seed"].items():
        lines.append(f"seed {seed}: final accuracy JAX {row['jax_final_accuracy']:.4f}, PyTorch "
                     f"{row['torch_final_accuracy']:.4f}; to PyTorch's final: JAX "
                     f"{seconds(row['jax_seconds_to_torch_final'])}, PyTorch "
                     f"{seconds(row['torch_seconds_to_torch_final'])}; to JAX's final: PyTorch "
                     f"{seconds(row['torch_seconds_to_jax_final'])}, JAX "
                     f"{seconds(row['jax_seconds_to_jax_final'])}")
    summary, difference = report["summary"], report["summary"]["jax_minus_torch"]
    for side, name in (("jax", "JAX"), ("torch", "PyTorch")):
        std = summary[side]["std"]
        lines.append(f"{name}: mean final accuracy {summary[side]['mean']:.4f}"
                     + (f" +- {std:.4f} (std)" if std is not None else ""))
    interval = ("" if difference["low"] is None
                else f", 95% interval [{difference['low']:+.4f}, {difference['high']:+.4f}]")
    lines.append(f"JAX - PyTorch: {difference['difference']:+.4f}{interval}")
    ratio, reached = (summary["jax_over_torch_time_to_torch_final"],
                      summary["seeds_where_jax_reached_torch_final"])
    if ratio is not None:
        lines.append(f"JAX's time to PyTorch's final accuracy / PyTorch's: {ratio:.3f} (mean "
                     f"over the {reached} of {len(report['per_seed'])} seeds where JAX reached it)")
    return "\n".join(lines)


def twin_overrides(overrides: list[str]) -> list[str]:
    """The overrides the PyTorch twin takes: all but those of train.py's own running (its
    checkpoints, devices, compiled calls), which the twin has no use for."""
    return [arg for arg in overrides
            if arg.removeprefix("--config.").partition("=")[0] not in TWIN_IGNORES]


def check_both_sides(config_file: str, overrides: list[str], amp: bool) -> None:
    """Refuse, before either trains, what the PyTorch twin would refuse (train.py refuses the
    rest before it trains, and it runs first)."""
    config, chosen = load_config(config_file, twin_overrides(overrides))
    try:
        check_twin_config(config, amp, chosen)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None


def absolute_data_path(override: str) -> str:
    """``--config.dataset=folder:PATH`` with PATH made absolute (the trainers run from the
    repository, not from here)."""
    key, sep, value = override.partition("=")
    return f"{key}={resolved_dataset(value)}" if key == "--config.dataset" and sep else override


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Any --config.KEY=VALUE is passed to both trainers, as train.py takes it.")
    parser.add_argument("--config", required=True, help="a config file (configs/*.py)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--seeds", type=at_least(0), nargs="+", default=[0], help="default: 0")
    for name, what in (("amp", "bfloat16 autocast"), ("channels_last", "NHWC memory format"),
                       ("compile", "torch.compile")):
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=True,
                            help=f"PyTorch side: {what} (default: on)")
    args, rest = parser.parse_known_args(argv)
    overrides = [arg for arg in rest if arg.startswith("--config.")]
    if len(overrides) < len(rest):
        parser.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in overrides)}"
                     " (config keys are passed as --config.KEY=VALUE)")
    if any(arg.startswith(("--config.seed=", "--config.seed ")) or arg == "--config.seed"
           for arg in overrides):
        parser.error("--config.seed: the seeds come from --seeds (e.g. --seeds 3)")
    if len(set(args.seeds)) < len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed; give each once")
    overrides = [absolute_data_path(arg) for arg in overrides]  # the trainers run elsewhere
    torch_flags = [f"--{'' if getattr(args, name) else 'no'}{name}"
                   for name in ("amp", "channels_last", "compile")]
    config_file = str(Path(args.config).resolve())
    check_both_sides(config_file, overrides, args.amp)
    workdir = args.workdir.resolve()  # the trainers run from the repository
    if workdir.exists() and not workdir.is_dir():
        parser.error(f"--workdir {args.workdir} is a file; pass a directory")
    created = create(workdir)
    try:
        report = run_both(config_file, overrides, workdir, args.seeds, torch_flags)
    except BaseException:  # a refused or interrupted start leaves nothing behind
        remove_if_empty(created)
        raise
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
