"""The documentation works as written: every ```python block of README.md and docs/*.md
runs, every command of a ```bash block names a module, flags and config keys that exist,
every relative link and table of contents points at a file and heading that exist, and
the README stays a front page (at most 300 lines)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import runpy
import shlex
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = [*PAGES, REPO / "CHANGELOG.md"]  # pages whose links are checked
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")
PYTHON = re.compile(r"^(?:\S*/)?python(?:3(?:\.\d+)?)?$")


def name(page: Path) -> str:
    return str(page.relative_to(REPO))


def parse(page: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The fenced code blocks of ``page`` as (language, text), in order, and the lines
    outside them."""
    found, prose_lines, fence, language, lines = [], [], None, "", []
    for line in page.read_text().splitlines():
        opening = FENCE.match(line)
        if fence is None:
            if opening:
                fence, language, lines = opening[1], opening[2].lower(), []
            else:
                prose_lines.append(line)
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            found.append((language, "\n".join(lines) + "\n"))
            fence = None
        else:
            lines.append(line)
    assert fence is None, f"{name(page)}: a code block is never closed"
    return found, prose_lines


def blocks(page: Path) -> list[tuple[str, str]]:
    return parse(page)[0]


def prose(page: Path) -> list[str]:
    return parse(page)[1]


def snippets(language: str) -> list[tuple[str, int, str]]:
    """(page, index among the page's blocks of ``language``, text)."""
    return [(name(page), index, text) for page in PAGES
            for index, text in enumerate(t for lang, t in blocks(page) if lang == language)]


PYTHON_BLOCKS = snippets("python")
BASH_BLOCKS = snippets("bash")


def test_the_pages_have_code_to_check():
    """Empty lists would make the tests below pass having checked nothing."""
    assert len(PAGES) >= 8, [name(p) for p in PAGES]
    assert len(PYTHON_BLOCKS) >= 5, "the python blocks were not found"
    assert len(BASH_BLOCKS) >= 10, "the bash blocks were not found"


# --- Every python block runs --------------------------------------------------------------


@pytest.mark.parametrize("page,index,code", PYTHON_BLOCKS,
                         ids=[f"{page}-python{index}" for page, index, _ in PYTHON_BLOCKS])
