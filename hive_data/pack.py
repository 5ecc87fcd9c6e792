"""`pack_dataset`: rows -> chat messages -> token ids + loss masks -> global BFD rows -> Arrow shards.

Stages (each a function or module of its own):

1. read rows (`hive_data.records`), turn them into messages, unreadable rows go to the rejects file;
2. render and tokenize in batches, in `num_proc` worker processes (`hive_data.chat`); token ids and
   masks are spilled to flat files in the staging directory as they arrive, so memory holds only a few
   numbers per row;
3. drop overlong rows (or stop, with `overlong="error"`), remove exact duplicate conversations, split
   train/val by a hash of each conversation's content. A row whose rendered text has more than
   `seq * chars_per_token_bound(tokenizer)` characters cannot fit (`hive_data.chat`) and is dropped
   from its length, never tokenized, so a hostile 50 MB row costs no tokenizer memory; `seq` itself is
   at most `MAX_SEQ` and the tokenizer's `model_max_length`;
4. pack each split globally (`hive_data.packing.pack_documents`: best-fit decreasing with exact-fit
   and refinement passes), rows in seeded order;
5. write shards (`hive_data.shards.ShardWriter`), `rejects.jsonl` and `manifest.json` into the
   staging directory and swap it in as the output (`hive_core.atomic.commit_dir`).

The result depends only on the inputs, the tokenizer and the options, never on `num_proc` or batch
sizes: batches are processed in input order and everything after stage 2 is a pure function of the
concatenated arrays.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from hive_core.atomic import (
    Layout,
    check_replaceable,
    check_separate,
    commit_dir,
    new_staging_dir,
    remove_stale,
    write_marker,
)
from hive_core.errors import ConfigError, PackError, RecordError, ShardError
from hive_data import __version__
from hive_data.chat import LOSS_POLICIES, THINK_POLICIES, ChatRenderer, Encoded, chat_template_sha256
from hive_data.packing import Packing, length_histogram, pack_documents, shuffle_rows
from hive_data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_SEQ,
    SCHEMA,
    ShardWriter,
    open_shards,
    read_manifest,
    sha256_file,
    write_manifest,
)

REJECTS = "rejects.jsonl"
OVERLONG_POLICIES = ("drop", "error")
# Files that define a tokenizer directory (hashed for the manifest; model weights are not).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
INPUT_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class PackConfig:
    """Options of a pack; the defaults are the ones of `hive-data pack`."""

    tokenizer: str = "Qwen/Qwen3-0.6B"
    seq: int = 2048
    loss: str = "assistant"  # "assistant" | "all"
    think: str = "empty"  # "empty" | "keep" | "strip"
    val: float = 0.02
    seed: int = 0
    overlong: str = "drop"  # "drop" | "error"
    keep_duplicates: bool = False
    shard_tokens: int = 50_000_000
    fmt: str | None = None
    mapping: dict[str, str] | None = None
    num_proc: int = 0  # 0: one process per CPU core, at most 8
    batch_rows: int = 1000
    force: bool = False
    progress: bool = True
    trust_remote_code: bool = False  # a tokenizer that needs its own Python code is refused unless True

    def check(self) -> None:
        if self.seq < 16:
            raise ConfigError(f"--seq must be at least 16, got {self.seq}")
        if self.seq > MAX_SEQ:
            raise ConfigError(f"--seq {self.seq} is above the limit of {MAX_SEQ} tokens per packed row")
        if self.loss not in LOSS_POLICIES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSS_POLICIES)}, got {self.loss!r}")
        if self.think not in THINK_POLICIES:
            raise ConfigError(f"--think must be one of {', '.join(THINK_POLICIES)}, got {self.think!r}")
        if self.overlong not in OVERLONG_POLICIES:
            raise ConfigError(
                f"--overlong must be one of {', '.join(OVERLONG_POLICIES)}, got {self.overlong!r}"
            )
        if not 0.0 <= self.val < 1.0:
            raise ConfigError(f"--val must be in [0, 1), got {self.val}")
        if self.shard_tokens < 1:
            raise ConfigError(f"--shard-tokens must be positive, got {self.shard_tokens}")
        if self.num_proc < 0 or self.batch_rows < 1:
            raise ConfigError("--num-proc must be >= 0 and batch_rows >= 1")

    def workers(self) -> int:
        return self.num_proc or max(1, min(os.cpu_count() or 1, 8))

    def output_options(self) -> dict:
        """The options that decide the output bytes (num_proc, batch size and progress do not)."""
        skip = {"tokenizer", "num_proc", "batch_rows", "force", "progress", "trust_remote_code"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass
class PackResult:
    output: Path
    manifest: dict
    skipped: bool = False  # True when the output was already up to date
    rejects: int = 0


# ---------------------------------------------------------------------------------------- tokenizer


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """A Hugging Face fast tokenizer by hub id or local directory; `PackError` when it cannot be loaded.

    A tokenizer that needs its own Python code is refused unless `trust_remote_code` (passing False
    explicitly also keeps transformers from asking on stdin whether to run it)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers raises OSError, ValueError, HF hub errors...
        message = " ".join(str(err).split())  # one line, whatever transformers wrote
        if "trust_remote_code" in message:
            raise PackError(
                f"tokenizer {name_or_path!r} needs to run its own Python code; refused "
                "(pass --trust-remote-code if you trust it)",
                file=str(name_or_path),
            ) from None
        raise PackError(f"cannot load tokenizer {name_or_path!r}: {type(err).__name__}: {message}") from None


