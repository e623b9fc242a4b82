"""ResNet in JAX/Flax (linen and NNX), with exact torchvision weight parity.

The package by audience: :mod:`resnet_jax.models` (linen and NNX modules, the torchvision
conversion, the layer table), :mod:`resnet_jax.data` (datasets and input pipelines),
:mod:`resnet_jax.runs` (a run's work directory and checkpoints), :mod:`resnet_jax.weights`
(weights by name, file, Hub repository or run), :mod:`resnet_jax.train` (the trainer), and
here the commands (predict, evaluate, export) with what every layer shares.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

# Each name is imported on first use: the command lines start (and take stop signals) before
# JAX loads, and Orbax and the image libraries are not needed for the models alone.
_HOMES = {"BasicBlock": "models", "Bottleneck": "models", "ResNet": "models",
          "create_model": "models", "list_models": "models", "restore": "runs.trained",
          "pretrained": "weights"}

# Modules that moved into the sub-packages, under the names they had before: each old name
# is the same module object as the new one (``python -m`` runs it too).
MOVED = {f"resnet_jax.{old}": f"resnet_jax.{new}" for old, new in {
    "nnx": "models.nnx", "torch_compat": "models.torch_compat", "summary": "models.layer_table",
    "pipelines": "data.pipelines", "folders": "data.folders",
    "workdir": "runs.workdir", "checkpoints": "runs.checkpoints",
    "weights_table": "weights.table", "weight_files": "weights.state_dicts", "pth": "weights.pth",
    "hub": "weights.hub", "evaluation": "train.scoring",
    **{name: f"train.{name}" for name in (
        "config_schema", "training", "train_calls", "loop", "host_events", "start", "report",
        "metrics", "utilisation", "interrupts", "ema", "mixing", "erasing")},
}.items()}


def _new_name(name: str) -> str | None:
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module it moved to. The import system
    gives that module the old name's spec, so this loader reads the code of either name."""

    def __init__(self) -> None:
        self.moved_specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, name, path=None, target=None):
        new = _new_name(name)
        if new is None:
            return None
        spec = self.moved_specs.setdefault(new, importlib.util.find_spec(new))
        return importlib.util.spec_from_loader(
            name, self, origin=spec.origin,
            is_package=spec.submodule_search_locations is not None)

    def create_module(self, spec):
        return importlib.import_module(_new_name(spec.name))

    def exec_module(self, module):
        pass  # the module ran under its new name

    def get_code(self, name):
        new = _new_name(name) or name
        return self.moved_specs[new].loader.get_code(new)


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"resnet_jax.{_HOMES[name]}"), name)
    if importlib.util.find_spec(f"resnet_jax.{name}") is not None:  # resnet_jax.errors...
        return importlib.import_module(f"resnet_jax.{name}")
    raise AttributeError(f"module 'resnet_jax' has no attribute {name!r}")


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models", "pretrained",
           "restore"]
