"""hive_data: turn raw datasets into clean, verified, tokenized and packed training shards."""

__version__ = "0.1.0"
