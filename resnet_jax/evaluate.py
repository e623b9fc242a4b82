"""Top-1, top-5 and loss of weights on a folder of class folders, or of a training run on
its own test split.

    python -m resnet_jax.evaluate --model resnet50 --weights IMAGENET1K_V1 --dataset folder:PATH
    python -m resnet_jax.evaluate --workdir runs/resnet20

``folder:PATH``: ``PATH/<class>/*`` images (ImageNet's validation set sorted into
its 1,000 class folders, say), through the weights' evaluation transform. Class
folders are matched to the weights' classes by name (ImageNet's synset folders to
weights that name its classes, through ImageNet's synset order); by sorted position
only where the weights carry no names, and then the mapping is printed. Every
readable image counts once.
"""

from __future__ import annotations

if __name__ == "__main__":  # from the start: Ctrl-C while the libraries load is one line too
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from resnet_jax import data, hints  # noqa: E402
from resnet_jax.command_line import (  # noqa: E402
    ArgumentParser,
    add_checkpoint_options,
    at_least,
    one_line_warnings,
)
from resnet_jax.data import description, folders  # noqa: E402
from resnet_jax.errors import ResNetError  # noqa: E402
from resnet_jax.parallel import placement, replicated  # noqa: E402
from resnet_jax.predict import read_batches  # noqa: E402
from resnet_jax.runs import workdir  # noqa: E402
from resnet_jax.signals import ignore_stop_signals  # noqa: E402
from resnet_jax.train import scoring  # noqa: E402
from resnet_jax.weights import Weights, load_weights, run_data  # noqa: E402
from resnet_jax.weights.table import Published  # noqa: E402

SYNSET = re.compile(r"n\d{8}")  # an ImageNet (WordNet) class folder: n01440764


def class_indices(folders: list[str], weights: Weights) -> dict[str, int]:
    """Each class folder's output of the weights, matched by name: a folder named as one of
    the weights' classes, or by its ImageNet synset where the weights have ImageNet's 1,000
    classes; by sorted position only where the weights carry no names (said on stderr).
    A subset of the classes is allowed (and said); an unknown name is a DataError."""
    names = weights.class_names
    known = {name: i for i, name in enumerate(names)}
    if set(folders) <= known.keys():
        indices = {folder: known[folder] for folder in folders}
    elif len(names) == 1000 and all(SYNSET.fullmatch(folder) for folder in folders):
        indices = _by_synset(folders, names)
    elif not weights.names_known and len(folders) == len(names):
        indices = {folder: i for i, folder in enumerate(folders)}
        print("the weights carry no class names: the sorted class folders are their outputs "
              "in order (" + data.listed([f"{f} -> {i}" for f, i in indices.items()]) + ")",
              file=sys.stderr)
    else:
        unknown = [f for f in folders if f not in known]
        unmatched = [n for n in names if n not in folders]
        fix = ("name each folder as the class it holds" if weights.names_known else
               f"the weights carry no class names: give one folder per output ({len(names)}), "
               f"or name the folders 0 to {len(names) - 1}")
        raise data.DataError(
            f"{len(unknown)} class folder(s) are not among the weights' {len(names)} classes: "
            f"{data.listed(unknown)}; the weights' classes without a folder: "
            f"{data.listed(unmatched)}; {fix}")
    if len(indices) < len(names):
        print(f"the folder holds {len(indices)} of the weights' {len(names)} classes: top-1 and "
              f"top-5 are counted over those images, choosing among all {len(names)} classes",
              file=sys.stderr)
    return indices


def _by_synset(folders: list[str], names: list[str]) -> dict[str, int]:
    """Synset folders -> ImageNet-1k class indices, through the synset table TFDS ships."""
    table = {synset: i for i, synset in enumerate(data.imagenet_synsets())}
    unknown = [folder for folder in folders if folder not in table]
    if unknown:
        raise data.DataError(f"{len(unknown)} synset folder(s) are not ImageNet-1k classes: "
                             f"{data.listed(unknown)}; use ImageNet-1k's class folders")
    indices = {folder: table[folder] for folder in folders}
    print(f"class folders named by ImageNet synsets, matched to the weights' classes in "
          f"ImageNet's order ({folders[0]} -> {names[indices[folders[0]]]})", file=sys.stderr)
    return indices


def folder_labels(root: Path, weights: Weights) -> tuple[list[Path], np.ndarray]:
    """The images under ``root/<class>/`` and their labels as the weights' outputs."""
    if not root.is_dir():
        raise data.DataError(f"{root} {'is a file' if root.exists() else 'does not exist'}; "
                             "pass folder:PATH where PATH/<class>/ hold the images")
    classes = folders.class_folders(root)
    if not classes:
        raise data.DataError(f"{root} holds no class folders; pass folder:PATH where PATH/<class>/ "
                             "hold the images")
    splits = [split for split in folders.EVAL_SPLITS if split in classes]
    if "train" in classes and splits:
        raise data.DataError(f"{root} holds the splits of a dataset (train/, {splits[0]}/), not "
                             f"class folders; pass the split to evaluate: "
                             f"{hints.setting('dataset', f'folder:{root / splits[0]}')}")
    indices = class_indices(classes, weights)
    files, labels = folders.image_files(root, classes)
    return files, np.asarray([indices[classes[label]] for label in labels], np.int64)


