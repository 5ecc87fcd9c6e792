"""Packed shards on disk: Arrow IPC stream files plus `manifest.json`.

Layout of a shard directory::

    manifest.json
    train-00000-of-00002.arrow
    train-00001-of-00002.arrow
    val-00000-of-00001.arrow

Each `.arrow` file is an uncompressed Arrow IPC *stream* (what `datasets.Dataset.from_file`
reads), so it can be memory-mapped. Columns, named as TRL names its packed datasets:

- `input_ids`: list<int32>, one packed row (several documents back to back);
- `seq_lengths`: list<int32>, the lengths of the documents in the row (they sum to the row length);
- `completion_mask`: list<int8>, 1 where the token carries loss.

Rows are not padded on disk; padding is a batching concern.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from hive_data.errors import ShardError

FORMAT = "hive-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")

SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("seq_lengths", pa.list_(pa.int32()), nullable=False),
        pa.field("completion_mask", pa.list_(pa.int8()), nullable=False),
    ]
)


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.arrow"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def rows_to_batch(
    input_ids: Sequence[np.ndarray], seq_lengths: Sequence[np.ndarray], completion_mask: Sequence[np.ndarray]
) -> pa.RecordBatch:
    """Build one record batch from per-row numpy arrays, without a Python loop over tokens."""

    def column(rows: Sequence[np.ndarray], dtype, arrow_type) -> pa.Array:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(rows).astype(dtype, copy=False) if rows else np.zeros(0, dtype)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=arrow_type))

    return pa.RecordBatch.from_arrays(
        [
            column(input_ids, np.int32, pa.int32()),
            column(seq_lengths, np.int32, pa.int32()),
            column(completion_mask, np.int8, pa.int8()),
        ],
        schema=SCHEMA,
    )


@dataclass
class ShardInfo:
    split: str
    file: str
    rows: int
    tokens: int
    loss_tokens: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return dict(self.__dict__)


class ShardWriter:
    """Writes one split as a series of shards of about `shard_tokens` tokens each.

    Files are written under temporary names in `directory` (a staging directory); `close()`
    renames them to their final `split-XXXXX-of-NNNNN.arrow` names once the count is known and
    returns their `ShardInfo`s for the manifest.
    """

    def __init__(self, directory: str | os.PathLike, split: str, shard_tokens: int = 50_000_000):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.directory = Path(directory)
        self.split = split
        self.shard_tokens = shard_tokens
        self._writer: pa.RecordBatchStreamWriter | None = None
        self._sink = None
        self._parts: list[dict] = []

    def _open(self) -> None:
        path = self.directory / f".{self.split}-{len(self._parts):05d}.part"
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, SCHEMA)
        self._parts.append({"path": path, "rows": 0, "tokens": 0, "loss_tokens": 0})

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch of packed rows (schema `SCHEMA`)."""
        if batch.num_rows == 0:
            return
        if self._writer is None or self._parts[-1]["tokens"] >= self.shard_tokens:
            self._close_current()
            self._open()
        self._writer.write_batch(batch)
        part = self._parts[-1]
        part["rows"] += batch.num_rows
        part["tokens"] += len(batch.column(0).values)
        part["loss_tokens"] += int(np.asarray(batch.column(2).values, dtype=np.int64).sum())

    def close(self) -> list[ShardInfo]:
        self._close_current()
        infos = []
        for index, part in enumerate(self._parts):
            final = self.directory / shard_name(self.split, index, len(self._parts))
            os.replace(part["path"], final)
            infos.append(
                ShardInfo(
                    split=self.split,
                    file=final.name,
                    rows=part["rows"],
                    tokens=part["tokens"],
                    loss_tokens=part["loss_tokens"],
                    bytes=final.stat().st_size,
                    sha256=sha256_file(final),
                )
            )
        return infos


