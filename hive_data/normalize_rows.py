"""`hive-data normalize` for datasets: canonical schemas, transpiled and verified answers, no silent loss.

For each text-to-SQL row (gretel, sql-create-context, Spider shapes):

1. the schema (the row's context field, or `--schema-dir DIR/<key>/schema.sql|DIR/<key>.sql`) is
   canonicalized by `hive_data.ddl.normalize_ddl`, once per distinct text (memoized by hash);
   INSERTs in a context are dropped and counted, or kept (transpiled) with `keep_data`;
2. the answer is transpiled to the target dialect with the schema's identifier policy, and made
   explicit where the source engine converted types implicitly (`hive_data.coerce`, typed against
   the canonical schema; a row a rule rewrote lists the rules in its `coerced` field);
3. it is verified (`parse`; `explain` in an embedded PostgreSQL; `execute`: also the same result as
   the source answer in its own engine, `hive_data.verify_execute`);
4. exact duplicates (same normalized question, schema and answer) are removed.

Chat rows (messages, prompt/completion, alpaca, text) are checked to convert into a valid conversation
and deduplicated. Every failing row goes to the rejects file with its row number, the original row,
the step and the reason; `in = out + rejected + duplicates` always holds. Rows keep their field names:
schema and answer fields are rewritten in place, an attached schema goes into `schema`, and SQL rows
get a `dialect` field. Output order is the input order, whatever the number of processes. Every
output line is strict JSON: NaN and Infinity become null (counted in the summary); a value JSON cannot
hold, or an exception of any kind while a row is converted, makes that row a reject.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import math
import os
import re
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from hive_core.atomic import atomic_file, check_separate, remove_stale
from hive_core.errors import ConfigError, HiveError, RecordError, SQLError
from hive_core.settings import setting
from hive_data.parallel import batched, main_reruns_in_spawned_workers, ordered_map
from hive_data.records import (
    FORMATS,
    SQL_FORMATS,
    Record,
    get_fields,
    iter_records,
    parse_mapping,
    row_to_messages,
)
from hive_data.verify import VERIFY_LEVELS, guess_read

STEPS = (
    "read",
    "fields",
    "schema",
    "answer",
    "parse",
    "coerce",
    "explain",
    "execute",
    "messages",
    "convert",
    "internal",
)
OUTPUT_SUFFIXES = (".jsonl", ".parquet")
SCHEMA_MEMO = 4096  # canonical schemas remembered per process


@dataclass
class NormalizeConfig:
    """Options of `normalize_dataset`. `hive-data normalize` makes its flags from the fields'
    `setting(...)`: each default and help text is written once, here."""

    read: str = setting(
        "auto",
        help="Source SQL dialect (mysql, sqlite, postgres, tsql, oracle, ... any sqlglot dialect); "
        "auto detects it from the text and says which it chose.",
    )
    dialect: str = setting("postgres", help="Target dialect of the canonical schema.")
    fmt: str | None = setting(
        None,
        flag="--format",
        choices=FORMATS,
        help="Datasets: record format (default: detected from the columns).",
    )
    mapping: dict[str, str] = setting(
        default_factory=dict,
        flag="--map",
        help="Datasets: take a format's field from another column, e.g. question=q,answer=query,schema=ddl.",
    )
    schema_dir: str | None = setting(
        None,
        help="Datasets: directory of schemas that live outside the rows: DIR/<key>/schema.sql or DIR/<key>.sql.",
    )
    schema_key: str | None = setting(
        None, help="Datasets: the column naming each row's schema in --schema-dir (default: db_id|database)."
    )
    keep_data: bool = setting(
        False,
        flag_only=True,
        help="Datasets: keep INSERTs found in schema contexts (transpiled, after the tables) instead of dropping them.",
    )
    coerce: bool = setting(
        True,
        help="Datasets: rewrite answers where the source (mysql, sqlite) converted types implicitly, typed "
        "against the row's schema (text = number, SUM(text), flag = 1, LIKE on dates, ...); rows it "
        "rewrites list the rules in a `coerced` field. --no-coerce transpiles the syntax only.",
    )
    verify: str = setting(
        "parse",
        choices=VERIFY_LEVELS,
        help="Datasets: answers must parse in the target dialect; explain: also pass EXPLAIN in an embedded "
        "PostgreSQL; execute: also return, on databases synthesized from the schema, what the source answer "
        "returns in its own engine (SQLite, PostgreSQL sources; others are checked by EXPLAIN only).",
    )
    rejects: str | None = setting(
        None,
        help="Datasets: where failing rows go, with row number, step and reason (default: OUTPUT.rejects.jsonl, "
        "e.g. clean.jsonl.rejects.jsonl). Must differ from INPUT and OUTPUT.",
    )
    strict: bool = setting(False, flag_only=True, help="Datasets: exit with status 1 if any row is rejected.")
    num_proc: int | None = setting(None, help="Datasets: worker processes (default: all cores).")
    timeout_ms: int = 5000  # per EXPLAIN
    pg_uri: str | None = None  # a running PostgreSQL for --verify explain; None: start an embedded one
    batch_size: int = 256
    progress: bool = True

    def check(self) -> None:
        """`ConfigError` for options that cannot work together or name unknown things."""
        if self.verify not in VERIFY_LEVELS:
            raise ConfigError(f"--verify must be one of {', '.join(VERIFY_LEVELS)}, got {self.verify!r}")
        if self.verify in ("explain", "execute") and self.dialect != "postgres":
            raise ConfigError(f"--verify {self.verify} runs PostgreSQL: it needs --dialect postgres")
        if self.fmt is not None and self.fmt not in FORMATS:
            raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        from sqlglot.dialects.dialect import Dialect

        for flag, name in (("--read", self.read), ("--dialect", self.dialect)):
            if name != "auto" or flag == "--dialect":
                try:
                    Dialect.get_or_raise(name)
                except ValueError:
                    raise ConfigError(f"{flag}: unknown SQL dialect {name!r}") from None
        if self.schema_dir and not Path(self.schema_dir).is_dir():
            raise ConfigError(f"--schema-dir {self.schema_dir}: not a directory")


@dataclass
class Summary:
    """What happened to every input row."""

    output: str
    rejects: str
    rows_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)  # step -> rows
    coerced: Counter = field(default_factory=Counter)  # coercion rule label -> kept rows it rewrote
    executed: int = 0  # kept rows whose answer agreed with the source's in execution (--verify execute)
    not_executed: Counter = field(default_factory=Counter)  # source dialect -> kept rows without an engine
    dropped: Counter = field(default_factory=Counter)  # statement kind -> count, over distinct schemas
    formats: Counter = field(default_factory=Counter)  # record format -> rows
    schemas: int = 0  # distinct schema texts canonicalized
    nulled: int = 0  # non-finite numbers (NaN, Infinity) written as null in the output rows
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # printed as `warning: ...` lines
    first_reject: str | None = None  # "row N: reason" of the first rejected row

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def text(self) -> str:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        lines = [
            f"rows: in {self.rows_in} = out {self.rows_out} + rejected {self.rows_rejected} "
            f"+ duplicates {self.duplicates}",
            f"rejected by step: {rej}" + (f" (see {self.rejects})" if self.rows_rejected else ""),
            f"formats: {', '.join(f'{k} {v}' for k, v in sorted(self.formats.items())) or 'none'}; "
            f"distinct schemas: {self.schemas}",
        ]
        if self.nulled:
            lines.append(
                f"non-finite numbers (NaN/Infinity) written as null: {self.nulled} (JSON has no such values)"
            )
        if self.coerced:
            from hive_data.coerce import LABELS

            order = {label: i for i, label in enumerate(LABELS)}
            lines.append(
                "coercions (kept rows per rule): "
                + ", ".join(
                    f"{k} {v}" for k, v in sorted(self.coerced.items(), key=lambda kv: order.get(kv[0], 99))
                )
            )
        if self.executed or self.not_executed:
            line = f"verified by execution: {self.executed} rows agree with their source answer"
            if self.not_executed:
                dialects = ", ".join(f"{k} {v}" for k, v in sorted(self.not_executed.items()))
                line += f"; not executable here, checked by EXPLAIN only: {dialects}"
            lines.append(line)
        if self.dropped:
            lines.append(
                "dropped from the distinct schemas: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items()))
            )
        wrote = f"wrote {self.output}" if self.rows_out or not self.rows_in else "nothing written"
        lines.append(f"time: {self.seconds:.1f} s, {self.rows_per_s:,.0f} rows/s; {wrote}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def rejects_path(output: str | os.PathLike) -> Path:
    """The default rejects file: `clean.jsonl` -> `clean.jsonl.rejects.jsonl`, `clean.parquet` ->
    `clean.parquet.rejects.jsonl` (the output's whole name, so two outputs never share one)."""
    out = Path(output)
    return out.with_name(out.name + ".rejects.jsonl")


class NothingKept(RecordError):
    """Every row was rejected: the rejects file is written, the output left as it was. `summary`
    says what happened."""

    def __init__(self, reason: str, summary: Summary, **where):
        super().__init__(reason, **where)
        self.summary = summary


class _Discard(Exception):
    """Raised inside the output's `atomic_file` to drop it while the rejects file is kept."""


# --------------------------------------------------------------------------- per-process worker


@dataclass
class _Worker:
    """One process's share of a normalize run: the options, and what it memoizes across batches."""

    cfg: NormalizeConfig
    pg_uri: str | None  # for --verify explain
    schemas: dict = field(default_factory=dict)  # schema text hash -> _Schema | HiveError (SCHEMA_MEMO)
    schema_files: dict = field(default_factory=dict)  # --schema-dir key -> (text, path) | HiveError
    columns: dict = field(default_factory=dict)  # (format, row columns) -> field -> column
    verifier: object = None  # hive_data.verify.ExplainVerifier, made on first use
    executor: object = None  # hive_data.verify_execute.ExecuteVerifier (--verify execute), on first use

    def execute_verifier(self):
        if self.executor is None:
            from hive_data.verify_execute import ExecuteVerifier

            self.executor = ExecuteVerifier(
                self.pg_uri, timeout_ms=self.cfg.timeout_ms, prefix=f"hive_x{os.getpid()}"
            )
        return self.executor

    def explain_verifier(self):
        if self.cfg.verify == "execute":  # one sandbox role per process: the executor's
            return self.execute_verifier().executor.verifier
        if self.verifier is None:
            from hive_data.verify import ExplainVerifier

            self.verifier = ExplainVerifier(
                self.pg_uri, timeout_ms=self.cfg.timeout_ms, prefix=f"hive_v{os.getpid()}"
            )
        return self.verifier

    def close(self) -> None:
        if self.verifier is not None:
            self.verifier.close()
            self.verifier = None
        if self.executor is not None:
            self.executor.close()
            self.executor = None


_WORKER: _Worker | None = None  # this process's worker, set by `_init_worker`


def _init_worker(cfg: NormalizeConfig, pg_uri: str | None) -> None:
    """`ordered_map` initializer: a fresh `_Worker` for this process."""
    global _WORKER
    _WORKER = _Worker(cfg, pg_uri)


def _close_worker() -> None:
    """Close this process's worker, if it made one (the in-process run; spawned workers just exit)."""
    global _WORKER
    if _WORKER is not None:
        _WORKER.close()
        _WORKER = None


class _Reject(Exception):
    def __init__(self, step: str, err: HiveError | str):
        super().__init__(str(err))
        self.step = step
        self.err = err if isinstance(err, HiveError) else HiveError(err)


@dataclass
class _Schema:
    text: str  # canonical schema, with kept data statements after the tables
    read: str
    tables: int
    data: tuple[str, ...]
    dropped: Counter
    key: bytes = b""
    qualified: bool = False  # tables keep schema qualifiers (they came from several schemas)


def _canonical_schema(w: _Worker, text: str, source: str) -> _Schema:
    """Normalize one schema text, memoized per process by content hash (errors too)."""
    cfg = w.cfg
    key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    memo = w.schemas
    got = memo.get(key)
    if got is None:
        from hive_core.errors import DDLError
        from hive_data.ddl import normalize_ddl

        try:
            res = normalize_ddl(
                text, read=cfg.read, dialect=cfg.dialect, source=source, keep_data=cfg.keep_data
            )
            data = tuple(_policy_sql(stmt, cfg.dialect) for stmt in res.data or ()) if cfg.keep_data else ()
            canonical = res.text.rstrip("\n")
            if data:  # kept rows go after all tables, one statement per line
                canonical += "\n\n" + "\n".join(stmt + ";" for stmt in data)
            dropped = Counter(res.dropped)
            if data:  # kept INSERTs are not dropped ones, whichever way the normalizer counts them
                dropped["INSERT"] = max(0, dropped["INSERT"] - len(data))
            dropped = +dropped
            canonical += "\n"
            qualified = any("." in name for name in res.tables)
            got = _Schema(canonical, res.read, len(res.tables), data, dropped, _digest(canonical), qualified)
            if not res.tables:
                got = DDLError("schema has no CREATE TABLE statement")
        except DDLError as err:
            err.file = None  # the location is within the schema text; the row says where it came from
            got = err
        memo[key] = got
        if len(memo) > SCHEMA_MEMO:  # bounded memory when every row brings its own schema
            memo.pop(next(iter(memo)))
    if isinstance(got, HiveError):
        raise _Reject("schema", got)
    return got


def _policy_sql(stmt: str, dialect: str) -> str:
    """A kept data statement printed with the canonical identifier policy (as answers are)."""
    import sqlglot

    from hive_data.ddl import apply_identifier_policy

    try:
        return apply_identifier_policy(sqlglot.parse_one(stmt, read=dialect), dialect).sql(dialect=dialect)
    except (sqlglot.errors.SqlglotError, RecursionError):
        return stmt  # as the normalizer printed it; EXPLAIN mode still checks that it executes


_SAFE_KEY = re.compile(r"^[\w.\- ]+$")


def _schema_from_dir(w: _Worker, key) -> tuple[str, str]:
    cfg = w.cfg
    files = w.schema_files
    if key not in files:
        name = str(key) if key is not None else ""
        got: tuple[str, str] | HiveError
        if not name or not _SAFE_KEY.match(name) or name in (".", ".."):
            got = RecordError(f"schema key {name!r} is not a plain name")
        else:
            root = Path(cfg.schema_dir)
            for path in (root / name / "schema.sql", root / f"{name}.sql"):
                if path.is_file():
                    try:
                        got = (path.read_text(encoding="utf-8-sig"), str(path))
                    except (OSError, UnicodeDecodeError) as err:
                        got = RecordError(f"cannot read {path}: {err}")
                    break
            else:
                got = RecordError(
                    f"no schema for {name!r}: neither {name}/schema.sql nor {name}.sql in {root}"
                )
        files[key] = got
    got = files[key]
    if isinstance(got, HiveError):
        raise _Reject("schema", got)
    return got


def _digest(*parts: str) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()


def _question_key(text: str) -> str:
    return " ".join(text.split())


def _sql_row(
    w: _Worker, data: dict, fmt: str, source: str, row: int
) -> tuple[dict, bytes, _Schema | None, list[str]]:
    """The normalized row, its dedup key, its canonical schema (None when it has none), and the
    labels of the coercion rules that rewrote its answer."""
    cfg = w.cfg
    try:
        fields = get_fields(data, fmt, cfg.mapping)
        question, answer = fields["question"], fields["answer"]
        for name, value in (("question", question), ("answer", answer)):
            if not isinstance(value, str):
                raise RecordError(f"field {name!r} is {type(value).__name__}, expected a string")
    except RecordError as err:
        raise _Reject("fields", err) from None
    cols = w.columns
    colmap = cols.get((fmt, frozenset(data)))
    if colmap is None:
        from hive_data.records import field_columns

        colmap = cols[(fmt, frozenset(data))] = field_columns(fmt, data.keys(), cfg.mapping)

    out = dict(data)
    schema = None
    schema_field = None
    if cfg.schema_dir:
        key_col = cfg.schema_key or colmap.get("database")
        if not key_col or key_col not in data:
            raise _Reject("fields", RecordError(f"missing schema key field {key_col!r}"))
        text, path = _schema_from_dir(w, data[key_col])
        schema, schema_field = _canonical_schema(w, text, path), "schema"
    elif "schema" in fields:
        context = fields["schema"]
        if not isinstance(context, str):
            raise _Reject("fields", RecordError(f"field {colmap['schema']!r} is not a string"))
        schema, schema_field = _canonical_schema(w, context, f"{source} row {row}"), colmap["schema"]
    elif cfg.verify in ("explain", "execute"):
        raise _Reject(
            "schema", RecordError("no schema to EXPLAIN against: pass --schema-dir and --schema-key")
        )

    read = cfg.read if cfg.read != "auto" else (schema.read if schema else guess_read(answer))
    from hive_data.verify import transpile_coerced

    try:
        sql, coerced = transpile_coerced(
            answer,
            read,
            cfg.dialect,
            schema.text if schema is not None and cfg.coerce else None,
            unqualify=schema is not None and not schema.qualified,
        )
    except SQLError as err:
        raise _Reject(getattr(err, "step", "answer"), err) from None
    except RecursionError:
        raise _Reject("answer", SQLError(_TOO_DEEP)) from None
    if cfg.verify in ("explain", "execute"):
        try:
            w.explain_verifier().explain(
                sql, schema.text, dialect=cfg.dialect
            )  # the text holds kept data too
        except SQLError as err:
            step = "schema" if err.reason.startswith("schema does not execute") else "explain"
            raise _Reject(step, err) from None
        except RecursionError:
            raise _Reject("explain", SQLError(_TOO_DEEP)) from None

    executed = None
    if cfg.verify == "execute":  # the source answer in its own engine against the transpiled one
        try:
            executed = w.execute_verifier().check(answer, read, sql, schema.text)
        except SQLError as err:
            raise _Reject("execute", err) from None
        except RecursionError:
            raise _Reject("execute", SQLError(_TOO_DEEP)) from None
        if not executed:
            executed = read  # no engine for this dialect: counted, kept on EXPLAIN's word

    out[colmap["answer"]] = sql
    if schema is not None:
        out[schema_field] = schema.text
    out["dialect"] = cfg.dialect
    if coerced:  # only rewritten rows carry it: the others are exactly as without coercion
        out["coerced"] = coerced
    key = _digest("sql", _question_key(question), schema.text if schema else "", sql)
    return out, key, schema, coerced, executed


_TOO_DEEP = "SQL nested too deeply to parse (parentheses or subqueries thousands of levels deep)"


def _chat_row(w: _Worker, data: dict, fmt: str) -> tuple[dict, bytes]:
    cfg = w.cfg
    try:
        messages = row_to_messages(data, fmt, cfg.mapping)
    except RecordError as err:
        step = "fields" if err.reason.startswith(("missing field", "empty field")) else "messages"
        raise _Reject(step, err) from None
    norm = [(m["role"], _question_key(m["content"])) for m in messages]
    return data, _digest("chat", json.dumps(norm, ensure_ascii=False))


def _json_default(value):
    """JSON for the values Parquet and the hub hand over that `json` does not know."""
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()  # a duration column: seconds
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"a value of type {type(value).__name__} cannot be written as JSON")


