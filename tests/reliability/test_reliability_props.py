"""Property-based tests (issue 7): hostile and random inputs never produce a traceback or a silent loss.

- `normalize_ddl` on arbitrary text returns canonical output or raises `DDLError` with a location, never
  another exception; on generated CREATE TABLE scripts (three source dialects, quoting, constraints,
  foreign keys) its output parses back and normalizing it again changes nothing;
- the record readers and the row converters take arbitrary JSON values and bytes: unreadable rows carry
  a `RecordError` with a reason, whole-source problems raise `RecordError`, nothing else escapes;
  `normalize_dataset` accounts for every row and rejects none as an internal error;
- the packer conserves tokens: every document lands in exactly one row, rows never exceed `seq`, and
  tokens in = tokens in rows + tokens of the overlong documents reported as dropped, for arbitrary
  length distributions and `seq`; end to end, the shards of `pack_dataset` hold exactly the rendered
  tokens of the rows kept, and the rejects account for the rest.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import sqlglot
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hive_core.errors import DDLError, RecordError
from hive_data.binpack import best_fit_decreasing, exact_fit_first, pack_documents, refine, shuffle_rows
from hive_data.ddl import normalize_ddl
from hive_data.records import FORMATS, iter_records, row_to_messages

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = str(ROOT / "fixtures" / "tokenizer")


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# ------------------------------------------------------------------------------------ DDL: arbitrary text

SQLISH = st.sampled_from(
    [
        "CREATE", "TABLE", "create table", "t", "(", ")", ",", ";", "`", '"', "'", "[", "]", "--", "/*", "*/",
        "\n", " ", "INT", "VARCHAR(10)", "PRIMARY KEY", "FOREIGN KEY", "REFERENCES", "NOT NULL", "DEFAULT",
        "CHECK", "UNIQUE", "ENGINE=InnoDB", "INSERT INTO", "VALUES", "ALTER TABLE", "ADD", "DROP", "INDEX",
        "CREATE INDEX", "ON", "AUTO_INCREMENT", "SERIAL", "x", "id", "0", "1.5", "NULL", "$$", "E'\\n'",
        "GO", "DELIMITER", "CONSTRAINT", "AS", "SELECT", "GENERATED ALWAYS AS", "COLLATE", "ENUM('a','b')",
    ]
)  # fmt: skip


def check_ddl_outcome(text: str, read: str, dialect: str) -> None:
    try:
        res = normalize_ddl(text, read=read, dialect=dialect, source="fuzz.sql")
    except DDLError as err:
        assert err.file == "fuzz.sql", err
        assert str(err).startswith("fuzz.sql"), err
        if err.line is not None:
            assert 1 <= err.line <= text.count("\n") + 1, err
        if err.col is not None:
            assert err.col >= 1, err
        return
    assert res.text and res.tables
    check_canonical(res.text, dialect)


def check_canonical(text: str, dialect: str) -> None:
    """Canonical output parses in its dialect and is a fixed point of the normalizer."""
    sqlglot.parse(text, read=dialect)
    again = normalize_ddl(text, read=dialect, dialect=dialect, source="again.sql")
    assert again.text == text


@fuzz(150)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(SQLISH, max_size=60).map(" ".join),
        st.lists(st.one_of(SQLISH, st.text(string.printable, max_size=8)), max_size=60).map("".join),
    ),
    read=st.sampled_from(["auto", "mysql", "postgres", "sqlite", "tsql"]),
    dialect=st.sampled_from(["postgres", "mysql", "sqlite"]),
)
def test_ddl_on_arbitrary_text_is_canonical_or_a_located_error(text, read, dialect):
    check_ddl_outcome(text, read, dialect)


# ------------------------------------------------------------------------------------ DDL: generated schemas

TYPES = {
    "mysql": [
        "INT", "INT(11)", "BIGINT", "SMALLINT", "TINYINT(1)", "VARCHAR(40)", "CHAR(3)", "TEXT", "LONGTEXT",
        "DECIMAL(10,2)", "DOUBLE", "FLOAT", "DATETIME", "DATE", "TIMESTAMP", "BOOLEAN", "BLOB", "JSON",
        "ENUM('a','b')", "INT UNSIGNED",
    ],
    "postgres": [
        "INTEGER", "BIGINT", "SMALLINT", "VARCHAR(40)", "CHAR(3)", "TEXT", "NUMERIC(10,2)",
        "DOUBLE PRECISION", "REAL", "TIMESTAMP", "TIMESTAMPTZ", "DATE", "BOOLEAN", "BYTEA", "JSONB", "UUID",
        "SERIAL", "BIGSERIAL", "INTEGER[]",
    ],
    "sqlite": ["INTEGER", "INT", "TEXT", "REAL", "BLOB", "NUMERIC", "VARCHAR(40)", "DATETIME", "BOOLEAN"],
}  # fmt: skip
DEFAULTS = {"INT": "0", "TEXT": "'x'", "BOOL": "TRUE"}
NAMES = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"),
    st.from_regex(r"\A[A-Z][A-Za-z0-9_]{0,8}\Z"),
    st.sampled_from(["order", "user", "select", "group", "Name", "name", "key", "value", "from", "table"]),
    st.from_regex(r"\A[a-z][a-z ]{0,6}[a-z]\Z"),
)


def quote(name: str, dialect: str) -> str:
    return f"`{name}`" if dialect == "mysql" else f'"{name}"'


UNKEYABLE = {"JSON", "BLOB", "TEXT", "LONGTEXT"}  # MySQL indexes none of these without a prefix


@st.composite
def create_tables(draw):
    """A valid CREATE TABLE script in a random source dialect: quoted and reserved names, mixed case,
    column and table constraints, foreign keys to earlier tables, table options, an index, any order."""
    dialect = draw(st.sampled_from(sorted(TYPES)))
    n_tables = draw(st.integers(1, 4))
    table_names = draw(st.lists(NAMES, min_size=n_tables, max_size=n_tables, unique_by=str.lower))
    tables: list[tuple[str, list[str], tuple[str, str] | None]] = []  # name, columns, (pk column, type)
    statements = []
    for name in table_names:
        cols = draw(st.lists(NAMES, min_size=1, max_size=6, unique_by=str.lower))
        types = [draw(st.sampled_from(TYPES[dialect])) for _ in cols]
        keyable = [not (dialect == "mysql" and t in UNKEYABLE) and t not in ("JSON",) for t in types]
        lines = []
        pk = None
        for i, (col, typ) in enumerate(zip(cols, types)):
            parts = [quote(col, dialect), typ]
            integer = "INT" in typ.upper() and "[]" not in typ and "SERIAL" not in typ
            if i == 0 and keyable[i] and draw(st.booleans()):
                parts.append("PRIMARY KEY")
                pk = (col, typ)
            elif draw(st.booleans()):
                parts.append("NOT NULL")
            if keyable[i] and draw(st.integers(0, 5)) == 0:
                parts.append("UNIQUE")
            if integer and draw(st.integers(0, 6)) == 0:
                parts.append("DEFAULT 0")
            if integer and draw(st.integers(0, 8)) == 0:
                parts.append(f"CHECK ({quote(col, dialect)} >= 0)")
            lines.append(" ".join(parts))
        targets = [t for t in tables if t[2] is not None]
        if targets and draw(st.booleans()):
            ref_name, _, (ref_pk, ref_type) = draw(st.sampled_from(targets))
            fk_col = f"{ref_name}_ref".replace(" ", "_")
            fk_type = {"SERIAL": "INTEGER", "BIGSERIAL": "BIGINT"}.get(ref_type, ref_type)
            # now and then a type unlike the referenced one (SQLite: also none), as real schemas have
            unlike = TYPES[dialect] + ([""] if dialect == "sqlite" else [])
            fk_type = draw(st.one_of(st.just(fk_type), st.sampled_from(unlike)))
            if fk_col.lower() not in {c.lower() for c in cols}:
                lines.append(f"{quote(fk_col, dialect)} {fk_type}".rstrip())
                lines.append(
                    f"FOREIGN KEY ({quote(fk_col, dialect)}) REFERENCES {quote(ref_name, dialect)} "
                    f"({quote(ref_pk, dialect)})"
                )
        if pk is None and len(cols) > 1 and keyable[1] and draw(st.booleans()):
            pk = (cols[1], types[1])
            lines.append(f"PRIMARY KEY ({quote(cols[1], dialect)})")
        tail = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if dialect == "mysql" and draw(st.booleans()) else ""
        statements.append(f"CREATE TABLE {quote(name, dialect)} (\n  " + ",\n  ".join(lines) + f"\n){tail};")
        tables.append((name, cols, pk))
    if keyable[0] and draw(st.booleans()):
        first, cols0 = tables[-1][0], tables[-1][1]
        statements.append(f"CREATE INDEX idx_x ON {quote(first, dialect)} ({quote(cols0[0], dialect)});")
    order = draw(st.permutations(range(len(statements))))
    return dialect, "\n".join(statements[i] for i in order), [t[0] for t in tables]


@fuzz(150)
@given(case=create_tables(), target=st.sampled_from(["postgres", "mysql", "sqlite"]), auto=st.booleans())
def test_generated_create_tables_normalize_parse_back_and_are_idempotent(case, target, auto):
    dialect, text, names = case
    try:
        res = normalize_ddl(text, read="auto" if auto else dialect, dialect=target, source="gen.sql")
    except DDLError as err:
        print("REFUSED", err, "\n", text)
        raise
    assert len(res.tables) == len(names)
    check_canonical(res.text, target)


@fuzz(100)
@given(case=create_tables())
def test_generated_create_tables_execute_in_sqlite(case):
    """The canonical SQLite output of a generated schema runs in SQLite (foreign keys on) and creates
    every table; each foreign key finds a unique parent key (`foreign_key_check` raises otherwise)."""
    import sqlite3

    dialect, text, names = case
    res = normalize_ddl(text, read=dialect, dialect="sqlite", source="gen.sql")
    db = sqlite3.connect(":memory:")
    try:
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(res.text)
        tables = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'"
        ).fetchone()[0]
        assert tables == len(names)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()


@pytest.mark.slow
@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=create_tables())
def test_generated_create_tables_execute_in_postgres(pg_uri, case):
    """The canonical PostgreSQL output of a generated schema is accepted by PostgreSQL itself."""
    import psycopg

    dialect, text, names = case
    res = normalize_ddl(text, read=dialect, dialect="postgres", source="gen.sql")
    with psycopg.connect(pg_uri) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS hive_prop")
        conn.execute("SET search_path TO hive_prop")
        try:
            conn.execute(res.text)
            count = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'hive_prop'"
            ).fetchone()[0]
            assert count == len(names)
        finally:
            conn.rollback()


# ------------------------------------------------------------------------------------ record readers

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ROW_FIELDS = st.sampled_from(
    [
        "sql_prompt", "sql_context", "sql", "question", "context", "answer", "messages", "prompt",
        "completion", "instruction", "input", "output", "text", "db_id", "role", "content",
    ]
)  # fmt: skip
ROWS = st.dictionaries(ROW_FIELDS, JSON_VALUES | st.text(max_size=60), max_size=6)


@fuzz(200)
@given(data=ROWS, fmt=st.sampled_from(FORMATS))
def test_row_to_messages_takes_any_row(data, fmt):
    try:
        messages = row_to_messages(data, fmt)
    except RecordError as err:
        assert err.reason
        return
    assert messages and all(isinstance(m["content"], str) for m in messages)
    assert messages[-1]["role"] == "assistant"


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


LINES = st.lists(
    st.one_of(
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        ROWS.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ")),
    ),
    min_size=1,
    max_size=12,
)


@fuzz(120)
@given(lines=LINES, fmt=st.sampled_from([None, "gretel", "messages", "text"]))
def test_jsonl_reader_takes_any_lines(tmp_path_factory, lines, fmt):
    path = write_lines(tmp_path_factory.mktemp("jsonl") / "rows.jsonl", lines)
    try:
        records = list(iter_records(path, fmt=fmt))
    except RecordError as err:  # a whole-source problem: empty, or columns that fit no format
        assert err.file == str(path) and err.reason
        return
    for rec in records:
        assert (rec.data is None) != (rec.error is None)
        if rec.error is not None:
            assert rec.error.reason and rec.error.row == rec.row and rec.error.file == str(path)
            assert isinstance(rec.raw, str)
        else:
            assert isinstance(rec.data, dict)


@fuzz(80)
@given(blob=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".json", ".jsonl", ".parquet"]))
def test_readers_take_any_bytes(tmp_path_factory, blob, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"data{suffix}"
    path.write_bytes(blob)
    try:
        for rec in iter_records(path):
            assert (rec.data is None) != (rec.error is None)
    except RecordError as err:
        assert err.file == str(path) and err.reason


@fuzz(25)
@given(lines=LINES.filter(lambda ls: any(ls)))
def test_normalize_dataset_accounts_for_every_row(tmp_path_factory, lines):
    from hive_data.normalize_rows import NothingKept, normalize_dataset

    base = tmp_path_factory.mktemp("norm")
    src = write_lines(base / "rows.jsonl", lines)
    out = base / "clean.jsonl"
    try:
        summary = normalize_dataset(src, out, fmt="gretel", num_proc=1, progress=False)
    except NothingKept as err:  # every row rejected: the rejects are written, the output is not
        summary = err.summary
        assert summary.rows_out == 0 and not out.exists()
    assert summary.rows_in == summary.rows_out + summary.rows_rejected + summary.duplicates
    assert summary.rows_in == sum(1 for ln in lines if ln.strip())
    text = (base / "clean.jsonl.rejects.jsonl").read_text(encoding="utf-8")
    rejects = [json.loads(ln) for ln in text.split("\n") if ln]  # (not splitlines: U+0085 is no line end)
    assert len(rejects) == summary.rows_rejected
    assert all(r["reason"] and r["step"] != "internal" for r in rejects), rejects


# ------------------------------------------------------------------------------------ packer


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(1, 300),
    lengths=st.one_of(
        st.lists(st.integers(0, 900), max_size=300),
        st.lists(st.integers(1, 40), max_size=400),
        st.lists(st.sampled_from([1, 2, 3, 100, 150, 299, 300]), max_size=200),
    ),
)
def test_packer_conserves_tokens(seq, lengths):
    lengths = np.asarray(lengths, dtype=np.int64)
    dropped = lengths > seq  # what the pipeline reports as overlong
    empty = lengths == 0  # nothing to pack (no tokens)
    docs = np.flatnonzero(~dropped & ~empty)
    kept = lengths[docs]
    for name, packing in (
        ("pack_documents", pack_documents(kept, seq)),
        ("best_fit_decreasing", best_fit_decreasing(kept, seq)),
        ("exact_fit_first", exact_fit_first(kept, seq)),
    ):
        for p in (packing, refine(kept, packing), shuffle_rows(packing, seed=7)):
            assert sorted(p.order.tolist()) == list(range(len(kept))), name  # each document exactly once
            per_row = np.add.reduceat(kept[p.order], p.row_offsets[:-1]) if p.rows else np.zeros(0)
            assert np.array_equal(per_row, p.row_tokens), name
            assert (np.diff(p.row_offsets) >= 1).all() and (p.row_tokens <= seq).all(), name
            assert p.tokens + int(lengths[dropped].sum()) == int(lengths.sum()), name
            assert p.padding == p.rows * seq - p.tokens >= 0
    if dropped.any():  # the pipeline never hands the packer an overlong document; the packer refuses one
        with pytest.raises(ValueError):
            pack_documents(lengths[~empty], seq)


@pytest.fixture(scope="module")
def renderer():
    from hive_data.chat import ChatRenderer
    from hive_data.pack import load_tokenizer

    return ChatRenderer(load_tokenizer(TOKENIZER))


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 120), min_size=1, max_size=60),
    seq=st.integers(16, 400),
    val=st.sampled_from([0.0, 0.3]),
)
def test_pack_dataset_conserves_tokens_end_to_end(tmp_path_factory, renderer, sizes, seq, val):
    from hive_data.pack import pack_dataset
    from hive_data.shards import open_shards

    base = tmp_path_factory.mktemp("pack")
    convs = [
        [
            {"role": "user", "content": f"q{i} " + "w " * (n // 3)},
            {"role": "assistant", "content": f"a{i} " + "x" * n},
        ]
        for i, n in enumerate(sizes)
    ]
    src = base / "rows.jsonl"
    src.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    encoded = [renderer.encode_one(c)[0] for c in convs]
    total = sum(len(e) for e in encoded)
    assume(any(len(e) <= seq for e in encoded))
    out = base / "shards"
    res = pack_dataset(src, out, tokenizer=TOKENIZER, seq=seq, val=val, num_proc=1, progress=False)
    totals = res.manifest["totals"]
    text = (out / "rejects.jsonl").read_text(encoding="utf-8")
    rejects = [json.loads(ln) for ln in text.split("\n") if ln]
    assert all(r["reason"] == "overlong" for r in rejects)
    assert totals["tokens"] + sum(r["length"] for r in rejects) == total
    assert totals["rows_packed"] + len(rejects) == len(convs) == totals["rows_in"]
    shards = open_shards(out, verify="sha256")
    in_shards, docs = 0, []
    for split in ("train", "val"):
        table = shards.split(split)
        if table is None:
            continue
        for row in table.to_pylist():
            assert len(row["input_ids"]) == sum(row["seq_lengths"]) <= seq
            start = 0
            for n in row["seq_lengths"]:
                docs.append(tuple(row["input_ids"][start : start + n]))
                start += n
            in_shards += len(row["input_ids"])
    assert in_shards == totals["tokens"]
    expected = sorted(tuple(e.tolist()) for e in encoded if len(e) <= seq)
    assert sorted(docs) == expected  # the very token ids of every kept row, each exactly once
