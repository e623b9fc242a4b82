"""The streaming pipeline: images of any size and format from a folder or TFDS, the same
pixels as torchvision, bad files skipped and counted, exact resume after kill -9, the
same batches on any number of devices, processes and workers."""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from helpers import REPO, metric_rows, run_train_in_process, run_train_py, tiny_config
from PIL import Image
from test_reliability import (
    assert_same_run,
    logged_steps,
    outputs_of,
    start_two_processes,
    wait_while_running,
)

from benchmarks.input_pipeline import make_photo
from resnet_jax.data.pipelines import build_pipeline, images
from resnet_jax.train.loop import train_and_evaluate

CLASSES = ("ant", "bee", "cat")
BAD_TRAIN = ("bee/corrupt.jpg", "cat/truncated.jpg", "ant/notes.png")


def jpeg_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def odd_images(rng) -> dict[str, Image.Image]:
    """One image of each mode a photo folder may hold besides RGB JPEG."""
    photo = Image.fromarray(make_photo(rng, 30, 40))
    deep = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    return {"grey.png": photo.convert("L"), "cmyk.jpg": photo.convert("CMYK"),
            "rgba.png": photo.convert("RGBA"), "palette.png": photo.convert("P"),
            "deep.png": Image.fromarray(deep)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """train: 8 JPEGs per class of random sizes, the odd formats and 3 bad files (32 in
    all, two batches of 16); val: 3 per class and one corrupt file."""
    root, rng = tmp_path_factory.mktemp("photos"), np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 3)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                height, width = rng.integers(18, 60, 2)
                (root / split / name / f"{i}.jpg").write_bytes(
                    jpeg_bytes(make_photo(rng, height, width)))
    for i, (name, image) in enumerate(odd_images(rng).items()):
        image.save(root / "train" / CLASSES[i % 3] / name)
    whole = jpeg_bytes(make_photo(rng, 40, 40))
    (root / "train" / BAD_TRAIN[0]).write_bytes(rng.bytes(2000))
    (root / "train" / BAD_TRAIN[1]).write_bytes(whole[: len(whole) // 2])
    (root / "train" / BAD_TRAIN[2]).write_text("not an image")
    (root / "val" / "bee" / "broken.jpg").write_bytes(rng.bytes(500))
    return root


def streaming_config(folder: Path, **overrides):
    config = tiny_config(dataset=f"folder:{folder}", pipeline="streaming", num_classes=3,
                         image_size=16, eval_resize=20, eval_image_size=20, batch_size=16,
                         eval_batch_size=8,
                         num_train_steps=6, eval_every_steps=3, checkpoint_every_steps=1,
                         log_every_steps=1, lr_boundaries=(), lr_scales=(),
                         learning_rate=0.002, data_workers=0)
    config.update(overrides)
    return config


def test_every_odd_format_decodes_to_rgb_and_bad_files_are_refused(tmp_path):
    for name, image in odd_images(np.random.default_rng(1)).items():
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if name.endswith(".jpg") else "PNG")
        rgb = np.asarray(images.open_rgb(buffer.getvalue()))
        assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8, name
        assert 20 < rgb.mean() < 235, f"{name} lost its values (clipped or dropped)"
    whole = jpeg_bytes(make_photo(np.random.default_rng(2), 64, 64))
    for bad in (whole[: len(whole) // 2], b"not an image", b""):
        with pytest.raises(images.UnreadableImage):
            images.open_rgb(bad)
        with pytest.raises(images.UnreadableImage):
            images.decode_fast(bad)
    photo = jpeg_bytes(make_photo(np.random.default_rng(3), 375, 500))
    fast, exact = images.decode_fast(photo), np.asarray(images.open_rgb(photo))
    assert np.abs(fast.astype(int) - exact).mean() < 3  # libjpeg-turbo's fast paths: ~2


@pytest.mark.parametrize("size", [(375, 500), (500, 375), (256, 256), (180, 240), (300, 1000)])
def test_evaluation_pixels_equal_torchvisions_transform(tmp_path, size):
    from torchvision import transforms
    from torchvision.datasets.folder import pil_loader

    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(make_photo(np.random.default_rng(sum(size)), *size)))
    theirs = np.asarray(transforms.Compose([transforms.Resize(256),
                                            transforms.CenterCrop(224)])(pil_loader(path)))
    ours = images.eval_crop(images.open_rgb(path.read_bytes()), 256, 224)
    assert ours.shape == theirs.shape == (224, 224, 3)
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_random_resized_crop_draws_as_torchvision_does():
    import torch
    from torchvision import transforms

    rng, image = np.random.default_rng(0), torch.zeros(3, 375, 500)
    torch.manual_seed(0)
    ours = np.array([images.random_resized_crop_box(375, 500, rng) for _ in range(4000)])
    theirs = np.array([transforms.RandomResizedCrop.get_params(image, [0.08, 1.0],
                                                               [3 / 4, 4 / 3])
                       for _ in range(4000)])
    for boxes in (ours, theirs):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= 375).all() and (left + w <= 500).all()
    for statistic in (lambda b: b[:, 2] * b[:, 3] / (375 * 500), lambda b: b[:, 3] / b[:, 2],
                      lambda b: b[:, 0] / 375, lambda b: b[:, 1] / 500):
        for quantile in (0.05, 0.25, 0.5, 0.75, 0.95):  # the same distributions
            assert np.quantile(statistic(ours), quantile) == pytest.approx(
                np.quantile(statistic(theirs), quantile), abs=0.04)
    for height, width in ((10, 1000), (1000, 10)):  # no draw fits: torchvision's fallback
        theirs = transforms.RandomResizedCrop.get_params(torch.zeros(3, height, width),
                                                         [0.08, 1.0], [3 / 4, 4 / 3])
        assert images.random_resized_crop_box(height, width, rng) == tuple(theirs)


def test_batches_are_a_function_of_the_step_and_bad_files_are_skipped_once(folder, capsys):
    pipeline = build_pipeline(streaming_config(folder))
    try:
        epoch = [pipeline.train_batches(step, 1) for step in range(2)]
        assert epoch[0]["image"].shape == (1, 16, 16, 16, 3)
        assert epoch[0]["image"].dtype == np.uint8
        assert sorted(Path(n).relative_to(folder / "train").as_posix()
                      for n in pipeline.skipped) == sorted(BAD_TRAIN)
        warned = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
        assert len(warned) == 3 and not any("BytesIO" in line for line in warned), warned
        pipeline.train_batches(2, 1)  # the next epoch meets them again: no new warning
        pipeline.train_batches(3, 1)
        assert "skipped" not in capsys.readouterr().err
        again = pipeline.train_batches(1, 1)  # out of order: restarted at that step
        np.testing.assert_array_equal(again["image"], epoch[1]["image"])
        evaluated = list(pipeline.eval_batches(8))
        assert sum(b["mask"].sum() for b in evaluated) == 9  # every readable image once
        assert pipeline.skipped_examples() == 4
    finally:
        pipeline.close()
    pipeline = build_pipeline(streaming_config(folder, data_workers=2))
    try:  # worker processes make the same batches
        for step in (1, 2):
            batch = pipeline.train_batches(step, 1)
            if step == 1:
                np.testing.assert_array_equal(batch["image"], epoch[1]["image"])
                np.testing.assert_array_equal(batch["label"], epoch[1]["label"])
    finally:
        pipeline.close()


@pytest.fixture(scope="module")
def straight(folder, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("straight")
    summary = train_and_evaluate(streaming_config(folder), workdir)
    assert summary["skipped_examples"] == 4 and summary["eval_examples"] == 9, summary
    return workdir


def test_evaluation_takes_its_own_crop_and_evaluate_repeats_the_summary(straight):
    """Trained on 16x16 crops, evaluated on 20x20 ones (eval_image_size), by the trainer
    and by evaluate --workdir alike; predict's preprocessing is the evaluation's."""
    from resnet_jax.evaluate import evaluate_run
    from resnet_jax.weights import load_weights

    summary = json.loads((straight / "summary.json").read_text())
    assert evaluate_run(straight)["loss"] == summary["final_test_loss"]
    preprocessing = load_weights(None, str(straight)).preprocessing
    assert (preprocessing.resize, preprocessing.crop) == (20, 20)


def ffcv_resolution(epoch, min_res, max_res, end_ramp, start_ramp):
    """ffcv-imagenet's ImageNetTrainer.get_resolution, written out."""
    if epoch <= start_ramp:
        return min_res
    if epoch >= end_ramp:
        return max_res
    interp = np.interp([epoch], [start_ramp, end_ramp], [min_res, max_res])
    return int(np.round(interp[0] / 32)) * 32


def test_progressive_resizing_is_ffcvs_and_a_resume_mid_ramp_equals_a_straight_run(
        folder, tmp_path):
    from resnet_jax.data.pipelines.base import ramp_size

    for epoch in range(90):  # rn50_88_epochs.yaml's ramp, and a longer one
        assert ramp_size(epoch, 160, 192, (65, 76)) == ffcv_resolution(epoch, 160, 192, 76, 65)
        assert ramp_size(epoch, 128, 256, (10, 60)) == ffcv_resolution(epoch, 128, 256, 60, 10)
    config = streaming_config(folder, image_size=64, min_image_size=32, ramp_steps=(1, 3),
                              eval_resize=64, eval_image_size=64, num_train_steps=4,
                              eval_every_steps=4, batch_size=8, eval_batch_size=8)
    train_and_evaluate(config, tmp_path / "straight")
    rows = metric_rows(tmp_path / "straight")
    assert [r["image_size"] for r in rows] == [32, 32, 64, 64]  # the sizes of steps 0 to 3
    config.num_train_steps = 2
    train_and_evaluate(config, tmp_path / "resumed")
    config.num_train_steps = 4
    train_and_evaluate(config, tmp_path / "resumed")

    def trained(rows):  # the first segment also evaluated at its end, step 2
        return [{k: v for k, v in r.items() if not k.startswith(("test_", "eval_"))}
                for r in rows]

    resumed = metric_rows(tmp_path / "resumed")
    assert trained(resumed) == trained(rows) and resumed[-1] == rows[-1]


def test_kill_9_mid_epoch_then_resume_equals_a_straight_run(folder, straight, tmp_path):
    workdir = tmp_path / "killed"
    process = run_train_py(workdir, streaming_config(folder, data_workers=2), wait=False)
    assert wait_while_running(process, lambda: logged_steps(workdir) >= 3)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers, "no worker processes"
    process.kill()
    process.communicate(timeout=60)
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, "worker processes outlived their killed trainer"
    result = run_train_in_process([f"--workdir={workdir}", "--config.data_workers=0"])  # free
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert_same_run(workdir, straight)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["skipped_examples"] == 4, "the skipped files are kept in the checkpoints"
    (workdir / "summary.json").unlink()  # rebuilt from the records, skipped files included
    assert train_and_evaluate(streaming_config(folder), workdir)["skipped_examples"] == 4


def test_an_evaluation_split_with_no_readable_image_does_not_stop_the_run(folder, tmp_path):
    broken = tmp_path / "broken"
    for name in CLASSES:
        shutil.copytree(folder / "train" / name, broken / "train" / name)
        (broken / "val" / name).mkdir(parents=True)
        (broken / "val" / name / "0.jpg").write_bytes(b"garbage")
    summary = train_and_evaluate(streaming_config(broken, num_train_steps=2,
                                                  eval_every_steps=2), tmp_path / "run")
    assert summary["steps"] == 2 and summary["eval_examples"] == 0
    assert summary["final_test_accuracy"] is None and summary["skipped_examples"] == 6
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()


def test_one_device_trains_as_eight(folder, straight, tmp_path):
    config = streaming_config(folder, checkpoint_every_steps=6)
    result = run_train_py(tmp_path / "one", config, devices=1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.startswith("devices: 1 cpu device(s), 1 process(es)\n")
    ours, theirs = metric_rows(tmp_path / "one"), metric_rows(straight)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    np.testing.assert_allclose([r["train_loss"] for r in ours],
                               [r["train_loss"] for r in theirs], rtol=1e-5)


def test_two_processes_of_four_devices_stream_as_one_of_eight(folder, straight, tmp_path):
    workdir = tmp_path / "two_processes"
    config = streaming_config(folder, checkpoint_every_steps=6)
    outputs = outputs_of(start_two_processes(workdir, config))
    assert "skipped_examples" in outputs[0]
    ours, theirs = metric_rows(workdir), metric_rows(straight)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    np.testing.assert_allclose([r["train_loss"] for r in ours],
                               [r["train_loss"] for r in theirs], rtol=1e-5)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["skipped_examples"] == 4 and summary["eval_examples"] == 9


TINY_TFDS = '''
import sys
import numpy as np
import tensorflow_datasets as tfds

class TinyPhotos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["ant", "bee"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(16), "validation": self._generate_examples(6)}

    def _generate_examples(self, count):
        rng = np.random.default_rng(count)
        for i in range(count):
            yield i, {"image": rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8),
                      "label": i % 2}

TinyPhotos(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
'''


def test_a_tfds_array_record_dataset_streams_without_tensorflow(tmp_path):
    data_dir = tmp_path / "tfds"
    built = subprocess.run([sys.executable, "-c", TINY_TFDS, str(data_dir)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    check = f'''
import sys
from configs import smoke
from resnet_jax.data.pipelines import build_pipeline
config = smoke.get_config()
config.update(dataset="tiny_photos", data_dir="{data_dir}", pipeline="streaming",
              num_classes=2, image_size=16, eval_resize=16, batch_size=8)
pipeline = build_pipeline(config)
batch = pipeline.train_batches(0, 1)
counted = sum(b["mask"].sum() for b in pipeline.eval_batches(4))
print(batch["image"].shape, int(counted), pipeline.class_names, "tensorflow" in sys.modules)
'''
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "(1, 8, 16, 16, 3) 6 ['ant', 'bee'] False"
