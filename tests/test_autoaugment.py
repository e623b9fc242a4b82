"""TrivialAugmentWide and RandAugment: torchvision's op tables, and each op's pixels equal
torchvision's at three magnitudes, both signs."""

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import InterpolationMode, autoaugment

from benchmarks.input_pipeline import make_photo
from resnet_jax.data.pipelines import autoaugment as ours

HEIGHT, WIDTH = 24, 32
PHOTO = Image.fromarray(make_photo(np.random.default_rng(0), HEIGHT, WIDTH))


def torchvision_space(policy):
    if policy == "ta_wide":
        return autoaugment.TrivialAugmentWide()._augmentation_space(ours.BINS)
    return autoaugment.RandAugment()._augmentation_space(ours.BINS, (HEIGHT, WIDTH))


@pytest.mark.parametrize("policy", ours.POLICIES)
def test_every_op_and_magnitude_is_torchvisions(policy):
    theirs, mine = torchvision_space(policy), ours.space(policy, HEIGHT, WIDTH)
    assert list(mine) == list(theirs)
    for name, (magnitudes, signed) in theirs.items():
        table, our_signed = mine[name]
        assert our_signed == signed, name
        if magnitudes.ndim == 0:
            assert table is None
            values = [0.0]
        else:
            np.testing.assert_array_equal(table, magnitudes.numpy(), err_msg=name)
            values = [float(magnitudes[k]) for k in (3, 15, 30)]
        for magnitude in values:
            for sign in (1.0, -1.0) if signed else (1.0,):
                expected = autoaugment._apply_op(PHOTO, name, sign * magnitude,
                                                 InterpolationMode.NEAREST, None)
                np.testing.assert_array_equal(ours.apply(PHOTO, name, sign * magnitude),
                                              np.asarray(expected),
                                              err_msg=f"{name} {sign * magnitude}")


def test_a_policy_is_a_function_of_the_examples_draws():
    image = np.asarray(PHOTO)
    for policy in ours.POLICIES:
        outputs = [ours.augment(image, policy, np.random.default_rng([0, 5, i]))
                   for i in range(12)]
        again = ours.augment(image, policy, np.random.default_rng([0, 5, 3]))
        np.testing.assert_array_equal(again, outputs[3])
        assert sum(not np.array_equal(o, image) for o in outputs) >= 6, policy
