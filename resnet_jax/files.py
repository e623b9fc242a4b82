"""Files written whole, for every writer (the trainer, the twin, the benchmarks): a kill at
any moment leaves the old file or the new one, never a part."""

from __future__ import annotations

import os
from pathlib import Path

PARTIAL_SUFFIX = ".partial"  # the new file's text, before it replaces the old


def write_atomically(path: str | Path, text: str) -> None:
    """Replace ``path`` by ``text`` whole: a kill at any moment leaves the old or the new file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    partial.write_text(text)
    os.replace(partial, path)
