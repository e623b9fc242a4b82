"""Accelerator time turned into evidence: the measurements not yet taken for this device
and this code, as many as fit in the minutes given, each left as a result file.

    python -m benchmarks.evidence --minutes 9 [--data folder:PATH] [--commit SHA]
    python -m benchmarks.evidence --plan --minutes 9       # what would run, nothing runs
    python -m benchmarks.evidence --report [--write]       # the README's measured section

``--report --write`` puts the accelerators' full-size results of benchmarks/results/ into
the README (never a CPU or smoke result; another --out only with --write-elsewhere).

Parts, highest priority first: throughput, paper_schedule, streaming, time_to_accuracy,
degradation, throughput_full (see benchmarks/evidence_parts.py). A part already recorded
for this device kind and this code is skipped (``--again`` measures it anew), except
time_to_accuracy, which adds a seed at every call. A part starts only if its estimate
(its own last duration on this device kind, else a conservative default) fits in the time
left; it runs in a process of its own, stopped at the deadline: a part cut short records
nothing (the training parts resume from ``--work`` at the next call). The code's identity
is the last commit that touched anything outside benchmarks/results/, read from git, or
given with ``--commit`` where the tree came without .git. Each finished part writes
OUT/<device kind>/<part>.json: the device, driver, versions, commit, command, start, duration
and figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/evidence.py): import from the repo
    sys.path[0] = str(Path(__file__).resolve().parents[1])

if __name__ == "__main__":  # Ctrl-C while it loads or plans: one line (parts: see run_part)
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

from benchmarks.evidence_parts import PARTS, TORCH_IN_PROCESS, Context  # noqa: E402
from benchmarks.evidence_report import RESULTS
from benchmarks.evidence_results import (
    code_identity,
    device_info,
    kind_folder,
    read_result,
    record,
    result_path,
)
from resnet_jax import hints, signals
from resnet_jax.command_line import ArgumentParser
from resnet_jax.data import dataset_name_problem, resolved_dataset
from resnet_jax.data.pipelines import describe_source
from resnet_jax.errors import DataError

REPO = Path(__file__).resolve().parents[1]
MAX_MINUTES = 10_080
SMOKE_SECONDS = 60.0  # a part's estimate at smoke size, before it has been timed
STOP_GRACE = 90.0  # seconds a part has after the deadline to save a checkpoint and stop
def plan(parts: list[str], out: Path, device: dict[str, Any], commit: str, minutes: float,
         again: bool, data: str | None, smoke: bool) -> list[tuple[str, float, str | None, str]]:
    """Per part: (name, estimated seconds, why it does not run (None if it does), where the
    estimate comes from)."""
    planned = []
    for name in parts:
        _, needs_data, _, default_minutes = PARTS[name]
        previous = read_result(result_path(out, device["kind"], name))
        timed = previous and previous.get("smoke") == smoke and previous.get("seconds")
        estimate = 1.25 * timed if timed else (SMOKE_SECONDS if smoke else 60 * default_minutes)
        basis = "1.25 x its last run here" if timed else "a default: not yet timed here"
        why = None
        if same_code(previous, commit, smoke) and not again and name != "time_to_accuracy":
            why = f"recorded for this code on {device['kind']} ({previous['started'][:10]})"
        elif needs_data and not data and not smoke:
            why = "needs --data (the JPEG copy of CIFAR-10: folder:PATH)"
        planned.append((name, estimate, why, basis))
    return planned


def same_code(previous: dict[str, Any] | None, commit: str, smoke: bool) -> bool:
    """Whether a result was measured with this code (a short hash matches its full one) at
    this size."""
    recorded = (previous or {}).get("commit") or ""
    return (bool(recorded) and previous.get("smoke") == smoke
            and (recorded.startswith(commit) or commit.startswith(recorded)))


def fits(name: str, estimate: float, left: float) -> bool:
    """Whether a part may start with ``left`` seconds: all of its estimate, or for a part
    that resumes across calls, a third of it (at least two minutes)."""
    resumable = PARTS[name][2]
    return left >= (min(estimate, max(120.0, estimate / 3)) if resumable else estimate)


def run_part(name: str, args: Any, work: Path, previous: dict[str, Any] | None,
             left: float) -> tuple[dict[str, Any] | None, str]:
    """The part's figures, measured in a child process stopped at the deadline; (None, why)
    if it was cut short or failed. A stop signal here stops the part too, then exits."""
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        result, given = Path(scratch) / "figures.json", Path(scratch) / "previous.json"
        given.write_text(json.dumps(previous))
        command = [sys.executable, "-m", "benchmarks.evidence", "--run-part", name,
                   "--work", str(work), "--previous", str(given), "--result", str(result)]
        command += ["--data", args.data] if args.data else []
        command += ["--cpu-smoke"] if args.cpu_smoke else []
        env = dict(os.environ)
        if name in TORCH_IN_PROCESS:  # PyTorch needs room beside JAX's memory pool
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.45"
        # A session of its own: a stop reaches the part and every process it started.
        process = subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)
        try:
            code = process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            stop(process)
            return None, "stopped at the deadline: nothing recorded (training parts resume)"
        except StopSignal as signal_received:
            stop(process)
            print(f"error: {name} stopped by {signal_received}: nothing recorded (training "
                  "parts resume at the next call)", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal_received.signum) from None
        if code:
            return None, f"failed (exit status {code}; its output is above): nothing recorded"
        return json.loads(result.read_text()), "recorded"


def stop(process: subprocess.Popen) -> None:
    """Ask a part and the processes it started to stop (a training run saves a checkpoint
    first), and wait for them all; those still running after STOP_GRACE are killed."""
    signal_group(process, signal.SIGTERM)
    given_up = time.time() + STOP_GRACE
    while running(process) and time.time() < given_up:
        time.sleep(0.2)
    if running(process):
        signal_group(process, signal.SIGKILL)
    process.wait()


def signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def running(process: subprocess.Popen) -> bool:
    """Whether the part, or a process it started, is still running."""
    process.poll()  # reaps the part once it ends
    try:
        os.killpg(process.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class StopSignal(Exception):
    """SIGINT or SIGTERM reached the evidence command."""

    def __init__(self, signum: int):
        super().__init__(signals.name(signum))
        self.signum = signum


def raise_stop(signum: int, frame: Any) -> None:
    raise StopSignal(signum)


def part_work(args: Any, kind: str, name: str, commit: str) -> Path:
    """The part's scratch folder for this code, device kind and size: a training run left
    there by an interrupted call of the same code resumes, never another code's."""
    return args.work / kind_folder(kind) / name / (commit[:12] + ("-smoke" if args.cpu_smoke
                                                                  else ""))


