"""The weights table: torchvision's entries are torchvision's own, timm's are timm's, the
README shows it as `python -m resnet_jax.weights` prints it, a table of one's own is
checked field by field, and timm's weights come from the Hugging Face Hub (a local server
in the Hub's manner here) through huggingface_hub's cache, offline too, without torch."""

import hashlib
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, serving
from PIL import Image
from torchvision import models
from torchvision.transforms import InterpolationMode

from benchmarks.input_pipeline import make_photo
from resnet_jax import evaluate, predict
from resnet_jax.errors import ArgumentError, WeightsError
from resnet_jax.models import list_models
from resnet_jax.weights import load_weights, table
from resnet_jax.weights.__main__ import main

TORCHVISION_MODELS = [name for name in list_models() if name in models.list_models()]


def test_python_m_resnet_jax_weights_prints_the_table_the_readme_shows(capsys):
    assert main([]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 + len(table.entries())
    assert printed[0].split()[:2] == ["model", "weights"]
    assert any(re.match(r"resnet20 +CIFAR10_AKAMASTER \(DEFAULT\) +91\.73 ", line)
               for line in printed)
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out in (REPO / "docs" / "weights.md").read_text()


@pytest.mark.parametrize("model", TORCHVISION_MODELS)
def test_torchvisions_entries_are_torchvisions_own_table(model):
    theirs_table = models.get_model_weights(model)
    ours = {entry.name: entry for entry in table.entries()
            if entry.model == model and entry.source == "torchvision"}
    assert sorted(ours) == sorted(weights.name for weights in theirs_table)
    for theirs in theirs_table:
        entry = ours[theirs.name]
        transform = theirs.transforms()
        assert entry.url == theirs.url and theirs.url.endswith(f"-{entry.sha256}.pth")
        assert (entry.resize, entry.crop) == (transform.resize_size[0], transform.crop_size[0])
        assert transform.interpolation == InterpolationMode(entry.interpolation)
        assert (list(entry.mean), list(entry.std)) == (transform.mean, transform.std)
        metrics = theirs.meta["_metrics"]["ImageNet-1K"]
        assert (entry.published.top1, entry.published.top5) == (metrics["acc@1"],
                                                                metrics["acc@5"])
        assert entry.class_names() == theirs.meta["categories"]
        assert entry.default == (theirs_table.DEFAULT is theirs)


def test_timms_entries_are_timms_pretrained_cfg_at_its_test_size():
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    hub = [entry for entry in table.entries() if entry.name.startswith("hf-hub:")]
    assert {entry.name for entry in hub} >= {f"hf-hub:timm/resnet50.{tag}"
                                             for tag in ("tv_in1k", "tv2_in1k", "a1_in1k")}
    for entry in hub:
        cfg = get_pretrained_cfg(entry.name.removeprefix("hf-hub:timm/"))
        assert cfg.hf_hub_id == entry.name.removeprefix("hf-hub:")
        config = resolve_data_config(pretrained_cfg=cfg.to_dict(), use_test_size=True)
        size = config["input_size"][-1]
        assert (entry.resize, entry.crop) == (math.floor(size / config["crop_pct"]), size)
        assert entry.interpolation == config["interpolation"]
        assert (entry.mean, entry.std) == (config["mean"], config["std"])
        assert entry.license.lower() == cfg.license and entry.sha256 is None


def test_every_hash_in_a_file_name_is_its_entrys_sha256():
    for entry in table.entries():
        named = re.search(r"-([0-9a-f]{8,})\.(pth|th)$", entry.url)
        assert (named[1] if named else None) == entry.sha256, entry.name


def write_table(tmp_path, monkeypatch, *entries):
    table = tmp_path / "mine.json"
    table.write_text(json.dumps({"entries": list(entries)}))
    monkeypatch.setenv("RESNET_JAX_WEIGHTS_TABLE", str(table))
    return table


def own_entry(**changes):
    entry = {"model": "resnet20", "name": "MINE", "default": False, "source": "me",
             "url": "https://example.invalid/resnet20-0123abcd.th", "sha256": "0123abcd",
             "format": "torch.save", "preprocessing": {"resize": 32, "crop": 32,
                                                       "interpolation": "bilinear",
                                                       "mean": [0.5] * 3, "std": [0.25] * 3},
             "classes": ["cat", "dog"], "published": None, "license": "MIT"}
    return {**entry, **changes}


@pytest.mark.parametrize("changes,message", [
    ({"model": "resnet21"}, 'entry 1: model="resnet21" is not a model of this project'),
    ({"name": "mine"}, 'entry 1: name="mine" must be a name in capitals'),
    ({"sha256": "12fca82"}, "must be the file's SHA-256 (8 to 64 lowercase hex digits)"),
    ({"preprocessing": {"resize": 16, "crop": 32, "interpolation": "bilinear",
                        "mean": [0.5] * 3, "std": [0.25] * 3}}, "needs whole-number resize >= "
                                                                "crop"),
    ({"classes": ["cat", "cat"]}, "or a list of distinct class names"),
    ({"published": {"top1": "91", "top5": None, "on": "x", "where": "y"}},
     "percentages from 0 to 100"),
    ({"licence": "MIT"}, "entry 1 has unknown licence; an entry holds exactly model, name"),
    ({"name": "IMAGENET1K_V1", "model": "resnet18"}, "names resnet18 IMAGENET1K_V1 again, as "
                                                     "weights_table.json, entry 1 does"),
])
def test_a_table_of_ones_own_is_checked_field_by_field_at_every_door(
        tmp_path, monkeypatch, capsys, changes, message):
    table = write_table(tmp_path, monkeypatch, own_entry(**changes))
    with pytest.raises(WeightsError, match=re.escape(message)):
        load_weights("resnet20", "MINE")
    assert predict.main(["x.jpg", "--model", "resnet20", "--weights", "MINE"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {table}") and message in error and error.count("\n") == 1
    assert main([]) == 1


def test_a_file_whose_hash_is_an_entrys_is_that_entry_whatever_its_name(tmp_path, monkeypatch,
                                                                        capsys):
    import jax

    from resnet_jax import create_model
    from resnet_jax.models.torch_compat import to_torchvision
    variables = create_model("resnet20", num_classes=2).init(jax.random.key(1),
                                                            np.zeros((1, 8, 8, 3)))
    file = tmp_path / "anything.bin"
    torch.save({k: torch.from_numpy(np.array(v))
                for k, v in to_torchvision(variables, "resnet20", num_classes=2).items()}, file)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    write_table(tmp_path, monkeypatch, own_entry(sha256=digest))
    loaded = load_weights(None, str(file))
    assert loaded.class_names == ["cat", "dog"] and loaded.source == f"resnet20 MINE (me; {file})"
    assert (loaded.preprocessing.mean, loaded.preprocessing.assumed) == ((0.5,) * 3, "")
    with pytest.raises(WeightsError, match=re.escape(
            f"{file} is the file of resnet20 MINE (its SHA-256 is the weights table's), not a "
            "resnet32's; leave out model, or pass model='resnet20'")):
        load_weights("resnet32", str(file))
    published = {"top1": 90.0, "top5": None, "on": "their cats and dogs", "where": "a test"}
    write_table(tmp_path, monkeypatch, own_entry(sha256=digest, published=published))
    (tmp_path / "pets" / "cat").mkdir(parents=True)
    Image.new("RGB", (20, 20), (200, 0, 0)).save(tmp_path / "pets" / "cat" / "0.png")
    assert evaluate.main(["--weights", str(file), "--dataset", f"folder:{tmp_path / 'pets'}",
                          "--crop", "16", "--resize", "16"]) == 0
    assert re.search(r"published top-1 90% on their cats and dogs \(a test\); this folder: "
                     r"\d+\.\d{3}% \(unlike the published setting: 1 of the 2 classes, sizes "
                     r"as given\)\n", capsys.readouterr().out)
    write_table(tmp_path, monkeypatch, own_entry(sha256=digest, classes="CIFAR-10"))
    with pytest.raises(WeightsError, match="says resnet20 MINE has 10 classes, but its file "
                                           "holds 2"):
        load_weights(None, str(file))


HUB_RUN = """
import sys
sys.modules['torch'] = sys.modules['torchvision'] = None
sys.path.insert(0, 'tests')
import numpy as np
from helpers import tiny_config
from resnet_jax import predict
from resnet_jax.weights import initial_variables, load_weights
for name in sys.argv[3:]:
    try:
        print('loaded', load_weights(None, name).describe())
    except Exception as error:
        print(f'error: {type(error).__name__}: {error}')
weights = load_weights(None, 'hf-hub:timm/resnet50.a1_in1k')
x = weights.preprocessing(sys.argv[1])
logits = weights.model.apply(weights.variables, x[None], train=False)
np.savez(sys.argv[2], x=x, logits=logits)
print('preprocessing', weights.preprocessing.describe())
assert predict.main([sys.argv[1], '--weights', 'hf-hub:timm/resnet50.a1_in1k', '--top', '1']) == 0
initial_variables(tiny_config(model='resnet50', init_from='hf-hub:timm/resnet50.a1_in1k'))
"""


def hub_headers(commit, damaged):
    def headers(path, body):
        digest = hashlib.sha256(body + (b"!" if path.startswith(damaged) else b"")).hexdigest()
        return {"X-Repo-Commit": commit, "ETag": f'"{digest}"'}
    return headers


def test_timms_weights_come_from_the_hub_as_timm_reads_them_offline_and_without_torch(tmp_path):
    """A snapshot timm itself writes (model.safetensors, config.json), served in the Hub's
    manner: read through huggingface_hub's cache in a process without torch, to timm's
    logits and timm's test-size transform; a damaged download and a timm variant of
    other layers refused; then read again offline from the cache alone."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.models import save_for_hf

    torch.manual_seed(0)
    reference = timm.create_model("resnet50.a1_in1k", pretrained=False).eval()
    for snapshot, name in ((tmp_path / "a1", "resnet50.a1_in1k"),
                           (tmp_path / "tv", "resnet50.tv_in1k")):
        save_for_hf(timm.create_model(name) if name != "resnet50.a1_in1k" else reference,
                    snapshot, safe_serialization=True)
    files = {f"/timm/{name}/resolve/main/{file}": (snapshot / file).read_bytes()
             for snapshot, name in ((tmp_path / "a1", "resnet50.a1_in1k"),
                                    (tmp_path / "tv", "resnet50.tv_in1k"))
             for file in ("model.safetensors", "config.json")}
    photo = tmp_path / "photo.png"
    Image.fromarray(make_photo(np.random.default_rng(0), 300, 340)).save(photo)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    asked_for = ["hf-hub:timm/resnet50.tv_in1k", "hf-hub:timm/resnet50d.ra2_in1k"]
    with serving(files, hub_headers("c0ffee" * 6 + "0000", "/timm/resnet50.tv_in1k/resolve/"
                                    "main/model.safetensors")) as (address, asked):
        online = subprocess.run([sys.executable, "-c", HUB_RUN, str(photo), tmp_path / "out.npz",
                                 *asked_for], cwd=REPO, capture_output=True, text=True,
                                env={**env, "HF_ENDPOINT": address}, timeout=600)
    assert online.returncode == 0, online.stderr[-3000:]
    lines = online.stdout.splitlines()
    assert lines[0].startswith("error: WeightsError: hf-hub:timm/resnet50.tv_in1k's "
                               "model.safetensors is damaged (SHA-256 ")
    assert lines[1] == ("error: WeightsError: hf-hub:timm/resnet50d.ra2_in1k holds timm's "
                        "resnet50d, which has a deep stem (three 3x3 convolutions) and "
                        "average-pool shortcuts; this project's models have torchvision's layout "
                        "(7x7 stem, strided shortcuts, plain blocks: resnet_jax.list_models()), "
                        "so pass one of those, e.g. hf-hub:timm/resnet50.a1_in1k")
    assert not any("resnet50d" in path for _, path in asked), "refused before any download"
    a1 = [request for request in asked if "resnet50.a1_in1k" in request[1]]
    assert sorted(a1) == sorted((method, f"/timm/resnet50.a1_in1k/resolve/main/{file}")
                                for method in ("GET", "HEAD")
                                for file in ("config.json", "model.safetensors")), (
        "read three times, fetched once: then from the Hub cache, asking nothing")
    assert ("preprocessing shorter side resized to 288 (bicubic), centre crop 288, "
            "ImageNet's mean and std") in lines
    assert ("weights: hf-hub:timm/resnet50.a1_in1k (revision c0ffeec0ffee, "
            in online.stdout and "published top-1 81.24%, top-5 95.112% on ImageNet-1k's "
            "validation set (timm's results-imagenet.csv)" in online.stdout)
    assert "starting from hf-hub:timm/resnet50.a1_in1k" in online.stderr
    ours = np.load(tmp_path / "out.npz")
    transform = create_transform(**resolve_data_config(model=reference, use_test_size=True))
    theirs = transform(Image.open(photo).convert("RGB"))
    np.testing.assert_allclose(ours["x"], theirs.numpy().transpose(1, 2, 0), atol=1e-5)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ours["x"].transpose(2, 0, 1)[None].copy()))
    np.testing.assert_allclose(ours["logits"], expected.numpy(), rtol=1e-4, atol=1e-4)

    offline = subprocess.run([sys.executable, "-c", HUB_RUN, str(photo), tmp_path / "again.npz",
                              "hf-hub:timm/resnet34.a1_in1k", "hf_hub:timm/resnet50.a1_in1k"],
                             cwd=REPO, capture_output=True,
                             text=True, env={**env, "HF_HUB_OFFLINE": "1",
                                             "HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=600)
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert offline.stdout.splitlines()[0] == (
        "error: WeightsError: hf-hub:timm/resnet34.a1_in1k is not in the Hub cache and cannot be "
        "fetched (HF_HUB_OFFLINE, or no network); fetch it where there is network (hf download "
        "timm/resnet34.a1_in1k) and copy the cache, or pass the snapshot's folder")
    assert offline.stdout.splitlines()[1].startswith(
        "loaded hf-hub:timm/resnet50.a1_in1k (revision c0ffeec0ffee")  # timm's other spelling
    np.testing.assert_array_equal(np.load(tmp_path / "again.npz")["logits"], ours["logits"])


@pytest.mark.parametrize("entries,message", [
    ([own_entry(url="not a url")], 'url="not a url" must be the file\'s address'),
    ([own_entry(sha256=None)], "sha256=null is for hf-hub: names"),
    ([own_entry(name="DEFAULT")], "is kept for what each model's \"default\": true entry is"),
    ([own_entry(name="hf-hub:timm")], "must be a name in capitals"),
    ([own_entry(default=True)], "makes a second default for resnet20 (CIFAR10_AKAMASTER is one)"),
    ([own_entry(sha256="12fca82f")], "claims the file of resnet20 CIFAR10_AKAMASTER"),
    ([own_entry(), own_entry(model="resnet32", sha256="0123abcd0")], "claims the file of "
                                                                    "resnet20 MINE"),
])
def test_entries_that_contradict_themselves_or_each_other_are_refused(
        tmp_path, monkeypatch, entries, message):
    write_table(tmp_path, monkeypatch, *entries)
    with pytest.raises(WeightsError, match=re.escape(message)):
        table.entries()


def test_a_name_mistyped_or_shadowed_is_told_what_it_was_taken_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match=re.escape(
            "cifar10_akamaster does not exist; did you mean CIFAR10_AKAMASTER?")):
        load_weights("resnet20", "cifar10_akamaster")
    with pytest.raises(WeightsError, match="DEFAULT names weights of resnet18, resnet34, "):
        load_weights(None, "DEFAULT")
    with pytest.raises(ArgumentError, match=re.escape("weights None is not a path") + ".*"
                       + re.escape("weights='DEFAULT'")):
        load_weights("resnet20", None)
    (tmp_path / "IMAGENET1K_V2").mkdir()
    with pytest.raises(WeightsError, match="IMAGENET1K_V2 is also a weights name, read as this "
                                           "folder: to use the weights, run from another folder"):
        load_weights("resnet50", "IMAGENET1K_V2")
    with pytest.raises(ArgumentError, match="classifier 'no' is not True or False"):
        load_weights("resnet20", "DEFAULT", classifier="no")
    with pytest.raises(WeightsError, match="resnt50, a name neither timm nor this project has: "
                                           "did you mean resnet50"):
        load_weights(None, "hf_hub:timm/resnt50.a1_in1k")


def test_a_cifar_state_dict_with_a_linear_head_reads_as_theirs_in_any_wrapping(tmp_path):
    import jax
    from safetensors.numpy import save_file

    from resnet_jax import create_model
    from resnet_jax.models.torch_compat import to_torchvision

    variables = create_model("resnet20").init(jax.random.key(0), np.zeros((1, 8, 8, 3)))
    state = {f"module.{k.replace('fc.', 'linear.')}": np.array(v)
             for k, v in to_torchvision(variables, "resnet20").items()}
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "bare.pth")
    save_file(state, str(tmp_path / "converted.safetensors"))
    for name in ("bare.pth", "converted.safetensors"):
        preprocessing = load_weights("resnet20", str(tmp_path / name)).preprocessing
        assert (preprocessing.resize, preprocessing.crop) == (32, 32), name
        assert preprocessing.assumed.endswith(f"{name} is in their layout, its classifier named "
                                              "linear"), preprocessing.assumed
