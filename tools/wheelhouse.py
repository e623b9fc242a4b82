"""Wheels for a machine without network: what the project needs that the machine lacks,
pinned to the versions installed here (where the tests pass).

    python -m tools.wheelhouse --have FREEZE --dest DIR [--python 3.12]
        [--platform manylinux_2_28_x86_64 ...] [--skip NAME,...] [--no-default-skip] [--dry-run]

FREEZE is the other machine's `pip freeze` (or `pip list`, or one name a line); a line
that is none of these is refused, quoted. The needs are this project's requirements and
everything they require in turn, read from the packages installed here, so nothing is
fetched to work them out. TensorFlow, TFDS, TensorBoard and huggingface_hub are left out
(the evidence command uses none of them; ``--no-default-skip`` keeps them), and ``--skip``
leaves out more. A JAX plugin the machine has (jax-cuda12-plugin...) is fetched again at the jaxlib
version fetched, where it differs: JAX sees only the CPU when they disagree. There:

    pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

if not __package__:  # run as a file (python tools/wheelhouse.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from resnet_jax.command_line import ArgumentParser

REPO = Path(__file__).resolve().parents[1]
# What the evidence command does not need: TensorFlow and TFDS read TFDS data alone, and
# huggingface_hub fetches hf-hub: weights.
DEFAULT_SKIP = ("tensorflow-cpu", "tensorflow-datasets", "tensorboard", "huggingface-hub")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements a file names (comments, options and includes aside)."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


NAME = r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
# The lines of a pip freeze (name==version, name @ URL), a pip list (name version
# [location]) or a list of names; what else may stand in them (comments, options, pip
# list's header and rule).
LINES = (re.compile(rf"{NAME}\s*==\s*(\S+?)(?:\s*;.*)?"), re.compile(rf"{NAME}\s+@\s+\S+()"),
         re.compile(rf"{NAME}\s+(\S+)(?:\s+\S.*)?"), re.compile(rf"{NAME}()"))
SKIPPED = re.compile(r"(#.*|-.*|Package\s+Version.*|-+\s+-+.*)?")
# JAX's accelerator plugins, whose version must equal jaxlib's.
JAX_PLUGIN = re.compile(r"jax-(cuda|rocm)\d+-(plugin|pjrt)")


class FreezeError(ValueError):
    """A line of --have that is not a pip freeze or pip list line, nor a package name."""


def installed_versions(freeze: str) -> dict[str, str | None]:
    """The packages of a `pip freeze` or `pip list` text, or of one name a line, with their
    versions where the text gives them; FreezeError quoting the first line that is none
    of these (or names a version that is not one)."""
    found: dict[str, str | None] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(freeze.splitlines(), start=1):
        text = line.strip()
        if SKIPPED.fullmatch(text):
            continue
        match = next((m for pattern in LINES if (m := pattern.fullmatch(text))), None)
        if match is None or not _is_version(match[2]):
            raise FreezeError(f"line {number}, {text!r}, is not pip freeze's name==version, pip "
                              "list's name and version, nor a package name; fix or remove it")
        name, version = canonical(match[1]), match[2] or None
        if name in found and found[name] != version:
            raise FreezeError(f"line {number}, {text!r}, names {name} again, at another version "
                              f"than line {lines[name]}; keep the one the machine has")
        found[name], lines[name] = version, number
    return found


def _is_version(text: str) -> bool:
    """Whether ``text`` is empty (no version given) or a version pip can compare."""
    try:
        return not text or bool(Version(text))
    except InvalidVersion:
        return False


def fits_there(have: dict[str, str | None], requirement: Requirement) -> bool:
    """Whether the other machine's copy of ``requirement``'s package satisfies it (a copy
    of unknown version is taken as it is)."""
    name = canonical(requirement.name)
    if name not in have:
        return False
    version = have[name]
    return version is None or requirement.specifier.contains(version, prereleases=True)


def needs(requirements: list[Requirement],
          have: dict[str, str | None] | None = None) -> dict[str, str]:
    """The packages of ``requirements`` and everything they require in turn (extras aside)
    that the other machine lacks or has at a version outside what is required, with the
    versions installed here; what it ``have``s in range brings its own needs there."""
    have = have or {}
    found: dict[str, str] = {}
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        if name in found or fits_there(have, requirement):
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"error: {name} is not installed here, so its needs are unknown; "
                             "--requirements names what this environment holds (the project's "
                             "requirements.txt, after pip install -r requirements.txt)") from None
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                todo.append(needed)
    return found


def to_download(requirements: list[Requirement], have: dict[str, str | None],
                skip: set[str]) -> dict[str, str]:
    """What the other machine lacks of the project's needs: name -> version to fetch."""
    wanted = [r for r in requirements if canonical(r.name) not in skip]
    return {name: version for name, version in sorted(needs(wanted, have).items())
            if name not in skip}


def jax_together(packages: dict[str, str], have: dict[str, str | None]) -> dict[str, str]:
    """What else to fetch so that the JAX the other machine ends up with agrees with itself:
    jax and jaxlib fetched together (each pins the other's version), and each JAX plugin it
    has (jax-cuda12-plugin, ...) at the version of the jaxlib it will have (JAX sees only
    the CPU when they differ): name -> version."""
    more = {}
    kept_apart = have.get("jax") and have.get("jaxlib") and have["jax"] != have["jaxlib"]
    if {"jax", "jaxlib"} & set(packages) or kept_apart:
        more = {name: metadata.version(name) for name in ("jax", "jaxlib")
                if name not in packages}
    jaxlib = {**packages, **more}.get("jaxlib") or have.get("jaxlib")
    return {**more, **{name: jaxlib for name, version in sorted(have.items())
                       if JAX_PLUGIN.fullmatch(name) and jaxlib and version != jaxlib}}


