"""Moved to `hive_core.cli`; this alias keeps old imports working."""

from hive_core.cli import *  # noqa: F403
