"""Canonical output executes, for every accepted input (issue 4): each rewrite that makes it so runs in a
real database, PostgreSQL (the embedded server, a schema per test in a transaction rolled back) and
SQLite (`sqlite3`, foreign keys on); MySQL output, with no server here, is read back by sqlglot.

Then the whole of ../shared/corpora: the SQLite output of every file runs in SQLite and creates every
table with its columns and keys, and the MySQL output of every file reads back.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import uuid

import psycopg
import pytest
import sqlglot
from test_ddl_corpora import FILES, REJECTED, _graph, input_graph

from hive_data.ddl import normalize_ddl, transforms, types
from hive_data.ddl.transforms import Context


def norm(sql: str, read: str, target: str):
    res = normalize_ddl(sql, read=read, dialect=target, source="t.sql")
    assert normalize_ddl(res.text, read=target, dialect=target).text == res.text, "not idempotent"
    return res


def line(text: str, column: str, table: str | None = None) -> str:
    """The one output line declaring `column` (of `table` when given), stripped, without its comma."""
    if table is not None:
        text = re.search(rf"-- Table: {table}\n(CREATE TABLE .*?\n\);\n)", text, re.S).group(1)
    found = [ln.strip().rstrip(",") for ln in text.splitlines() if re.match(rf'  "?{column}"? ', ln)]
    assert len(found) == 1, f"{column} in:\n{text}"
    return found[0]


@pytest.fixture(scope="module")
def pg(pg_uri):
    with psycopg.connect(pg_uri) as conn:
        yield conn


@contextlib.contextmanager
def in_postgres(pg, text: str):
    """Run `text` in a fresh schema; yield the connection; roll everything back."""
    with pg.transaction():
        schema = "exec_" + uuid.uuid4().hex[:12]
        pg.execute(f"CREATE SCHEMA {schema}")
        pg.execute(f"SET LOCAL search_path TO {schema}")
        pg.execute(text)
        yield pg
        raise psycopg.Rollback()


def in_sqlite(text: str) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(text)
    return db


def pg_type(pg, table: str, column: str) -> str:
    return pg.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (table, column),
    ).fetchone()[0]


def executes_everywhere(pg, sql: str, read: str) -> dict:
    """Normalize for the three targets; run PostgreSQL's and SQLite's output, read MySQL's back."""
    out = {target: norm(sql, read, target) for target in types.TARGETS}
    with in_postgres(pg, out["postgres"].text):
        pass
    in_sqlite(out["sqlite"].text).close()
    assert all(sqlglot.parse(out["mysql"].text, read="mysql"))
    return out


# ---- foreign keys: both columns get types the target accepts together -----------------------------
PAIRS = sorted(
    {
        v.replace("{p}", "(10,2)")
        for k, v in types.VOCABULARY["postgres"].items()
        if k not in ("json", "xml", "tsvector") and not k.startswith("serial")  # no btree: never keys
    }
    | {"DECIMAL", "TEXT[]", "INTEGER[]"}
)


def test_fk_accepts_is_what_postgres_accepts(pg):
    """`types.fk_accepts` for PostgreSQL is measured: every pair of the vocabulary, both ways."""
    wrong = []
    with pg.transaction():
        pg.execute("CREATE SCHEMA fk_matrix; SET LOCAL search_path TO fk_matrix")
        for i, referenced in enumerate(PAIRS):
            pg.execute(f"CREATE TABLE p{i} (k {referenced} PRIMARY KEY)")
            for j, referencing in enumerate(PAIRS):
                try:
                    with pg.transaction():
                        pg.execute(f"CREATE TABLE c{i}_{j} (f {referencing} REFERENCES p{i}(k))")
                    accepted = True
                except psycopg.errors.DatatypeMismatch:
                    accepted = False
                if accepted != types.fk_accepts(referencing, referenced, "postgres"):
                    wrong.append((referencing, referenced, accepted))
        raise psycopg.Rollback()
    assert not wrong


