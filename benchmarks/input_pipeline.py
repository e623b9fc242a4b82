"""Input pipeline throughput alone: training-transform images/s, per worker process and
in total, on ImageNet-sized JPEGs that it generates once into FOLDER.

    python -m benchmarks.input_pipeline --folder /tmp/jpegs [--workers 1,2] [--out FILE]
        [--auto-augment ta_wide|ra]

Per worker: one process decoding, cropping (random-resized, to 224), flipping (and with
--auto-augment, TrivialAugmentWide or RandAugment) and batching, as each grain worker
does. In total: the streaming pipeline itself
(resnet_jax.data.pipelines.streaming) with N worker processes, batches taken as fast as
it makes them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from resnet_jax.command_line import ArgumentParser, check_out

CLASSES = 10
DONE = "GENERATED"  # marks a folder this benchmark filled completely
STARTED = "GENERATING"  # marks a folder this benchmark is filling (or was, cut short)


def make_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photograph-like uint8 RGB image: smooth colour fields, a few shapes, sensor noise
    (its JPEG weighs about what a photograph of its size does)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phases = rng.uniform(0, 2 * np.pi, (3, 3))
    image = np.stack([128 + 90 * np.sin(3 * x * phases[c, 0] + 2 * y * phases[c, 1]
                                        + phases[c, 2]) for c in range(3)], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        inside = (y - cy * height / max(height, width)) ** 2 + (x - cx) ** 2 < r * r
        image[inside] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(folder: Path, images: int, seed: int = 0) -> None:
    """``images`` JPEGs of about 500x375 (quality 90) under folder/{train,val}/<class>/; a fill
    cut short is started over."""
    if folder.exists() and not folder.is_dir():
        raise SystemExit(f"error: --folder {folder} is a file; pass a new or empty directory")
    if (folder / DONE).exists():
        return
    if (folder / STARTED).exists():
        shutil.rmtree(folder)  # ours, cut short
    elif folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"error: {folder} is not empty and was not filled by this benchmark; "
                         "pass a new or empty --folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STARTED).write_text(f"{images} images\n")
    rng = np.random.default_rng(seed)
    for i in tqdm(range(images), desc="generating JPEGs", unit="img"):
        for split in ("train", "val"):
            if split == "val" and (i // CLASSES) % 10:
                continue
            directory = folder / split / f"class{i % CLASSES:02d}"
            directory.mkdir(parents=True, exist_ok=True)
            height, width = (375, 500) if rng.random() < 0.7 else (500, 375)
            Image.fromarray(make_photo(rng, height, width)).save(directory / f"{i:06d}.jpg",
                                                                 quality=90)
    (folder / STARTED).rename(folder / DONE)


def per_worker_rate(folder: Path, seconds: float, size: int = 224,
                    auto_augment: str = "") -> float:
    """Images/s of one process running the training transform on the folder's files."""
    from resnet_jax.data.pipelines import autoaugment, images

    files = sorted(p for p in (folder / "train").rglob("*.jpg") if p.is_file())
    datas = [f.read_bytes() for f in files[:256]]
    rng = np.random.default_rng(0)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for data in datas:
            crop = images.train_crop(images.decode_fast(data), size, rng)
            if auto_augment:
                autoaugment.augment(crop, auto_augment, rng)
        done += len(datas)
    return done / (time.perf_counter() - started)


def pipeline_rate(folder: Path, workers: int, batch: int, seconds: float,
                  size: int = 224, auto_augment: str = "") -> float:
    """Images/s delivered by the streaming pipeline with ``workers`` processes, cropping to
    ``size``."""
    from configs import imagenet_resnet50
    from resnet_jax.data.pipelines import build_pipeline

    config = imagenet_resnet50.get_config()
    config.unlock()
    config.update(dataset=f"folder:{folder}", num_classes=CLASSES, batch_size=batch,
                  data_workers=workers, image_size=size, eval_resize=max(size, 256),
                  auto_augment=auto_augment)
    pipeline = build_pipeline(config)
    try:
        pipeline.train_batches(0, 1)  # workers started and warm
        step, started = 1, time.perf_counter()
        while time.perf_counter() - started < seconds:
            pipeline.train_batches(step, 1)
            step += 1
        return (step - 1) * batch / (time.perf_counter() - started)
    finally:
        pipeline.close()


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True,
                        help="where the JPEGs are (generated there once)")
    parser.add_argument("--images", type=int, default=2000, help="JPEGs to generate")
    parser.add_argument("--workers", default=str(os.cpu_count() or 1),
                        help="comma-separated worker counts for the whole-pipeline rate")
    parser.add_argument("--batch", type=int, default=128, help="batch of the pipeline rows")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per row")
    parser.add_argument("--out", type=Path, default=Path("input_pipeline.json"))
    parser.add_argument("--auto-augment", default="", choices=("", "ta_wide", "ra"),
                        help="TrivialAugmentWide or RandAugment after the crop (default: none)")
    args = parser.parse_args()
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers={args.workers} must be integers separated by commas, e.g. 1,2")
    if (min(workers) < 0 or args.images < CLASSES or not 1 <= args.batch <= args.images
            or not 0 < args.seconds < math.inf):
        parser.error(f"need --workers >= 0, --images >= {CLASSES}, --batch from 1 to --images, "
                     "--seconds > 0 and finite")
    generated = args.folder / DONE
    if generated.is_file() and generated.read_text().split()[0] != str(args.images):
        parser.error(f"--folder {args.folder} holds {generated.read_text().split()[0]} generated "
                     f"images, not {args.images}; pass that --images, or a new --folder")
    check_out(parser, args.out)
    try:
        measure(args, workers)
    except KeyboardInterrupt:
        raise SystemExit("error: stopped by Ctrl-C; nothing measured was written (the same "
                         "command starts again, generating the JPEGs again if cut short)") from None


def measure(args: argparse.Namespace, workers: list[int]) -> None:
    generate(args.folder, args.images)
    result = {"decoder": "libjpeg-turbo (simplejpeg, fast DCT and upsampling); resize: PIL",
              "images": args.images, "batch": args.batch,
              "auto_augment": args.auto_augment or None,
              "per_worker_images_per_sec": per_worker_rate(args.folder, args.seconds,
                                                           auto_augment=args.auto_augment),
              "cpu_count": os.cpu_count(), "pipeline": {}}
    print(f"one worker process: {result['per_worker_images_per_sec']:.0f} images/s")
    for count in workers:
        rate = pipeline_rate(args.folder, count, args.batch, args.seconds,
                             auto_augment=args.auto_augment)
        result["pipeline"][str(count)] = rate
        print(f"pipeline, {count} worker(s): {rate:.0f} images/s")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
