"""Answer verification: transpiling with the schema's identifier policy, parse checks, EXPLAIN in a real
PostgreSQL without side effects."""

from __future__ import annotations

import time

import psycopg
import pytest

from hive_core.errors import SQLError
from hive_data.verify import ExplainVerifier, guess_read, parse_statement, schema_key, transpile_answer

SCHEMA = """-- Dialect: postgres
-- Table: customers
CREATE TABLE customers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  city TEXT
);

-- Table: orders
CREATE TABLE orders (
  id INTEGER PRIMARY KEY,
  customer_id INTEGER REFERENCES customers(id),
  total DECIMAL(10,2)
);
"""


@pytest.fixture
def verifier(pg_uri):
    with ExplainVerifier(pg_uri, timeout_ms=2000, prefix="hive_test") as v:
        yield v


# ---------------------------------------------------------------- transpile and parse


def test_mysql_answer_transpiles_to_postgres():
    out = transpile_answer(
        'SELECT `name`, IFNULL(`city`, "none") FROM `customers` WHERE `id` > 1 LIMIT 2, 3',
        "mysql",
        "postgres",
    )
    assert out == "SELECT name, COALESCE(city, 'none') FROM customers WHERE id > 1 LIMIT 3 OFFSET 2"


def test_identifier_policy_quotes_only_what_needs_it():
    # the schema keeps case and quotes only reserved words / special names; answers must agree
    out = transpile_answer("SELECT `Order`, `Total Sales`, `FacID` FROM `Faculty`", "mysql", "postgres")
    assert out == 'SELECT "Order", "Total Sales", FacID FROM Faculty'


def test_parse_errors_have_line_and_col():
    with pytest.raises(SQLError, match="does not parse as mysql") as err:
        transpile_answer("SELECT a\nFROM t WHERE", "mysql", "postgres")
    assert err.value.line == 2 and err.value.col is not None
    with pytest.raises(SQLError, match="2 statements"):
        transpile_answer("SELECT 1; SELECT 2", "mysql", "postgres")
    with pytest.raises(SQLError, match="empty answer"):
        transpile_answer("  ", "mysql", "postgres")


def test_mysql_only_syntax_is_rejected():
    # sqlglot falls back to an opaque Command for REPLACE INTO: never passed through
    with pytest.raises(SQLError, match="unsupported REPLACE syntax"):
        transpile_answer("REPLACE INTO t VALUES (1)", "mysql", "postgres")
    # ON DUPLICATE KEY UPDATE is carried over verbatim (and sqlglot's postgres parser reads it back)
    with pytest.raises(SQLError, match="transpiled answer does not parse as postgres") as err:
        transpile_answer("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = 2", "mysql", "postgres")
    assert err.value.step == "parse"
    # backticks are not PostgreSQL
    with pytest.raises(SQLError, match="does not parse as postgres"):
        transpile_answer("SELECT `a` FROM t", "postgres", "postgres")


def test_guess_read():
    assert guess_read("SELECT `a` FROM t") == "mysql"
    assert guess_read("SELECT [Order Id] FROM [dbo].[t]") == "tsql"
    assert guess_read("SELECT ARRAY[1, 2]") == "postgres"
    assert guess_read("SELECT a FROM t") == "postgres"


# ---------------------------------------------------------------- EXPLAIN


def test_explain_accepts_good_answers(verifier):
    verifier.explain("SELECT name FROM customers WHERE city = 'Paris'", SCHEMA)
    verifier.explain(
        "SELECT c.name, SUM(o.total) FROM customers AS c JOIN orders AS o ON o.customer_id = c.id GROUP BY c.name",
        SCHEMA,
    )
    verifier.explain("UPDATE customers SET city = 'Rome' WHERE id = 1", SCHEMA)
    assert len(verifier.schemas) == 1  # one scratch schema for the table set


def test_explain_rejects_unknown_columns_with_position(verifier):
    with pytest.raises(SQLError, match=r'EXPLAIN: column "email" does not exist') as err:
        verifier.explain("SELECT name,\n  email FROM customers", SCHEMA)
    assert (err.value.line, err.value.col) == (2, 3)
    with pytest.raises(SQLError, match=r'relation "products" does not exist'):
        verifier.explain("SELECT * FROM products", SCHEMA)


def test_explain_rejects_type_errors_and_group_by(verifier):
    with pytest.raises(SQLError, match="operator does not exist"):
        verifier.explain("SELECT * FROM customers WHERE name > 5", SCHEMA)
    with pytest.raises(SQLError, match="must appear in the GROUP BY clause"):
        verifier.explain("SELECT name, city, COUNT(*) FROM customers GROUP BY name", SCHEMA)


def test_each_schema_is_isolated(verifier):
    other = "-- Dialect: postgres\n-- Table: t\nCREATE TABLE t (\n  a INTEGER\n);\n"
    verifier.explain("SELECT a FROM t", other)
    with pytest.raises(SQLError, match='relation "t" does not exist'):
        verifier.explain("SELECT a FROM t", SCHEMA)
    assert len({schema_key(SCHEMA), schema_key(other)}) == 2


def test_schema_that_does_not_execute(verifier):
    broken = "CREATE TABLE a (x INTEGER REFERENCES nowhere(id));"
    with pytest.raises(SQLError, match="schema does not execute in PostgreSQL"):
        verifier.explain("SELECT x FROM a", broken)
    with pytest.raises(SQLError, match="schema does not execute"):  # remembered, not retried
        verifier.explain("SELECT x FROM a", broken)


