"""No run is lost: kill -9 at any moment, damaged checkpoints, long runs, several processes."""

import json
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import metric_rows, run_train_in_process, run_train_py, tiny_config

from resnet_jax import restore
from resnet_jax.runs.checkpoints import CheckpointError
from resnet_jax.train.loop import train_and_evaluate


def wait_while_running(process, condition, timeout=120.0) -> bool:
    """Wait for ``condition()``; False if ``process`` ends or time runs out first."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.005)
    return False


def logged_steps(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def checkpoint_being_written(workdir: Path) -> bool:
    directory = workdir / "checkpoints"
    return directory.is_dir() and any("tmp" in p.name for p in directory.iterdir())


def assert_same_run(workdir: Path, reference: Path) -> None:
    assert metric_rows(workdir) == metric_rows(reference)
    _, ours = restore(workdir)
    _, theirs = restore(reference)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_kill_9_at_random_moments_and_mid_checkpoint_loses_nothing(tmp_path):
    config = tiny_config(num_train_steps=24, eval_every_steps=8, checkpoint_every_steps=2,
                         log_every_steps=2)
    train_and_evaluate(config, tmp_path / "straight")
    workdir, moments = tmp_path / "killed", random.Random(0)
    kills_mid_write = 0
    for kill in range(4):
        process = run_train_py(workdir, config, wait=False)
        if kill % 2 == 0:  # the moment an Orbax checkpoint is half written
            hit = wait_while_running(process, lambda: checkpoint_being_written(workdir))
        else:  # a random moment after a few steps
            rows = logged_steps(workdir) + moments.randint(1, 3)
            hit = wait_while_running(process, lambda rows=rows: logged_steps(workdir) >= rows)
            time.sleep(moments.uniform(0, 0.3))
        assert hit and process.poll() is None, "the run ended before it could be killed"
        kills_mid_write += checkpoint_being_written(workdir)
        process.kill()
        process.communicate(timeout=60)
    assert kills_mid_write >= 2, "no kill landed during a checkpoint write"
    result = run_train_in_process([f"--workdir={workdir}"])  # its recorded config
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert_same_run(workdir, tmp_path / "straight")


def damage(step_dir: Path) -> None:
    """Cut every file of a checkpoint to half its length."""
    for path in step_dir.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_restored(tmp_path, capsys):
    config = tiny_config(num_train_steps=12, eval_every_steps=12, checkpoint_every_steps=4)
    train_and_evaluate(config, tmp_path / "straight")
    workdir = tmp_path / "damaged"
    train_and_evaluate(tiny_config(num_train_steps=8, eval_every_steps=12,
                                   checkpoint_every_steps=4), workdir)
    damage(workdir / "checkpoints" / "8")
    files = sorted(p.relative_to(workdir / "checkpoints") for p in
                   (workdir / "checkpoints" / "8").rglob("*"))
    capsys.readouterr()
    train_and_evaluate(config, workdir)
    err = capsys.readouterr().err
    assert "warning: checkpoint 8 cannot be read (" in err
    assert f"moved it to {workdir / 'unreadable_checkpoints' / '8'} and resumed from step 4" in err
    aside = workdir / "unreadable_checkpoints"
    assert sorted(p.relative_to(aside) for p in (aside / "8").rglob("*")) == files
    assert_same_run(workdir, tmp_path / "straight")


def test_no_readable_checkpoint_stops_with_a_clear_error_and_moves_nothing(tmp_path):
    config = tiny_config(num_train_steps=8, eval_every_steps=8, checkpoint_every_steps=4)
    train_and_evaluate(config, tmp_path)
    for step in ("4", "8"):
        damage(tmp_path / "checkpoints" / step)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CheckpointError, match="no checkpoint under .* can be read .*step 8.*"
                       "step 4.*nothing was changed"):
        train_and_evaluate(tiny_config(num_train_steps=12), tmp_path)
    assert sorted(tmp_path.rglob("*")) == before


def resident_mib(pid: int) -> float | None:
    """Resident memory of a live process; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return None
    rss = [int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")]
    return rss[0] if rss else None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_long_run_keeps_its_resident_memory_flat(tmp_path):
    steps = 2500
    config = tiny_config(num_train_steps=steps, batch_size=8, synthetic_examples=(64, 16),
                         log_every_steps=100, eval_every_steps=1000,
                         checkpoint_every_steps=500, lr_boundaries=(), lr_scales=())
    process = run_train_py(tmp_path, config, devices=1, wait=False)
    samples = []  # (logged steps, resident MiB)
    while (rss := resident_mib(process.pid)) is not None and process.poll() is None:
        samples.append((logged_steps(tmp_path) * 100, rss))
        time.sleep(0.1)
    output, _ = process.communicate()
    assert process.returncode == 0, output[-2000:]
    # Warm once the eval step is compiled and a checkpoint written; the end (summary, plot)
    # is not training.
    warm = [rss for step, rss in samples if 1000 <= step < 1500]
    late = [rss for step, rss in samples if 2000 <= step < steps]
    assert warm and late, samples
    growth = max(late) - max(warm)
    assert growth < 25, f"resident memory grew by {growth:.1f} MiB from steps 1000-1500 to 2000+"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_two_processes(workdir: Path, config) -> list[subprocess.Popen]:
    address = f"127.0.0.1:{free_port()}"
    return [run_train_py(workdir, config, devices=4, wait=False, extra=(
        f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"))
        for i in range(2)]


def outputs_of(processes: list[subprocess.Popen]) -> list[str]:
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return outputs


def test_two_processes_of_four_devices_train_as_one_of_eight(tmp_path):
    # Augmentation off and a small learning rate: on this tiny problem float32 rounding
    # differences (another reduction order across processes) grow chaotically otherwise
    # (at lr 0.01: 2e-2 by step 16).
    config = tiny_config(num_train_steps=16, eval_every_steps=8, checkpoint_every_steps=4,
                         log_every_steps=2, augment=False, learning_rate=0.002)
    single = train_and_evaluate(config, tmp_path / "one_process")

    workdir = tmp_path / "two_processes"
    processes = start_two_processes(workdir, config)
    assert wait_while_running(processes[1], lambda: logged_steps(workdir) >= 2)
    processes[1].send_signal(signal.SIGTERM)  # to one process: both stop at the same step
    outputs = outputs_of(processes)
    stopped = json.loads((workdir / "summary.json").read_text())
    assert stopped["interrupted"] and stopped["steps"] < 16, stopped
    assert f"checkpoint saved at step {stopped['steps']}" in outputs[0]

    config.parallel = "shard_map"  # the checkpoint is resumed by both processes, differently
    outputs = outputs_of(start_two_processes(workdir, config))

    assert "final_test_accuracy" in outputs[0] and "final_test_accuracy" not in outputs[1]
    ours, theirs = metric_rows(workdir), metric_rows(tmp_path / "one_process")
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    np.testing.assert_allclose([r["train_loss"] for r in ours],
                               [r["train_loss"] for r in theirs], rtol=1e-5)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["devices"] == single["devices"] == 8
    assert summary["final_test_accuracy"] == pytest.approx(single["final_test_accuracy"],
                                                           abs=0.02)
    assert (workdir / "checkpoints" / "16").is_dir()
