"""Pretrained weights by name, from a .pth or a run; predict and evaluate give torchvision's
answers on the same files; fine-tuning starts from any of them."""

import dataclasses
import hashlib
import io
import json
import re
import subprocess
import sys
import urllib.error

import jax
import numpy as np
import pytest
import torch
from helpers import REPO, serving, tiny_config
from PIL import Image
from torchvision import models, transforms
from torchvision.datasets.folder import pil_loader

from benchmarks.input_pipeline import make_photo
from resnet_jax.errors import WeightsError
from resnet_jax.evaluate import evaluate_run
from resnet_jax.models import list_models
from resnet_jax.train.loop import train_and_evaluate
from resnet_jax.weights import load_weights, pretrained
from resnet_jax.weights import sources as weight_sources

SIZES = [(375, 500), (500, 375), (224, 224), (180, 320), (600, 200)]
TORCHVISION_EVAL = transforms.Compose([
    transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def random_torchvision(name: str, num_classes: int = 1000, seed: int = 0) -> torch.nn.Module:
    """torchvision's model with random weights and randomised BatchNorm statistics, its
    head scaled to logits of standard deviation 3: top classes apart, none saturated."""
    torch.manual_seed(seed)
    model = getattr(models, name)(num_classes=num_classes).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        model.fc.weight.mul_(3 / model(torch.randn(2, 3, 224, 224)).std())
    return model


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("photos"), np.random.default_rng(0)
    paths = []
    for i, (height, width) in enumerate(SIZES):
        paths.append(root / f"photo{i}.jpg")
        Image.fromarray(make_photo(rng, height, width)).save(paths[-1], quality=90)
    return paths


def torchvision_top5(model: torch.nn.Module, path) -> tuple[list[int], np.ndarray]:
    with torch.no_grad():
        probs = torch.softmax(model(TORCHVISION_EVAL(pil_loader(path))[None]), -1)[0].numpy()
    best = np.argsort(-probs, kind="stable")[:5]
    return best.tolist(), probs[best]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_predict_gives_torchvisions_top5_for_a_pth(name, photos, tmp_path):
    model = random_torchvision(name)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    result = subprocess.run(
        [sys.executable, "-m", "resnet_jax.predict", *map(str, photos), "--model", name,
         "--weights", str(tmp_path / "weights.pth"), "--json"],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    ours = json.loads(result.stdout)  # nothing else on stdout
    assert [r["image"] for r in ours] == [str(p) for p in photos]
    worst = 0.0
    for row, path in zip(ours, photos, strict=True):
        classes, probs = torchvision_top5(model, path)
        assert [c for c, _, _ in row["top5"]] == classes, path
        worst = max(worst, np.abs(np.array([p for _, _, p in row["top5"]]) - probs).max())
    assert worst < 1e-4
    print(f"{name}: {len(photos)} images, top-1 probabilities "
          f"{[round(r['top5'][0][2], 3) for r in ours]}, worst top-5 difference {worst:.2e}")


def test_evaluate_counts_what_torchvision_counts(tmp_path):
    rng, root = np.random.default_rng(1), tmp_path / "val"
    for label in ("ant", "bee", "cat"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            height, width = rng.integers(150, 400, 2)
            Image.fromarray(make_photo(rng, height, width)).save(root / label / f"{i}.jpg")
    (root / "bee" / "broken.jpg").write_bytes(b"not a jpeg")
    model = random_torchvision("resnet18", num_classes=3, seed=1)
    torch.save(model.state_dict(), tmp_path / "three.pth")
    result = subprocess.run(
        [sys.executable, "-m", "resnet_jax.evaluate", "--model", "resnet18", "--weights",
         str(tmp_path / "three.pth"), "--dataset", f"folder:{root}", "--batch-size", "5",
         "--json"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    ours = json.loads(result.stdout)
    correct = 0
    for label, name in enumerate(("ant", "bee", "cat")):
        for path in sorted((root / name).glob("[0-9].jpg")):
            correct += torchvision_top5(model, path)[0][0] == label
    assert ours["examples"] == 12 and len(ours["skipped"]) == 1
    assert round(ours["top1"] * 12 / 100) == correct
    assert ("the weights carry no class names: the sorted class folders are their outputs in "
            "order (ant -> 0, bee -> 1, cat -> 2)") in result.stderr  # a .pth of 3 classes


def table_entry(model, name, url, sha256, classes="ImageNet-1k", resize=256, crop=224):
    """An entry of a weights table of one's own (RESNET_JAX_WEIGHTS_TABLE)."""
    return {"model": model, "name": name, "default": False, "source": "a test", "url": url,
            "sha256": sha256, "format": "torch.save", "preprocessing": {
                "resize": resize, "crop": crop, "interpolation": "bilinear",
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "classes": classes, "published": {"top1": 69.5, "top5": None, "on": "a test set",
                                              "where": "this test"}, "license": "MIT"}


def use_table(tmp_path, monkeypatch, *entries):
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"entries": list(entries)}))
    monkeypatch.setenv("RESNET_JAX_WEIGHTS_TABLE", str(table))
    monkeypatch.setenv("RESNET_JAX_CACHE", str(tmp_path / "cache"))
    return table


def test_named_weights_are_downloaded_once_checked_and_cached(tmp_path, monkeypatch):
    """A table entry's file is fetched from its address (a local HTTP server here), checked
    against the entry's SHA-256 prefix, kept in the cache and read from there after."""
    buffer = io.BytesIO()
    torch.save(random_torchvision("resnet18").state_dict(), buffer)
    raw = buffer.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    with serving({"/r18.pth": raw}) as (address, asked):
        use_table(tmp_path, monkeypatch,
                  table_entry("resnet18", "MINE", f"{address}/r18.pth", digest[:8]),
                  table_entry("resnet18", "DAMAGED", f"{address}/r18.pth", "0" * 8))
        first = load_weights("resnet18", "MINE")
        second = load_weights("resnet18", "MINE")
        assert asked == [("GET", "/r18.pth")], "fetched once, then read from the cache"
        with pytest.raises(WeightsError, match=f"{address}/r18.pth arrived with SHA-256 "
                                               r"\w+\.\.\., not the 00000000\.\.\. .*table"
                                               r"\.json, entry 2 names: try again"):
            load_weights("resnet18", "DAMAGED")
        monkeypatch.setenv("RESNET_JAX_CACHE", str(tmp_path / "table.json"))  # not a folder
        with pytest.raises(WeightsError, match="cannot keep the download as .* point "
                                               "RESNET_JAX_CACHE at a folder you can write"):
            load_weights("resnet18", "MINE")
        monkeypatch.setenv("RESNET_JAX_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "resnet18" / "MINE" / "r18.pth"
    assert [p.name for p in cached.parent.iterdir()] == ["r18.pth"], "nothing else is kept"
    assert first.class_names[0] == "tench" and first.published.top1 == 69.5
    assert first.source == f"resnet18 MINE (a test; {cached})"
    assert (first.preprocessing.resize, first.preprocessing.crop) == (256, 224)
    np.testing.assert_array_equal(
        second.variables["params"]["conv1"]["kernel"],
        random_torchvision("resnet18").state_dict()["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    cached.write_bytes(raw[:-10])
    damaged = f"the cached copy of resnet18 MINE ({cached}) has SHA-256 "
    with pytest.raises(WeightsError, match=re.escape(damaged)):
        load_weights("resnet18", "MINE")


def save_safetensors(state_dict, path):
    from safetensors.numpy import save_file

    save_file({k: v.numpy() for k, v in state_dict.items()}, str(path))
    return path


def test_safetensors_weights_load_without_torch_and_as_the_pth_does(tmp_path):
    state = random_torchvision("resnet18").state_dict()  # num_batches_tracked included
    file = save_safetensors({f"module.{k}": v for k, v in state.items()},  # DataParallel's
                            tmp_path / "resnet18.safetensors")
    torch.save(state, tmp_path / "resnet18.pth")
    loaded = load_weights("resnet18", str(file), crop=160)
    assert loaded.preprocessing.describe().endswith(
        "(sizes as given; the rest torchvision V1's: no config.json beside resnet18.safetensors)")
    reference = load_weights("resnet18", str(tmp_path / "resnet18.pth"), crop=160)
    for ours, theirs in zip(jax.tree.leaves(loaded.variables),
                            jax.tree.leaves(reference.variables), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert dataclasses.replace(loaded.preprocessing, assumed="") == dataclasses.replace(
        reference.preprocessing, assumed="")
    assert reference.preprocessing.assumed == ("sizes as given; the rest torchvision V1's: "
                                               "resnet18.pth carries none")  # said, as bare
    headless = save_safetensors({k: v for k, v in state.items() if not k.startswith("fc.")},
                                tmp_path / "backbone.safetensors")
    with pytest.raises(WeightsError, match="backbone.safetensors holds no classifier .* "
                                           "predict and evaluate need a classifier's weights"):
        load_weights("resnet18", str(headless))
    model, variables = pretrained("resnet18", str(headless))
    assert model.num_classes == 0 and "fc" not in variables["params"]
    check = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
             "from resnet_jax.weights import load_weights\n"
             f"print(load_weights('resnet18', {str(file)!r}).model.num_classes)")
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stdout.split() == ["1000"], result.stderr[-2000:]


def test_a_hub_snapshot_brings_timms_preprocessing_identical_to_torchvisions_bicubic(tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    save_safetensors(random_torchvision("resnet18").state_dict(), snapshot / "model.safetensors")
    timm_config = {"architecture": "resnet18", "pretrained_cfg": {
        "input_size": [3, 160, 160], "crop_pct": 0.95, "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    (snapshot / "config.json").write_text(json.dumps(timm_config))
    loaded = load_weights("resnet18", str(snapshot))
    preprocessing = loaded.preprocessing
    assert (preprocessing.resize, preprocessing.crop, preprocessing.interpolation) == (
        168, 160, "bicubic")  # floor(160 / 0.95), as timm
    photo = Image.fromarray(make_photo(np.random.default_rng(3), 240, 180))
    theirs = transforms.Compose([
        transforms.Resize(168, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(160), transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])(photo)
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    ours = preprocessing(buffer.getvalue())
    np.testing.assert_allclose(ours, theirs.numpy().transpose(1, 2, 0), atol=1e-6)


@pytest.mark.parametrize("content,message", [
    (b"not safetensors", "{file} cannot be read as a safetensors file: it is truncated or "
                         "damaged"),
    ("resnet50", "{file} does not fit resnet18; it looks like a resnet50 state dict"),
    ("other", "{file} does not fit resnet18; no ResNet of this project has its layers"),
])
def test_a_safetensors_file_of_another_layout_or_model_is_one_line(tmp_path, content, message):
    file = tmp_path / "weights.safetensors"
    if content == "resnet50":
        save_safetensors(models.resnet50().state_dict(), file)
    elif content == "other":
        save_safetensors({"stem.conv.weight": torch.zeros(8, 3, 3, 3)}, file)
    else:
        file.write_bytes(content)
    with pytest.raises(WeightsError, match=re.escape(message.format(file=file))):
        load_weights("resnet18", str(file))


def test_a_hub_snapshot_names_its_model_and_crop_mode(tmp_path):
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    save_safetensors(random_torchvision("resnet18").state_dict(), snapshot / "model.safetensors")
    cfg = {"input_size": [3, 64, 64], "crop_pct": 1.0}
    (snapshot / "config.json").write_text(json.dumps({"architecture": "resnet18.tv_in1k",
                                                      "pretrained_cfg": cfg}))
    assert load_weights(None, str(snapshot)).model.stage_sizes == (2, 2, 2, 2)  # named there
    with pytest.raises(WeightsError, match="holds timm's resnet18, not a resnet50; leave out "
                                           "model, or pass model='resnet18'"):
        load_weights("resnet50", str(snapshot))
    (snapshot / "config.json").write_text(json.dumps({"pretrained_cfg": {
        **cfg, "crop_mode": "squash"}}))
    with pytest.raises(WeightsError, match='crop_mode="squash" is not supported: predict and '
                                           "evaluate take the crop mode center only"):
        load_weights("resnet18", str(snapshot))


def test_the_readmes_model_table_is_torchvisions():
    rows = re.findall(r"^\| `(\w+)` \| ([\d,]+) \| ([\d.]+) \|$",
                      (REPO / "docs" / "models.md").read_text(), re.MULTILINE)
    assert [row[0] for row in rows] == [name for name in list_models()
                                        if name in models.list_models()]
    for name, params, gmacs in rows:
        table = list(models.get_model_weights(name))
        assert int(params.replace(",", "")) == table[0].meta["num_params"], name
        assert float(gmacs) == round(table[0].meta["_ops"], 2), name


def test_without_network_or_cache_the_error_names_the_address(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_JAX_CACHE", str(tmp_path / "empty"))

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(weight_sources.urllib.request, "urlopen", offline)
    with pytest.raises(WeightsError, match=r"cannot download https://\S+resnet50-\w+\.pth .*"
                                           r"pass its path, weights='PATH.pth' \(its SHA-256 "
                                           "brings the table's preprocessing"):
        load_weights("resnet50", "IMAGENET1K_V2")
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights("resnet50", str(tmp_path / "no" / "run"))
    with pytest.raises(WeightsError, match="has no IMAGENET1K_V3 weights for resnet50"):
        load_weights("resnet50", "IMAGENET1K_V3")
    with pytest.raises(WeightsError, match="the weights table has no IMAGENET1K_V1 weights for "
                                           "resnet20; it has CIFAR10_AKAMASTER"):
        load_weights("resnet20", "IMAGENET1K_V1")


def test_fine_tuning_starts_from_other_weights_with_a_new_head(tmp_path, capfd):
    from resnet_jax import create_model
    from resnet_jax.models.torch_compat import to_torchvision

    source = create_model("resnet20", num_classes=4).init(jax.random.key(7),
                                                         np.zeros((1, 8, 8, 3), np.float32))
    state_dict = to_torchvision(source, "resnet20", num_classes=4)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()},
               tmp_path / "four.pth")
    config = tiny_config(init_from=str(tmp_path / "four.pth"), num_train_steps=1,
                         eval_every_steps=1, checkpoint_every_steps=1, log_every_steps=1,
                         learning_rate=0.0, weight_decay=0.0)
    train_and_evaluate(config, tmp_path / "tuned")
    assert "the head (fc) is re-initialised" in capfd.readouterr().err
    tuned = load_weights(None, str(tmp_path / "tuned"))  # a run: its model, classes, sizes
    np.testing.assert_array_equal(tuned.variables["params"]["conv1"]["kernel"],
                                  source["params"]["conv1"]["kernel"])
    assert tuned.variables["params"]["fc"]["kernel"].shape[-1] == 10
    assert tuned.class_names == [str(i) for i in range(10)]
    assert (tuned.preprocessing.resize, tuned.preprocessing.crop) == (8, 8)
    assert evaluate_run(tmp_path / "tuned", batch_size=40)["examples"] == 100  # its test split
    with pytest.raises(WeightsError, match="trained a resnet20, not a resnet56"):
        load_weights("resnet56", str(tmp_path / "tuned"))
    with pytest.raises(WeightsError, match="does not fit resnet32"):
        train_and_evaluate(tiny_config(model="resnet32", init_from=str(tmp_path / "four.pth")),
                           tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("argv", [["a.jpg", "--weights", "X", "--crop", "0"],
                                  ["a.jpg", "--weights", "X", "--batch-size", "-1"]])
def test_predict_and_evaluate_refuse_sizes_below_one(argv, capsys):
    from resnet_jax import evaluate, predict

    with pytest.raises(SystemExit):
        predict.parse_args(argv)
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--workdir", "RUN", *argv[3:]])
    assert "is below 1" in capsys.readouterr().err
