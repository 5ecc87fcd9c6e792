"""Moved to `hive_core.atomic`; this alias keeps old imports working."""

from hive_core.atomic import *  # noqa: F403
