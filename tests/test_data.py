"""Data sources on small generated files: what each reads, and how its problems are named."""

import pickle
import time

import numpy as np
import pytest
from PIL import Image

from configs import smoke
from resnet_jax import data
from resnet_jax.data.pipelines import datasets, images


def config_for(dataset, **overrides):
    config = smoke.get_config()
    config.dataset = dataset
    config.update(overrides)
    return config


def write_image_folder(root, classes=("cat", "dog", "frog"), per_class=(4, 2), size=8):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i:04d}.png")
    return root


def test_folder_source_reads_classes_in_sorted_order(tmp_path):
    root = write_image_folder(tmp_path / "images")
    dataset = datasets.load_dataset(config_for(f"folder:{root}"))
    assert dataset.num_classes == 3
    assert dataset.train.images.shape == (12, 8, 8, 3) and dataset.train.images.dtype == np.uint8
    assert dataset.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    png = np.asarray(Image.open(root / "train" / "dog" / "0001.png"))
    np.testing.assert_array_equal(dataset.train.images[5], png)


def test_16_bit_images_give_the_same_pixels_in_memory_as_streaming(tmp_path):
    root = write_image_folder(tmp_path / "images")
    wide = np.random.default_rng(1).integers(0, 65536, (8, 8), dtype=np.uint16)
    for path in root.glob("*/*/0000.png"):
        Image.fromarray(wide).save(path)  # mode I;16
    dataset = datasets.load_dataset(config_for(f"folder:{root}"))
    streamed = np.asarray(images.open_rgb((root / "train" / "cat" / "0000.png").read_bytes()))
    np.testing.assert_array_equal(dataset.train.images[0], streamed)
    np.testing.assert_array_equal(streamed, images.decode_fast(
        (root / "train" / "cat" / "0000.png").read_bytes()))
    assert streamed.std() > 20  # scaled from 16 bits, not clipped to white


def test_a_slow_load_shows_files_decoded_of_all(tmp_path, monkeypatch, capsys):
    root = write_image_folder(tmp_path / "images")
    decode, slow = datasets.decode, root / "train" / "cat" / "0000.png"
    monkeypatch.setattr(datasets, "decode", lambda path: time.sleep(1.5 * (path == slow)) or
                        decode(path))  # the bar shows once loading has taken a second
    datasets.load_dataset(config_for(f"folder:{root}"))
    bar = capsys.readouterr().err
    assert f"decoding {root / 'train'}" in bar and "12/12" in bar and "img/s" in bar


@pytest.mark.parametrize("problem,message", [
    ("missing", "does not exist"),
    ("empty", "needs train/<class>/ and test/<class>/"),
    ("mismatch", "train and test class folders .* differ"),
    ("a split", "found train: 0 classes.*did you mean folder:.*images\\?"),
])
def test_folder_source_problems_are_named(tmp_path, problem, message):
    root = tmp_path / "images"
    if problem == "empty":
        root.mkdir()
    if problem == "mismatch":
        write_image_folder(root)
        (root / "test" / "frog").rename(root / "test" / "toad")
    if problem == "a split":
        root = write_image_folder(root) / "train"
    with pytest.raises(data.DataError, match=message):
        datasets.load_dataset(config_for(f"folder:{root}"))


def write_cifar10_python(root, rng):
    root.mkdir()
    images = rng.integers(0, 256, (6 * 4, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 6 * 4).tolist()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        part = slice(4 * i, 4 * i + 4)
        batch = {b"data": images[part].reshape(4, -1), b"labels": labels[part]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return images, labels


def test_cifar10_python_source_reads_the_pickled_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    images, labels = write_cifar10_python(root, np.random.default_rng(0))
    dataset = datasets.load_dataset(config_for(f"cifar:{root}"))
    assert dataset.num_classes == 10 and len(dataset.train) == 20 and len(dataset.test) == 4
    assert (dataset.mean, dataset.std) == data.CIFAR10_STATS
    np.testing.assert_array_equal(dataset.train.images[7], images[7].transpose(1, 2, 0))
    assert dataset.test.labels.tolist() == labels[20:]


def test_cifar100_python_source_uses_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("test", 3)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": list(range(90, 90 + n)), b"coarse_labels": [0] * n}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    dataset = datasets.load_dataset(config_for(f"cifar:{root}"))
    assert dataset.num_classes == 100 and (dataset.mean, dataset.std) == data.CIFAR100_STATS
    assert dataset.train.labels.tolist() == [90, 91, 92, 93, 94, 95]


def test_cifar_source_in_the_wrong_format_is_named(tmp_path):
    with pytest.raises(data.DataError, match="is not a cifar-10-batches-py directory"):
        datasets.load_dataset(config_for(f"cifar:{tmp_path}"))


def test_tfds_source_reads_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(datasets, "_reachable", lambda url: True)  # the mock "downloads"
    with tfds.testing.mock_data(num_examples=24):
        dataset = datasets.load_dataset(config_for("cifar10"))
    assert dataset.train.images.shape == (24, 32, 32, 3) and dataset.num_classes == 10
    assert dataset.train.labels.dtype == np.int32


def test_tfds_without_data_or_network_fails_fast_naming_the_ways_out(tmp_path):
    started = time.time()
    with pytest.raises(data.DataError) as error:
        datasets.load_dataset(config_for("cifar10", data_dir=str(tmp_path)))
    assert time.time() - started < 30
    for way in ("data_dir", "folder:PATH", "cifar:PATH"):
        assert way in str(error.value)


def test_unknown_tfds_name_is_named():
    with pytest.raises(data.DataError, match="TFDS has no dataset named 'cifar11'"):
        datasets.load_dataset(config_for("cifar11"))


def test_local_sources_do_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    root = write_image_folder(tmp_path / "images")
    code = ("import sys; from configs import smoke; "
            "from resnet_jax.data.pipelines import datasets; "
            f"c = smoke.get_config(); c.dataset = 'folder:{root}'; datasets.load_dataset(c); "
            "c.dataset = 'synthetic'; datasets.load_dataset(c); "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_class_folders_are_read_at_any_depth_hidden_ones_left_out_loose_images_named(
        tmp_path, capsys):
    root = write_image_folder(tmp_path / "images")
    (root / "train" / "cat" / "0000.png").rename(root / "train" / "cat" / "nested.png")
    (root / "train" / "cat" / "deeper").mkdir()
    (root / "train" / "cat" / "nested.png").rename(root / "train" / "cat" / "deeper" / "0.png")
    for split in ("train", "test"):  # a notebook's folder and an AppleDouble file: no classes
        (root / split / ".ipynb_checkpoints").mkdir()
        (root / split / "dog" / "._0000.png").write_bytes(b"resource fork")
    (root / "train" / "loose.png").write_bytes((root / "train" / "dog" / "0000.png").read_bytes())
    dataset = datasets.load_dataset(config_for(f"folder:{root}", num_classes=3))
    assert dataset.class_names == ("cat", "dog", "frog") and len(dataset.train) == 12
    assert ("warning: 1 image(s) directly under " + str(root / "train") + " are in no class "
            "folder and are left out: loose.png") in capsys.readouterr().err


def test_images_smaller_than_the_network_takes_are_refused_naming_the_way_out(tmp_path):
    root = write_image_folder(tmp_path / "images", size=3)
    from resnet_jax.data.pipelines import build_pipeline

    with pytest.raises(data.DataError, match="the images are 3x3, smaller than resnet20's total "
                       "stride of 4: stream them resized"):
        build_pipeline(config_for(f"folder:{root}", num_classes=3, image_size=3, batch_size=4))
