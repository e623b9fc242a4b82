"""Bad input costs nothing: one clear line, exit 1, and every byte on disk as it was.

Each case runs the real train.py's main, in this process (what a process of its own adds,
signals and a kill, is tested with one below). A refused start is checked three ways: the
exit status, a single stderr line (no traceback) holding the expected message, and a
byte-for-byte snapshot of the case's directory before and after.
"""

import dataclasses
import importlib
import inspect
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    REPO,
    metric_rows,
    overrides_as_flags,
    run_train_in_process,
    run_train_py,
    tiny_config,
)
from PIL import Image

from resnet_jax.train.loop import train_and_evaluate

RUN_CONFIG = tiny_config(num_train_steps=8, eval_every_steps=8, checkpoint_every_steps=4)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every directory (None) under ``root``."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def image_folder(root: Path, classes=("cat", "dog", "frog")) -> Path:
    for split in ("train", "test"):
        for label in classes:
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 90, 0)).save(root / split / label / f"{i}.png")
    return root


def damage(step_dir: Path) -> None:
    for path in step_dir.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@dataclasses.dataclass
class Case:
    """A command line (``{case}`` is the case's own directory, ``{run}`` its work directory)
    and the line it must print. ``prepare(case_dir)`` lays out files first."""

    flags: list[str]
    message: str
    prepare: Callable[[Path], None] = lambda case_dir: None
    on_finished_run: bool = False  # start from a copy of a finished 8-step run
    status: int = 1


def _write(relative: str, text: str) -> Callable[[Path], None]:
    def prepare(case_dir: Path) -> None:
        path = case_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return prepare


def _images(case_dir: Path) -> None:
    image_folder(case_dir / "images")


def _with_non_image(case_dir: Path) -> None:
    _images(case_dir)
    (case_dir / "images" / "train" / "dog" / "x.jpg").write_text("not an image")


def _damage_all(case_dir: Path) -> None:
    for step in ("4", "8"):
        damage(case_dir / "run" / "checkpoints" / step)


def _drop_config(case_dir: Path) -> None:
    (case_dir / "run" / "config.json").unlink()


def _claim_resnet32(case_dir: Path) -> None:
    path = case_dir / "run" / "config.json"
    path.write_text(path.read_text().replace('"model": "resnet20"', '"model": "resnet32"'))


def _with_empty_class(split: str, name: str) -> Callable[[Path], None]:
    def prepare(case_dir: Path) -> None:
        _images(case_dir)
        for image in (case_dir / "images" / split / name).iterdir():
            image.unlink()
    return prepare


def _bad_metrics_line(case_dir: Path) -> None:
    path = case_dir / "run" / "metrics.jsonl"
    path.write_text("oops\n" + path.read_text())


