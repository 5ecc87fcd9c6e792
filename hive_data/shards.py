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

Shards are user-supplied input: `open_shards` checks every row before anything reads them (see
`check_rows`), so a reader never trains on, or crashes over, a damaged or hand-made shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa

from hive_core.errors import ShardError

FORMAT = "hive-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "val")
# The longest packed row, for pack's --seq and a manifest's `seq` alike: beyond any model's context,
# small enough that packing (O(seq) state per row) or a lying manifest cannot exhaust memory.
MAX_SEQ = 1 << 20

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
    """One shard file as the manifest lists it."""

    split: str
    file: str
    rows: int
    tokens: int
    loss_tokens: int
    bytes: int
    sha256: str | None  # None only in a hand-made manifest that lacks it (read, never written)
    extra: dict = field(default_factory=dict, repr=False)  # keys this hive does not model, kept as read
    absent: frozenset[str] = field(default=frozenset(), repr=False)  # keys the source lacked

    def to_json(self) -> dict:
        return _to_mapping(self)


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
class ShardTokenizer:
    """The manifest's `tokenizer` block: the tokenizer the shards were packed with."""

    vocab_size: int
    name_or_path: str | None = None
    sha256: str | None = None  # content hash (`hive_data.pack.tokenizer_info`)
    pad_id: int | None = None
    eos_id: int | None = None
    pad_token: str | None = None
    eos_token: str | None = None
    files: dict[str, str] | None = None  # file name -> sha256, for a local tokenizer directory
    extra: dict = field(default_factory=dict)  # keys this hive does not model, kept as read
    absent: frozenset[str] = frozenset()  # modeled keys the source lacked (not written back)

    def given(self, key: str) -> bool:
        """Whether the manifest holds `key` (even as null)."""
        return key in self.extra or (key not in self.absent and key in _modeled(ShardTokenizer))

    @classmethod
    def from_dict(cls, data: dict, path: Path) -> ShardTokenizer:
        _check_tokenizer(data, path)
        return _from_mapping(cls, data)

    def to_dict(self) -> dict:
        return _to_mapping(self)


