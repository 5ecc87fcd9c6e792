"""Record readers: every dataset shape the experts are trained on, read as a stream of rows.

Sources are `.jsonl`, `.json`, `.parquet` and `.csv` files, directories of them (read in sorted path
order), and Hugging Face hub ids `org/name[:split][:config]` (streamed with `datasets.load_dataset`).
Each row comes out as a `Record` that knows where it came from; a row that cannot be read carries a
`RecordError` instead of data, so callers can reject it without stopping: bad UTF-8 or JSON, a
lone surrogate in a string, nesting deeper than `MAX_DEPTH`, a Parquet value Python cannot hold.
Problems with a whole source (missing file, empty file, unknown format) raise `RecordError`.

Record formats and the fields they provide (canonical field -> accepted columns, first present wins):

========================  ==========================================================================
format                    fields
========================  ==========================================================================
``gretel``                question=sql_prompt, schema=sql_context, answer=sql, explanation=sql_explanation
``create_context``        question=question, schema=context, answer=answer
``spider``                question=question, answer=sql|query, database=db_id|database
``messages``              messages=messages|conversations (role/content or ShareGPT from/value)
``prompt_completion``     prompt=prompt, completion=completion (strings or message lists)
``alpaca``                instruction=instruction, input=input, output=output|response
``text``                  text=text (Qwen ChatML or the legacy ``<|system|>...<|end|>`` form)
========================  ==========================================================================

`--map field=column,...` points a canonical field at another column; `--format` skips detection.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hive_core.errors import ConfigError, RecordError
from hive_data.prompt import sql_messages

FORMATS = ("gretel", "create_context", "spider", "messages", "prompt_completion", "alpaca", "text")
SQL_FORMATS = frozenset({"gretel", "create_context", "spider"})
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

# Detection order matters: the text-to-SQL shapes are checked before the generic chat shapes
# (a Spider row has `question` like sql-create-context, so create_context, which also needs
# `context`, comes first).
FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "gretel": {
        "question": ("sql_prompt",),
        "schema": ("sql_context",),
        "answer": ("sql",),
        "explanation": ("sql_explanation",),
    },
    "create_context": {"question": ("question",), "schema": ("context",), "answer": ("answer",)},
    "spider": {"question": ("question",), "answer": ("sql", "query"), "database": ("db_id", "database")},
    "messages": {"messages": ("messages", "conversations")},
    "prompt_completion": {"prompt": ("prompt",), "completion": ("completion",)},
    "alpaca": {"instruction": ("instruction",), "input": ("input",), "output": ("output", "response")},
    "text": {"text": ("text",)},
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "gretel": ("question", "schema", "answer"),
    "create_context": ("question", "schema", "answer"),
    "spider": ("question", "answer"),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}
ROLES = frozenset({"system", "user", "assistant", "tool"})
SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "user": "user",
    "assistant": "assistant",
}

# Rows are checked for what would break a writer later (a lone surrogate cannot be written as UTF-8;
# very deep nesting overflows the stack of every recursive encoder: json, pickle, Arrow). The checks
# run only when a cheap scan of the raw text says they could find something.
MAX_DEPTH = 200  # levels of nested lists/objects in one row
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]*)?(?::[\w.-]+)?$")


@dataclass
class Record:
    """One input row. `row` is 1-based within its source; `line` is the file line where known."""

    source: str
    row: int
    line: int | None
    data: dict | None
    error: RecordError | None = None
    raw: str | None = None  # the original text of an unreadable row, for the rejects file
    fmt: str | None = None  # the format of the source (None before any readable row)


# --------------------------------------------------------------------------- formats and fields


def parse_mapping(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """`"question=q,answer=query"` -> {"question": "q", "answer": "query"}."""
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        return dict(spec)
    out: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise ConfigError(f"--map expects field=column pairs separated by commas, got {part!r}")
        out[field.strip()] = column.strip()
    return out


def _check_mapping(fmt: str, mapping: Mapping[str, str]) -> None:
    unknown = sorted(set(mapping) - set(FIELDS[fmt]))
    if unknown:
        raise ConfigError(
            f"--map: format {fmt!r} has no field {', '.join(unknown)} (fields: {', '.join(FIELDS[fmt])})"
        )


def detect_format(columns: Iterable[str], mapping: Mapping[str, str] | None = None) -> str:
    """The record format of rows with these columns (after `mapping` field=column overrides).

    Raises `RecordError` when no format fits, naming the columns seen.
    """
    cols = set(columns)
    mapping = dict(mapping or {})
    for fmt in FORMATS:
        fields = FIELDS[fmt]
        if set(mapping) - set(fields):
            continue
        if all(_column_for(fmt, field, cols, mapping) in cols for field in REQUIRED[fmt]):
            return fmt
    raise RecordError(
        f"unknown record format: columns {sorted(cols)} match none of {', '.join(FORMATS)}; "
        "pass --format and/or --map field=column"
    )


def _column_for(fmt: str, field: str, cols: set[str] | Mapping, mapping: Mapping[str, str]) -> str:
    if field in mapping:
        return mapping[field]
    candidates = FIELDS[fmt][field]
    for column in candidates:
        if column in cols:
            return column
    return candidates[0]


def field_columns(
    fmt: str, columns: Iterable[str], mapping: Mapping[str, str] | str | None = None
) -> dict[str, str]:
    """canonical field -> the column that holds it in rows with these columns."""
    if fmt not in FIELDS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    mapping = parse_mapping(mapping)
    _check_mapping(fmt, mapping)
    cols = set(columns)
    return {field: _column_for(fmt, field, cols, mapping) for field in FIELDS[fmt]}


def get_fields(data: Mapping, fmt: str, mapping: Mapping[str, str] | None = None) -> dict[str, object]:
    """The canonical fields of one row; raises `RecordError` for a missing or empty required field."""
    columns = field_columns(fmt, data.keys(), mapping)
    out: dict[str, object] = {}
    for field, column in columns.items():
        value = data.get(column)
        if field in REQUIRED[fmt]:
            if value is None or (isinstance(value, str) and not value.strip()):
                what = "missing" if column not in data else "empty"
                raise RecordError(f"{what} field {column!r} ({fmt} {field})")
        out[field] = value
    return out


# --------------------------------------------------------------------------- messages


def row_to_messages(
    data: Mapping,
    fmt: str,
    mapping: Mapping[str, str] | None = None,
    *,
    dialect: str | None = None,
) -> list[dict]:
    """Chat messages for one row of format `fmt`.

    Text-to-SQL rows go through `hive_data.prompt.sql_messages`; their schema is the attached
    `schema` field when present (normalize adds it), else the row's context field. The dialect is
    `dialect`, else the row's `dialect` field, else the schema's `-- Dialect:` header, else postgres.
    Raises `RecordError` for rows that lack what the format needs or hold malformed messages.
    """
    fields = get_fields(data, fmt, mapping)
    if fmt in SQL_FORMATS:
        schema = data.get("schema") if isinstance(data.get("schema"), str) else fields.get("schema")
        schema = schema if isinstance(schema, str) else None
        dialect = dialect or data.get("dialect") or _schema_dialect(schema) or "postgres"
        question, answer = _text(fields["question"], "question"), _text(fields["answer"], "answer")
        return sql_messages(question, schema, dialect, answer)
    if fmt == "messages":
        return _check_messages(_as_messages(fields["messages"], "messages"))
    if fmt == "prompt_completion":
        prompt = fields["prompt"]
        completion = fields["completion"]
        head = (
            [{"role": "user", "content": prompt}]
            if isinstance(prompt, str)
            else _as_messages(prompt, "prompt")
        )
        tail = (
            [{"role": "assistant", "content": completion}]
            if isinstance(completion, str)
            else _as_messages(completion, "completion")
        )
        return _check_messages(head + tail)
    if fmt == "alpaca":
        instruction = _text(fields["instruction"], "instruction").strip()
        extra = fields.get("input")
        if extra is not None and not isinstance(extra, str):
            raise RecordError("field 'input' is not a string")
        user = f"{instruction}\n\n{extra.strip()}" if extra and extra.strip() else instruction
        return _check_messages(
            [
                {"role": "user", "content": user},
                {"role": "assistant", "content": _text(fields["output"], "output")},
            ]
        )
    if fmt == "text":
        return _check_messages(parse_chat_text(_text(fields["text"], "text")))
    raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _schema_dialect(schema: str | None) -> str | None:
    if schema and schema.startswith("-- Dialect:"):
        return schema.split("\n", 1)[0].removeprefix("-- Dialect:").strip() or None
    return None


def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} is {type(value).__name__}, expected a string")
    return value


def _as_messages(value, name: str) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # parquet/csv exports often store the list as a JSON string
        except ValueError:
            raise RecordError(f"field {name!r} is a string, expected a list of messages") from None
        except RecursionError:
            raise RecordError(f"field {name!r} holds JSON nested too deeply") from None
    if not isinstance(value, list):
        raise RecordError(f"field {name!r} is {type(value).__name__}, expected a list of messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise RecordError(
                f"{name}[{i}] is {type(msg).__name__}, expected an object with role and content"
            )
        # parquet unifies role/content and from/value structs, leaving the unused pair null
        if msg.get("role") is not None:
            role, content = msg.get("role"), msg.get("content")
        elif msg.get("from") is not None:
            role, content = SHAREGPT_ROLES.get(str(msg.get("from")), msg.get("from")), msg.get("value")
        else:
            raise RecordError(f"{name}[{i}] has no 'role'")
        if role not in ROLES:
            raise RecordError(f"{name}[{i}] has unknown role {role!r}")
        if not isinstance(content, str):
            raise RecordError(f"{name}[{i}] content is {type(content).__name__}, expected a string")
        out.append({"role": role, "content": content})
    return out


def _check_messages(messages: list[dict]) -> list[dict]:
    if not any(m["role"] == "user" for m in messages):
        raise RecordError("no user message")
    if not messages or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise RecordError("does not end with a non-empty assistant message")
    return messages


# Rendered chat text. ChatML (Qwen): `<|im_start|>role\ncontent<|im_end|>\n`. Legacy (the seed
# project's form): `<|role|>\ncontent<|end|>\n`. Content is compared stripped of surrounding space.
_CHATML = re.compile(r"<\|im_start\|>([a-z]+)\n?(.*?)<\|im_end\|>", re.S)
_LEGACY = re.compile(r"<\|(system|user|assistant|tool)\|>\n?(.*?)<\|end\|>", re.S)
_FILLER = re.compile(r"(?:\s|<\|endoftext\|>)*")


def parse_chat_text(text: str) -> list[dict]:
    """Parse a rendered ChatML or legacy chat text back into messages; RecordError if it is neither."""
    if "<|im_start|>" in text:
        pattern, style = _CHATML, "ChatML"
    elif _LEGACY.search(text):
        pattern, style = _LEGACY, "legacy"
    else:
        raise RecordError("text is neither Qwen ChatML (<|im_start|>) nor the legacy <|user|>...<|end|> form")
    messages, pos = [], 0
    for m in pattern.finditer(text):
        if not _FILLER.fullmatch(text, pos, m.start()):
            raise RecordError(f"{style} text: stray text at offset {pos}: {text[pos : pos + 40]!r}")
        role = m.group(1)
        if role not in ROLES:
            raise RecordError(f"{style} text: unknown role {role!r} at offset {m.start()}")
        messages.append({"role": role, "content": m.group(2).strip()})
        pos = m.end()
    if not _FILLER.fullmatch(text, pos):
        raise RecordError(
            f"{style} text: unterminated or stray text at offset {pos}: {text[pos : pos + 40]!r}"
        )
    return messages


def render_chat_text(messages: Iterable[Mapping], style: str = "chatml") -> str:
    """The inverse of `parse_chat_text` (for fixtures and round trips; training renders with the
    tokenizer's own chat template)."""
    if style == "chatml":
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if style == "legacy":
        return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)
    raise ValueError(f"unknown chat text style {style!r}")