CASES = {
    # Values: each checked before anything is read or written.
    "zero and negative values": Case(
        ["--config.batch_size=0", "--config.eval_every_steps=0", "--config.log_every_steps=0",
         "--config.checkpoint_every_steps=0", "--config.eval_batch_size=0", "--config.seed=-1",
         "--config.learning_rate=-1", "--config.label_smoothing=1.0"],
        "batch_size=0 must be an integer >= 1; set --config.batch_size; eval_batch_size=0 must "
        "be an integer >= 1; set --config.eval_batch_size; eval_every_steps=0 must be an "
        "integer in [1, 2147483647]; set --config.eval_every_steps; checkpoint_every_steps=0 "
        "must be an integer in [1, 2147483647]; set --config.checkpoint_every_steps; "
        "log_every_steps=0 must be an integer in [1, 2147483647]; set --config.log_every_steps; "
        "learning_rate=-1.0 must be a finite number >= 0; set --config.learning_rate; "
        "label_smoothing=1.0 must be a finite number in [0, 1); set --config.label_smoothing; "
        "seed=-1 must be an integer in [0, 2147483647]; set --config.seed"),
    "modern recipe values": Case(
        ["--config.auto_augment=autoaugment", "--config.mixup_alpha=-0.2",
         "--config.ema_decay=1.0", "--config.ra_reps=0"],
        "auto_augment='autoaugment' must be one of: '' (off), ta_wide, ra; set "
        "--config.auto_augment; "
        "ra_reps=0 must be an integer in [1, 1024]; set --config.ra_reps; mixup_alpha=-0.2 "
        "must be a finite number >= 0; set --config.mixup_alpha; ema_decay=1.0 must be a "
        "finite number in [0, 1); set --config.ema_decay"),
    "a resolution ramp that ends before it starts": Case(
        ["--config.pipeline=streaming", "--config.image_size=64", "--config.eval_resize=64",
         "--config.eval_image_size=48", "--config.min_image_size=32",
         "--config.ramp_steps=(6,2)"],
        "ramp_steps=(6, 2) must start before it ends; give (first step, last step) of the "
        "ramp, the first below the last; image_size=64, the ramp's end, exceeds "
        "eval_image_size=48"),
    "the old joint decay key": Case(
        ["--config.decay_norm_and_bias=False"],
        "config key decay_norm_and_bias is now decay_norm and decay_bias, each its own choice"),
    "a resolution ramp the run does not reach": Case(
        ["--config.pipeline=streaming", "--config.image_size=64", "--config.eval_resize=64",
         "--config.min_image_size=32", "--config.ramp_steps=(2,50)"],
        "the run ends at num_train_steps=8, before the end of ramp_steps=(2, 50): its training "
        "crops never reach image_size=64; end the ramp by then or raise "
        "--config.num_train_steps"),
    "num_train_steps=0": Case(["--config.num_train_steps=0"],
                              "num_train_steps=0 must be an integer in [1, 2147483647]"),
    "more steps than the step counter holds": Case(
        ["--config.num_train_steps=99999999999999999999"],
        "num_train_steps=99999999999999999999 must be an integer in [1, 2147483647]"),
    "an infinite learning rate": Case(["--config.learning_rate=inf"],
                                      "learning_rate=inf must be a finite number >= 0"),
    "a fraction for an integer": Case(["--config.batch_size=64.5"],
                                      "--config.batch_size=64.5 is not an integer"),
    "boundaries without scales": Case(
        ["--config.lr_scales=(0.1,0.2)"],
        "lr_boundaries has 0 steps but lr_scales 2 factors; give one factor per boundary"),
    "a momentum under Adam": Case(
        ["--config.optimizer=adam", "--config.momentum=0.5"],
        "momentum=0.5 has no effect with optimizer=adam, which has no momentum (Adam's moment "
        "decay is fixed); leave out --config.momentum"),
    "worker processes in memory": Case(
        ["--config.data_workers=4"], "data_workers=4 has no effect under pipeline=in_memory, "
        "which decodes the whole dataset once, without workers; leave out --config.data_workers"),
    "a boundary beyond the run": Case(
        ["--config.lr_boundaries=(50,)", "--config.lr_scales=(0.1,)"],
        "lr_boundaries=(50,) and lr_scales=(0.1,): the run ends at num_train_steps=8, before "
        "step 50 of lr_boundaries, where the rate would be scaled; drop the boundary or raise "
        "--config.num_train_steps"),
    "several steps per call on a CPU": Case(
        ["--config.steps_per_call=50"], "steps_per_call=50 has no effect on a CPU, which runs "
        "one train step per compiled call"),
    "an image smaller than the network's stride": Case(
        ["--config.image_size=2"], "image_size=2 is below resnet20's total stride of 4: its "
        "last stage would see less than one pixel; set --config.image_size=4 or more"),
    "unknown model": Case(["--config.model=resnet19"],
                          "model='resnet19' must be one of: resnet18, resnet34"),
    "unknown key": Case(["--config.batch_sise=64"],
                        "unknown config key 'batch_sise'. Did you mean \"batch_size\""),
    "indivisible batch": Case(["--config.batch_size=60"],
                              "batch_size=60 is not divisible by the 8 devices"),
    "missing config file": Case(["--config={case}/nothing.py"],
                                "cannot read config file {case}/nothing.py"),
    "config file syntax error": Case(["--config={case}/broken.py"],
                                     "config file {case}/broken.py line 1: '(' was never closed",
                                     _write("broken.py", "x = (\n")),
    "a folder for a config file": Case(["--config={case}"], "config file {case} is a "
                                       "directory; pass --config configs/NAME.py"),
    "a get_config that returns no config": Case(
        ["--config={case}/five.py"], "config file {case}/five.py: get_config() returned int, "
        "not an ml_collections.ConfigDict; return one",
        _write("five.py", "def get_config():\n    return 5\n")),
    "an argument for a get_config that takes none": Case(
        ["--config=configs/smoke.py:foo"], "config file configs/smoke.py: get_config() takes no "
        "argument, but --config configs/smoke.py:foo passes one; leave out :foo"),
    "stray argument": Case(["extra"], "unexpected arguments 'extra'"),
    "half the distributed flags": Case(
        ["--num_processes=2"],
        "--coordinator_address, --num_processes and --process_id go together"),
    # Data.
    "folder: prefix forgotten": Case(
        ["--config.dataset={case}/images"],
        "looks like a path, not a TFDS name; write --config.dataset=folder:{case}/images",
        _images),
    "folder: names a file": Case(["--config.dataset=folder:{case}/a_file"],
                                 "folder: path {case}/a_file is a file, not a directory",
                                 _write("a_file", "")),
    "cifar: names a class-per-folder tree": Case(
        ["--config.dataset=cifar:{case}/images"],
        "found test/, train/; a class-per-folder tree is read with "
        "--config.dataset=folder:{case}/images", _images),
    "a file that is not an image": Case(
        ["--config.dataset=folder:{case}/images", "--config.num_classes=3"],
        "1 file(s) under {case}/images/train cannot be read as images: "
        "{case}/images/train/dog/x.jpg (not an image format PIL knows)", _with_non_image),
    "a single class": Case(
        ["--config.dataset=folder:{case}/images", "--config.num_classes=2"],
        "the dataset has 1 class; a classifier needs at least 2: add class folders",
        lambda case_dir: image_folder(case_dir / "images", classes=("cat",))),
    "an empty class folder": Case(
        ["--config.dataset=folder:{case}/images", "--config.num_classes=3"],
        "class folder(s) ['dog'] under {case}/images/train hold no images",
        _with_empty_class("train", "dog")),
    "an empty class folder in the test split": Case(
        ["--config.dataset=folder:{case}/images", "--config.num_classes=3"],
        "class folder(s) ['frog'] under {case}/images/test hold no images",
        _with_empty_class("test", "frog")),
    "an empty class folder, streaming": Case(
        ["--config.dataset=folder:{case}/images", "--config.num_classes=3",
         "--config.pipeline=streaming"],
        "class folder(s) ['frog'] under {case}/images/test hold no images",
        _with_empty_class("test", "frog")),
    "TFDS data neither prepared nor downloadable": Case(  # TensorFlow's notices left out
        ["--config.dataset=cifar10", "--config.data_dir={case}/tfds"],
        "TFDS dataset cifar10 is not prepared in {case}/tfds/cifar10/"),
    "class count differs": Case(
        ["--config.dataset=folder:{case}/images"],
        "the dataset has 3 classes but num_classes=10; set --config.num_classes=3",
        _images),
    # Work directories.
    "workdir under a file": Case(["--workdir={case}/a_file/run"],
                                 "cannot write to workdir {case}/a_file/run (Not a directory)",
                                 _write("a_file", "")),
    "workdir is a file": Case(["--workdir={case}/a_file"], "--workdir {case}/a_file is a file",
                              _write("a_file", "")),
    "workdir of somebody else": Case(
        [], "--workdir {case}/run is not empty and holds no resnet_jax run (found "
        "metrics.jsonl); pass a new or empty --workdir", _write("run/metrics.jsonl", "{}\n")),
    "config.json of somebody else": Case(
        [], "{case}/run/config.json is not a resnet_jax config", _write("run/config.json", "{}")),
    # Resuming a run.
    "a finished run started again": Case([], "holds a finished run of 8 steps",
                                         on_finished_run=True, status=0),
    "a fixed key changed": Case(
        ["--config.decay_norm=False", "--config.learning_rate=0.1"],
        "holds a run with a different setup (decay_norm: True -> False; "
        "learning_rate: 0.05 -> 0.1)", on_finished_run=True),
    "fewer steps than done": Case(
        ["--config.num_train_steps=4"],
        "num_train_steps=4 is below step 8, where the run in {case}/run stands",
        on_finished_run=True),
    "garbage in config.json": Case(
        [], "{case}/run/config.json line 1 is not valid JSON", _write("run/config.json", "{oops"),
        on_finished_run=True),
    "garbage in metrics.jsonl": Case(
        [], "{case}/run/metrics.jsonl line 1 is not a metrics row", _bad_metrics_line,
        on_finished_run=True),
    "every checkpoint damaged": Case(
        ["--config.num_train_steps=12"], "no checkpoint under {case}/run/checkpoints can be read "
        "(step 8: ", _damage_all, on_finished_run=True),
    "checkpoints without config.json": Case(
        ["--config.num_train_steps=12"], "{case}/run holds checkpoints but no config.json",
        _drop_config, on_finished_run=True),
    "a checkpoint of another structure": Case(  # config.json edited to match the new setup
        ["--config.num_train_steps=12", "--config.model=resnet32"],
        "checkpoint 8 under {case}/run/checkpoints holds a state of another structure "
        "(96 arrays differ, e.g. params.layer1_3.bn1.bias: absent saved, (16,) now)",
        _claim_resnet32, on_finished_run=True),
}


