"""Weights without torch: torch.save's files, in both of its formats, read to the same
arrays torch's own reading gives (anything pickled besides tensors refused, never run), and
ImageNet's class names shipped with the package."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from helpers import REPO

from resnet_jax.data import CIFAR10_CLASSES
from resnet_jax.errors import WeightsError
from resnet_jax.weights import pth


def odd_tensors() -> dict[str, torch.Tensor]:
    """Tensors whose layout a reader could get wrong: strides, offsets, dtypes, no shape."""
    shared = torch.arange(10, dtype=torch.int64)
    return {"transposed": torch.arange(12.0).reshape(3, 4).t(), "view": shared[2:7],
            "same storage": shared, "half": torch.randn(3).half(),
            "bfloat16": torch.randn(5).bfloat16(), "double": torch.randn(2, 2).double(),
            "scalar": torch.tensor(3.5), "bool": torch.tensor([True, False]),
            "empty": torch.zeros(0, 3)}


def assert_read_as_torch_reads(ours, theirs) -> None:
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs)
        for key in theirs:
            assert_read_as_torch_reads(ours[key], theirs[key])
    elif isinstance(theirs, torch.Tensor):
        expected = theirs.view(torch.int16).numpy() if theirs.dtype == torch.bfloat16 else (
            theirs.numpy())
        got = ours.view(np.int16) if theirs.dtype == torch.bfloat16 else ours
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)  # bit for bit
    else:
        assert ours == theirs


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "older format"])
def test_torch_save_files_read_without_torch_as_torch_reads_them(zip_format):
    state = torchvision.models.resnet18().state_dict()
    for saved in (state, odd_tensors(), {"state_dict": state, "epoch": 3, "best_prec1": 91.7}):
        file = io.BytesIO()
        torch.save(saved, file, _use_new_zipfile_serialization=zip_format)
        theirs = torch.load(io.BytesIO(file.getvalue()), weights_only=True)
        assert_read_as_torch_reads(pth.read(io.BytesIO(file.getvalue()), "saved.pth"), theirs)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "older format"])
def test_anything_pickled_besides_tensors_is_refused_and_never_run(zip_format, tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 3), path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsError, match=f"^{path} holds pickled Python objects besides "
                                           "tensors .* which are never run here"):
        pth.read(path, str(path))

    class Runs:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": torch.zeros(1), "x": Runs()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsError, match="holds pickled Python objects besides tensors"):
        pth.read(path, str(path))


def test_predict_evaluate_and_init_from_read_the_published_cifar_layout_without_torch(
        tmp_path):
    """A dict around a DataParallel state dict, its head named linear, in the older
    format (as the published CIFAR ResNets are), used by every door in a process where
    torch and torchvision cannot be imported: as a file, and by name from a weights table,
    downloaded (from a local server), checked and cached there."""
    import hashlib
    import json

    import jax
    from helpers import serving
    from PIL import Image

    from resnet_jax import create_model
    from resnet_jax.models.torch_compat import to_torchvision

    variables = create_model("resnet20").init(jax.random.key(0), np.zeros((1, 8, 8, 3)))
    state = {f"module.{k.replace('fc.', 'linear.')}": torch.from_numpy(np.array(v))
             for k, v in to_torchvision(variables, "resnet20").items()}
    weights = tmp_path / "resnet20-0000.th"
    torch.save({"state_dict": state, "best_prec1": 91.7}, weights,
               _use_new_zipfile_serialization=False)
    raw = weights.read_bytes()
    for label, name in enumerate(CIFAR10_CLASSES):
        folder = tmp_path / "test" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32), (25 * label, 0, 0)).save(folder / "0.png")
    image, test = tmp_path / "test" / "cat" / "0.png", tmp_path / "test"
    check = f"""
import sys
sys.modules['torch'] = sys.modules['torchvision'] = None
sys.path.insert(0, 'tests')
from helpers import tiny_config
from resnet_jax import evaluate, predict
from resnet_jax import pretrained
from resnet_jax.weights import initial_variables, load_weights
kernel = load_weights('resnet20', {str(weights)!r}).variables['params']['conv1']['kernel']
assert pretrained(None, 'CIFAR10_MINE')[0].num_classes == 10  # downloaded here, once
for weights in ({str(weights)!r}, 'CIFAR10_MINE'):
    assert predict.main([{str(image)!r}, '--weights', weights, '--model', 'resnet20']) == 0
    assert evaluate.main(['--weights', weights, '--model', 'resnet20', '--dataset',
                          'folder:{test}']) == 0
    initial_variables(tiny_config(image_size=32, init_from=weights))
print('kernel sum', float(kernel.sum()))
"""
    entry = {"model": "resnet20", "name": "CIFAR10_MINE", "default": False, "source": "a test",
             "url": None, "sha256": hashlib.sha256(raw).hexdigest()[:8], "format": "torch.save",
             "preprocessing": {"resize": 32, "crop": 32, "interpolation": "bilinear",
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
             "classes": "CIFAR-10", "published": {"top1": 91.5, "top5": None, "on": "CIFAR-10",
                                                  "where": "this test"}, "license": "MIT"}
    with serving({"/resnet20-0000.th": raw}) as (address, asked):
        entry["url"] = f"{address}/resnet20-0000.th"
        (tmp_path / "table.json").write_text(json.dumps({"entries": [entry]}))
        result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                                text=True, timeout=300, env={
                                    **os.environ, "RESNET_JAX_CACHE": str(tmp_path / "cache"),
                                    "RESNET_JAX_WEIGHTS_TABLE": str(tmp_path / "table.json")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert asked == [("GET", "/resnet20-0000.th")], "downloaded once: then from the cache"
    assert result.stdout.count("examples  10") == 2
    assert ("weights: resnet20 CIFAR10_MINE (a test; "
            f"{tmp_path / 'cache' / 'resnet20' / 'CIFAR10_MINE' / 'resnet20-0000.th'}); published "
            "top-1 91.5% on CIFAR-10 (this test)") in result.stdout
    assert re.search(r"published top-1 91.5% on CIFAR-10 \(this test\); this folder: "
                     r"\d+\.\d{3}%", result.stdout)
    assert float(result.stdout.split("kernel sum")[-1]) == pytest.approx(
        float(np.asarray(variables["params"]["conv1"]["kernel"]).sum()), rel=1e-6)


def test_imagenets_class_names_ship_with_the_package_as_torchvision_lists_them():
    from resnet_jax.weights.table import class_set_names

    expected = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert class_set_names("ImageNet-1k") == list(expected)
