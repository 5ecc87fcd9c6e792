"""hive_data: turn raw datasets into clean, verified, tokenized and packed training shards.

`hive_data.normalize_ddl(text, read=..., dialect=...)` is the DDL normalizer (`hive_data.ddl`); it is
imported on first use, so `import hive_data` (and `hive-data --help`) stays fast.
"""

from hive_core import __version__  # noqa: F401  (one version for all of hive)

__all__ = ["normalize_ddl"]


def __getattr__(name: str):
    if name == "normalize_ddl":
        from hive_data.ddl import normalize_ddl

        return normalize_ddl
    raise AttributeError(f"module 'hive_data' has no attribute {name!r}")
