"""The one walker of image folders, for every door that reads them (in memory, streaming,
evaluate, predict on a folder, the evidence command).

A class-per-folder tree is ``ROOT/train/<class>/`` and ``ROOT/test/<class>/`` (or
``ROOT/val/<class>/``); a class folder's images count at any depth, as torchvision's
``ImageFolder`` walks it (links followed, sorted by folder then name), hidden files and
folders (a name starting with '.') left out. Every real file counts once, under the
class folder it is in: a link that loops, or leads to a file or folder already counted
or lying in another class folder, is passed over and named in a warning, so that no link
inflates a count or relabels an image.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from resnet_jax import hints
from resnet_jax.data import listed
from resnet_jax.errors import DataError
from resnet_jax.progress import warn

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EVAL_SPLITS = ("test", "val")  # the evaluation split of a class-per-folder tree


def _hidden(name: str) -> bool:
    return name.startswith(".")


def is_image_name(name: str) -> bool:
    return not _hidden(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES


def class_folders(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted by name: its subfolders but hidden ones (a name
    starting with '.', such as .ipynb_checkpoints); [] if ``split_dir`` is not a directory."""
    if not split_dir.is_dir():
        return []
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not _hidden(p.name))


@dataclasses.dataclass
class _Walk:
    """What a walk has met: real folders walked, real files counted (and where), the links
    passed over."""

    folders: set[str] = dataclasses.field(default_factory=set)
    files: dict[str, Path] = dataclasses.field(default_factory=dict)
    passed_over: list[str] = dataclasses.field(default_factory=list)

    def say(self, where: Path) -> None:
        """One warning line naming the links passed over, if any."""
        if self.passed_over:
            warn(f"under {where}, {len(self.passed_over)} link(s) lead to what is "
                 f"counted elsewhere, and are passed over: {listed(self.passed_over)}; every "
                 "file counts once, in the class folder it is in")


def _listing(directory: str) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as error:
        raise DataError(f"cannot list {directory} ({error.strerror}); make it readable, or "
                        "move it out of the data") from None


Found = dict[str, list[str]]  # folder -> the names of the images counted in it


def _walk_real(top: str, real_top: str, walk: _Walk, found: Found,
               owner: dict[str, str] | None, name: str) -> list[os.DirEntry]:
    """Count the images under ``top`` reached without a link; the links met, for later
    (so that a file counts where it lies before any link to it is followed)."""
    links = []
    walk.folders.add(real_top)
    stack = [(top, real_top)]
    while stack:
        directory, real = stack.pop()
        for entry in _listing(directory):
            if _hidden(entry.name):
                continue
            if entry.is_symlink():
                links.append(entry)
            elif entry.is_dir():
                walk.folders.add(os.path.join(real, entry.name))
                stack.append((entry.path, os.path.join(real, entry.name)))
            elif is_image_name(entry.name):
                _count(entry, os.path.join(real, entry.name), walk, found, owner, name)
    return links


def _follow(links: list[os.DirEntry], walk: _Walk, found: Found,
            owner: dict[str, str] | None, name: str) -> None:
    """Count what ``links`` lead to: a folder not walked yet (and the links inside it),
    an image file not counted yet; each other link is passed over, named."""
    while links:
        entry = links.pop(0)
        real = os.path.realpath(entry.path)
        if _leads_to_folder(entry):
            if real in walk.folders:
                walk.passed_over.append(f"{entry.path} -> {real} (a folder already walked: a "
                                        "loop or a second link)")
                continue
            links += _walk_real(entry.path, real, walk, found, owner, name)
        elif is_image_name(entry.name):  # a broken link counts: reading it fails, and says so
            _count(entry, real, walk, found, owner, name)


def _leads_to_folder(entry: os.DirEntry) -> bool:
    """Whether a link leads to a folder (one that leads nowhere, a loop of links included,
    does not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _count(entry: os.DirEntry, real: str, walk: _Walk, found: Found,
           owner: dict[str, str] | None, name: str) -> None:
    """Count an image where it is met, unless it was counted already or lies in another
    class folder (it counts there)."""
    home = _home(real, owner) if owner else None
    if home is not None and home != name:
        walk.passed_over.append(f"{entry.path} -> {real} (in class folder {home})")
    elif real in walk.files:
        walk.passed_over.append(f"{entry.path} (the same file as {walk.files[real]})")
    else:
        walk.files[real] = Path(entry.path)
        found.setdefault(os.path.dirname(entry.path), []).append(entry.name)


def _in_order(found: Found) -> list[Path]:
    """torchvision's order: by folder, then by name."""
    return [Path(folder) / image for folder in sorted(found) for image in sorted(found[folder])]


def _home(real: str, owner: dict[str, str]) -> str | None:
    """The class folder whose real path holds ``real`` (the deepest), None if none does."""
    holders = [folder for folder in owner if real.startswith(folder + os.sep)]
    return owner[max(holders, key=len)] if holders else None


