"""The degradation experiment (the paper's Figure 6) runs end to end on a cut schedule."""

import json

import pytest
from helpers import metric_rows

from benchmarks import degradation

CUT = ["--dataset", "synthetic", "--depths", "20", "32", "--steps", "4",
       "--set", "image_size=8", "--set", "synthetic_examples=(64, 32)",
       "--set", "batch_size=16", "--set", "eval_batch_size=32"]


def test_plain_and_residual_nets_train_and_the_figures_are_drawn(tmp_path):
    report = degradation.main(["--workdir", str(tmp_path), *CUT])
    assert set(report["errors"]) == {"plain20", "plain32", "residual20", "residual32"}
    for name, errors in report["errors"].items():
        assert 0 <= errors["train_error"] <= 100 and 0 <= errors["test_error"] <= 100, name
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["residual"] == name.startswith("residual")
        assert config["lr_boundaries"] == [2, 3] and config["log_grad_norms"]
        rows = metric_rows(tmp_path / name, drop=())
        assert {"grad_norm/stage1", "grad_norm/stage3"} <= set(rows[-1])
    assert report["errors"]["plain20"] != report["errors"]["residual20"]
    assert len(report["verdict"]) == 2 and "plain-32 training error" in report["verdict"][0]
    for figure in ("degradation.png", "grad_norms.png"):
        assert (tmp_path / figure).stat().st_size > 20_000, figure
    assert json.loads((tmp_path / "degradation.json").read_text()) == report

    again = degradation.main(["--workdir", str(tmp_path), *CUT])  # finished: nothing retrained
    assert again == report


def test_an_unknown_key_is_named_with_the_closest_one(tmp_path):
    with pytest.raises(SystemExit, match="no such config key.*did you mean batch_size"):
        degradation.main(["--workdir", str(tmp_path), *CUT, "--set", "batchsize=8"])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra,message", [
    (["--depths", "20"], "needs two depths or more"),
    (["--set", "batch_size='abc'"], "batch_size takes int values"),
])
def test_inputs_that_cannot_make_the_figure_are_refused(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stopped:
        degradation.main(["--workdir", str(tmp_path), *CUT, *extra])
    assert message in capsys.readouterr().err + str(stopped.value)
    assert not any(tmp_path.iterdir())