def test_side_effects_never_happen(verifier, pg_uri, tmp_path):
    verifier.explain("SELECT 1 FROM customers", SCHEMA)
    name = verifier.schema(SCHEMA)
    marker = tmp_path / "pwned"
    for answer in (
        "DROP TABLE customers",
        f"COPY customers FROM PROGRAM 'touch {marker}'",
        "TRUNCATE orders",
    ):
        with pytest.raises(SQLError, match="EXPLAIN cannot verify"):
            verifier.explain(answer, SCHEMA)
    # EXPLAIN plans but never runs: the sleep does not happen, the insert leaves nothing behind
    start = time.perf_counter()
    verifier.explain("SELECT pg_sleep(30)", SCHEMA)
    verifier.explain("INSERT INTO customers (id, name) VALUES (1, 'x')", SCHEMA)
    verifier.explain("DELETE FROM customers", SCHEMA)
    assert time.perf_counter() - start < 5
    assert not marker.exists()
    conn = verifier.sandbox.admin  # the scratch schemas live in the sandbox's own database
    assert conn.execute(f'SELECT count(*) FROM "{name}".customers').fetchone() == (0,)
    assert conn.execute(f"SELECT to_regclass('\"{name}\".orders') IS NOT NULL").fetchone() == (True,)
    # and the connection is clean after every failure
    assert verifier.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_statement_timeout(pg_uri):
    # immutable functions of constants are folded while planning, so EXPLAIN alone can burn time
    slow = "SELECT md5(repeat(md5(repeat('x', 100000000)), 3000000)) FROM t"
    with ExplainVerifier(pg_uri, timeout_ms=50, prefix="hive_to") as v:
        start = time.perf_counter()
        with pytest.raises(SQLError, match="EXPLAIN timed out after 50 ms"):
            v.explain(slow, "CREATE TABLE t (a INTEGER);")
        assert time.perf_counter() - start < 2
        v.explain("SELECT a FROM t", "CREATE TABLE t (a INTEGER);")


def test_parse_statement_rejects_commands():
    with pytest.raises(SQLError, match="unsupported"):
        parse_statement("REPLACE INTO t VALUES (1)", "mysql")
    assert parse_statement("SELECT 1", "postgres").key == "select"


def test_bare_mysql_joins_become_cross_joins():
    # MySQL binds `a JOIN b JOIN c ON ...` left to right; a comma would put t1 out of the ON's scope
    out = transpile_answer(
        "SELECT t3.name FROM a AS t1 JOIN b AS t2 JOIN c AS t3 ON t1.x = t2.x AND t1.y = t3.y",
        "mysql",
        "postgres",
    )
    assert out == "SELECT t3.name FROM a AS t1 CROSS JOIN b AS t2 JOIN c AS t3 ON t1.x = t2.x AND t1.y = t3.y"
    # a lone comma join stays a comma join
    assert transpile_answer("SELECT * FROM a, b", "mysql", "postgres") == "SELECT * FROM a, b"


def test_schema_qualifiers_follow_the_schema():
    sql = "SELECT `c`.`name` FROM `world_1`.`city` AS `c` WHERE `world_1`.`city`.`id` = 1"
    assert (
        transpile_answer(sql, "mysql", "postgres", unqualify=True)
        == "SELECT c.name FROM city AS c WHERE city.id = 1"
    )
    assert transpile_answer(sql, "mysql", "postgres").startswith("SELECT c.name FROM world_1.city AS c")


def test_kept_spider_style_answer_passes_explain(verifier):
    schema = "-- Dialect: postgres\n-- Table: Student\nCREATE TABLE Student (\n  StuID INTEGER PRIMARY KEY,\n  LName TEXT\n);\n"
    # MySQL backticks preserve case; the canonical policy leaves plain names unquoted so both fold alike
    verifier.explain(
        transpile_answer("SELECT `LName` FROM `Student` WHERE `StuID` = 1", "mysql", "postgres"), schema
    )


def test_scratch_schemas_are_bounded(pg_uri):
    with ExplainVerifier(pg_uri, prefix="hive_cap", max_schemas=3) as v:
        for i in range(6):
            v.explain(f"SELECT a{i} FROM t", f"CREATE TABLE t (a{i} INTEGER);")
        assert len(v.schemas) == 3
        left = v.conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'hive_cap_%'").fetchone()
        assert left == (3,)
        v.explain("SELECT a0 FROM t", "CREATE TABLE t (a0 INTEGER);")  # evicted ones come back on demand


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT `Order`, `Total Sales`, `FacID`, `1st` FROM `Faculty` AS `f` WHERE `f`.`select` = 1",
        "SELECT COUNT(*) FROM `world_1`.`city` JOIN `country` USING (`Code`)",
    ],
)
def test_in_place_policy_matches_the_copying_policy(sql):
    from hive_data.ddl import apply_identifier_policy

    for dialect in ("postgres", "mysql", "sqlite"):
        original = parse_statement(sql, "mysql")
        before = original.sql(dialect="mysql")
        expected = apply_identifier_policy(original, dialect).sql(dialect=dialect)
        assert original.sql(dialect="mysql") == before  # the copying form leaves its input alone
        in_place = apply_identifier_policy(parse_statement(sql, "mysql"), dialect, copy=False)
        assert in_place.sql(dialect=dialect) == expected


@pytest.mark.parametrize("sql", ["SELEC name FROM t", "SELEC a", "name", "1 + 1", "x AS y"])
def test_bare_expressions_are_not_answers(sql):
    # sqlglot reads a lone expression happily (`SELEC a` is the column SELEC aliased a)
    with pytest.raises(SQLError, match="not a statement|does not parse"):
        transpile_answer(sql, "mysql", "postgres")