def images_under(directory: Path) -> list[Path]:
    """The image files under ``directory`` at any depth (see the module's rules), each real
    file once, for predict on a folder."""
    walk, found = _Walk(), {}
    _follow(_walk_real(str(directory), os.path.realpath(directory), walk, found, None, ""),
            walk, found, None, "")
    walk.say(directory)
    return _in_order(found)


def image_files(split_dir: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The image files under ``split_dir/<class>/`` for each of ``classes``, with labels,
    each real file once under the class folder it is in; DataError naming the class
    folders that hold no image, or two that are the same folder. Images directly in
    ``split_dir``, in no class folder, are named in a warning and left out."""
    owner = _class_homes(split_dir, classes)
    walk, found = _Walk(), {name: {} for name in classes}
    links = {name: _walk_real(str(split_dir / name), real, walk, found[name], owner, name)
             for real, name in owner.items()}
    files, labels, empty = [], [], []
    for label, name in enumerate(classes):
        _follow(links[name], walk, found[name], owner, name)
        images = _in_order(found[name])
        if not images:
            empty.append(name)
        files += images
        labels += [label] * len(images)
    if empty:
        shown = f"{empty[:10]}{' ...' if len(empty) > 10 else ''}"
        raise DataError(f"class folder(s) {shown} under {split_dir} hold no images "
                        f"({len(empty)} of {len(classes)}; images are "
                        f"{'/'.join(sorted(IMAGE_SUFFIXES))} files); every class folder needs "
                        "images: add some, or remove the folder (from every split of a "
                        "training tree)")
    walk.say(split_dir)
    loose = sorted(p.name for p in split_dir.iterdir() if p.is_file() and is_image_name(p.name))
    if loose:
        warn(f"{len(loose)} image(s) directly under {split_dir} are in no class folder "
             f"and are left out: {listed(loose)}")
    return files, labels


def _class_homes(split_dir: Path, classes: list[str]) -> dict[str, str]:
    """Each class folder's real path -> its name; DataError where two are one folder."""
    homes: dict[str, str] = {}
    for name in classes:
        real = os.path.realpath(split_dir / name)
        if real in homes:
            raise DataError(f"class folders {homes[real]} and {name} under {split_dir} are the "
                            f"same folder ({real}, through a link): one image cannot be two "
                            "classes; remove one of them")
        homes[real] = name
    return homes


def folder_splits(root: Path) -> tuple[Path, Path, list[str]]:
    """(train dir, evaluation dir, class names) of a class-per-folder tree:
    ``root/train/<class>/`` and ``root/test/<class>/`` or ``root/val/<class>/``; a tree
    with class folders in both test/ and val/ is refused naming both (which one evaluates
    would be a guess)."""
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        moved = ("; if the run's data moved, evaluate the weights on it by class name: "
                 "--weights RUN --dataset folder:NEWPATH/test" if hints.current() == hints.EVALUATE
                 else "")
        raise DataError(f"folder: path {root} {what}; point it at a directory "
                        "holding train/<class>/ and test/<class>/ (or val/<class>/) image "
                        f"folders{moved}")
    with_classes = [split for split in EVAL_SPLITS if class_folders(root / split)]
    if len(with_classes) > 1:
        other = (f"evaluate one split by its class folders: --weights RUN "
                 f"{hints.setting('dataset', f'folder:{root / with_classes[0]}')}"
                 if hints.current() == hints.EVALUATE else
                 f"point {hints.setting('dataset', 'folder:PATH')} at a tree holding train/ and "
                 "the one you mean")
        raise DataError(f"{root} holds class folders in both test/ and val/: which one evaluates "
                        f"the run would be a guess; move one of them out of the tree (or {other})")
    eval_dir = root / (with_classes[0] if with_classes else next(
        (s for s in EVAL_SPLITS if (root / s).is_dir()), "test"))
    if os.path.realpath(root / "train") == os.path.realpath(eval_dir):
        raise DataError(f"train/ and {eval_dir.name}/ under {root} are the same folder (through a "
                        "link): the run would be evaluated on its training images; give each "
                        "split its own images")
    train_classes = class_folders(root / "train")
    eval_classes = class_folders(eval_dir)
    if not train_classes or not eval_classes:
        parent = (f"; did you mean folder:{root.parent}?"
                  if root.name in ("train", *EVAL_SPLITS) and (root.parent / "train").is_dir()
                  else "")
        raise DataError(f"{root} needs train/<class>/ and test/<class>/ (or val/<class>/) image "
                        f"folders; found train: {len(train_classes)} classes, "
                        f"{eval_dir.name}: {len(eval_classes)}{parent}")
    if train_classes != eval_classes:
        only_train = sorted(set(train_classes) - set(eval_classes))
        only_eval = sorted(set(eval_classes) - set(train_classes))
        raise DataError(f"train and {eval_dir.name} class folders under {root} differ (only in "
                        f"train: {only_train}, only in {eval_dir.name}: {only_eval}); both "
                        "splits need the same class folders")
    return root / "train", eval_dir, train_classes
