"""Training runs end to end: learning, determinism, devices, resume, outputs, divergence."""

import json
import re
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import metric_rows, run_train_in_process, run_train_py, tiny_config

from resnet_jax import restore
from resnet_jax.data.pipelines import build_pipeline, normalize
from resnet_jax.errors import CheckpointError, ConfigError, TrainingDiverged
from resnet_jax.evaluate import evaluate_run
from resnet_jax.models import build_model
from resnet_jax.models.layer_table import summarize
from resnet_jax.train import train_calls
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.train.training import create_train_state, mean_metrics, parallel_train


def test_a_tiny_model_overfits_a_fixed_batch():
    config = tiny_config(augment=False, learning_rate=0.05, lr_boundaries=(), lr_scales=(),
                         steps_per_call=10)
    pipeline = build_pipeline(config)
    state = create_train_state(config, build_model(config), pipeline.image_shape)
    p_train = parallel_train(config, pipeline)
    fixed = {"indices": np.tile(np.arange(32, dtype=np.int32), (10, 1))}  # 10 steps, 1 batch
    resident = pipeline.resident()
    losses = []
    for _ in range(4):
        state, watched = p_train(state, resident, np.int32(10), fixed)
        losses += list(np.asarray(watched["train_loss"]))
    assert losses[-1] < 0.05 * losses[0], losses
    last_call = mean_metrics(jax.device_get(state.metric_sums))
    assert last_call["train_loss"] == pytest.approx(np.mean(losses), rel=1e-5)


def test_one_or_ten_steps_per_compiled_call_train_bit_for_bit_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(train_calls, "LOOPS_ON_CPU", True)  # on a CPU, calls run one step otherwise
    # Cadences that 10 does not divide: each call still ends where the host acts.
    config = tiny_config(num_train_steps=23, log_every_steps=5, eval_every_steps=9,
                         checkpoint_every_steps=6, steps_per_call=1)
    train_and_evaluate(config, tmp_path / "one")
    config.steps_per_call = 10
    train_and_evaluate(config, tmp_path / "ten")
    rows = metric_rows(tmp_path / "ten")
    assert rows == metric_rows(tmp_path / "one")
    assert [r["step"] for r in rows] == [5, 9, 10, 15, 18, 20, 23]
    assert [r["step"] for r in rows if "test_accuracy" in r] == [9, 18, 23]
    saved = sorted(int(p.name) for p in (tmp_path / "ten" / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert saved[-1] == 23 and set(saved) <= {6, 12, 18, 23}
    _, ones = restore(tmp_path / "one")
    _, tens = restore(tmp_path / "ten")
    jax.tree.map(np.testing.assert_array_equal, ones, tens)


def test_one_device_and_eight_give_the_same_loss_curve(tmp_path):
    # Augmentation is device-count invariant too (test_pipelines.py). This tiny problem is
    # chaotic at lr 0.05: another reduction order (1e-7) grew to 4e-4 in one step at step 3
    # (measured with the synthetic set's own statistics); at lr 0.002 all 12 steps agree to
    # 1.2e-7.
    config = tiny_config(num_train_steps=12, eval_every_steps=12, augment=False,
                         learning_rate=0.002)
    eight = train_and_evaluate(config, tmp_path / "eight")
    result = run_train_py(tmp_path / "one", config, devices=1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert (one["devices"], eight["devices"]) == (1, 8)
    curve_one = [r["train_loss"] for r in metric_rows(tmp_path / "one")]
    curve_eight = [r["train_loss"] for r in metric_rows(tmp_path / "eight")]
    np.testing.assert_allclose(curve_one, curve_eight, rtol=1e-5)
    _, trained_on_one = restore(tmp_path / "one")  # restored here, on eight devices
    _, trained_on_eight = restore(tmp_path / "eight")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 trained_on_one, trained_on_eight)
    assert one["final_test_accuracy"] == pytest.approx(eight["final_test_accuracy"], abs=0.02)


def test_shard_map_gives_the_same_numbers_as_pmap(tmp_path):
    config = tiny_config(num_train_steps=8, eval_every_steps=8, log_every_steps=1)
    train_and_evaluate(config, tmp_path / "pmap")
    config.parallel = "shard_map"
    train_and_evaluate(config, tmp_path / "shard_map")
    pmap_rows, shard_map_rows = metric_rows(tmp_path / "pmap"), metric_rows(tmp_path / "shard_map")
    assert [r.keys() for r in pmap_rows] == [r.keys() for r in shard_map_rows]
    for ours, theirs in zip(shard_map_rows, pmap_rows, strict=True):
        for key in ours:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6), (ours["step"], key)
    _, ours = restore(tmp_path / "shard_map")
    _, theirs = restore(tmp_path / "pmap")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ours, theirs)