def evaluate_folder(weights: Weights, root: Path, batch_size: int = 64,
                    flip: bool = False) -> dict[str, Any]:
    """Top-1/top-5 (percent), mean loss, examples counted and skipped, images/s; with
    ``flip``, of the logits averaged over each image and its mirror."""
    files, labels = folder_labels(root, weights)
    devices = jax.local_device_count()
    batch_size = scoring.batch_size(batch_size, len(files), devices)
    p_eval = scoring.parallel_eval(weights.model.apply, _as_read, "pmap", flip)
    variables = jax.device_put(weights.variables, replicated(jax.local_devices()))
    skipped: list[str] = []
    read: set[str] = set()  # the class folders with a readable image

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start, (chunk, images, errors) in zip(
                range(0, len(files), batch_size),
                read_batches(files, weights.preprocessing, batch_size), strict=True):
            mask, label = np.zeros(batch_size, np.float32), np.zeros(batch_size, np.int32)
            mask[:len(chunk)] = [e is None for e in errors]
            label[:len(chunk)] = labels[start:start + len(chunk)]
            for path, error in zip(chunk, errors, strict=True):
                if error:
                    skipped.append(f"{path} ({error})")
                else:
                    read.add(path.relative_to(root).parts[0])
            bar.update(len(chunk))
            yield {"image": images, "label": label, "mask": mask}

    started = time.perf_counter()
    with tqdm(total=len(files), unit="img", desc="evaluating", file=sys.stderr) as bar:
        sums = scoring.totals(p_eval, variables, None, batches())
    seconds = time.perf_counter() - started
    unread = sorted(set(folders.class_folders(root)) - read)
    if unread and read:
        print(f"class folder(s) {data.listed(unread)} hold no readable image: top-1 and top-5 "
              "count the other classes' images", file=sys.stderr)
    unlike = [reason for reason, differs in (
        (f"{len(read)} of the {len(weights.class_names)} classes",
         len(read) < len(weights.class_names)),
        ("sizes as given", weights.sizes_given), ("test-time flips", flip)) if differs]
    return {**_result(sums, len(weights.class_names), f"folder:{root}"), "skipped": skipped,
            "images_per_sec": len(files) / seconds, "weights": weights.describe(),
            "step": weights.step, "data": f"folder:{root}", "flip": flip,
            "ema": weights.averaged, "classes_read": len(read),
            "preprocessing": weights.preprocessing.describe(),
            "published": dataclasses.asdict(weights.published) if weights.published else None,
            "unlike_published": unlike if weights.published else []}


def _as_read(resident: None, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Images decoded and preprocessed on the host, as they are."""
    return batch["image"], batch["label"]


def evaluate_run(run_dir: Path, batch_size: int | None = None, step: int | None = None,
                 flip: bool | None = None, raw: bool = False) -> dict[str, Any]:
    """A training run's checkpoint of ``step`` (else its latest) on the test split of its
    own data, read alone (in memory, the training split is not decoded), with the
    trainer's evaluation (and, by default, its evaluation batch size and test-time
    flips): the latest checkpoint's top-1 is the run's final test accuracy (its
    ``ema_final_test_accuracy`` where it keeps a moving average of the weights, which is
    then what is evaluated; ``raw``: the trained weights)."""
    from resnet_jax.data.pipelines import evaluation_pipeline
    from resnet_jax.runs.checkpoints import run_directory

    config = ml_collections.ConfigDict(workdir.read_config(run_directory(run_dir)))
    weights = load_weights(None, str(run_dir), step=step, raw=raw)
    flip = weights.flips(flip)
    pipeline = evaluation_pipeline(config, weights.preprocessing.mean, weights.preprocessing.std)
    try:
        _check_same_data(run_data(run_dir), pipeline, config.dataset)
        batch_size = scoring.batch_size(batch_size or config.eval_batch_size,
                                           pipeline.eval_examples, jax.device_count())
        where = placement(config)
        variables, resident = jax.device_put((weights.variables, pipeline.resident()), where)
        p_eval = scoring.parallel_eval(weights.model.apply, pipeline.prepare_eval,
                                          config.parallel, flip)
        started = time.perf_counter()
        batches = tqdm(pipeline.eval_batches(batch_size), unit="batch", desc="evaluating",
                       total=-(-pipeline.eval_examples // batch_size), file=sys.stderr)
        sums = scoring.totals(p_eval, variables, resident, batches)
    finally:
        pipeline.close()
    seconds = time.perf_counter() - started
    return {**_result(sums, config.num_classes, config.dataset),
            "skipped": sorted(getattr(pipeline, "skipped", {})),
            "images_per_sec": sums["count"] / seconds, "weights": weights.describe(),
            "step": weights.step, "data": f"{config.dataset}, the run's evaluation split",
            "flip": flip, "ema": weights.averaged,
            "preprocessing": (weights.preprocessing.describe() if config.pipeline == "streaming"
                              else f"at their size, {config.image_size}x{config.image_size}"),
            "published": None, "unlike_published": []}


def _result(sums: dict[str, float], classes: int, data_name: str) -> dict[str, Any]:
    """Top-1 and top-5 in percent (top-5 None among five classes or fewer), the mean loss
    and the examples counted; a DataError when none could be read."""
    metrics = scoring.test_metrics(sums, classes)
    if not metrics["eval_examples"]:
        raise data.DataError(f"no image of {data_name} could be read; check the files")
    top5 = metrics.get("test_top5_accuracy")
    return {"top1": 100 * metrics["test_accuracy"], "top5": None if top5 is None else 100 * top5,
            "loss": metrics["test_loss"], "examples": metrics["eval_examples"],
            "classes": classes}


def _check_same_data(saved: dict[str, Any], pipeline: Any, dataset: str) -> None:
    """The run's evaluation data must be what it evaluated while training."""
    change = description.change(saved, {"class_names": pipeline.class_names,
                                             "eval_examples": pipeline.eval_examples})
    if change:
        raise data.DataError(f"{dataset} has changed since the run trained on it ({change}); "
                             "restore the data, or evaluate it by class name with --weights RUN "
                             "--dataset folder:PATH")


