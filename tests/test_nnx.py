"""The native NNX modules: torchvision's layout, linen's variables and numbers, NNX's modes
and optimizer."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from resnet_jax import create_model as create_linen_model
from resnet_jax.models.nnx import create_model, linen_variables, load_variables
from resnet_jax.models.torch_compat import from_torchvision, to_torchvision
from torch_side.parity import randomised_torchvision

# The CIFAR layouts, each shortcut and block kind once, and the deepest bar resnet1202 (the
# other depths stack the same blocks); the ImageNet models are compared beside torchvision
# in test_torch_compat.
CIFAR_LAYOUTS = ["resnet20", "resnet110", "resnet18_cifar", "resnet50_cifar"]


def loss_of(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def nnx_training(model, tx, batches):
    """The NNX training step of docs/models.md, run over ``batches``."""
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, images, labels):
        loss, grads = nnx.value_and_grad(lambda m: loss_of(m(images), labels))(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    return [float(train_step(model, optimizer, *batch)) for batch in batches]


def linen_training(model, variables, tx, batches):
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, stats, opt_state, images, labels):
        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": stats}, images,
                                          train=True, mutable=["batch_stats"])
            return loss_of(logits, labels), updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    losses = []
    for images, labels in batches:
        params, stats, opt_state, loss = train_step(params, stats, opt_state, images, labels)
        losses.append(float(loss))
    return {"params": params, "batch_stats": stats}, losses


def test_nnx_training_steps_equal_the_linen_ones_from_the_same_start():
    small = {"num_classes": 4, "stage_sizes": (1, 1, 1)}
    model = create_model("resnet20", rngs=nnx.Rngs(0), **small)
    start = linen_variables(model)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 8, 8, 3), dtype=np.float32),
                rng.integers(0, 4, 8))] * 4
    tx = optax.sgd(0.1, momentum=0.9)
    assert not model.training
    model(batches[0][0])  # eval mode, as made: the running statistics stay
    jax.tree.map(np.testing.assert_array_equal, linen_variables(model), start)

    nnx_losses = nnx_training(model, tx, batches)
    linen_result, linen_losses = linen_training(
        create_linen_model("resnet20", **small), start, tx, batches)

    np.testing.assert_allclose(nnx_losses, linen_losses, rtol=1e-5)
    assert nnx_losses[-1] < nnx_losses[0]
    trained = linen_variables(model)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 trained, linen_result)
    assert not np.allclose(trained["batch_stats"]["bn1"]["mean"],
                           start["batch_stats"]["bn1"]["mean"])  # running statistics moved


def test_the_cifar_layouts_give_the_linen_numbers_in_both_modes():
    images = np.random.default_rng(0).standard_normal((2, 16, 16, 3), dtype=np.float32)
    for name in CIFAR_LAYOUTS:
        model = create_model(name, rngs=nnx.Rngs(0))
        variables, linen = linen_variables(model), create_linen_model(name)
        np.testing.assert_array_equal(model(images), linen.apply(variables, images),
                                      err_msg=name)
        model.train()
        logits, updates = linen.apply(variables, images, train=True, mutable=["batch_stats"])
        np.testing.assert_array_equal(model(images), logits, err_msg=name)
        jax.tree.map(np.testing.assert_array_equal, linen_variables(model)["batch_stats"],
                     updates["batch_stats"])


def test_torchvision_weights_load_into_the_nnx_form_and_go_back(name="resnet18"):
    reference = randomised_torchvision(name)
    model = create_model(name, rngs=nnx.Rngs(0),
                         variables=from_torchvision(reference.state_dict(), name))
    assert model.layer2[0].conv1.kernel.shape == (3, 3, 64, 128)
    assert model.layer2[0].downsample_conv.kernel.shape == (1, 1, 64, 128)
    assert model.fc.kernel.shape == (512, 1000)
    images = np.random.default_rng(0).standard_normal((2, 64, 48, 3), dtype=np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    ours = np.asarray(model(images))
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    back = to_torchvision(linen_variables(model), name)
    for key, tensor in reference.state_dict().items():
        if key in back:
            np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def test_the_readme_fine_tuning_and_features_example():
    classifier = create_linen_model("resnet18")
    images = np.random.default_rng(1).standard_normal((4, 32, 32, 3), dtype=np.float32)
    variables = classifier.init(jax.random.key(0), images)
    model = create_model("resnet18", rngs=nnx.Rngs(0), variables=variables)

    stage3 = model.layer3(model.layer2(model.layer1(model.stem(images))))
    linen_features = create_linen_model("resnet18", output="features").apply(variables, images)
    np.testing.assert_array_equal(stage3, linen_features["layer3"])
    jax.tree.map(np.testing.assert_array_equal, model.features(images), linen_features)

    model.fc = nnx.Linear(512, 5, rngs=nnx.Rngs(1))
    labels = np.arange(4) % 5
    losses = nnx_training(model, optax.adam(1e-3), [(images, labels)] * 5)
    assert losses[-1] < losses[0]
    assert linen_variables(model)["params"]["fc"]["kernel"].shape == (512, 5)
    assert not np.allclose(model.layer1[0].conv1.kernel[...],
                           variables["params"]["layer1_0"]["conv1"]["kernel"])  # all of it trains


def test_headless_and_feature_models_take_the_classifiers_variables_and_say_so():
    variables = linen_variables(create_model("resnet20", rngs=nnx.Rngs(0)))
    images = np.random.default_rng(2).standard_normal((2, 16, 16, 3), dtype=np.float32)
    with pytest.warns(UserWarning, match="no classifier .* fc is left out"):
        headless = create_model("resnet20", rngs=nnx.Rngs(0), num_classes=0,
                                variables=variables)
    with pytest.warns(UserWarning, match="fc is left out"):
        backbone = create_model("resnet20", rngs=nnx.Rngs(0), output="features",
                                feature_stages=("layer2", "layer3"), variables=variables)
    features = backbone(images)
    assert list(features) == ["layer2", "layer3"] and headless.fc is None
    np.testing.assert_allclose(headless(images), features["layer3"].mean(axis=(1, 2)), rtol=1e-6)


def test_stochastic_depth_follows_the_mode_and_linens_rates():
    model = create_model("resnet20", rngs=nnx.Rngs(0), drop_path_rate=0.5)
    rates = [0.0 if block.drop_path is None else block.drop_path.rate
             for stage in (model.layer1, model.layer2, model.layer3) for block in stage]
    np.testing.assert_allclose(rates, create_linen_model("resnet20",
                                                         drop_path_rate=0.5).drop_path_rates)
    images = np.random.default_rng(3).standard_normal((4, 16, 16, 3), dtype=np.float32)
    np.testing.assert_array_equal(model(images), model(images))  # eval: deterministic
    model.train()
    assert not np.allclose(model(images), model(images))  # a fresh draw per call


def test_wrong_variables_and_options_are_named():
    resnet18 = linen_variables(create_model("resnet18", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="lack params/layer1_2"):
        create_model("resnet34", rngs=nnx.Rngs(0), variables=resnet18)
    with pytest.raises(ValueError, match=r"params/fc/bias has shape \(1000,\).*num_classes"):
        create_model("resnet18", rngs=nnx.Rngs(0), num_classes=10, variables=resnet18)
    with pytest.raises(ValueError, match=r"must be \{'params': .*got \['bn1', 'conv1'"):
        load_variables(create_model("resnet18", rngs=nnx.Rngs(0)), resnet18["params"])
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['layer5'\].*'layer4'\]"):
        create_model("resnet18", rngs=nnx.Rngs(0), output="features", feature_stages=["layer5"])
    with pytest.raises(ValueError, match="unknown ResNet option"):
        create_model("resnet18", rngs=nnx.Rngs(0), pretrained=True)


# Flax's NNX tutorial (docs_nnx/mnist_tutorial), its step functions in its own shape with
# only the model class swapped: written here, not copied.
def tutorial_loss_fn(model, batch, rngs=None):
    logits = model(batch["image"], rngs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits=logits,
                                                           labels=batch["label"]).mean()
    return loss, logits


@nnx.jit
def tutorial_train_step(model, optimizer, metrics, rngs, batch):
    grad_fn = nnx.value_and_grad(tutorial_loss_fn, has_aux=True)
    (loss, logits), grads = grad_fn(model, batch, rngs)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])
    optimizer.update(model, grads)


@nnx.jit
def tutorial_eval_step(model, metrics, batch):
    loss, logits = tutorial_loss_fn(model, batch)
    metrics.update(loss=loss, logits=logits, labels=batch["label"])


def quadrant_images(count, seed):
    """Four classes of 16x16 noise, each with a brighter quadrant of its own."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    images = rng.normal(0, 1, (count, 16, 16, 3)).astype(np.float32)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] += 1.0
    return [{"image": images[i:i + 32], "label": labels[i:i + 32]}
            for i in range(0, count, 32)]


