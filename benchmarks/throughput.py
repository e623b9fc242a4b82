"""Training throughput, JAX vs PyTorch, measured the same way in one run.

    python -m benchmarks.throughput [--quick] [--out throughput.json]
    python benchmarks/throughput.py ...    (the same, run as a file)

Steady-state training images/s: the first steps (compilation, warm-up) are
excluded, then the median of several timed windows, each ended by a device
synchronisation. Both sides train on device-resident synthetic data; the JAX
step also gathers, crops and flips its batch on the device. Next to the bare
JAX step (one step per call, the same batch each time, no host work) stands the
whole trainer, ``train_and_evaluate`` on synthetic data: its log windows after
the first, so compilation, evaluation and checkpoints are left out; the ratio
trainer / bare step shows what the host costs. Rows: resnet20 at 32x32 (batch
128 and 1024), resnet18_cifar (batch 512), resnet50 at 224x224 (batch 128);
--quick: resnet20 at batch 128, JAX (step and trainer) and PyTorch eager fp32 only.
Achieved FLOP/s count 6 FLOPs per multiply-accumulate of the forward pass
(forward, and twice that backward): XLA's cost analysis cannot be used, as it
leaves out the cuDNN convolutions on GPU.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import flax
import jax
import numpy as np

if not __package__:  # run as a file (python benchmarks/throughput.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from configs import smoke
from resnet_jax import create_model
from resnet_jax.command_line import ArgumentParser, at_least, check_out
from resnet_jax.data.pipelines import datasets
from resnet_jax.data.pipelines.in_memory import InMemory
from resnet_jax.models import build_model
from resnet_jax.runs.workdir import read_metrics
from resnet_jax.train import utilisation
from resnet_jax.train.config_schema import ConfigError, validate
from resnet_jax.train.loop import train_and_evaluate, train_state
from resnet_jax.train.metrics import Throughput
from resnet_jax.train.train_calls import chosen_steps_problem, compiled_loops
from resnet_jax.train.training import parallel_train
from torch_side.models import torch_model
from torch_side.required import F, torch

FULL_ROWS = [("resnet20", 32, 128), ("resnet20", 32, 1024), ("resnet18_cifar", 32, 512),
             ("resnet50", 224, 128)]


def time_windows(step: Callable[[], None], sync: Callable[[], None], batch: int, warmup: int,
                 windows: int, window_steps: int) -> float:
    """Median images/s over timed windows, after ``warmup`` untimed steps."""
    for _ in range(warmup):
        step()
    sync()
    throughput = Throughput(batch)
    for _ in range(windows):
        for _ in range(window_steps):
            step()
        sync()
        throughput.count(window_steps)
        throughput.window()
    return statistics.median(throughput.rates)


def bench_config(model: str, size: int, batch: int, dtype: str):
    config = smoke.get_config()
    config.update(model=model, num_classes=create_model(model).num_classes, batch_size=batch,
                  dtype=dtype, image_size=size, synthetic_examples=(2 * batch, batch))
    return config


def jax_row(model: str, size: int, batch: int, dtype: str, timing: dict) -> dict:
    """The bare step: one step per call on the same batch, nothing else on the host."""
    config = bench_config(model, size, batch, dtype)
    rng = np.random.default_rng(0)
    split = datasets.Split(rng.integers(0, 256, (2 * batch, size, size, 3), dtype=np.uint8),
                           rng.integers(0, config.num_classes, 2 * batch).astype(np.int32))
    pipeline = InMemory(datasets.make_dataset(split, split, config.num_classes),
                        batch_size=batch, seed=0, augment=True, dtype=dtype)
    state, where = train_state(config, pipeline)  # as the trainer starts a new run
    resident = jax.device_put(pipeline.resident(), where)
    p_train = parallel_train(config, pipeline, looped=False)
    batches, one = pipeline.train_batches(0, 1), np.int32(1)
    holder = {"state": state}

    def step() -> None:
        holder["state"], holder["watched"] = p_train(holder["state"], resident, one, batches)

    rate = time_windows(step, lambda: jax.block_until_ready(holder["watched"]), batch, **timing)
    measure = utilisation.meter(build_model(config), (size, size, 3), dtype)
    return {"images_per_sec": rate, **measure(rate)}  # tflops, and mfu where the peak is known


def trainer_config(model: str, size: int, batch: int, dtype: str, timing: dict,
                   steps_per_call: int):
    """One warm-up log window, then ``windows`` timed ones; evaluation and a checkpoint at
    the end only."""
    config = bench_config(model, size, batch, dtype)
    window, steps = timing["window_steps"], (timing["windows"] + 1) * timing["window_steps"]
    config.update(num_train_steps=steps, log_every_steps=window, eval_every_steps=steps,
                  checkpoint_every_steps=steps, lr_boundaries=(), lr_scales=(),
                  steps_per_call=steps_per_call)
    return config


def trainer_row(model: str, size: int, batch: int, dtype: str, timing: dict,
                steps_per_call: int) -> float:
    """train_and_evaluate on synthetic data: median images/s of its last ``windows`` log
    windows (one more runs first, as warm-up); compilation, evaluation and checkpoints are
    outside the windows."""
    config = trainer_config(model, size, batch, dtype, timing, steps_per_call)
    with tempfile.TemporaryDirectory() as workdir:
        with contextlib.redirect_stdout(io.StringIO()):  # the run's summary table
            summary = train_and_evaluate(config, workdir)
        if summary["interrupted"]:
            raise SystemExit("stopped by a signal during the trainer row; nothing written")
        rates = [r["images_per_sec"] for r in read_metrics(workdir) if "images_per_sec" in r]
    return statistics.median(rates[-timing["windows"]:])


def torch_row(model: str, size: int, batch: int, amp: bool, channels_last: bool,
              compile_model: bool, timing: dict) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = create_model(model).num_classes
    net = torch_model(model, num_classes).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    forward = torch.compile(net) if compile_model else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    images = torch.randint(0, 256, (2 * batch, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (2 * batch,), device=device)
    indices = torch.arange(batch, device=device)

    def step() -> None:
        x = (images[indices].float() / 255.0 - 0.5).contiguous(memory_format=layout)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(forward(x).float(), labels[indices])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return {"images_per_sec": time_windows(step, sync, batch, **timing)}


def measure(rows: list[tuple[str, int, int]], quick: bool, timing: dict,
            steps_per_call: int) -> list[dict]:
    results = []
    for model, size, batch in rows:
        row = {"model": model, "image_size": size, "batch": batch}
        jax32 = jax_row(model, size, batch, "float32", timing)
        row["jax_fp32"] = jax32["images_per_sec"]
        row["jax_fp32_tflops"] = jax32["tflops"]
        row["jax_fp32_peak_fraction"] = jax32.get("mfu")
        row["trainer_fp32"] = trainer_row(model, size, batch, "float32", timing, steps_per_call)
        row["trainer_over_step_fp32"] = row["trainer_fp32"] / row["jax_fp32"]
        row["torch_eager_fp32"] = torch_row(model, size, batch, False, False, False,
                                            timing)["images_per_sec"]
        row["ratio_fp32"] = row["jax_fp32"] / row["torch_eager_fp32"]
        if not quick:
            jax16 = jax_row(model, size, batch, "bfloat16", timing)
            row["jax_bf16"] = jax16["images_per_sec"]
            row["trainer_bf16"] = trainer_row(model, size, batch, "bfloat16", timing,
                                              steps_per_call)
            row["trainer_over_step_bf16"] = row["trainer_bf16"] / row["jax_bf16"]
            row["jax_bf16_peak_fraction"] = jax16.get("mfu")
            row["torch_amp_bf16_channels_last"] = torch_row(
                model, size, batch, True, True, False, timing)["images_per_sec"]
            row["torch_amp_bf16_channels_last_compile"] = torch_row(
                model, size, batch, True, True, True, timing)["images_per_sec"]
            row["ratio_bf16"] = row["jax_bf16"] / max(
                row["torch_amp_bf16_channels_last"], row["torch_amp_bf16_channels_last_compile"])
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def table(rows: list[dict]) -> str:
    columns = [k for k in rows[0] if k not in ("model", "image_size", "batch")]
    lines = ["| model | size | batch | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append(f"| {row['model']} | {row['image_size']} | {row['batch']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet20, batch 128, fp32 only")
    parser.add_argument("--out", default="throughput.json", help="JSON file to write")
    parser.add_argument("--windows", type=at_least(1), default=5)
    parser.add_argument("--window-steps", type=at_least(1), default=10)
    parser.add_argument("--warmup", type=at_least(0), default=3)
    parser.add_argument("--batch-size", type=at_least(1), help="override every row's batch size")
    parser.add_argument("--image-size", type=at_least(1), help="override every row's image size")
    parser.add_argument("--models", help="comma-separated: keep only these models' rows")
    parser.add_argument("--steps-per-call", type=at_least(1),
                        help="the trainer's config.steps_per_call (default 100; 1 on a CPU; its "
                        "calls end at each window's log too)")
    args = parser.parse_args()
    rows = [FULL_ROWS[0]] if args.quick else FULL_ROWS
    if args.models:
        offered = list(dict.fromkeys(model for model, _, _ in rows))
        unknown = [m for m in args.models.split(",") if m not in offered]
        if unknown:
            quick = "; --quick has resnet20 only" if args.quick else ""
            parser.error(f"--models {','.join(unknown)}: not among this run's models "
                         f"({', '.join(offered)}{quick})")
        rows = [row for row in rows if row[0] in args.models.split(",")]
    rows = [(m, args.image_size or s, args.batch_size or b) for m, s, b in rows]
    timing = {"warmup": args.warmup, "windows": args.windows, "window_steps": args.window_steps}
    check_out(parser, Path(args.out))
    if chosen_steps_problem(args.steps_per_call or 1):
        parser.error(f"--steps-per-call {args.steps_per_call} "
                     f"{chosen_steps_problem(args.steps_per_call)}; leave it out")
    steps_per_call = args.steps_per_call or (100 if compiled_loops() else 1)
    for model, size, batch in rows:  # refuse what the trainer would refuse, before measuring
        try:
            validate(trainer_config(model, size, batch, "float32", timing, steps_per_call),
                     jax.device_count())
        except ConfigError as error:
            message = str(error)
            for key, flag in (("image_size", "image-size"), ("batch_size", "batch-size"),
                              ("steps_per_call", "steps-per-call")):
                message = message.replace(f"--config.{key}=", f"--{flag} ")
            parser.error(message)
    results = measure(rows, args.quick, timing, steps_per_call)
    report = {
        "device": jax.devices()[0].device_kind, "jax_devices": jax.local_device_count(),
        "torch_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "versions": {"jax": jax.__version__, "flax": flax.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
        "timing": timing, "rows": results,
        "trainer_steps_per_call": steps_per_call,
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n{report['device']} x{report['jax_devices']} (JAX), {report['torch_device']} "
          "(PyTorch); training images/s, median of timed windows\n")
    print(table(results))


if __name__ == "__main__":
    main()
