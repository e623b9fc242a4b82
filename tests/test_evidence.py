"""The evidence command: one call measures what is missing for this device kind and this
code within its minutes, leaves a result file per finished part, and the README's
measured section is made from those files."""

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO
from PIL import Image

from benchmarks import evidence, evidence_parts, evidence_report

SMOKE_PARTS = ["throughput", "paper_schedule", "streaming", "throughput_full"]


def run_evidence(*flags, timeout=600):
    return subprocess.run([sys.executable, "-m", "benchmarks.evidence", *map(str, flags)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def snapshot(root):
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cpu_smoke_records_each_part_with_its_source_and_reports_it(tmp_path, capsys):
    """Four parts through the command (the seed and net parts run the experiments whose own
    tests are tests/test_time_to_accuracy.py and tests/test_degradation.py)."""
    out, work = tmp_path / "results", tmp_path / "work"
    flags = ["--cpu-smoke", "--minutes", 10, "--parts", ",".join(SMOKE_PARTS), "--out", out,
             "--work", work]
    first = run_evidence(*flags)
    assert first.returncode == 0, first.stderr[-3000:]
    commit = evidence.code_identity(None)
    for part in SMOKE_PARTS:
        entry = json.loads((out / "cpu" / f"{part}.json").read_text())
        assert (entry["part"], entry["commit"], entry["smoke"]) == (part, commit, True)
        assert (entry["device"]["kind"], entry["device"]["platform"]) == ("cpu", "cpu")
        assert entry["versions"]["jax"] and entry["seconds"] > 0 and entry["figures"]
        assert "--cpu-smoke" in entry["command"]
    rows = json.loads((out / "cpu" / "throughput.json").read_text())["figures"]["rows"]
    assert {r["what"] for r in rows} == {"JAX step", "JAX trainer", "PyTorch"}
    assert all(r["images_per_sec"] > 0 for r in rows)
    assert all(r["tflops"] > 0 for r in rows if r["what"].startswith("JAX"))
    streaming = json.loads((out / "cpu" / "streaming.json").read_text())["figures"]
    assert streaming["fraction_of_synthetic"] == pytest.approx(
        streaming["streaming_images_per_sec"] / streaming["synthetic_images_per_sec"])
    paper = json.loads((out / "cpu" / "paper_schedule.json").read_text())["figures"]
    assert paper["steps"] == 4 and paper["wall_seconds"] > 0

    recorded, flags = snapshot(out), [str(flag) for flag in flags]
    evidence.main(flags)  # the same code on the same device kind: nothing to measure
    again = capsys.readouterr().out
    assert again.count("skipped, recorded for this code on cpu") == len(SMOKE_PARTS)
    evidence.main([*flags, "--plan", "--again"])
    assert capsys.readouterr().out.count("would run, about") == len(SMOKE_PARTS)
    assert snapshot(out) == recorded
    evidence.main(["--report", "--out", str(out)])
    report = capsys.readouterr().out
    assert report.count(" x cpu; jax ") == len(SMOKE_PARTS)
    assert f"commit {commit[:12]}" in report and "CPU smoke run, tiny sizes" in report
    assert ": met" not in report and ": missed" not in report
    assert "<= 3 min on an H100/H200: not judged, a smoke run" in report


class ClockAtTheDeadline:
    """time.time for evidence: the first reading starts the call, every later one is a
    millisecond before its deadline (a part planned then is stopped at once, on any
    machine)."""

    sleep = staticmethod(time.sleep)

    def __init__(self, minutes: float):
        self.start, self.minutes = None, minutes

    def time(self) -> float:
        if self.start is None:
            self.start = time.time()
            return self.start
        return self.start + 60 * self.minutes - 0.001


def test_a_part_cut_short_by_the_deadline_records_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    stale = {"part": "throughput", "commit": "0" * 40, "smoke": True, "seconds": 0.0001,
             "figures": {"rows": []}, "started": "2026-01-01T00:00:00+00:00"}
    (out / "cpu").mkdir(parents=True)
    (out / "cpu" / "throughput.json").write_text(json.dumps(stale))  # timed short: it starts
    monkeypatch.setattr(evidence, "time", ClockAtTheDeadline(minutes=3))
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        evidence.main(["--cpu-smoke", "--minutes", "3", "--parts", "throughput", "--out",
                       str(out), "--work", str(tmp_path / "work")])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert "throughput: stopped at the deadline: nothing recorded" in capsys.readouterr().out
    assert json.loads((out / "cpu" / "throughput.json").read_text()) == stale


def test_the_seed_and_net_parts_add_to_what_earlier_calls_measured(tmp_path, monkeypatch):
    from benchmarks import degradation, time_to_accuracy

    calls = []
    monkeypatch.setattr(time_to_accuracy, "main", lambda argv: calls.append(argv) or {
        "per_seed": {0: {}, 1: {}, 2: {}}, "summary": {}})
    previous = {"per_seed": {"0": {}, "1": {}}}
    figures = evidence_parts.time_to_accuracy(
        evidence_parts.Context(tmp_path, "folder:/data/cifar", False, previous))
    assert calls[0][calls[0].index("--seeds") + 1:][:3] == ["0", "1", "2"]  # one more seed
    assert "--config.dataset=folder:/data/cifar" in calls[0]
    assert "--config.lr_boundaries=(16000,24000)" in calls[0] and set(figures["per_seed"]) == {
        "0", "1", "2"}
    monkeypatch.setattr(degradation, "main", lambda argv: calls.append(argv) or {
        "steps": 32000, "dataset": "folder:/data/cifar", "errors": {}, "verdict": []})
    evidence_parts.degradation(evidence_parts.Context(tmp_path, "folder:/data/cifar", False, None))
    assert calls[1][calls[1].index("--steps") + 1] == "32000"


def test_a_plan_skips_what_is_recorded_or_lacks_data_and_estimates_from_past_runs(tmp_path):
    device = {"kind": "NVIDIA H200", "count": 1}
    path = evidence.result_path(tmp_path, "NVIDIA H200", "throughput")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"commit": "abc", "smoke": False, "seconds": 300.0,
                                "started": "2026-11-30T10:00:00+00:00"}))
    planned = {name: (estimate, why) for name, estimate, why, _ in evidence.plan(
        list(evidence_parts.PARTS), tmp_path, device, "abc", 9, False, None, False)}
    assert planned["throughput"][1] == "recorded for this code on NVIDIA H200 (2026-11-30)"
    assert planned["paper_schedule"][1].startswith("needs --data")
    assert planned["streaming"] == (300.0, None)  # never timed here: its default, 5 minutes
    other = evidence.plan(["throughput"], tmp_path, device, "def", 9, False, None, False)
    assert other == [("throughput", 375.0, None, "1.25 x its last run here")]
    assert evidence.fits("degradation", 720.0, 240.0)  # resumable: a third of it is enough
    assert not evidence.fits("streaming", 300.0, 240.0)