# --------------------------------------------------------------------------- sources


def iter_records(
    src: str | Path,
    fmt: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
) -> Iterator[Record]:
    """Stream the rows of a file, a directory of files, or a hub id `org/name[:split][:config]`.

    Each source's format is `fmt`, or detected from the columns of its first readable row and
    stored on every record (`rec.fmt`). Raises `RecordError` for a missing source, an empty file, or
    rows whose columns fit no format.
    """
    mapping = parse_mapping(mapping)
    if fmt is not None:
        field_columns(fmt, (), mapping)  # validates fmt and the mapping up front
    for name, rows in _sources(src):
        detected = fmt
        count = 0
        for rec in rows:
            count += 1
            if rec.data is not None and detected is None:
                try:
                    detected = detect_format(rec.data.keys(), mapping)
                except RecordError as err:
                    raise err.with_location(file=name, row=rec.row, line=rec.line) from None
            rec.fmt = detected
            yield rec
        if count == 0:
            raise RecordError("empty input: no rows", file=name)


def _sources(src: str | Path) -> Iterator[tuple[str, Iterator[Record]]]:
    path = Path(src)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise RecordError(f"no {'/'.join(SUFFIXES)} files in directory", file=str(path))
        for file in files:
            yield str(file), _read_file(file)
    elif path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise RecordError(
                f"unsupported file type {path.suffix!r} (expected {', '.join(SUFFIXES)})", file=str(path)
            )
        yield str(path), _read_file(path)
    elif _HUB_ID.match(str(src)) and not str(src).startswith((".", "/")):
        name, split, config = parse_hub_id(str(src))
        yield str(src), iter_hub(name, split=split, config=config, label=str(src))
    else:
        raise RecordError(
            "no such file or directory, and not a hub id org/name[:split][:config]", file=str(src)
        )


