"""Every number names its source: evaluation and prediction match class folders to the
weights' classes by name, say which checkpoint they read, read only the split they
evaluate, and refuse sizes and names that cannot give a true answer."""

import json
import shutil

import numpy as np
import pytest
from helpers import tiny_config
from PIL import Image

from resnet_jax import data, evaluate, predict
from resnet_jax.train.config_schema import ConfigError
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.weights import Preprocessing, Weights

CLASSES = {"cat": (200, 40, 40), "dog": (40, 200, 40), "frog": (40, 40, 200)}


def colour_folder(root, per_split=(16, 4), classes=CLASSES):
    """Class folders of 8x8 images whose colour gives the class away."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_split, strict=True):
        for name, colour in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (8, 8, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A ResNet-20 that tells the three colours apart, trained on their folders."""
    root = colour_folder(tmp_path_factory.mktemp("colours") / "images")
    workdir = root.parent / "run"
    config = tiny_config(dataset=f"folder:{root}", num_classes=3, batch_size=24,
                         eval_batch_size=24, num_train_steps=20, eval_every_steps=20,
                         checkpoint_every_steps=10, learning_rate=0.05, eval_flip=True,
                         ema_decay=0.1)
    summary = train_and_evaluate(config, workdir)
    assert summary["final_test_accuracy"] == 1.0
    return workdir


def evaluated(argv, capsys) -> tuple[int, dict, str]:
    status = evaluate.main([*argv, "--json"])
    out, err = capsys.readouterr()
    return status, (json.loads(out) if status == 0 else {}), err


def test_class_folders_are_matched_by_name_and_a_subset_is_said(run, tmp_path, capsys):
    test = run.parent / "images" / "test"
    status, whole, _ = evaluated(["--weights", str(run), "--dataset", f"folder:{test}"], capsys)
    assert status == 0 and whole["top1"] == 100.0 and whole["examples"] == 12
    assert whole["weights"].startswith(f"{run}, checkpoint of step 20, the moving average")
    assert whole["step"] == 20
    assert whole["top5"] is None  # among three classes it says nothing
    subset = shutil.copytree(test, tmp_path / "subset")
    shutil.rmtree(subset / "cat")  # dog and frog: by position they would be cat and dog
    status, result, err = evaluated(["--weights", str(run), "--dataset", f"folder:{subset}"],
                                    capsys)
    assert status == 0 and result["top1"] == 100.0 and result["examples"] == 8
    assert "the folder holds 2 of the weights' 3 classes" in err
    for image in (subset / "dog").iterdir():  # a class folder of unreadable files only
        image.write_bytes(b"not an image")
    status, result, err = evaluated(["--weights", str(run), "--dataset", f"folder:{subset}"],
                                    capsys)
    assert status == 0 and result["examples"] == 4 and len(result["skipped"]) == 4
    assert "class folder(s) dog hold no readable image" in err


@pytest.mark.parametrize("renamed", ["aardvark", "catt"])  # moved in the sort order, or not
def test_a_class_folder_the_weights_do_not_know_is_refused_naming_both_sides(
        run, tmp_path, capsys, renamed):
    copy = shutil.copytree(run.parent / "images" / "test", tmp_path / "copy")
    (copy / "cat").rename(copy / renamed)
    status, _, err = evaluated(["--weights", str(run), "--dataset", f"folder:{copy}"], capsys)
    assert status == 1
    assert err.strip() == (f"error: 1 class folder(s) are not among the weights' 3 classes: "
                           f"{renamed}; the weights' classes without a folder: cat; name each "
                           "folder as the class it holds")


def test_synset_folders_map_to_weights_that_name_imagenets_classes(tmp_path, capsys):
    root = tmp_path / "val"
    for synset in ("n01443537", "n01440764"):  # goldfish, tench: indices 1 and 0
        (root / synset).mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(root / synset / "a.jpg")
    names = ["tench", "goldfish", *[f"class {i}" for i in range(2, 1000)]]
    weights = Weights(None, {}, names, Preprocessing(40, 32), {}, "torchvision")
    files, labels = evaluate.folder_labels(root, weights)
    assert [f.parent.name for f in files] == ["n01440764", "n01443537"]
    assert labels.tolist() == [0, 1]
    assert "n01440764 -> tench" in capsys.readouterr().err
    (root / "n99999999").mkdir()
    with pytest.raises(data.DataError, match="1 synset folder.* not ImageNet-1k classes: "
                                             "n99999999"):
        evaluate.folder_labels(root, weights)