def write_manifest(directory: str | os.PathLike, manifest: dict) -> Path:
    """Write `manifest.json` (sorted keys, so equal manifests are equal bytes). Written last."""
    path = Path(directory) / MANIFEST
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    tmp = path.with_name(f".{MANIFEST}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


@dataclass
class Shards:
    """An opened, checked shard directory. Tables are memory-mapped, not read into RAM."""

    root: Path
    manifest: dict
    tables: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return int(self.manifest["seq"])

    def split(self, name: str) -> pa.Table | None:
        """The whole split as one memory-mapped table, or None when the split is empty."""
        return self.tables.get(name)

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256((self.root / MANIFEST).read_bytes()).hexdigest()


def read_manifest(root: str | os.PathLike) -> dict:
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise ShardError("not a shard directory (run `hive-data pack` first)", file=str(root))
    if not path.is_file():
        raise ShardError("no manifest.json: shards are missing or a pack was interrupted", file=str(root))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        line = getattr(err, "lineno", None)
        col = getattr(err, "colno", None)
        raise ShardError(f"manifest is not valid JSON ({err})", file=str(path), line=line, col=col) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ShardError(f"not a {FORMAT} manifest", file=str(path))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"shard format version {manifest.get('format_version')} is not supported "
            f"(this hive reads version {FORMAT_VERSION}); re-run `hive-data pack --force`",
            file=str(path),
        )
    for key in ("seq", "shards"):
        if key not in manifest:
            raise ShardError(f"manifest lacks {key!r}", file=str(path))
    _check_entries(manifest, path)
    return manifest


def _check_entries(manifest: dict, path: Path) -> None:
    """The shard list is well formed: no entry can crash a reader, name a file twice (training on it
    twice) or name a split that no reader looks for."""
    seq = manifest["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ShardError(f"manifest 'seq' must be a positive integer, got {seq!r}", file=str(path))
    shards = manifest["shards"]
    if not isinstance(shards, list):
        raise ShardError("manifest 'shards' must be a list", file=str(path))
    seen: set[str] = set()
    for i, info in enumerate(shards):
        if not isinstance(info, dict):
            raise ShardError(f"manifest shards[{i}] is not an object", file=str(path))
        for key, kind in (("split", str), ("file", str), ("rows", int), ("tokens", int), ("bytes", int)):
            value = info.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ShardError(
                    f"manifest shards[{i}] {key!r} is missing or not a {kind.__name__}", file=str(path)
                )
        if info["split"] not in SPLITS:
            raise ShardError(f"manifest shards[{i}] has unknown split {info['split']!r}", file=str(path))
        if info["file"] in seen:
            raise ShardError(f"manifest lists shard {info['file']!r} twice", file=str(path))
        seen.add(info["file"])


def _map_table(path: Path) -> pa.Table:
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise ShardError(f"unreadable Arrow shard ({err})", file=str(path)) from None
    if not table.schema.equals(SCHEMA):
        raise ShardError(f"unexpected columns {table.schema.names}", file=str(path))
    return table


def open_shards(root: str | os.PathLike, *, verify: str = "size") -> Shards:
    """Open a shard directory for reading.

    `verify="size"` checks that every shard the manifest lists exists with its recorded size,
    row and token counts (fast: nothing is read beyond Arrow metadata and offsets).
    `verify="sha256"` also hashes every file against the manifest. Raises `ShardError` naming
    the offending file.
    """
    if verify not in ("size", "sha256"):
        raise ValueError("verify must be 'size' or 'sha256'")
    root = Path(root)
    manifest = read_manifest(root)
    parts: dict[str, list[pa.Table]] = {}
    for info in manifest["shards"]:
        path = root / info["file"]
        if Path(info["file"]).name != info["file"]:
            raise ShardError(
                f"manifest names a path outside the shard directory: {info['file']!r}",
                file=str(root / MANIFEST),
            )
        if not path.is_file():
            raise ShardError("shard listed in the manifest is missing", file=str(path))
        size = path.stat().st_size
        if size != info["bytes"]:
            raise ShardError(
                f"shard is {size} bytes but the manifest says {info['bytes']} (truncated or replaced)",
                file=str(path),
            )
        if verify == "sha256" and sha256_file(path) != info.get("sha256"):
            raise ShardError("shard content does not match the manifest's sha256 (corrupted)", file=str(path))
        table = _map_table(path)
        tokens = sum(
            c.offsets[-1].as_py() - c.offsets[0].as_py() for c in table.column("input_ids").chunks if len(c)
        )
        if table.num_rows != info["rows"] or tokens != info["tokens"]:
            raise ShardError(
                f"shard holds {table.num_rows} rows / {tokens} tokens, manifest says "
                f"{info['rows']} / {info['tokens']}",
                file=str(path),
            )
        parts.setdefault(info["split"], []).append(table)
    tables = {split: pa.concat_tables(ts) for split, ts in parts.items() if ts}
    return Shards(root=root, manifest=manifest, tables=tables)
