"""Moved to `hive_core.errors`; this alias keeps old imports working."""

from hive_core.errors import *  # noqa: F403
