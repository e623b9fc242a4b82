"""The README's measured section, made from the result files of ``benchmarks.evidence``:
markdown tables, each figure with the device, versions and commit it came from, and the
target it is held against."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_jax.files import write_atomically

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"
BEGIN = ("<!-- evidence: begin; made by `python -m benchmarks.evidence --report --write` from "
         "benchmarks/results/, not edited by hand -->")
END = "<!-- evidence: end -->"


class ReportError(Exception):
    """The result files cannot make a report; the message names the file and the fix."""


def results(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The result files under ``out`` by part, in a stable order (device kind)."""
    if not out.is_dir():
        raise ReportError(f"--out {out} is not a folder of result files; pass the folder the "
                          "evidence command wrote (default: benchmarks/results)")
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("*/*.json")):
        try:
            entry = json.loads(path.read_text())
            problem = entry_problem(entry)
        except (OSError, ValueError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem:
            raise ReportError(f"{path} is not a result file ({problem}); restore it from git, "
                              "or remove it")
        found.setdefault(entry["part"], []).append(entry)
    return found


def entry_problem(entry: Any) -> str | None:
    """What makes a result entry unfit to report (a missing or mistyped field, a figure out
    of its range), or None."""
    if not isinstance(entry, dict) or entry.get("part") not in SECTIONS:
        return f"not an entry of one of the parts {', '.join(SECTIONS)}"
    device = entry.get("device")
    if not (isinstance(device, dict) and isinstance(device.get("kind"), str)
            and isinstance(device.get("count"), int) and device["count"] >= 1):
        return "its device (kind, count) is missing"
    if not isinstance(entry.get("smoke", False), bool):
        return f"smoke={entry['smoke']!r} is not true or false"
    if not isinstance(entry.get("figures"), dict):
        return "its figures are missing"
    problem = figure_problem(entry["figures"])
    if problem:
        return problem
    try:
        SECTIONS[entry["part"]][1](entry)
    except KeyError as error:
        return f"its figure {error.args[0]} is missing"
    except (TypeError, ValueError, AttributeError) as error:
        return f"its figures cannot be shown: {type(error).__name__}: {error}"
    return None


def figure_problem(figures: Any, key: str = "") -> str | None:
    """A figure out of what it can be (a measure that is not a number, or not finite; an
    accuracy or fraction of the peak outside [0, 1]; a time, rate or count below 0), or
    None; nested figures too."""
    if isinstance(figures, dict):
        return next((p for k, v in figures.items() if (p := figure_problem(v, str(k)))), None)
    if isinstance(figures, list):
        return next((p for v in figures if (p := figure_problem(v, key))), None)
    measure = key.endswith(("accuracy", "mfu", "seconds", "per_sec", "tflops", "steps"))
    if isinstance(figures, bool) or not isinstance(figures, int | float):
        return (f"{key}={figures!r} is not a number" if measure and figures is not None
                else None)
    if not math.isfinite(figures):
        return f"{key}={figures} is not finite"
    if key.endswith(("accuracy", "mfu")) and not 0 <= figures <= 1:
        return f"{key}={figures} is outside [0, 1]"
    if key.endswith(("seconds", "per_sec", "tflops", "steps")) and figures < 0:
        return f"{key}={figures} is below 0"
    return None


def held(entry: dict[str, Any]) -> bool:
    """Whether the issue's targets apply to the entry's figures: a full-size run on the
    H100 or H200 they were set for (a smoke run or another device is shown, not judged)."""
    kind = entry["device"]["kind"].lower()
    return not entry.get("smoke") and ("h100" in kind or "h200" in kind)


def verdict(entry: dict[str, Any], target: str, met: bool) -> str:
    if not held(entry):
        why = "a smoke run" if entry.get("smoke") else "set for an H100/H200"
        return f"{target}: not judged, {why}"
    return f"{target}: {'met' if met else 'missed'}"


def source(entry: dict[str, Any]) -> str:
    """Where the figures come from: device, count, versions, commit, date."""
    versions = entry.get("versions", {})
    libraries = ", ".join(f"{name} {versions[name]}" for name in ("jax", "torch")
                          if versions.get(name))
    commit = (f"commit {entry['commit'][:12]}" if entry.get("commit")
              else "commit unknown: " + entry.get("note", "taken before the current trainer"))
    smoke = "; CPU smoke run, tiny sizes" if entry.get("smoke") else ""
    date = f"; {entry['started'][:10]}" if entry.get("started") else ""
    return (f"*{entry['device']['count']} x {entry['device']['kind']}; {libraries}; "
            f"{commit}{date}{smoke}*")


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and abs(value) < 1 and digits == 0:
        return f"{value:.3f}"
    return f"{value:,.{digits}f}"


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def throughput_table(entry: dict[str, Any]) -> str:
    figures = entry["figures"]
    rows = [[r["model"], str(r["image_size"]), str(r["batch"]), r["dtype"],
             r["what"] + (f" (steps_per_call {r['steps_per_call']})" if r.get("steps_per_call")
                          else ""),
             number(r["images_per_sec"]), number(r.get("tflops"), 1), percent(r.get("mfu"))]
            for r in figures["rows"]]
    text = table(["model", "size", "batch", "dtype", "what", "images/s", "TFLOP/s", "mfu"], rows)
    bf16 = any(r["dtype"] == "bfloat16" and r["what"].startswith("PyTorch")
               for r in figures["rows"])
    text += ("\n\n" + ("PyTorch rows in bfloat16 run AMP autocast with channels_last; " if bf16
                        else "") + "TFLOP/s count 6 FLOPs per forward multiply-accumulate.")
    checks = [f"- {name}: {value:.3f}{_ratio_target(entry, name, value)}"
              for name, value in figures.get("ratios", {}).items()]
    return text + ("\n\n" + "\n".join(checks) if checks else "")


def _ratio_target(entry: dict[str, Any], name: str, value: float) -> str:
    """The issue's targets beside the figures they apply to."""
    if "trainer (steps_per_call 100) / JAX step" in name:
        return f" ({verdict(entry, 'target >= 0.95', value >= 0.95)})"
    if name.startswith("resnet50 224 b256 bfloat16: JAX step / fastest PyTorch"):
        return f" ({verdict(entry, 'target >= 1.1 x torch.compile', value >= 1.1)})"
    return ""


def throughput_full_table(entry: dict[str, Any]) -> str:
    figures = entry["figures"]
    variants = [[name, number(row["images_per_sec"]), number(row.get("tflops"), 1),
                 percent(row.get("mfu"))] for name, row in figures["variants"].items()]
    rows = throughput_table(entry) + "\n\n" if figures["rows"] else ""
    return (f"{rows}ResNet-50 bf16 step under XLA variants (fastest: "
            f"{figures['fastest_variant']}):\n\n"
            + table(["variant", "images/s", "TFLOP/s", "mfu"], variants))


def paper_table(entry: dict[str, Any]) -> str:
    figures = entry["figures"]
    minutes = figures["wall_seconds"] / 60
    return table(["steps", "final test accuracy", "wall time (all in)", "data loading",
                  "compilation", "images/s", "mfu", "target"],
                 [[number(figures["steps"]), percent(figures["final_test_accuracy"], 2),
                   f"{minutes:.1f} min", _seconds(figures.get("data_seconds")),
                   _seconds(figures.get("compile_seconds")),
                   number(figures.get("median_images_per_sec")),
                   percent(figures.get("median_mfu")),
                   verdict(entry, "<= 3 min on an H100/H200", minutes <= 3)]])


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def streaming_table(entry: dict[str, Any]) -> str:
    figures = entry["figures"]
    fraction = figures["fraction_of_synthetic"]
    return table(["model", "size", "batch", "workers", "pipeline images/s",
                  "training on it, images/s", "on synthetic data", "fraction"],
                 [[figures["model"], str(figures["image_size"]), str(figures["batch"]),
                   str(figures["workers"]), number(figures["pipeline_images_per_sec"]),
                   number(figures["streaming_images_per_sec"]),
                   number(figures["synthetic_images_per_sec"]),
                   f"{percent(fraction)} ({verdict(entry, 'target >= 90%', fraction >= 0.9)})"]])


def tta_table(entry: dict[str, Any]) -> str:
    figures = entry["figures"]
    rows = [[seed, percent(s["jax_final_accuracy"], 2), percent(s["torch_final_accuracy"], 2),
             _seconds(s["jax_seconds"]), _seconds(s["torch_seconds"]),
             _seconds(s["jax_seconds_to_torch_final"])]
            for seed, s in figures["per_seed"].items()]
    summary = figures["summary"]
    difference = summary["jax_minus_torch"]
    interval = ("" if difference["low"] is None else
                f", 95% interval [{100 * difference['low']:+.2f}, {100 * difference['high']:+.2f}]")
    return (table(["seed", "JAX final", "PyTorch final", "JAX wall", "PyTorch wall",
                   "JAX to PyTorch's final"], rows)
            + f"\n\nJAX - PyTorch final accuracy: {100 * difference['difference']:+.2f} points"
            f"{interval}, over {len(rows)} seed(s).")


def degradation_table(entry: dict[str, Any]) -> str:
    figures = entry["figures"]
    rows = [[name, percent(None if e["train_error"] is None else e["train_error"] / 100),
             percent(None if e["test_error"] is None else e["test_error"] / 100)]
            for name, e in figures["errors"].items()]
    return (table(["net", "training error (last log window)", "test error"], rows) + "\n\n"
            + "\n".join(f"- {line}" for line in figures["verdict"]))


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "throughput": ("Training throughput (steady state, synthetic data on the device)",
                   throughput_table),
    "paper_schedule": ("The paper's ResNet-20 recipe through train.py", paper_table),
    "streaming": ("Streaming: ImageNet-sized JPEGs decoded by worker processes", streaming_table),
    "time_to_accuracy": ("Time to accuracy, half schedule, JAX against PyTorch", tta_table),
    "degradation": ("The degradation experiment, half schedule", degradation_table),
    "throughput_full": ("More throughput rows", throughput_full_table),
}


