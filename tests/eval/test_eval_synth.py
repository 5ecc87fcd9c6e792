"""Synthesized databases: schema reading, gold literals, CHECK evaluation, determinism, and loading
into a real PostgreSQL with every constraint enforced (no row refused)."""

from __future__ import annotations

import csv
import os

import pytest

from hive_data.synth import (
    GoldHints,
    check_passes,
    gold_groups,
    gold_joins,
    gold_literals,
    parse_schema,
    synthesize,
    synthesize_databases,
)

# Every type of the canonical vocabulary, keys of every shape, CHECKs, a generated column, a
# self reference and a foreign-key cycle closed by ALTER TABLE (as hive-data normalize writes it).
SCHEMA = """-- Dialect: postgres
-- Table: dept
CREATE TABLE dept (
  id SERIAL PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  head_id INTEGER,
  budget DECIMAL(8,2) CHECK (budget >= 1000),
  kind TEXT DEFAULT 'x' CHECK (kind IN ('lab', 'office', 'field'))
);

-- Table: employee
CREATE TABLE employee (
  id BIGSERIAL PRIMARY KEY,
  dept_id INTEGER NOT NULL REFERENCES dept(id),
  manager_id BIGINT REFERENCES employee(id),
  "Full Name" TEXT NOT NULL,
  age SMALLINT CHECK (age BETWEEN 18 AND 70),
  rating REAL,
  score DOUBLE PRECISION,
  active BOOLEAN NOT NULL,
  born DATE,
  starts TIME,
  starts_tz TIMETZ,
  hired TIMESTAMP,
  hired_tz TIMESTAMPTZ,
  notice INTERVAL,
  photo BYTEA,
  prefs JSON,
  extra JSONB,
  badge UUID UNIQUE,
  cv XML,
  search TSVECTOR,
  tags TEXT[],
  scores INTEGER[],
  bonus INTEGER GENERATED ALWAYS AS (age * 2) STORED,
  code TEXT CHECK (length(code) <= 3),
  UNIQUE (dept_id, "Full Name"),
  CHECK (rating IS NULL OR rating < 90)
);

-- Table: project
CREATE TABLE project (
  dept_id INTEGER REFERENCES dept(id),
  seq SMALLSERIAL,
  title TEXT,
  PRIMARY KEY (dept_id, seq)
);

-- Table: assignment
CREATE TABLE assignment (
  employee_id BIGINT REFERENCES employee(id),
  dept_id INTEGER NOT NULL,
  seq SMALLINT NOT NULL,
  hours INTEGER NOT NULL CHECK (hours > 0 AND hours <= 40),
  PRIMARY KEY (employee_id, dept_id, seq),
  FOREIGN KEY (dept_id, seq) REFERENCES project(dept_id, seq)
);

-- Foreign keys closing a cycle
ALTER TABLE dept ADD FOREIGN KEY (head_id) REFERENCES employee(id);
"""


def test_parse_schema_reads_keys_types_and_checks():
    tables = parse_schema(SCHEMA)
    assert list(tables) == ["dept", "employee", "project", "assignment"]
    emp = tables["employee"]
    assert emp.primary == ("id",)
    assert ("badge",) in emp.uniques and ("dept_id", "Full Name") in emp.uniques
    assert emp.columns["Full Name"].name == '"Full Name"' and emp.columns["Full Name"].not_null
    assert emp.columns["bonus"].generated
    assert emp.columns["tags"].array and emp.columns["tags"].type_sql == "TEXT[]"
    assert emp.columns["search"].kind == "tsvector"
    assert emp.columns["age"].int_max == 32767
    assert {(fk.columns, fk.table) for fk in emp.fks} == {
        (("dept_id",), "dept"),
        (("manager_id",), "employee"),
    }
    assert tables["dept"].fks[0].closing and tables["dept"].fks[0].table == "employee"
    assert tables["assignment"].fks[1].columns == ("dept_id", "seq")
    assert tables["project"].primary == ("dept_id", "seq")
    assert len(emp.checks) == 1 and len(emp.columns["code"].checks) == 1
    assert tables["dept"].columns["budget"].precision == 8 and tables["dept"].columns["budget"].scale == 2


