"""The measurements of ``benchmarks.evidence``, one function per part, each run by the
evidence command in a process of its own: it returns the part's figures (JSON), or raises.

Every part has a full size (what an accelerator measures) and a smoke size (tiny, for the
CPU test of the whole command). Training parts keep their runs in ``work``, so a part cut
short by the budget resumes there at the next call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a part works with: a scratch folder of its own, the CIFAR-10 data (``folder:``
    or ``cifar:``, or None), the smoke size, and the part's previous figures here."""

    work: Path
    data: str | None
    smoke: bool
    previous: dict[str, Any] | None


# Throughput rows: (model, image size, batch, dtype, what); "what" is the JAX step, the
# trainer at a steps_per_call, or PyTorch (bf16 rows: AMP + channels_last), eager or compiled.
STEP, TRAINER, TORCH, TORCH_COMPILED = "JAX step", "JAX trainer", "PyTorch", "PyTorch compiled"
THROUGHPUT_ROWS = [
    *[("resnet50", 224, 256, "bfloat16", what, spc)
      for what, spc in ((STEP, None), (TRAINER, 100), (TORCH_COMPILED, None))],
    *[("resnet20", 32, 128, dtype, what, spc) for dtype in ("float32", "bfloat16")
      for what, spc in ((STEP, None), (TRAINER, 1), (TRAINER, 100), (TORCH, None),
                        (TORCH_COMPILED, None))],
]
THROUGHPUT_FULL_ROWS = [
    *[("resnet20", 32, 1024, dtype, what, spc) for dtype in ("float32", "bfloat16")
      for what, spc in ((STEP, None), (TRAINER, 100), (TORCH, None))],
    ("resnet20", 32, 128, "float32", TRAINER, 10),
    *[("resnet50", 224, 128, dtype, what, None) for dtype in ("float32", "bfloat16")
      for what in (STEP, TORCH)],
    ("resnet18_cifar", 32, 512, "bfloat16", STEP, None),
    ("resnet18_cifar", 32, 512, "bfloat16", TORCH, None),
]
SMOKE_ROWS = [("resnet20", 8, 16, "float32", what, spc)
              for what, spc in ((STEP, None), (TRAINER, 1), (TORCH, None))]
TIMING = {"warmup": 3, "windows": 5, "window_steps": 10}
SMOKE_TIMING = {"warmup": 1, "windows": 2, "window_steps": 2}


