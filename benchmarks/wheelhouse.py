"""Wheels for a machine without network: what the project needs that the machine lacks,
pinned to the versions installed here (where the tests pass).

    python -m benchmarks.wheelhouse --have FREEZE --dest DIR [--python 3.12]
        [--platform manylinux_2_28_x86_64 ...] [--skip tensorflow-cpu,...] [--dry-run]

FREEZE is the other machine's `pip freeze` (or `pip list`, or one name a line). The
needs are this project's requirements and everything they require in turn, read from
the packages installed here, so nothing is fetched to work them out. There:

    pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/wheelhouse.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from packaging.requirements import Requirement

from resnet_jax.command_line import ArgumentParser

REPO = Path(__file__).resolve().parents[1]
# What the evidence command does not need: TensorFlow and TFDS read TFDS data alone.
DEFAULT_SKIP = ("tensorflow-cpu", "tensorflow-datasets", "tensorboard")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(path: Path) -> list[str]:
    """The packages a requirements file names (comments, options and includes aside)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.append(canonical(Requirement(line).name))
    return names


def installed_names(freeze: str) -> set[str]:
    """The packages of a `pip freeze` or `pip list` text, or of one name a line."""
    names = set()
    for line in freeze.splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.lstrip().startswith(("#", "-", "Package")):
            names.add(canonical(match[1]))
    return names


def needs(names: list[str], have: set[str] = frozenset()) -> dict[str, str]:
    """``names`` and everything they require in turn (extras aside), with the versions
    installed here; what the other machine ``have``s brings its own needs there."""
    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found or name in have:
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is not installed here, so its needs are unknown; "
                             "run this where the project's install is (pip install -r "
                             "requirements.txt)") from None
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return found


def to_download(requirements: list[str], have: set[str], skip: set[str]) -> dict[str, str]:
    """What the other machine lacks of the project's needs: name -> version to fetch."""
    wanted = [name for name in requirements if name not in skip]
    return {name: version for name, version in sorted(needs(wanted, have).items())
            if name not in skip}


def download(packages: dict[str, str], dest: Path, python: str, platforms: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tags = [flag for platform in platforms for flag in ("--platform", platform)]
    for name, version in packages.items():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp", *tags,
                        "-d", str(dest), f"{name}=={version}"], check=True)


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = ArgumentParser(prog="python -m benchmarks.wheelhouse",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--have", type=Path, required=True,
                        help="the other machine's pip freeze (or pip list, or names)")
    parser.add_argument("--dest", type=Path, help="where the wheels go")
    parser.add_argument("--python", default="3.12", help="the other machine's Python")
    parser.add_argument("--platform", action="append", help=f"default: {', '.join(PLATFORMS)}")
    parser.add_argument("--skip", default=",".join(DEFAULT_SKIP),
                        help="packages not to fetch, with their own needs (default: TensorFlow, "
                        "TFDS and TensorBoard, which the evidence command does not use)")
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements.txt")
    parser.add_argument("--dry-run", action="store_true", help="list them; fetch nothing")
    args = parser.parse_args(argv)
    if not args.have.is_file():
        parser.error(f"--have {args.have} is not a file; write the other machine's pip freeze "
                     "into one")
    if not args.dry_run and not args.dest:
        parser.error("--dest DIR is needed, where the wheels go (or --dry-run)")
    if not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python {args.python}: give the other machine's Python as 3.N")
    skip = {canonical(name) for name in args.skip.split(",") if name}
    packages = to_download(requirement_names(args.requirements),
                           installed_names(args.have.read_text()), skip)
    print("\n".join(f"{name}=={version}" for name, version in packages.items()))
    if not args.dry_run:
        download(packages, args.dest, args.python, args.platform or list(PLATFORMS))
    return packages


if __name__ == "__main__":
    main()