def test_an_interrupted_run_resumes_to_exactly_the_straight_run(tmp_path, capsys):
    """With a moving average of the weights too, evaluated beside them in every row."""
    config = tiny_config(num_train_steps=48, eval_every_steps=16, checkpoint_every_steps=8,
                         ema_decay=0.9, ema_every_steps=2)
    straight = train_and_evaluate(config, tmp_path / "straight")

    resumed_dir = tmp_path / "resumed"
    process = run_train_py(resumed_dir, config, wait=False)
    metrics_file = resumed_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics_file.exists() and len(
            metrics_file.read_text().splitlines()) >= 4):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-3000:]
    partial = json.loads((resumed_dir / "summary.json").read_text())
    assert partial["interrupted"] and 0 < partial["steps"] < 48, partial
    assert "checkpoint saved at step" in output

    result = run_train_in_process([f"--workdir={resumed_dir}"])  # its recorded config
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "evaluating" in result.stderr and "saving checkpoint" in result.stderr  # the bar says
    assert f"resuming at step {partial['steps']} of 48" in result.stdout
    assert metric_rows(resumed_dir) == metric_rows(tmp_path / "straight")
    final = json.loads((resumed_dir / "summary.json").read_text())
    assert final["final_test_accuracy"] == straight["final_test_accuracy"]
    assert final["ema_final_test_accuracy"] == straight["ema_final_test_accuracy"] is not None
    assert "ema_test_loss" in metric_rows(resumed_dir)[-1]

    # The run's wall time counts both segments; each keeps its own.
    first, second = final["segments"]
    assert (first["first_step"], first["last_step"]) == (0, partial["steps"])
    assert second["last_step"] == 48 and second["first_step"] <= partial["steps"]
    assert final["wall_seconds"] == pytest.approx(first["wall_seconds"] + second["wall_seconds"])
    assert final["segment_wall_seconds"] == second["wall_seconds"]
    assert 0 < final["compile_seconds"] < final["segment_wall_seconds"]
    assert 0 <= final["data_seconds"] < final["segment_wall_seconds"]
    assert json.loads((resumed_dir / "segments.json").read_text()) == final["segments"]
    walls = [r["wall_seconds"] for r in metric_rows(resumed_dir, drop=())]
    assert walls == sorted(walls) and walls[-1] > first["wall_seconds"]
    _, ours = restore(resumed_dir)
    _, theirs = restore(tmp_path / "straight")
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)

    # The same claim from the command that checks a change of code: python -m tools.same_runs.
    from tools import same_runs

    assert same_runs.main([str(resumed_dir), str(tmp_path / "straight")]) == 0
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    rows[1]["train_loss"] += 1e-6
    metrics_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert same_runs.main([str(resumed_dir), str(tmp_path / "straight")]) == 1
    assert f"1 differ (step {rows[1]['step']} train_loss: " in capsys.readouterr().out


