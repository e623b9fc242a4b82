"""The table of named weights: ``weights_table.json`` in the package, and the entries of
the JSON file ``$RESNET_JAX_WEIGHTS_TABLE`` names (weights of one's own, in the same
form). Each entry says where its file is and its SHA-256 (or the prefix its publisher
gives), the model it fits, its preprocessing, its classes, its published accuracy and its
license. A file whose SHA-256 matches an entry is that entry, whatever its name or path.
``python -m resnet_jax.weights`` prints the table."""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

from resnet_jax import data, hints
from resnet_jax.errors import WeightsError
from resnet_jax.models import list_models

PACKAGE_TABLE = "weights_table.json"
USER_TABLE = "RESNET_JAX_WEIGHTS_TABLE"  # a JSON file of further entries, same form
HUB_PREFIX = "hf-hub:"  # timm's spelling of a Hugging Face Hub repository
HUB_SPELLINGS = (HUB_PREFIX, "hf_hub:")  # timm takes both
HUB_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # ORG/REPO
DEFAULT = "DEFAULT"  # the name of each model's default entry
IMAGENET_CLASSES = "imagenet_classes.txt"  # ImageNet-1k's names, one a line, torchvision's order
CLASS_SETS = ("ImageNet-1k", "CIFAR-10")
NAME = re.compile(r"[A-Z][A-Z0-9_]*")  # torchvision's form: IMAGENET1K_V1...
HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclasses.dataclass(frozen=True)
class Published:
    """An accuracy as its publisher states it (percent)."""

    top1: float
    top5: float | None
    on: str  # the data it was measured on
    where: str  # where it is published

    def describe(self) -> str:
        top5 = f", top-5 {self.top5:g}%" if self.top5 is not None else ""
        return f"published top-1 {self.top1:g}%{top5} on {self.on} ({self.where})"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One named weights file and what using it needs."""

    model: str
    name: str  # IMAGENET1K_V1, CIFAR10_AKAMASTER, hf-hub:timm/resnet50.a1_in1k...
    default: bool  # what the name DEFAULT picks for this model
    source: str
    url: str
    sha256: str | None  # the whole digest, or the prefix its publisher gives; None: the Hub's
    format: str
    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: str | tuple[str, ...]  # a class set of CLASS_SETS, or the names themselves
    published: Published | None
    license: str
    table: str  # the file the entry comes from

    def matches(self, digest: str) -> bool:
        """Whether a file of SHA-256 ``digest`` is this entry's."""
        return self.sha256 is not None and digest.startswith(self.sha256)

    def class_names(self) -> list[str]:
        return (class_set_names(self.classes) if isinstance(self.classes, str)
                else list(self.classes))


def class_set_names(class_set: str) -> list[str]:
    """The class names of a class set of CLASS_SETS, in its label order."""
    if class_set == "CIFAR-10":
        return list(data.CIFAR10_CLASSES)
    text = importlib.resources.files("resnet_jax.weights").joinpath(IMAGENET_CLASSES).read_text()
    return text.splitlines()


