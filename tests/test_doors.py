"""Every door keeps the same rules: a checkpoint, a folder, a weights file or an argument is
read through one layer by train.py, evaluate, predict, init_from and the library alike, so
the same damage gets the same answer everywhere, in the words of the door it came in by,
and nothing on disk changes."""

import importlib
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from flax.training import train_state
from helpers import REPO, run_train_in_process, tiny_config
from ml_collections import ConfigDict
from PIL import Image

from resnet_jax import create_model, evaluate, hints, predict, pretrained, restore
from resnet_jax.data import folders
from resnet_jax.data.pipelines import datasets, sources
from resnet_jax.errors import (
    ArgumentError,
    CheckpointError,
    ConfigError,
    DataError,
    ResNetError,
    ResNetWarning,
    WeightsError,
)
from resnet_jax.models import nnx as resnet_nnx
from resnet_jax.models.torch_compat import to_torchvision
from resnet_jax.train.config_schema import validate
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.weights import Weights, initial_variables, load_weights


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def damage(step_dir: Path) -> None:
    for path in step_dir.rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def finished_run(tmp_path_factory, steps: int, every: int, ema_decay: float) -> Path:
    workdir = tmp_path_factory.mktemp("run") / "run"
    train_and_evaluate(tiny_config(num_train_steps=steps, eval_every_steps=steps,
                                   checkpoint_every_steps=every, ema_decay=ema_decay), workdir)
    return workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 8-step run keeping a moving average of its weights; checkpoints 4 and 8."""
    return finished_run(tmp_path_factory, steps=8, every=4, ema_decay=0.5)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> Path:
    """A finished 2-step run keeping no moving average."""
    return finished_run(tmp_path_factory, steps=2, every=2, ema_decay=0.0)


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


# Checkpoints: one reader for restore, evaluate, predict and init_from.

@pytest.fixture
def damaged(run, tmp_path) -> Path:
    """A copy of the run whose newest checkpoint (8) is cut short."""
    copy = shutil.copytree(run, tmp_path / "damaged")
    damage(copy / "checkpoints" / "8")
    return copy


def test_a_damaged_newest_checkpoint_is_passed_over_at_every_door_and_nothing_moves(
        run, damaged, image, capsys):
    before = snapshot(damaged)
    said = (f"warning: the newest checkpoint(s) under {damaged / 'checkpoints'} cannot be read "
            "(step 8: ")
    with pytest.warns(ResNetWarning, match=r"cannot be read \(step 8: .*read step 4, the newest "
                      r"readable one \(nothing was moved\)"):
        _, variables = restore(damaged)
    _, fourth = restore(run, step=4)
    jax.tree.map(np.testing.assert_array_equal, variables, fourth)

    capsys.readouterr()
    assert evaluate.main(["--workdir", str(damaged), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 4 and said in err
    assert predict.main([str(image), "--weights", str(damaged)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"weights: {damaged}, checkpoint of step 4, the moving average of its "
                          "weights (--raw: the trained ones)") and said in err
    config = tiny_config(init_from=str(damaged))
    with pytest.warns(ResNetWarning, match="read step 4"):
        initial_variables(config)
    assert (f"starting from {damaged}, checkpoint of step 4, the moving average of its weights "
            "(--config.init_from_raw=True: the trained ones)") in capsys.readouterr().err
    assert snapshot(damaged) == before


def test_a_step_asked_for_that_is_damaged_or_missing_is_refused_listing_the_readable_ones(
        damaged, image, capsys):
    before = snapshot(damaged)
    unreadable = (f"the checkpoint of step 8 under {damaged / 'checkpoints'} cannot be read "
                  "(JSONDecodeError: ")
    with pytest.raises(CheckpointError, match=r"cannot be read .*; readable steps: \[4\]; pass "
                       r"one of them \(step=4\), or leave out step for the newest readable one"):
        restore(damaged, step=8)
    assert evaluate.main(["--workdir", str(damaged), "--step", "8"]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith(unreadable) and line.endswith(
        "; readable steps: [4]; pass one of them (--step 4), or leave out --step for the newest "
        "readable one")
    assert predict.main([str(image), "--weights", str(damaged), "--step", "6"]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"there is no checkpoint of step 6 under {damaged / 'checkpoints'}; readable steps: [4]; "
        "pass one of them (--step 4), or leave out --step for the newest readable one")
    assert snapshot(damaged) == before
    damage(damaged / "checkpoints" / "4")
    with pytest.raises(CheckpointError, match=r"no checkpoint under .* can be read \(step 8: .*; "
                       r"step 4: .*\); nothing was changed"):
        restore(damaged)
    assert sorted(p.name for p in damaged.iterdir()) == sorted(run_files(before, damaged))


def run_files(files: dict[str, bytes | None], root: Path) -> set[str]:
    """The names directly under ``root`` among a snapshot's paths."""
    return {Path(path).relative_to(root).parts[0] for path in files}


def test_arrays_cut_to_a_few_bytes_give_one_line_to_the_end_of_the_process(run, tmp_path):
    """Orbax's reads of the other arrays outlive the failed one, and would print pages of
    tracebacks, some as the process ends: a process of its own shows the whole output."""
    cut = shutil.copytree(run, tmp_path / "cut")
    for data in cut.glob("checkpoints/*/default/ocdbt.process_0/d/*"):
        data.write_bytes(data.read_bytes()[:10])
    before = snapshot(cut)
    result = subprocess.run([sys.executable, "-m", "resnet_jax.evaluate", "--workdir", str(cut)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and one_line(result.stderr).startswith(
        f"no checkpoint under {cut / 'checkpoints'} can be read (step 8: "), result.stderr[-3000:]
    assert snapshot(cut) == before


def test_a_run_whose_records_were_edited_is_refused_naming_the_file(run, tmp_path, image,
                                                                   capsys):
    other = shutil.copytree(run, tmp_path / "model")
    saved = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**saved, "model": "resnet32"}))
    with pytest.raises(CheckpointError, match=r"the checkpoint of step 8 under .* does not fit "
                       r"the resnet32 its config.json names \(60 arrays differ, .*\): "
                       "config.json was edited or replaced; put back the run's own"):
        restore(other)
    assert predict.main([str(image), "--weights", str(other)]) == 1
    assert "does not fit the resnet32 its config.json names" in one_line(capsys.readouterr().err)
    (other / "config.json").write_text(json.dumps({**saved, "ema_decay": 0.0}))
    with pytest.raises(CheckpointError, match="^config.json names ema_decay=0.0, but the "
                       "checkpoint of step 8 keeps a moving average of the weights: .* was "
                       "edited or replaced; put back the run's own$"):
        restore(other)
    names = shutil.copytree(run, tmp_path / "names")
    described = json.loads((names / "dataset.json").read_text())
    (names / "dataset.json").write_text(json.dumps({**described, "class_names": ["a", "b"]}))
    for door in (["--workdir", str(names)],
                 ["--weights", str(names), "--dataset", f"folder:{tmp_path}"]):
        assert evaluate.main(door) == 1
        assert one_line(capsys.readouterr().err) == (
            f"{names / 'dataset.json'} differs from the copy the run's checkpoints keep (in "
            "class_names): it was edited or replaced; put back the run's own (or delete it: the "
            "copy is read)")
    (names / "dataset.json").write_text("{not json")
    assert predict.main([str(image), "--weights", str(names)]) == 0
    assert (f"warning: {names / 'dataset.json'} cannot be read as JSON; read the copy the run's "
            "checkpoints keep") in capsys.readouterr().err


