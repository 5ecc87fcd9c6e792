"""hive_train: QLoRA (NF4) + DoRA adapter training over packed shards."""

from hive_core import __version__  # noqa: F401  (one version for all of hive)
