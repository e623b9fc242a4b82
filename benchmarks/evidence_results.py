"""The result files of ``python -m benchmarks.evidence``: where each part's result lives
(per device kind), and what it records of the device, its driver, the versions and the
code it measured."""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from resnet_jax.files import write_atomically

REPO = Path(__file__).resolve().parents[1]

PROBE = ("import json, jax; d = jax.devices(); print(json.dumps({'kind': d[0].device_kind, "
         "'count': len(d), 'platform': d[0].platform, 'jax': jax.__version__}))")


def code_identity(given: str | None) -> str:
    """The last commit that touched anything outside benchmarks/results/: ``given``, else
    git's; SystemExit where neither is there."""
    if given:
        return given
    done = subprocess.run(["git", "log", "-1", "--format=%H", "--", ".",
                           ":(exclude)benchmarks/results"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    if done.returncode or not done.stdout.strip():
        raise SystemExit("error: no git history here to name the code measured; pass --commit "
                         "SHA, where SHA is what `git log -1 --format=%H -- . "
                         "':(exclude)benchmarks/results'` prints in the repository")
    return done.stdout.strip()


def device_info() -> dict[str, Any]:
    """This machine's accelerators, asked of JAX in a process of its own (so that this one
    holds no device memory), with the driver and library versions."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"error: JAX cannot start here: {done.stderr.strip()[-300:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {**info, "driver": _nvidia_driver(), "versions": _versions()}


def _nvidia_driver() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "torch", "torchvision", "grain")
    return {"python": ".".join(map(str, sys.version_info[:3])),
            **{name: version(name) for name in names}}


def kind_folder(kind: str) -> str:
    """A device kind as a folder name: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "unknown"


def result_path(out: Path, kind: str, part: str) -> Path:
    return out / kind_folder(kind) / f"{part}.json"


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def record(out: Path, device: dict[str, Any], name: str, commit: str, started: float,
           figures: dict[str, Any], smoke: bool) -> Path:
    path = result_path(out, device["kind"], name)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"part": name, "device": {k: device[k] for k in ("kind", "count", "platform")},
             "driver": device["driver"], "versions": device["versions"], "commit": commit,
             "command": shlex.join(["python", "-m", "benchmarks.evidence", *sys.argv[1:]]),
             "started": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(
                 timespec="seconds"),
             "seconds": round(time.time() - started, 1), "smoke": smoke, "figures": figures}
    write_atomically(path, json.dumps(entry, indent=1) + "\n")
    return path