def test_an_empty_class_folder_is_refused_in_evaluation_too(run, tmp_path, capsys):
    copy = shutil.copytree(run.parent / "images" / "test", tmp_path / "copy")
    for image in (copy / "dog").iterdir():
        image.unlink()
    status, _, err = evaluated(["--weights", str(run), "--dataset", f"folder:{copy}"], capsys)
    assert status == 1 and f"class folder(s) ['dog'] under {copy} hold no images" in err


def test_a_run_is_evaluated_on_its_test_split_alone_and_only_on_its_own_data(run, tmp_path,
                                                                             capsys):
    copy = shutil.copytree(run, tmp_path / "run")
    images = shutil.copytree(run.parent / "images", tmp_path / "images")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "dataset": f"folder:{images}"}))
    (images / "train" / "cat" / "0.png").write_bytes(b"broken")  # decoding train would fail
    status, result, _ = evaluated(["--workdir", str(copy), "--step", "10"], capsys)
    assert status == 0 and result["examples"] == 12 and result["step"] == 10, _
    assert result["data"] == f"folder:{images}, the run's evaluation split"
    changes = [(lambda: (images / "test" / "dog" / "0.png").unlink(),
                "12 evaluation images then, 11 now"),
               (lambda: [(images / split / "cat").rename(images / split / "lynx")
                         for split in ("train", "test")],
                "classes only in the run: cat; only in the data now: lynx")]
    for change, described in changes:
        change()
        status, _, err = evaluated(["--workdir", str(copy)], capsys)
        assert status == 1 and err.strip() == (
            f"error: folder:{images} has changed since the run trained on it ({described}); "
            "restore the data, or evaluate it by class name with --weights RUN --dataset "
            "folder:PATH")


def test_evaluate_gives_the_trainers_own_numbers_for_its_checkpoint(run, capsys):
    """The run evaluates with test-time flips (eval_flip), and so does evaluate --workdir;
    it keeps a moving average of its weights, which evaluate reads unless --raw."""
    status, result, _ = evaluated(["--workdir", str(run)], capsys)
    summary = json.loads((run / "summary.json").read_text())
    assert status == 0 and summary["final_test_step"] == result["step"] == 20
    assert result["top1"] == 100 * summary["ema_final_test_accuracy"] and result["flip"]
    assert result["loss"] == summary["ema_final_test_loss"] and result["top5"] is None
    assert result["weights"].endswith("the moving average of its weights (--raw: the trained "
                                      "ones)")
    assert result["ema"] and summary["eval_flip"]
    status, raw, _ = evaluated(["--workdir", str(run), "--raw"], capsys)
    assert raw["top1"] == 100 * summary["final_test_accuracy"] and not raw["ema"]
    assert raw["loss"] == summary["final_test_loss"] != result["loss"]
    status, unflipped, _ = evaluated(["--workdir", str(run), "--raw", "--no-flip"], capsys)
    assert status == 0 and not unflipped["flip"] and unflipped["loss"] != raw["loss"]


