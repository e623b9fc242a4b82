"""PyTorch, for the scripts that run it beside JAX: imported here, or one line saying how
to install it (it is not in the README's main install)."""

try:
    import torch
    import torch.nn.functional as F
except ModuleNotFoundError:
    raise SystemExit("error: this script runs PyTorch too; install it with "
                     "pip install -r requirements-dev.txt") from None

__all__ = ["F", "torch"]
