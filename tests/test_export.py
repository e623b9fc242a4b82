"""Exported models: jax.export with symbolic batch, height and width (linen and NNX), and
python -m resnet_jax.export's two artifacts, each read back (the SavedModel by TensorFlow
in a fresh process) to the live model's logits."""

import json
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import REPO

from resnet_jax import create_model
from resnet_jax.errors import ArgumentError
from resnet_jax.export import INFO_FILE, export_model, load_jax_export, main
from resnet_jax.models import nnx as resnet_nnx
from resnet_jax.models.torch_compat import to_torchvision

SHAPES = [(1, 32, 32), (3, 40, 48)]  # two batch sizes, two image sizes


def images(batch, height, width, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, height, width, 3), jnp.float32)


@pytest.mark.parametrize("name,shapes", [("resnet20", SHAPES),  # option A shortcuts
                                         ("resnet18", SHAPES[1:])])  # the ImageNet stem
def test_a_jax_export_round_trip_gives_the_live_logits_at_any_size(name, shapes):
    model = create_model(name, num_classes=10)
    variables = model.init(jax.random.key(0), images(1, 32, 32))
    call = jax.jit(load_jax_export_bytes(export_model(model, variables).serialize()))
    for shape in shapes:
        x = images(*shape)
        np.testing.assert_allclose(call(x), model.apply(variables, x, train=False),
                                   rtol=1e-5, atol=1e-5)


def load_jax_export_bytes(data):
    return jax.export.deserialize(bytearray(data)).call


def test_an_nnx_model_exports_through_its_linen_variables():
    model = resnet_nnx.create_model("resnet20", num_classes=10, rngs=nnx.Rngs(0))
    exported = export_model(model.spec, resnet_nnx.linen_variables(model))
    for shape in SHAPES:
        x = images(*shape, seed=1)
        np.testing.assert_allclose(exported.call(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ArgumentError, match="export_model takes a linen resnet_jax model"):
        export_model(model, {})


def test_symbolic_sides_need_constraints_to_pass_the_size_check():
    model = create_model("resnet20")
    variables = model.init(jax.random.key(0), images(1, 32, 32))
    b, h, w = jax.export.symbolic_shape("b, h, w")
    with pytest.raises(ArgumentError, match="give them constraints, e.g. jax.export."
                                            "symbolic_shape"):
        jax.export.export(jax.jit(lambda x: model.apply(variables, x)))(
            jax.ShapeDtypeStruct((b, h, w, 3), jnp.float32))


SAVED_MODEL_RUN = """
import json, sys
import numpy as np
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
for path in sys.argv[2:]:
    x = np.load(path)
    np.save(path.replace(".npy", ".tf.npy"), served(images=tf.constant(x))["logits"].numpy())
print(json.dumps(sorted(served.structured_input_signature[1])))
"""


def test_the_export_command_writes_both_artifacts_and_tensorflow_serves_them(tmp_path):
    model = create_model("resnet20", num_classes=10)
    variables = model.init(jax.random.key(2), images(1, 32, 32))
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in
                to_torchvision(variables, "resnet20", num_classes=10).items()},
               tmp_path / "r20.pth")
    out = tmp_path / "exported"
    assert main(["--weights", str(tmp_path / "r20.pth"), "--model", "resnet20",
                 "--out", str(out)]) == 0
    inputs = []
    for shape in SHAPES:
        inputs.append(tmp_path / f"x{shape[0]}.npy")
        np.save(inputs[-1], np.asarray(images(*shape, seed=3)))
    served = subprocess.run([sys.executable, "-c", SAVED_MODEL_RUN, str(out / "saved_model"),
                             *map(str, inputs)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    assert json.loads(served.stdout.splitlines()[-1]) == ["images"]
    call = load_jax_export(out / "model.jax_export")
    for path in inputs:
        x = np.load(path)
        live = model.apply(variables, x, train=False)
        np.testing.assert_allclose(np.load(str(path).replace(".npy", ".tf.npy")), live,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(call(x), live, rtol=1e-5, atol=1e-5)
    info = json.loads((out / INFO_FILE).read_text())
    assert info["preprocessing"]["crop"] == 224 and info["input"]["min_side"] == 4
    assert info["class_names"] == [str(i) for i in range(10)]
    with pytest.raises(SystemExit):  # nothing in a used folder is replaced
        main(["--weights", str(tmp_path / "r20.pth"), "--model", "resnet20", "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_ctrl_c_while_exporting_is_one_line_and_leaves_no_folder(tmp_path):
    """Stopped while it writes, the command removes its unfinished folder: --out is not made,
    and the same command then runs on a clean slate."""
    weights = tmp_path / "r20.pth"
    model = create_model("resnet20", num_classes=10)
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in to_torchvision(
        model.init(jax.random.key(2), images(1, 32, 32)), "resnet20", num_classes=10).items()},
        weights)
    process = subprocess.Popen([sys.executable, "-m", "resnet_jax.export", "--weights",
                                str(weights), "--model", "resnet20", "--out",
                                str(tmp_path / "exported")], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240  # minutes of margin: a busy machine is slow to start
    while time.monotonic() < deadline and process.poll() is None and not any(
            p.name.startswith(".exported.") for p in tmp_path.iterdir()):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert (process.returncode, err.strip().splitlines()[-1]) == (
        130, "error: stopped by SIGINT; nothing was written"), err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r20.pth"]