def download(packages: dict[str, str], dest: Path, python: str, platforms: list[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tags = [flag for platform in platforms for flag in ("--platform", platform)]
    for name, version in packages.items():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--implementation", "cp", *tags,
                        "-d", str(dest), f"{name}=={version}"], check=True)


def _requires_python() -> SpecifierSet | None:
    """The Python versions the project runs on (its installed metadata), None if unknown."""
    try:
        return SpecifierSet(metadata.metadata("resnet-jax")["Requires-Python"] or "")
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> dict[str, str]:
    parser = ArgumentParser(prog="python -m tools.wheelhouse",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--have", type=Path, required=True,
                        help="the other machine's pip freeze (or pip list, or names)")
    parser.add_argument("--dest", type=Path, help="where the wheels go")
    parser.add_argument("--python", default="3.12", help="the other machine's Python")
    parser.add_argument("--platform", action="append", help=f"default: {', '.join(PLATFORMS)}")
    parser.add_argument("--skip", default="",
                        help="more packages not to fetch, with their own needs, beside "
                        f"{', '.join(DEFAULT_SKIP)} (the evidence command uses none)")
    parser.add_argument("--no-default-skip", action="store_true",
                        help=f"fetch {', '.join(DEFAULT_SKIP)} too, where missing")
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements.txt")
    parser.add_argument("--dry-run", action="store_true", help="list them; fetch nothing")
    args = parser.parse_args(argv)
    check(parser, args)
    requirements = read_requirements(args.requirements)
    try:
        have = installed_versions(args.have.read_text())
    except FreezeError as error:
        parser.error(f"--have {args.have}: {error}")
    given = {canonical(name.strip()) for name in args.skip.split(",") if name.strip()}
    unknown = sorted(given - set(needs(requirements)))
    if unknown:
        parser.error(f"--skip {', '.join(unknown)}: not among the project's needs; name "
                     "packages of requirements.txt or what they require")
    skip = given | (set() if args.no_default_skip else set(DEFAULT_SKIP))
    packages = to_download(requirements, have, skip)
    outdated = [f"{name} {have[name]}" for name in packages if have.get(name)]
    together = jax_together(packages, have)
    packages.update(together)
    left_out = sorted(skip & set(needs(requirements)))
    print(f"left out (with what only they need): {', '.join(left_out)}"
          + ("" if args.no_default_skip else "; --no-default-skip fetches TensorFlow, TFDS, "
             "TensorBoard and huggingface_hub too") if left_out else "left out: nothing")
    for name, version in together.items():
        there = (f"{name} {have[name]}" if have.get(name) else f"{name} (of unknown version)"
                 if name in have else f"no {name}")
        why = ("jax and jaxlib go together" if name in ("jax", "jaxlib") else
               f"to match jaxlib {packages['jaxlib'] if 'jaxlib' in packages else have['jaxlib']}"
               "; JAX sees only the CPU when they differ")
        print(f"{there} there: fetched at {version} ({why})")
    print(f"to fetch for Python {args.python} ({len(packages)}, pinned to the versions tested "
          "here" + (f"; replacing {', '.join(outdated)} there, outside the project's ranges"
                    if outdated else "") + "):" if packages else "nothing to fetch: the other "
          "machine has all the project needs")
    print("\n".join(f"{name}=={version}" for name, version in packages.items()))
    if not args.dry_run and packages:
        download(packages, args.dest, args.python, args.platform or list(PLATFORMS))
    return packages


def check(parser: ArgumentParser, args) -> None:
    """Every argument, before anything is read or fetched: one line each."""
    for path, flag in ((args.have, "--have"), (args.requirements, "--requirements")):
        if not path.is_file():
            parser.error(f"{flag} {path} is not a file; "
                         + ("write the other machine's pip freeze into one" if flag == "--have"
                            else "pass the project's requirements.txt"))
        try:
            path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"{flag} {path} cannot be read as text ({type(error).__name__}); "
                         "pass pip freeze's output as it printed it")
    if not args.dry_run and not args.dest:
        parser.error("--dest DIR is needed, where the wheels go (or --dry-run)")
    if args.dest and args.dest.exists() and not args.dest.is_dir():
        parser.error(f"--dest {args.dest} is a file; pass a folder for the wheels")
    if not re.fullmatch(r"3\.(8|9|1[0-9])(\.[0-9]+)?", args.python):
        parser.error(f"--python {args.python}: give the other machine's Python as 3.Y or "
                     "3.Y.Z (e.g. 3.12)")
    needed = _requires_python()
    if needed and not needed.contains(args.python):
        parser.error(f"--python {args.python}: the project needs Python {needed}; that machine "
                     "cannot run it")
    for platform in args.platform or []:
        if not re.fullmatch(r"(manylinux\w+|musllinux\w+|macosx_\w+|win_amd64|win32|any)",
                            platform):
            parser.error(f"--platform {platform}: not a wheel platform tag (e.g. "
                         "manylinux_2_28_x86_64)")


if __name__ == "__main__":
    main()
