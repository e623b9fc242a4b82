"""Measure how closely torchvision weights reproduce torchvision's logits, per depth.

    python torch_side/parity.py [--sizes 224x224 97x81] [--seed 0]

Random torchvision weights with randomised BatchNorm statistics; prints the
max |difference| of eval-mode logits relative to max |logit|, float32.
"""


import argparse
import sys
from pathlib import Path

import numpy as np

if not __package__:  # run as a file (python torch_side/parity.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from resnet_jax import create_model
from resnet_jax.command_line import ArgumentParser
from resnet_jax.models import IMAGENET_DEPTHS
from resnet_jax.models.torch_compat import from_torchvision
from torch_side.required import torch


def randomised_torchvision(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    import torchvision

    model = getattr(torchvision.models, name)().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def image_size(text: str) -> str:
    """An argparse type: ``HxW``, each side at least 32 pixels (the nets' overall stride)."""
    sides = text.split("x")
    if len(sides) != 2 or not all(s.isdigit() and int(s) >= 32 for s in sides):
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH with both sides of 32 "
                                         "pixels or more (e.g. 224x224)")
    return text


def main() -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=image_size, default=["224x224", "97x81"],
                        help="input sizes, HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'model':<10} {'input':<9} {'max|diff|':>10} {'max|logit|':>11} {'relative':>9}")
    for name in (f"resnet{depth}" for depth in IMAGENET_DEPTHS):
        reference = randomised_torchvision(name, args.seed)
        variables = from_torchvision(reference.state_dict(), name)
        model = create_model(name)
        for size in args.sizes:
            height, width = map(int, size.split("x"))
            images = np.random.default_rng(args.seed).standard_normal(
                (2, height, width, 3), dtype=np.float32)
            with torch.no_grad():
                theirs = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
            ours = np.asarray(model.apply(variables, images, train=False))
            error, scale = np.abs(ours - theirs).max(), np.abs(theirs).max()
            print(f"{name:<10} {size:<9} {error:>10.2e} {scale:>11.3g} {error / scale:>9.1e}")


if __name__ == "__main__":
    main()
