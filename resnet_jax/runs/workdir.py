"""The work directory of a training run: its layout, its lock, and what it already holds.

Everything a run writes has its name here. A directory counts as a run's when
it holds our config.json or checkpoints/, or nothing but what an interrupted
start of ours leaves behind (the lock, temporary files); anything else is the
user's, and a run refuses to move in.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

import ml_collections

from resnet_jax import hints
from resnet_jax.errors import WorkdirError
from resnet_jax.files import PARTIAL_SUFFIX, write_atomically
from resnet_jax.progress import warn

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
DATA_FILE = "dataset.json"  # class names, statistics, image sizes: what inference needs
TWIN_CONFIG_FILE = "twin_config.json"  # the config of a PyTorch twin's run (not a train.py run)
SEGMENTS_FILE = "segments.json"  # each start of the run: steps, wall, data and compile seconds
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
SET_ASIDE_DIR = "unreadable_checkpoints"
LOCK_FILE = ".lock"
# Keys every resnet_jax config.json holds: a config.json without them is somebody else's.
IDENTIFYING_KEYS = ("model", "dataset", "batch_size", "seed")



def _is_leftover(name: str) -> bool:
    """What an interrupted start of ours may leave: the lock, temporary files."""
    return name == LOCK_FILE or name.endswith(PARTIAL_SUFFIX) or name.startswith(".write_test.")


def read_config(workdir: Path) -> dict[str, Any] | None:
    """The saved config as a dict; None if there is none. WorkdirError if it is not ours."""
    path = workdir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        line = getattr(error, "lineno", 1)
        raise WorkdirError(f"{path} line {line} is not valid JSON ({_reason(error)}); repair it "
                           "(it records the run's settings), or pass a new --workdir") from None
    if not isinstance(saved, dict) or not all(k in saved for k in IDENTIFYING_KEYS):
        lacks = [k for k in IDENTIFYING_KEYS if not isinstance(saved, dict) or k not in saved]
        raise WorkdirError(f"{path} is not a resnet_jax config (it lacks {', '.join(lacks)}); "
                           "pass a new or empty --workdir")
    for old, new in hints.SPLIT_KEYS.items():  # a run saved before the key was split
        if old in saved:
            value = saved.pop(old)
            saved.update({key: value for key in new})
    return saved


def _reason(error: Exception) -> str:
    return getattr(error, "msg", None) or type(error).__name__


def _json_or_none(path: Path) -> Any:
    """The JSON in ``path``; None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_data_description(workdir: Path) -> dict[str, Any] | None:
    """dataset.json (class names, statistics, image sizes: what inference needs), None if
    the run has none (it predates it, or it was removed) or it is unreadable."""
    return _json_or_none(workdir / DATA_FILE)


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """config.json: the run's settings (see :func:`read_config`)."""
    write_atomically(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))


def read_twin_config(workdir: Path) -> dict[str, Any] | None:
    """The config a PyTorch twin's run recorded (twin_config.json), None if it has none."""
    return _json_or_none(workdir / TWIN_CONFIG_FILE)


def write_twin_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    write_atomically(workdir / TWIN_CONFIG_FILE, config.to_json_best_effort(indent=2))


def write_data_description(workdir: Path, description: dict[str, Any]) -> None:
    """dataset.json (see :func:`read_data_description`)."""
    write_atomically(workdir / DATA_FILE, json.dumps(description, indent=1))


def read_summary(workdir: Path) -> dict[str, Any] | None:
    """summary.json, None if it is missing or unreadable."""
    return _json_or_none(workdir / SUMMARY_FILE)


def checkpoints_removed(workdir: Path) -> str | None:
    """What was lost, where a run's checkpoints are gone though its summary.json says it
    saved some (every segment that writes a summary saves a checkpoint first); else None."""
    ended = read_summary(workdir)
    if ended is None:
        return None
    return (f"{workdir} holds a run that saved checkpoints (its summary.json ends a segment "
            f"at step {ended.get('steps', '?')}), but {CHECKPOINT_DIR}/ holds none: they were "
            "removed")


