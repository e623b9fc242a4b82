"""docs/training.md's table of every config key is the schema's own: made by
`python -m tools.config_keys`, held equal here, one row per key of the base config."""

from pathlib import Path

import pytest

from configs import base
from resnet_jax.train.config_schema import KEYS
from tools import config_keys

REPO = Path(__file__).resolve().parents[1]


def test_the_guide_holds_the_table_the_schema_makes():
    written = config_keys.section((REPO / "docs" / "training.md").read_text())
    assert written == config_keys.table(), "run: python -m tools.config_keys --write"


def test_the_table_has_a_row_for_every_key_with_its_rules():
    rows = {line.split("`")[1]: line for line in config_keys.table().splitlines()[2:]}
    assert list(rows) == list(KEYS) and set(rows) == set(base.get_config())
    assert rows["momentum"].endswith("| fixed | with optimizer=…, which has no momentum (Adam's "
                                     "moment decay is fixed) |")
    assert "| `0.9` | a finite number in [0, 1) |" in rows["momentum"]
    assert rows["eval_batch_size"].endswith("| an integer >= 1 | free |  |")
    assert "with momentum=0" in rows["nesterov"] and "optimizer=…" in rows["nesterov"]


def test_writing_needs_the_markers_and_replaces_only_between_them(tmp_path, monkeypatch):
    guide = tmp_path / "training.md"
    guide.write_text(f"# Guide\n{config_keys.BEGIN}\nold\n{config_keys.END}\nafter\n")
    monkeypatch.setattr(config_keys, "GUIDE", guide)
    config_keys.main(["--write"])
    assert guide.read_text() == (f"# Guide\n{config_keys.BEGIN}\n{config_keys.table()}\n"
                                 f"{config_keys.END}\nafter\n")
    guide.write_text("# Guide without markers\n")
    with pytest.raises(SystemExit) as ended:
        config_keys.main(["--write"])
    assert ended.value.code == 2
    assert guide.read_text() == "# Guide without markers\n"