def test_fk_accepts_mysql_wants_equal_numbers_any_string_length_and_sqlite_anything():
    assert types.fk_accepts("INTEGER", "INTEGER AUTO_INCREMENT", "mysql")
    assert types.fk_accepts("TEXT", "VARCHAR(255)", "mysql")
    assert not types.fk_accepts("SMALLINT", "INTEGER", "mysql")
    assert not types.fk_accepts("DECIMAL(10,2)", "DECIMAL(12,2)", "mysql")
    assert not types.fk_accepts("VARCHAR(255)", "INTEGER", "mysql")
    assert types.fk_accepts("TEXT", "INTEGER", "sqlite")


def test_typeless_sqlite_columns_take_the_type_they_are_linked_with_both_ways(pg):
    sql = (
        "CREATE TABLE p (id PRIMARY KEY, name);\n"
        "CREATE TABLE c (pid INTEGER REFERENCES p(id), gid REFERENCES g(id));\n"
        "CREATE TABLE g (id BIGINT PRIMARY KEY);"
    )
    out = executes_everywhere(pg, sql, "sqlite")
    text = out["postgres"].text
    assert line(text, "id", "p") == "id INTEGER PRIMARY KEY"  # from the column referencing it
    assert line(text, "name") == "name TEXT"  # unlinked: holds anything
    assert line(text, "gid") == "gid BIGINT REFERENCES g(id)"
    assert not out["postgres"].warnings
    with in_postgres(pg, text) as db:
        db.execute("INSERT INTO p VALUES (1, 'x'); INSERT INTO g VALUES (7); INSERT INTO c VALUES (1, 7)")


def test_typeless_chain_and_cycle_take_the_one_declared_type(pg):
    sql = (
        "CREATE TABLE a (id PRIMARY KEY, b_id REFERENCES b(id));\n"
        "CREATE TABLE b (id PRIMARY KEY REFERENCES a(id));\n"
        "CREATE TABLE c (x REFERENCES b(id), y INTEGER REFERENCES c(x), PRIMARY KEY (x));"
    )
    out = executes_everywhere(pg, sql, "sqlite")
    text = out["postgres"].text
    assert "id INTEGER PRIMARY KEY" in text.replace("\n", " ") and "TEXT" not in text


def test_unknown_sqlite_type_names_take_the_linked_type_else_sqlite_affinity(pg):
    sql = (
        "CREATE TABLE p (id INTEGER PRIMARY KEY, code my_code UNIQUE, price money_t, kind varchar_ish);\n"
        "CREATE TABLE c (pid my_id REFERENCES p(id), pcode TEXT REFERENCES p(code));"
    )
    out = executes_everywhere(pg, sql, "sqlite")
    pgres = out["postgres"]
    assert line(pgres.text, "pid") == "pid INTEGER REFERENCES p(id)"
    assert line(pgres.text, "code") == "code TEXT UNIQUE"
    assert line(pgres.text, "price") == "price DECIMAL"  # NUMERIC affinity
    assert line(pgres.text, "kind") == "kind TEXT"  # 'CHAR' in the name: TEXT affinity
    assert any("c.pid: type my_id is no SQL type" in w and "p.id" in w for w in pgres.warnings)
    assert any(
        "p.price: type money_t is no SQL type; read as SQLite reads it (NUMERIC" in w for w in pgres.warnings
    )


def test_integer_text_mismatch_takes_the_referenced_type_in_postgres_and_mysql(pg):
    sql = (
        "CREATE TABLE p (id serial PRIMARY KEY, code varchar(10) UNIQUE);\n"
        "CREATE TABLE c (pid varchar(20) DEFAULT 'none' REFERENCES p(id), pcode int REFERENCES p(code));"
    )
    out = executes_everywhere(pg, sql, "postgres")
    text = out["postgres"].text
    assert line(text, "id") == "id SERIAL PRIMARY KEY"
    assert line(text, "pid") == "pid INTEGER REFERENCES p(id)"  # and its text default is gone
    assert line(text, "pcode") == "pcode TEXT REFERENCES p(code)"
    assert out["postgres"].warnings == [
        "c.pid: type TEXT changed to INTEGER to match the foreign keys it shares with p.id; its default "
        "'none' dropped",
        "c.pcode: type INTEGER changed to TEXT to match the foreign keys it shares with p.code",
    ]
    assert line(out["mysql"].text, "pid") == "pid INTEGER REFERENCES p(id)"
    assert line(out["mysql"].text, "pcode") == "pcode VARCHAR(255) REFERENCES p(code)"
    # SQLite compares values, not types: the key is left as it is written
    assert line(out["sqlite"].text, "pid") == "pid TEXT DEFAULT 'none' REFERENCES p(id)"
    with in_postgres(pg, text) as db:
        db.execute("INSERT INTO p (code) VALUES ('a'); INSERT INTO c VALUES (1, 'a')")