def test_a_run_whose_checkpoints_were_removed_is_told_so_at_the_reading_doors(run, tmp_path,
                                                                              capsys):
    emptied = shutil.copytree(run, tmp_path / "emptied")
    shutil.rmtree(emptied / "checkpoints")
    removed = (f"{emptied} holds a run that saved checkpoints (its summary.json ends a segment "
               "at step 8), but checkpoints/ holds none: they were removed; put them back from "
               "a copy of the run")
    assert evaluate.main(["--workdir", str(emptied)]) == 1
    assert one_line(capsys.readouterr().err) == removed
    with pytest.raises(CheckpointError, match=re.escape(removed)):
        restore(emptied)


def test_a_finished_run_started_again_says_what_it_lost_and_a_quoted_home_is_home(
        run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    finished = shutil.copytree(run, tmp_path / "finished")
    damage(finished / "checkpoints" / "8")
    metrics = finished / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-20])
    before = snapshot(finished)
    result = run_train_in_process(["--workdir=~/finished"])
    assert result.returncode == 0 and f"{finished} holds a finished run of 8 steps" in (
        result.stdout)
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warned[0] == (f"warning: the last line of {metrics} was cut short (an interrupted "
                         "write): that row is lost, and the file is left as it is")
    assert warned[1].startswith(f"warning: the newest checkpoint(s) under {finished}/checkpoints "
                                "cannot be read (step 8: ")
    assert snapshot(finished) == before and not Path("~").exists()
    assert evaluate.main(["--workdir", "~/finished", "--step", "4"]) == 0
    assert "checkpoint of step 4" in capsys.readouterr().out


def test_a_run_that_lost_its_checkpoints_or_its_config_is_not_trained_afresh(run, tmp_path):
    lost = shutil.copytree(run, tmp_path / "lost")
    shutil.rmtree(lost / "checkpoints")
    before = snapshot(lost)
    result = run_train_in_process([f"--workdir={lost}", "--config.num_train_steps=10"])
    assert result.returncode == 1 and one_line(result.stderr) == (
        f"{lost} holds a run (its config.json) but no checkpoints/ folder, which every start of "
        "a run makes: it was removed, and the run cannot resume; put checkpoints/ back, or pass "
        "a new --workdir")
    assert snapshot(lost) == before
    nameless = shutil.copytree(run, tmp_path / "nameless")
    (nameless / "config.json").unlink()
    result = run_train_in_process([f"--workdir={nameless}"])
    assert one_line(result.stderr) == (f"--workdir {nameless} holds checkpoints but no "
                                       "config.json, which a run continues from; put it back "
                                       "from a copy of the run")
    emptied = shutil.copytree(run, tmp_path / "emptied")
    for step in (emptied / "checkpoints").iterdir():
        shutil.rmtree(step)
    result = run_train_in_process([f"--workdir={emptied}"])
    assert result.returncode == 1 and one_line(result.stderr) == (
        f"{emptied} holds a run that saved checkpoints (its summary.json ends a segment at step "
        "8), but checkpoints/ holds none: they were removed, and the run cannot resume; put them "
        "back, or pass a new --workdir")
    result = run_train_in_process([f"--workdir={emptied / 'config.json'}"])
    assert one_line(result.stderr) == (f"--workdir {emptied / 'config.json'} is a file; pass "
                                       "a directory")
    (emptied / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="config.json is not a resnet_jax config \\(it lacks "
                       "model, dataset, batch_size, seed\\): it is not the config of a training "
                       "run's work directory"):
        restore(emptied)


@pytest.mark.parametrize("call,message", [
    (lambda run: restore(run, step="4"), "step '4' is not a checkpoint's step, a whole number "
                                         ">= 0 (None: the newest readable checkpoint); pass e.g. "
                                         "step=40"),
    (lambda run: restore(run, step=-1), "step -1 (int) is not a checkpoint's step"),
    (lambda run: restore(run, step=True), "step True (bool) is not a checkpoint's step"),
    (lambda run: restore(run, raw="yes"), "raw 'yes' is not True or False"),
    (lambda run: restore(42), "run_dir 42 (int) is not a path (a str naming a file or folder, "
                              "or a pathlib.Path)"),
    (lambda run: restore("/nonexistent/run"), "/nonexistent/run does not exist: pass a training "
                                              "run's work directory (the folder train.py's "
                                              "--workdir names)"),
    (lambda run: restore(run / "checkpoints"), "holds no config.json: it is not "
                                               "a training run's work directory"),
    (lambda run: load_weights(None, str(run), step=2.5), "step 2.5 (float) is not a checkpoint's"),
    (lambda run: load_weights("resnet20", str(run), crop="8"), "crop '8' is not an image side "
                                                               "of 1 to 4096 pixels"),
    (lambda run: load_weights("resnet20", str(run), resize=5000), "resize 5000 (int) is not an "
     "image side of 1 to 4096 pixels (None: the weights' own); pass e.g. resize=4096"),
    (lambda run: load_weights("resnet50", None), "weights None is not a path"),
    (lambda run: load_weights("resnet18", "IMAGENET1K_V1", step=0), "step=0 picks among a "
     "training run's checkpoints; IMAGENET1K_V1 is not a run's work directory: leave out step"),
    (lambda run: load_weights(None, "IMAGENET1K_V1"), "IMAGENET1K_V1 names weights of "
                                                      "resnet18, resnet34, resnet50, "),
    (lambda run: load_weights(None, str(run / "checkpoints" / "8")), "checkpoints/8 is a "
                                                                     "checkpoint of the run in"),
    (lambda run: restore(run / "config.json"), "config.json is a file: pass a training run's "
                                               "work directory"),
    (lambda run: load_weights("resnt50", "IMAGENET1K_V1"), "model 'resnt50' is not a model "
                                                            "of this project (list_models()); "
                                                            "pass e.g. model='resnet50'"),
])
def test_the_librarys_arguments_are_checked_before_any_lookup(run, call, message):
    with pytest.raises(ResNetError) as refused:
        call(run)
    assert message in str(refused.value)