def test_every_python_block_runs(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    exec(compile(code, f"{page} python block {index}", "exec"), {"__name__": "__docs__"})


# --- Every command names things that exist -------------------------------------------------


def commands(text: str) -> list[list[str]]:
    """The simple commands of a bash block, as argument lists: continued lines joined,
    comments dropped, lists split at &&, ||, ; and |."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        command = []
        for token in tokens + [";"]:
            if token in ("&&", "||", ";", "|"):
                if command:
                    found.append(command)
                command = []
            else:
                command.append(token)
    return found


class Captured(BaseException):  # not an Exception: the commands' own handlers let it through
    def __init__(self, options, booleans=()):
        super().__init__()
        self.options, self.booleans = set(options), set(booleans)


class GlobalFlags(BaseException):
    """The module defines flags on absl's global FLAGS: read it in a process of its own."""


def defined_by_main() -> bool:
    """Whether the code defining a flag is the module being run (``__main__``), not a
    library it imports: the nearest caller outside absl and ml_collections."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("absl", "ml_collections")):
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__") == "__main__"


def _capture(module: str) -> Captured:
    """Run ``python -m module`` here until it starts parsing its command line, and take
    the options of its parser: argparse's, or absl's (a FlagValues of its own). A module
    that defines flags of its own on absl's global FLAGS is stopped before the first one is
    defined (GlobalFlags), so that nothing of it is left registered in this process."""
    from absl import flags

    def caught_argparse(parser, *args, **kwargs):
        raise Captured(option for action in parser._actions for option in action.option_strings)

    def caught_absl(values, *args, **kwargs):
        raise Captured((f"--{flag}" for flag in values),
                       (f"--no{flag}" for flag in values if values[flag].boolean))

    define = flags.FlagValues.__setitem__

    def defined(values, flag_name, flag):
        if values is flags.FLAGS and defined_by_main():
            raise GlobalFlags
        define(values, flag_name, flag)

    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with mock.patch.object(argparse.ArgumentParser, "parse_known_args", caught_argparse), \
                mock.patch.object(flags.FlagValues, "__call__", caught_absl), \
                mock.patch.object(flags.FlagValues, "__setitem__", defined), \
                mock.patch.object(sys, "argv", [module]), \
                mock.patch.object(sys, "path", list(sys.path)), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: imported before as a module
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    except Captured as captured:
        return captured
    finally:  # a command installs its own stop-signal handlers first
        for number, handler in handlers.items():
            signal.signal(number, handler)
    raise AssertionError(f"python -m {module} parsed no command line")


CAPTURE_ELSEWHERE = """
import argparse, json, runpy, sys
from unittest import mock
from absl import flags

class Found(BaseException):
    pass

def caught_absl(values, *args, **kwargs):
    raise Found([f"--{f}" for f in values], [f"--no{f}" for f in values if values[f].boolean])

def caught_argparse(parser, *args, **kwargs):
    raise Found([o for action in parser._actions for o in action.option_strings], [])

module = sys.argv[1]
try:
    with mock.patch.object(flags.FlagValues, "__call__", caught_absl), \\
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", caught_argparse):
        sys.argv = [module]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
except Found as found:
    print(json.dumps({"options": found.args[0], "booleans": found.args[1]}))
"""


def module_options(module: str) -> Captured:
    """The options of ``python -m module``'s command line, without running it: in this
    process, or in one of its own for a module with flags on absl's global FLAGS."""
    try:
        return _capture(module)
    except GlobalFlags:
        pass
    result = subprocess.run([sys.executable, "-c", CAPTURE_ELSEWHERE, module], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return Captured(found["options"], found["booleans"])


def train_py_options() -> Captured:
    """train.py's flags, as its own parser defines them (caught when it starts parsing)."""
    from absl import flags

    train = runpy.run_path(str(REPO / "train.py"), run_name="train_for_docs")

    def caught(values, *args, **kwargs):
        raise Captured({f"--{flag}" for flag in values})

    with mock.patch.object(flags.FlagValues, "__call__", caught):
        try:
            train["parse"](["--config", "configs/smoke.py", "--workdir", "runs/docs-check"])
        except Captured as captured:
            return captured
    raise AssertionError("train.py parsed no command line")


def config_keys() -> set[str]:
    from resnet_jax.train.config_schema import KEYS

    return set(KEYS)


def flag_name(token: str) -> str:
    return token.split("=", 1)[0]


def problems(command: list[str], options: Captured, keys: set[str], where: str) -> list[str]:
    """What in ``command`` (after the program and module) its parser would not take."""
    found = []
    for position, token in enumerate(command):
        if not re.match(r"^--?[A-Za-z]", token):
            continue
        flag = flag_name(token)
        if flag.startswith("--config."):
            key = flag.removeprefix("--config.")
            if "--config" not in options.options:
                found.append(f"{where}: {flag}: the command takes no --config")
            elif key not in keys:
                found.append(f"{where}: {flag} is not a config key")
            continue
        if flag not in options.options | options.booleans:
            found.append(f"{where}: {flag} is not an option of the command")
        value = token.split("=", 1)[1] if "=" in token else (
            command[position + 1] if position + 1 < len(command) else "")
        if flag == "--set" and value.split("=", 1)[0] not in keys:
            found.append(f"{where}: --set {value}: {value.split('=', 1)[0]} is not a config key")
        if flag == "--config" and value.endswith(".py") and not (REPO / value).is_file():
            found.append(f"{where}: --config {value}: no such config file")
    return found


def test_every_command_names_modules_flags_and_config_keys_that_exist():
    keys, options, checked, found = config_keys(), {}, 0, []
    for page, index, text in BASH_BLOCKS:
        for command in commands(text):
            if not PYTHON.match(command[0]) or len(command) < 2:
                continue  # pip, curl, tar, mkdir, tensorboard... are not checked
            where = f"{page} bash block {index}: {shlex.join(command)}"
            if command[1] == "-m":
                module, rest = command[2], command[3:]
                spec = importlib.util.find_spec(module)
                if spec is None:
                    found.append(f"{where}: no module {module}")
                    continue
                checked += 1
                origin = Path(str(spec.origin)).resolve()
                if not origin.is_relative_to(REPO) or "site-packages" in origin.parts:
                    continue  # venv, pytest: importable is all that is checked
                if module not in options:
                    options[module] = module_options(module)
                found += problems(rest, options[module], keys, where)
            elif command[1] == "train.py":
                checked += 1
                if "train.py" not in options:
                    options["train.py"] = train_py_options()
                found += problems(command[2:], options["train.py"], keys, where)
            else:
                found.append(f"{where}: no check for this kind of command; add one here")
    assert checked >= 20, f"only {checked} commands found in the bash blocks"
    assert not found, "\n".join(found)


# --- Links, tables of contents and the README's length ---------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(page: Path) -> list[tuple[int, str]]:
    """(level, anchor) of every heading outside the code blocks, GitHub's -1, -2 for repeats."""
    found, seen = [], {}
    for line in prose(page):
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor = slug(match[2])
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.append((len(match[1]), anchor if count == 0 else f"{anchor}-{count}"))
    return found


def links(page: Path) -> list[str]:
    """The targets of the markdown links outside code (blocks and inline)."""
    text = "\n".join(re.sub(r"`[^`]*`", "", line) for line in prose(page))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", LINKED, ids=name)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    found, broken = links(page), []
    assert found or page.name == "CHANGELOG.md", f"{name(page)} links nowhere"
    for target in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in {a for _, a in headings(file)}:
            broken.append(f"{target}: no heading #{anchor} in {name(file)}")
    assert not broken, f"{name(page)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES[1:], ids=name)
def test_each_docs_page_opens_with_a_title_and_a_table_of_contents_of_its_sections(page):
    lines = page.read_text().splitlines()
    assert lines[0].startswith("# "), f"{name(page)} starts without a title"
    first_section = next(i for i, line in enumerate(lines) if line.startswith("## "))
    contents = re.findall(r"^\s*[-*] \[[^\]]+\]\(#([^)]+)\)", "\n".join(lines[:first_section]),
                          re.MULTILINE)
    sections = [anchor for level, anchor in headings(page) if level == 2]
    assert contents, f"{name(page)} has no table of contents before its first section"
    assert contents == sections, (f"{name(page)}: its table of contents {contents} is not its "
                                  f"## sections {sections}")


def test_the_readme_is_a_front_page_of_at_most_300_lines():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move some to docs/"


def test_every_test_the_docs_name_exists():
    """docs/fidelity.md names tests as tests/FILE.py::function; other tables by the function."""
    texts = {page: page.read_text() for page in PAGES}
    named = {match for text in texts.values()
             for match in re.findall(r"(tests/test_\w+\.py)::(test_\w+)", text)}
    assert len(named) >= 40, "the fidelity table's tests were not found"
    missing = [f"{file}::{function}" for file, function in sorted(named)
               if not (REPO / file).is_file()
               or not re.search(rf"^def {function}\(", (REPO / file).read_text(), re.MULTILINE)]
    defined = {function for file in (REPO / "tests").glob("test_*.py")
               for function in re.findall(r"^def (test_\w+)\(", file.read_text(), re.MULTILINE)}
    in_tables = {function for text in texts.values() for line in text.splitlines()
                 if line.startswith("|") for function in re.findall(r"`(test_\w+)`", line)}
    missing += sorted(in_tables - defined)  # docs/imagenet.md's table names them alone
    assert not missing, "\n".join(missing)
