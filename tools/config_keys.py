"""The table of every config key in docs/training.md, made from the schema and the base
config (configs/base.py):

    python -m tools.config_keys            # print it
    python -m tools.config_keys --write    # into docs/training.md, between its markers
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file: import from the repository
    sys.path[0] = str(Path(__file__).resolve().parents[1])
if __name__ == "__main__":  # from the start: Ctrl-C while the libraries load is one line too
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

from configs import base  # noqa: E402
from resnet_jax.command_line import ArgumentParser  # noqa: E402
from resnet_jax.files import write_atomically  # noqa: E402
from resnet_jax.train import key_table  # noqa: E402

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "training.md"
BEGIN, END = "<!-- config keys: begin -->", "<!-- config keys: end -->"


def table() -> str:
    return key_table.markdown(base.get_config())


def section(text: str) -> str | None:
    """What ``text`` holds between the markers, None if they are missing."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m tools.config_keys", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"into {GUIDE.name}")
    args = parser.parse_args(argv)
    if not args.write:
        print(table())
        return
    text = GUIDE.read_text()
    if section(text) is None:
        parser.error(f"{GUIDE} lacks the lines {BEGIN} and {END} (once each, in that order); "
                     "put them where the table goes")
    before, rest = text.split(BEGIN, 1)
    write_atomically(GUIDE, f"{before}{BEGIN}\n{table()}\n{END}{rest.split(END, 1)[1]}")
    print(f"wrote the table of {len(key_table.KEYS)} config keys into {GUIDE}")


if __name__ == "__main__":
    main()