# Folders: one walker for in memory, streaming, evaluate, predict and the evidence command.

def linked_tree(root: Path) -> Path:
    """train/ and test/ with two classes of two images each, and in each split's cat folder
    a link back to itself, a link to one of dog's images and a second link to its own."""
    for split in ("train", "test"):
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (200 * label, 40 * i, 90)).save(
                    root / split / name / f"{i}.png")
        cat = root / split / "cat"
        (cat / "loop").symlink_to(cat, target_is_directory=True)
        (cat / "dog.png").symlink_to(root / split / "dog" / "0.png")
        (cat / "again.png").symlink_to(cat / "0.png")
    return root


def test_a_link_never_inflates_or_relabels_a_class_at_any_door(tmp_path, capsys):
    root = linked_tree(tmp_path / "images")
    config = tiny_config(dataset=f"folder:{root}", num_classes=2, batch_size=8)
    dataset = datasets.load_dataset(config)
    assert list(dataset.train.labels) == [0, 0, 1, 1] and list(dataset.test.labels) == [0, 0, 1, 1]
    err = capsys.readouterr().err
    assert (f"warning: under {root / 'train'}, 3 link(s) lead to what is counted elsewhere, and "
            "are passed over: ") in err
    for passed in (f"{root}/train/cat/again.png (the same file as {root}/train/cat/0.png)",
                   f"{root}/train/cat/dog.png -> {root}/train/dog/0.png (in class folder dog)",
                   f"{root}/train/cat/loop -> {root}/train/cat (a folder already walked"):
        assert passed in err
    streamed = sources.open_folder(root)
    assert list(streamed.train.labels) == [0, 0, 1, 1]
    assert sorted(streamed.eval.names) == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    names_only = Weights(None, {}, ["cat", "dog"], None, {}, "")
    files, labels = evaluate.folder_labels(root / "test", names_only)
    assert [f.name for f in files] == ["0.png", "1.png", "0.png", "1.png"]
    assert list(labels) == [0, 0, 1, 1]
    assert [p.relative_to(root) for p in predict.image_paths([root / "train" / "cat"])] == [
        Path("train/cat/0.png"), Path("train/cat/1.png"), Path("train/cat/dog.png")]


def test_a_link_that_leads_nowhere_is_named_and_one_split_through_a_link_refused(tmp_path):
    root = linked_tree(tmp_path / "images")
    (root / "train" / "cat" / "self.png").symlink_to(root / "train" / "cat" / "self.png")
    with pytest.raises(DataError) as refused:  # counted, as a broken image is: reading it fails
        datasets.load_dataset(tiny_config(dataset=f"folder:{root}", num_classes=2, batch_size=8))
    assert f"{root / 'train' / 'cat' / 'self.png'}" in str(refused.value)
    (root / "train" / "cat" / "self.png").unlink()
    shutil.rmtree(root / "test")
    (root / "test").symlink_to(root / "train", target_is_directory=True)
    result = run_train_in_process(["--config=configs/smoke.py", f"--workdir={tmp_path / 'run'}",
                                   f"--config.dataset=folder:{root}", "--config.num_classes=2",
                                   "--config.image_size=8"])
    assert result.returncode == 1 and one_line(result.stderr) == (
        f"train/ and test/ under {root} are the same folder (through a link): the run would be "
        "evaluated on its training images; give each split its own images")
    assert not (tmp_path / "run").exists()


def test_two_class_folders_that_are_one_folder_are_refused_naming_both(tmp_path):
    root = linked_tree(tmp_path / "images")
    (root / "train" / "kitten").symlink_to(root / "train" / "cat", target_is_directory=True)
    with pytest.raises(DataError, match="class folders cat and kitten under .* are the same "
                                        "folder .* one image cannot be two classes"):
        folders.image_files(root / "train", ["cat", "dog", "kitten"])


def test_a_tree_with_both_test_and_val_is_never_read_silently(tmp_path, capsys):
    root = linked_tree(tmp_path / "images")
    shutil.copytree(root / "test", root / "val", symlinks=True)
    both = (f"{root} holds class folders in both test/ and val/: which one evaluates the run "
            "would be a guess; move one of them out of the tree")
    result = run_train_in_process(["--config=configs/smoke.py", f"--workdir={tmp_path / 'run'}",
                                   f"--config.dataset=folder:{root}", "--config.num_classes=2",
                                   "--config.image_size=8"])
    assert result.returncode == 1 and one_line(result.stderr).startswith(both)
    assert not (tmp_path / "run").exists()
    from benchmarks import evidence

    with pytest.raises(SystemExit):
        evidence.main(["--plan", "--minutes", "9", "--data", f"folder:{root}"])
    assert one_line(capsys.readouterr().err).startswith(f"--data: {both}")
    with hints.door(hints.EVALUATE), pytest.raises(DataError, match=re.escape(
            "(or evaluate one split by its class folders: --weights RUN --dataset "
            f"folder:{root / 'test'})")):
        folders.folder_splits(root)
    shutil.rmtree(root / "val" / "cat")
    shutil.rmtree(root / "val" / "dog")  # an empty val/ beside test/: test/ evaluates
    assert folders.folder_splits(root)[1] == root / "test"


# Weight files and hub folders: one reader.

