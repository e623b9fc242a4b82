"""Per-layer output shapes, parameters and multiply-accumulates of a model.

    python -m resnet_jax.models.layer_table resnet50 --input-size 224

MACs count the convolutions and the classifier (one multiply-accumulate per
weight per output position), the convention behind torchvision's "GFLOPS"
column; BatchNorm, ReLU, pooling and additions are not counted.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from resnet_jax.command_line import ArgumentParser
from resnet_jax.errors import ArgumentError
from resnet_jax.models import create_model, list_models

_LAYER_TYPES = (nn.Conv, nn.Dense, nn.BatchNorm)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One leaf layer: where it sits, what it is, and what it costs."""

    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """All leaf layers of one forward pass, with the model's totals."""

    layers: list[Layer]
    total_params: int

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def __str__(self) -> str:
        header = f"{'layer':<34} {'type':<10} {'output shape':<20} {'params':>12} {'MACs':>15}"
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            lines.append(f"{layer.path:<34} {layer.kind:<10} {str(layer.output_shape):<20} "
                         f"{layer.params:>12,} {layer.macs:>15,}")
        lines.append("-" * len(header))
        lines.append(f"total params: {self.total_params:,}")
        lines.append(f"total MACs:   {self.total_macs:,} ({self.total_macs / 1e9:.3f} G)")
        return "\n".join(lines)


def _macs(module: nn.Module, inputs: jax.ShapeDtypeStruct, output: jax.Array) -> int:
    per_example_outputs = math.prod(output.shape[1:])
    if isinstance(module, nn.Conv):
        fan_in = math.prod(module.kernel_size) * inputs.shape[-1] // module.feature_group_count
        return per_example_outputs * fan_in
    if isinstance(module, nn.Dense):
        return per_example_outputs * inputs.shape[-1]
    return 0


def summarize(module: nn.Module, input_shape: tuple[int, ...], **call_kwargs: Any) -> Summary:
    """Trace ``module`` on one example of ``input_shape`` (NHWC, batch included or not).

    Nothing is computed: shapes come from abstract evaluation.
    """
    if len(input_shape) == 3:
        input_shape = (1, *input_shape)
    if len(input_shape) != 4 or not all(isinstance(n, int) and n > 0 for n in input_shape):
        raise ArgumentError(f"input_shape must be (height, width, channels) or (batch, height, "
                         f"width, channels) of positive sizes, got {tuple(input_shape)}")
    records = []

    def record(next_fun, args, kwargs, context):
        output = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, _LAYER_TYPES):
            records.append((context.module.path, context.module, args[0], output))
        return output

    def init(key: jax.Array, x: jax.Array) -> Any:
        with nn.intercept_methods(record):
            return module.init(key, x, **call_kwargs)

    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    variables = jax.eval_shape(init, jax.random.key(0), x)
    params = traverse_util.flatten_dict(dict(variables.get("params", {})))
    layers = []
    for path, layer, inputs, output in records:
        layer_params = sum(math.prod(v.shape) for p, v in params.items() if p[:-1] == path)
        layers.append(Layer("/".join(path), type(layer).__name__, tuple(output.shape[1:]),
                            layer_params, _macs(layer, inputs, output)))
    total = sum(math.prod(v.shape) for v in params.values())
    return Summary(layers, int(total))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=list_models(), metavar="NAME",
                        help=f"one of: {', '.join(list_models())}")
    parser.add_argument("--input-size", type=int, default=None,
                        help="image side (default: 224 for ImageNet layouts, 32 for CIFAR)")
    args = parser.parse_args(argv)
    model = create_model(args.name)
    size = args.input_size if args.input_size is not None else (
        224 if model.stem == "imagenet" else 32)
    if size < model.total_stride:
        sys.exit(f"error: --input-size must be at least {args.name}'s total stride of "
                 f"{model.total_stride} pixels (its last stage would see less than one), got "
                 f"{size}")
    print(f"{args.name} at {size}x{size}")
    print(summarize(model, (size, size, model.input_channels)))


if __name__ == "__main__":
    main()
