"""`pack_dataset`: rows -> chat messages -> token ids + loss masks -> global BFD rows -> Arrow shards.

Stages (each a function or module of its own):

1. read rows (`hive_data.records`), turn them into messages, unreadable rows go to the rejects file;
2. render and tokenize in batches, in `num_proc` worker processes (`hive_data.chat`,
   `hive_data.parallel.ordered_map`: results in input order); token ids and
   masks are spilled to flat files in the staging directory as they arrive, so memory holds only a few
   numbers per row;
3. drop overlong rows (or stop, with `overlong="error"`), remove exact duplicate conversations, split
   train/val by a hash of each conversation's content. A row whose rendered text has more than
   `seq * chars_per_token_bound(tokenizer)` characters cannot fit (`hive_data.chat`) and is dropped
   from its length, never tokenized, so a hostile 50 MB row costs no tokenizer memory; `seq` itself is
   at most `MAX_SEQ` and the tokenizer's `model_max_length`;
4. pack each split globally (`hive_data.binpack.pack_documents`: best-fit decreasing with exact-fit
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
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from hive_core import tokenizer as hive_tokenizer
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
from hive_core.settings import setting
from hive_core.tokenizer import TokenizerLoadError, tokenizer_info
from hive_data import __version__
from hive_data.binpack import Packing, length_histogram, pack_documents, shuffle_rows
from hive_data.chat import LOSS_POLICIES, THINK_POLICIES, ChatRenderer, Encoded, chat_template_sha256
from hive_data.parallel import batched, ordered_map
from hive_data.records import FORMATS
from hive_data.shards import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_SEQ,
    SCHEMA,
    ShardManifest,
    ShardTokenizer,
    ShardWriter,
    open_shards,
    read_manifest,
    sha256_file,
    write_manifest,
)

REJECTS = "rejects.jsonl"
OVERLONG_POLICIES = ("drop", "error")
DROP_REASONS = (
    "unreadable",
    "invalid",
    "unrenderable",
    "overlong",
    "duplicate",
)  # rejects.jsonl order of counts
INPUT_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class PackConfig:
    """Options of a pack; the defaults are the ones of `hive-data pack`, whose flags are made from the
    fields' `setting(...)` (help text and choices written once, here)."""

    tokenizer: str = setting("Qwen/Qwen3-0.6B", help="Hub id or local directory of the tokenizer.")
    seq: int = setting(
        2048, help="Tokens per packed row (at most 1048576 and the tokenizer's model_max_length)."
    )
    loss: str = setting(
        "assistant",
        choices=LOSS_POLICIES,
        help="assistant: loss on assistant turns and their closing <|im_end|> only; all: on every token.",
    )
    think: str = setting(
        "empty",
        choices=THINK_POLICIES,
        help="Qwen3 think blocks: empty writes '<think>\\n\\n</think>\\n\\n' before every answer; keep keeps "
        "reasoning found in the data; strip writes no think block.",
    )
    val: float = setting(
        0.02, help="Share of rows for the validation split, chosen by a hash of each row's content."
    )
    seed: int = setting(0, help="Seed of the packed row order.")
    overlong: str = setting(
        "drop",
        choices=OVERLONG_POLICIES,
        help="Rows longer than --seq: drop them (listed in rejects.jsonl with their length) or stop with an error.",
    )
    keep_duplicates: bool = setting(
        False, flag_only=True, help="Keep exact duplicate conversations (removed by default)."
    )
    shard_tokens: int = setting(50_000_000, help="About this many tokens per shard file.")
    fmt: str | None = setting(
        None, flag="--format", choices=FORMATS, help="Record format (default: detected)."
    )
    mapping: dict[str, str] | None = setting(
        None, flag="--map", help="Column mapping field=column,... for the record format."
    )
    num_proc: int = setting(
        0,
        help="Worker processes for rendering and tokenizing (0: one per CPU core, at most 8). "
        "Does not change the output.",
    )
    batch_rows: int = 1000
    force: bool = setting(
        False, flag_only=True, help="Rebuild even when the output already holds this exact pack."
    )
    progress: bool = True  # the CLI's -q/--quiet turns it off
    trust_remote_code: bool = setting(
        False,
        flag_only=True,
        help="Allow a tokenizer that needs its own Python code (from its directory or the hub) to run it. "
        "Off by default: such a tokenizer is refused.",
    )

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
    """`hive_core.tokenizer.load_tokenizer` in pack's words: `PackError` when it cannot be loaded, and
    for a tokenizer that needs its own Python code unless `trust_remote_code`."""
    try:
        return hive_tokenizer.load_tokenizer(name_or_path, trust_remote_code)
    except TokenizerLoadError as err:
        if err.remote_code:
            raise PackError(
                f"tokenizer {name_or_path!r} needs to run its own Python code; refused "
                "(pass --trust-remote-code if you trust it)",
                file=str(name_or_path),
            ) from None
        raise PackError(err.reason) from None


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