def write_summary(workdir: Path, summary: dict[str, Any]) -> None:
    write_atomically(workdir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def read_metrics(workdir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (a last line cut short by a kill is left out)."""
    return read_metrics_file(Path(workdir)).rows


def read_segments(workdir: str | Path) -> list[dict[str, Any]]:
    """The segments of a run recorded so far (see metrics.RunClock); [] if none, or if the
    file is unreadable (with a warning: the earlier segments' times are lost)."""
    path = Path(workdir) / SEGMENTS_FILE
    if not path.exists():
        return []
    try:
        segments = json.loads(path.read_text())
        if isinstance(segments, list) and all("wall_seconds" in s for s in segments):
            return segments
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    warn(f"{path} is unreadable; the wall time of the run's earlier segments is lost")
    return []


def write_segments(workdir: Path, segments: list[dict[str, Any]]) -> None:
    write_atomically(workdir / SEGMENTS_FILE, json.dumps(segments, indent=1))


@dataclasses.dataclass(frozen=True)
class MetricsFile:
    """The rows of metrics.jsonl, and whether its last line was cut short by a kill."""

    rows: list[dict[str, Any]]
    cut_last_line: bool


def read_metrics_file(workdir: Path) -> MetricsFile:
    """Parse metrics.jsonl; a last line without its newline that does not parse was an
    interrupted append (dropped); any other bad line raises WorkdirError naming it."""
    path = workdir / METRICS_FILE
    if not path.exists():
        return MetricsFile([], False)
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _parse_row(line)
        if row is None and number == len(lines) and not text.endswith("\n"):
            return MetricsFile(rows, True)
        if row is None:
            raise WorkdirError(f"{path} line {number} is not a metrics row (a JSON object with "
                               "an integer step); repair or delete that line")
        rows.append(row)
    return MetricsFile(rows, False)


def _parse_row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    ok = isinstance(row, dict) and isinstance(row.get("step"), int)
    return row if ok else None


def latest_checkpoint_step(workdir: Path) -> int | None:
    """The newest step saved under checkpoints/ (read or not), None if there is none."""
    directory = workdir / CHECKPOINT_DIR
    if not directory.is_dir():
        return None
    return max((int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()),
               default=None)


def check_ownership(workdir: Path) -> None:
    """WorkdirError unless ``workdir`` is missing, empty, or holds a run of ours."""
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {workdir} is a file; pass a directory")
    if not workdir.is_dir():
        return
    names = sorted(p.name for p in workdir.iterdir())
    ours = CONFIG_FILE in names or (workdir / CHECKPOINT_DIR).is_dir()
    if ours or all(_is_leftover(name) for name in names):
        return
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise WorkdirError(f"--workdir {workdir} is not empty and holds no resnet_jax run "
                       f"(found {shown}); pass a new or empty --workdir")


class Lock:
    """One run at a time per work directory: an exclusive flock on ``WORKDIR/.lock``.

    The kernel releases it when the process ends in any way, kill -9 included; the
    file then left behind is stale and taken over by the next run.
    """

    def __init__(self, workdir: Path):
        self.path = workdir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise WorkdirError(f"{self.path.parent} is in use by another train.py ({holder}); "
                                   "wait for it to end or stop it, or pass another "
                                   "--workdir") from None
            if self._still_the_file(fd):
                break
            os.close(fd)  # the holder removed the file as we opened it: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        self.fd = fd

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WorkdirError(f"cannot write to workdir {self.path.parent} ({error.strerror}); "
                               "pass a --workdir you can write to") from None

    def _still_the_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None


def live_trainer(workdir: Path) -> str | None:
    """Who trains in ``workdir`` now ("process N on HOST"), None if no process holds its lock."""
    try:
        fd = os.open(workdir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "a process"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def create(workdir: Path) -> list[Path]:
    """Create ``workdir`` and its missing parents; return those created, deepest first."""
    created = []
    for directory in [workdir, *workdir.parents]:
        if directory.exists():
            break
        created.append(directory)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"cannot write to workdir {workdir} ({error.strerror}); "
                           "pass a --workdir you can write to") from None
    return created


def remove_if_empty(directories: list[Path]) -> None:
    """Remove directories we created for a run that never started (deepest first)."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return
