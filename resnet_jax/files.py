"""Files written whole, for every writer (the trainer, the twin, the benchmarks): a kill at
any moment leaves the old file or the new one, never a part."""

from __future__ import annotations

import os
import stat
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # the new file's text, before it replaces the old


def write_atomically(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` whole: a kill at any moment leaves the old or the new file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    partial.write_text(text)
    if path.exists():  # the new file keeps the old one's permissions
        os.chmod(partial, stat.S_IMODE(path.stat().st_mode))
    os.replace(partial, path)


def free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... where something is there already: a name to set
    a file aside under without replacing another."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate
