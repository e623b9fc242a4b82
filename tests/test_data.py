"""Data sources on small generated files, batch order, evaluation coverage, augmentation."""

import pickle
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import smoke
from resnet_jax import data


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
    dataset = data.load_dataset(config_for(f"folder:{root}"))
    assert dataset.num_classes == 3
    assert dataset.train.images.shape == (12, 8, 8, 3) and dataset.train.images.dtype == np.uint8
    assert dataset.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    png = np.asarray(Image.open(root / "train" / "dog" / "0001.png"))
    np.testing.assert_array_equal(dataset.train.images[5], png)


@pytest.mark.parametrize("problem,message", [
    ("missing", "does not exist"),
    ("empty", "needs train/<class>/ and test/<class>/"),
    ("mismatch", "train and test class folders .* differ"),
])
def test_folder_source_problems_are_named(tmp_path, problem, message):
    root = tmp_path / "images"
    if problem == "empty":
        root.mkdir()
    if problem == "mismatch":
        write_image_folder(root)
        (root / "test" / "frog").rename(root / "test" / "toad")
    with pytest.raises(data.DataError, match=message):
        data.load_dataset(config_for(f"folder:{root}"))


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
    dataset = data.load_dataset(config_for(f"cifar:{root}"))
    assert dataset.num_classes == 10 and len(dataset.train) == 20 and len(dataset.test) == 4
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
    dataset = data.load_dataset(config_for(f"cifar:{root}"))
    assert dataset.num_classes == 100
    assert dataset.train.labels.tolist() == [90, 91, 92, 93, 94, 95]


def test_cifar_source_in_the_wrong_format_is_named(tmp_path):
    with pytest.raises(data.DataError, match="is not a cifar-10-batches-py directory"):
        data.load_dataset(config_for(f"cifar:{tmp_path}"))


def test_tfds_source_reads_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_reachable", lambda url: True)  # the mock "downloads"
    with tfds.testing.mock_data(num_examples=24):
        dataset = data.load_dataset(config_for("cifar10"))
    assert dataset.train.images.shape == (24, 32, 32, 3) and dataset.num_classes == 10
    assert dataset.train.labels.dtype == np.int32


def test_tfds_without_data_or_network_fails_fast_naming_the_ways_out(tmp_path):
    started = time.time()
    with pytest.raises(data.DataError) as error:
        data.load_dataset(config_for("cifar10", data_dir=str(tmp_path)))
    assert time.time() - started < 30
    for way in ("data_dir", "folder:PATH", "cifar:PATH"):
        assert way in str(error.value)


def test_unknown_tfds_name_is_named():
    with pytest.raises(data.DataError, match="TFDS has no dataset named 'cifar11'"):
        data.load_dataset(config_for("cifar11"))


def test_local_sources_do_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    root = write_image_folder(tmp_path / "images")
    code = ("import sys; from configs import smoke; from resnet_jax import data; "
            f"c = smoke.get_config(); c.dataset = 'folder:{root}'; data.load_dataset(c); "
            "c.dataset = 'synthetic'; data.load_dataset(c); "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_batch_order_is_a_function_of_seed_and_step():
    first = [data.train_indices(0, step, 32, 100) for step in range(3)]  # one epoch: 3 steps
    assert len(np.unique(np.concatenate(first))) == 96
    np.testing.assert_array_equal(data.train_indices(0, 4, 32, 100),
                                  data.train_indices(0, 4, 32, 100))
    assert not np.array_equal(data.train_indices(0, 0, 32, 100), data.train_indices(0, 3, 32, 100))
    assert not np.array_equal(data.train_indices(0, 0, 32, 100), data.train_indices(1, 0, 32, 100))


def test_evaluation_counts_1003_examples_exactly_once():
    batches = data.eval_batches(1003, 64)
    counted = np.concatenate([indices[mask > 0] for indices, mask in batches])
    np.testing.assert_array_equal(np.sort(counted), np.arange(1003))
    assert all(len(indices) == 64 for indices, _ in batches)


def test_augmentation_crops_and_flips_per_example_position():
    images = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3) + 1
    key = jax.random.key(0)
    out = data.augment(images, key, jnp.arange(2))
    assert out.shape == images.shape
    # Each output is a window of the zero-padded image, possibly mirrored.
    padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(2):
        windows = [padded[i, y:y + 8, x:x + 8] for y in range(9) for x in range(9)]
        windows += [w[:, ::-1] for w in windows]
        assert any(np.array_equal(out[i], w) for w in windows)
    # The same position draws the same crop whichever batch it sits in.
    alone = data.augment(images[1:], key, jnp.array([1]))
    np.testing.assert_array_equal(alone[0], out[1])
    draws = [data.augment(images[:1], jax.random.key(s), jnp.array([0])) for s in range(20)]
    assert len({np.asarray(d).tobytes() for d in draws}) > 10


def test_augmentation_is_the_same_on_one_device_and_on_eight():
    images = jnp.arange(32 * 8 * 8 * 3, dtype=jnp.float32).reshape(32, 8, 8, 3)

    def per_device(x, step):
        positions = jax.lax.axis_index("batch") * x.shape[0] + jnp.arange(x.shape[0])
        return data.augment(x, jax.random.fold_in(jax.random.key(0), step), positions)

    outputs = []
    for devices in (1, 8):
        mapped = jax.pmap(per_device, axis_name="batch", in_axes=(0, None),
                          devices=jax.local_devices()[:devices])
        outputs.append(mapped(images.reshape(devices, -1, 8, 8, 3), 3).reshape(images.shape))
    np.testing.assert_array_equal(*outputs)