def measure_row(model: str, size: int, batch: int, dtype: str, what: str,
                steps_per_call: int | None, timing: dict[str, int]) -> dict[str, Any]:
    """One throughput row: images/s, and for JAX the TFLOP/s and mfu they make."""
    from benchmarks import throughput
    from resnet_jax.models import build_model
    from resnet_jax.train import utilisation

    row = {"model": model, "image_size": size, "batch": batch, "dtype": dtype, "what": what,
           "steps_per_call": steps_per_call}
    if what == STEP:
        return {**row, **throughput.jax_row(model, size, batch, dtype, timing)}
    if what == TRAINER:
        rate = throughput.trainer_row(model, size, batch, dtype, timing, steps_per_call)
        config = throughput.bench_config(model, size, batch, dtype)
        meter = utilisation.meter(build_model(config), (size, size, 3), dtype)
        return {**row, "images_per_sec": rate, **meter(rate)}
    bf16 = dtype == "bfloat16"
    return {**row, **throughput.torch_row(model, size, batch, bf16, bf16, what == TORCH_COMPILED,
                                          timing)}


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each trainer row over its JAX step, and each JAX step over the fastest PyTorch row of
    the same model, size, batch and dtype."""
    def same(a: dict, b: dict) -> bool:
        return all(a[k] == b[k] for k in ("model", "image_size", "batch", "dtype"))

    found = {}
    for row in rows:
        name = f"{row['model']} {row['image_size']} b{row['batch']} {row['dtype']}"
        steps = [r["images_per_sec"] for r in rows if same(r, row) and r["what"] == STEP]
        torch = [r["images_per_sec"] for r in rows if same(r, row)
                 and r["what"] in (TORCH, TORCH_COMPILED)]
        if row["what"] == TRAINER and steps:
            found[f"{name}: trainer (steps_per_call {row['steps_per_call']}) / JAX step"] = (
                row["images_per_sec"] / steps[0])
        if row["what"] == STEP and torch:
            found[f"{name}: JAX step / fastest PyTorch"] = row["images_per_sec"] / max(torch)
    return found


def throughput_part(ctx: Context, rows: list[tuple], smoke_rows: list[tuple]) -> dict[str, Any]:
    rows = smoke_rows if ctx.smoke else rows
    timing = SMOKE_TIMING if ctx.smoke else TIMING
    measured = [measure_row(*row, timing) for row in rows]
    return {"rows": measured, "ratios": ratios(measured)}


def throughput(ctx: Context) -> dict[str, Any]:
    """ResNet-50 at 224 in bf16 and ResNet-20 in fp32 and bf16: the bare JAX step, the
    trainer, PyTorch at its best."""
    return throughput_part(ctx, THROUGHPUT_ROWS, SMOKE_ROWS)


def throughput_full(ctx: Context) -> dict[str, Any]:
    """The other rows, and ResNet-50 bf16 under XLA variants (each in a process of its own:
    XLA reads its flags once): autotune levels, cuDNN runtime fusion, batch per device."""
    figures = throughput_part(ctx, THROUGHPUT_FULL_ROWS, [])  # smoke: the variant alone
    variants = ({"batch 8": ("", 8)} if ctx.smoke else {
        "default": ("", 256), "batch 128": ("", 128),
        "autotune level 0": ("--xla_gpu_autotune_level=0", 256),
        "autotune level 4": ("--xla_gpu_autotune_level=4", 256),
        "cuDNN runtime fusion": ("--xla_gpu_use_runtime_fusion=true", 256)})
    model, size = ("resnet20", 8) if ctx.smoke else ("resnet50", 224)
    measured = {name: step_in_child(model, size, batch, "bfloat16", flags, ctx.smoke)
                for name, (flags, batch) in variants.items()}
    figures["variants"] = measured
    figures["fastest_variant"] = max(measured, key=lambda n: measured[n]["images_per_sec"])
    return figures


def step_in_child(model: str, size: int, batch: int, dtype: str, xla_flags: str,
                  smoke: bool) -> dict[str, Any]:
    """The bare JAX step's row, measured in a new process with ``xla_flags`` added."""
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()}
    command = [sys.executable, "-m", "benchmarks.evidence_parts", model, str(size), str(batch),
               dtype, "smoke" if smoke else "full"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the {xla_flags or 'default'} variant failed: "
                           f"{done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_py(args: list[str]) -> None:
    """train.py to the end (it resumes what an earlier call left in its work directory)."""
    subprocess.run([sys.executable, "train.py", *args], cwd=REPO, check=True)


def paper_schedule(ctx: Context) -> dict[str, Any]:
    """The paper's whole ResNet-20 recipe (64k steps) through train.py on CIFAR-10."""
    from resnet_jax.runs.workdir import read_summary

    run_dir = ctx.work / "resnet20"
    if ctx.smoke:
        train_py(["--config", "configs/smoke.py", "--workdir", str(run_dir), *SMOKE_FLAGS])
    else:
        train_py(["--config", "configs/cifar10_resnet20.py", "--workdir", str(run_dir),
                  f"--config.dataset={ctx.data}"])
    summary = read_summary(run_dir)
    keys = ("steps", "final_test_accuracy", "wall_seconds", "data_seconds", "compile_seconds",
            "median_images_per_sec", "median_tflops", "median_mfu", "devices")
    return {**{k: summary.get(k) for k in keys}, "segments": len(summary["segments"]),
            "dataset": summary["dataset"]}


SMOKE_FLAGS = ["--config.num_train_steps=4", "--config.image_size=8",
               "--config.synthetic_examples=(64,32)", "--config.batch_size=16",
               "--config.eval_batch_size=16", "--config.eval_every_steps=4",
               "--config.checkpoint_every_steps=4", "--config.log_every_steps=2",
               "--config.lr_boundaries=()", "--config.lr_scales=()"]


def streaming(ctx: Context) -> dict[str, Any]:
    """Generated ImageNet-sized JPEGs: the input pipeline alone with (cores - 2) workers, and
    ResNet-50 bf16 training fed by it, against the same training on synthetic data."""
    from benchmarks import input_pipeline, throughput
    from configs import imagenet_resnet50
    from resnet_jax.runs.workdir import read_metrics
    from resnet_jax.train.loop import train_and_evaluate

    workers = 0 if ctx.smoke else max(1, (os.cpu_count() or 2) - 2)  # smoke: a thread
    images, batch, size, steps = (20, 8, 32, 3) if ctx.smoke else (2000, 256, 224, 300)
    folder = ctx.work / "jpegs"
    input_pipeline.generate(folder, images)
    config = imagenet_resnet50.get_config("resnet20" if ctx.smoke else "resnet50")
    config.update(dataset=f"folder:{folder}", num_classes=input_pipeline.CLASSES,
                  batch_size=batch, eval_batch_size=batch, image_size=size,
                  eval_resize=size + size // 7, data_workers=workers, num_train_steps=steps,
                  eval_every_steps=steps, checkpoint_every_steps=steps,
                  log_every_steps=max(1, steps // 6), warmup_steps=0)
    seconds = 1.0 if ctx.smoke else 20.0
    pipeline_rate = input_pipeline.pipeline_rate(folder, workers, batch, seconds, size)
    with tempfile.TemporaryDirectory(dir=ctx.work) as run_dir:
        with contextlib.redirect_stdout(io.StringIO()):
            train_and_evaluate(config, run_dir)
        rates = [r["images_per_sec"] for r in read_metrics(run_dir) if "images_per_sec" in r]
    streamed = statistics.median(rates[1:] or rates)
    timing = SMOKE_TIMING if ctx.smoke else TIMING
    synthetic = throughput.trainer_row(config.model, size, batch, "bfloat16", timing, 1)
    return {"model": config.model, "image_size": size, "batch": batch, "workers": workers,
            "images": images, "pipeline_images_per_sec": pipeline_rate,
            "streaming_images_per_sec": streamed, "synthetic_images_per_sec": synthetic,
            "fraction_of_synthetic": streamed / synthetic}


def time_to_accuracy(ctx: Context) -> dict[str, Any]:
    """One more seed of the half schedule (32k steps, /10 at 16k and 24k), both frameworks;
    the statistics are over every seed measured here so far."""
    from benchmarks import time_to_accuracy as tta

    seeds = sorted(int(s) for s in (ctx.previous or {}).get("per_seed", {}))
    seeds.append(max(seeds, default=-1) + 1)
    for side in ("jax", "torch"):  # an interrupted try of the new seed: its time would count
        shutil.rmtree(ctx.work / f"{side}_seed{seeds[-1]}", ignore_errors=True)
    argv = ["--workdir", str(ctx.work), "--seeds", *map(str, seeds)]
    if ctx.smoke:
        argv += ["--config", "configs/smoke.py", "--no-amp", "--no-channels_last",
                 "--no-compile", *SMOKE_FLAGS]
    else:
        argv += ["--config", "configs/cifar10_resnet20.py", f"--config.dataset={ctx.data}",
                 "--config.num_train_steps=32000", "--config.lr_boundaries=(16000,24000)",
                 "--config.eval_every_steps=1000"]
    report = tta.main(argv)
    return {**report, "per_seed": {str(k): v for k, v in report["per_seed"].items()}}


def degradation(ctx: Context) -> dict[str, Any]:
    """Plain-20/56 and ResNet-20/56 on the half schedule (resumed across calls)."""
    from benchmarks import degradation as experiment

    argv = ["--workdir", str(ctx.work)]
    if ctx.smoke:
        argv += ["--dataset", "synthetic", "--depths", "20", "32", "--steps", "4",
                 "--set", "batch_size=16", "--set", "eval_batch_size=16",
                 "--set", "image_size=8", "--set", "synthetic_examples=(64,32)"]
    else:
        argv += ["--dataset", ctx.data, "--depths", "20", "56", "--steps", "32000"]
    report = experiment.main(argv)
    return {"steps": report["steps"], "dataset": report["dataset"], "errors": report["errors"],
            "verdict": report["verdict"]}


# The parts, highest priority first: (function, needs the CIFAR-10 data, resumable across
# calls, minutes to allow before the part has been timed on a device kind).
PARTS = {
    "throughput": (throughput, False, False, 8.0),
    "paper_schedule": (paper_schedule, True, True, 8.0),
    "streaming": (streaming, False, False, 5.0),
    "time_to_accuracy": (time_to_accuracy, True, False, 14.0),
    "degradation": (degradation, True, True, 12.0),
    "throughput_full": (throughput_full, False, False, 10.0),
}


TORCH_IN_PROCESS = {"throughput", "throughput_full"}  # PyTorch and JAX on one device, at once


def main() -> None:
    """A child of throughput_full: one JAX step row, its JSON on the last line of stdout."""
    model, size, batch, dtype, size_kind = sys.argv[1:6]
    timing = SMOKE_TIMING if size_kind == "smoke" else TIMING
    row = measure_row(model, int(size), int(batch), dtype, STEP, None, timing)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