def check_inputs(parser: ArgumentParser, args: Any) -> list[str]:
    """Every argument checked before anything runs; the parts asked for."""
    parts = list(PARTS) if args.parts is None else args.parts.split(",")
    unknown = [repr(name) for name in parts if name not in PARTS]
    if unknown or len(set(parts)) < len(parts):
        problem = f"no part named {', '.join(unknown)}" if unknown else "a part is named twice"
        parser.error(f"--parts {args.parts!r}: {problem}; give each once, comma-separated, of "
                     f"{', '.join(PARTS)}")
    parts = [name for name in PARTS if name in parts]  # in priority order
    if args.report:
        given = [flag for flag, value in (("--minutes", args.minutes), ("--plan", args.plan),
                                          ("--again", args.again), ("--data", args.data),
                                          ("--commit", args.commit),
                                          ("--cpu-smoke", args.cpu_smoke),
                                          ("--parts", args.parts)) if value]
        if given:
            parser.error(f"--report makes the section from the result files alone: leave out "
                         f"{given[0]}")
        return parts
    if args.write or args.write_elsewhere:
        parser.error("--write goes with --report (it writes the report into README.md)")
    if args.minutes is None:
        parser.error("--minutes N is needed: the time the measurements may take")
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes {args.minutes:g} must be above 0 and at most {MAX_MINUTES:,} "
                     "(a week)")
    if args.commit and not re.fullmatch(r"[0-9a-fA-F]{7,40}", args.commit):
        parser.error(f"--commit {args.commit} is not a commit hash; pass the 7 to 40 hex digits "
                     "git log prints")
    args.commit = args.commit and args.commit.lower()
    if args.data and args.cpu_smoke:
        parser.error("--cpu-smoke trains on synthetic images: leave out --data")
    if args.data:
        problem = dataset_name_problem(args.data)
        path = Path(args.data.partition(":")[2]).expanduser()
        if problem or not args.data.startswith(("folder:", "cifar:")) or not path.is_dir():
            parser.error(f"--data {args.data}: pass the CIFAR-10 images as folder:PATH (a "
                         "class-per-folder tree) or cifar:PATH, an existing directory")
        args.data = resolved_dataset(args.data)
        problem = cifar10_problem(args.data)
        if problem:
            parser.error(f"--data: {problem}")
    for folder, what in ((args.out, "--out"), (args.work, "--work")):
        if folder.exists() and not folder.is_dir():
            parser.error(f"{what} {folder} is a file, not a folder; pass a folder")
        if not writable(folder):
            parser.error(f"{what} {folder} cannot be written to; pass a folder you can write")
    return parts


