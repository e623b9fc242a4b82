"""Every config key as docs/training.md shows it, made from the schema itself: its default
(the base config's), the values it takes, whether a resumed run may change it, and where it
has no effect (a chosen value there is refused)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from resnet_jax.train.config_schema import KEYS
from resnet_jax.train.key_checks import always

HEADER = ("| key | default | values | on resume | no effect |\n"
          "|---|---|---|---|---|")


def values(key: str) -> str:
    """What ``key`` takes, in the words of the check that refuses anything else."""
    return KEYS[key].check(object()).removeprefix("must be ")


def no_effect(key: str) -> str:
    """Where ``key`` has no effect, its settings left open (``…``)."""
    rule = KEYS[key].unused
    return "" if rule is always else re.sub(r"\{[^}]*\}", "…", rule.why)


def markdown(defaults: Mapping[str, Any]) -> str:
    """The table of every key, with ``defaults`` (a config holding every key) as defaults."""
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    rows = [f"| `{key}` | `{cell(repr(defaults[key]))}` | {cell(values(key))} | "
            f"{'fixed' if spec.fixed else 'free'} | {cell(no_effect(key))} |"
            for key, spec in KEYS.items()]
    return "\n".join([HEADER, *rows])
