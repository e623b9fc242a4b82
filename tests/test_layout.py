"""The house: the package by audience, each layer importing only itself and the layers below
it (imports inside functions and through a package's ``__init__`` count), no import cycle,
no module too long to read, and the old module names the README uses still the same modules."""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("resnet_jax", "configs", "torch_side", "tools", "benchmarks", "train")
# Bottom to top: a module may import its own layer and those before it, never one after.
LAYERS = [
    ("base", ["resnet_jax", "resnet_jax.errors", "resnet_jax.hints", "resnet_jax.arguments",
              "resnet_jax.parallel", "resnet_jax.progress", "resnet_jax.quiet", "resnet_jax.files",
              "resnet_jax.signals", "resnet_jax.command_line"]),
    ("models", ["resnet_jax.models"]),
    ("runs", ["resnet_jax.runs"]),
    ("data", ["resnet_jax.data"]),
    ("weights", ["resnet_jax.weights"]),
    ("train", ["resnet_jax.train"]),
    ("commands", ["resnet_jax.predict", "resnet_jax.evaluate", "resnet_jax.export"]),
    ("configs", ["configs"]),
    ("tools", ["tools"]),
    ("torch_side", ["torch_side"]),
    ("benchmarks", ["benchmarks"]),
    ("train.py", ["train"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for top in OURS
           for p in ([REPO / "train.py"] if top == "train" else (REPO / top).rglob("*.py"))}


def layer(module: str) -> int:
    """The layer of ``module``: that of the longest prefix named in LAYERS."""
    best = max((prefix for _, prefixes in LAYERS for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, (_, prefixes) in enumerate(LAYERS) if best in prefixes)


def imports(module: str) -> set[str]:
    """The project's modules ``module`` imports, anywhere in it: ``from X import name`` is X's
    submodule ``name`` where there is one, else X itself (its ``__init__``)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES}


def test_every_module_has_a_layer_and_imports_none_above_it():
    upward = [f"{module} ({LAYERS[layer(module)][0]}) imports {other} "
              f"({LAYERS[layer(other)][0]})"
              for module in MODULES for other in imports(module) if layer(other) > layer(module)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_through_others():
    graph = {module: imports(module) - {module} for module in MODULES}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for other in sorted(graph[module]):
            assert state.get(other) != "open", " -> ".join([*path, module, other])
            if other not in state:
                visit(other, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_the_package_is_arranged_by_audience():
    top = sorted(p.name for p in (REPO / "resnet_jax").glob("*.py"))
    packages = sorted(p.parent.name for p in (REPO / "resnet_jax").glob("*/__init__.py"))
    assert len(top) <= 14, top
    assert {"models", "data", "runs", "weights", "train"} <= set(packages), packages


def test_no_module_is_too_long_to_read():
    lengths = {str(path.relative_to(REPO)): len(path.read_text().splitlines())
               for path in MODULES.values()}
    assert {path: lines for path, lines in lengths.items() if lines > 400} == {}


@pytest.mark.parametrize("old, new", [
    ("resnet_jax.nnx", "resnet_jax.models.nnx"),
    ("resnet_jax.summary", "resnet_jax.models.layer_table"),
    ("resnet_jax.torch_compat", "resnet_jax.models.torch_compat"),
    ("resnet_jax.pipelines", "resnet_jax.data.pipelines"),
    ("resnet_jax.pipelines.images", "resnet_jax.data.pipelines.images"),
    ("resnet_jax.ema", "resnet_jax.train.ema"),
    ("resnet_jax.checkpoints", "resnet_jax.runs.checkpoints"),
    ("resnet_jax.loop", "resnet_jax.train.loop"),
    ("resnet_jax.evaluation", "resnet_jax.train.scoring"),
])
def test_the_old_module_names_are_the_moved_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


@pytest.mark.parametrize("name", ["resnet_jax.summary", "resnet_jax.models.layer_table"])
def test_both_command_names_run_after_the_old_one_was_imported(name, monkeypatch, capsys):
    import runpy
    import sys

    importlib.import_module("resnet_jax.summary")
    monkeypatch.setattr(sys, "argv", [name, "resnet20", "--input-size", "32"])
    runpy.run_module(name, run_name="__main__")
    assert "layer1_0/conv1" in capsys.readouterr().out


def test_the_config_base_answers_to_its_old_name_too():
    from configs import base, paper_cifar

    assert paper_cifar.get_config("resnet56").to_dict() == base.get_config("resnet56").to_dict()


def test_a_command_says_its_name_as_it_was_run():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "resnet_jax.summary", "resnet20", "--bogus"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stderr == ("error: unrecognized arguments: --bogus (see python -m "
                             "resnet_jax.summary --help)\n")


def test_the_parity_script_takes_only_sizes_it_can_run():
    import argparse

    from torch_side.parity import image_size

    assert image_size("97x81") == "97x81"
    for wrong in ("abc", "8x8", "224", "224x-3"):
        with pytest.raises(argparse.ArgumentTypeError, match="HEIGHTxWIDTH with both sides"):
            image_size(wrong)