def test_a_run_writes_metrics_summary_plot_and_tensorboard(tmp_path, capfd):
    config = tiny_config(log_grad_norms=True, num_classes=10, peak_tflops=0.0002)
    summary = train_and_evaluate(config, tmp_path)
    assert "the peak of 0.0002 TFLOP/s per device is below what the devices do" in (
        capfd.readouterr().err)  # a CPU beats this peak: warned of once
    rows = metric_rows(tmp_path, drop=())
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20, 24]
    for key in ("epoch", "train_loss", "train_accuracy", "learning_rate", "images_per_sec",
                "tflops", "mfu", "grad_norm/stem", "grad_norm/stage1", "grad_norm/stage3",
                "grad_norm/head", "train_grad_norm", "train_param_norm", "train_update_ratio"):
        assert all(key in row for row in rows), key
    image_flops = 6 * summarize(build_model(config), (8, 8, 3)).total_macs
    for row in rows:  # 6 FLOPs per forward multiply-accumulate, at the run's image size
        assert row["tflops"] == pytest.approx(row["images_per_sec"] * image_flops / 1e12)
        assert row["mfu"] == pytest.approx(row["tflops"] / (0.0002 * 8))  # eight devices
    assert summary["median_mfu"] == pytest.approx(np.median([r["mfu"] for r in rows]))
    assert summary["peak_tflops"] == 0.0002 == rows[0]["peak_tflops"]
    assert {"test_loss", "test_accuracy", "test_top5_accuracy", "eval_examples"} <= set(rows[2])
    assert rows[2]["test_top5_accuracy"] >= rows[2]["test_accuracy"]
    assert rows[-1]["learning_rate"] == pytest.approx(0.005)  # 0.05 x 0.1 after step 16
    assert summary["eval_examples"] == 100 and summary["steps"] == 24
    for key in ("final_test_accuracy", "best_test_accuracy", "wall_seconds", "compile_seconds",
                "median_images_per_sec"):
        assert summary[key] is not None, key
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["final_test_accuracy"] == summary["final_test_accuracy"]
    assert summary["final_test_top5_accuracy"] == rows[-1]["test_top5_accuracy"]
    again = evaluate_run(tmp_path)  # the trainer's own evaluation, from its last checkpoint
    assert again["top1"] == 100 * summary["final_test_accuracy"]
    assert again["top5"] == 100 * summary["final_test_top5_accuracy"]
    assert again["loss"] == summary["final_test_loss"] and again["examples"] == 100


def test_the_norms_a_researcher_watches_are_the_steps_own(tmp_path):
    """Plain SGD's first step moves the parameters by lr x the gradient: the logged update
    ratio is lr x grad norm / parameter norm, and the parameter norm is the initial one."""
    import optax

    from resnet_jax.runs.trained import restore
    from resnet_jax.train.training import create_train_state

    config = tiny_config(num_train_steps=1, log_every_steps=1, eval_every_steps=1,
                         checkpoint_every_steps=1, weight_decay=0.0, momentum=0.0)
    train_and_evaluate(config, tmp_path)
    row = next(r for r in metric_rows(tmp_path) if "train_grad_norm" in r)
    assert row["train_update_ratio"] == pytest.approx(
        row["learning_rate"] * row["train_grad_norm"] / row["train_param_norm"], rel=1e-5)
    start = create_train_state(config, build_model(config), (8, 8, 3))
    assert row["train_param_norm"] == pytest.approx(float(optax.tree.norm(start.params)),
                                                    rel=1e-6)
    moved = optax.tree.norm(jax.tree.map(lambda a, b: a - b, restore(tmp_path)[1]["params"],
                                         start.params))
    assert row["train_update_ratio"] == pytest.approx(
        float(moved) / row["train_param_norm"], rel=1e-4)


def test_profile_steps_traces_that_window_into_the_runs_tensorboard_folder(tmp_path, capfd):
    from resnet_jax.train.config_schema import ConfigError, validate

    train_and_evaluate(tiny_config(num_train_steps=12, profile_steps=(5, 7)), tmp_path / "run")
    traces = list((tmp_path / "run" / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert (f"profile of steps 5 to 7: {tmp_path / 'run' / 'tensorboard'} (TensorBoard's "
            "profile tab, or Perfetto)") in capfd.readouterr().err
    train_and_evaluate(tiny_config(num_train_steps=16, profile_steps=(5, 7)), tmp_path / "run")
    assert ("warning: profile_steps=(5, 7) begins before step 12, where this run goes on: "
            "nothing is traced; pass a later window") in capfd.readouterr().err
    for window in ((0, 3), (7, 5), (10, 30)):
        with pytest.raises(ConfigError, match=re.escape(
                f"profile_steps={window} is not a window of this run's steps")):
            validate(tiny_config(profile_steps=window), num_devices=1)


def test_checkpoints_keep_the_latest_and_the_best(tmp_path):
    config = tiny_config(keep_checkpoints=2, checkpoint_every_steps=4, eval_every_steps=4)
    train_and_evaluate(config, tmp_path)
    rows = [r for r in metric_rows(tmp_path) if "test_accuracy" in r]
    best = max(rows, key=lambda r: r["test_accuracy"])["step"]
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == sorted({20, 24, best})


def test_restore_gives_the_model_and_variables_for_inference(tmp_path):
    config = tiny_config(num_train_steps=8, eval_every_steps=8)
    summary = train_and_evaluate(config, tmp_path)
    model, variables = restore(tmp_path)
    pipeline = build_pipeline(config)
    test = pipeline.dataset.test
    images = normalize(jnp.asarray(test.images), pipeline.mean, pipeline.std)
    logits = model.apply(variables, images, train=False)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test.labels))
    assert accuracy == pytest.approx(summary["final_test_accuracy"], abs=1e-6)
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 7 .*readable steps: "
                       r"\[6, 8\]; pass one of them \(step=8\)"):
        restore(tmp_path, step=7)


