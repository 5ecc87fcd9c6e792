"""Hand hive shards to TRL's `SFTTrainer` as pre-packed data, with `labels` derived on the fly.

TRL 1.16 takes pre-built packed rows as they are with `dataset_kwargs={"skip_prepare_dataset": True}`,
but then refuses a `completion_mask` column without a `labels` column (it would otherwise silently
train on every token). Storing labels would double the bytes on disk, so `load_for_trl` presents the
shards as a memory-mapped `datasets.Dataset` whose examples carry `input_ids`, `seq_lengths` and
`labels` (the input ids, -100 where the completion mask is 0), computed when an example is read.

How: the shard files are opened with `datasets.Dataset.from_file` (memory map, after the manifest
check of `hive_data.shards.open_shards`), the mask column is exposed under the name `labels` (a
rename, nothing is copied), and a formatting transform turns each mask into real labels on access.
TRL and the HF Trainer see exactly the columns they expect, so no column is dropped and nothing is
repacked.

Recipe::

    from trl import SFTConfig, SFTTrainer
    from hive_data.trl_compat import load_for_trl

    train = load_for_trl("shards/", "train")
    args = SFTConfig(
        output_dir="runs/x",
        max_length=None,                               # rows are at most `seq` long already
        padding_free=True,                             # flatten rows, positions from seq_lengths
        dataset_kwargs={"skip_prepare_dataset": True}, # no tokenizing, no repacking
        per_device_train_batch_size=1,
    )
    SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer).train()
"""

from __future__ import annotations

import os

import numpy as np

from hive_core.errors import ShardError
from hive_data.shards import open_shards

IGNORE_INDEX = -100


def labels_from_mask(input_ids: np.ndarray, completion_mask: np.ndarray) -> np.ndarray:
    """Labels for causal LM training: the token id where the mask is 1, -100 elsewhere."""
    ids = np.asarray(input_ids, dtype=np.int64)
    return np.where(np.asarray(completion_mask) != 0, ids, IGNORE_INDEX)


def _to_trl(batch: dict) -> dict:
    # the "labels" column holds the completion mask on disk; turn it into labels here
    return {
        "input_ids": batch["input_ids"],
        "seq_lengths": batch["seq_lengths"],
        "labels": [labels_from_mask(i, m).tolist() for i, m in zip(batch["input_ids"], batch["labels"])],
    }


def load_for_trl(root: str | os.PathLike, split: str = "train", *, verify: str = "size"):
    """One split of a shard directory as a `datasets.Dataset` for `SFTTrainer(train_dataset=...)`.

    Raises `ShardError` when the directory is not a complete pack or lacks the split.
    """
    import datasets

    shards = open_shards(root, verify=verify)
    files = [
        info["file"] for info in shards.manifest["shards"] if info["split"] == split and info["rows"] > 0
    ]
    if not files:
        raise ShardError(f"no {split!r} split in this shard directory", file=str(root))
    parts = [datasets.Dataset.from_file(str(shards.root / f)) for f in files]
    ds = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    ds = ds.rename_column("completion_mask", "labels")
    return ds.with_transform(_to_trl)
