"""``python -m resnet_jax.weights``: the weights table, as text or as the docs show it."""

import sys

from resnet_jax.command_line import ArgumentParser
from resnet_jax.errors import WeightsError
from resnet_jax.weights import table


def main(argv: list[str] | None = None) -> int:
    """``python -m resnet_jax.weights``: the weights table."""
    parser = ArgumentParser(prog="python -m resnet_jax.weights",
                                     description="The named weights, and what each's file holds.")
    parser.add_argument("--markdown", action="store_true", help="as docs/weights.md shows it")
    args = parser.parse_args(argv)
    try:
        print(table.markdown() if args.markdown else table.text())
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