@dataclass
class ShardManifest:
    """`manifest.json`, typed. `from_dict` checks it as `open_shards` always has (a located
    `ShardError` for a missing key or a malformed entry; keys it does not model are kept in
    `extra`), and `to_dict` gives back the same mapping, so `write_manifest(d, m.to_dict())`
    writes the same bytes as the manifest read."""

    format: str
    format_version: int
    seq: int
    shards: list[ShardInfo]
    tokenizer: ShardTokenizer
    chat_template_sha256: str | None = None
    loss: str | None = None  # which tokens carry loss (pack's --loss)
    think: str | None = None  # pack's --think
    seed: int | None = None
    totals: dict | None = None  # rows, tokens, drops, histogram, ... (pack's summary)
    # what `hive-data pack` records besides (a hand-made manifest may lack any of them)
    hive_version: str | None = None
    fingerprint: str | None = None  # of inputs + options: a re-pack with the same ones is skipped
    inputs: list | None = None  # the input files and their hashes
    val: float | None = None
    overlong: str | None = None
    keep_duplicates: bool | None = None
    shard_tokens: int | None = None
    record_format: str | None = None
    mapping: dict | None = None
    rejects: str | None = None  # the rejects file's name
    extra: dict = field(default_factory=dict)  # keys this hive does not model, kept as read
    absent: frozenset[str] = frozenset()  # optional keys the source lacked (not written back)

    @classmethod
    def from_dict(cls, data, path: str | os.PathLike) -> ShardManifest:
        path = Path(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ShardError(f"not a {FORMAT} manifest", file=str(path))
        if data.get("format_version") != FORMAT_VERSION:
            raise ShardError(
                f"shard format version {data.get('format_version')} is not supported "
                f"(this hive reads version {FORMAT_VERSION}); re-run `hive-data pack --force`",
                file=str(path),
            )
        for key in ("seq", "shards"):
            if key not in data:
                raise ShardError(f"manifest lacks {key!r}", file=str(path))
        _check_entries(data, path)
        values = dict(data)
        values["tokenizer"] = ShardTokenizer.from_dict(data["tokenizer"], path)
        values["shards"] = [_shard_info(info) for info in data["shards"]]
        return _from_mapping(cls, values)

    def to_dict(self) -> dict:
        out = _to_mapping(self)
        out["tokenizer"] = self.tokenizer.to_dict()
        out["shards"] = [info.to_json() for info in self.shards]
        return out


def _shard_info(entry: dict) -> ShardInfo:
    """A checked manifest entry (`_check_entries`: only `sha256` may be missing) as a `ShardInfo`."""
    return _from_mapping(
        ShardInfo, {"sha256": None, **entry}, absent=() if "sha256" in entry else ("sha256",)
    )


def _modeled(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name not in ("extra", "absent"))


def _from_mapping(cls, data: dict, absent: tuple[str, ...] = ()):
    """`cls` from a mapping: modeled keys as fields, the others in `extra`, missing ones in `absent`."""
    names = _modeled(cls)
    return cls(
        **{k: v for k, v in data.items() if k in names},
        extra={k: v for k, v in data.items() if k not in names},
        absent=frozenset(absent) | frozenset(k for k in names if k not in data),
    )


def _to_mapping(record) -> dict:
    """The mapping `_from_mapping` read: modeled fields (except absent ones), then `extra`."""
    out = {k: getattr(record, k) for k in _modeled(type(record)) if k not in record.absent}
    out.update(record.extra)
    return out


@dataclass
class Shards:
    """An opened, checked shard directory. Tables are memory-mapped, not read into RAM."""

    root: Path
    manifest: dict  # manifest.json as read (`meta` is the same, typed)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    meta: ShardManifest | None = None  # set by `open_shards`

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
    """`manifest.json` of shard directory `root` as a mapping, checked (`ShardManifest.from_dict`)."""
    return _read_manifest(root)[0]


def read_shard_manifest(root: str | os.PathLike) -> ShardManifest:
    """`manifest.json` of shard directory `root`, checked and typed."""
    return _read_manifest(root)[1]


def _read_manifest(root: str | os.PathLike) -> tuple[dict, ShardManifest]:
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
    return manifest, ShardManifest.from_dict(manifest, path)


def _check_entries(manifest: dict, path: Path) -> None:
    """The shard list is well formed: no entry can crash a reader, name a file twice (training on it
    twice) or name a split that no reader looks for."""
    seq = manifest["seq"]
    if not _is_int(seq) or not 1 <= seq <= MAX_SEQ:
        raise ShardError(
            f"manifest 'seq' must be an integer from 1 to {MAX_SEQ}, got {seq!r}", file=str(path)
        )
    _check_tokenizer(manifest.get("tokenizer"), path)
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
        loss = info.get("loss_tokens")
        if not _is_int(loss):
            raise ShardError(f"manifest shards[{i}] 'loss_tokens' is missing or not an int", file=str(path))
        if min(info["rows"], info["tokens"], info["bytes"], loss) < 0:
            raise ShardError(f"manifest shards[{i}] has a negative count", file=str(path))
        if info["split"] not in SPLITS:
            raise ShardError(f"manifest shards[{i}] has unknown split {info['split']!r}", file=str(path))
        if info["file"] in seen:
            raise ShardError(f"manifest lists shard {info['file']!r} twice", file=str(path))
        seen.add(info["file"])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tokenizer(tok, path: Path) -> None:
    """The manifest's tokenizer block gives the id range every token must lie in."""
    if not isinstance(tok, dict):
        raise ShardError("manifest 'tokenizer' is missing or not an object", file=str(path))
    vocab = tok.get("vocab_size")
    if not _is_int(vocab) or not 1 <= vocab <= 2**31:
        raise ShardError(
            f"manifest tokenizer 'vocab_size' must be a positive integer, got {vocab!r}", file=str(path)
        )
    for key in ("name_or_path", "sha256"):  # readers open and compare them
        value = tok.get(key)
        if value is not None and not isinstance(value, str):
            raise ShardError(f"manifest tokenizer {key!r} must be a string, got {value!r}", file=str(path))
    for key in ("pad_id", "eos_id"):  # whether they fit a model is the trainer's check
        value = tok.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            raise ShardError(f"manifest tokenizer {key!r} must be a token id, got {value!r}", file=str(path))


def _map_table(path: Path) -> pa.Table:
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as err:
        raise ShardError(f"unreadable Arrow shard ({err})", file=str(path)) from None
    if not table.schema.equals(SCHEMA):
        got = ", ".join(f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in table.schema)
        want = ", ".join(f"{f.name}: {f.type} not null" for f in SCHEMA)
        raise ShardError(f"unexpected columns ({got}); hive writes ({want})", file=str(path))
    return table


def _first(bad: np.ndarray) -> int | None:
    """Index of the first True in `bad`, or None."""
    i = int(np.argmax(bad)) if len(bad) else 0
    return i if len(bad) and bad[i] else None


def _row_of(offsets: np.ndarray, index: int) -> int:
    """The row (0-based) whose values, delimited by `offsets`, hold value `index`."""
    return int(np.searchsorted(offsets, index, side="right")) - 1


def _values(column: pa.ListArray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(the values of `column`'s rows back to back, offsets from 0): zero-copy views."""
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def check_rows(
    table: pa.Table, *, file: str, seq: int, vocab_size: int, model_vocab: int | None = None
) -> tuple[int, int]:
    """Check every row of one shard file as hive writes them; return its (tokens, loss tokens).

    Per row: no nulls; `len(input_ids) == len(completion_mask) == sum(seq_lengths)` and at least one
    token; every document length > 0; at most `seq` tokens; mask values 0 or 1; token ids in
    `[0, vocab_size)` (and below `model_vocab` when given). Raises `ShardError` naming `file` and the
    first bad row (1-based within the file). Vectorized per record batch: a few passes over the
    memory-mapped columns, nothing per token or per row in Python.
    """
    tokens = loss_tokens = 0
    first_row = 0
    for batch in _batches(table, file):
        problem = _null_problem(batch) or _row_problem(batch, seq, vocab_size, model_vocab)
        if problem is not None:
            row, reason = problem
            raise ShardError(reason, file=file, row=first_row + row + 1)
        tokens += batch.column(0).offsets[-1].as_py() - batch.column(0).offsets[0].as_py()
        loss_tokens += int(np.count_nonzero(_values(batch.column(2), np.int8)[0]))
        first_row += batch.num_rows
    return tokens, loss_tokens


def _batches(table: pa.Table, file: str, rows: int = 512, nbytes: int = 1 << 20):
    """The table's record batches, each validated, with runs of small ones combined (copying at most
    about `nbytes`), so that a file written a row at a time is still checked in a few vectorized
    passes rather than one Python iteration per row."""
    pending: list[pa.RecordBatch] = []
    size = count = 0

    def flush():
        if len(pending) == 1:
            return pending[0]
        return pa.Table.from_batches(pending).combine_chunks().to_batches()[0]

    for batch in table.to_batches():
        try:
            batch.validate(full=True)  # offsets inside their buffers and non-decreasing
        except pa.ArrowInvalid as err:
            raise ShardError(f"malformed Arrow data ({err})", file=file) from None
        pending.append(batch)
        size += batch.nbytes
        count += batch.num_rows
        if count >= rows or size >= nbytes:
            yield flush()
            pending, size, count = [], 0, 0
    if pending:
        yield flush()


def _null_problem(batch: pa.RecordBatch) -> tuple[int, str] | None:
    """(first row holding a null, reason), or None. The schema says not null; the data may not agree."""
    found = []
    for name, col in zip(SCHEMA.names, batch.columns):
        if not (col.null_count or col.values.null_count):
            continue
        row = _first(col.is_null().to_numpy(zero_copy_only=False))
        if row is None:
            offsets = col.offsets.to_numpy().astype(np.int64)
            at = _first(col.values.is_null().to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]])
            row = None if at is None else _row_of(offsets - offsets[0], at)
        if row is not None:
            found.append((row, f"{name} holds a null"))
    return min(found) if found else None


def _row_problem(
    batch: pa.RecordBatch, seq: int, vocab_size: int, model_vocab: int | None
) -> tuple[int, str] | None:
    """(first bad row, reason) of one record batch, or None; earlier checks win within a row."""
    ids, ids_off = _values(batch.column(0), np.int32)
    docs, docs_off = _values(batch.column(1), np.int32)
    mask, mask_off = _values(batch.column(2), np.int8)
    n_ids, n_mask = np.diff(ids_off), np.diff(mask_off)
    doc_ends = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(docs, out=doc_ends[1:])
    doc_sums = doc_ends[docs_off[1:]] - doc_ends[docs_off[:-1]]
    found: list[tuple[int, int, str]] = []  # (row, check order, reason)

    row = _first(n_ids == 0)
    if row is not None:
        found.append((row, 0, "row holds no tokens"))
    row = _first(n_mask != n_ids)
    if row is not None:
        found.append((row, 1, f"completion_mask has {n_mask[row]} values for {n_ids[row]} tokens"))
    at = _first(docs <= 0)
    if at is not None:
        reason = f"seq_lengths holds {docs[at]}: every document is at least 1 token"
        found.append((_row_of(docs_off, at), 2, reason))
    row = _first(doc_sums != n_ids)
    if row is not None:
        found.append((row, 3, f"seq_lengths sum to {doc_sums[row]} but the row holds {n_ids[row]} tokens"))
    row = _first(n_ids > seq)
    if row is not None:
        found.append((row, 4, f"row holds {n_ids[row]} tokens, more than the manifest's seq {seq}"))
    # token values: one reduction each on the fast path; positions only when something is wrong
    if len(mask) and mask.view(np.uint8).max() > 1:
        at = int(np.argmax(mask.view(np.uint8) > 1))
        found.append(
            (_row_of(mask_off, at), 5, f"completion_mask holds {mask[at]} (only 0 and 1 are allowed)")
        )
    limit = vocab_size if model_vocab is None else min(vocab_size, model_vocab)
    if len(ids) and ids.view(np.uint32).max() >= limit:
        at = int(np.argmax(ids.view(np.uint32) >= limit))
        bound = f"the shards' tokenizer has {vocab_size} tokens"
        if model_vocab is not None:
            bound += f", the model {model_vocab} embeddings"
        found.append((_row_of(ids_off, at), 6, f"token id {ids[at]} is outside the vocabulary ({bound})"))
    if not found:
        return None
    row, _, reason = min(found)
    return row, reason


def open_shards(root: str | os.PathLike, *, verify: str = "size", model_vocab: int | None = None) -> Shards:
    """Open a shard directory for reading, refusing anything hive would not have written.

    The manifest must be well formed (`seq` from 1 to `MAX_SEQ`, a tokenizer with its vocab size,
    every shard entry typed); every shard it lists must exist with its recorded size, hold the
    columns hive writes, and agree with its recorded rows, tokens and loss tokens; every row must
    pass `check_rows` (token ids also below `model_vocab` when given). `verify="sha256"` also hashes
    every file against the manifest. Raises `ShardError` naming the offending file (and row).
    The row checks read the memory-mapped columns once, vectorized (a small fraction of a second
    per million tokens).
    """
    if verify not in ("size", "sha256"):
        raise ValueError("verify must be 'size' or 'sha256'")
    root = Path(root)
    manifest, meta = _read_manifest(root)
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
        if table.num_rows == 0:  # hive never writes an empty shard
            raise ShardError("shard holds no rows", file=str(path))
        _, loss_tokens = check_rows(
            table,
            file=str(path),
            seq=manifest["seq"],
            vocab_size=manifest["tokenizer"]["vocab_size"],
            model_vocab=model_vocab,
        )
        if loss_tokens != info["loss_tokens"]:
            raise ShardError(
                f"shard holds {loss_tokens} loss tokens, manifest says {info['loss_tokens']}", file=str(path)
            )
        parts.setdefault(info["split"], []).append(table)
    tables = {split: pa.concat_tables(ts) for split, ts in parts.items() if ts}
    return Shards(root=root, manifest=manifest, tables=tables, meta=meta)