def test_test_time_flips_average_the_logits_of_each_image_and_its_mirror():
    import jax

    from resnet_jax import create_model
    from resnet_jax.parallel import replicated
    from resnet_jax.train.scoring import parallel_eval

    model = create_model("resnet20", num_classes=7, stage_sizes=(1, 1, 1))
    images = np.random.default_rng(0).standard_normal((8, 8, 8, 3), dtype=np.float32)
    variables = model.init(jax.random.key(0), images)
    labels = np.arange(8) % 7
    batch = {"image": images, "label": labels, "mask": np.ones(8, np.float32)}
    p_eval = parallel_eval(model.apply, lambda _, b: (b["image"], b["label"]), "pmap", flip=True)
    on_devices = jax.device_put(variables, replicated(jax.local_devices()))
    sums = jax.device_get(p_eval(on_devices, None, batch))
    logits = (model.apply(variables, images) + model.apply(variables, images[:, :, ::-1])) / 2
    sums = {k: float(np.ravel(v)[0]) for k, v in sums.items()}
    assert sums["correct"] == float(np.sum(np.argmax(logits, -1) == labels))
    expected = -np.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).sum()
    assert sums["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_a_resumed_run_refuses_data_that_changed(run, tmp_path):
    """The same classes and image counts, darker training images: other statistics, told
    apart with the copy of dataset.json every checkpoint keeps when the file is gone."""
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "dataset.json").unlink()
    images = shutil.copytree(run.parent / "images", tmp_path / "images")
    for path in (images / "train").rglob("*.png"):
        Image.fromarray(np.asarray(Image.open(path)) // 3).save(path)
    config = json.loads((copy / "config.json").read_text())
    config = tiny_config(**{**config, "dataset": f"folder:{images}", "num_train_steps": 30})
    (copy / "config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(data.DataError, match=f"the data has changed since the run in {copy} "
                       r"trained on it \(the training images' per-channel mean was"):
        train_and_evaluate(config, copy)


def test_a_run_resumes_on_its_data_moved_elsewhere_not_on_other_data(run, tmp_path, capsys,
                                                                     monkeypatch):
    """dataset is fixed, but a folder moved is the same data: its description (classes,
    image counts, statistics) says so; a folder of other classes is refused."""
    copy = shutil.copytree(run, tmp_path / "run")
    moved = shutil.copytree(run.parent / "images", tmp_path / "moved")
    saved = json.loads((copy / "config.json").read_text())
    config = tiny_config(**{**saved, "dataset": f"folder:{moved}", "num_train_steps": 22})
    train_and_evaluate(config, copy)
    assert (f"the run's data moved: {saved['dataset']} -> folder:{moved} (the same classes and "
            "image counts as it trained on); resuming on it") in capsys.readouterr().err
    assert json.loads((copy / "config.json").read_text())["dataset"] == f"folder:{moved}"
    assert json.loads((copy / "dataset.json").read_text())["dataset"] == f"folder:{moved}"

    (moved / "train" / "cat").rename(moved / "train" / "lynx")
    (moved / "test" / "cat").rename(moved / "test" / "lynx")
    other = tiny_config(**{**config.to_dict(), "num_train_steps": 24})
    with pytest.raises(data.DataError, match=f"the data has changed since the run in {copy} "
                       r"trained on it \(classes only in the run: cat; only in the data now: "
                       r"lynx\)"):
        train_and_evaluate(other, copy)

    from resnet_jax.data import description  # a run from before dataset.json and its copies:

    monkeypatch.setattr(description, "saved", lambda workdir: None)  # nothing to tell by
    back = tiny_config(**{**other.to_dict(), "dataset": saved["dataset"]})
    with pytest.raises(data.DataError, match=f"the run in {copy} keeps no dataset.json to tell "
                       f"whether {saved['dataset']} holds the data it trained on "
                       fr"\(folder:{moved}\); resume with --config.dataset=folder:{moved}, or "):
        train_and_evaluate(back, copy)


def test_a_relative_data_path_is_the_current_directorys_once_and_for_all(run, tmp_path,
                                                                        monkeypatch, capsys):
    shutil.copytree(run.parent / "images", tmp_path / "here" / "images")
    monkeypatch.chdir(tmp_path / "here")
    config = tiny_config(dataset="folder:../here/./images", num_classes=3, batch_size=24,
                         eval_batch_size=24, num_train_steps=2, eval_every_steps=2)
    train_and_evaluate(config, tmp_path / "relative")
    capsys.readouterr()  # the run's summary
    saved = json.loads((tmp_path / "relative" / "config.json").read_text())
    assert saved["dataset"] == f"folder:{tmp_path / 'here' / 'images'}"
    monkeypatch.chdir(tmp_path)  # elsewhere, the same words name other data
    status, result, _ = evaluated(["--workdir", "relative"], capsys)
    assert status == 0 and result["data"].startswith(f"folder:{tmp_path / 'here' / 'images'},")
    with pytest.raises(ConfigError, match="dataset: 'folder:.*here/images' -> 'folder:"
                                          f"{tmp_path.parent / 'here' / 'images'}'"):
        train_and_evaluate(config.copy_and_resolve_references(), tmp_path / "relative")


def test_predict_names_the_checkpoint_and_refuses_what_cannot_be_answered(run, capsys):
    image = str(run.parent / "images" / "test" / "dog" / "0.png")
    assert predict.main([image, "--weights", str(run), "--step", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"weights: {run}, checkpoint of step 10, the moving average of its "
                      "weights (--raw: the trained ones); each image averaged with its mirror "
                      "image")  # the run's eval_flip
    assert out[2].split()[1] == "dog"
    for flags, message in ((["--top", "4"], "--top 4 exceeds the weights' 3 classes; pass "
                                            "--top 3 or less"),
                           (["--crop", "3"], "--crop 3 is below the network's total stride of "
                                             "4: its last stage would see less than one pixel"),
                           (["--step", "5"], "there is no checkpoint of step 5 under")):
        assert predict.main([image, "--weights", str(run), *flags]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    status, _, err = evaluated(["--weights", str(run), "--crop", "3", "--dataset",
                                f"folder:{run.parent / 'images' / 'test'}"], capsys)
    assert status == 1 and "--crop 3 is below the network's total stride of 4" in err