@dataclass
class _Encoder:
    """What a tokenizing process needs: the renderer, and the rendered length beyond which a
    conversation cannot fit --seq (`ChatRenderer.max_chars`)."""

    renderer: ChatRenderer
    max_chars: int | None


_ENCODER: _Encoder | None = None  # this process's encoder, set by `_init_encoder`


def _init_encoder(renderer: ChatRenderer, seq: int) -> None:
    """`ordered_map` initializer. Pack's workers are forked, so the renderer (tokenizer loaded) is
    inherited, not pickled."""
    global _ENCODER
    _ENCODER = _Encoder(renderer, renderer.max_chars(seq))


@dataclass
class EncodedBatch:
    """A batch of conversations as `_encode_task` returns it, in batch order."""

    hashes: np.ndarray  # (rows, 16) uint8 content hashes (`conversation_hash`)
    ids: np.ndarray  # token ids of every row, concatenated
    mask: np.ndarray  # loss mask, aligned with ids
    lengths: np.ndarray  # tokens per row; 0 for a row not tokenized (see errors, over)
    errors: dict[int, str]  # row in batch -> why the chat template or tokenizer refused it
    over: dict[int, int]  # row in batch -> characters of a rendered text too long to fit --seq


def _encode_task(conversations: list[list[dict]]) -> EncodedBatch:
    """Encode a batch. A conversation the chat template or the tokenizer refuses gets length 0 and
    its reason in `errors` instead of failing the batch; one whose rendered text is too long to fit
    --seq for certain is not tokenized (length 0, its character count in `over`)."""
    renderer, max_chars = _ENCODER.renderer, _ENCODER.max_chars
    errors: dict[int, str] = {}
    try:
        enc = renderer.encode(conversations, max_chars)
    except Exception:  # noqa: BLE001 - find the row(s) at fault; the others are encoded one by one
        parts, over = [], {}
        for i, conv in enumerate(conversations):
            try:
                part = renderer.encode([conv], max_chars)
                if part.over:
                    over[i] = part.over[0]
            except Exception as err:  # noqa: BLE001 - one row's surprise must not take the run down
                errors[i] = err.reason if isinstance(err, PackError) else f"{type(err).__name__}: {err}"
                part = renderer.encode([])
                part.lengths = np.zeros(1, dtype=np.int64)
            parts.append(part)
        enc = Encoded(
            ids=np.concatenate([p.ids for p in parts]),
            mask=np.concatenate([p.mask for p in parts]),
            lengths=np.concatenate([p.lengths for p in parts]),
            over=over,
        )
    hashes = np.frombuffer(b"".join(conversation_hash(c) for c in conversations), dtype=np.uint8)
    return EncodedBatch(hashes.reshape(-1, 16), enc.ids, enc.mask, enc.lengths, errors, enc.over)


@dataclass
class Spilled:
    """Every tokenized conversation, in input order: per-row arrays in memory, tokens on disk."""

    hashes: np.ndarray  # (rows, 16) uint8
    lengths: np.ndarray  # int64 tokens per row
    loss: np.ndarray  # int64 tokens under loss per row
    ids: np.ndarray  # int32 token ids of all rows (memory-mapped)
    mask: np.ndarray  # int8 loss mask (memory-mapped)


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

    def finish(self) -> Spilled:
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
        return Spilled(hashes, lengths, loss, ids, mask)

    def remove(self) -> None:
        for path in (self.ids_path, self.mask_path):
            path.unlink(missing_ok=True)


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
    """Stages 2-5 into `staging`: tokenize to the spill files, select rows, pack the splits, write the
    shards, rejects file and manifest. Returns the manifest."""
    spill = _Spill(staging)
    with open(staging / REJECTS, "w", encoding="utf-8") as rejects:
        rows, counts, early = _tokenize_to_spill(inputs, config, renderer, spill, rejects)
        spilled = spill.finish()
        selection = select_rows(spilled.lengths, spilled.hashes, config, too_long=early)
        _reject_dropped(rejects, selection, spilled.lengths, early, rows, renderer, config.seq)
        counts["overlong"] = len(selection.overlong)
        counts["duplicate"] = len(selection.duplicates)
        packed = _pack_splits(staging, selection, spilled, config)
        spill.remove()
    if not packed.shards:
        why = ", ".join(f"{r} {counts[r]}" for r in DROP_REASONS if counts[r])
        hint = f"; raise --seq (now {config.seq}) to keep long rows" if counts["overlong"] else ""
        raise PackError(
            f"nothing to pack: every row was rejected ({why}; see the rejects reasons){hint}", file=inputs[0]
        )
    manifest = build_manifest(
        config=config,
        fingerprint=fp,
        inputs=files,
        tokenizer=tok_info,
        template_sha=template_sha,
        packed=packed,
        counts=counts,
    ).to_dict()
    write_manifest(staging, manifest)
    return manifest