@pytest.mark.parametrize("flags,message", [
    (["--minutes", "3", "--parts", "throughput,warp"],
     "error: --parts 'throughput,warp': no part named 'warp'; give each once, comma-separated, "
     "of throughput, paper_schedule, streaming, time_to_accuracy, degradation, throughput_full"),
    (["--minutes", "3", "--parts", "throughput,throughput"],
     "error: --parts 'throughput,throughput': a part is named twice"),
    (["--minutes", "3", "--cpu-smoke", "--data", "folder:{case}"],
     "error: --cpu-smoke trains on synthetic images: leave out --data"),
    (["--minutes", "3", "--write"], "error: --write goes with --report"),
    (["--minutes", "3", "--data", "folder:{case}"], "error: --data: {case} needs train/<class>/ "
                                                     "and test/<class>/"),
    (["--minutes", "0"], "error: --minutes 0 must be above 0 and at most 10,080 (a week)"),
    (["--report", "--minutes", "3"], "error: --report makes the section from the result files "
                                     "alone: leave out --minutes"),
    (["--report", "--out", "{case}/nothing"], "error: --out {case}/nothing is not a folder of "
                                              "result files"),
    (["--report", "--write", "--out", "{case}"], "error: --write makes the README's measured "
                                                 "section from "),
    (["--report", "--write", "--write-elsewhere", "--out", "{case}"],
     "error: {case} holds no result file: the README's measured section is left as it is"),
    (["--report", "--write-elsewhere"], "error: --write-elsewhere goes with --report --write"),
    (["--plan", "--minutes", "3", "--data", "cifar:{case}/jpegs"],
     "error: --data: cifar: path {case}/jpegs is not a cifar-10-batches-py directory "
     "(data_batch_1..5, test_batch) nor a cifar-100-python one (train, test files); found test/, "
     "train/; a class-per-folder tree is read with --data folder:{case}/jpegs"),
    (["--plan", "--minutes", "3", "--data", "folder:{case}/ten"],
     "error: --data: folder:{case}/ten holds 20 training image(s) of 10 class(es), 32x32 pixels; "
     "the parts train ResNet-20 on CIFAR-10's 10 classes of 32x32 images, 128 a batch"),
    (["--plan", "--minutes", "3", "--data", "folder:{case}/jpegs"],
     "error: --data: folder:{case}/jpegs holds 1 training image(s) of 1 class(es), 32x32 pixels; "
     "the parts train ResNet-20 on CIFAR-10's 10 classes of 32x32 images, 128 a batch: pass its "
     "JPEG copy (folder:PATH) or its python batches (cifar:PATH)"),
    (["--plan", "--minutes", "3", "--data", "cifar:{case}/junk"],
     "error: --data: {case}/junk/test_batch is not a CIFAR python batch (UnpicklingError)"),
    (["--minutes", "0.5", "--cpu-smoke"], "error: --minutes 0.5 is under the shortest part"),
    (["--minutes", "3", "--data", "folder:{case}/nothing"],
     "error: --data folder:{case}/nothing: pass the CIFAR-10 images as folder:PATH"),
    (["--minutes", "3", "--out", "{case}/a_file/results"],
     "error: --out {case}/a_file/results cannot be written to"),
    (["--minutes", "3", "--out", "{case}/a_file"], "error: --out {case}/a_file is a file"),
    (["--minutes", "3", "--commit", "xyz"], "error: --commit xyz is not a commit hash"),
    (["--minutes", "3"], "error: this machine has no accelerator (JAX sees only the CPU)"),
])
def test_bad_input_is_one_line_before_anything_runs(tmp_path, flags, message, capsys):
    (tmp_path / "a_file").write_text("mine")
    for split in ("train", "test"):  # JPEG trees: one of one class, one of ten classes
        (tmp_path / "jpegs" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "jpegs" / split / "cat" / "0.jpg")
        for label in range(10):
            (tmp_path / "ten" / split / str(label)).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32)).save(tmp_path / "ten" / split / str(label) / f"{i}.jpg")
    (tmp_path / "junk").mkdir()  # CIFAR's python batch names, holding no batches
    for name in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))):
        (tmp_path / "junk" / name).write_text("junk")
    out = tmp_path / "results"
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as ended:
        evidence.main([*[f.format(case=tmp_path) for f in flags],
                       *([] if "--out" in flags else ["--out", str(out)]),
                       "--work", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert ended.value.code == 2, err[-2000:]
    assert err.strip().startswith(message.format(case=tmp_path))
    assert len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before and not out.exists()


def test_a_plan_counts_the_minutes_of_the_parts_it_would_run(tmp_path, capsys):
    evidence.main(["--plan", "--cpu-smoke", "--minutes", "2.5", "--out", str(tmp_path / "r"),
                   "--work", str(tmp_path / "w")])
    planned = capsys.readouterr().out
    assert planned.count("would run, about 1.0 min (a default: not yet timed here)") == 2
    assert "streaming: skipped, about 1.0 min (a default: not yet timed here) does not " \
           "fit in the 0.5 min left" in planned
    assert not (tmp_path / "r").exists() and not (tmp_path / "w").exists()


def test_a_broken_result_file_is_named_in_one_line(tmp_path, capsys):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "throughput.json").write_text('{"part": "throughput", "figu')
    with pytest.raises(SystemExit, match="2"):
        evidence.main(["--report", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {tmp_path / 'cpu' / 'throughput.json'} is not a result file (JSONDecodeError")
    assert len(err.strip().splitlines()) == 1


def test_the_readmes_measured_section_is_the_reports_output():
    section = evidence_report.readme_section(evidence_report.README.read_text())
    assert section == evidence_report.report(evidence.RESULTS), (
        "run python -m benchmarks.evidence --report --write")
    entries = [json.loads(p.read_text()) for p in evidence.RESULTS.glob("*/*.json")]
    assert entries and not any(e["smoke"] for e in entries)  # only accelerator figures kept


def test_the_wheelhouse_lists_what_a_machine_without_network_lacks(tmp_path):
    """A GPU machine's image with JAX, Flax and PyTorch but not the data libraries."""
    from importlib import metadata

    from tools import wheelhouse

    freeze = tmp_path / "freeze.txt"
    image = ("absl-py==2.1.0\ncloudpickle==3.0\netils==1.7\nflax==0.12.8\njax==0.11.2\n"
             "jaxlib==0.11.2\nml_dtypes==0.5.1\nnumpy==2.1.0\noptax==0.2.8\norbax-checkpoint==0.12.8\n"
             "protobuf==5.29\nPillow==11\nmatplotlib==3.9\ntqdm==4.66\nPyYAML==6.0\n"
             "packaging==24\nimportlib_resources==6\n")
    freeze.write_text(image)
    packages = wheelhouse.main(["--have", str(freeze), "--dry-run"])
    assert set(packages) == {"array-record", "grain", "ml-collections", "portpicker", "psutil",
                             "safetensors", "simplejpeg", "tensorboardx"}
    assert packages["grain"] == metadata.version("grain")  # the versions tested here
    freeze.write_text(image.replace("optax==0.2.8", "optax==0.1.7"))  # below the project's range
    assert packages.items() < wheelhouse.main(["--have", str(freeze), "--dry-run"]).items()
    assert wheelhouse.main(["--have", str(freeze), "--dry-run"])["optax"] == metadata.version(
        "optax")
    for flags in (["--skip", "tensorflw-cpu"], ["--python", "3.99"], ["--dest", str(freeze)]):
        with pytest.raises(SystemExit, match="2"):
            wheelhouse.main(["--have", str(freeze), *flags])
    with pytest.raises(SystemExit):
        wheelhouse.main(["--have", str(tmp_path / "missing.txt"), "--dry-run"])


def test_the_wheelhouse_adds_skips_matches_jax_plugins_and_quotes_a_bad_line(tmp_path, capsys):
    from tools import wheelhouse

    freeze = tmp_path / "freeze.txt"
    freeze.write_text("absl-py==2.1.0\nnumpy==2.1.0\njax==0.4.30\njaxlib==0.4.30\n"
                      "jax-cuda12-plugin==0.4.30\njax-cuda12-pjrt==0.4.30\n")
    default = wheelhouse.main(["--have", str(freeze), "--dry-run"])
    skipping = wheelhouse.main(["--have", str(freeze), "--dry-run", "--skip", "grain"])
    everything = wheelhouse.main(["--have", str(freeze), "--dry-run", "--no-default-skip"])
    assert "tensorflow-cpu" not in default and "tensorflow-cpu" not in skipping  # added to
    assert "grain" in default and "grain" not in skipping
    assert {"tensorflow-cpu", "tensorflow-datasets", "tensorboard"} <= set(everything)
    jaxlib = default["jaxlib"]
    assert default["jax-cuda12-plugin"] == default["jax-cuda12-pjrt"] == jaxlib
    out = capsys.readouterr().out
    assert (f"jax-cuda12-plugin 0.4.30 there: fetched at {jaxlib} (to match jaxlib {jaxlib}; "
            "JAX sees only the CPU when they differ)") in out
    assert ("left out (with what only they need): huggingface-hub, tensorboard, tensorflow-cpu, "
            "tensorflow-datasets; --no-default-skip fetches") in out
    freeze.write_text("jax==0.11.2\njaxlib==0.11.2\njax-cuda12-plugin==0.11.2\n")
    assert "jax-cuda12-plugin" not in wheelhouse.main(["--have", str(freeze), "--dry-run"])
    freeze.write_text("jax==0.11.2\njaxlib==0.11.2\njax-cuda12-plugin==0.10.0\n")  # kept jaxlib
    assert wheelhouse.main(["--have", str(freeze), "--dry-run"])["jax-cuda12-plugin"] == "0.11.2"
    freeze.write_text("jax==0.11.2\njaxlib==0.10.0\n")  # a pair that differs: fetched as one
    apart = wheelhouse.main(["--have", str(freeze), "--dry-run"])
    assert apart["jax"] == apart["jaxlib"] == jaxlib
    freeze.write_text("jax==0.11.2\n")  # jaxlib fetched: jax with it, the two pin each other
    alone = wheelhouse.main(["--have", str(freeze), "--dry-run"])
    assert alone["jax"] == alone["jaxlib"] == jaxlib
    capsys.readouterr()
    with pytest.raises(SystemExit, match="2"):
        wheelhouse.main(["--have", str(freeze), "--dry-run", "--python", "3.10"])
    assert "--python 3.10: the project needs Python >=3.11" in capsys.readouterr().err
    assert wheelhouse.main(["--have", str(freeze), "--dry-run", "--python", "3.12.1"])
    with pytest.raises(SystemExit, match="2"):
        wheelhouse.main(["--have", str(freeze), "--dry-run", "--python", "python3"])
    assert "give the other machine's Python as 3.Y or 3.Y.Z (e.g. 3.12)" in (
        capsys.readouterr().err)
    freeze.write_text("absl-py==2.1.0\njax==0.11.2\njax==0.12.0\n")
    with pytest.raises(SystemExit, match="2"):
        wheelhouse.main(["--have", str(freeze), "--dry-run"])
    assert "line 3, 'jax==0.12.0', names jax again, at another version than line 2" in (
        capsys.readouterr().err)
    for line in ("numpy>=2", "hello world!!!", "numpy==two"):
        freeze.write_text(f"# pip freeze\nabsl-py==2.1.0\n{line}\n")
        with pytest.raises(SystemExit, match="2"):
            wheelhouse.main(["--have", str(freeze), "--dry-run"])
        assert capsys.readouterr().err.strip() == (
            f"error: --have {freeze}: line 3, {line!r}, is not pip freeze's name==version, pip "
            "list's name and version, nor a package name; fix or remove it (see python -m "
            "tools.wheelhouse --help)")
    freeze.write_text("Package    Version   Editable project location\n---------- --------- ----\n"
                      "numpy      2.1.0\nresnet-jax 0.1.0     /work\nfoo @ file:///x.whl\nbar\n")
    assert wheelhouse.installed_versions(freeze.read_text()) == {
        "numpy": "2.1.0", "resnet-jax": "0.1.0", "foo": None, "bar": None}


def test_report_write_never_puts_cpu_or_smoke_figures_in_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{evidence_report.BEGIN}\nmeasured before\n{evidence_report.END}\n")
    results = tmp_path / "results"
    smoke = {"part": "paper_schedule", "device": {"kind": "cpu", "count": 1, "platform": "cpu"},
             "commit": "abc", "smoke": True, "figures": {"steps": 4, "final_test_accuracy": 0.1,
                                                         "wall_seconds": 60}}
    (results / "cpu").mkdir(parents=True)
    (results / "cpu" / "paper_schedule.json").write_text(json.dumps(smoke))
    with pytest.raises(evidence_report.ReportError, match=f"--write makes the README's measured "
                       f"section from {results}, and --out {tmp_path} is another folder"):
        evidence_report.write_readme(tmp_path, readme, results_folder=results)
    with pytest.raises(evidence_report.ReportError, match="holds only CPU or smoke results, which "
                       "never replace the README's measured figures"):
        evidence_report.write_readme(results, readme, results_folder=results)
    assert "measured before" in readme.read_text()
    full = {**smoke, "device": {"kind": "NVIDIA H200", "count": 1, "platform": "gpu"},
            "smoke": False}
    (results / "nvidia-h200").mkdir()
    (results / "nvidia-h200" / "paper_schedule.json").write_text(json.dumps(full))
    written = evidence_report.write_readme(results, readme, results_folder=results)
    assert "NVIDIA H200" in written and "smoke" not in written and "x cpu" not in written
    assert evidence_report.readme_section(readme.read_text()) == written


@pytest.mark.parametrize("change,problem", [
    (lambda e: e["figures"].update(final_test_accuracy="0.88"), "final_test_accuracy='0.88' "
                                                                "is not a number"),
    (lambda e: e["figures"].pop("steps"), "its figure steps is missing"),
    (lambda e: e.pop("figures"), "its figures are missing"),
    (lambda e: e["figures"].update(final_test_accuracy=1.7), "final_test_accuracy=1.7 is "
                                                             "outside [0, 1]"),
    (lambda e: e["figures"].update(wall_seconds=-5), "wall_seconds=-5 is below 0"),
    (lambda e: e.update(device="H100"), "its device (kind, count) is missing"),
    (lambda e: e["device"].update(count=0), "its device (kind, count) is missing"),
    (lambda e: e.update(smoke="false"), "smoke='false' is not true or false"),
    (lambda e: e["figures"].update(steps=-100), "steps=-100 is below 0"),
])
def test_a_result_file_that_cannot_be_true_is_refused_naming_it(tmp_path, change, problem):
    source = evidence.RESULTS / "nvidia-h100" / "paper_schedule.json"
    entry = json.loads(source.read_text())
    change(entry)
    path = tmp_path / "nvidia-h100" / "paper_schedule.json"
    path.parent.mkdir()
    path.write_text(json.dumps(entry))
    with pytest.raises(evidence_report.ReportError) as refused:
        evidence_report.report(tmp_path)
    assert str(refused.value).startswith(f"{path} is not a result file ({problem}")
