"""Every real schema in ../shared/corpora normalizes losslessly, executes in PostgreSQL and is idempotent.

Lossless is checked against PostgreSQL itself: the input's schema graph (tables, ordered columns,
primary keys, foreign keys, as read from the input) must equal the graph PostgreSQL's catalog holds
after running the output. Each file runs in its own schema inside a transaction that is rolled back.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from hive_core.errors import DDLError
from hive_data.ddl import normalize_ddl
from hive_data.ddl.build import build_schema
from hive_data.ddl.split import split_statements
from hive_data.ddl.transforms import Context, expand_inheritance, resolve_references

pytestmark = pytest.mark.corpora

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
PATTERNS = (
    "spider-mysql/dataset_mysql/databases/*/schema.sql",
    "sakila/*/*.sql",
    "chinook/ChinookDatabase/DataSources/*.sql",
)
FILES = (
    sorted(str(p.relative_to(CORPORA)) for pat in PATTERNS for p in CORPORA.glob(pat))
    if CORPORA.is_dir()
    else []
)

# Files the normalizer rejects, with the reason it must give (at most 3 may be listed; README.md
# "Known limitations" lists the same). Currently every corpus file is normalized.
REJECTED: dict[str, str] = {}


def test_corpus_is_complete(corpora):
    assert len(FILES) == 176
    assert len(REJECTED) <= 3


@pytest.fixture(scope="module")
def pg(pg_uri):
    with psycopg.connect(pg_uri) as conn:
        yield conn


def input_graph(text: str, read: str):
    """The schema graph as the input states it (names folded, as unquoted PostgreSQL names are;
    a foreign key stated twice is one edge)."""
    built = build_schema(split_statements(text, read), read)
    schema = built.schema
    ctx = Context(read=read, target="postgres")
    schema = resolve_references(expand_inheritance(schema, ctx), ctx)
    return _graph(
        {t.name.name: [c.name for c in t.columns] for t in schema.tables},
        {t.name.name: t.primary_key for t in schema.tables if t.primary_key},
        [
            (t.name.name, fk.columns, fk.ref_table.name, fk.ref_columns)
            for t in schema.tables
            for fk in t.foreign_keys
        ],
    )


def _graph(columns, pks, fks):
    low = str.lower
    return (
        {low(t): [low(c) for c in cols] for t, cols in columns.items()},
        {low(t): [low(c) for c in cols] for t, cols in pks.items()},
        sorted({(low(t), tuple(map(low, c)), low(rt), tuple(map(low, rc))) for t, c, rt, rc in fks}),
    )


CATALOG_COLUMNS = """
SELECT c.relname, a.attname FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""
CATALOG_KEYS = """
SELECT con.contype, c.relname,
  ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.i),
  fc.relname,
  ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.i)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
WHERE n.nspname = %s AND con.contype IN ('p', 'f')
"""


def catalog_graph(conn, schema: str):
    columns: dict[str, list[str]] = {}
    for table, column in conn.execute(CATALOG_COLUMNS, (schema,)):
        columns.setdefault(table, []).append(column)
    pks, fks = {}, []
    for kind, table, cols, ref_table, ref_cols in conn.execute(CATALOG_KEYS, (schema,)):
        if kind == "p":
            pks[table] = cols
        else:
            fks.append((table, cols, ref_table, ref_cols))
    return _graph(columns, pks, fks)


@pytest.mark.parametrize("rel", FILES)
def test_corpus_file(corpora, pg, rel):
    path = corpora / rel
    text = path.read_text(encoding="utf-8-sig")
    if rel in REJECTED:
        with pytest.raises(DDLError) as info:
            normalize_ddl(text, source=str(path))
        assert str(info.value).startswith(f"{path}:") and REJECTED[rel] in str(info.value)
        assert info.value.line is not None and info.value.col is not None
        return
    res = normalize_ddl(text, source=str(path))
    again = normalize_ddl(res.text, read="postgres", source="output")
    assert again.text == res.text, "not idempotent"
    assert not again.dropped  # the output holds table structure only
    schema = "corpus_" + str(abs(hash(rel)))
    with pg.transaction():
        pg.execute(f"CREATE SCHEMA {schema}")
        pg.execute(f"SET LOCAL search_path TO {schema}")
        pg.execute(res.text)
        got = catalog_graph(pg, schema)
        raise psycopg.Rollback()
    assert got == input_graph(text, res.read)


def test_spider_totals_survive_in_postgres(corpora, pg):
    """The corpus README's counts (779 tables, 670 foreign keys), counted in PostgreSQL's catalog."""
    spider = [f for f in FILES if f.startswith("spider-mysql/")]
    assert len(spider) == 157
    tables = fks = 0
    with pg.transaction():
        for i, rel in enumerate(spider):
            res = normalize_ddl((corpora / rel).read_text(encoding="utf-8-sig"), read="mysql")
            pg.execute(f"CREATE SCHEMA spider_{i}; SET LOCAL search_path TO spider_{i}")
            pg.execute(res.text)
        tables = pg.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname LIKE 'spider\\_%%' AND c.relkind = 'r'"
        ).fetchone()[0]
        fks = pg.execute(
            "SELECT count(*) FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace "
            "WHERE n.nspname LIKE 'spider\\_%%' AND con.contype = 'f'"
        ).fetchone()[0]
        raise psycopg.Rollback()
    assert (tables, fks) == (779, 670)