def _tokenize_to_spill(
    inputs, config: PackConfig, renderer: ChatRenderer, spill: _Spill, rejects
) -> tuple[_Rows, Counter, dict[int, int]]:
    """Read, render and tokenize every row in `config.workers()` processes, appending the tokens to
    `spill` in input order; unreadable, invalid and unrenderable rows go to `rejects`. Returns where
    each tokenized row came from, the counts so far (rows_in and those reasons), and the rows too long
    to tokenize (row index -> characters). With `overlong="error"` the first overlong row stops it."""
    counts: Counter = Counter()
    early: dict[int, int] = {}
    rows = _Rows()
    bar = tqdm(desc="tokenize", unit=" rows", file=sys.stderr, disable=not config.progress, mininterval=0.5)
    try:
        convs = _conversations(inputs, config, rows, rejects, counts, bar)
        done = 0
        for enc in ordered_map(
            _encode_task,
            batched(convs, config.batch_rows),
            config.workers(),
            start_method="fork",  # the workers inherit the loaded tokenizer
            initializer=_init_encoder,
            initargs=(renderer, config.seq),
        ):
            if config.overlong == "error":
                _stop_at_overlong(enc, done, config.seq, rows, renderer)
            for i, chars in enc.over.items():
                early[done + i] = chars
            for i, reason in sorted(enc.errors.items()):
                counts["unrenderable"] += 1
                w = rows.where(done + i)
                _reject(rejects, w["file"], w["row"], w["line"], "unrenderable", reason)
            spill.append(enc.hashes, enc.ids, enc.mask, enc.lengths)
            done += len(enc.lengths)
    finally:
        bar.close()
    return rows, counts, early


def _stop_at_overlong(enc: EncodedBatch, done: int, seq: int, rows: _Rows, renderer: ChatRenderer) -> None:
    """`overlong="error"`: `PackError` for the batch's first row longer than `seq`, if any."""
    too_long = enc.lengths > seq
    if not too_long.any() and not enc.over:
        return
    first = int(np.flatnonzero(too_long | _flags(len(enc.lengths), enc.over))[0])
    if first in enc.over:
        least = _at_least(enc.over[first], renderer)
        raise _overlong_error(least, seq, rows.where(done + first), at_least=True)
    raise _overlong_error(int(enc.lengths[first]), seq, rows.where(done + first))


@dataclass(frozen=True)
class RowSelection:
    """Which rows are packed into which split, and which are dropped (row indices, ascending)."""

    train: np.ndarray
    val: np.ndarray
    overlong: np.ndarray  # longer than seq (never truncated)
    duplicates: np.ndarray  # exact duplicates of an earlier kept row


def select_rows(
    lengths: np.ndarray, hashes: np.ndarray, config: PackConfig, too_long: Iterable[int] = ()
) -> RowSelection:
    """The rows to pack, from each row's token count and 16-byte content hash alone (a pure function).

    A row is overlong when it has more than `config.seq` tokens or is in `too_long` (measured by its
    text, never tokenized). Rows of length 0 (not tokenized: refused by the template or tokenizer)
    are neither kept nor counted here. Unless `config.keep_duplicates`, a row whose hash equals an
    earlier kept row's is a duplicate. Kept rows go to val when `val_mask` says so (`config.val`),
    else to train."""
    overlong = lengths > config.seq
    overlong[list(too_long)] = True
    keep = ~overlong & (lengths > 0)
    duplicate = np.zeros(len(lengths), dtype=bool)
    if not config.keep_duplicates:
        kept = np.flatnonzero(keep)
        duplicate[kept[~first_occurrences(hashes[kept])]] = True
        keep &= ~duplicate
    in_val = val_mask(hashes, config.val)
    return RowSelection(
        train=np.flatnonzero(keep & ~in_val),
        val=np.flatnonzero(keep & in_val),
        overlong=np.flatnonzero(overlong),
        duplicates=np.flatnonzero(duplicate),
    )


