"""The top classes of images, with their probabilities.

    python -m resnet_jax.predict IMAGE_OR_FOLDER... --model resnet50 --weights IMAGENET1K_V2

``--weights``: a torchvision weights name, a torchvision ``.pth`` state dict, or a
training run's work directory (its model is read from the run). A folder stands for the
images under it, at any depth (the walker of :mod:`resnet_jax.data.folders`). The images go
through the weights' own evaluation transform, in batches. ``--json`` prints only a
JSON list on stdout: ``{"image": path, "top5": [[index, name, probability], ...]}``
per image (``{"image": path, "error": why}`` for a file that cannot be read).
"""

from __future__ import annotations

if __name__ == "__main__":  # from the start: Ctrl-C while the libraries load is one line too
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from resnet_jax import hints  # noqa: E402
from resnet_jax.command_line import (  # noqa: E402
    ArgumentParser,
    add_checkpoint_options,
    at_least,
    one_line_warnings,
)
from resnet_jax.data import folders  # noqa: E402
from resnet_jax.data.pipelines.images import UnreadableImage  # noqa: E402
from resnet_jax.errors import (  # noqa: E402
    DataError,
    ResNetError,
    WeightsError,  # noqa: E402
)
from resnet_jax.signals import ignore_stop_signals  # noqa: E402
from resnet_jax.weights import Preprocessing, Weights, load_weights  # noqa: E402


def log_probabilities(weights: Weights, flip: bool = False) -> Any:
    """A compiled function: a batch of preprocessed images -> log class probabilities
    (computed from the logits: no probability rounds to zero); with ``flip``, of the
    logits averaged over each image and its mirror image."""
    model = weights.model.clone(bn_axis_name=None)

    def logits(variables: Any, x: jax.Array) -> jax.Array:
        out = model.apply(variables, x, train=False).astype(np.float32)
        if flip:
            out = (out + model.apply(variables, x[:, :, ::-1], train=False)) / 2
        return jax.nn.log_softmax(out)

    return jax.jit(logits)


def read_batches(paths: list[Path], preprocess: Preprocessing, batch_size: int,
                 threads: int = 8) -> Iterator[tuple[list[Path], np.ndarray, list[str | None]]]:
    """(paths, images padded to ``batch_size``, per path: why it cannot be read, or None)."""
    def load(path: Path) -> np.ndarray | str:
        try:
            return preprocess(path.read_bytes())
        except OSError as error:
            return error.strerror or type(error).__name__
        except UnreadableImage as error:
            return str(error)

    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            loaded = list(pool.map(load, chunk))
            batch = np.zeros((batch_size, preprocess.crop, preprocess.crop, 3), np.float32)
            for i, item in enumerate(loaded):
                if not isinstance(item, str):
                    batch[i] = item
            yield chunk, batch, [item if isinstance(item, str) else None for item in loaded]


def predict(weights: Weights, paths: list[Path], batch_size: int = 32,
            top: int = 5, flip: bool = False) -> list[dict[str, Any]]:
    """Per image, its ``top`` classes as [index, name, probability], best first (with
    ``flip``, from the logits averaged with its mirror image's)."""
    apply, results = log_probabilities(weights, flip), []
    batch_size = min(batch_size, len(paths))  # only a last, short batch is padded
    with tqdm(total=len(paths), unit="img", desc="predicting", file=sys.stderr,
              disable=len(paths) < 2 * batch_size) as bar:
        for chunk, batch, errors in read_batches(paths, weights.preprocessing, batch_size):
            probs = np.exp(np.asarray(apply(weights.variables, batch)))
            for path, row, error in zip(chunk, probs, errors, strict=False):
                if error:
                    results.append({"image": str(path), "error": error})
                    continue
                best = np.argsort(-row, kind="stable")[:top]
                results.append({"image": str(path), f"top{top}": [
                    [int(i), weights.class_names[i], float(row[i])] for i in best]})
            bar.update(len(chunk))
    return results


def format_results(results: list[dict[str, Any]], top: int = 5) -> str:
    lines = []
    for result in results:
        lines.append(result["image"])
        if "error" in result:
            lines.append(f"  cannot be read: {result['error']}")
            continue
        lines += [f"  {p:7.2%}  {name} ({i})" for i, name, p in result[f"top{top}"]]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m resnet_jax.predict",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", type=lambda text: Path(text).expanduser(),
                        help="image files, or folders of them (at any depth)")
    parser.add_argument("--weights", required=True,
                        help="a weights name (python -m resnet_jax.weights), hf-hub:timm/NAME, "
                        "a .pth or .safetensors file, or a training run's directory")
    parser.add_argument("--model", help="resnet18 ... resnet1202 (read from a run, a snapshot, "
                        "or a file the weights table knows)")
    parser.add_argument("--resize", type=at_least(1), help="shorter side before the crop "
                        "(default: the weights' own, 256 or 232)")
    parser.add_argument("--crop", type=at_least(1), help="centre crop (default: the weights' own)")
    add_checkpoint_options(parser)
    parser.add_argument("--batch-size", type=at_least(1), default=32)
    parser.add_argument("--top", type=at_least(1),
                        help="classes shown per image (default: 5, or all of fewer)")
    parser.add_argument("--json", action="store_true", help="only a JSON list on stdout")
    return parser.parse_args(argv)


def image_paths(given: list[Path]) -> list[Path]:
    """The files named, and the images under each folder named (each real file once); a
    DataError for a folder without images."""
    paths = []
    for path in given:
        if path.is_dir():
            found = folders.images_under(path)
            if not found:
                raise DataError(f"{path} is a folder without images ("
                                f"{'/'.join(sorted(folders.IMAGE_SUFFIXES))} files, at any "
                                "depth); pass image files, or a folder holding some")
            paths += found
        else:
            paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with hints.door(hints.PREDICT), one_line_warnings():
        return _predict_command(args)


def _predict_command(args: argparse.Namespace) -> int:
    try:
        paths = image_paths(args.images)
        weights = load_weights(args.model, args.weights, args.resize, args.crop, args.step,
                               args.raw)
        classes = len(weights.class_names)
        if (args.top or 0) > classes:
            raise WeightsError(f"--top {args.top} exceeds the weights' {classes} classes; pass "
                               f"--top {classes} or less")
    except ResNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    top = args.top or min(5, classes)
    flip = weights.flips(args.flip)
    source = f"weights: {weights.describe()}" + (
        f"; {weights.published.describe()}" if weights.published else "") + (
        "; each image averaged with its mirror image" if flip else "")
    # JSON on stdout holds the results only
    print(source, file=sys.stderr if args.json else sys.stdout, flush=True)
    if weights.preprocessing.assumed:
        print(f"images: {weights.preprocessing.describe()}", file=sys.stderr)
    results = predict(weights, paths, args.batch_size, top, flip)
    if args.json:
        print(json.dumps(results))
    else:
        print(format_results(results, top))
    failed = [r for r in results if "error" in r]
    if failed:
        print(f"error: {len(failed)} of {len(results)} images cannot be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    status = main()
    ignore_stop_signals()  # the results are out: a signal during shutdown changes nothing
    sys.exit(status)