def test_gold_literals_resolved_through_aliases():
    tables = parse_schema(SCHEMA)
    sql = (
        'SELECT e."Full Name" FROM employee AS e JOIN dept AS d ON e.dept_id = d.id '
        "WHERE d.name = 'Sales' AND e.age > 30 AND 'lab' = d.kind AND e.code LIKE 'A_%' "
        "AND e.hired BETWEEN '2020-01-01' AND '2020-12-31' AND e.rating IN (1.5, 2)"
    )
    lit = gold_literals(sql, tables)
    assert lit[("dept", "name")] == ["Sales"]
    assert lit[("employee", "age")] == [31, 30, 29]  # the value that satisfies `> 30` first
    assert lit[("dept", "kind")] == ["lab"]
    assert lit[("employee", "code")] == ["Ax"]
    assert lit[("employee", "hired")] == ["2020-01-01", "2020-12-31"]
    assert [float(v) for v in lit[("employee", "rating")]] == [1.5, 2.0]
    # an unqualified column goes to the query's table that has it
    assert gold_literals("SELECT 1 FROM project WHERE title = 'x'", tables) == {("project", "title"): ["x"]}
    assert gold_literals("SELEC nonsense (", tables) == {}


def test_gold_literal_on_a_foreign_key_reaches_the_parent():
    hints = GoldHints.of("SELECT * FROM assignment WHERE seq = 7", parse_schema(SCHEMA))
    assert hints.literals[("assignment", "seq")] == [7]
    assert hints.literals[("project", "seq")] == [7]


def test_join_and_group_hints():
    tables = parse_schema(SCHEMA)
    sql = (
        'SELECT d.kind, COUNT(DISTINCT e.age) FROM dept AS d JOIN employee AS e ON d.name = e."Full Name" '
        "GROUP BY d.kind HAVING COUNT(*) > 2"
    )
    assert gold_joins(sql, tables) == [{("dept", "name"), ("employee", "Full Name")}]
    assert gold_groups(sql, tables) == {("dept", "kind"), ("employee", "age")}
    assert gold_groups("SELECT DISTINCT title AS t FROM project", tables) == {("project", "title")}
    # queries that give the same hints (here: none) share their databases
    same = GoldHints.of("SELECT name FROM dept", tables).signature()
    assert same == GoldHints.of("SELECT id FROM employee", tables).signature()
    assert same != GoldHints.of("SELECT id FROM employee WHERE age = 3", tables).signature()


@pytest.mark.parametrize(
    "check, row, ok",
    [
        ("age BETWEEN 18 AND 70", {"age": 18}, True),
        ("age BETWEEN 18 AND 70", {"age": 71}, False),
        ("age BETWEEN 18 AND 70", {"age": None}, True),  # NULL passes a CHECK
        ("kind IN ('lab', 'office')", {"kind": "lab"}, True),
        ("kind IN ('lab', 'office')", {"kind": "x"}, False),
        ("hours > 0 AND hours <= 40", {"hours": 41}, False),
        ("rating IS NULL OR rating < 90", {"rating": 95.0}, False),
        ("length(code) <= 3", {"code": "abcd"}, False),
        ("a < b", {"a": 1, "b": 2}, True),
        ("a < b", {"a": 2, "b": 1}, False),
        ("NOT (a = 1)", {"a": 1}, False),
        ("name LIKE 'A%'", {"name": "Ann"}, True),
        ("name LIKE 'A%'", {"name": "Bob"}, False),
        ("upper(name) = name", {"name": "Bob"}, False),
        ("some_function(a) > 0", {"a": 1}, True),  # unknown forms are left to PostgreSQL
    ],
)
def test_check_passes(check, row, ok):
    import sqlglot

    assert check_passes(sqlglot.parse_one(check, read="postgres"), row) is ok


def test_deterministic_for_a_seed():
    gold = "SELECT name FROM dept WHERE budget > 5000"
    assert synthesize(SCHEMA, gold, k=2, seed=7) == synthesize(SCHEMA, gold, k=2, seed=7)
    assert synthesize(SCHEMA, gold, k=2, seed=7) != synthesize(SCHEMA, gold, k=2, seed=8)
    first, second = synthesize(SCHEMA, gold, k=2, seed=7)
    assert first != second  # the K databases differ from each other


def test_rows_respect_keys_in_python():
    for db in synthesize_databases(SCHEMA, "SELECT 1 FROM employee WHERE age = 30", k=3, seed=1):
        for key, rows in db.rows.items():
            table = db.tables[key]
            assert 1 <= len(rows) <= 8 or key == "assignment"
            for unique in table.unique_keys():
                values = [tuple(r[c] for c in unique) for r in rows if all(r[c] is not None for c in unique)]
                assert len(values) == len(set(map(repr, values)))
            for fk in table.fks:
                if fk.closing:
                    continue
                refs = fk.ref_columns or db.tables[fk.table].primary
                parents = {tuple(p[c] for c in refs) for p in db.rows[fk.table]}
                for r in rows:
                    value = tuple(r[c] for c in fk.columns)
                    assert None in value or value in parents
        assert any(r["age"] == 30 for r in db.rows["employee"])


def _dump(conn, schema: str, tables) -> dict:
    out = {}
    for table in tables.values():
        rows = conn.execute(f"SELECT * FROM {schema}.{table.name}").fetchall()
        out[table.key] = sorted(map(repr, rows))
    return out