def _finite(value) -> tuple[object, int]:
    """`value` with every non-finite float (NaN, Infinity) replaced by None, and how many were."""
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        out, n = {}, 0
        for key, item in value.items():
            out[key], k = _finite(item)
            n += k
        return out, n
    if isinstance(value, (list, tuple)):
        items = [_finite(item) for item in value]
        return [v for v, _ in items], sum(k for _, k in items)
    return value, 0


def _dumps(value) -> tuple[str, int]:
    """One valid JSON line (non-finite floats as null) and the number of values nulled. Raises
    `_Reject("convert")` for a value that cannot be written as JSON text."""
    nulled = 0
    try:
        try:
            text = json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)
        except ValueError:  # NaN or Infinity somewhere: JSON has neither
            value, nulled = _finite(value)
            text = json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)
        if not text.isascii():
            text.encode("utf-8")  # a lone surrogate cannot be written
    except UnicodeEncodeError:
        raise _Reject("convert", RecordError("lone surrogate in a string (not valid Unicode)")) from None
    except (TypeError, ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise _Reject("convert", RecordError(f"cannot write the row as JSON: {reason}")) from None
    return text, nulled


def _dumps_any(entry: dict) -> str:
    """JSON text for a rejects entry, whatever its original holds (ASCII escapes keep a lone
    surrogate; a value JSON cannot hold is written as its repr). Never raises."""
    try:
        return _dumps(entry)[0]
    except _Reject:
        pass
    try:
        value, _ = _finite(entry)
        return json.dumps(value, ensure_ascii=True, default=repr, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        entry = {**entry, "original": repr(entry.get("original"))[:100_000]}
        return json.dumps(entry, ensure_ascii=True, default=repr)


def _reject_entry(rec: Record, step: str, err: HiveError) -> dict:
    return {
        "row": rec.row,
        "file": rec.source,
        "input_line": rec.line,
        "step": step,
        "reason": err.reason,
        "line": err.line,
        "col": err.col,
        "original": rec.data if rec.data is not None else rec.raw,
    }


@dataclass
class _Kept:
    """A row that normalized: its output line and what the summary and the deduplication need."""

    line: str  # the output row as one JSON line
    key: bytes  # dedup key: same normalized question, schema and answer
    fmt: str
    nulled: int  # non-finite numbers written as null
    where: tuple[str, int, int | None]  # source, row, input line
    schema_key: bytes | None = None  # the canonical schema's hash (SQL rows with a schema)
    dropped: Counter | None = None  # statements the schema's normalization dropped
    coerced: tuple[str, ...] = ()  # labels of the coercion rules that rewrote the answer
    executed: bool | str | None = None  # --verify execute: True, or the source dialect it could not run


@dataclass
class _Rejected:
    """A row that goes to the rejects file."""

    line: str  # the rejects entry as one JSON line
    step: str  # one of STEPS
    fmt: str | None  # None when no readable row told the format


def _work(batch: list[Record]) -> list[_Kept | _Rejected]:
    """Normalize a batch of rows in this process's `_Worker`; one result per row, in order."""
    w = _WORKER
    out: list[_Kept | _Rejected] = []
    for rec in batch:
        fmt = rec.fmt
        try:
            if rec.data is None:  # unreadable: the reader already said why
                raise _Reject("read", rec.error or RecordError("unreadable row"))
            schema, coerced, executed = None, [], None
            if fmt in SQL_FORMATS:
                result, key, schema, coerced, executed = _sql_row(w, rec.data, fmt, rec.source, rec.row)
            else:
                result, key = _chat_row(w, rec.data, fmt)
            text, nulled = _dumps(result)
            kept = _Kept(
                text,
                key,
                fmt,
                nulled,
                (rec.source, rec.row, rec.line),
                coerced=tuple(coerced),
                executed=executed,
            )
            if schema is not None:
                kept.schema_key, kept.dropped = schema.key, schema.dropped
            out.append(kept)
        except Exception as exc:  # noqa: BLE001 - one row's surprise must not take the run down
            if isinstance(exc, _Reject):
                rej = exc
            elif type(exc).__module__.startswith("psycopg"):
                raise  # the database went away: stop, do not reject every row that follows
            elif isinstance(exc, RecursionError):
                rej = _Reject("read", RecordError("nested too deeply to process"))
            else:
                reason = f"internal error ({type(exc).__name__}: {str(exc)[:200]}); please report it"
                rej = _Reject("internal", HiveError(reason))
            out.append(_Rejected(_dumps_any(_reject_entry(rec, rej.step, rej.err)), rej.step, fmt))
    return out


# --------------------------------------------------------------------------- driver


def _results(records: Iterator[Record], cfg: NormalizeConfig, pg_uri: str | None, procs: int):
    """Each batch's results in input order (`hive_data.parallel.ordered_map`; spawned workers: no
    fork of a parent holding threads (tqdm) and sockets)."""
    try:
        yield from ordered_map(
            _work,
            batched(records, cfg.batch_size),
            procs,
            start_method="spawn",
            initializer=_init_worker,
            initargs=(cfg, pg_uri),
        )
    finally:
        _close_worker()


def normalize_dataset(
    src: str | os.PathLike,
    output: str | os.PathLike,
    config: NormalizeConfig | None = None,
    **options,
) -> Summary:
    """Normalize a dataset (file, directory or hub id) into `output` (`.jsonl` or `.parquet`).

    Options are the fields of `NormalizeConfig` (as keywords, or a config that is left unchanged). With
    `num_proc` > 1 the workers are spawned processes; called from a script's top level without the
    `if __name__ == "__main__":` guard (where spawned workers would run the script again), it warns and
    works in one process instead. Writes the output and the
    rejects file (`rejects_path(output)`, `<output name>.rejects.jsonl`, unless `rejects=`) atomically
    and returns the summary. Raises `ConfigError` for bad options and, before anything is written, for
    an output or rejects file that is the input (or lies inside an input directory) and for a rejects
    file that is the output; `RecordError` for an unreadable source (missing, empty, unknown format);
    `NothingKept` (a `RecordError`, with the summary) when every row was rejected: the rejects file is
    written and the output left as it was; and with `strict=True` a `RecordError` after writing when any
    row was rejected. With `verify="explain"` and no row holding SQL, the summary warns that nothing
    was explained.
    """
    names = {f.name for f in fields(NormalizeConfig)}
    for key in options:
        if key not in names:
            raise TypeError(f"unknown option {key!r}")
    cfg = replace(config or NormalizeConfig(), **options)
    cfg.mapping = parse_mapping(cfg.mapping)  # a new dict: the caller's config is not changed
    output = Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"output must end in .jsonl or .parquet, got {str(output)!r}")
    cfg.check()
    rejects = Path(cfg.rejects) if cfg.rejects else rejects_path(output)
    check_separate(output, [src])
    check_separate(rejects, [src], what="rejects file")
    if os.path.realpath(rejects) == os.path.realpath(output):
        raise ConfigError("rejects file is the output; they must differ (--rejects)", file=str(rejects))
    procs = cfg.num_proc or os.cpu_count() or 1
    if procs > 1 and main_reruns_in_spawned_workers():
        warnings.warn(
            "normalize_dataset was called from a script's top level without an "
            '`if __name__ == "__main__":` guard; spawned workers would run the script again, so the '
            "rows are processed in this process (add the guard to use several)",
            RuntimeWarning,
            stacklevel=2,
        )
        procs = 1
    summary = Summary(output=str(output), rejects=str(rejects))
    start = time.perf_counter()

    for target in (output, rejects):  # temporary files of a run that was killed
        remove_stale(target)
    records = iter_records(src, fmt=cfg.fmt, mapping=cfg.mapping)
    if cfg.verify in ("explain", "execute") and cfg.pg_uri:
        _write(records, output, rejects, cfg, cfg.pg_uri, procs, summary)
    elif cfg.verify in ("explain", "execute"):
        from hive_data.postgres import embedded_postgres

        with embedded_postgres() as uri:
            _write(records, output, rejects, cfg, uri, procs, summary)
    else:
        _write(records, output, rejects, cfg, None, procs, summary)
    summary.seconds = time.perf_counter() - start
    _finish(summary, cfg, src, output, rejects)
    return summary


def _finish(summary: Summary, cfg: NormalizeConfig, src, output: Path, rejects: Path) -> None:
    """The summary's closing warnings; `NothingKept` when no row was kept, and under `strict` a
    `RecordError` when any row was rejected."""
    if (
        cfg.verify in ("explain", "execute")
        and summary.rows_in
        and not any(summary.formats[f] for f in SQL_FORMATS)
    ):
        summary.warnings.append(
            f"--verify {cfg.verify} checked nothing: no row holds an SQL answer (formats: "
            + (", ".join(sorted(summary.formats)) or "none")
            + ")"
        )
    if summary.rows_in and not summary.rows_out:
        by_step = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items()))
        top = summary.rejected.most_common(1)[0][0] if summary.rejected else ""
        hint = {"fields": " (wrong --format or --map?)", "messages": " (wrong --format or --map?)"}.get(
            top, " (wrong --read dialect?)" if top in ("schema", "answer", "parse") else ""
        )
        summary.warnings.append(f"every row was rejected; {output} was not written")
        raise NothingKept(
            f"every row was rejected ({summary.rows_in} rows; by step: {by_step}); nothing written to "
            f"{output}; first: {summary.first_reject}; reasons in {rejects}{hint}",
            summary,
            file=str(src),
        )
    if cfg.strict and summary.rows_rejected:
        raise RecordError(
            f"{summary.rows_rejected} rows rejected (--strict); reasons in {rejects}", file=str(src)
        )


