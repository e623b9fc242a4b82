"""The augmentations on the device: MixUp, CutMix and random erasing equal torchvision's
for the same draws; train accuracy counts the dominant label."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import tiny_config
from torchvision.transforms import v2

from resnet_jax.train import erasing, mixing
from resnet_jax.train.config_schema import ConfigError

CLASSES = 5


class Fixed:
    """Stands for torchvision's Beta distribution: always ``lam``."""

    def __init__(self, lam):
        self.lam = lam

    def sample(self, shape):
        return torch.tensor(self.lam)


def batch():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 6, 10, 3), dtype=np.float32),  # NHWC, not square
            np.array([0, 3, 1, 4]))


def torchvision_mixed(transform, images, labels):
    out_images, out_targets = transform(torch.from_numpy(images.transpose(0, 3, 1, 2)),
                                        torch.from_numpy(labels))
    return out_images.numpy().transpose(0, 2, 3, 1), out_targets.numpy()


@pytest.mark.parametrize("lam", [0.375, 0.8125])
def test_mixup_is_torchvisions(lam):
    images, labels = batch()
    transform = v2.MixUp(alpha=0.2, num_classes=CLASSES)
    transform._dist = Fixed(lam)
    theirs = torchvision_mixed(transform, images, labels)
    ours = mixing.mixup(images, jax.nn.one_hot(labels, CLASSES), jnp.float32(lam))
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


@pytest.mark.parametrize("lam,centre", [(0.375, (2, 7)), (0.8125, (0, 0)), (0.1, (5, 9)),
                                        (0.99, (3, 4))])
def test_cutmix_box_images_and_targets_are_torchvisions(lam, centre, monkeypatch):
    images, labels = batch()
    transform = v2.CutMix(alpha=1.0, num_classes=CLASSES)
    transform._dist = Fixed(lam)
    draws = iter([torch.tensor([centre[1]]), torch.tensor([centre[0]])])  # x first, then y
    monkeypatch.setattr(torch, "randint", lambda *args, **kwargs: next(draws))
    theirs = torchvision_mixed(transform, images, labels)
    ours = mixing.cutmix(images, jax.nn.one_hot(labels, CLASSES), jnp.float32(lam),
                         jnp.int32(centre[0]), jnp.int32(centre[1]))
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


def test_one_of_the_two_per_batch_and_the_dominant_label():
    images, labels = batch()
    seen = set()
    for seed in range(12):
        mixed, soft, dominant = mixing.mix(jax.random.key(seed), images, labels, CLASSES,
                                           0.2, 1.0)
        untouched = np.mean(np.asarray(mixed) == images)  # outside CutMix's box
        seen.add("cutmix" if untouched > 0.05 else "mixup")
        np.testing.assert_allclose(np.asarray(soft).sum(-1), 1.0, rtol=1e-6)
        weights = np.asarray(soft)[np.arange(4), labels]
        expected = np.where(weights >= 0.5, labels, np.roll(labels, 1))
        np.testing.assert_array_equal(dominant, expected)
    assert seen == {"mixup", "cutmix"}


def test_the_pytorch_twin_refuses_them():
    """(A run with them: test_training's reproducibility test.)"""
    from torch_side import train as torch_train

    for option in ("mixup_alpha", "cutmix_alpha", "random_erasing"):
        with pytest.raises(ConfigError, match="the PyTorch twin neither mixes batches"):
            torch_train.check_twin_config(tiny_config(**{option: 0.5}), amp=False)


@pytest.mark.parametrize("fraction,log_ratio", [(0.02, -1.2), (0.1, 0.0), (0.33, 1.19),
                                                (0.25, 0.7)])
def test_random_erasing_boxes_and_pixels_are_torchvisions(fraction, log_ratio):
    """The box sides of one draw as RandomErasing.get_params computes them, and the erased
    pixels as torchvision's functional erase leaves them (value 0, after normalisation)."""
    import math

    from torchvision.transforms import functional

    height, width = 12, 20
    area = height * width * fraction
    ratio = math.exp(log_ratio)
    theirs = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
    ours = erasing.box_sides(height, width, jnp.float32(fraction), jnp.float32(log_ratio))
    assert tuple(int(v) for v in ours) == theirs
    image = np.random.default_rng(1).standard_normal((height, width, 3), dtype=np.float32)
    top, left = 2, 3
    expected = functional.erase(torch.from_numpy(image.transpose(2, 0, 1)), top, left,
                                min(theirs[0], height - top), min(theirs[1], width - left),
                                torch.tensor(0.0))
    erased = erasing.erase(image, top, left, *ours)
    np.testing.assert_array_equal(erased, expected.numpy().transpose(1, 2, 0))


def test_random_erasing_erases_one_box_per_chosen_image_at_its_rate():
    images = jnp.ones((400, 16, 16, 3))
    keys = jax.random.split(jax.random.key(0), 400)
    erased = np.asarray(jax.vmap(erasing.random_erase, (0, 0, None))(keys, images, 0.25))
    zeros = (erased == 0).all(-1)
    touched = zeros.any((1, 2))
    assert 0.18 < touched.mean() < 0.32
    for mask in zeros[touched][:50]:
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1].all()  # one rectangle
        assert mask.sum() == rows.size * columns.size
        assert 0.015 < mask.mean() < 0.36
