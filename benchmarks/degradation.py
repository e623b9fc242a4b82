"""The paper's degradation experiment (He et al. 2015, Figure 6): deeper plain nets train worse.

Deeper residual nets train better.

    python -m benchmarks.degradation --workdir runs/degradation \\
        [--dataset folder:PATH] [--depths 20 56] [--steps 64000] [--set key=value ...]

Trains plain-N and ResNet-N for each depth with the paper's CIFAR-10 recipe
(configs/cifar10_plainN.py and cifar10_resnetN.py; the learning rate falls 10x at
50% and 75% of --steps, as at 32k and 48k of 64k; --steps 32000 is the half
schedule), each in its own directory under --workdir, where it resumes if stopped,
and logs each stage's gradient norm.
Then writes WORKDIR/degradation.png (training error dashed, test error bold, against
iterations: plain nets left, residual nets right, as the paper's Figure 6),
WORKDIR/grad_norms.png (each stage's gradient norm against iterations, one panel per
net) and WORKDIR/degradation.json (each net's final training and test error), and
prints whether the deepest plain net trains worse than the shallowest and the
deepest residual net better.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import ml_collections

if not __package__:  # run as a file (python benchmarks/degradation.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from resnet_jax.command_line import ArgumentParser
from resnet_jax.errors import ConfigError, ResNetError
from resnet_jax.runs.workdir import read_metrics
from resnet_jax.train.interrupts import StartInterrupted
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.train.start import check_config

KINDS = ("plain", "residual")
# The keys each net's config takes from the experiment itself, not from --set.
SET_HERE = {"model": "each net's depth comes from --depths",
            "residual": "each depth trains as a plain and as a residual net",
            "dataset": "pass --dataset", "num_train_steps": "pass --steps",
            "lr_boundaries": "the rate falls 10x at 1/2 and 3/4 of --steps",
            "log_grad_norms": "the gradient-norm figure needs them",
            "init_from": "each net trains from scratch"}
DEPTHS = (20, 32, 44, 56)


def run_name(kind: str, depth: int) -> str:
    return f"{kind}{depth}"


def run_config(kind: str, depth: int, steps: int, dataset: str,
               overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """The paper's recipe for plain-``depth`` or ResNet-``depth``, cut to ``steps``, with
    ``overrides`` set."""
    name = f"cifar10_{'plain' if kind == 'plain' else 'resnet'}{depth}"
    config = importlib.import_module(f"configs.{name}").get_config()
    config.dataset = dataset
    config.log_grad_norms = True
    config.num_train_steps = steps
    config.lr_boundaries = (steps // 2, steps * 3 // 4)
    config.eval_every_steps = config.checkpoint_every_steps = max(1, steps // 32)
    config.log_every_steps = max(1, min(100, steps // 64))
    for key, value in overrides.items():
        if key in SET_HERE:
            raise SystemExit(f"error: --set {key}: {SET_HERE[key]}; leave it out")
        if key not in config:
            close = difflib.get_close_matches(key, list(config), n=1)
            raise SystemExit(f"error: --set {key}: no such config key"
                             f"{f' (did you mean {close[0]}?)' if close else ''}")
        try:
            config[key] = value
        except TypeError:
            raise SystemExit(f"error: --set {key}={value!r}: {key} takes "
                             f"{type(config[key]).__name__} values") from None
    return config


def parse_setting(text: str) -> tuple[str, Any]:
    """``key=value``, the value a Python literal if it reads as one, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        return key, ast.literal_eval(value)
    except (SyntaxError, ValueError):
        return key, value


def errors(rows: list[dict[str, Any]], split: str) -> tuple[list[int], list[float]]:
    """(steps, error in %) of the rows that hold ``split``'s accuracy."""
    kept = [r for r in rows if f"{split}_accuracy" in r]
    return [r["step"] for r in kept], [100 * (1 - r[f"{split}_accuracy"]) for r in kept]


