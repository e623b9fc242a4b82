"""torchvision weights give torchvision's logits, and the bridge round-trips exactly."""

import copy
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx as flax_nnx

from resnet_jax import create_model
from resnet_jax.models import nnx
from resnet_jax.models.torch_compat import from_torchvision, looks_like, to_torchvision
from torch_side.parity import randomised_torchvision

DEPTHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def torch_logits(model: "torch.nn.Module", images: np.ndarray, train: bool,
                 dtype: "torch.dtype" = torch.float32) -> np.ndarray:
    model = copy.deepcopy(model).to(dtype).train(train)
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2)).to(dtype)).numpy()


def max_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - theirs).max())


@pytest.mark.parametrize("name", DEPTHS)
def test_torchvision_weights_give_torchvision_logits(name):
    """At ImageNet's 224 for one net of each block (basic, bottleneck), and at an odd size,
    whose strided convolutions pad unevenly, for every depth."""
    reference = randomised_torchvision(name)
    variables = from_torchvision(reference.state_dict(), name)
    model = create_model(name)
    rng = np.random.default_rng(0)
    canonical = [(1, 224, 224, 3)] if name in ("resnet18", "resnet50") else []
    for shape in [*canonical, (2, 97, 81, 3)]:
        images = rng.standard_normal(shape, dtype=np.float32)
        theirs = torch_logits(reference, images, train=False)
        ours = model.apply(variables, images, train=False)
        assert max_error(ours, theirs) <= 1e-4 * np.abs(theirs).max()
    assert_nnx_gives(ours, name, variables, images)


def assert_nnx_gives(logits, name, variables, images):
    """The NNX form of the model, with the same variables, gives the same logits."""
    model = nnx.create_model(name, rngs=flax_nnx.Rngs(0), variables=variables)
    np.testing.assert_array_equal(model(images), logits)