def resnet20_state_dict() -> dict[str, np.ndarray]:
    model = create_model("resnet20")
    return to_torchvision(model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))), "resnet20")


@pytest.fixture(scope="module")
def snapshot_dir(tmp_path_factory) -> Path:
    """A hub snapshot of a resnet20: model.safetensors and timm's config.json."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("hub") / "snapshot"
    folder.mkdir()
    save_file(resnet20_state_dict(), str(folder / "model.safetensors"))
    return folder


GOOD_CFG = {"input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bicubic"}
BAD_CONFIGS = [
    ({"pretrained_cfg": {**GOOD_CFG, "crop_pct": 0}}, "pretrained_cfg.crop_pct=0 must be a "
     "number in [0.1, 1], the crop's share of the resized side"),
    ({"pretrained_cfg": {**GOOD_CFG, "crop_pct": "0.9"}}, 'pretrained_cfg.crop_pct="0.9" must '
     "be a number in [0.1, 1], the crop's share of the resized side; write it as timm's "
     "config.json has it (a JSON number, not a string)"),
    ([1, 2, 3], "holds a JSON list, not timm's config"),
    ({"pretrained_cfg": {**GOOD_CFG, "mean": [0.5]}}, "pretrained_cfg.mean=[0.5] must be a list "
     "of three finite numbers"),
    ({"pretrained_cfg": {**GOOD_CFG, "std": [0, 0, 0]}}, "pretrained_cfg.std=[0, 0, 0] must lie "
     "in (0, 1] in every channel, on the 0..1 scale of the pixels"),
    ({"pretrained_cfg": {**GOOD_CFG, "std": [1e308, 1, 1]}}, "pretrained_cfg.std=[1e+308, 1, 1] "
     "must lie in (0, 1] in every channel"),
    ({"pretrained_cfg": {**GOOD_CFG, "input_size": [3, 100000, 100000]}}, "input_size=[3, 100000, "
     "100000] is above 4096 pixels a side, which no door takes"),
    ({"pretrained_cfg": {"crop_pct": 0.9}}, "lacks pretrained_cfg.input_size"),
    ({"pretrained_cfg": {**GOOD_CFG, "input_size": [3, 32, 48]}}, "pretrained_cfg.input_size="
     "[3, 32, 48] is not [3, size, size]: predict and evaluate take square RGB crops only"),
    ({"pretrained_cfg": {**GOOD_CFG, "interpolation": "lanczos"}}, 'interpolation="lanczos" is '
     "not supported: predict and evaluate resize with bilinear or bicubic only"),
    ({"architecture": 5, "pretrained_cfg": GOOD_CFG}, "architecture=5 is not a model name"),
    ({"architecture": "resnet20.a1", "pretrained_cfg": {**GOOD_CFG, "crop_mode": "squash"}},
     'crop_mode="squash" is not supported: predict and evaluate take the crop mode center only'),
]


@pytest.mark.parametrize("config,message", BAD_CONFIGS)
def test_every_field_of_a_timm_config_that_is_used_is_checked_at_every_door(
        snapshot_dir, tmp_path, image, capsys, config, message):
    folder = shutil.copytree(snapshot_dir, tmp_path / "snapshot")
    (folder / "config.json").write_text(json.dumps(config))
    for door in (lambda: load_weights("resnet20", str(folder)),
                 lambda: initial_variables(tiny_config(init_from=str(folder)))):
        with pytest.raises(WeightsError) as refused:
            door()
        assert str(refused.value).startswith(str(folder / "config.json"))
        assert message in str(refused.value)
    assert predict.main([str(image), "--weights", str(folder), "--model", "resnet20"]) == 1
    assert message in one_line(capsys.readouterr().err)


def write_pth(path: Path, how: str) -> Path:
    state = {k: torch.from_numpy(np.array(v)) for k, v in resnet20_state_dict().items()}
    if how == "a whole model":
        torch.save(torch.nn.Linear(2, 3), path)
        return path
    torch.save(state, path, _use_new_zipfile_serialization=how != "old format, truncated")
    if "truncated" in how:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("how,message", [
    ("zip, truncated", "is truncated or damaged (cannot be read to its end); download or copy "
                       "it again"),
    ("old format, truncated", "is truncated or damaged"),
    ("a whole model", "holds pickled Python objects besides tensors (torch.nn.modules."
                      "linear.Linear: a torch.save of a whole model?), which are never run here"),
])
def test_an_unreadable_pth_is_called_unreadable_or_truncated(tmp_path, image, capsys, how,
                                                             message):
    path = write_pth(tmp_path / "weights.pth", how)
    assert predict.main([str(image), "--weights", str(path), "--model", "resnet20"]) == 1
    assert one_line(capsys.readouterr().err).startswith(f"{path} {message}")
    with pytest.raises(WeightsError) as refused:
        initial_variables(tiny_config(init_from=str(path)))
    assert str(refused.value).startswith(f"{path} {message}")


def test_folders_that_are_not_weights_say_what_they_hold(snapshot_dir, tmp_path):
    hub = shutil.copytree(snapshot_dir, tmp_path / "hub")
    (hub / "config.json").write_text(json.dumps({"architecture": "resnet20",
                                                 "pretrained_cfg": GOOD_CFG}))
    (hub / "model.safetensors").rename(hub / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=f"{hub} holds timm's config.json but no "
                                           "model.safetensors"):
        load_weights(None, str(hub))
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(WeightsError, match=f"{stray} is neither a training run's work directory "
                                           r"\(config.json, checkpoints/\) nor a hub snapshot"):
        load_weights("resnet20", str(stray))
    cut = shutil.copytree(snapshot_dir, tmp_path / "cut")
    file = cut / "model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="cannot be read as a safetensors file: it is truncated "
                                           "or damaged"):
        load_weights("resnet20", str(cut))


def test_weights_files_are_read_by_what_they_hold_not_by_their_names(tmp_path, image, capsys):
    """The published CIFAR ResNets' layout (a dict around a DataParallel state dict whose
    classifier is named linear, in torch.save's old format) reads as the same weights;
    safetensors and torch.save files are told apart by their bytes."""
    from safetensors.numpy import save_file

    state = resnet20_state_dict()
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "plain.pth")
    published = {"best_prec1": 91.7, "state_dict": {
        f"module.{k.replace('fc.', 'linear.')}": torch.from_numpy(v) for k, v in state.items()}}
    torch.save(published, tmp_path / "resnet20-0123.th", _use_new_zipfile_serialization=False)
    save_file(state, str(tmp_path / "safetensors.pth"))
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "torch.safetensors")
    reference = load_weights("resnet20", str(tmp_path / "plain.pth")).variables
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    transform = load_weights("resnet20", str(tmp_path / "plain.pth"), resize=8,
                             crop=8).preprocessing
    np.testing.assert_array_equal(transform(tmp_path / "image.png"),
                                  transform((tmp_path / "image.png").read_bytes()))
    their_transform = load_weights("resnet20", str(tmp_path / "resnet20-0123.th")).preprocessing
    assert (their_transform.resize, their_transform.crop) == (32, 32)  # no resize on CIFAR
    assert their_transform.describe() == (
        "shorter side resized to 32 (bilinear), centre crop 32, ImageNet's mean and std (the "
        "published CIFAR ResNets' "
        "(akamaster/pytorch_resnet_cifar10): resnet20-0123.th is in their layout, its classifier "
        "named linear)")
    for name in ("resnet20-0123.th", "safetensors.pth", "torch.safetensors"):
        loaded = load_weights("resnet20", str(tmp_path / name)).variables
        jax.tree.map(np.testing.assert_array_equal, loaded, reference)
    assert predict.main([str(image), "--weights", str(tmp_path / "resnet20-0123.th")]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"{tmp_path / 'resnet20-0123.th'} does not say which model it is for; its layers fit a "
        "resnet20: pass --model resnet20")
    assert predict.main([str(image), "--weights", str(tmp_path / "plain.pth"),
                         "--model", "resnet20", "--crop", "8", "--resize", "8"]) == 0
    assert ("images: shorter side resized to 8 (bilinear), centre crop 8, ImageNet's mean and "
            "std (sizes as given; the "
            "rest torchvision V1's: plain.pth carries none)") in capsys.readouterr().err
    broken = {**state, "conv1.weight": np.full_like(state["conv1.weight"], np.nan)}
    torch.save({k: torch.from_numpy(v) for k, v in broken.items()}, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"nan.pth: params/conv1/kernel holds NaN or infinite "
                                           "values: the file is damaged"):
        load_weights("resnet20", str(tmp_path / "nan.pth"))


def test_a_file_that_holds_no_weights_or_impossible_ones_is_refused_naming_it(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("<html>Not Found</html>")
    with pytest.raises(WeightsError, match=re.escape(
            f"{text} is not a file torch.save wrote, nor a safetensors file (it starts "
            "b'<htm'); pass a .pth state dict")):
        load_weights("resnet20", str(text))
    text.write_bytes(b"")
    with pytest.raises(WeightsError, match=f"^{text} is empty; download or copy it again$"):
        initial_variables(tiny_config(init_from=str(text)))
    state = resnet20_state_dict()
    negative = {**state, "bn1.running_var": -np.ones_like(state["bn1.running_var"])}
    torch.save({k: torch.from_numpy(v) for k, v in negative.items()}, tmp_path / "var.pth")
    with pytest.raises(WeightsError, match="var.pth: batch_stats/bn1/var holds negative running "
                                           "variances, which no BatchNorm computes"):
        load_weights("resnet20", str(tmp_path / "var.pth"))
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v * 100).astype(np.int32) for k, v in state.items()},
              str(tmp_path / "int.safetensors"))
    with pytest.raises(WeightsError, match=r"int.safetensors: bn1.bias holds int32 values, "
                                           "not floating point numbers"):
        load_weights("resnet20", str(tmp_path / "int.safetensors"))


def test_a_pth_beside_timms_config_reads_it_and_a_config_link_to_nowhere_is_named(tmp_path):
    state = resnet20_state_dict()
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "model.pth")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet20",
                                                      "pretrained_cfg": GOOD_CFG}))
    loaded = load_weights(None, str(tmp_path / "model.pth"))
    assert (loaded.preprocessing.resize, loaded.preprocessing.crop) == (32, 32)
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").symlink_to(tmp_path / "config.json")
    with pytest.raises(WeightsError, match="config.json is a link that leads nowhere"):
        load_weights("resnet20", str(tmp_path / "model.pth"))


def test_a_snapshot_is_read_as_it_says_or_refused_saying_where_it_contradicts_itself(
        snapshot_dir, tmp_path, image, capsys):
    folder = shutil.copytree(snapshot_dir, tmp_path / "snapshot")
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet32.a1_in1k",
                                                    "pretrained_cfg": GOOD_CFG}))
    said = (f"{folder / 'config.json'} names resnet32, but model.safetensors holds a resnet20's "
            "weights: the snapshot contradicts itself; fix the architecture in its config.json")
    for model in ([], ["--model", "resnet20"]):
        assert predict.main([str(image), "--weights", str(folder), *model]) == 1
        assert one_line(capsys.readouterr().err) == said
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet20", "num_classes": 7,
                                                    "pretrained_cfg": GOOD_CFG}))
    with pytest.raises(WeightsError, match="names num_classes=7, but model.safetensors holds a "
                                           "classifier of 10 classes: the snapshot contradicts"):
        load_weights(None, str(folder))
    (folder / "config.json").write_text(json.dumps({"pretrained_cfg": {"input_size": [3, 32, 32]}}))
    loaded = load_weights("resnet20", str(folder))
    assert (loaded.preprocessing.resize, loaded.preprocessing.crop) == (36, 32)  # 32 / 0.875
    assert loaded.preprocessing.assumed == (f"timm's default crop_pct, mean, std, "
                                            f"interpolation: {folder / 'config.json'} names none")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "blobs" / "gone")
    with pytest.raises(WeightsError, match="model.safetensors is a link to .*gone, which does not "
                                           r"exist \(a hub cache whose file was removed\?\)"):
        load_weights("resnet20", str(folder))


# The library refuses what train.py refuses, and every error is a ResNetError.

def test_create_model_keeps_the_configs_relation_rules_in_linen_nnx_and_train_py():
    with pytest.raises(ArgumentError, match=r"drop_path_rate=0.5 with residual=False: the plain "
                       r"net has no residual branch to drop; set drop_path_rate=0\."):
        create_model("resnet20", residual=False, drop_path_rate=0.5).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ArgumentError, match="set drop_path_rate=0"):
        resnet_nnx.create_model("resnet20", residual=False, drop_path_rate=0.5,
                                rngs=nnx.Rngs(0))
    with pytest.raises(ArgumentError, match="zero_init_residual=True with residual=False"):
        resnet_nnx.create_model("resnet20", residual=False, zero_init_residual=True,
                                rngs=nnx.Rngs(0))
    config = tiny_config(residual=False, drop_path_rate=0.5)
    with pytest.raises(ConfigError, match="set --config.drop_path_rate=0"):
        validate(config, num_devices=1)


def test_variables_of_another_dtype_are_cast_to_the_models_saying_so():
    linen = create_model("resnet20")
    variables = linen.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    half = jax.tree.map(lambda v: v.astype(jnp.float16), variables)
    with pytest.warns(ResNetWarning, match=r"^the variables were cast to the model's dtype "
                      r"\(float16 -> float32\)$"):
        model = resnet_nnx.create_model("resnet20", rngs=nnx.Rngs(0), variables=half)
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))} == {
        jnp.dtype(jnp.float32)}
    ints = jax.tree.map(lambda v: v.astype(jnp.int32), variables)
    with pytest.raises(ArgumentError, match="holds int32 values, not floating point numbers"):
        resnet_nnx.create_model("resnet20", rngs=nnx.Rngs(0), variables=ints)
    with pytest.raises(ArgumentError, match=r"the variables hold no batch_stats \(BatchNorm's "
                       "running mean and variance\\)"):
        resnet_nnx.create_model("resnet20", rngs=nnx.Rngs(0),
                                variables={"params": variables["params"]})


@jax.jit
def flax_examples_train_step(state, batch):
    """The train step of Flax's examples/imagenet, written in its shape (its model's
    ``__call__`` defaults to training; only the model is ours)."""
    def loss_fn(params):
        logits, new_model_state = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats}, batch["image"],
            mutable=["batch_stats"])
        one_hot = jax.nn.one_hot(batch["label"], logits.shape[-1])
        return optax.softmax_cross_entropy(logits, one_hot).mean(), new_model_state

    (loss, new_model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads,
                                 batch_stats=new_model_state["batch_stats"]), loss


class TrainState(train_state.TrainState):
    batch_stats: dict


def test_a_training_step_written_for_flaxs_example_model_trains_or_says_why_not():
    model = create_model("resnet20", num_classes=3)
    x = jax.random.normal(jax.random.key(1), (8, 8, 8, 3)) + 3.0
    batch = {"image": x, "label": jnp.arange(8) % 3}
    variables = model.init(jax.random.key(0), x)
    state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                              tx=optax.sgd(0.02, momentum=0.9),
                              batch_stats=variables["batch_stats"])
    with pytest.raises(ArgumentError, match=r"batch_stats is mutable but train=False: .*pass "
                                            "train=True to train"):
        flax_examples_train_step(state, batch)
    trained = state.replace(apply_fn=lambda v, x, **kw: model.apply(v, x, train=True, **kw))
    losses = []
    for _ in range(8):
        trained, loss = flax_examples_train_step(trained, batch)
        losses.append(float(loss))
    assert losses[-1] < losses[0] / 2, losses  # it trains, on batch statistics...
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), trained.batch_stats,
                         state.batch_stats)
    assert all(jax.tree.leaves(moved))  # ...and keeps its running statistics
    with pytest.raises(ArgumentError, match=r"train=True updates BatchNorm's running "
                                            r"statistics: pass mutable=\['batch_stats'\]"):
        model.apply(variables, x, train=True)
    model.apply(variables, x)  # inference: running statistics, nothing mutable


def test_variables_of_another_model_or_a_missing_rng_are_named_at_apply():
    x = jnp.zeros((2, 8, 8, 3))
    variables = create_model("resnet32").init(jax.random.key(0), x)
    with pytest.raises(ArgumentError, match="the variables hold layer1_3, layer1_4, layer2_3, "
                                            "which this model does not have"):
        create_model("resnet20").apply(variables, x)
    with pytest.raises(ArgumentError, match="the variables do not fit this model"):
        create_model("resnet20", num_classes=5).apply(
            create_model("resnet20").init(jax.random.key(0), x), x)
    with pytest.raises(ArgumentError, match="the variables hold no batch_stats"):
        create_model("resnet32").apply({"params": variables["params"]}, x)
    with pytest.raises(ArgumentError, match=r"drop_path_rate=0.1 drops residual branches at "
                                            r"random in training: pass rngs=\{'dropout': key\}"):
        create_model("resnet32", drop_path_rate=0.1).apply(variables, x, train=True,
                                                           mutable=["batch_stats"])
    headless = create_model("resnet32", num_classes=0).apply(variables, x)  # fc: unused
    assert headless.shape == (2, 64)


@pytest.mark.parametrize("shape,hint", [
    ((2, 3, 32, 32), "this looks NCHW: transpose it with x.transpose(0, 2, 3, 1)"),
    ((2, 32, 32, 1), "images of 1 channel(s): convert them to 3 (grey: jnp.repeat(x, 3, "
                     "axis=-1); RGBA: x[..., :3]), or create the model with input_channels=1"),
    ((32, 32, 3), "add a batch axis to a single image: x[None]"),
])
def test_an_input_of_another_layout_gets_the_fix_that_fits_it(shape, hint):
    model = create_model("resnet20")
    with pytest.raises(ArgumentError) as refused:
        model.init(jax.random.key(0), jnp.zeros(shape))
    assert str(refused.value).endswith(f"; {hint}.")


def test_integer_pixels_are_refused_before_they_reach_the_first_convolution():
    with pytest.raises(ArgumentError, match="ResNet takes float images standardised per "
                                            "channel, got uint8 ones; pass"):
        create_model("resnet20").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3), jnp.uint8))


@pytest.mark.parametrize("call", [
    lambda: create_model("resnet19"),
    lambda: create_model(50),
    lambda: create_model("resnet20", num_classes=-1),
    lambda: create_model("resnet20", width=3),
    lambda: create_model("resnet20").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=1),
    lambda: resnet_nnx.create_model("resnet20", rngs=0),
    lambda: resnet_nnx.create_model("resnet20", rngs=nnx.Rngs(0), variables={"fc.weight": 1}),
    lambda: resnet_nnx.create_model("resnet20", rngs=nnx.Rngs(params=0), drop_path_rate=0.1),
    lambda: to_torchvision({"params": {}}, "resnet20"),
    lambda: importlib.import_module("resnet_jax.models.torch_compat").from_torchvision(
        torch.nn.Linear(2, 2), "resnet20"),
    lambda: importlib.import_module("resnet_jax.models.layer_table").summarize(
        create_model("resnet20"), (2,)),
    lambda: create_model("resnet20", dtype="bf16"),
    lambda: resnet_nnx.load_variables(create_model("resnet20"), {}),
    lambda: resnet_nnx.linen_variables(create_model("resnet20")),
    lambda: resnet_nnx.create_model("resnet20"),
    lambda: pretrained("runs/resnet20"),
    lambda: __import__("resnet_jax.weights").weights.Preprocessing(8, 8)("/no/such/image.png"),
    lambda: to_torchvision(nnx.state(resnet_nnx.create_model("resnet20", rngs=nnx.Rngs(0))),
                           "resnet20"),
    lambda: to_torchvision([1, 2], "resnet20"),
    lambda: create_model("resnet20").init(jax.random.key(0), [[0.0] * 3] * 8),
    lambda: create_model("resnet20", bn_axis_name="batch").apply(
        create_model("resnet20").init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))),
        jnp.zeros((1, 8, 8, 3)), train=True, mutable=["batch_stats"]),
])
def test_every_error_a_user_can_cause_through_the_library_is_a_resnet_error(call):
    with pytest.raises(ResNetError):
        call()


def test_a_state_dict_that_does_not_fit_as_given_says_how_to_make_it_fit():
    from resnet_jax.models.torch_compat import from_torchvision

    state = {k: torch.from_numpy(v) for k, v in resnet20_state_dict().items()}
    cases = [({"state_dict": state, "epoch": 3}, "pass checkpoint['state_dict']"),
             ({k.replace("fc.", "linear."): v for k, v in state.items()},
              "rename linear.weight and linear.bias to fc.weight and fc.bias"),
             ({**state, "extra.weight": state["fc.bias"]},
              "Its layers are a resnet20's: leave out the keys a resnet20 has not")]
    for given, hint in cases:
        with pytest.raises(ArgumentError, match=re.escape(hint)):
            from_torchvision(given, "resnet20")
    five = {**state, "fc.weight": state["fc.weight"][:5], "fc.bias": state["fc.bias"][:5]}
    with pytest.raises(ArgumentError, match="with a head of 5 classes: pass num_classes=5$"):
        from_torchvision(five, "resnet20")
    with pytest.raises(ArgumentError, match="It looks like a resnet20 state_dict: pass "
                                            "name='resnet20', num_classes=5$"):
        from_torchvision(five, "resnet32")
    halves = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    kernel = from_torchvision(halves, "resnet20")["params"]["conv1"]["kernel"]
    assert kernel.dtype == np.float32 and np.all(np.isfinite(kernel))


# Hints come from the door at hand.

def test_the_same_mistake_is_named_in_the_words_of_each_door(run, plain_run, image, capsys):
    fit = "trained a resnet20, not a resnet32; its weights fit a resnet20 only: leave out"
    with pytest.raises(WeightsError, match=f"{fit} model, or pass model='resnet20'$"):
        load_weights("resnet32", str(run))
    assert predict.main([str(image), "--weights", str(run), "--model", "resnet32"]) == 1
    assert one_line(capsys.readouterr().err).endswith(f"{fit} --model, or pass --model resnet20")
    with pytest.raises(WeightsError, match=f"{fit} --config.model, or pass "
                                           "--config.model=resnet20$"):
        initial_variables(tiny_config(model="resnet32", init_from=str(run)))
    no_average = plain_run
    raw = "picks a run's trained weights over the moving average it keeps"
    with pytest.raises(CheckpointError, match=f"^--config.init_from_raw=True {raw}; .* leave out "
                                              "--config.init_from_raw$"):
        initial_variables(tiny_config(init_from=str(no_average), init_from_raw=True))
    assert predict.main([str(image), "--weights", str(no_average), "--raw"]) == 1
    assert one_line(capsys.readouterr().err).startswith(f"--raw {raw}")
    with pytest.raises(CheckpointError, match=f"^raw=True {raw}; .* leave out raw$"):
        restore(no_average, raw=True)
    step = run / "checkpoints" / "8"
    with pytest.raises(WeightsError, match=f"is a checkpoint of the run in {run}: pass "
                       f"--config.init_from={run}; init_from starts from its newest readable"):
        initial_variables(tiny_config(init_from=str(step)))
    assert predict.main([str(image), "--weights", str(step)]) == 1
    assert one_line(capsys.readouterr().err).endswith(f"pass --weights {run} with --step 8")


def test_a_folder_problem_is_told_with_the_fixes_of_the_command_at_hand(run, tmp_path, capsys):
    for split, size in (("train", 8), ("test", 8), ("test", 9)):
        (tmp_path / split / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size)).save(tmp_path / split / "cat" / f"{size}.png")
    mixed = tiny_config(dataset=f"folder:{tmp_path}", num_classes=1, batch_size=1)
    with hints.door(hints.CONFIG), pytest.raises(DataError, match=re.escape(
            "resize them to one size first, or stream them (--config.pipeline=streaming")):
        datasets.load_dataset(mixed)
    with hints.door(hints.LIBRARY), pytest.raises(DataError, match="resize them to one size "
                                                                   "first$"):
        datasets.load_dataset(mixed)
    moved = shutil.copytree(run, tmp_path / "moved")
    saved = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**saved, "dataset": f"folder:{tmp_path}/gone"}))
    assert evaluate.main(["--workdir", str(moved)]) == 1
    assert one_line(capsys.readouterr().err).endswith(
        "if the run's data moved, evaluate the weights on it by class name: --weights RUN "
        "--dataset folder:NEWPATH/test")


# Runs.

def test_restore_and_pretrained_say_when_they_give_a_runs_moving_average(run):
    with pytest.warns(ResNetWarning, match="keeps a moving average of its weights: these are "
                                           r"the average \(raw=True: the trained weights\)"):
        restore(run)
    with pytest.warns(ResNetWarning, match=r"the moving average of its weights \(raw=True: the "
                                           r"trained ones\)"):
        pretrained(None, str(run))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore(run, raw=True)
        pretrained(None, str(run), raw=True)


def test_init_from_a_run_takes_its_average_or_with_init_from_raw_its_trained_weights(
        run, capsys):
    averaged = initial_variables(tiny_config(init_from=str(run)))
    assert "the moving average of its weights (--config.init_from_raw=True: the trained ones)" \
        in capsys.readouterr().err
    trained = initial_variables(tiny_config(init_from=str(run), init_from_raw=True))
    assert (f"starting from {run}, checkpoint of step 8, its trained weights, not the moving "
            "average it keeps") in capsys.readouterr().err
    jax.tree.map(np.testing.assert_array_equal, trained, restore(run, raw=True)[1])
    jax.tree.map(np.testing.assert_array_equal, averaged, restore(run)[1])
    with pytest.raises(ConfigError, match="init_from_raw=True has no effect without init_from"):
        validate(tiny_config(init_from_raw=True), num_devices=1, chosen={"init_from_raw"})


def test_a_moving_average_updated_less_often_than_the_run_is_long_is_refused_or_warned():
    config = tiny_config(num_train_steps=8, ema_decay=0.9, ema_every_steps=8)
    said = ("ema_every_steps=8 is not below num_train_steps=8: the moving average is updated "
            "after step 1 alone (a copy), so its ema_ figures would be the weights after one step")
    with pytest.raises(ConfigError, match=re.escape(f"{said}; set --config.ema_every_steps "
                                                    "below it")):
        validate(config, num_devices=1, chosen={"ema_every_steps"})
    assert validate(config, num_devices=1) == [f"{said} (a shortened recipe)"]
    assert validate(tiny_config(ema_decay=0.9, ema_every_steps=7, num_train_steps=8),
                    num_devices=1) == []


def test_a_ramp_without_its_steps_says_so_rather_than_naming_a_value_nobody_typed():
    config = tiny_config(pipeline="streaming", image_size=64, eval_resize=64, min_image_size=32)
    with pytest.raises(ConfigError, match=r"min_image_size=32 starts a resolution ramp, which "
                                          r"needs ramp_steps, .*set --config.ramp_steps="
                                          r"\(FIRST,LAST\)"):
        validate(config, num_devices=1, chosen={"min_image_size"})


def test_train_py_with_a_workdir_alone_continues_the_run_from_its_recorded_config(
        run, tmp_path):
    workdir = shutil.copytree(run, tmp_path / "run")
    result = run_train_in_process([f"--workdir={workdir}", "--config.num_train_steps=10"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming at step 8 of 10" in result.stdout
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["num_train_steps"] == 10 and saved["ema_decay"] == 0.5
    refused = run_train_in_process([f"--workdir={workdir}", "--config.learning_rate=0.3"])
    assert refused.returncode == 1
    assert "holds a run with a different setup (learning_rate: 0.05 -> 0.3)" in refused.stderr
    empty = run_train_in_process([f"--workdir={tmp_path / 'new'}"])
    assert one_line(empty.stderr) == (
        f"--config is needed: --workdir {tmp_path / 'new'} holds no run to continue (no "
        "config.json there); pass --config configs/NAME.py to start one")
    assert not (tmp_path / "new").exists()


def test_a_recorded_config_that_predates_a_key_reads_it_as_off(run, tmp_path):
    from configs import recorded

    workdir = shutil.copytree(run, tmp_path / "old")
    saved = json.loads((workdir / "config.json").read_text())
    del saved["init_from_raw"], saved["ema_every_steps"]
    (workdir / "config.json").write_text(json.dumps(saved))
    config = recorded.get_config(str(workdir))
    assert config.init_from_raw is False and config.ema_every_steps == 1
    assert isinstance(config.ramp_steps, tuple)
    assert isinstance(config, ConfigDict)
    (workdir / "config.json").write_text(json.dumps({**saved, "batch_size": 6.5}))
    before = snapshot(workdir)
    result = run_train_in_process([f"--workdir={workdir}"])
    assert result.returncode == 1 and one_line(result.stderr) == (
        f"{workdir / 'config.json'}: batch_size=6.5 is not of the kind the key takes (int); "
        "repair it, or pass the run's --config file")
    assert snapshot(workdir) == before


def test_a_resume_says_how_many_steps_it_trains_again_up_to_the_new_end(tmp_path):
    from resnet_jax.train.report import resume_line

    (tmp_path / "segments.json").write_text(json.dumps([{"first_step": 0, "last_step": 175,
                                                         "wall_seconds": 9.0}]))
    assert resume_line(tmp_path, 100, 3000).endswith(
        "the last start was seen at step 175: the 75 steps after its last checkpoint are "
        "trained again")
    assert resume_line(tmp_path, 100, 120).endswith(
        "the last start was seen at step 175: the 20 steps after its last checkpoint, to the "
        "end at 120, are trained again")


def test_flags_or_arguments_that_exclude_each_other_are_refused_naming_both(run, tmp_path,
                                                                           capsys):
    for command in (evaluate, predict):
        door = (["--workdir", str(run)] if command is evaluate else [str(tmp_path), "--weights",
                                                                     str(run)])
        with pytest.raises(SystemExit):
            command.main([*door, "--flip", "--no-flip"])
        assert "--flip and --no-flip contradict each other; pass one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--workdir", str(run), "--dataset", f"folder:{tmp_path}"])
    assert (f"pass one (other data: --weights {run} --dataset folder:{tmp_path})"
            in capsys.readouterr().err)
    with pytest.raises(ArgumentError, match=f"weights is missing, and model='{run}' is not a "
                                            f"model but looks like weights: pass \\(None, "):
        load_weights(str(run))


# Warnings: said once, in one line, by the commands.

def test_library_warnings_are_one_line_in_the_commands(damaged, image, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing but the one line escapes as a warning
        assert predict.main([str(image), "--weights", str(damaged), "--json"]) == 0
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "cannot be read" in line]
    assert len(said) == 1 and said[0].startswith("warning: the newest checkpoint(s) under ")
    assert json.loads(out)[0]["image"].endswith("image.png")  # stdout: the JSON alone
    assert "Traceback" not in err and "Warning" not in err