def cifar10_problem(dataset: str) -> str | None:
    """Why the parts could not train on ``dataset`` as CIFAR-10 (10 classes of 32x32 images,
    laid out as their loaders read it), or None."""
    with hints.door(hints.EVIDENCE):
        try:
            facts = describe_source(dataset)
        except DataError as error:
            return str(error)
    classes, (height, width) = len(facts.class_names), facts.image_size
    batch = part_batch_size()
    if classes != 10 or (height, width) != (32, 32) or facts.train_examples < batch:
        return (f"{dataset} holds {facts.train_examples} training image(s) of {classes} "
                f"class(es), {height}x{width} pixels; the parts train ResNet-20 on CIFAR-10's 10 "
                f"classes of 32x32 images, {batch} a batch: pass its JPEG copy (folder:PATH) or "
                "its python batches (cifar:PATH)")
    return None


def part_batch_size() -> int:
    """The batch of the recipe the parts train on --data with (the paper's ResNet-20)."""
    from configs import cifar10_resnet20

    return cifar10_resnet20.get_config().batch_size


def writable(folder: Path) -> bool:
    """Whether files can be made in ``folder`` (made if missing; nothing is left behind)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def run(parser: ArgumentParser, args: Any, parts: list[str]) -> None:
    started = time.time()
    deadline = started + 60 * args.minutes
    commit = code_identity(args.commit)
    device = device_info()
    if device["platform"] == "cpu" and not args.cpu_smoke:
        if not args.plan:
            parser.error("this machine has no accelerator (JAX sees only the CPU); the parts "
                         "run on a GPU or TPU, or at tiny size with --cpu-smoke (for tests)")
        print("note: this machine has no accelerator: a run here refuses to start (the "
              "parts run on a GPU or TPU, or at tiny size with --cpu-smoke)")
    planned = plan(parts, args.out, device, commit, args.minutes, args.again, args.data,
                   args.cpu_smoke)
    if all(why for _, _, why, _ in planned):
        print("\n".join(f"{name}: skipped, {why}" for name, _, why, _ in planned))
        return
    smallest = min(estimate for _, estimate, why, _ in planned if why is None)
    if not args.plan and 60 * args.minutes < min(smallest, 120.0):
        parser.error(f"--minutes {args.minutes:g} is under the shortest part still to measure "
                     f"(about {smallest / 60:.1f} minutes); give more minutes")
    print(f"{device['count']} x {device['kind']} ({device['platform']}), code {commit[:12]}, "
          f"{args.minutes:g} minutes")
    if not args.plan:  # parts will run: a stop signal stops them first
        signals.on_stop(raise_stop)
    planned_seconds = 0.0  # --plan: the estimates of the parts it would run
    for name, estimate, why, basis in planned:
        now = started if args.plan else time.time()  # a plan's sums do not hang on its speed
        left = deadline - now - planned_seconds
        if why is None and not fits(name, estimate, left):
            why = (f"about {estimate / 60:.1f} min ({basis}) does not fit in the "
                   f"{max(left, 0) / 60:.1f} min left")
        if why or args.plan:
            planned_seconds += 0 if why else estimate
            print(f"{name}: {'would run' if not why else 'skipped'}, "
                  f"{why or f'about {estimate / 60:.1f} min ({basis})'}", flush=True)
            continue
        print(f"{name}: running (about {estimate / 60:.1f} min, {left / 60:.1f} left)", flush=True)
        run_planned(args, device, commit, name, left)


def run_planned(args: Any, device: dict[str, Any], commit: str, name: str,
                left: float) -> None:
    """Measure one part and record its figures. ``--again`` starts its training runs
    anew; the seeds measured before are carried on only for the same code."""
    part_started = time.time()
    work = part_work(args, device["kind"], name, commit)
    if args.again and work.exists():
        shutil.rmtree(work)
    previous = read_result(result_path(args.out, device["kind"], name))
    carried = (previous or {}).get("figures") if same_code(previous, commit,
                                                           args.cpu_smoke) else None
    figures, outcome = run_part(name, args, work, None if args.again else carried, left)
    if figures is not None:
        path = record(args.out, device, name, commit, part_started, figures, args.cpu_smoke)
        outcome = f"recorded in {path}"
    print(f"{name}: {outcome} ({(time.time() - part_started) / 60:.1f} min)", flush=True)


def run_one_part(args: Any) -> None:
    """The child side of run_part: the part's figures into --result."""
    function = PARTS[args.run_part][0]
    previous = json.loads(args.previous.read_text()) if args.previous else None
    figures = function(Context(args.work, args.data, args.cpu_smoke, previous))
    args.result.write_text(json.dumps(figures))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m benchmarks.evidence",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="the time the measurements may take")
    parser.add_argument("--data", help="the JPEG copy of CIFAR-10, folder:PATH (or cifar:PATH)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where result files go")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "evidence",
                        help="scratch folder of the training parts (they resume there)")
    parser.add_argument("--parts", help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--again", action="store_true", help="measure recorded parts anew")
    parser.add_argument("--commit", help="the code's commit, where the tree has no .git")
    parser.add_argument("--plan", action="store_true", help="say what would run; run nothing")
    parser.add_argument("--report", action="store_true",
                        help="print the README's measured section from the result files")
    parser.add_argument("--write", action="store_true", help="with --report: into README.md "
                        "(the accelerators' full-size results of benchmarks/results/ only)")
    parser.add_argument("--write-elsewhere", action="store_true",
                        help="with --write: from an --out other than benchmarks/results/")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on a CPU (tests)")
    parser.add_argument("--run-part", choices=list(PARTS), help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--previous", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_part:
        run_one_part(args)
        return
    parts = check_inputs(parser, args)
    if args.report:
        from benchmarks.evidence_report import ReportError, report, write_readme

        try:
            if args.write_elsewhere and not args.write:
                parser.error("--write-elsewhere goes with --report --write")
            print(write_readme(args.out, elsewhere=args.write_elsewhere) if args.write
                  else report(args.out))
        except ReportError as error:
            parser.error(str(error))
        return
    try:
        run(parser, args, parts)
    except StopSignal as received:
        print(f"error: stopped by {received}: nothing more recorded", file=sys.stderr)
        raise SystemExit(128 + received.signum) from None


if __name__ == "__main__":
    main()
