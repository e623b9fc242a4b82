"""Configs, optimizers and schedules say what the paper and PyTorch say."""

import importlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resnet_jax import create_model, list_models
from resnet_jax.parallel import PARALLEL
from resnet_jax.runs.workdir import read_config
from resnet_jax.train.config_schema import (
    KEYS,
    ConfigError,
    always,
    changed_fixed_keys,
    ignored,
    validate,
)
from resnet_jax.train.report import mfu_summary
from resnet_jax.train.training import (
    OPTIMIZERS,
    SCHEDULES,
    cross_entropy,
    learning_rate_schedule,
    make_optimizer,
)
from resnet_jax.train.utilisation import Meter, peak_tflops

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.stem not in ("__init__", "recorded"))


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
    config.update(learning_rate=0.2, decay_norm=False, seed=3)
    assert changed_fixed_keys(saved, config) == [
        "decay_norm: True -> False", "learning_rate: 0.05 -> 0.2", "seed: 0 -> 3"]


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


def test_torchvisions_warmup_then_cosine_is_the_cosine_schedule_with_a_start_factor():
    """torchvision's references step LinearLR(start_factor) and CosineAnnealingLR once per
    epoch; ours steps per step: with one step an epoch the two are the same sequence."""
    import torch

    weights = [torch.zeros(1, requires_grad=True)]
    optimizer = torch.optim.SGD(weights, lr=0.5)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=5),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40 - 5)], milestones=[5])
    theirs = []
    for _ in range(40):
        theirs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    config = load("smoke")
    config.update(schedule="cosine", learning_rate=0.5, warmup_steps=5,
                  warmup_start_factor=0.01, num_train_steps=40)
    ours = jax.vmap(learning_rate_schedule(config))(jnp.arange(40))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_the_linear_schedule_is_ffcvs_cyclic_one():
    """FFCV (ffcv-imagenet, lr_schedule_type=cyclic): the rate at epoch e interpolates
    (0, 1e-4 lr), (peak, lr), (epochs, 0); each step of an epoch interpolates between its
    epoch's two ends."""
    lr, peak, epochs, steps_per_epoch = 1.7, 2, 8, 3

    def ffcv_rate(epoch):
        return np.interp([epoch], [0, peak, epochs], [1e-4 * lr, lr, 0])[0]

    theirs = np.concatenate([np.interp(np.arange(steps_per_epoch), [0, steps_per_epoch],
                                       [ffcv_rate(e), ffcv_rate(e + 1)]) for e in range(epochs)])
    config = load("smoke")
    config.update(schedule="linear", learning_rate=lr, warmup_steps=peak * steps_per_epoch,
                  warmup_start_factor=1e-4, num_train_steps=epochs * steps_per_epoch)
    ours = jax.vmap(learning_rate_schedule(config))(jnp.arange(epochs * steps_per_epoch))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    config.warmup_steps = 0
    assert float(learning_rate_schedule(config)(0)) == pytest.approx(lr)


def test_a_start_factor_lifts_the_piecewise_warmup():
    config = load("smoke")
    config.update(learning_rate=0.4, warmup_steps=10, warmup_start_factor=0.25)
    schedule = learning_rate_schedule(config)
    assert [float(schedule(s)) for s in (0, 5, 10)] == pytest.approx([0.1, 0.25, 0.4])