def format_result(result: dict[str, Any]) -> str:
    top5 = ("n/a (among 5 classes or fewer)" if result["top5"] is None
            else f"{result['top5']:.3f}%")
    lines = [f"weights   {result['weights']}", f"data      {result['data']}",
             f"images    {result['preprocessing']}"
             + (", each averaged with its mirror image" if result["flip"] else ""),
             f"top-1     {result['top1']:.3f}%", f"top-5     {top5}",
             f"loss      {result['loss']:.4f}", f"examples  {result['examples']}",
             f"images/s  {result['images_per_sec']:.1f}"]
    if result["skipped"]:
        lines.append(f"skipped   {len(result['skipped'])} unreadable: "
                     + "; ".join(result["skipped"][:5]))
    if result["published"]:
        lines.append(f"{Published(**result['published']).describe()}; this "
                     f"{result['data'].split(':')[0]}: {result['top1']:.3f}%" + (
                         f" (unlike the published setting: {', '.join(result['unlike_published'])})"
                         if result["unlike_published"] else ""))
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m resnet_jax.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="a weights name (python -m resnet_jax.weights), "
                        "hf-hub:timm/NAME, a .pth or .safetensors file, or a run's directory")
    parser.add_argument("--model", help="resnet18 ... resnet1202 (read from a run, a snapshot, "
                        "or a file the weights table knows)")
    parser.add_argument("--dataset", help="folder:PATH, PATH holding one folder per class")
    parser.add_argument("--workdir", type=lambda text: Path(text).expanduser(),
                        help="a training run: its own test split")
    parser.add_argument("--resize", type=at_least(1), help="shorter side before the crop")
    parser.add_argument("--crop", type=at_least(1), help="centre crop")
    add_checkpoint_options(parser)
    parser.add_argument("--batch-size", type=at_least(1),
                        help="images per batch (default: 64; a run's own evaluation batch)")
    parser.add_argument("--json", action="store_true", help="only a JSON object on stdout")
    args = parser.parse_args(argv)
    if args.workdir and args.dataset:
        parser.error(f"--workdir evaluates a run on its own test split, --dataset on other data: "
                     f"pass one (other data: --weights {args.workdir} --dataset {args.dataset})")
    if not args.workdir and not args.dataset:
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
    with hints.door(hints.EVALUATE), one_line_warnings():
        return _evaluate_command(args)


def _evaluate_command(args: argparse.Namespace) -> int:
    try:
        if args.workdir:
            result = evaluate_run(args.workdir, args.batch_size, args.step, args.flip, args.raw)
        else:
            root = Path(args.dataset.removeprefix("folder:")).expanduser()
            if not root.is_dir():  # before any download
                raise data.DataError(f"{root} is not a directory; pass folder:PATH where "
                                     "PATH/<class>/ hold the images")
            weights = load_weights(args.model, args.weights, args.resize, args.crop, args.step,
                                   args.raw)
            result = evaluate_folder(weights, root, args.batch_size or 64,
                                     weights.flips(args.flip))
    except ResNetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    status = main()
    ignore_stop_signals()  # the results are out: a signal during shutdown changes nothing
    sys.exit(status)
