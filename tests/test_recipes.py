"""Configs, optimizers and schedules say what the paper and PyTorch say."""

import importlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import list_models
from resnet_jax.config_schema import KEYS, ConfigError, changed_fixed_keys, validate
from resnet_jax.parallel import PARALLEL
from resnet_jax.training import (
    OPTIMIZERS,
    SCHEDULES,
    cross_entropy,
    learning_rate_schedule,
    make_optimizer,
)

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.stem != "__init__")


def load(name):
    return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_uses_exactly_the_classified_keys_and_valid_values(name):
    config = load(name)
    assert set(config) == set(KEYS), "a key is missing from the table in config_schema.py"
    validate(config, num_devices=8)
    assert float(learning_rate_schedule(config)(0)) >= 0.0


def test_a_new_key_must_be_classified_before_a_run_accepts_it():
    config = load("smoke")
    config.unlock()
    config.new_key = 1
    with pytest.raises(ConfigError, match="unknown config key 'new_key'"):
        validate(config, num_devices=1)


def test_choices_come_from_the_registries_the_code_uses():
    config = load("smoke")
    for key, registry in (("model", list_models()), ("optimizer", OPTIMIZERS),
                          ("schedule", SCHEDULES), ("parallel", PARALLEL)):
        for choice in registry:
            config[key] = choice
            assert KEYS[key].check(choice) is None, (key, choice)
        config[key] = "nonsense"
        with pytest.raises(ConfigError, match=f"{key}='nonsense' must be one of: "):
            validate(config, num_devices=1)
        config[key] = load("smoke")[key]


def test_which_keys_a_resume_may_change():
    saved = load("smoke").to_dict()
    config = load("smoke")
    config.update(num_train_steps=100, log_grad_norms=True, eval_every_steps=7,
                  keep_checkpoints=9, parallel="shard_map", eval_batch_size=8)
    assert changed_fixed_keys(saved, config) == []
    config.update(learning_rate=0.2, decay_norm_and_bias=False, seed=3)
    assert changed_fixed_keys(saved, config) == [
        "decay_norm_and_bias: True -> False", "learning_rate: 0.05 -> 0.2", "seed: 0 -> 3"]


def test_a_schedule_that_reads_num_train_steps_fixes_it():
    saved = {**load("smoke").to_dict(), "schedule": "cosine"}
    config = load("smoke")
    config.update(schedule="cosine", num_train_steps=80, lr_boundaries=(20, 30))
    # The boundaries have no effect under cosine, in either run: they do not block a resume.
    assert changed_fixed_keys(saved, config) == [
        "num_train_steps: 40 -> 80 (fixed by schedule=cosine)"]


def test_resnet20_follows_the_paper():
    config = load("cifar10_resnet20")
    assert (config.model, config.batch_size, config.num_train_steps) == ("resnet20", 128, 64_000)
    assert (config.optimizer, config.momentum, config.weight_decay) == ("sgd", 0.9, 1e-4)
    schedule = learning_rate_schedule(config)
    rates = [float(schedule(s)) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert config.augment


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_plain_configs_are_the_resnet_recipe_without_shortcuts(depth):
    plain = load(f"cifar10_plain{depth}").to_dict()
    residual = load(f"cifar10_resnet{depth}").to_dict()
    assert (plain.pop("residual"), residual.pop("residual")) == (False, True)
    assert plain == residual


def test_resnet110_warms_up_at_a_tenth_for_400_iterations():
    schedule = learning_rate_schedule(load("cifar10_resnet110"))
    rates = [float(schedule(s)) for s in (0, 399, 400, 32_000, 48_000)]
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.1, 0.01, 0.001], rtol=1e-6)


def test_resnet18_recipe_is_cosine_over_200_epochs():
    config = load("cifar10_resnet18")
    assert config.model == "resnet18_cifar" and config.weight_decay == 5e-4
    assert config.num_train_steps == 200 * (50_000 // 128)
    schedule = learning_rate_schedule(config)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(config.num_train_steps // 2)) == pytest.approx(0.05, rel=1e-3)
    assert float(schedule(config.num_train_steps)) == pytest.approx(0.0, abs=1e-7)
    assert load("cifar100_resnet18").num_classes == 100


def test_warmup_and_one_cycle_schedules():
    config = load("smoke")
    config.update(schedule="cosine", warmup_steps=10, num_train_steps=100, learning_rate=0.4)
    schedule = learning_rate_schedule(config)
    assert float(schedule(5)) == pytest.approx(0.2) and float(schedule(10)) == pytest.approx(0.4)
    config.schedule = "onecycle"
    schedule = learning_rate_schedule(config)
    peak = max(float(schedule(s)) for s in range(100))
    assert peak == pytest.approx(0.4, rel=0.01) and float(schedule(0)) < 0.1 * peak


def pytorch_sgd(params, grads, lr, momentum, weight_decay, steps, nesterov=False):
    """torch.optim.SGD's update rule, written out (dampening 0)."""
    buffer = None
    for _ in range(steps):
        d = grads + weight_decay * params
        buffer = d if buffer is None else momentum * buffer + d
        d = d + momentum * buffer if nesterov else buffer
        params = params - lr * d
    return params


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_applies_weight_decay_as_pytorch_does(nesterov):
    config = load("smoke")
    config.update(learning_rate=0.1, lr_boundaries=(), lr_scales=(), weight_decay=1e-2,
                  nesterov=nesterov)
    tx = make_optimizer(config, learning_rate_schedule(config))
    params = {"kernel": jnp.arange(6.0).reshape(2, 3)}
    grads = {"kernel": jnp.full((2, 3), 0.5)}
    state = tx.init(params)
    ours = params
    for _ in range(3):
        updates, state = tx.update(grads, state, ours)
        ours = optax.apply_updates(ours, updates)
    expected = pytorch_sgd(np.arange(6.0).reshape(2, 3), 0.5, 0.1, 0.9, 1e-2, 3, nesterov)
    np.testing.assert_allclose(ours["kernel"], expected, rtol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_excluding_norm_and_bias_from_weight_decay(optimizer):
    config = load("smoke")
    config.update(optimizer=optimizer, weight_decay=0.5, decay_norm_and_bias=False)
    tx = make_optimizer(config, learning_rate_schedule(config))
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 2))}, "bn": {"scale": jnp.ones(2)},
              "fc": {"bias": jnp.ones(2)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["conv"]["kernel"]).max()) > 0
    assert float(jnp.abs(updates["bn"]["scale"]).max()) == 0
    assert float(jnp.abs(updates["fc"]["bias"]).max()) == 0


def test_label_smoothing_matches_its_definition():
    logits = jnp.array([[2.0, 0.5, -1.0]])
    smoothed = cross_entropy(logits, jnp.array([0]), 0.1)
    log_p = jax.nn.log_softmax(logits)[0]
    expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
    assert float(smoothed[0]) == pytest.approx(float(expected), rel=1e-6)