def run_case(case: Case, case_dir: Path, finished_run: Path) -> tuple:
    case_dir.mkdir()
    if case.on_finished_run:
        shutil.copytree(finished_run, case_dir / "run")
    case.prepare(case_dir)
    flags = [f.format(case=case_dir) for f in case.flags]
    if not any(f.startswith("--workdir") for f in flags):
        flags.append(f"--workdir={case_dir / 'run'}")
    before = snapshot(case_dir)
    config = [] if any(f.startswith("--config=") for f in flags) else [
        "--config=configs/smoke.py", *overrides_as_flags(RUN_CONFIG)]
    if any(f.startswith("--config.dataset=") for f in flags):  # synthetic sizes would be refused
        config = [f for f in config if not f.startswith("--config.synthetic_examples=")]
    result = run_train_in_process([*config, *flags])
    return result, before, snapshot(case_dir)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train_and_evaluate(RUN_CONFIG, workdir)
    return workdir


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, finished_run):
    """Every case's (result, before, after)."""
    root = tmp_path_factory.mktemp("cases")
    return {name: (run_case(case, root / f"case{i}", finished_run), root / f"case{i}")
            for i, (name, case) in enumerate(CASES.items())}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_changes_nothing(outcomes, name):
    case = CASES[name]
    (result, before, after), case_dir = outcomes[name]
    output = result.stderr if case.status else result.stdout
    assert result.returncode == case.status, result.stderr[-3000:]
    assert case.message.format(case=case_dir) in output, output[-3000:]
    if case.status:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-3000:]
        assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert after == before, "the case's files changed"