def plot_errors(runs: dict[tuple[str, int], list[dict]], depths: list[int], path: Path) -> None:
    """The paper's Figure 6: plain nets left, residual nets right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = plt.get_cmap("viridis")([i / max(1, len(depths) - 1) for i in range(len(depths))])
    for ax, kind in zip(axes, KINDS, strict=True):
        for depth, color in zip(depths, colors, strict=True):
            rows = runs[(kind, depth)]
            ax.plot(*errors(rows, "train"), "--", color=color, linewidth=1)
            ax.plot(*errors(rows, "test"), "-", color=color, linewidth=2,
                    label=f"{'plain' if kind == 'plain' else 'ResNet'}-{depth}")
        ax.set(xlabel="iterations", title=f"{kind} nets (dashed: training, bold: test)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("error (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grad_norms(runs: dict[tuple[str, int], list[dict]], depths: list[int],
                    path: Path) -> None:
    """Each stage's gradient norm against iterations, one panel per net."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(KINDS), len(depths), figsize=(4 * len(depths), 7),
                             sharex=True, sharey=True, squeeze=False)
    for row, kind in enumerate(KINDS):
        for column, depth in enumerate(depths):
            ax, rows = axes[row][column], runs[(kind, depth)]
            stages = sorted({k for r in rows for k in r if k.startswith("grad_norm/")})
            for stage in stages:
                kept = [r for r in rows if stage in r]
                ax.plot([r["step"] for r in kept], [r[stage] for r in kept],
                        label=stage.removeprefix("grad_norm/"))
            ax.set(title=f"{kind}-{depth}", yscale="log")
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    for ax in axes[-1]:
        ax.set_xlabel("iterations")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def final_errors(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The last logged training error (%, over the last log window) and test error (%)."""
    train, test = errors(rows, "train")[1], errors(rows, "test")[1]
    return {"train_error": train[-1] if train else None,
            "test_error": test[-1] if test else None}


def verdict(results: dict[str, dict[str, float | None]], depths: list[int]) -> list[str]:
    """Whether the deepest plain net trains worse than the shallowest (degradation), and
    the deepest residual net better."""
    shallow, deep = min(depths), max(depths)
    lines = []
    for kind, expected in (("plain", "above"), ("residual", "below")):
        low = results[run_name(kind, shallow)]["train_error"]
        high = results[run_name(kind, deep)]["train_error"]
        if low is None or high is None:
            continue
        seen = "above" if high > low else "below" if high < low else "equal to"
        lines.append(f"{kind}-{deep} training error {high:.2f}% is {seen} {kind}-{shallow}'s "
                     f"{low:.2f}% ({'as' if seen == expected else 'unlike'} the paper)")
    return lines


def train_one(config: ml_collections.ConfigDict, chosen: Collection[str], run_dir: Path,
              name: str) -> dict[str, Any]:
    """train.py's trainer on one net (``chosen``: the keys set with --set); its refusals
    and a stop before training as one line."""
    try:
        return train_and_evaluate(config, run_dir, chosen)
    except StartInterrupted as stopped:
        print(f"error: {name}: {stopped}", file=sys.stderr, flush=True)
        os._exit(128 + stopped.signum)  # as train.py: XLA threads cut short can crash a teardown
    except ResNetError as error:
        raise SystemExit(f"error: {name}: {error}") from None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", default="cifar10",
                        help="as --config.dataset of train.py (default: cifar10 from TFDS)")
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56], choices=DEPTHS,
                        help="at least two (default: 20 56)")
    parser.add_argument("--steps", type=int, default=64_000,
                        help="iterations per net (default 64000: the paper's; 32000: half)")
    parser.add_argument("--set", type=parse_setting, action="append", default=[],
                        metavar="KEY=VALUE",
                        help="any other config key, for every net (VALUE a Python literal)")
    args = parser.parse_args(argv)
    if args.steps < 4:
        parser.error(f"--steps must be at least 4, got {args.steps}")
    depths = sorted(set(args.depths))
    if len(depths) < 2:
        parser.error(f"--depths needs two depths or more to compare, got {depths}")
    configs = {(kind, depth): run_config(kind, depth, args.steps, args.dataset, dict(args.set))
               for kind in KINDS for depth in depths}
    for (kind, depth), config in configs.items():  # every net's settings, before any trains
        try:
            check_config(config, dict(args.set))
        except ConfigError as error:
            raise SystemExit(f"error: {kind}-{depth}: {error}") from None
    runs = {}
    for (kind, depth), config in configs.items():
        print(f"== {kind}-{depth}: {args.steps} iterations", flush=True)
        summary = train_one(config, dict(args.set), args.workdir / run_name(kind, depth),
                            f"{kind}-{depth}")
        if summary.get("interrupted"):
            print(f"{kind}-{depth} stopped at step {summary['steps']}; start the same command "
                  "again to continue")
            raise SystemExit(0)
        runs[(kind, depth)] = read_metrics(args.workdir / run_name(kind, depth))
    results = {run_name(kind, depth): final_errors(rows) for (kind, depth), rows in runs.items()}
    plot_errors(runs, depths, args.workdir / "degradation.png")
    plot_grad_norms(runs, depths, args.workdir / "grad_norms.png")
    report = {"steps": args.steps, "dataset": args.dataset, "errors": results,
              "verdict": verdict(results, depths)}
    (args.workdir / "degradation.json").write_text(json.dumps(report, indent=1) + "\n")
    print("\n".join(report["verdict"]))
    return report


if __name__ == "__main__":
    main()
