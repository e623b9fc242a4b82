"""Export a model with its weights, for serving without this project.

    python -m resnet_jax.export --weights W --out DIR [--model NAME]

``W`` is what predict and evaluate take (a weights name, hf-hub:timm/NAME, a .pth or
.safetensors file, a run's work directory). DIR receives:

- ``model.jax_export``: a serialised ``jax.export`` artifact, the weights inside, taking
  float32 NHWC images (normalised, as the model takes them) of any batch, height and width
  (at least the network's total stride) and returning float32 logits; read it back with
  :func:`load_jax_export` (``jax.export.deserialize``) in any JAX.
- ``saved_model/``: a TensorFlow SavedModel made through jax2tf, its ``serving_default``
  signature taking ``images`` (float32, [batch, height, width, 3]) and returning
  ``logits``; the weights are its variables.
- ``export.json``: the preprocessing that makes those images (resize, crop, mean, std,
  interpolation), the class names, the input signature and where the weights came from.

An NNX model exports through its linen variables (:func:`resnet_jax.models.nnx.linen_variables`,
string keys, which any serialiser takes) and the linen model, whose logits are the NNX
model's bit for bit.
"""

from __future__ import annotations

if __name__ == "__main__":  # from the start: Ctrl-C while the libraries load is one line too
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import export  # noqa: E402

from resnet_jax import hints  # noqa: E402
from resnet_jax.command_line import ArgumentParser, one_line_warnings  # noqa: E402
from resnet_jax.errors import ArgumentError, ResNetError  # noqa: E402
from resnet_jax.files import PARTIAL_SUFFIX  # noqa: E402
from resnet_jax.models import ResNet  # noqa: E402
from resnet_jax.quiet import tensorflow_notices_off  # noqa: E402
from resnet_jax.signals import removed_if_stopped  # noqa: E402

JAX_FILE, SAVED_MODEL, INFO_FILE = "model.jax_export", "saved_model", "export.json"


def symbolic_images(model: ResNet) -> jax.ShapeDtypeStruct:
    """Float32 NHWC images of symbolic batch, height and width, each side at least the
    network's total stride."""
    stride = model.total_stride
    batch, height, width = export.symbolic_shape(
        "b, h, w", constraints=(f"h >= {stride}", f"w >= {stride}"))
    return jax.ShapeDtypeStruct((batch, height, width, model.input_channels), jnp.float32)


def export_model(model: ResNet, variables: dict[str, Any]) -> export.Exported:
    """``model`` with ``variables`` as a ``jax.export`` artifact: images -> logits."""
    if not isinstance(model, ResNet):
        raise ArgumentError(f"export_model takes a linen resnet_jax model; got a "
                            f"{type(model).__name__} (an NNX model: pass its spec and "
                            "resnet_jax.nnx.linen_variables(model))")
    inference = jax.jit(lambda images: model.apply(variables, images, train=False))
    return export.export(inference)(symbolic_images(model))


def load_jax_export(path: str | Path) -> Any:
    """The function a ``model.jax_export`` file holds: images -> logits."""
    return export.deserialize(bytearray(Path(path).read_bytes())).call


def save_saved_model(model: ResNet, variables: dict[str, Any], path: Path) -> None:
    """A TensorFlow SavedModel of ``model`` through jax2tf, the variables as its own, with a
    ``serving_default`` signature: ``images`` -> ``logits``, batch, height and width free."""
    tensorflow_notices_off()
    import tensorflow as tf
    from jax.experimental import jax2tf

    stride = model.total_stride
    convert = jax2tf.convert(lambda weights, images: model.apply(weights, images, train=False),
                             polymorphic_shapes=[None, "(b, h, w, _)"],
                             polymorphic_constraints=(f"h >= {stride}", f"w >= {stride}"),
                             with_gradient=False)
    module = tf.Module()
    module.weights = tf.nest.map_structure(lambda a: tf.Variable(np.asarray(a),
                                                                 trainable=False), variables)

    @tf.function(autograph=False, input_signature=[
        tf.TensorSpec([None, None, None, model.input_channels], tf.float32, name="images")])
    def serve(images: Any) -> dict[str, Any]:
        return {"logits": convert(module.weights, images)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def write_export(weights: Any, out: Path) -> dict[str, Any]:
    """Both artifacts and the JSON beside them, for loaded ``weights``
    (:func:`resnet_jax.weights.load_weights`), into the new or empty folder ``out``, whole or
    not at all (they are written beside it first); returns what the JSON says."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=PARTIAL_SUFFIX, dir=out.parent))
    try:
        with removed_if_stopped(partial):
            info = _write_files(weights, partial)
            if out.is_dir():
                out.rmdir()  # empty: checked by the command before anything was written
            partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return info


def _write_files(weights: Any, out: Path) -> dict[str, Any]:
    (out / JAX_FILE).write_bytes(export_model(weights.model, weights.variables).serialize())
    save_saved_model(weights.model, weights.variables, out / SAVED_MODEL)
    stride = weights.model.total_stride
    info = {"weights": weights.describe(),
            "input": {"dtype": "float32", "layout": "NHWC", "shape": ["batch", "height",
                      "width", weights.model.input_channels], "min_side": stride,
                      "normalised": "(pixels / 255 - mean) / std"},
            "output": "logits, float32 [batch, classes]",
            "preprocessing": dataclasses.asdict(weights.preprocessing),
            "class_names": weights.class_names, "files": [JAX_FILE, SAVED_MODEL]}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m resnet_jax.export",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="as predict's --weights")
    parser.add_argument("--model", help="the model, where the weights do not name it")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out} {'is a file' if not args.out.is_dir() else 'is not empty'}"
                     "; pass a new or empty folder (nothing in it is replaced)")
    from resnet_jax.weights import load_weights

    with hints.door(hints.PREDICT), one_line_warnings():
        try:
            info = write_export(load_weights(args.model, args.weights, classifier=False),
                                args.out)
        except ResNetError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    print(f"exported {info['weights']} to {args.out}: {JAX_FILE}, {SAVED_MODEL}/, {INFO_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
