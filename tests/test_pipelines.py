"""The in-memory pipeline: batch order, evaluation coverage, augmentation, normalisation,
and each process's share."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import parallel
from resnet_jax.data.pipelines import datasets, normalize, step_key
from resnet_jax.data.pipelines.base import epoch_permutation, train_indices
from resnet_jax.data.pipelines.in_memory import InMemory, augment, eval_batches


def small_pipeline(augment=True, **options):
    rng = np.random.default_rng(0)
    train = datasets.Split(rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8),
                       rng.integers(0, 10, 100).astype(np.int32))
    test = datasets.Split(train.images[:30], train.labels[:30])
    return InMemory(datasets.make_dataset(train, test, 10), batch_size=32, seed=0, augment=augment,
                    **options)


def test_batch_order_is_a_function_of_seed_and_step():
    first = [train_indices(0, step, 32, 100) for step in range(3)]  # one epoch: 3 steps
    assert len(np.unique(np.concatenate(first))) == 96
    np.testing.assert_array_equal(train_indices(0, 4, 32, 100), train_indices(0, 4, 32, 100))
    assert not np.array_equal(train_indices(0, 0, 32, 100), train_indices(0, 3, 32, 100))
    assert not np.array_equal(train_indices(0, 0, 32, 100), train_indices(1, 0, 32, 100))


def ra_sampler_batches(order, repetitions, replicas, local, steps):
    """torchvision's RASampler (references/classification/sampler.py), written out for one
    epoch whose permutation is ``order``: each replica's first ``steps`` batches."""
    repeated = [index for index in order for _ in range(repetitions)]
    total = -(-len(order) * repetitions // replicas) * replicas
    repeated += repeated[:total - len(repeated)]
    shares = [repeated[rank:total:replicas] for rank in range(replicas)]
    return [[share[step * local:(step + 1) * local] for share in shares] for step in range(steps)]


def test_repeated_augmentation_deals_each_example_as_torchvisions_rasampler():
    """Per step, the same examples as RASampler's batches on 4 replicas of 8 (as many times
    each); every example of the epoch's share 4 times, its copies on 4 different devices."""
    batch, examples, reps = 32, 100, 4
    order = epoch_permutation(0, 0, examples)
    theirs = ra_sampler_batches(order, reps, replicas=4, local=8, steps=examples // batch)
    seen = []
    for step in range(examples // batch):
        ours = train_indices(0, step, batch, examples, repeats=reps)
        assert sorted(ours) == sorted(sum(theirs[step], []))
        for index in np.unique(ours):
            assert len({place // 8 for place in np.flatnonzero(ours == index)}) == reps
        seen.extend(ours)
    assert set(np.unique(seen, return_counts=True)[1]) == {reps}
    pipeline = small_pipeline(repeats=reps)
    indices = jnp.asarray(pipeline.train_batches(0, 1)["indices"][0])
    images, _ = pipeline.prepare(pipeline.resident(), {"indices": indices}, step_key(0, 0),
                                 jnp.arange(batch))
    assert not np.array_equal(images[0], images[8])  # two copies, two augmentations


def test_train_batches_for_several_steps_are_those_of_each_step():
    pipeline = small_pipeline()
    batches = pipeline.train_batches(2, 3)["indices"]
    assert batches.shape == (3, 32)
    for i, step in enumerate(range(2, 5)):
        np.testing.assert_array_equal(batches[i], train_indices(0, step, 32, 100))


def test_each_process_gets_its_contiguous_share(monkeypatch):
    whole = small_pipeline().train_batches(0, 2)["indices"]
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    share = small_pipeline().train_batches(0, 2)["indices"]
    np.testing.assert_array_equal(share, whole[:, 16:])
    assert parallel.process_share(np.arange(6)).tolist() == [3, 4, 5]


def test_evaluation_counts_1003_examples_exactly_once():
    batches = eval_batches(1003, 64)
    counted = np.concatenate([indices[mask > 0] for indices, mask in batches])
    np.testing.assert_array_equal(np.sort(counted), np.arange(1003))
    assert all(len(indices) == 64 for indices, _ in batches)


def test_prepare_gathers_augments_and_normalises_with_the_datasets_statistics():
    pipeline = small_pipeline()
    resident = pipeline.resident()
    batch = {"indices": pipeline.train_batches(5, 1)["indices"][0]}
    key, positions = step_key(0, 5), jnp.arange(32)
    images, labels = pipeline.prepare(resident, batch, key, positions)
    expected = normalize(augment(resident["train_images"][batch["indices"]], key, positions),
                         pipeline.mean, pipeline.std)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, resident["train_labels"][batch["indices"]])
    # Measured statistics: the whole normalised training split has mean 0 and std 1.
    everything = normalize(resident["train_images"], pipeline.mean, pipeline.std)
    np.testing.assert_allclose(everything.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(everything.std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_evaluation_batches_are_not_augmented_and_carry_their_mask():
    pipeline = small_pipeline(dtype="bfloat16")
    batch = next(pipeline.eval_batches(16))
    assert batch["mask"].tolist() == [1.0] * 16
    images, labels = pipeline.prepare_eval(pipeline.resident(), batch)
    assert images.dtype == jnp.bfloat16
    expected = normalize(pipeline.dataset.test.images[:16], pipeline.mean, pipeline.std)
    np.testing.assert_array_equal(images, expected.astype(jnp.bfloat16))
    last = list(pipeline.eval_batches(16))[-1]
    assert last["mask"].sum() == 30 - 16


def test_augmentation_crops_and_flips_per_example_position():
    images = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3) + 1
    key = jax.random.key(0)
    out = augment(images, key, jnp.arange(2))
    assert out.shape == images.shape
    # Each output is a window of the zero-padded image, possibly mirrored.
    padded = np.pad(np.asarray(images), ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(2):
        windows = [padded[i, y:y + 8, x:x + 8] for y in range(9) for x in range(9)]
        windows += [w[:, ::-1] for w in windows]
        assert any(np.array_equal(out[i], w) for w in windows)
    # The same position draws the same crop whichever batch it sits in.
    alone = augment(images[1:], key, jnp.array([1]))
    np.testing.assert_array_equal(alone[0], out[1])
    draws = [augment(images[:1], jax.random.key(s), jnp.array([0])) for s in range(20)]
    assert len({np.asarray(d).tobytes() for d in draws}) > 10


def test_augmentation_is_the_same_on_one_device_and_on_eight():
    images = jnp.arange(32 * 8 * 8 * 3, dtype=jnp.float32).reshape(32, 8, 8, 3)

    def per_device(x, step):
        positions = jax.lax.axis_index("batch") * x.shape[0] + jnp.arange(x.shape[0])
        return augment(x, step_key(0, step), positions)

    outputs = []
    for devices in (1, 8):
        mapped = jax.pmap(per_device, axis_name="batch", in_axes=(0, None),
                          devices=jax.local_devices()[:devices])
        outputs.append(mapped(images.reshape(devices, -1, 8, 8, 3), 3).reshape(images.shape))
    np.testing.assert_array_equal(*outputs)


@pytest.mark.parametrize("images", [np.full((4, 2, 2, 3), 7, np.uint8),
                                    np.arange(48, dtype=np.uint8).reshape(4, 2, 2, 3)])
def test_measured_statistics_match_numpy_and_never_divide_by_zero(images):
    mean, std = datasets.channel_stats(images, rows=5)
    np.testing.assert_allclose(mean, images.mean(axis=(0, 1, 2)) / 255, rtol=1e-12)
    np.testing.assert_allclose(std, np.maximum(images.std(axis=(0, 1, 2)), 1) / 255, rtol=1e-9)