def test_a_column_changing_family_loses_its_checks_too(pg):
    sql = (
        "CREATE TABLE p (id int PRIMARY KEY);\n"
        "CREATE TABLE c (kind enum('a','b') DEFAULT 'a', FOREIGN KEY (kind) REFERENCES p (id));"
    )
    out = executes_everywhere(pg, sql, "mysql")
    assert line(out["postgres"].text, "kind") == "kind INTEGER REFERENCES p(id)"
    assert out["postgres"].warnings == [
        "c.kind: type TEXT changed to INTEGER to match the foreign keys it shares with p.id; its default 'a' "
        "and its CHECK (kind IN ('a', 'b')) dropped"
    ]
    assert line(out["mysql"].text, "kind") == "kind INTEGER REFERENCES p(id)"


def test_widths_unify_to_the_wider_where_the_target_refuses_them(pg):
    sql = (
        "CREATE TABLE p (id int PRIMARY KEY, amount decimal(8,4) UNIQUE);\n"
        "CREATE TABLE c (pid bigint REFERENCES p(id), small smallint REFERENCES p(id), "
        "amt decimal(12,2) REFERENCES p(amount));"
    )
    out = executes_everywhere(pg, sql, "mysql")
    # PostgreSQL keys integers of any width and numerics of any precision together: untouched
    assert "pid BIGINT REFERENCES p(id)" in out["postgres"].text
    assert "amt DECIMAL(12,2) REFERENCES p(amount)" in out["postgres"].text
    assert not out["postgres"].warnings
    mysql = out["mysql"].text
    assert line(mysql, "id") == "id BIGINT PRIMARY KEY"
    assert line(mysql, "pid") == "pid BIGINT REFERENCES p(id)"
    assert line(mysql, "small") == "small BIGINT REFERENCES p(id)"
    assert line(mysql, "amount") == "amount DECIMAL(14,4) UNIQUE"  # 10 integer digits, 4 decimals
    assert line(mysql, "amt") == "amt DECIMAL(14,4) REFERENCES p(amount)"


def test_chains_widen_to_the_root_and_cycles_settle_on_one_type(pg):
    chain = (
        "CREATE TABLE a (id bigint PRIMARY KEY);\n"
        "CREATE TABLE b (id int PRIMARY KEY REFERENCES a(id));\n"
        "CREATE TABLE c (b_id text REFERENCES b(id));"
    )
    text = executes_everywhere(pg, chain, "postgres")["postgres"].text
    assert "id INTEGER" not in text and line(text, "b_id") == "b_id BIGINT REFERENCES b(id)"
    cycle = (
        "CREATE TABLE a (id text PRIMARY KEY REFERENCES b(id));\n"
        "CREATE TABLE b (id int PRIMARY KEY REFERENCES a(id));"
    )
    res = executes_everywhere(pg, cycle, "postgres")["postgres"]
    assert "id TEXT PRIMARY KEY REFERENCES a(id)" in res.text  # b.id takes a.id's type (first referenced)
    assert any("foreign-key cycle" in w for w in res.warnings)


def test_unify_key_types_leaves_accepted_keys_alone():
    sql = "CREATE TABLE p (id int PRIMARY KEY);\nCREATE TABLE c (pid smallint REFERENCES p(id));"
    for target, spelled in (("postgres", "SMALLINT"), ("sqlite", "INTEGER")):
        res = norm(sql, "postgres", target)
        assert line(res.text, "pid") == f"pid {spelled} REFERENCES p(id)"
        assert not res.warnings