def parse_hub_id(spec: str) -> tuple[str, str | None, str | None]:
    """`org/name[:split][:config]` -> (name, split or None, config or None)."""
    name, _, rest = spec.partition(":")
    split, _, config = rest.partition(":")
    return name, split or None, config or None


def iter_hub(
    name: str, split: str | None = None, config: str | None = None, *, label: str | None = None
) -> Iterator[Record]:
    """Stream a dataset through `datasets.load_dataset` (a hub id, or anything it accepts, such as a
    local directory of data files). The split defaults to `train`."""
    label = label or name
    try:
        import datasets

        ds = datasets.load_dataset(name, config, split=split or "train", streaming=True)
        for i, row in enumerate(ds, 1):
            data = dict(row)
            reason = check_value(data)
            if reason is not None:
                yield Record(
                    label, i, None, None, RecordError(reason, file=label, row=i), raw=_raw_text(data)
                )
            else:
                yield Record(label, i, None, data)
    except RecordError:
        raise
    except Exception as err:  # datasets raises many types (network, missing config/split, builder errors)
        raise RecordError(f"cannot load dataset: {type(err).__name__}: {err}", file=label) from None


def check_value(data) -> str | None:
    """Why a decoded row cannot be written back as JSON text, or None: a string (or key) holding a
    lone surrogate (JSON `"\\ud800"` decodes to one), or nesting deeper than `MAX_DEPTH`. Iterative, so
    it never overflows the stack itself."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return "lone surrogate in a string (not valid Unicode, cannot be written as UTF-8)"
        elif isinstance(value, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str) and _has_surrogate(key):
                        return "lone surrogate in a key (not valid Unicode, cannot be written as UTF-8)"
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
    return None


def _suspect(raw: bytes | str) -> bool:
    """Whether a row's raw JSON text could hold a lone surrogate or too deep nesting (cheap scans)."""
    if isinstance(raw, str):
        return "\\u" in raw or raw.count("[") + raw.count("{") > MAX_DEPTH
    return bool(_SURROGATE_ESCAPE.search(raw)) or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def _loads(text: str):
    """json.loads for one row; anything it raises besides a syntax error becomes a ValueError reason."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError(f"JSON nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as err:  # e.g. an integer longer than Python converts (4300 digits)
        raise ValueError(f"bad JSON: {err}") from None


def _read_file(path: Path) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    return _read_csv(path)


def _read_jsonl(path: Path) -> Iterator[Record]:
    name = str(path)
    row = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            row += 1
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                error = RecordError(
                    f"not UTF-8: byte 0x{bad} at column {err.start + 1}",
                    file=name,
                    row=row,
                    line=lineno,
                    col=err.start + 1,
                )
                yield Record(name, row, lineno, None, error, raw=text)
                continue
            try:
                data = _loads(text)
            except json.JSONDecodeError as err:
                error = RecordError(f"bad JSON: {err.msg}", file=name, row=row, line=lineno, col=err.colno)
                yield Record(name, row, lineno, None, error, raw=text.rstrip("\r\n"))
                continue
            except ValueError as err:
                error = RecordError(str(err), file=name, row=row, line=lineno)
                yield Record(name, row, lineno, None, error, raw=text.rstrip("\r\n"))
                continue
            reason = check_value(data) if _suspect(raw) else None
            if reason is not None:
                error = RecordError(reason, file=name, row=row, line=lineno)
                yield Record(name, row, lineno, None, error, raw=text.rstrip("\r\n"))
                continue
            if not isinstance(data, dict):
                error = RecordError(
                    f"row is a JSON {type(data).__name__}, expected an object",
                    file=name,
                    row=row,
                    line=lineno,
                )
                yield Record(name, row, lineno, None, error, raw=text.rstrip("\r\n"))
                continue
            yield Record(name, row, lineno, data)


def _read_json(path: Path) -> Iterator[Record]:
    name = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RecordError(f"not UTF-8: byte at offset {err.start}", file=name) from None
    if not text.strip():
        return
    try:
        doc = _loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(f"bad JSON: {err.msg}", file=name, line=err.lineno, col=err.colno) from None
    except ValueError as err:  # one document: it cannot be read row by row
        raise RecordError(str(err), file=name) from None
    suspect = _suspect(text)
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise RecordError(
                "JSON file must hold a list of rows, or an object with one list of rows", file=name
            )
        doc = lists[0]
    if not isinstance(doc, list):
        raise RecordError(f"JSON file holds a {type(doc).__name__}, expected a list of rows", file=name)
    for i, data in enumerate(doc, 1):
        reason = check_value(data) if suspect else None
        if reason is not None:
            error = RecordError(reason, file=name, row=i)
            yield Record(name, i, None, None, error, raw=_raw_text(data))
        elif isinstance(data, dict):
            yield Record(name, i, None, data)
        else:
            error = RecordError(f"row is a JSON {type(data).__name__}, expected an object", file=name, row=i)
            yield Record(name, i, None, None, error, raw=_raw_text(data))


def _raw_text(data) -> str:
    """A row as JSON text for the rejects file, whatever it holds (ASCII escapes keep surrogates)."""
    try:
        return json.dumps(data, ensure_ascii=True, default=repr)
    except (ValueError, RecursionError):
        return repr(data)[:10_000]


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    name = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise RecordError(f"cannot read parquet: {err}", file=name) from None
    depth = max((_type_depth(f.type) for f in pf.schema_arrow), default=0)
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=2048):
            try:
                rows = batch.to_pylist()
            except Exception:  # a value Python cannot hold (a timestamp past year 9999...): row by row
                rows = None
            for i in range(batch.num_rows):
                row += 1
                if rows is not None:
                    data = rows[i]
                else:
                    try:
                        data = batch.slice(i, 1).to_pylist()[0]
                    except Exception as err:
                        raw, bad = _arrow_raw(batch.slice(i, 1))
                        error = RecordError(
                            f"column {', '.join(map(repr, bad)) or '?'}: value Python cannot hold "
                            f"({type(err).__name__}: {err})",
                            file=name,
                            row=row,
                        )
                        yield Record(name, row, None, None, error, raw=raw)
                        continue
                if depth > MAX_DEPTH:
                    error = RecordError(f"nested deeper than {MAX_DEPTH} levels", file=name, row=row)
                    yield Record(name, row, None, None, error, raw=_raw_text(data))
                    continue
                yield Record(name, row, None, data)
    except RecordError:
        raise
    except Exception as err:  # a damaged page mid-file: the rows read so far stand, the file does not
        raise RecordError(
            f"cannot read parquet: {type(err).__name__}: {err}", file=name, row=row + 1
        ) from None


def _type_depth(dtype) -> int:
    """Levels of nesting an Arrow type gives its values (a struct or list adds one)."""
    import pyarrow as pa

    if pa.types.is_struct(dtype):
        return 1 + max((_type_depth(dtype.field(i).type) for i in range(dtype.num_fields)), default=0)
    if pa.types.is_map(dtype):
        return 2 + max(_type_depth(dtype.key_type), _type_depth(dtype.item_type))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        return 1 + _type_depth(dtype.value_type)
    return 0


def _arrow_raw(row) -> tuple[str, list[str]]:
    """A one-row batch as JSON text for the rejects file (values Python cannot hold written as Arrow
    prints them), and the columns whose values Python cannot hold."""
    out, bad = {}, []
    for name, column in zip(row.schema.names, row.columns):
        try:
            out[name] = column.to_pylist()[0]
        except Exception:  # noqa: BLE001 - the value this row is rejected for
            bad.append(name)
            try:
                out[name] = column.cast("string").to_pylist()[0]
            except Exception:  # noqa: BLE001
                out[name] = f"<{column.type} value>"
    return _raw_text(out), bad


def _read_csv(path: Path) -> Iterator[Record]:
    name = str(path)
    csv.field_size_limit(sys.maxsize)
    # surrogateescape keeps reading past a bad byte so only its row is rejected
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        if any(_has_surrogate(h) for h in header):
            raise RecordError("not UTF-8: bad byte in the header", file=name, line=1)
        if len(set(header)) != len(header):
            raise RecordError(f"duplicate column names in the header: {header}", file=name, line=1)
        start, row = reader.line_num + 1, 0
        for values in reader:
            line, start = start, reader.line_num + 1
            if not values:
                continue
            row += 1
            raw = ",".join(values)
            if any(_has_surrogate(v) for v in values):
                text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                error = RecordError("not UTF-8: bad byte in the row", file=name, row=row, line=line)
                yield Record(name, row, line, None, error, raw=text)
            elif len(values) != len(header):
                error = RecordError(
                    f"expected {len(header)} fields, got {len(values)}", file=name, row=row, line=line
                )
                yield Record(name, row, line, None, error, raw=raw)
            else:
                yield Record(name, row, line, dict(zip(header, values)))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