def entries() -> tuple[Entry, ...]:
    """The package's table and then ``$RESNET_JAX_WEIGHTS_TABLE``'s, every field checked
    (WeightsError naming the file, the entry and the field)."""
    user_table = os.environ.get(USER_TABLE) or ""
    try:
        stat = os.stat(Path(user_table).expanduser()) if user_table else None
    except OSError:
        stat = None  # _read_tables says why it cannot be read
    return _read_tables(user_table, stat and (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _read_tables(user_table: str, version: Any) -> tuple[Entry, ...]:
    """The tables; ``version`` (the user table's time and size) keys the cache."""
    package = importlib.resources.files("resnet_jax.weights").joinpath(PACKAGE_TABLE)
    found = _read_table(package.read_text(), PACKAGE_TABLE)
    if user_table:
        path = Path(user_table).expanduser()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise WeightsError(f"{USER_TABLE}={user_table} cannot be read ("
                               f"{getattr(error, 'strerror', None) or type(error).__name__}); "
                               "point it at a JSON file of weights entries, or unset it") from None
        found += _read_table(text, str(path))
    _check_together(found)
    return found


def _check_together(found: tuple[Entry, ...]) -> None:
    """WeightsError where two entries share a model and name, a model has two defaults, or
    two entries claim one file (one SHA-256 the prefix of the other)."""
    for i, entry in enumerate(found):
        for earlier in found[:i]:
            if earlier.model != entry.model:
                same = ""
            elif earlier.name == entry.name:
                same = f"names {entry.model} {entry.name} again"
            elif earlier.default and entry.default:
                same = f"makes a second default for {entry.model} ({earlier.name} is one)"
            else:
                same = ""
            if not same and entry.sha256 and earlier.sha256 and (
                    entry.sha256.startswith(earlier.sha256)
                    or earlier.sha256.startswith(entry.sha256)):
                same = (f"claims the file of {earlier.model} {earlier.name} (SHA-256 "
                        f"{earlier.sha256})")
            if same:
                raise WeightsError(f"{entry.table} {same}, as {earlier.table} does; change "
                                   "your entry")


def _read_table(text: str, where: str) -> tuple[Entry, ...]:
    try:
        table = json.loads(text)
    except ValueError as error:
        raise WeightsError(f"{where} is not JSON ({error}); fix it, or unset "
                           f"{USER_TABLE}") from None
    if not isinstance(table, dict) or not isinstance(table.get("entries"), list):
        raise WeightsError(f'{where} must hold {{"entries": [...]}}, a list of weights entries '
                           f"(see {PACKAGE_TABLE} in the package)")
    return tuple(_entry(raw, f"{where}, entry {i + 1}") for i, raw in enumerate(table["entries"]))


def _entry(raw: Any, where: str) -> Entry:
    """An entry of the table from its JSON, every field checked."""
    if not isinstance(raw, dict):
        raise WeightsError(f"{where} is a JSON {type(raw).__name__}, not an object")
    missing = [key for key in _FIELDS if key not in raw]
    unknown = sorted(set(raw) - set(_FIELDS))
    if missing or unknown:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unknown)}"
        raise WeightsError(f"{where} {what}; an entry holds exactly {', '.join(_FIELDS)}")
    for key, check in _FIELDS.items():
        problem = check(raw[key])
        if problem:
            raise WeightsError(f"{where}: {key}={json.dumps(raw[key])} {problem}")
    if raw["sha256"] is None and not raw["name"].startswith(HUB_PREFIX):
        raise WeightsError(f"{where}: sha256=null is for {HUB_PREFIX} names (the Hub names "
                           "its files by their SHA-256); give the file's SHA-256, or 8 or more "
                           "of its first hex digits")
    prep, published = raw["preprocessing"], raw["published"]
    classes = raw["classes"]
    return Entry(raw["model"], raw["name"], raw["default"], raw["source"], raw["url"],
                 raw["sha256"], raw["format"], prep["resize"], prep["crop"],
                 prep["interpolation"], tuple(prep["mean"]), tuple(prep["std"]),
                 classes if isinstance(classes, str) else tuple(classes),
                 Published(**published) if published else None, raw["license"], where)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def _model(value: Any) -> str | None:
    return None if value in list_models() else "is not a model of this project (list_models())"


def _name(value: Any) -> str | None:
    if value == DEFAULT:
        return "is kept for what each model's \"default\": true entry is; choose another name"
    if isinstance(value, str) and (NAME.fullmatch(value) or (
            value.startswith(HUB_PREFIX) and HUB_REPO.fullmatch(value[len(HUB_PREFIX):]))):
        return None
    return ("must be a name in capitals, digits and _ (as IMAGENET1K_V1), or "
            f"{HUB_PREFIX}ORG/REPO")


def _url(value: Any) -> str | None:
    parts = urllib.parse.urlparse(value) if isinstance(value, str) else None
    if parts and ((parts.scheme in ("http", "https") and parts.netloc)
                  or (parts.scheme == "file" and parts.path)):
        return None
    return "must be the file's address: an http://, https:// or file:// URL"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _sha256(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and HEX.fullmatch(value)):
        return None
    return "must be the file's SHA-256 (8 to 64 lowercase hex digits), or null for the Hub's"