def tokenizer_info(tokenizer) -> dict:
    """Identity of a tokenizer for the manifest: name, content hash, vocab size, pad/eos ids, and the
    sha256 of its files when it was loaded from a local directory."""
    root = Path(str(tokenizer.name_or_path))
    files = (
        {n: sha256_file(root / n) for n in TOKENIZER_FILES if (root / n).is_file()} if root.is_dir() else {}
    )
    content = hashlib.sha256()
    if "tokenizer.json" in files:  # that file is the serialized tokenizer: hashing it is cheaper
        content.update(json.dumps(files, sort_keys=True).encode("utf-8"))
    else:
        content.update(tokenizer.backend_tokenizer.to_str().encode("utf-8"))
    specials = {
        "eos": tokenizer.eos_token,
        "pad": tokenizer.pad_token,
        "all": list(tokenizer.all_special_tokens),
    }
    content.update(json.dumps(specials, sort_keys=True).encode("utf-8"))
    info = {
        "name_or_path": str(tokenizer.name_or_path),
        "sha256": content.hexdigest(),
        "vocab_size": len(tokenizer),
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "pad_token": tokenizer.pad_token,
        "eos_token": tokenizer.eos_token,
    }
    if files:
        info["files"] = files
    return info


# ---------------------------------------------------------------------------------------- inputs


