"""hive_train: QLoRA (NF4) + DoRA adapter training over packed shards."""

__version__ = "0.1.0"
