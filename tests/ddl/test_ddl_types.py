"""The closed type vocabulary: every category has a spelling per target, every spelling is accepted by
the target database, and reading a spelling back gives the same spelling (idempotence)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlglot import exp

from hive_data.ddl import normalize_ddl, types
from hive_data.ddl.types import CATEGORY, VOCABULARY


def test_every_category_has_a_spelling_in_every_target():
    categories = set(CATEGORY.values()) - {"array"}
    for target, vocab in VOCABULARY.items():
        missing = categories - set(vocab)
        assert not missing, f"{target} lacks {missing}"


def _spellings(target: str) -> list[str]:
    out = []
    for key, spelling in VOCABULARY[target].items():
        if key == "enum" and target == "mysql":
            spelling = "ENUM('a', 'b')"
        out.append(spelling.replace("{p}", "(10,2)"))
    return sorted(set(out))


def test_every_postgres_spelling_executes_and_reads_back_the_same(pg_conn):
    spellings = _spellings("postgres") + ["TEXT[]", "DECIMAL"]
    columns = ",\n".join(f"  c{i} {s}" for i, s in enumerate(spellings))
    ddl = f"CREATE TABLE vocab (\n{columns}\n);"
    pg_conn.execute(ddl)
    text = normalize_ddl(ddl, read="postgres").text
    for i, spelling in enumerate(spellings):
        assert f"  c{i} {spelling}" in text
    assert normalize_ddl(text, read="postgres").text == text


def test_every_sqlite_spelling_reads_back_the_same_and_executes():
    spellings = _spellings("sqlite")
    columns = ", ".join(f"c{i} {s.replace(' AUTO_INCREMENT', '')}" for i, s in enumerate(spellings))
    ddl = f"CREATE TABLE vocab ({columns});"
    sqlite3.connect(":memory:").execute(ddl)
    text = normalize_ddl(ddl, read="sqlite", dialect="sqlite").text
    assert normalize_ddl(text, read="sqlite", dialect="sqlite").text == text


def test_every_mysql_spelling_reads_back_the_same():
    spellings = [s for s in _spellings("mysql") if "AUTO_INCREMENT" not in s]
    columns = ", ".join(f"c{i} {s}" for i, s in enumerate(spellings))
    text = normalize_ddl(f"CREATE TABLE vocab ({columns})", read="mysql", dialect="mysql").text
    assert normalize_ddl(text, read="mysql", dialect="mysql").text == text


@pytest.mark.parametrize("name", sorted(t.name for t in CATEGORY))
def test_every_mapped_sqlglot_type_prints_a_postgres_vocabulary_word(name):
    dtype = exp.DataType(this=exp.DataType.Type[name])
    cat = types.category(dtype, "postgres")
    if cat == "array":
        dtype = exp.DataType(this=exp.DataType.Type.ARRAY, expressions=[exp.DataType.build("INT")])
    spelling = types.spell(dtype, cat, "postgres")
    allowed = {v.replace("{p}", "") for v in VOCABULARY["postgres"].values()} | {"INTEGER[]"}
    assert spelling in allowed


def test_widths_unsigned_and_zerofill_are_dropped_precision_is_kept():
    text = normalize_ddl(
        "CREATE TABLE t (a INT(11) UNSIGNED ZEROFILL, b VARCHAR(255), c DECIMAL(12,4) UNSIGNED, d NUMERIC(7))",
        read="mysql",
    ).text
    assert "a INTEGER,\n  b TEXT,\n  c DECIMAL(12,4),\n  d DECIMAL(7)\n" in text


def test_mysql_timestamp_is_not_read_as_timestamptz():
    assert "  t TIMESTAMP\n" in normalize_ddl("CREATE TABLE x (t TIMESTAMP)", read="mysql").text
    assert "  t TIMESTAMPTZ\n" in normalize_ddl("CREATE TABLE x (t TIMESTAMPTZ)", read="postgres").text


def test_mysql_target_indexes_text_keys_as_varchar():
    text = normalize_ddl(
        "CREATE TABLE p (code text PRIMARY KEY, name text);\nCREATE TABLE c (p_code text REFERENCES p(code))",
        dialect="mysql",
    ).text
    assert "code VARCHAR(255) PRIMARY KEY" in text and "name TEXT" in text
    assert "p_code VARCHAR(255) REFERENCES p(code)" in text