def input_files(inputs: Sequence[str | os.PathLike]) -> list[dict]:
    """Every input with its sha256 (directories expand to their data files; hub ids have no hash)."""
    out = []
    for src in inputs:
        path = Path(src)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
        elif path.is_file():
            files = [path]
        else:
            out.append({"path": str(src), "sha256": None})
            continue
        out.extend({"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files)
    return out


def conversation_hash(messages: Sequence[Mapping]) -> bytes:
    """16-byte content hash of a conversation (roles, contents, reasoning): duplicates and the split."""
    h = hashlib.blake2b(digest_size=16)
    for m in messages:
        # length-prefixed fields: no two different conversations feed the same bytes
        for value in (m.get("role"), m.get("content"), m.get("reasoning_content")):
            data = b"\xff" if value is None else str(value).encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.digest()


def val_mask(hashes: np.ndarray, val: float) -> np.ndarray:
    """True for rows in the validation split: the first 8 bytes of the content hash, as a fraction of
    2**64, below `val`. A row's split depends on its content only, not on its position or neighbours."""
    if val <= 0 or len(hashes) == 0:
        return np.zeros(len(hashes), dtype=bool)
    head = np.ascontiguousarray(hashes[:, :8]).view(">u8").ravel()
    return head < np.uint64(int(val * 2**64))


def first_occurrences(hashes: np.ndarray) -> np.ndarray:
    """Boolean mask of rows whose content hash was not seen at an earlier row."""
    keep = np.zeros(len(hashes), dtype=bool)
    if len(hashes):
        keys = np.ascontiguousarray(hashes).view(np.dtype((np.void, hashes.shape[1]))).ravel()
        _, first = np.unique(keys, return_index=True)
        keep[first] = True
    return keep


# ---------------------------------------------------------------------------------------- workers

_RENDERER: ChatRenderer | None = None
_MAX_CHARS: int | None = None  # rendered text longer than this cannot fit --seq (ChatRenderer.max_chars)


def _init_worker(
    tokenizer_name: str, loss: str, think: str, trust_remote_code: bool = False, seq: int | None = None
) -> None:
    global _RENDERER, _MAX_CHARS
    # Ctrl-C goes to the whole process group; the parent alone handles it and terminates the pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    if _RENDERER is None:  # inherited through fork when available
        _RENDERER = ChatRenderer(load_tokenizer(tokenizer_name, trust_remote_code), loss=loss, think=think)
    _MAX_CHARS = _RENDERER.max_chars(seq) if seq else None


def _encode_task(conversations: list[list[dict]]):
    """(hashes, ids, mask, lengths, errors, over) of a batch. A conversation the chat template or the
    tokenizer refuses gets length 0 and its reason in `errors` (by position in the batch) instead of
    failing the batch; one whose rendered text is too long to fit --seq for certain is not tokenized
    (length 0, its character count in `over`)."""
    errors: dict[int, str] = {}
    try:
        enc = _RENDERER.encode(conversations, _MAX_CHARS)
    except Exception:  # noqa: BLE001 - find the row(s) at fault; the others are encoded one by one
        parts, over = [], {}
        for i, conv in enumerate(conversations):
            try:
                part = _RENDERER.encode([conv], _MAX_CHARS)
                if part.over:
                    over[i] = part.over[0]
            except Exception as err:  # noqa: BLE001 - one row's surprise must not take the run down
                errors[i] = err.reason if isinstance(err, PackError) else f"{type(err).__name__}: {err}"
                part = _RENDERER.encode([])
                part.lengths = np.zeros(1, dtype=np.int64)
            parts.append(part)
        enc = Encoded(
            ids=np.concatenate([p.ids for p in parts]),
            mask=np.concatenate([p.mask for p in parts]),
            lengths=np.concatenate([p.lengths for p in parts]),
            over=over,
        )
    hashes = np.frombuffer(b"".join(conversation_hash(c) for c in conversations), dtype=np.uint8)
    return hashes.reshape(-1, 16), enc.ids, enc.mask, enc.lengths, errors, enc.over


class _Spill:
    """Token ids and masks of all conversations, appended to flat files in input order."""

    def __init__(self, directory: Path):
        self.ids_path = directory / ".tokens.int32"
        self.mask_path = directory / ".mask.int8"
        self._ids = open(self.ids_path, "wb")
        self._mask = open(self.mask_path, "wb")
        self.lengths: list[np.ndarray] = []
        self.hashes: list[np.ndarray] = []
        self.loss: list[np.ndarray] = []

    def append(self, hashes: np.ndarray, ids: np.ndarray, mask: np.ndarray, lengths: np.ndarray) -> None:
        for fh, path, arr in (
            (self._ids, self.ids_path, np.ascontiguousarray(ids, dtype=np.int32)),
            (self._mask, self.mask_path, np.ascontiguousarray(mask, dtype=np.int8)),
        ):
            try:  # file.write, not ndarray.tofile: a full disk then raises ENOSPC/EFBIG, not a short count
                fh.write(arr.data)
            except OSError as err:
                raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        self.hashes.append(hashes)
        self.lengths.append(lengths.astype(np.int64, copy=False))
        if len(lengths):
            starts = np.zeros(len(lengths), dtype=np.int64)
            np.cumsum(lengths[:-1], out=starts[1:])
            nonempty = lengths > 0
            loss = np.zeros(len(lengths), dtype=np.int64)
            loss[nonempty] = np.add.reduceat(mask.astype(np.int64), starts[nonempty])
            self.loss.append(loss)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self._ids.close()
        self._mask.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        hashes = np.concatenate(self.hashes) if self.hashes else np.zeros((0, 16), np.uint8)
        loss = np.concatenate(self.loss) if self.loss else np.zeros(0, np.int64)
        total = int(lengths.sum())
        ids = (
            np.memmap(self.ids_path, dtype=np.int32, mode="r", shape=(total,))
            if total
            else np.zeros(0, np.int32)
        )
        mask = (
            np.memmap(self.mask_path, dtype=np.int8, mode="r", shape=(total,))
            if total
            else np.zeros(0, np.int8)
        )
        return hashes, lengths, loss, ids, mask

    def remove(self) -> None:
        for path in (self.ids_path, self.mask_path):
            path.unlink(missing_ok=True)


def _batched(it: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _map_ordered(fn, batches: Iterable, workers: int, init_args: tuple) -> Iterator:
    """fn over batches, results in input order, at most 2 batches per worker in flight (bounded memory)."""
    if workers <= 1:
        for batch in batches:
            yield fn(batch)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    # SIGINT stays blocked while the workers start (they inherit the mask) so that a Ctrl-C cannot hit
    # one before its initializer ignores it; the parent gets such a Ctrl-C once it unblocks.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool_cm = ctx.Pool(workers, initializer=_init_worker, initargs=init_args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    with pool_cm as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append(pool.apply_async(fn, (batch,)))
            while len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------------------------------- pipeline


@dataclass
class _Rows:
    """Where each tokenized conversation came from (parallel arrays, input order)."""

    sources: list[str] = field(default_factory=list)
    source_index: dict[str, int] = field(default_factory=dict)
    src: list[int] = field(default_factory=list)
    row: list[int] = field(default_factory=list)
    line: list[int] = field(default_factory=list)

    def add(self, source: str, row: int, line: int | None) -> None:
        index = self.source_index.get(source)
        if index is None:
            index = self.source_index[source] = len(self.sources)
            self.sources.append(source)
        self.src.append(index)
        self.row.append(row)
        self.line.append(-1 if line is None else line)

    def where(self, i: int) -> dict:
        line = self.line[i]
        return {"file": self.sources[self.src[i]], "row": self.row[i], "line": None if line < 0 else line}


def _conversations(
    inputs, config: PackConfig, rows: _Rows, rejects, counts: Counter, bar
) -> Iterator[list[dict]]:
    from hive_data.records import iter_records, row_to_messages

    for src in inputs:
        for rec in iter_records(src, fmt=config.fmt, mapping=config.mapping):
            counts["rows_in"] += 1
            bar.update(1)
            if rec.error is not None:
                counts["unreadable"] += 1
                _reject(
                    rejects, rec.source, rec.row, rec.line, "unreadable", str(rec.error.reason), raw=rec.raw
                )
                continue
            try:
                messages = row_to_messages(rec.data, rec.fmt, config.mapping)
            except RecordError as err:
                counts["invalid"] += 1
                _reject(rejects, rec.source, rec.row, rec.line, "invalid", err.reason)
                continue
            except Exception as err:  # noqa: BLE001 - one row's surprise must not take the run down
                counts["invalid"] += 1
                reason = (
                    "nested too deeply" if isinstance(err, RecursionError) else f"{type(err).__name__}: {err}"
                )
                _reject(rejects, rec.source, rec.row, rec.line, "invalid", reason)
                continue
            rows.add(rec.source, rec.row, rec.line)
            yield messages


def _reject(fh, source, row, line, reason: str, detail: str, **extra) -> None:
    entry = {"file": source, "row": row, "line": line, "reason": reason, "detail": detail}
    entry.update({k: v for k, v in extra.items() if v is not None})
    text = json.dumps(entry, ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: ASCII escapes keep it readable as JSON
            text = json.dumps(entry, ensure_ascii=True)
    fh.write(text + "\n")


def fingerprint(inputs: list[dict], tokenizer: dict, template_sha: str, config: PackConfig) -> str | None:
    """Hash of everything that decides the output; None when an input cannot be hashed (hub ids)."""
    if any(i.get("sha256") is None for i in inputs):
        return None
    state = {
        "format_version": FORMAT_VERSION,
        "hive": __version__,
        "inputs": [(i["path"], i["sha256"]) for i in inputs],
        "tokenizer": tokenizer["sha256"],
        "chat_template": template_sha,
        "options": config.output_options(),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode("utf-8")).hexdigest()


def _legacy_shards(path: Path) -> bool:
    """A shard directory of a hive that wrote no ownership marker: its manifest.json has hive's format
    and every entry in it is the manifest, its rejects file or a shard the manifest lists."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return False
    listed = {MANIFEST, str(manifest.get("rejects") or REJECTS)}
    listed |= {str(s.get("file")) for s in manifest.get("shards") or [] if isinstance(s, dict)}
    return all(name in listed for name in os.listdir(path))


# What a pack writes at the top level of its output (`hive_core.atomic.check_replaceable`).
SHARDS_LAYOUT = Layout(
    kind="shards",
    names=(MANIFEST, REJECTS, "train-*-of-*.arrow", "val-*-of-*.arrow"),
    legacy=_legacy_shards,
)


def check_output(output: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """The output is replaced as a whole: refuse (`ConfigError`) anything but a missing or empty
    directory or an earlier pack holding only what hive wrote there (`SHARDS_LAYOUT`), a symlink
    (replacing would swap the link, not its target), and an output that is, holds or lies inside an
    input."""
    if Path(output).is_symlink():
        raise ConfigError(
            "is a symbolic link; the shard directory is replaced as a whole: pass the directory it points to",
            file=str(output),
        )
    check_separate(output, inputs, what="output directory")
    check_replaceable(output, SHARDS_LAYOUT, "replace")


def _up_to_date(output: Path, fp: str | None) -> dict | None:
    if fp is None or not output.is_dir():
        return None
    try:
        manifest = read_manifest(output)
        if manifest.get("fingerprint") != fp:
            return None
        open_shards(output, verify="size")
    except ShardError:
        return None
    return manifest


def pack_dataset(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: PackConfig | None = None,
    **options,
) -> PackResult:
    """Tokenize, mask and pack `inputs` (files, directories or hub ids) into a shard directory `output`.

    `options` override fields of `config` (or of the defaults). Returns the manifest written, or the
    existing one with `skipped=True` when `output` already holds this exact pack (unless `force`).
    Raises `PackError` (overlong rows under `overlong="error"`, tokenizer problems, nothing to pack),
    `RecordError` for unreadable sources and `ConfigError` for bad options and for an `output` that is
    not hive's to replace (`check_output`: checked before anything is written, and again just before
    the swap); on any error or interruption the previous `output` is left as it was. The new output
    carries the `.hive-owned` marker (kind "shards").
    """
    config = PackConfig(**{**(asdict(config) if config else {}), **options})
    config.check()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise ConfigError("no input given")
    output = Path(output)
    check_output(output, inputs)
    remove_stale(output)

    tokenizer = load_tokenizer(config.tokenizer, config.trust_remote_code)
    check_seq(config.seq, tokenizer)
    renderer = ChatRenderer(tokenizer, loss=config.loss, think=config.think)
    tok_info = tokenizer_info(tokenizer)
    template_sha = chat_template_sha256(tokenizer)
    files = input_files(inputs)
    fp = fingerprint(files, tok_info, template_sha, config)
    if not config.force:
        existing = _up_to_date(output, fp)
        if existing is not None:
            return PackResult(output=output, manifest=existing, skipped=True)

    staging = new_staging_dir(output)
    try:
        manifest = _build(inputs, staging, config, renderer, tok_info, template_sha, files, fp)
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output should not be
        write_marker(staging, SHARDS_LAYOUT.kind)
        check_replaceable(output, SHARDS_LAYOUT, "replace")  # again: the user may have added a file
        commit_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rejects = sum(manifest["totals"]["rows_dropped"].values())
    return PackResult(output=output, manifest=manifest, rejects=rejects)


def check_seq(seq: int, tokenizer) -> None:
    """`ConfigError` for a --seq above `MAX_SEQ` or above the tokenizer's `model_max_length` when it
    states a real one (transformers uses a huge placeholder when it does not know)."""
    if seq > MAX_SEQ:
        raise ConfigError(f"--seq {seq} is above the limit of {MAX_SEQ} tokens per packed row")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit <= MAX_SEQ and seq > limit:
        raise ConfigError(
            f"--seq {seq} is longer than the tokenizer's model_max_length {limit}; "
            "the model cannot use longer rows",
            file=str(tokenizer.name_or_path),
        )


def _overlong_error(length: int, seq: int, where: dict, at_least: bool = False) -> PackError:
    return PackError(
        f"conversation is {'at least ' if at_least else ''}{length} tokens, longer than --seq {seq} "
        "(--overlong drop drops such rows and lists them in rejects.jsonl)",
        **where,
    )


def _flags(n: int, over: dict[int, int]) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(over)] = True
    return out


def _at_least(chars: int, renderer: ChatRenderer) -> int:
    """The fewest tokens a rendered text of `chars` characters can have (`chars_per_token_bound`)."""
    return -(-chars // renderer.chars_per_token)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _build(inputs, staging: Path, config: PackConfig, renderer, tok_info, template_sha, files, fp) -> dict:
    global _RENDERER, _MAX_CHARS
    counts: Counter = Counter()
    early: dict[int, int] = {}  # row index -> characters of rows too long to tokenize (Encoded.over)
    rows = _Rows()
    spill = _Spill(staging)
    workers = config.workers()
    rejects_path = staging / REJECTS
    with open(rejects_path, "w", encoding="utf-8") as rejects:
        bar = tqdm(
            desc="tokenize", unit=" rows", file=sys.stderr, disable=not config.progress, mininterval=0.5
        )
        try:
            _RENDERER = renderer  # workers forked from here inherit it; workers=1 uses it directly
            _MAX_CHARS = renderer.max_chars(config.seq)
            convs = _conversations(inputs, config, rows, rejects, counts, bar)
            init = (config.tokenizer, config.loss, config.think, config.trust_remote_code, config.seq)
            done = 0
            for result in _map_ordered(_encode_task, _batched(convs, config.batch_rows), workers, init):
                hashes, ids, mask, lengths, errors, over = result
                if config.overlong == "error" and ((lengths > config.seq).any() or over):
                    i = done + int(np.flatnonzero((lengths > config.seq) | _flags(len(lengths), over))[0])
                    if i - done in over:
                        least = _at_least(over[i - done], renderer)
                        raise _overlong_error(least, config.seq, rows.where(i), at_least=True)
                    raise _overlong_error(int(lengths[i - done]), config.seq, rows.where(i))
                for i, chars in over.items():
                    early[done + i] = chars
                for i, reason in sorted(errors.items()):
                    counts["unrenderable"] += 1
                    w = rows.where(done + i)
                    _reject(rejects, w["file"], w["row"], w["line"], "unrenderable", reason)
                spill.append(hashes, ids, mask, lengths)
                done += len(lengths)
        finally:
            bar.close()
        hashes, lengths, loss, ids, mask = spill.finish()

        # overlong rows: never truncated
        overlong = lengths > config.seq
        overlong[list(early)] = True
        if overlong.any():
            for i in np.flatnonzero(overlong).tolist():
                w = rows.where(i)
                if i in early:  # measured by its text, never tokenized
                    least = _at_least(early[i], renderer)
                    detail = (
                        f"at least {least} tokens > seq {config.seq} (its text is {early[i]} characters; "
                        f"one token stands for at most {renderer.chars_per_token})"
                    )
                    _reject(rejects, w["file"], w["row"], w["line"], "overlong", detail, length=least)
                    continue
                _reject(
                    rejects,
                    w["file"],
                    w["row"],
                    w["line"],
                    "overlong",
                    f"{int(lengths[i])} tokens > seq {config.seq}",
                    length=int(lengths[i]),
                )
        keep = ~overlong & (lengths > 0)
        # exact duplicates: the first occurrence stays
        dup = np.zeros(len(lengths), dtype=bool)
        if not config.keep_duplicates:
            kept = np.flatnonzero(keep)
            first = first_occurrences(hashes[kept])
            dup[kept[~first]] = True
            for i in kept[~first].tolist():
                w = rows.where(i)
                _reject(
                    rejects,
                    w["file"],
                    w["row"],
                    w["line"],
                    "duplicate",
                    "exact duplicate of an earlier conversation",
                )
            keep &= ~dup
        counts["overlong"] = int(overlong.sum())
        counts["duplicate"] = int(dup.sum())
        in_val = val_mask(hashes, config.val)

        shards, split_totals, doc_lengths = [], {}, []
        for split, members in (("train", keep & ~in_val), ("val", keep & in_val)):
            docs = np.flatnonzero(members)
            if len(docs) == 0:
                continue
            packing = shuffle_rows(pack_documents(lengths[docs], config.seq), config.seed)
            shards.extend(_write_split(staging, split, docs, packing, lengths, ids, mask, config))
            split_totals[split] = {
                "rows": int(len(docs)),
                "sequences": packing.rows,
                "tokens": packing.tokens,
                "loss_tokens": int(loss[docs].sum()),
                "padding_tokens": packing.padding,
                "fill_efficiency": round(packing.fill, 6),
            }
            doc_lengths.append(lengths[docs])
        spill.remove()
    if not shards:
        why = ", ".join(
            f"{r} {counts[r]}"
            for r in ("unreadable", "invalid", "unrenderable", "overlong", "duplicate")
            if counts[r]
        )
        hint = f"; raise --seq (now {config.seq}) to keep long rows" if counts["overlong"] else ""
        raise PackError(
            f"nothing to pack: every row was rejected ({why}; see the rejects reasons){hint}", file=inputs[0]
        )

    all_lengths = np.concatenate(doc_lengths)
    tokens = sum(t["tokens"] for t in split_totals.values())
    sequences = sum(t["sequences"] for t in split_totals.values())
    totals = {
        "rows_in": counts["rows_in"],
        "rows_packed": int(all_lengths.size),
        "rows_dropped": {
            r: counts[r]
            for r in ("unreadable", "invalid", "unrenderable", "overlong", "duplicate")
            if counts[r]
        },
        "duplicates": counts["duplicate"],
        "sequences": sequences,
        "tokens": tokens,
        "loss_tokens": sum(t["loss_tokens"] for t in split_totals.values()),
        "padding_tokens": sequences * config.seq - tokens,
        "fill_efficiency": round(tokens / (sequences * config.seq), 6),
        "splits": split_totals,
        "length_histogram": length_histogram(all_lengths, config.seq),
    }
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hive_version": __version__,
        "fingerprint": fp,
        "inputs": files,
        "tokenizer": tok_info,
        "chat_template_sha256": template_sha,
        "seq": config.seq,
        "loss": config.loss,
        "think": config.think,
        "seed": config.seed,
        "val": config.val,
        "overlong": config.overlong,
        "keep_duplicates": config.keep_duplicates,
        "shard_tokens": config.shard_tokens,
        "record_format": config.fmt,
        "mapping": config.mapping or None,
        "shards": [s.to_json() for s in shards],
        "totals": totals,
        "rejects": REJECTS,
    }
    write_manifest(staging, manifest)
    return manifest


def _write_split(staging: Path, split: str, docs: np.ndarray, packing: Packing, lengths, ids, mask, config):
    """Write one split's packed rows as shards; rows are gathered from the spill files in chunks."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    writer = ShardWriter(staging, split, config.shard_tokens)
    # Record batches of at most 1024 rows, cut where a shard reaches `shard_tokens`, so every shard
    # ends within one row of its target (the writer starts a new file at the next batch).
    cum = np.zeros(packing.rows + 1, dtype=np.int64)
    np.cumsum(packing.row_tokens, out=cum[1:])
    shard_start, r0 = 0, 0
    while r0 < packing.rows:
        full = int(np.searchsorted(cum, cum[shard_start] + config.shard_tokens, side="left"))
        r1 = min(packing.rows, r0 + 1024, max(full, r0 + 1))
        if r1 >= full:
            shard_start = r1
        d0, d1 = packing.row_offsets[r0], packing.row_offsets[r1]
        members = docs[packing.order[d0:d1]]
        doc_len = lengths[members]
        doc_cum = np.zeros(len(members) + 1, dtype=np.int64)
        np.cumsum(doc_len, out=doc_cum[1:])
        gather = np.repeat(starts[members] - doc_cum[:-1], doc_len) + np.arange(doc_cum[-1], dtype=np.int64)
        row_tok = np.zeros(r1 - r0 + 1, dtype=np.int64)
        np.cumsum(packing.row_tokens[r0:r1], out=row_tok[1:])
        row_docs = packing.row_offsets[r0 : r1 + 1] - d0
        batch = pa.RecordBatch.from_arrays(
            [
                pa.ListArray.from_arrays(
                    pa.array(row_tok.astype(np.int32)), pa.array(np.asarray(ids[gather], dtype=np.int32))
                ),
                pa.ListArray.from_arrays(
                    pa.array(row_docs.astype(np.int32)), pa.array(doc_len.astype(np.int32))
                ),
                pa.ListArray.from_arrays(
                    pa.array(row_tok.astype(np.int32)), pa.array(np.asarray(mask[gather], dtype=np.int8))
                ),
            ],
            schema=SCHEMA,
        )
        writer.write(batch)
        r0 = r1
    return writer.close()


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def describe(result: PackResult) -> str:
    """One-paragraph summary of a pack for the CLI."""
    m, t = result.manifest, result.manifest["totals"]
    if result.skipped:
        return (
            f"up to date: {result.output} already holds this pack (same inputs, tokenizer and options); "
            "nothing to do (--force rebuilds)"
        )
    dropped = ", ".join(f"{k} {v}" for k, v in t["rows_dropped"].items()) or "none"
    overlong = t["rows_dropped"].get("overlong", 0)
    warning = ""
    if overlong * 2 > t["rows_in"]:
        warning = (
            f"\nwarning: {overlong} of {t['rows_in']} rows ({overlong / t['rows_in']:.0%}) were dropped as "
            f"longer than --seq {m['seq']} tokens; raise --seq to keep them"
        )
    splits = ", ".join(f"{s} {v['rows']} rows / {v['sequences']} sequences" for s, v in t["splits"].items())
    return (
        f"packed {t['rows_packed']} of {t['rows_in']} rows into {_n(t['sequences'], 'sequence')} of {m['seq']} tokens "
        f"({splits}), {t['tokens']} tokens, {t['loss_tokens']} under loss, fill {t['fill_efficiency']:.2%}, "
        f"{len(m['shards'])} shard file(s) in {result.output}\n"
        f"dropped: {dropped}"
        + (f" (listed in {result.output / REJECTS})" if t["rows_dropped"] else "")
        + warning
    )


__all__ = [
    "MANIFEST",
    "PackConfig",
    "PackResult",
    "pack_dataset",
    "describe",
    "conversation_hash",
    "val_mask",
    "first_occurrences",
    "load_tokenizer",
    "tokenizer_info",
]