def _reject_dropped(
    rejects,
    selection: RowSelection,
    lengths: np.ndarray,
    early: dict[int, int],
    rows: _Rows,
    renderer,
    seq: int,
) -> None:
    """The rejects entries of the overlong rows, then of the duplicates, each in input order."""
    for i in selection.overlong.tolist():
        w = rows.where(i)
        if i in early:  # measured by its text, never tokenized
            least = _at_least(early[i], renderer)
            detail = (
                f"at least {least} tokens > seq {seq} (its text is {early[i]} characters; "
                f"one token stands for at most {renderer.chars_per_token})"
            )
            _reject(rejects, w["file"], w["row"], w["line"], "overlong", detail, length=least)
        else:
            length = int(lengths[i])
            detail = f"{length} tokens > seq {seq}"
            _reject(rejects, w["file"], w["row"], w["line"], "overlong", detail, length=length)
    for i in selection.duplicates.tolist():
        w = rows.where(i)
        detail = "exact duplicate of an earlier conversation"
        _reject(rejects, w["file"], w["row"], w["line"], "duplicate", detail)


@dataclass
class PackedSplits:
    """The shards written for the splits, each split's totals, and the lengths of the packed rows."""

    shards: list = field(default_factory=list)  # ShardInfo, train then val
    splits: dict[str, dict] = field(default_factory=dict)
    lengths: list[np.ndarray] = field(default_factory=list)  # per split, the packed rows' token counts


def _pack_splits(
    staging: Path, selection: RowSelection, spilled: Spilled, config: PackConfig
) -> PackedSplits:
    """Pack each split globally (rows in seeded order) and write its shards into `staging`."""
    out = PackedSplits()
    for split, docs in (("train", selection.train), ("val", selection.val)):
        if len(docs) == 0:
            continue
        packing = shuffle_rows(pack_documents(spilled.lengths[docs], config.seq), config.seed)
        out.shards.extend(
            _write_split(staging, split, docs, packing, spilled.lengths, spilled.ids, spilled.mask, config)
        )
        out.splits[split] = {
            "rows": int(len(docs)),
            "sequences": packing.rows,
            "tokens": packing.tokens,
            "loss_tokens": int(spilled.loss[docs].sum()),
            "padding_tokens": packing.padding,
            "fill_efficiency": round(packing.fill, 6),
        }
        out.lengths.append(spilled.lengths[docs])
    return out


def build_manifest(
    *,
    config: PackConfig,
    fingerprint: str | None,
    inputs: list[dict],
    tokenizer: dict,
    template_sha: str,
    packed: PackedSplits,
    counts: Counter,
) -> ShardManifest:
    """The manifest of a pack (a pure function): format, provenance, options, shards and totals.
    `tokenizer` is `tokenizer_info(...)`; `counts` holds rows_in and the rows dropped by reason."""
    all_lengths = np.concatenate(packed.lengths)
    split_totals = packed.splits
    tokens = sum(t["tokens"] for t in split_totals.values())
    sequences = sum(t["sequences"] for t in split_totals.values())
    totals = {
        "rows_in": counts["rows_in"],
        "rows_packed": int(all_lengths.size),
        "rows_dropped": {r: counts[r] for r in DROP_REASONS if counts[r]},
        "duplicates": counts["duplicate"],
        "sequences": sequences,
        "tokens": tokens,
        "loss_tokens": sum(t["loss_tokens"] for t in split_totals.values()),
        "padding_tokens": sequences * config.seq - tokens,
        "fill_efficiency": round(tokens / (sequences * config.seq), 6),
        "splits": split_totals,
        "length_histogram": length_histogram(all_lengths, config.seq),
    }
    return ShardManifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        hive_version=__version__,
        fingerprint=fingerprint,
        inputs=inputs,
        tokenizer=ShardTokenizer.from_dict(tokenizer, Path(MANIFEST)),
        chat_template_sha256=template_sha,
        seq=config.seq,
        loss=config.loss,
        think=config.think,
        seed=config.seed,
        val=config.val,
        overlong=config.overlong,
        keep_duplicates=config.keep_duplicates,
        shard_tokens=config.shard_tokens,
        record_format=config.fmt,
        mapping=config.mapping or None,
        shards=list(packed.shards),
        totals=totals,
        rejects=REJECTS,
    )


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
    "select_rows",
    "RowSelection",
    "build_manifest",
    "PackedSplits",
    "load_tokenizer",
    "tokenizer_info",
]