@pytest.fixture(scope="module")
def executor(pg_uri):
    from hive_data.execute import Executor

    with Executor(pg_uri, prefix=f"t_synth{os.getpid()}", timeout_ms=3000) as ex:
        yield ex


def test_loads_into_postgres_with_every_constraint(executor, pg_uri):
    import psycopg

    from hive_data.execute import load_database

    gold = 'SELECT e."Full Name" FROM employee AS e WHERE e.age >= 40 AND e.active'
    for i, db in enumerate(synthesize_databases(SCHEMA, gold, k=3, seed=3)):
        name = f"{executor.prefix}_all_{i}"
        report = load_database(executor.sandbox, name, SCHEMA, db.statements())
        assert report.failed == 0 and report.first_error is None, report
        with psycopg.connect(pg_uri, dbname="hive_sandbox") as conn:
            counts = {t: conn.execute(f"SELECT count(*) FROM {name}.{t}").fetchone()[0] for t in db.rows}
            assert counts == {t: len(r) for t, r in db.rows.items()}
            assert counts["dept"] >= 3 and counts["employee"] >= 3
            # the cycle-closing key was filled in after both tables had rows
            heads = conn.execute(f"SELECT count(head_id) FROM {name}.dept").fetchone()[0]
            assert heads >= 1
            kinds = {r[0] for r in conn.execute(f"SELECT kind FROM {name}.dept")}
            assert kinds <= {"lab", "office", "field", None}


def test_fallback_keeps_the_rows_postgres_accepts(executor, pg_uri):
    import psycopg

    from hive_data.execute import load_database

    schema = "-- Dialect: postgres\n-- Table: t\nCREATE TABLE t (\n  a INTEGER CHECK (a % 2 = 0)\n);\n"
    report = load_database(
        executor.sandbox,
        f"{executor.prefix}_fb",
        schema,
        [f"INSERT INTO t (a) VALUES ({n})" for n in range(6)],
    )
    assert report.failed == 3 and "check constraint" in report.first_error
    with psycopg.connect(pg_uri, dbname="hive_sandbox") as conn:
        assert sorted(r[0] for r in conn.execute(f"SELECT a FROM {executor.prefix}_fb.t")) == [0, 2, 4]


def _spider_schemas(corpora):
    from hive_data.ddl import normalize_ddl

    root = corpora / "spider-mysql" / "dataset_mysql" / "databases"
    return {
        d.name: normalize_ddl((d / "schema.sql").read_text(), read="mysql").text
        for d in sorted(root.iterdir())
    }


@pytest.mark.slow
@pytest.mark.corpora
def test_every_spider_schema_loads(corpora, executor):
    """All 157 Spider schemas: 3 databases each load with no statement refused."""
    schemas = _spider_schemas(corpora)
    loaded, refused = 0, []
    for name, text in schemas.items():
        before = len(executor.loads)
        executor.databases(text, None)
        reports = executor.loads[before:]
        if all(r.failed == 0 for r in reports):
            loaded += 1
        else:
            refused.append((name, [r.first_error for r in reports]))
    print(f"spider schemas loaded: {loaded}/{len(schemas)}")
    assert loaded == len(schemas) == 157, refused


@pytest.mark.slow
@pytest.mark.corpora
def test_gold_filters_select_rows_on_most_databases(corpora, executor):
    """Spider train queries with literals in WHERE/HAVING (every 8th): the gold query returns a
    non-empty, non-zero result on at least 80% of the synthesized databases."""
    import sqlglot
    from sqlglot import exp

    from hive_data.verify import transpile_answer

    schemas = _spider_schemas(corpora)
    with open(corpora / "spider-mysql" / "dataset_mysql" / "train_queries.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::8]
    dbs = selecting = queries = everywhere = 0
    for row in rows:
        sql = transpile_answer(row["sql"], "mysql", "postgres", unqualify=True)
        tree = sqlglot.parse_one(sql, read="postgres")
        if not any(node.find(exp.Literal) for node in tree.find_all(exp.Where, exp.Having)):
            continue
        hits = []
        for db in executor.databases(schemas[row["database"]], sql):
            got = executor.gold(sql, db)
            if got.error is not None:  # MySQL semantics PostgreSQL refuses (SUM of text...): not counted
                continue
            hits.append(bool(got.rows) and any(any(v not in (None, 0) for v in r) for r in got.rows))
        dbs, selecting = dbs + len(hits), selecting + sum(hits)
        queries, everywhere = queries + bool(hits), everywhere + (bool(hits) and all(hits))
    share = selecting / dbs
    print(
        f"gold queries selecting rows: {selecting}/{dbs} databases = {share:.3f}; on all K: {everywhere}/{queries}"
    )
    assert share >= 0.8