# ---- defaults, transpiled per target --------------------------------------------------------------
BIT_DEFAULTS = [
    ("mysql", "BOOLEAN DEFAULT b'1'", True),
    ("mysql", "BIT(1) DEFAULT b'0'", False),
    ("mysql", "BIT DEFAULT 0x01", True),
    ("mysql", "BOOLEAN DEFAULT 0", False),
    ("tsql", "BIT DEFAULT 0x00", False),
    ("tsql", "BIT DEFAULT ((1))", True),
    ("postgres", "BIT DEFAULT B'1'", True),
    ("postgres", "BOOLEAN DEFAULT '0'::bit", False),
]


@pytest.mark.parametrize(("read", "decl", "value"), BIT_DEFAULTS)
def test_bit_literal_defaults_of_booleans_become_false_and_true(pg, read, decl, value):
    out = executes_everywhere(pg, f"CREATE TABLE t (id int, flag {decl})", read)
    assert line(out["postgres"].text, "flag") == f"flag BOOLEAN DEFAULT {str(value).upper()}"
    with in_postgres(pg, out["postgres"].text) as db:
        db.execute("INSERT INTO t (id) VALUES (1)")
        assert db.execute("SELECT flag FROM t").fetchone()[0] is value
    db = in_sqlite(out["sqlite"].text)
    db.execute("INSERT INTO t (id) VALUES (1)")
    assert db.execute("SELECT flag FROM t").fetchone()[0] == int(value)


def test_bit_and_hex_literal_defaults_of_integers_become_numbers(pg):
    out = executes_everywhere(
        pg, "CREATE TABLE t (id int, f BIT(4) DEFAULT b'0101', n int DEFAULT 0x10)", "mysql"
    )
    assert line(out["postgres"].text, "f") == "f BIGINT DEFAULT 5"
    assert line(out["sqlite"].text, "n") == "n INTEGER DEFAULT 16"  # not the BLOB x'10'


UUID_DEFAULTS = [
    ("mysql", "CHAR(36) DEFAULT (UUID())"),
    ("tsql", "UNIQUEIDENTIFIER DEFAULT NEWID()"),
    ("tsql", "UNIQUEIDENTIFIER DEFAULT NEWSEQUENTIALID()"),
    ("postgres", "UUID DEFAULT uuid_generate_v4()"),
    ("postgres", "UUID DEFAULT public.uuid_generate_v1mc()"),
    ("postgres", "UUID DEFAULT gen_random_uuid()"),
]


@pytest.mark.parametrize(("read", "decl"), UUID_DEFAULTS)
def test_uuid_generators_become_the_targets_own(pg, read, decl):
    out = executes_everywhere(pg, f"CREATE TABLE t (id int, u {decl})", read)
    assert line(out["postgres"].text, "u").endswith(" DEFAULT GEN_RANDOM_UUID()")
    assert line(out["mysql"].text, "u") == "u TEXT DEFAULT (UUID())"
    assert line(out["sqlite"].text, "u") == "u TEXT DEFAULT (LOWER(HEX(RANDOMBLOB(16))))"
    assert any("SQLite has no UUID function" in w for w in out["sqlite"].warnings)
    assert not any("UUID" in w for w in out["postgres"].warnings)
    with in_postgres(pg, out["postgres"].text) as db:
        db.execute("INSERT INTO t (id) VALUES (1), (2)")
        got = [str(uuid.UUID(str(u))) for (u,) in db.execute("SELECT u FROM t")]
        assert len(set(got)) == 2
    db = in_sqlite(out["sqlite"].text)
    db.execute("INSERT INTO t (id) VALUES (1), (2)")
    got = [u for (u,) in db.execute("SELECT u FROM t")]
    assert len(set(got)) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", u) for u in got)