def test_bfloat16_training_runs_with_float32_parameters(tmp_path):
    summary = train_and_evaluate(tiny_config(dtype="bfloat16", num_train_steps=8,
                                             eval_every_steps=8), tmp_path)
    assert np.isfinite(summary["final_train_loss"])
    _, variables = restore(tmp_path)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_resuming_with_a_different_model_is_refused(tmp_path):
    train_and_evaluate(tiny_config(num_train_steps=4, eval_every_steps=4), tmp_path)
    with pytest.raises(ConfigError, match="different setup .*model: 'resnet20' -> 'resnet32'"):
        train_and_evaluate(tiny_config(model="resnet32"), tmp_path)


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_good_checkpoints(tmp_path):
    # lr 0.05 for 8 steps (a checkpoint at 8), then 5e30: the loss blows up from step 9.
    config = tiny_config(num_train_steps=24, checkpoint_every_steps=8, lr_boundaries=(8,),
                         lr_scales=(1e32,))
    with pytest.raises(TrainingDiverged, match=r"train loss became (nan|inf) at step (9|1\d|2\d) "
                       r"\(learning rate 5e\+30\).*last good checkpoint is step 8"):
        train_and_evaluate(config, tmp_path)
    assert [r["step"] for r in metric_rows(tmp_path)][:2] == [4, 8]
    _, variables = restore(tmp_path)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(variables))


def test_a_run_diverging_before_its_first_checkpoint_says_so(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint had been saved yet"):
        train_and_evaluate(tiny_config(learning_rate=1e30, checkpoint_every_steps=24), tmp_path)


def test_stochastic_depth_and_batch_augmentations_train_reproducibly_and_only_when_asked(
        tmp_path):
    """Stochastic depth, head dropout, MixUp, CutMix and random erasing: drawn from (seed,
    step), so two runs are one, and a run without them another (remat on alongside)."""
    runs = {}
    on = {"drop_path_rate": 0.3, "drop_rate": 0.2, "mixup_alpha": 0.2, "cutmix_alpha": 1.0,
          "random_erasing": 0.5, "label_smoothing": 0.1, "remat": True}
    for name, options in (("off", {}), ("on", on), ("again", on)):
        train_and_evaluate(tiny_config(num_train_steps=4, eval_every_steps=4, **options),
                           tmp_path / name)
        runs[name] = [(r["train_loss"], r["train_accuracy"]) for r in metric_rows(tmp_path / name)
                      if "train_loss" in r]
    assert runs["on"] == runs["again"] and runs["on"] != runs["off"]
    from torch_side import train as torch_train

    with pytest.raises(ConfigError, match="the PyTorch twin has no stochastic depth or head "
                                          "dropout"):
        torch_train.check_twin_config(tiny_config(drop_rate=0.3), amp=False)
    with pytest.raises(ConfigError, match="remat=True has no effect in the PyTorch twin"):
        torch_train.check_twin_config(tiny_config(remat=True), amp=False, chosen={"remat"})



def test_a_compile_cache_directory_is_reused_by_a_restart(tmp_path):
    """compile_cache_dir (free): the first start stores its compiled programs there; a
    restart finds every one of them (it stores nothing new) and says so in its segment."""
    cache = tmp_path / "xla"
    config = tiny_config(num_train_steps=4, eval_every_steps=4, checkpoint_every_steps=4,
                         compile_cache_dir=str(cache))
    first = run_train_py(tmp_path / "run", config, devices=1)
    assert first.returncode == 0, first.stderr[-2000:]
    stored = sorted(p.name for p in cache.iterdir())
    assert stored
    config.num_train_steps = 8
    again = run_train_py(tmp_path / "run", config, devices=1)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in cache.iterdir()) == stored
