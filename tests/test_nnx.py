"""The NNX front end: every model as an NNX module that trains as the linen one does and
takes torchvision's weights."""

import jax
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from benchmarks.torch_parity import randomised_torchvision
from resnet_jax import create_model as create_linen_model
from resnet_jax.nnx import create_model, linen_variables
from resnet_jax.torch_compat import from_torchvision, to_torchvision


def loss_of(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def nnx_training(model, tx, batches):
    """The README's NNX training step, run over ``batches``."""
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, images, labels):
        loss, grads = nnx.value_and_grad(lambda m: loss_of(m(images, train=True), labels))(model)
        optimizer.update(model, grads)
        return loss

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
    model(batches[0][0], train=False)  # inference leaves the running statistics alone
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


def test_torchvision_weights_load_into_the_nnx_form(name="resnet18"):
    reference = randomised_torchvision(name)
    model = create_model(name, rngs=nnx.Rngs(0),
                         variables=from_torchvision(reference.state_dict(), name))
    images = np.random.default_rng(0).standard_normal((2, 64, 48, 3), dtype=np.float32)
    with torch.no_grad():
        theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    ours = np.asarray(model(images, train=False))
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    back = to_torchvision(linen_variables(model), name)
    for key, tensor in reference.state_dict().items():
        if key in back:
            np.testing.assert_array_equal(back[key], tensor.numpy(), err_msg=key)


def test_variables_of_another_model_are_named():
    resnet18 = linen_variables(create_model("resnet18", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="lack params/layer1_2"):
        create_model("resnet34", rngs=nnx.Rngs(0), variables=resnet18)
    with pytest.raises(ValueError, match=r"params/fc/bias has shape \(1000,\).*num_classes"):
        create_model("resnet18", rngs=nnx.Rngs(0), num_classes=10, variables=resnet18)
    with pytest.raises(ValueError, match=r"must be \{'params': .*got \['bn1', 'conv1'"):
        create_model("resnet18", rngs=nnx.Rngs(0), variables=resnet18["params"])