def test_nextval_defaults_become_auto_increment(pg):
    sql = (
        "CREATE TABLE t (\n  id integer DEFAULT nextval('public.t_id_seq'::regclass) NOT NULL,\n"
        "  seq_no bigint DEFAULT nextval(('s'::text)::regclass),\n  ref text DEFAULT 'R' || nextval('r'),\n"
        "  v text,\n  PRIMARY KEY (id)\n);"
    )
    out = executes_everywhere(pg, sql, "postgres")
    pgres, lite = out["postgres"], out["sqlite"]
    assert line(pgres.text, "id") == "id SERIAL PRIMARY KEY"
    assert line(pgres.text, "seq_no") == "seq_no BIGSERIAL"
    assert line(pgres.text, "ref") == "ref TEXT"  # a sequence inside an expression: dropped, reported
    assert any("t.ref: default" in w and "draws from a sequence" in w for w in pgres.warnings)
    assert line(lite.text, "id") == "id INTEGER PRIMARY KEY AUTOINCREMENT"
    assert line(lite.text, "seq_no") == "seq_no INTEGER"
    assert any("t.seq_no: auto-increment dropped (SQLite" in w for w in lite.warnings)
    assert line(out["mysql"].text, "id") == "id INTEGER AUTO_INCREMENT PRIMARY KEY"
    assert any("t.seq_no: auto-increment dropped (MySQL" in w for w in out["mysql"].warnings)
    with in_postgres(pg, pgres.text) as db:
        db.execute("INSERT INTO t (v) VALUES ('a'), ('b')")
        assert db.execute("SELECT id, seq_no FROM t ORDER BY id").fetchall() == [(1, 1), (2, 2)]
    db = in_sqlite(lite.text)
    db.execute("INSERT INTO t (v) VALUES ('a'), ('b')")
    assert [r[0] for r in db.execute("SELECT id FROM t ORDER BY id")] == [1, 2]


def test_tsql_next_value_for_is_a_sequence_default_too(pg):
    out = executes_everywhere(
        pg, "CREATE TABLE t (id int NOT NULL DEFAULT (NEXT VALUE FOR dbo.s) PRIMARY KEY, v int)", "tsql"
    )
    assert line(out["postgres"].text, "id") == "id SERIAL PRIMARY KEY"


def test_auto_increment_dropped_where_sqlite_or_mysql_cannot_count():
    sql = "CREATE TABLE t (a int AUTO_INCREMENT, b int AUTO_INCREMENT UNIQUE, c int, KEY (a), PRIMARY KEY (c, a))"
    res = norm(sql, "mysql", "mysql")
    assert line(res.text, "a") == "a INTEGER" and line(res.text, "b") == "b INTEGER AUTO_INCREMENT UNIQUE"
    assert res.warnings == [
        "t.a: auto-increment dropped (MySQL auto-increments one column per table, and only one that leads a key)"
    ]
    lite = norm(sql, "mysql", "sqlite")
    assert "AUTOINCREMENT" not in lite.text and len(lite.warnings) == 2
    in_sqlite(lite.text).close()


def test_expression_defaults_are_parenthesized_for_sqlite_and_mysql(pg):
    sql = (
        "CREATE TABLE t (\n  id int,\n  d date DEFAULT ('now'::text)::date,\n  n int DEFAULT -1,\n"
        "  s text DEFAULT 'x',\n  ts timestamp DEFAULT now()\n);"
    )
    out = executes_everywhere(pg, sql, "postgres")
    lite, mysql = out["sqlite"].text, out["mysql"].text
    assert line(lite, "d") == "d DATE DEFAULT (DATE((CAST('now' AS TEXT))))"
    assert line(lite, "n") == "n INTEGER DEFAULT -1"
    assert line(lite, "ts") == "ts TIMESTAMP DEFAULT CURRENT_TIMESTAMP"
    assert line(mysql, "d") == "d DATE DEFAULT (CAST((CAST('now' AS CHAR)) AS DATE))"
    assert line(mysql, "s") == "s TEXT DEFAULT ('x')"  # MySQL: TEXT defaults only as expressions
    assert line(mysql, "ts") == "ts DATETIME DEFAULT CURRENT_TIMESTAMP()"
    db = in_sqlite(lite)
    db.execute("INSERT INTO t (id) VALUES (1)")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", db.execute("SELECT d FROM t").fetchone()[0])