def test_the_moving_average_follows_torchvisions_model_ema_step_by_step():
    """torchvision's references: ExponentialMovingAverage (torch's AveragedModel with
    use_buffers=True) updated at the batches i % model_ema_steps == 0 of each epoch, its
    count reset during the warm-up epochs. Here an epoch is 4 steps, the warm-up one."""
    import torch
    from torch.optim.swa_utils import AveragedModel

    from resnet_jax.train import ema

    decay, every, steps_per_epoch, epochs = 0.8, 2, 4, 3
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    theirs = AveragedModel(model, avg_fn=lambda avg, new, _: decay * avg + (1 - decay) * new,
                           use_buffers=True)

    def jax_view(module):
        linear, norm = module[0], module[1]
        return ({"w": linear.weight.detach().numpy().copy(),
                 "b": linear.bias.detach().numpy().copy()},
                {"mean": norm.running_mean.numpy().copy(), "var": norm.running_var.numpy().copy()})

    ours = ema.start(*jax_view(model))
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        for i in range(steps_per_epoch):
            with torch.no_grad():  # the optimizer step's result, whatever it was
                for tensor in [*model.parameters(), model[1].running_mean, model[1].running_var]:
                    tensor.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, tensor.shape)))
            if i % every == 0:
                theirs.update_parameters(model)
                if epoch < 1:
                    theirs.n_averaged.fill_(0)
            ours = ema.update(ours, *jax_view(model), jnp.asarray(epoch * steps_per_epoch + i),
                              decay=decay, every_steps=every, warmup_steps=steps_per_epoch)
            expected = jax_view(theirs.module)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                         (ours["params"], ours["batch_stats"]), expected)
    assert ema.torchvision_decay(0.99998, 8 * 128, 32, 600) == pytest.approx(
        1 - 2e-5 * 1024 * 32 / 600)


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
@pytest.mark.parametrize("decay_norm", [False, True])
@pytest.mark.parametrize("decay_bias", [False, True])
def test_weight_decay_reaches_norms_and_biases_each_as_chosen(optimizer, decay_norm, decay_bias):
    config = load("smoke")
    config.update(optimizer=optimizer, weight_decay=0.5, decay_norm=decay_norm,
                  decay_bias=decay_bias)
    tx = make_optimizer(config, learning_rate_schedule(config))
    params = {"conv": {"kernel": jnp.ones((3, 3, 2, 2))},
              "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
              "fc": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    decayed = jax.tree.map(lambda u: bool(jnp.abs(u).max() > 0), updates)
    assert decayed == {"conv": {"kernel": True}, "bn": {"scale": decay_norm, "bias": decay_norm},
                       "fc": {"kernel": True, "bias": decay_bias}}


def test_the_old_joint_decay_key_is_named_and_old_runs_read_as_split(tmp_path):
    config = load("smoke")
    with config.unlocked():
        config.decay_norm_and_bias = False
    with pytest.raises(ConfigError, match="config key decay_norm_and_bias is now decay_norm and "
                                          "decay_bias, each its own choice"):
        validate(config, num_devices=1)
    saved = {**load("smoke").to_dict(), "decay_norm_and_bias": False}
    del saved["decay_norm"], saved["decay_bias"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    read = read_config(tmp_path)
    assert (read["decay_norm"], read["decay_bias"]) == (False, False)
    assert "decay_norm_and_bias" not in read


def test_label_smoothing_matches_its_definition():
    logits = jnp.array([[2.0, 0.5, -1.0]])
    smoothed = cross_entropy(logits, jnp.array([0]), 0.1)
    log_p = jax.nn.log_softmax(logits)[0]
    expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
    assert float(smoothed[0]) == pytest.approx(float(expected), rel=1e-6)


# A value per key, valid, on (not 0, False or empty) and unlike the smoke config's: a new
# key fails the walk below until it is given one (and a rule in config_schema.KEYS).
PROBES = {
    "model": "resnet32", "num_classes": 5, "residual": False, "init_from": "IMAGENET1K_V1",
    "init_from_raw": True,
    "zero_init_residual": True, "dtype": "bfloat16", "dataset": "cifar10",
    "data_dir": "/data/tfds", "synthetic_examples": (64, 32), "pipeline": "streaming",
    "image_size": 48, "eval_resize": 72, "eval_image_size": 64, "data_workers": 3,
    "augment": True, "auto_augment": "ra", "ra_magnitude": 12, "ra_reps": 4,
    "min_image_size": 24, "ramp_steps": (10, 40),
    "batch_size": 32,
    "eval_batch_size": 16, "num_train_steps": 60, "eval_every_steps": 7,
    "checkpoint_every_steps": 7, "log_every_steps": 3, "keep_checkpoints": 2,
    "optimizer": "adamw", "momentum": 0.5, "nesterov": True, "learning_rate": 0.2,
    "schedule": "cosine", "lr_boundaries": (10,), "lr_scales": (0.5,), "warmup_steps": 5,
    "warmup_start_factor": 0.01, "weight_decay": 5e-4, "decay_norm": True,
    "decay_bias": True,
    "label_smoothing": 0.1, "eval_flip": True, "ema_decay": 0.9, "ema_every_steps": 4,
    "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "random_erasing": 0.1,
    "compile_cache_dir": "/tmp/xla",
    "sync_batch_stats": True, "parallel": "shard_map", "steps_per_call": 10,
    "log_grad_norms": True, "peak_tflops": 100.0, "seed": 7, "drop_path_rate": 0.1,
    "drop_rate": 0.2, "remat": True, "profile_steps": (2, 4),
}
# The smoke config, and the same with one of the settings that decide what the others do
# changed (a streaming run's eval_resize fits the probe's image size).
MODES = [{}, {"schedule": "cosine"}, {"schedule": "onecycle"}, {"schedule": "linear"},
         {"schedule": "cosine", "warmup_steps": 5}, {"optimizer": "adam"},
         {"optimizer": "adamw"}, {"weight_decay": 0.0}, {"momentum": 0.0},
         {"init_from": "IMAGENET1K_V1"},
         {"pipeline": "streaming", "eval_resize": 80, "ramp_steps": (5, 20)},
         {"pipeline": "streaming", "eval_resize": 80, "min_image_size": 16,
          "ramp_steps": (5, 20)}, {"dataset": "folder:/data"},
         {"dataset": "cifar:/data"}, {"dataset": "cifar10"}]


def in_mode(mode, **values):
    config = load("smoke")
    config.update({**mode, **values})
    return config


def test_every_key_given_where_it_has_no_effect_is_refused_in_one_line():
    assert set(PROBES) == set(KEYS), "give the new key a probe value and an effect rule"
    refused = set()
    for key, probe in PROBES.items():
        for mode in MODES:
            config = in_mode(mode, **{key: probe})
            why = ignored(key, config.to_dict())
            if why is None:
                validate(config, num_devices=1, chosen={key})
                continue
            refused.add(key)
            with pytest.raises(ConfigError) as error:
                validate(config, num_devices=1, chosen={key})
            assert str(error.value) == (f"{key}={probe!r} has no effect {why}; leave out "
                                        f"--config.{key}"), (key, mode)
            validate(config, num_devices=1)  # the config file's own value is its recipe
    conditional = {key for key, spec in KEYS.items() if spec.unused is not always}
    assert refused == conditional, "a key's rule never applies in any mode"


def trajectory(config):
    """What the optimizer and its schedule do: the rate over 41 steps, three updates."""
    schedule = learning_rate_schedule(config)
    tx = make_optimizer(config, schedule)
    params = {"conv": {"kernel": jnp.linspace(-1.0, 1.0, 8).reshape(2, 2, 2)},
              "bn": {"scale": jnp.array([1.0, 2.0]), "bias": jnp.array([0.5, -0.5])},
              "fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.array([1.0, -1.0])}}
    grads = jax.tree.map(lambda p: 0.3 - 0.5 * p, params)
    state, history = tx.init(params), []
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return np.asarray(jax.vmap(schedule)(jnp.arange(41))), jax.tree.leaves(history)


OPTIMIZER_KEYS = ("optimizer", "momentum", "nesterov", "learning_rate", "schedule",
                  "lr_boundaries", "lr_scales", "warmup_steps", "warmup_start_factor",
                  "weight_decay", "decay_norm", "decay_bias")


@pytest.mark.parametrize("key", OPTIMIZER_KEYS)
def test_an_optimizer_key_changes_the_updates_exactly_where_it_is_said_to(key):
    """The rule checked against what the optimizer does: where a key is said to take
    effect its value changes the rates or the updates, and where it is said to have none,
    nothing changes. (decay_norm and decay_bias are probed with False, momentum with 0.5.)"""
    probe = {"decay_norm": False, "decay_bias": False}.get(key, PROBES[key])
    for mode in MODES[:9]:
        base = in_mode(mode)
        changed = in_mode(mode, **{key: probe})
        if base[key] == changed[key]:
            continue
        (rates, updates), (new_rates, new_updates) = trajectory(base), trajectory(changed)
        same = np.array_equal(rates, new_rates) and all(
            np.array_equal(a, b) for a, b in zip(updates, new_updates, strict=True))
        assert same == bool(KEYS[key].unused(changed.to_dict())), (key, mode)


def test_a_warmup_takes_effect_under_the_piecewise_schedule():
    config = in_mode({}, warmup_steps=10, learning_rate=0.4, lr_boundaries=(20,),
                     lr_scales=(0.1,))
    rates = np.asarray(jax.vmap(learning_rate_schedule(config))(jnp.arange(25)))
    np.testing.assert_allclose(rates[[0, 5, 10, 19, 20, 24]], [0.0, 0.2, 0.4, 0.4, 0.04, 0.04],
                               rtol=1e-6)


def test_a_resolution_ramp_the_run_will_not_finish_is_warned_of_or_refused():
    config = in_mode({"pipeline": "streaming", "eval_resize": 80}, image_size=64,
                     min_image_size=32, ramp_steps=(10, 60))
    assert validate(config, num_devices=1) == [
        "the run ends at num_train_steps=40, before the end of ramp_steps=(10, 60): its "
        "training crops never reach image_size=64 (a shortened recipe)"]
    with pytest.raises(ConfigError, match=r"never reach image_size=64; end the ramp by then"):
        validate(config, num_devices=1, chosen={"ramp_steps"})


def test_boundaries_the_run_will_not_reach():
    shortened = in_mode({}, num_train_steps=20)  # the smoke config's boundary is step 30
    assert validate(shortened, 1, chosen={"num_train_steps"}) == [
        "the run ends at num_train_steps=20, before lr_boundaries 30 of the config: the "
        "learning rate is not scaled there (a shortened recipe)"]
    for key in ("lr_boundaries", "lr_scales"):  # either given makes them the user's
        with pytest.raises(ConfigError, match=f"{key}=.*: the run ends at num_train_steps=20, "
                           "before step 30 of lr_boundaries, where the rate would be scaled; "
                           "drop the boundary or raise --config.num_train_steps"):
            validate(shortened, 1, chosen={"num_train_steps", key})
    assert validate(in_mode({"schedule": "cosine"}, num_train_steps=20), 1) == []


@pytest.mark.parametrize("model,smallest", [("resnet18", 32), ("resnet20", 4),
                                            ("resnet18_cifar", 8)])
def test_images_smaller_than_the_total_stride_are_refused(model, smallest):
    config = in_mode({}, model=model, image_size=smallest - 1)
    with pytest.raises(ConfigError, match=f"image_size={smallest - 1} is below {model}'s total "
                       f"stride of {smallest}: .*; set --config.image_size={smallest} or more"):
        validate(config, 1)
    config.image_size = smallest
    validate(config, 1)
    with pytest.raises(ValueError, match=f"smaller than this network's total stride of "
                       f"{smallest}"):
        create_model(model).init(jax.random.key(0), jnp.zeros((1, smallest - 1, 64, 3)))


@pytest.mark.parametrize("overrides,message", [
    ({"residual": False, "zero_init_residual": True},
     "zero_init_residual=True with residual=False zeroes every block's output"),
    ({"residual": False, "drop_path_rate": 0.1},
     "drop_path_rate=0.1 with residual=False: the plain net has no residual branch to drop"),
    ({"schedule": "cosine", "warmup_steps": 40, "lr_boundaries": ()},
     "warmup_steps=40 leaves no steps of num_train_steps=40 for the cosine decay; set "
     "--config.warmup_steps=39 or less"),
    ({"warmup_steps": 41}, "warmup_steps=41 exceeds num_train_steps=40; set "
     "--config.warmup_steps=40 or less"),
])
def test_settings_that_cannot_train_as_meant_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(in_mode({}, **overrides), num_devices=1)


def test_off_values_and_unused_lists_are_never_refused():
    """An empty list of boundaries under cosine is nothing to ignore, whatever the scales."""
    config = in_mode({"schedule": "cosine"}, lr_boundaries=(), nesterov=False, data_workers=0)
    assert validate(config, 1, chosen={"lr_boundaries", "nesterov", "data_workers"}) == []


def test_the_peak_of_a_device_comes_from_its_kind_or_from_the_user():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "float32") == 378.0
    assert peak_tflops("NVIDIA L40S", "bfloat16") == 362.0
    assert peak_tflops("NVIDIA L4", "bfloat16") == 121.0
    assert peak_tflops("TPU v5 lite", "bfloat16") == 197.0
    assert peak_tflops("cpu", "float32") is None
    assert peak_tflops("cpu", "float32", given=1.5) == 1.5
    meter = Meter(image_flops=2e9, peak=100.0, devices=4)
    assert meter(1000.0) == pytest.approx({"tflops": 2.0, "mfu": 2.0 / 400, "peak_tflops": 100})
    assert Meter(2e9, None, 1)(1000.0) == {"tflops": 2.0}
    rows = [{"mfu": 0.9, "peak_tflops": 1.0}, {"mfu": 0.5, "peak_tflops": 2.0},
            {"mfu": 0.4, "peak_tflops": 2.0}, {"tflops": 0.1}]  # a resume changed the peak
    assert mfu_summary(rows) == {"median_mfu": pytest.approx(0.45),
                                 "peak_tflops": 2.0}
