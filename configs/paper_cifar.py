"""The old name of configs/base.py, the base of every config (a config of one's own may
still import it by this name)."""

from configs.base import get_config  # noqa: F401