def test_sqlite_keeps_cycle_keys_on_their_columns(pg):
    sql = (
        "CREATE TABLE a (id int PRIMARY KEY, b_id int REFERENCES b(id));\n"
        "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a(id));"
    )
    out = executes_everywhere(pg, sql, "postgres")
    assert "ALTER TABLE" in out["postgres"].text and "ALTER TABLE" not in out["sqlite"].text
    assert line(out["sqlite"].text, "b_id") == "b_id INTEGER REFERENCES b(id)"
    assert any("stays on its column" in w for w in out["sqlite"].warnings)
    db = in_sqlite(out["sqlite"].text)
    db.execute("INSERT INTO a VALUES (1, NULL)")
    db.execute("INSERT INTO b VALUES (1, 1)")
    db.execute("UPDATE a SET b_id = 1")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO a VALUES (2, 9)")


def test_rules_are_in_order():
    names = [r.__name__ for r in transforms.RULES]
    assert names.index("infer_key_types") < names.index("map_types") < names.index("unify_key_types")
    assert names.index("sequence_defaults") < names.index("limit_auto_increment") < names.index("map_types")
    assert names.index("unify_key_types") < names.index("bit_literal_defaults")


def test_infer_key_types_alone():
    from hive_data.ddl.build import build_schema
    from hive_data.ddl.split import split_statements

    sql = (
        "CREATE TABLE p (id PRIMARY KEY);\nCREATE TABLE c (pid REFERENCES p(id), q INTEGER REFERENCES p(id));"
    )
    schema = build_schema(split_statements(sql, "sqlite"), "sqlite").schema
    ctx = Context(read="sqlite", target="postgres")
    schema = transforms.infer_key_types(transforms.resolve_references(schema, ctx), ctx)
    assert [str(c.dtype) for t in schema.tables for c in t.columns] == ["INT", "INT", "INT"]


# ---- the corpora ----------------------------------------------------------------------------------
def sqlite_graph(db: sqlite3.Connection):
    """Tables, ordered columns, primary keys and foreign keys as SQLite's catalog holds them."""
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    names = [n for n in names if n != "sqlite_sequence"]
    columns, pks, fks = {}, {}, []
    for table in names:
        info = db.execute(f'PRAGMA table_info("{table}")').fetchall()
        columns[table] = [r[1] for r in info]
        pk = sorted((r[5], r[1]) for r in info if r[5])
        if pk:
            pks[table] = [name for _, name in pk]
        keys: dict[int, list] = {}
        for fk_id, _seq, ref, frm, to, *_ in db.execute(f'PRAGMA foreign_key_list("{table}")'):
            keys.setdefault(fk_id, [ref, [], []])
            keys[fk_id][1].append(frm)
            keys[fk_id][2].append(to)
        fks += [(table, cols, ref, ref_cols) for ref, cols, ref_cols in keys.values()]
    return _graph(columns, pks, fks)


@pytest.mark.corpora
@pytest.mark.parametrize("rel", FILES)
def test_corpus_file_executes_in_sqlite(corpora, rel):
    if rel in REJECTED:
        pytest.skip("rejected on purpose")
    text = (corpora / rel).read_text(encoding="utf-8-sig")
    res = normalize_ddl(text, dialect="sqlite", source=rel)
    assert normalize_ddl(res.text, read="sqlite", dialect="sqlite").text == res.text, "not idempotent"
    db = in_sqlite(res.text)
    assert sqlite_graph(db) == input_graph(text, res.read)
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []  # raises on a key without a unique parent
    db.close()


@pytest.mark.corpora
@pytest.mark.parametrize("rel", FILES)
def test_corpus_file_mysql_output_reads_back(corpora, rel):
    if rel in REJECTED:
        pytest.skip("rejected on purpose")
    res = normalize_ddl((corpora / rel).read_text(encoding="utf-8-sig"), dialect="mysql", source=rel)
    trees = sqlglot.parse(res.text, read="mysql")
    assert len([t for t in trees if t is not None]) == len(res.tables) + res.text.count("\nALTER TABLE ")
    assert normalize_ddl(res.text, read="mysql", dialect="mysql").text == res.text, "not idempotent"
