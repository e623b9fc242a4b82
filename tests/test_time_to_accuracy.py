"""Time to accuracy and the seed statistics: both frameworks run, and the numbers add up."""

import json
import subprocess
import sys

import pytest
from helpers import REPO, metric_rows, overrides_as_flags, tiny_config

from benchmarks import time_to_accuracy as tta


def test_the_first_evaluation_at_or_above_the_target_is_the_crossing():
    curve = [(10.0, 0.5), (20.0, 0.7), (30.0, 0.65), (40.0, 0.8)]
    assert tta.time_to_reach(curve, 0.7) == 20.0
    assert tta.time_to_reach(curve, 0.75) == 40.0
    assert tta.time_to_reach(curve, 0.9) is None


def test_the_difference_interval_is_welchs():
    # Equal variances and sizes: Welch's degrees of freedom are 2(n - 1) = 4, t = 2.776.
    result = tta.difference_interval([0.90, 0.91, 0.92], [0.89, 0.90, 0.91])
    half_width = 2.776 * (2 * 0.0001 / 3) ** 0.5
    assert result["difference"] == pytest.approx(0.01)
    assert (result["low"], result["high"]) == pytest.approx((0.01 - half_width,
                                                             0.01 + half_width))
    assert tta.difference_interval([0.9], [0.8])["low"] is None  # one seed: no interval


def test_both_frameworks_train_and_the_report_is_written(tmp_path):
    config = tiny_config(num_train_steps=6, eval_every_steps=2, log_every_steps=2,
                         checkpoint_every_steps=6, learning_rate=0.002)
    argv = ["--config", "configs/smoke.py", "--workdir", str(tmp_path), "--seeds", "0",
            "--no-amp", "--no-channels_last", "--no-compile", *overrides_as_flags(config)]
    report = tta.main(argv)
    seed = report["per_seed"][0]
    assert seed["jax_final_accuracy"] == pytest.approx(seed["torch_final_accuracy"], abs=0.05)
    assert seed["jax_seconds_to_jax_final"] <= seed["jax_seconds"]
    assert seed["torch_seconds_to_torch_final"] <= seed["torch_seconds"]
    assert report["summary"]["jax"]["std"] is None  # one seed
    assert (tmp_path / "time_to_accuracy.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "time_to_accuracy.json").read_text())["per_seed"]["0"] == seed
    for side in ("jax", "torch"):
        rows = metric_rows(tmp_path / f"{side}_seed0", drop=())
        assert [r["step"] for r in rows if "test_accuracy" in r] == [2, 4, 6]
    assert tta.main(argv)["per_seed"] == report["per_seed"]  # finished runs: not trained again


def test_what_the_pytorch_side_refuses_stops_the_comparison_in_one_line_leaving_nothing(
        tmp_path):
    workdir = tmp_path / "new" / "tta"
    command = [sys.executable, "-m", "benchmarks.time_to_accuracy", "--config", "configs/smoke.py",
               "--workdir", str(workdir), "--no-compile", "--config.pipeline=streaming"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: pipeline=streaming: the PyTorch twin draws its "
                                     "batches from the in_memory pipeline; pass "
                                     "--config.pipeline=in_memory"), result.stderr[-2000:]
    assert not (tmp_path / "new").exists()  # nor the JAX run, which never started