def test_a_config_file_without_get_config_is_named(tmp_path):
    """In a process of its own: ml_collections keeps the config module of an earlier load in
    the same process under the same name."""
    (tmp_path / "plain.py").write_text("x = 1\n")
    result = subprocess.run([sys.executable, "train.py", f"--config={tmp_path / 'plain.py'}",
                             f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert (result.returncode, result.stderr) == (1, f"error: config file {tmp_path / 'plain.py'} "
                                                  "defines no get_config(); define one that "
                                                  "returns an ml_collections.ConfigDict\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.py"]


def test_free_keys_take_effect_on_resume(tmp_path, finished_run):
    """log_grad_norms turned on and num_train_steps raised: the run goes on, logs the norms
    from then on, and config.json says so."""
    workdir = shutil.copytree(finished_run, tmp_path / "run")
    result = run_train_in_process(["--config=configs/smoke.py", f"--workdir={workdir}",
                                   *overrides_as_flags(tiny_config(**{
                                       **RUN_CONFIG, "num_train_steps": 12,
                                       "log_grad_norms": True}))])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = metric_rows(workdir)
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert "grad_norm/stage1" in rows[2] and "grad_norm/stage1" not in rows[1]
    saved = (workdir / "config.json").read_text()
    assert '"log_grad_norms": true' in saved and '"num_train_steps": 12' in saved


def test_a_metrics_line_cut_by_a_kill_is_dropped_and_logged_again(tmp_path, finished_run):
    workdir = shutil.copytree(finished_run, tmp_path / "run")
    with (workdir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 12, "train_lo')  # an append cut short: no newline
    result = run_train_in_process([f"--workdir={workdir}", "--config.num_train_steps=12"])
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.replace("\r", "\n").splitlines()
              if line.startswith("warning: the last line of")]  # a line of its own, bar or not
    assert len(warned) == 1 and "was cut short" in warned[0], result.stderr[-2000:]
    assert [r["step"] for r in metric_rows(workdir)] == [4, 8, 12]


def test_a_finished_run_without_its_summary_gets_it_back_from_the_metrics(tmp_path,
                                                                         finished_run):
    workdir = shutil.copytree(finished_run, tmp_path / "run")
    (workdir / "summary.json").unlink()
    result = run_train_in_process([f"--workdir={workdir}"])  # its recorded config
    assert result.returncode == 0, result.stderr[-2000:]
    assert "summary.json is missing or unreadable; rebuilt it from metrics.jsonl" in result.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    rates = [r["images_per_sec"] for r in metric_rows(workdir, drop=())]
    assert summary["median_images_per_sec"] == pytest.approx(np.median(rates))
    segments = json.loads((workdir / "segments.json").read_text())
    assert summary["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in segments))
    assert summary["steps"] == 8 and summary["wall_seconds"] > 0


def test_a_finished_run_says_how_it_could_train_longer(finished_run, capsys):
    from ml_collections import ConfigDict

    from resnet_jax.train.report import report_finished

    report_finished(finished_run, RUN_CONFIG)
    assert "to train longer, raise --config.num_train_steps" in capsys.readouterr().out
    cosine = ConfigDict({**RUN_CONFIG.to_dict(), "schedule": "cosine"})
    report_finished(finished_run, cosine)  # its schedule fixes num_train_steps
    assert ("to train longer, start a new run: its cosine schedule is drawn over 8 steps, "
            "which fixes them") in capsys.readouterr().out


def test_raw_on_a_run_without_a_moving_average_is_refused(finished_run, capsys):
    from resnet_jax import evaluate, predict

    assert evaluate.main(["--workdir", str(finished_run), "--raw"]) == 1
    assert predict.main(["x.png", "--weights", str(finished_run), "--raw"]) == 1
    for line in capsys.readouterr().err.strip().splitlines():
        assert line == (f"error: --raw picks a run's trained weights over the moving average "
                        f"it keeps; {finished_run} keeps none (ema_decay=0): leave out --raw")


def lock_holder(workdir: Path) -> str:
    path = workdir / ".lock"
    return path.read_text() if path.exists() else ""


def wait_for(condition, process, timeout=120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None and time.time() < deadline, "the run ended first"
        time.sleep(0.01)


def test_a_busy_workdir_refuses_a_second_train_py_and_evaluate_names_the_step_it_read(
        tmp_path, capsys):
    from resnet_jax import evaluate

    workdir = tmp_path / "run"
    config = tiny_config(num_train_steps=400, checkpoint_every_steps=100, eval_every_steps=400)
    first = run_train_py(workdir, config, wait=False)
    wait_for(lambda: (workdir / "checkpoints" / "100").exists(), first)  # training
    assert f"process {first.pid} on" in lock_holder(workdir)
    second = run_train_in_process(["--config=configs/smoke.py", f"--workdir={workdir}",
                                   *overrides_as_flags(config)])
    capsys.readouterr()
    status = evaluate.main(["--workdir", str(workdir), "--json"])
    evaluated = capsys.readouterr()
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert second.returncode == 1
    assert f"{workdir} is in use by another train.py (process {first.pid} on" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert first.returncode == 0  # the first run was not disturbed, and stopped cleanly
    assert not (workdir / ".lock").exists()
    assert status == 0, evaluated.err[-2000:]
    result = json.loads(evaluated.out)
    assert result["weights"] == f"{workdir}, checkpoint of step {result['step']}"
    assert f"warning: {workdir} is still training (process {first.pid} on" in evaluated.err
    assert f"its latest checkpoint, step {result['step']} of 400, is used" in evaluated.err


@pytest.mark.parametrize("moment", ["importing", "loading data"])
def test_a_stop_signal_before_training_leaves_nothing_behind(tmp_path, moment):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split, count in (("train", 600), ("test", 50)):  # long enough to load to be caught
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    workdir = tmp_path / "new" / "run"
    # The data's own size: a late signal still lands before training, while compiling.
    config = tiny_config(dataset=f"folder:{root}", num_classes=2, image_size=32)
    process = run_train_py(workdir, config, wait=False)
    if moment == "importing":
        time.sleep(0.5)
        stop = signal.SIGINT
    else:  # the lock is taken just before the data is read
        wait_for(lambda: (workdir / ".lock").exists(), process)
        stop = signal.SIGTERM
    assert process.poll() is None
    process.send_signal(stop)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, output[-2000:]
    assert output.strip().splitlines()[-1].startswith(f"error: stopped by {stop.name}")
    assert "nothing was written" in output and "Traceback" not in output
    assert not (tmp_path / "new").exists()



def test_a_shortened_recipe_warns_of_its_boundaries_and_a_warmup_takes_effect(tmp_path):
    """The smoke config's boundary (step 30) lies beyond a run cut to 8 steps: it goes on
    with one warning line; a warm-up given under its piecewise schedule ramps the rate."""
    result = run_train_in_process([
        "--config=configs/smoke.py", f"--workdir={tmp_path / 'run'}",
        "--config.num_train_steps=8", "--config.warmup_steps=4", "--config.log_every_steps=1",
        "--config.eval_every_steps=8", "--config.checkpoint_every_steps=8",
        "--config.image_size=8", "--config.synthetic_examples=(128,64)"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("mfu: no peak TFLOP/s known for cpu (float32); --config.peak_tflops=N (per device) "
            "gives one") in result.stdout  # said once: rows carry tflops, and no mfu
    assert "mfu" not in metric_rows(tmp_path / "run")[-1]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: the run ends at num_train_steps=8, before lr_boundaries 30 of "
                        "the config: the learning rate is not scaled there (a shortened "
                        "recipe)"]
    rates = [row["learning_rate"] for row in metric_rows(tmp_path / "run")]
    np.testing.assert_allclose(rates, [0.0, 0.0125, 0.025, 0.0375, 0.05, 0.05, 0.05, 0.05],
                               rtol=1e-6)


@pytest.mark.parametrize("script,flags,message", [
    ("throughput", ["--quick", "--models", "resnet999", "--out", "{case}/out.json"],
     "error: --models resnet999: not among this run's models (resnet20; --quick has resnet20 "
     "only) (see throughput.py --help)"),
    ("input_pipeline", ["--folder", "{case}/a_file", "--out", "{case}/out.json"],
     "error: --folder {case}/a_file is a file; pass a new or empty directory"),
    ("throughput", ["--quick", "--out", "{case}/missing/out.json"],
     "error: --out {case}/missing/out.json: the directory {case}/missing does not exist; create "
     "it first (see throughput.py --help)"),
    ("throughput", ["--quick", "--image-size", "2", "--out", "{case}/out.json"],
     "error: image_size=2 is below resnet20's total stride of 4: its last stage would see less "
     "than one pixel; set --image-size 4 or more (see throughput.py --help)"),
    ("degradation", ["--workdir", "{case}/runs", "--depths", "20"],
     "error: --depths needs two depths or more to compare, got [20] (see degradation.py --help)"),
    ("degradation", ["--workdir", "{case}/runs", "--set", "residual=True"],
     "error: --set residual: each depth trains as a plain and as a residual net; leave it out"),
    ("degradation", ["--workdir", "{case}/runs", "--dataset", "synthetic", "--set",
                     "steps_per_call=5"],
     "error: plain-20: steps_per_call=5 has no effect on a CPU, which runs one train step per "
     "compiled call (XLA:CPU runs gradient convolutions 10-30x slower inside a compiled loop); "
     "leave out --config.steps_per_call"),
    ("throughput", ["--quick", "--steps-per-call", "50", "--out", "{case}/out.json"],
     "error: --steps-per-call 50 has no effect on a CPU, which runs one train step per compiled "
     "call (XLA:CPU runs gradient convolutions 10-30x slower inside a compiled loop); leave it "
     "out (see throughput.py --help)"),
    ("input_pipeline", ["--folder", "{case}/jpegs", "--images", "20", "--batch", "64"],
     "error: need --workers >= 0, --images >= 10, --batch from 1 to --images, --seconds > 0 and "
     "finite (see input_pipeline.py --help)"),
    ("torch_train", ["--config", "configs/smoke.py", "--workdir", "{case}/twin",
                     "--config.log_grad_norms=True"],
     "error: log_grad_norms=True has no effect in the PyTorch twin, which logs no gradient "
     "norms; leave out --config.log_grad_norms"),
    ("time_to_accuracy", ["--config", "configs/smoke.py", "--workdir", "{case}/tta",
                          "--config.seed=3"],
     "error: --config.seed: the seeds come from --seeds (e.g. --seeds 3) (see "
     "time_to_accuracy.py --help)"),
    ("time_to_accuracy", ["--config", "configs/smoke.py", "--workdir", "{case}/tta", "--seeds",
                          "0", "0"],
     "error: --seeds 0 0 repeats a seed; give each once (see time_to_accuracy.py --help)"),
])
def test_the_helper_scripts_refuse_in_one_line_and_leave_nothing(tmp_path, script, flags,
                                                                  message, monkeypatch, capsys):
    """Each script's main in this process, as `python -m benchmarks.SCRIPT` would run it (the
    PyTorch twin, whose absl flags are global, in a process of its own)."""
    (tmp_path / "a_file").write_text("mine")
    before = snapshot(tmp_path)
    argv = [f.format(case=tmp_path) for f in flags]
    if script == "torch_train":
        result = subprocess.run([sys.executable, "-m", "torch_side.train", *argv],
                                cwd=REPO, capture_output=True, text=True, timeout=300)
        status, said = result.returncode, result.stderr
    else:
        main = importlib.import_module(f"benchmarks.{script}").main
        monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
        with pytest.raises(SystemExit) as ended:
            main(argv) if inspect.signature(main).parameters else main()
        code, said = ended.value.code, capsys.readouterr().err
        status, said = (1, code) if isinstance(code, str) else (code, said)
    assert status in (1, 2)
    assert said.strip() == message.format(case=tmp_path)
    assert snapshot(tmp_path) == before


def test_a_jpeg_folder_cut_short_is_generated_again(tmp_path):
    from benchmarks import input_pipeline

    folder = tmp_path / "jpegs"
    folder.mkdir()
    (folder / input_pipeline.STARTED).write_text("20 images\n")  # a fill interrupted early
    (folder / "train").mkdir()
    (folder / "train" / "stray.jpg").write_bytes(b"half")
    input_pipeline.generate(folder, 20)
    assert (folder / input_pipeline.DONE).exists() and not (folder / "train" / "stray.jpg").exists()
    assert len(list((folder / "train").rglob("*.jpg"))) == 20


def test_compare_refuses_pairs_that_are_not_a_jax_and_a_pytorch_run_of_one_recipe(
        tmp_path, finished_run):
    from benchmarks.compare import run_problem

    jax_run, torch_run = finished_run, tmp_path / "torch"  # the twin writes no config.json
    torch_run.mkdir()
    shutil.copy(jax_run / "summary.json", torch_run / "summary.json")
    assert run_problem(jax_run, torch_run) is None
    assert run_problem(jax_run, jax_run) == (f"both runs are {jax_run}: pass a JAX run and a "
                                             "PyTorch run")
    assert run_problem(torch_run, jax_run) == (f"{torch_run} is not a train.py run (it has no "
                                               "config.json) (the order is JAX, then PyTorch)")
    summary = json.loads((torch_run / "summary.json").read_text())
    (torch_run / "summary.json").write_text(json.dumps({**summary, "model": "resnet32"}))
    assert run_problem(jax_run, torch_run) == ("the runs follow different recipes (model "
                                               "'resnet20' and 'resnet32')")
    (torch_run / "summary.json").write_text(json.dumps(summary))
    twin_config = {**json.loads((jax_run / "config.json").read_text()), "learning_rate": 0.3}
    (torch_run / "twin_config.json").write_text(json.dumps(twin_config))
    assert run_problem(jax_run, torch_run) == ("the runs follow different recipes "
                                               "(learning_rate: 0.05 -> 0.3)")
    unfinished = shutil.copytree(jax_run, tmp_path / "unfinished")
    config = json.loads((unfinished / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps({**config, "num_train_steps": 100}))
    assert run_problem(unfinished, torch_run) == (f"{unfinished} is unfinished (step 8 of 100); "
                                                  "finish it with its train.py command first")


def test_a_finished_run_started_again_writes_a_lost_dataset_description_back(
        tmp_path, finished_run, capsys):
    workdir = shutil.copytree(finished_run, tmp_path / "run")
    saved = (workdir / "dataset.json").read_text()
    (workdir / "dataset.json").unlink()
    train_and_evaluate(RUN_CONFIG, workdir)
    assert (f"{workdir / 'dataset.json'} is missing; wrote the latest checkpoint's copy in its "
            "place") in capsys.readouterr().err
    assert json.loads((workdir / "dataset.json").read_text()) == json.loads(saved)

    (workdir / "dataset.json").write_text("{not json")  # damaged: set aside, never replaced
    train_and_evaluate(RUN_CONFIG, workdir)
    assert (f"{workdir / 'dataset.json'} cannot be read as JSON; wrote the latest checkpoint's "
            "copy in its place (the unreadable file is kept as dataset.json.unreadable)"
            ) in capsys.readouterr().err
    assert json.loads((workdir / "dataset.json").read_text()) == json.loads(saved)
    assert (workdir / "dataset.json.unreadable").read_text() == "{not json"


def test_ctrl_c_in_predict_is_one_line(tmp_path, finished_run):
    image = tmp_path / "image.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    process = subprocess.Popen([sys.executable, "-m", "resnet_jax.predict", *[str(image)] * 400,
                                "--weights", str(finished_run), "--batch-size", "1"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith(f"weights: {finished_run}")  # predicting now
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT
    assert err.strip().splitlines()[-1] == "error: stopped by SIGINT; nothing was written"
    assert "Traceback" not in err


def test_a_close_name_is_the_one_fewest_edits_away():
    from resnet_jax import hints
    from resnet_jax.models import list_models

    assert hints.closest("resnet21", list_models()) == "resnet20"  # difflib alone: resnet32
    assert hints.closest("resnet2O", list_models()) == "resnet20"
    assert hints.closest("batch_sise", ["eval_batch_size", "batch_size"]) == "batch_size"
    assert hints.closest("zzz", list_models()) is None