def _number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _preprocessing(value: Any) -> str | None:
    keys = ("resize", "crop", "interpolation", "mean", "std")
    if not isinstance(value, dict) or sorted(value) != sorted(keys):
        return f"must be an object of exactly {', '.join(keys)}"
    if not all(isinstance(value[k], int) and not isinstance(value[k], bool) and 1 <= value[k]
               <= 4096 for k in ("resize", "crop")) or value["resize"] < value["crop"]:
        return "needs whole-number resize >= crop, both from 1 to 4096 pixels"
    if value["interpolation"] not in ("bilinear", "bicubic"):
        return "needs interpolation bilinear or bicubic"
    channels = [value[k] for k in ("mean", "std")]
    if not all(isinstance(c, list) and len(c) == 3 and all(_number(v, 0, 1) for v in c)
               for c in channels) or 0 in value["std"]:
        return "needs mean and std as three numbers each on the 0..1 scale (std above 0)"
    return None


def _classes(value: Any) -> str | None:
    if value in CLASS_SETS or (isinstance(value, list) and value
                               and all(isinstance(v, str) and v for v in value)
                               and len(set(value)) == len(value)):
        return None
    return f"must be {' or '.join(CLASS_SETS)}, or a list of distinct class names"


def _published(value: Any) -> str | None:
    if value is None:
        return None
    if (not isinstance(value, dict) or sorted(value) != ["on", "top1", "top5", "where"]
            or not _number(value["top1"], 0, 100)
            or not (value["top5"] is None or _number(value["top5"], value["top1"], 100))
            or _text(value["on"]) or _text(value["where"])):
        return ("must be null, or {top1, top5 (or null), on, where}: percentages from 0 to 100 "
                "(top-5 at least top-1), the data and where it is published")
    return None


_FIELDS = {"model": _model, "name": _name, "default": _flag, "source": _text, "url": _url,
           "sha256": _sha256, "format": _text, "preprocessing": _preprocessing,
           "classes": _classes, "published": _published, "license": _text}


def find(model: str, name: str) -> Entry:
    """The entry of ``model`` called ``name`` (``DEFAULT``: the model's default entry);
    WeightsError listing the model's entries where there is none."""
    own = [entry for entry in entries() if entry.model == model]
    for entry in own:
        if entry.name == name or (name == DEFAULT and entry.default):
            return entry
    if not own:
        having = sorted({entry.model for entry in entries()}, key=list_models().index)
        raise WeightsError(f"the weights table has no weights for {model}; it has weights for "
                           f"{', '.join(having)} (python -m resnet_jax.weights lists them); for "
                           f"{model}, pass a .pth or .safetensors file, or a training run's "
                           "work directory")
    what = "default" if name == DEFAULT else f"{name} weights"
    raise WeightsError(f"the weights table has no {what} for {model}; it has "
                       f"{', '.join(entry.name for entry in own)}")


def models_named(name: str) -> list[str]:
    """The models with an entry called ``name`` (``DEFAULT``: with a default entry)."""
    return [entry.model for entry in entries()
            if entry.name == name or (name == DEFAULT and entry.default)]


def close_name(text: str) -> str | None:
    """The table's name ``text`` most likely means (another case, a letter off), or None."""
    names = {entry.name.upper(): entry.name for entry in entries()} | {DEFAULT: DEFAULT}
    close = hints.closest(text.upper(), names, cutoff=0.8)
    return names[close] if close else None


def by_digest(digest: str) -> Entry | None:
    """The entry whose file has SHA-256 ``digest``, or None."""
    return next((entry for entry in entries() if entry.matches(digest)), None)


def hub_entry(repo: str) -> Entry | None:
    """The entry of the Hub repository ``repo`` (``timm/resnet50.a1_in1k``), or None."""
    return next((entry for entry in entries() if entry.name == HUB_PREFIX + repo), None)


# The table as text.

COLUMNS = ("model", "weights", "top-1 %", "top-5 %", "on", "resize -> crop", "source", "license")


def rows() -> list[tuple[str, ...]]:
    """One row of COLUMNS per entry."""
    def percent(value: float | None) -> str:
        return "" if value is None else f"{value:g}"

    return [(entry.model, entry.name + (" (DEFAULT)" if entry.default else ""),
             percent(entry.published and entry.published.top1),
             percent(entry.published and entry.published.top5),
             entry.published.on if entry.published else "",
             f"{entry.resize} -> {entry.crop} {entry.interpolation}", entry.source, entry.license)
            for entry in entries()]


def markdown() -> str:
    """The table as the README shows it."""
    lines = [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]
    lines += [f"| {' | '.join(row)} |" for row in rows()]
    return "\n".join(lines)


def text() -> str:
    """The table in aligned columns, for a terminal."""
    table = [COLUMNS, *rows()]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width)
                               for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in table)