def _write(records, output: Path, rejects: Path, cfg, pg_uri, procs: int, summary: Summary) -> None:
    from tqdm import tqdm

    parquet = output.suffix.lower() == ".parquet"
    target = output.with_name(f".{output.name}.rows.jsonl") if parquet else output
    bar = tqdm(
        desc="normalize",
        unit=" rows",
        file=sys.stderr,
        disable=not cfg.progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    kept = True
    try:
        # the rejects file is committed first, then the output, unless no row was kept (`_Discard`)
        try:
            with atomic_file(target, "w", encoding="utf-8") as out:
                with atomic_file(rejects, "w", encoding="utf-8") as rej:
                    arrow_schema = _write_rows(records, out, rej, cfg, pg_uri, procs, summary, bar, parquet)
                if summary.rows_in and not summary.rows_out:
                    raise _Discard
        except _Discard:
            kept = False
    finally:
        bar.close()
    if parquet and kept:
        try:
            _jsonl_to_parquet(target, output, arrow_schema)
        finally:
            target.unlink(missing_ok=True)


def _write_rows(records, out, rej, cfg, pg_uri, procs: int, summary: Summary, bar, parquet: bool):
    """Write every row's result to `out` or `rej`, in input order; returns the Arrow schema of the kept
    rows (parquet: a row whose values fit no column type of the rows before it is rejected, step
    "convert", so the conversion at the end cannot fail)."""
    seen: set[bytes] = set()
    schemas: set[bytes] = set()
    arrow_schema = None
    for results in _results(records, cfg, pg_uri, procs):
        written: list[_Kept | _Rejected] = []  # what this batch writes, in input order
        for res in results:
            summary.rows_in += 1
            if res.fmt:
                summary.formats[res.fmt] += 1
            if isinstance(res, _Rejected):
                written.append(res)
                continue
            if res.schema_key is not None and res.schema_key not in schemas:  # once per distinct schema
                summary.dropped.update(res.dropped)
                schemas.add(res.schema_key)
            if res.key in seen:
                summary.duplicates += 1
                continue
            seen.add(res.key)
            written.append(res)
        if parquet:
            arrow_schema = _fit_parquet(arrow_schema, written)
        for res in written:
            if isinstance(res, _Rejected):
                rej.write(res.line + "\n")
                summary.rejected[res.step] += 1
                if summary.first_reject is None:
                    entry = json.loads(res.line)
                    reason = " ".join(str(entry.get("reason")).split())  # one line, whatever it was
                    summary.first_reject = f"row {entry.get('row')}: {reason[:200]}"
            else:
                out.write(res.line + "\n")
                summary.rows_out += 1
                summary.nulled += res.nulled
                summary.coerced.update(res.coerced)
                if res.executed is True:
                    summary.executed += 1
                elif res.executed:
                    summary.not_executed[res.executed] += 1
        bar.update(len(results))
    summary.schemas = len(schemas)
    return arrow_schema


def _fit_parquet(schema, written: list[_Kept | _Rejected]):
    """The Arrow schema of the rows so far and the kept rows in `written`; a kept row that fits no
    column type of the others (an integer beyond 64 bits, a string where numbers were) is replaced
    in `written` by its rejection (step "convert")."""
    rows = [json.loads(res.line) for res in written if isinstance(res, _Kept)]
    if not rows:
        return schema
    try:
        return _unify(schema, rows)
    except Exception:  # noqa: BLE001 - pyarrow raises ArrowInvalid, ArrowTypeError, OverflowError...
        pass  # find the rows at fault
    for i, res in enumerate(written):
        if not isinstance(res, _Kept):
            continue
        row = json.loads(res.line)
        try:
            wider = _unify(schema, [row])
            import pyarrow as pa

            pa.Table.from_pylist([row], schema=wider)
            schema = wider
        except Exception as err:  # noqa: BLE001 - as above, for this row alone
            source, number, line = res.where
            reason = " ".join(str(err).split()) or type(err).__name__
            entry = {
                "row": number,
                "file": source,
                "input_line": line,
                "step": "convert",
                "reason": f"does not fit one Parquet type per column with the rows before it ({reason}); "
                "original is the row as normalized (a .jsonl output keeps it)",
                "line": None,
                "col": None,
                "original": row,
            }
            written[i] = _Rejected(_dumps_any(entry), "convert", res.fmt)
    return schema


def _unify(schema, rows: list[dict]):
    import pyarrow as pa

    got = pa.Table.from_pylist(rows).schema
    if schema is None:
        return got
    return pa.unify_schemas([schema, got], promote_options="permissive")


def _jsonl_to_parquet(src: Path, output: Path, schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema if schema is not None else pa.schema([])
    with atomic_file(output, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
        rows: list[dict] = []
        with open(src, encoding="utf-8") as lines:
            for line in lines:
                rows.append(json.loads(line))
                if len(rows) >= 4096:
                    _write_parquet_rows(writer, rows, schema, output)
                    rows = []
        if rows or schema.names == []:
            _write_parquet_rows(writer, rows, schema, output)


def _write_parquet_rows(writer, rows: list[dict], schema, output: Path) -> None:
    import pyarrow as pa

    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except Exception as err:  # noqa: BLE001 - `_fit_parquet` admits only rows that convert; a last guard
        reason = " ".join(str(err).split()) or type(err).__name__
        raise HiveError(
            f"cannot write the rows as Parquet ({reason}); a .jsonl output keeps them", file=str(output)
        ) from None
    writer.write_table(table)


def iter_output(path: str | os.PathLike) -> Iterator[dict]:
    """Rows of a normalized output (`.jsonl` or `.parquet`)."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
    else:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)
