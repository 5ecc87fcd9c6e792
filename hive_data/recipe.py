"""Moved to `hive_core.recipe`; this alias keeps old imports working."""

from hive_core.recipe import *  # noqa: F403