def report(out: Path) -> str:
    """The measured section, from every result file under ``out`` (smoke runs shown too)."""
    return make_section(results(out))


def on_accelerator(entry: dict[str, Any]) -> bool:
    """Whether an entry holds full-size figures of an accelerator (not a CPU smoke run)."""
    return not entry.get("smoke") and entry["device"].get("platform", "gpu") != "cpu"


def readme_entries(found: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """What the README shows of the result entries: accelerators' full-size figures only."""
    return {part: kept for part, entries in found.items()
            if (kept := [e for e in entries if on_accelerator(e)])}


def make_section(found: dict[str, list[dict[str, Any]]]) -> str:
    """The measured section of result entries by part (see :func:`results`)."""
    parts = []
    for part, (title, render) in SECTIONS.items():
        for entry in found.get(part, []):
            size = " (CPU smoke, tiny sizes)" if entry.get("smoke") else ""
            parts.append(f"#### {title}{size}\n\n{source(entry)}\n\n{render(entry)}")
    return "\n\n".join(parts) or "No measurement is recorded yet."


def readme_section(text: str) -> str | None:
    """What README.md holds between the markers, None if they are missing."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def write_readme(out: Path, readme: Path = README, results_folder: Path = RESULTS,
                 elsewhere: bool = False) -> str:
    """Put the report of the accelerators' full-size results under ``out`` between the
    README's markers (a CPU or smoke result never replaces them); what was written. ``out``
    must be ``results_folder`` (the project's own results) unless ``elsewhere``."""
    text = readme.read_text()
    if readme_section(text) is None:
        raise SystemExit(f"error: {readme} has no markers {BEGIN} ... {END} to write between")
    if not elsewhere and out.resolve() != results_folder.resolve():
        raise ReportError(f"--write makes the README's measured section from {results_folder}, "
                          f"and --out {out} is another folder: the section is left as it is "
                          "(add --write-elsewhere to write from that folder all the same)")
    found = results(out)
    if not found:
        raise ReportError(f"{out} holds no result file: the README's measured section is left "
                          "as it is; pass the --out the evidence command wrote")
    shown = readme_entries(found)
    if not shown:
        raise ReportError(f"{out} holds only CPU or smoke results, which never replace the "
                          "README's measured figures: the section is left as it is")
    made = make_section(shown)
    before, rest = text.split(BEGIN, 1)
    write_atomically(readme, f"{before}{BEGIN}\n{made}\n{END}{rest.split(END, 1)[1]}")
    return made
