"""Whether two training runs are the same bit for bit, as a change that must not alter
training claims (a refactor, a move of code): their metrics rows, on the keys both write
(the clock's aside), and their final variables (the trained weights and BatchNorm
statistics, or their moving average where the run keeps one).

    python -m tools.same_runs RUN_A RUN_B [RUN_A2 RUN_B2 ...]

One line per pair; exit status 1 if any value differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file: import from the repository
    sys.path[0] = str(Path(__file__).resolve().parents[1])
if __name__ == "__main__":  # from the start: Ctrl-C while the libraries load is one line too
    from resnet_jax.signals import exit_on_stop_signals

    exit_on_stop_signals()

import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from resnet_jax.command_line import ArgumentParser, one_line_warnings  # noqa: E402
from resnet_jax.errors import ResNetError  # noqa: E402
from resnet_jax.runs import workdir  # noqa: E402
from resnet_jax.runs.trained import read_weights  # noqa: E402
from resnet_jax.train.metrics import TIMINGS  # noqa: E402


def rows_difference(a: Path, b: Path) -> tuple[int, list[str], list[str]]:
    """How many values the two runs' metrics rows share (clock aside), on which keys, and
    each that differs (``step N key: A != B``)."""
    rows_a, rows_b = workdir.read_metrics_file(a).rows, workdir.read_metrics_file(b).rows
    if [r["step"] for r in rows_a] != [r["step"] for r in rows_b]:
        return 0, [], [f"rows at steps {[r['step'] for r in rows_a]} and "
                       f"{[r['step'] for r in rows_b]}"]
    keys = sorted({k for ra, rb in zip(rows_a, rows_b, strict=True) for k in ra.keys() & rb.keys()
                   if k not in TIMINGS})
    pairs = [(ra["step"], k, ra[k], rb[k]) for ra, rb in zip(rows_a, rows_b, strict=True)
             for k in keys if k in ra and k in rb]
    return len(pairs), keys, [f"step {s} {k}: {x} != {y}" for s, k, x, y in pairs if x != y]


def variables_difference(a: Path, b: Path) -> tuple[int, list[str]]:
    """How many arrays the runs' final variables hold, and the names of those that differ."""
    flat = [traverse_util.flatten_dict(read_weights(run)[1]) for run in (a, b)]
    if flat[0].keys() != flat[1].keys():
        return len(flat[0]), ["the variables' names differ"]
    return len(flat[0]), ["/".join(map(str, k)) for k in flat[0]
                          if not np.array_equal(np.asarray(flat[0][k]), np.asarray(flat[1][k]))]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m tools.same_runs", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="pairs of run directories")
    args = parser.parse_args(argv)
    if len(args.runs) % 2:
        parser.error(f"{len(args.runs)} run directories do not make pairs; give them two by two")
    same = True
    for a, b in zip(args.runs[::2], args.runs[1::2], strict=True):
        try:
            with one_line_warnings():
                arrays, arrays_differing = variables_difference(a, b)  # both runs, or refused
                count, keys, rows = rows_difference(a, b)
        except ResNetError as error:
            parser.error(str(error))
        same = same and not rows and not arrays_differing
        print(f"{a} vs {b}: {count} metric values on {', '.join(keys)}: {len(rows)} differ"
              f"{' (' + rows[0] + ')' if rows else ''}; final variables: {arrays} arrays, "
              f"{len(arrays_differing)} differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
