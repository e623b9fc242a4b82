"""Top-1, top-5 and loss of weights on a folder of class folders, or of a training run on
its own test split.

    python -m resnet_jax.evaluate --model resnet50 --weights IMAGENET1K_V1 --dataset folder:PATH
    python -m resnet_jax.evaluate --workdir runs/resnet20

``folder:PATH``: ``PATH/<class>/*`` images (ImageNet's validation set sorted into
its 1,000 class folders, say), through the weights' evaluation transform. Folders
named as the weights' classes map by name; otherwise the sorted folders map to the
classes in order (ImageNet's synset folders do). Every readable image counts once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from resnet_jax import data, workdir
from resnet_jax.predict import positive, probabilities, read_batches
from resnet_jax.weights import Weights, WeightsError, load_weights


class Totals:
    """Running sums of top-1, top-5 hits, log-loss and counted examples."""

    def __init__(self) -> None:
        self.top1 = self.top5 = self.examples = 0
        self.loss = 0.0

    def add(self, probs: np.ndarray, labels: np.ndarray) -> None:
        ranked = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
        self.top1 += int(np.sum(ranked[:, 0] == labels))
        self.top5 += int(np.sum(np.any(ranked == labels[:, None], axis=-1)))
        picked = probs[np.arange(len(labels)), labels]
        self.loss += float(-np.sum(np.log(np.maximum(picked, np.finfo(np.float32).tiny))))
        self.examples += len(labels)

    def result(self) -> dict[str, Any]:
        n = max(self.examples, 1)
        return {"top1": 100 * self.top1 / n, "top5": 100 * self.top5 / n,
                "loss": self.loss / n, "examples": self.examples}


def folder_labels(root: Path, class_names: list[str]) -> tuple[list[Path], np.ndarray]:
    """The images under ``root/<class>/`` and their labels in the weights' class order."""
    if not root.is_dir():
        raise data.DataError(f"{root} {'is a file' if root.exists() else 'does not exist'}; "
                             "pass folder:PATH where PATH/<class>/ hold the images")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise data.DataError(f"{root} holds no class folders; pass folder:PATH where PATH/<class>/ "
                             "hold the images")
    if set(folders) <= set(class_names):
        index = {name: class_names.index(name) for name in folders}
    elif len(folders) == len(class_names):
        index = dict(zip(folders, range(len(folders)), strict=True))
    else:
        raise data.DataError(f"{root} has {len(folders)} class folders, the weights "
                             f"{len(class_names)} classes, and the folder names are not class "
                             "names; give one folder per class")
    files, labels = data.image_files(root, folders)
    return files, np.asarray([index[folders[label]] for label in labels], np.int64)


def evaluate_folder(weights: Weights, root: Path, batch_size: int = 64) -> dict[str, Any]:
    """Top-1/top-5 (percent), mean loss, examples counted and skipped, images/s."""
    files, labels = folder_labels(root, weights.class_names)
    apply, totals, skipped = probabilities(weights), Totals(), []
    batch_size = min(batch_size, len(files))
    started = time.perf_counter()
    with tqdm(total=len(files), unit="img", desc="evaluating", file=sys.stderr) as bar:
        for start, (chunk, batch, errors) in zip(
                range(0, len(files), batch_size),
                read_batches(files, weights.preprocessing, batch_size), strict=True):
            probs = np.asarray(apply(weights.variables, batch))[:len(chunk)]
            readable = np.array([e is None for e in errors])
            skipped += [f"{path} ({e})" for path, e in zip(chunk, errors, strict=True) if e]
            totals.add(probs[readable], labels[start:start + len(chunk)][readable])
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    return {**totals.result(), "skipped": skipped, "images_per_sec": len(files) / seconds,
            "weights": weights.source, "published": weights.metrics}


def evaluate_run(run_dir: Path, batch_size: int = 64) -> dict[str, Any]:
    """A training run's latest checkpoint on the test split of its own data."""
    from resnet_jax.checkpoints import restore
    from resnet_jax.pipelines import build_pipeline

    saved = workdir.read_config(run_dir)
    if saved is None:
        raise WeightsError(f"{run_dir} holds no config.json; is it a training run's --workdir?")
    config = ml_collections.ConfigDict(saved)
    devices = jax.local_device_count()
    batch_size = -(-batch_size // devices) * devices
    model, variables = restore(run_dir)
    pipeline = build_pipeline(config)
    resident = jax.device_put(pipeline.resident())

    @jax.jit
    def step(resident: dict[str, Any], batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        images, labels = pipeline.prepare_eval(resident, batch)
        logits = model.apply(variables, images, train=False).astype(np.float32)
        return jax.nn.softmax(logits), labels

    totals, started = Totals(), time.perf_counter()
    try:
        for batch in tqdm(pipeline.eval_batches(batch_size), unit="batch", desc="evaluating",
                          total=-(-pipeline.eval_examples // batch_size), file=sys.stderr):
            probs, labels = jax.device_get(step(resident, batch))
            keep = np.asarray(batch["mask"]) > 0
            totals.add(probs[keep], labels[keep])
    finally:
        pipeline.close()
    seconds = time.perf_counter() - started
    return {**totals.result(), "skipped": sorted(getattr(pipeline, "skipped", {})),
            "images_per_sec": totals.examples / seconds, "weights": str(run_dir),
            "published": {}}


def format_result(result: dict[str, Any]) -> str:
    lines = [f"top-1     {result['top1']:.3f}%", f"top-5     {result['top5']:.3f}%",
             f"loss      {result['loss']:.4f}", f"examples  {result['examples']}",
             f"images/s  {result['images_per_sec']:.1f}"]
    if result["skipped"]:
        lines.append(f"skipped   {len(result['skipped'])} unreadable: "
                     + "; ".join(result["skipped"][:5]))
    if result["published"]:
        lines.append("published " + ", ".join(f"{k} {v}" for k, v in result["published"].items()))
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m resnet_jax.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="IMAGENET1K_V1/V2, a .pth file, or a run's directory")
    parser.add_argument("--model", help="resnet18 ... resnet152 (with a weights name or .pth)")
    parser.add_argument("--dataset", help="folder:PATH, PATH holding one folder per class")
    parser.add_argument("--workdir", type=Path, help="a training run: its own test split")
    parser.add_argument("--resize", type=positive, help="shorter side before the crop")
    parser.add_argument("--crop", type=positive, help="centre crop")
    parser.add_argument("--batch-size", type=positive, default=64)
    parser.add_argument("--json", action="store_true", help="only a JSON object on stdout")
    args = parser.parse_args(argv)
    if bool(args.workdir) == bool(args.dataset):
        parser.error("pass --dataset folder:PATH (with --weights), or --workdir RUN")
    given = [f"--{n}" for n in ("weights", "model", "resize", "crop") if getattr(args, n)]
    if args.workdir and given:
        parser.error(f"--workdir evaluates the run as it was trained: leave out {given[0]}")
    if args.dataset and not args.weights:
        parser.error("--dataset needs --weights (a name with --model, a .pth, or a run)")
    if args.dataset and not args.dataset.startswith("folder:"):
        parser.error(f"--dataset={args.dataset}: write folder:PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.workdir:
            result = evaluate_run(args.workdir, args.batch_size)
        else:
            root = Path(args.dataset.removeprefix("folder:")).expanduser()
            if not root.is_dir():  # before any download
                raise data.DataError(f"{root} is not a directory; pass folder:PATH where "
                                     "PATH/<class>/ hold the images")
            weights = load_weights(args.model, args.weights, args.resize, args.crop)
            result = evaluate_folder(weights, root, args.batch_size)
    except (WeightsError, data.DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
