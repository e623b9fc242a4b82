"""The ResNet family: the paper's shapes, torchvision's sizes, and the options users rely on."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from resnet_jax import create_model, list_models
from resnet_jax.models import BasicBlock, Bottleneck

REFERENCE_PARAMS = {
    # torchvision
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    # akamaster/pytorch_resnet_cifar10, option A
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962, "resnet1202": 19_421_274,
    # kuangliu/pytorch-cifar
    "resnet18_cifar": 11_173_962,
}


VARIANTS = ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2",
            "wide_resnet101_2"]


@pytest.mark.parametrize("name", VARIANTS)
def test_resnext_and_wide_resnet_have_torchvisions_parameter_count(name):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # shapes only
        theirs = sum(p.numel() for p in getattr(torchvision.models, name)().parameters())
    assert count(abstract_variables(create_model(name), 64)["params"]) == theirs
    from resnet_jax.models.layer_table import summarize

    published = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta["_ops"]  # GMACs
    assert summarize(create_model(name), (224, 224, 3)).total_macs / 1e9 == pytest.approx(
        published, abs=5e-4)


def abstract_variables(model, size):
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def init(model, size=32, batch=2, seed=0):
    x = jax.random.normal(jax.random.key(seed + 1), (batch, size, size, 3))
    return model.init(jax.random.key(seed), x), x


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_references(name):
    model = create_model(name)
    size = 64 if model.stem == "imagenet" else 32
    assert count(abstract_variables(model, size)["params"]) == REFERENCE_PARAMS[name]


def test_every_listed_name_builds():
    names = list_models()
    assert len(names) == 21
    for name in names:
        model = create_model(name)
        expected = 1000 if model.stem == "imagenet" else 10
        assert model.num_classes == expected, name


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18, resnet34"):
        create_model("resnet19")
    with pytest.raises(ValueError, match="unknown ResNet option"):
        create_model("resnet20", num_clases=100)


def test_forward_and_batch_stats_update():
    model = create_model("resnet20", num_classes=7)
    variables, x = init(model)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (2, 7)
    before = variables["batch_stats"]["bn1"]["mean"]
    after = updates["batch_stats"]["bn1"]["mean"]
    assert not np.allclose(before, after)


def test_option_a_shortcut_has_no_parameters_and_projection_does():
    option_a = traverse_util.flatten_dict(abstract_variables(create_model("resnet20"), 32))
    assert not any("downsample_conv" in path for path in option_a)
    projection = abstract_variables(create_model("resnet18_cifar"), 32)["params"]
    assert projection["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 128)
    assert "downsample_conv" not in projection["layer1_0"]


def test_option_a_pads_channels_with_zeros():
    block = BasicBlock(32, strides=2, shortcut="option_a")
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    variables = block.init(jax.random.key(1), x)
    zero_convs = jax.tree.map(jnp.zeros_like, variables)
    # With zeroed convolutions and BN bias 0, the block returns relu(shortcut(x)).
    out = block.apply(zero_convs, x)
    expected = jnp.pad(jax.nn.relu(x[:, ::2, ::2, :]), ((0, 0), (0, 0), (0, 0), (8, 8)))
    np.testing.assert_allclose(out, expected)


def test_plain_network_has_the_same_layers_without_shortcuts():
    plain = abstract_variables(create_model("resnet56", residual=False), 32)
    residual = abstract_variables(create_model("resnet56"), 32)
    assert jax.tree.structure(plain) == jax.tree.structure(residual)
    plain18 = traverse_util.flatten_dict(
        abstract_variables(create_model("resnet18_cifar", residual=False), 32)["params"])
    assert not any("downsample_conv" in path for path in plain18)
    # The residual connection changes the function: same weights, different outputs.
    variables, x = init(create_model("resnet20"))
    with_skip = create_model("resnet20").apply(variables, x)
    without = create_model("resnet20", residual=False).apply(variables, x)
    assert not np.allclose(with_skip, without)


def test_initialisation_follows_torchvision():
    variables, _ = init(create_model("resnet18_cifar"), size=8, batch=1)
    kernel = variables["params"]["layer3_0"]["conv2"]["kernel"]  # 3x3, 256 -> 256
    fan_out = 3 * 3 * 256
    assert abs(float(jnp.std(kernel)) - (2 / fan_out) ** 0.5) < 0.02 * (2 / fan_out) ** 0.5
    assert abs(float(jnp.mean(kernel))) < 1e-3
    bn = variables["params"]["layer3_0"]["bn2"]
    np.testing.assert_array_equal(bn["scale"], 1.0)
    np.testing.assert_array_equal(bn["bias"], 0.0)
    fc = variables["params"]["fc"]
    bound = 512 ** -0.5
    assert float(jnp.abs(fc["kernel"]).max()) <= bound and float(jnp.abs(fc["bias"]).max()) <= bound


@pytest.mark.parametrize("name,last_bn", [("resnet18_cifar", "bn2"), ("resnet50_cifar", "bn3")])
def test_zero_init_residual_zeroes_the_last_bn_of_each_block(name, last_bn):
    variables, _ = init(create_model(name, zero_init_residual=True), size=8, batch=1)
    for module, layers in variables["params"].items():
        if module.startswith("layer"):
            np.testing.assert_array_equal(layers[last_bn]["scale"], 0.0)
            np.testing.assert_array_equal(layers["bn1"]["scale"], 1.0)


def test_bottleneck_expands_four_times_with_stride_on_the_3x3():
    block = Bottleneck(64, strides=2)
    x = jnp.ones((1, 16, 16, 256))
    variables = block.init(jax.random.key(0), x)
    params = variables["params"]
    assert params["conv1"]["kernel"].shape == (1, 1, 256, 64)
    assert params["conv2"]["kernel"].shape == (3, 3, 64, 64)
    assert params["conv3"]["kernel"].shape == (1, 1, 64, 256)
    assert block.apply(variables, x).shape == (1, 8, 8, 256)


def test_bfloat16_computes_in_bf16_and_keeps_float32_parameters():
    model = create_model("resnet20", dtype=jnp.bfloat16)
    variables, x = init(model)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits = model.apply(variables, x)
    assert logits.dtype == jnp.float32
    reference = create_model("resnet20").apply(variables, x)
    np.testing.assert_allclose(logits, reference, atol=0.1 * float(jnp.abs(reference).max()))
    hlo = jax.jit(model.apply).lower(variables, x).as_text()
    assert "bf16" in hlo and "convolution" in hlo


def test_synced_batch_norm_across_devices_equals_one_big_batch():
    devices = jax.local_devices()
    assert len(devices) == 8, "tests run with eight fake CPU devices (tests/conftest.py)"
    model = create_model("resnet20", bn_axis_name="batch")
    variables, _ = init(model)
    x = jax.random.normal(jax.random.key(3), (16, 8, 8, 3))

    def step(x):
        return model.apply(variables, x, train=True, mutable=["batch_stats"])[1]

    synced = jax.pmap(step, axis_name="batch")(x.reshape(8, 2, 8, 8, 3))
    whole = create_model("resnet20").apply(variables, x, train=True, mutable=["batch_stats"])[1]
    for device_stats in range(8):
        stats = jax.tree.map(lambda leaf, i=device_stats: leaf[i], synced)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                     stats, whole)


def test_wrong_input_shape_is_a_clear_error():
    model = create_model("resnet20")
    variables, _ = init(model)
    with pytest.raises(ValueError, match=r"expects images shaped \(batch, height, width, 3\)"):
        model.apply(variables, jnp.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.zeros((32, 32, 3)))


def test_stochastic_depth_drops_residual_branches_per_example_at_timms_rates():
    model = create_model("resnet20", drop_path_rate=0.4)
    assert model.drop_path_rates == pytest.approx([0.4 * i / 8 for i in range(9)])
    variables, x = init(model, size=16, batch=8)
    eval_logits = model.apply(variables, x, train=False)
    plain = create_model("resnet20")
    np.testing.assert_array_equal(eval_logits, plain.apply(variables, x, train=False))

    def train_logits(seed):
        logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.key(seed)})
        return np.asarray(logits)

    np.testing.assert_array_equal(train_logits(1), train_logits(1))
    assert not np.array_equal(train_logits(1), train_logits(2))
    nothing_dropped, _ = create_model("resnet20", drop_path_rate=0.0).apply(
        variables, x, train=True, mutable=["batch_stats"])  # no dropout rng needed at 0
    assert nothing_dropped.shape == (8, 10)
    with pytest.raises(ValueError, match=r"drop_path_rate=1.0 must be a number in \[0, 1\)"):
        create_model("resnet20", drop_path_rate=1.0).init(jax.random.key(0), x)



def test_head_dropout_drops_pooled_features_in_training_only():
    model = create_model("resnet20", drop_rate=0.5)
    variables, x = init(model, size=16, batch=8)
    np.testing.assert_array_equal(model.apply(variables, x, train=False),
                                  create_model("resnet20").apply(variables, x, train=False))

    def train_logits(seed):
        logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.key(seed)})
        return np.asarray(logits)

    assert not np.array_equal(train_logits(1), train_logits(2))
    with pytest.raises(ValueError, match="drop_rate=0.5 drops pooled features at random in "
                                         "training: pass rngs={'dropout': key} to apply"):
        model.apply(variables, x, train=True, mutable=["batch_stats"])
    with pytest.raises(ValueError, match=r"drop_rate=1 must be a number in \[0, 1\)"):
        create_model("resnet20", drop_rate=1).init(jax.random.key(0), x)


def linen_gradients(remat, x, labels):
    model = create_model("resnet20", remat=remat)
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                      mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
    return jax.grad(loss, has_aux=True)(variables["params"])


def nnx_gradients(remat, x, labels):
    from flax import nnx

    from resnet_jax.models.nnx import create_model as create_nnx_model

    model = create_nnx_model("resnet20", remat=remat, rngs=nnx.Rngs(0))
    model.train()

    def loss(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()
    grads = nnx.grad(loss)(model)
    return nnx.to_pure_dict(grads), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def test_remat_recomputes_each_block_to_the_same_gradients_linen_and_nnx():
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    labels = jnp.arange(4)
    for gradients in (linen_gradients, nnx_gradients):
        plain, recomputed = gradients(False, x, labels), gradients(True, x, labels)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                     plain, recomputed)


def test_remat_keeps_a_fifth_of_the_activations_as_the_readme_says():
    """JAX's saved residuals of a train step at 224x224, less the parameters: what the
    benchmarks guide reports, and at most 40% of the plain step's."""
    from benchmarks.remat import saved_activations

    readme = (Path(__file__).parents[1] / "docs" / "benchmarks.md").read_text()
    for name in ("resnet50", "resnet152"):
        plain, remat = saved_activations(name, False), saved_activations(name, True)
        assert remat <= 0.4 * plain
        row = (f"| `{name}` | {plain / 2**20:.1f} MiB | {remat / 2**20:.1f} MiB | "
               f"{remat / plain:.1%} |")
        assert row in readme, row


@pytest.mark.parametrize("options,message", [
    ({"remat": "no"}, "remat='no' must be True or False"),
    ({"drop_rate": 0.5, "num_classes": 0}, "drop_rate=0.5 without a classifier"),
    ({"drop_rate": 0.5, "output": "features"}, "there is no head to drop features before"),
])
def test_remat_and_drop_rate_are_checked_when_the_model_is_made(options, message):
    from flax import nnx

    from resnet_jax.models.nnx import create_model as create_nnx_model

    with pytest.raises(ValueError, match=re.escape(message)):
        create_model("resnet20", **options).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=re.escape(message)):
        create_nnx_model("resnet20", rngs=nnx.Rngs(0), **options)