def test_flaxs_nnx_tutorial_steps_train_our_models_as_written():
    model = create_model("resnet20", num_classes=4, drop_rate=0.1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(0.005, 0.9), wrt=nnx.Param)
    metrics = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(),
                              loss=nnx.metrics.Average("loss"))
    train_model = nnx.view(model, deterministic=False, use_running_average=False)
    eval_model = nnx.view(model, deterministic=True, use_running_average=True)
    rngs = nnx.Rngs(0)

    def test_metrics():
        metrics.reset()
        for batch in quadrant_images(256, seed=1):
            tutorial_eval_step(eval_model, metrics, batch)
        return {k: float(v) for k, v in metrics.compute().items()}

    before = test_metrics()
    losses = []
    for batch in quadrant_images(640, seed=0):
        metrics.reset()
        tutorial_train_step(train_model, optimizer, metrics, rngs, batch)
        losses.append(float(metrics.compute()["loss"]))
    after = test_metrics()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert after["accuracy"] > 0.6 > 0.25 + 0.1 and after["loss"] < before["loss"]
    assert not model.training, "the views train; the model itself stays as it was made"
    for rngs, message in ((jnp.ones(3), "rngs must be an nnx.Rngs (or None)"),
                          (nnx.Rngs(params=0), "which these lack: pass nnx.Rngs(0)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            train_model(quadrant_images(32, seed=2)[0]["image"], rngs)


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d",
                                  "resnet50_cifar"])
def test_every_model_takes_the_tutorials_call_and_views(name):
    model = create_model(name, num_classes=4, rngs=nnx.Rngs(0))
    batch = {"image": jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32),
             "label": jax.ShapeDtypeStruct((2,), np.int32)}
    for view in (nnx.view(model, deterministic=False, use_running_average=False),
                 nnx.view(model, deterministic=True, use_running_average=True)):
        loss, logits = nnx.eval_shape(tutorial_loss_fn, view, batch, nnx.Rngs(1))
        assert logits.shape == (2, 4) and loss.shape == ()
