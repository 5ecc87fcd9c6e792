"""Renamed to `hive_data.normalize_rows`; this alias keeps old imports working."""

from hive_data.normalize_rows import *  # noqa: F403