@pytest.mark.parametrize("name", ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                                  "wide_resnet50_2", "wide_resnet101_2"])
def test_resnext_and_wide_resnet_weights_give_torchvisions_logits(name):
    reference = randomised_torchvision(name)
    variables = from_torchvision(reference.state_dict(), name)
    images = np.random.default_rng(0).standard_normal((2, 64, 64, 3), dtype=np.float32)
    theirs = torch_logits(reference, images, train=False)
    ours = create_model(name).apply(variables, images, train=False)
    assert max_error(ours, theirs) <= 1e-4 * np.abs(theirs).max()
    assert_nnx_gives(ours, name, variables, images)
    assert looks_like(reference.state_dict()) == name  # told apart from resnet50/101


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_stage_features_equal_torchvisions_feature_extractor(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    reference = randomised_torchvision(name)
    nodes = {"maxpool": "stem", **{f"layer{i}": f"layer{i}" for i in range(1, 5)}}
    extractor = create_feature_extractor(copy.deepcopy(reference).eval(), nodes)
    images = np.random.default_rng(2).standard_normal((2, 64, 64, 3), dtype=np.float32)
    with torch.no_grad():
        theirs = {k: v.numpy().transpose(0, 2, 3, 1)
                  for k, v in extractor(torch.from_numpy(images.transpose(0, 3, 1, 2))).items()}
    variables = from_torchvision(reference.state_dict(), name)  # the classifier's own
    ours = create_model(name, output="features").apply(variables, images, train=False)
    assert list(ours) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert [64 // ours[k].shape[1] for k in ours] == [4, 4, 8, 16, 32]  # the strides
    for key, value in ours.items():
        assert max_error(value, theirs[key]) <= 1e-4 * np.abs(theirs[key]).max(), key
    with pytest.warns(UserWarning, match="fc.weight and fc.bias are left out"):
        headless = from_torchvision(reference.state_dict(), name, num_classes=0)
    pooled = create_model(name, num_classes=0).apply(headless, images, train=False)
    np.testing.assert_allclose(pooled, np.asarray(ours["layer4"]).mean(axis=(1, 2)), rtol=1e-5)
    fc = variables["params"]["fc"]
    logits = create_model(name).apply(variables, images, train=False)
    np.testing.assert_allclose(pooled @ fc["kernel"] + fc["bias"], logits, rtol=1e-4, atol=1e-5)


def test_a_stage_or_output_the_network_lacks_is_refused_naming_its_own():
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['layer4'\] in feature_stages; "
                                         r"this network's are \['stem', 'layer1', 'layer2', "
                                         r"'layer3'\]"):
        create_model("resnet20", output="features", feature_stages=("layer4",)).init(
            jax.random.key(0), images)
    with pytest.raises(ValueError, match="unknown output 'pooled'; use 'logits' or 'features'"):
        create_model("resnet20", output="pooled").init(jax.random.key(0), images)
    model = create_model("resnet20", output="features", feature_stages=("layer3", "stem"))
    out = model.apply(model.init(jax.random.key(0), images), images)
    assert list(out) == ["layer3", "stem"] and out["stem"].shape == (1, 32, 32, 16)


@pytest.mark.parametrize("options,message", [
    ({"feature_stages": ("layer2",)}, "chooses among the stage outputs of output='features'; "
                                      "add output='features'"),
    ({"output": "features", "feature_stages": "layer2"}, "must be a non-empty sequence of stage "
                                                         "names, e.g. ('layer2',)"),
    ({"output": "features", "feature_stages": ()}, "leave it out for all of ['stem'"),
    ({"num_classes": -1}, "num_classes=-1 must be an integer >= 0 (0: no classifier)"),
    ({"num_classes": None}, "num_classes=None must be an integer >= 0"),
    ({"drop_path_rate": "0.1"}, "drop_path_rate='0.1' must be a number in [0, 1)"),
    ({"stage_widths": (16, 32)}, "stage_sizes has 3 stages but stage_widths 2"),
])
def test_options_outside_their_values_are_refused_in_one_line(options, message):
    """In linen and NNX alike, before anything is computed."""
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model("resnet20", **options).init(jax.random.key(0), images)
    with pytest.raises(ValueError, match=re.escape(message)):
        nnx.create_model("resnet20", rngs=flax_nnx.Rngs(0), **options)


@pytest.mark.parametrize("name", DEPTHS)
def test_train_mode_matches_torchvision(name):
    """Batch statistics in float32 are ill-conditioned at depth: both frameworks are
    judged against PyTorch in float64, and ours must be as close as PyTorch's own."""
    reference = randomised_torchvision(name)
    variables = from_torchvision(reference.state_dict(), name)
    images = np.random.default_rng(1).standard_normal((4, 64, 48, 3), dtype=np.float32)
    exact = torch_logits(reference, images, train=True, dtype=torch.float64)
    theirs = torch_logits(reference, images, train=True)
    ours, updates = create_model(name).apply(variables, images, train=True,
                                             mutable=["batch_stats"])
    assert max_error(ours, exact) <= max(1e-4 * np.abs(exact).max(),
                                         1.5 * max_error(theirs, exact))
    # Running means move as in PyTorch; running variances take the biased batch
    # variance here, the unbiased one there: n = 4 images x 2 x 2 positions.
    trained = copy.deepcopy(reference).double().train()
    with torch.no_grad():
        trained(torch.from_numpy(images.transpose(0, 3, 1, 2)).double())
    before, after = reference.layer4[0].bn2, trained.layer4[0].bn2
    ours = updates["batch_stats"]["layer4_0"]["bn2"]
    np.testing.assert_allclose(ours["mean"], after.running_mean.numpy(), atol=1e-4)
    n = 16
    old_var = before.running_var.numpy()
    expected_var = 0.9 * old_var + (after.running_var.numpy() - 0.9 * old_var) * (n - 1) / n
    np.testing.assert_allclose(ours["var"], expected_var, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_round_trip_reproduces_every_tensor(name):
    state_dict = randomised_torchvision(name, seed=1).state_dict()
    exported = to_torchvision(from_torchvision(state_dict, name), name)
    assert set(exported) == set(state_dict)
    for key, tensor in state_dict.items():
        np.testing.assert_array_equal(exported[key], tensor.numpy(), err_msg=key)
    getattr(torchvision.models, name)().load_state_dict(
        {k: torch.from_numpy(v) for k, v in exported.items()})


def test_jax_initialisation_loads_into_torchvision():
    model = create_model("resnet18_cifar")
    variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    state_dict = to_torchvision(variables, "resnet18_cifar")
    assert state_dict["conv1.weight"].shape == (64, 3, 3, 3)
    assert state_dict["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state_dict["fc.weight"].shape == (10, 512)


def test_bad_state_dict_names_every_problem():
    state_dict = dict(randomised_torchvision("resnet18").state_dict())
    del state_dict["layer1.0.conv1.weight"]
    state_dict["head.weight"] = torch.zeros(3)
    state_dict["fc.weight"] = torch.zeros(10, 512)
    with pytest.raises(ValueError) as error:
        from_torchvision(state_dict, "resnet18")
    message = str(error.value)
    assert "1 missing keys (layer1.0.conv1.weight)" in message
    assert "1 unexpected keys (head.weight)" in message
    assert "fc.weight: shape (1000, 512) expected, got (10, 512)" in message


def test_a_module_instead_of_its_state_dict_is_named():
    with pytest.raises(TypeError, match=r"got ResNet \(a module: pass model.state_dict\(\)\)"):
        from_torchvision(torchvision.models.resnet18(), "resnet18")


def test_a_data_parallel_state_dict_gets_a_hint():
    state_dict = {f"module.{k}": v for k, v in
                  randomised_torchvision("resnet18").state_dict().items()}
    with pytest.raises(ValueError, match="carry DataParallel's 'module.' prefix: pass "
                       r"\{k.removeprefix\('module.'\): v"):
        from_torchvision(state_dict, "resnet18")


def test_a_state_dict_of_another_depth_names_the_depth_it_fits():
    state_dict = torchvision.models.resnet50().state_dict()
    with pytest.raises(ValueError) as error:
        from_torchvision(state_dict, "resnet101")
    message = str(error.value)
    assert message.endswith("It looks like a resnet50 state_dict: pass name='resnet50'")
    assert len(message) < 600, "one short line, not hundreds of keys"


def test_variables_of_another_model_are_refused():
    variables = create_model("resnet20").init(jax.random.key(0), np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"variables do not fit resnet32: 60 arrays differ, e\.g\. "
                       r"batch_stats/layer1_3/bn1/mean: absent in the variables, \(16,\) in the "
                       r"model\. They look like a resnet20's: pass name='resnet20'\."):
        to_torchvision(variables, "resnet32")


def test_importing_the_bridge_does_not_import_torch():
    code = "import sys, resnet_jax.models.torch_compat; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
