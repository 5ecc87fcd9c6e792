"""Schema-aware coercion (`hive_data.coerce`): each rule fires where the source engine converted types
implicitly and nowhere else, and the rewritten answer gives the source engine's result in PostgreSQL.

MySQL results are written out from MySQL's documented conversions (a string compared with or added to
a number is read as its numeric prefix, 0 when it has none); SQLite results come from running the
original answer in SQLite itself, on the same rows."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlglot

from hive_data.coerce import LABELS, RULES, Unfaithful, coerce
from hive_data.coerce.convert import number_literal, reads_as, sqlite_text, string_value
from hive_data.coerce.typed import typed_schema
from hive_data.normalize_rows import iter_output, normalize_dataset, rejects_path
from hive_data.verify import transpile_answer, transpile_coerced

SCHEMA = """-- Dialect: postgres
-- Table: shop
CREATE TABLE shop (
  id INTEGER PRIMARY KEY,
  name TEXT,
  zip TEXT,
  staff TEXT,
  open_year INTEGER,
  score DECIMAL(5,2),
  flag BOOLEAN,
  opened DATE,
  seen TIMESTAMP
);

-- Table: sale
CREATE TABLE sale (
  id INTEGER PRIMARY KEY,
  shop_id INTEGER,
  amount INTEGER,
  code TEXT
);
"""

SHOPS = [  # id, name, zip, staff, open_year, score, flag, opened, seen
    (1, "a", "10", "3", 2010, 1.5, True, "2016-03-01", "2016-01-02 03:04:05"),
    (2, "b", "9", "4.5", 2011, 2.0, False, "2017-01-01", "2017-05-06 00:00:00"),
    (3, "c", "012", "x", 2016, None, True, "2016-12-31", None),
    (4, "d", "abc", None, None, 0.0, False, None, None),
    (5, "e", "12abc", "2abc", 2011, 5.5, True, None, None),
    (6, "f", None, " 1e1", 2020, None, None, None, None),
    (7, "g", "", "", 1999, None, False, None, None),
]
SALES = [(1, 2, 7, "2011"), (2, 0, 5, "x"), (3, 1, 4, "10"), (4, 1, 1, None)]  # id, shop_id, amount, code


def run(sql: str, read: str = "mysql") -> tuple[str, list[str]]:
    return transpile_coerced(sql, read, "postgres", SCHEMA, unqualify=True)


@pytest.fixture
def shop_db(pg_conn):
    """The schema's tables as temporary tables holding SHOPS and SALES (rolled back after the test)."""
    body = SCHEMA.replace("CREATE TABLE", "CREATE TEMP TABLE")
    for stmt in body.split(";"):
        if "CREATE" in stmt:
            pg_conn.execute(stmt)
    pg_conn.cursor().executemany("INSERT INTO shop VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", SHOPS)
    pg_conn.cursor().executemany("INSERT INTO sale VALUES (%s, %s, %s, %s)", SALES)
    return pg_conn


def rows(conn, sql: str) -> list[tuple]:
    return [tuple(float(v) if hasattr(v, "as_integer_ratio") else v for v in r) for r in conn.execute(sql)]


# ---------------------------------------------------------------- each rule against MySQL's results

MYSQL_CASES = [
    # text compared with a number: the string's numeric prefix ('012' = 12, '12abc' = 12, 'abc' = 0)
    ("SELECT id FROM shop WHERE zip > 9 ORDER BY id", ["text=number"], [(1,), (3,), (5,)]),
    ("SELECT id FROM shop WHERE zip = 12 ORDER BY id", ["text=number"], [(3,), (5,)]),
    ("SELECT id FROM shop WHERE zip = 0 ORDER BY id", ["text=number"], [(4,), (7,)]),
    (
        "SELECT id FROM shop WHERE zip IN (9, 10) OR zip BETWEEN 11 AND 11 ORDER BY id",
        ["text=number"],
        [(1,), (2,)],
    ),
    (
        "SELECT t.id FROM sale AS t JOIN shop AS s ON s.zip = t.amount + 6 ORDER BY t.id",
        ["text=number"],
        [(3,)],
    ),
    ("SELECT staff * 2 FROM shop WHERE id IN (2, 6) ORDER BY id", ["text=number"], [(9.0,), (20.0,)]),
    # numeric aggregates over text: 3 + 4.5 + 0 ('x') + 2 ('2abc') + 10 (' 1e1') + 0 ('') over 6 non-NULL
    ("SELECT SUM(staff), AVG(staff), MIN(staff) FROM shop", ["sum(text)"], [(19.5, 3.25, "")]),
    (
        "SELECT name FROM shop GROUP BY name HAVING SUM(staff) > 4 ORDER BY name",
        ["sum(text)"],
        [("b",), ("f",)],
    ),
    # flags are the integers 0 and 1
    ("SELECT id FROM shop WHERE flag = 1 ORDER BY id", ["boolean=integer"], [(1,), (3,), (5,)]),
    ("SELECT id FROM shop WHERE flag <> 1 ORDER BY id", ["boolean=integer"], [(2,), (4,), (7,)]),
    ("SELECT id FROM shop WHERE flag > 0 AND flag < 2 ORDER BY id", ["boolean=integer"], [(1,), (3,), (5,)]),
    ("SELECT SUM(flag), MAX(flag) FROM shop", ["boolean=integer"], [(3, 1)]),
    (
        "SELECT id FROM shop WHERE flag = 'yes' ORDER BY id",
        ["boolean=integer"],
        [(2,), (4,), (7,)],
    ),  # 'yes' is 0
    # string literals compared with numbers: 'null' and '' are 0, '2011abc' is 2011
    ("SELECT id FROM shop WHERE open_year = '2011abc' ORDER BY id", ["'string'=number"], [(2,), (5,)]),
    ("SELECT id FROM shop WHERE score = '' ORDER BY id", ["'string'=number"], [(4,)]),
    ("SELECT id FROM shop WHERE id IN ('1', 'null') ORDER BY id", ["'string'=number"], [(1,)]),
    ("SELECT id FROM shop WHERE open_year = '2011.0' ORDER BY id", ["'string'=number"], [(2,), (5,)]),
    # LIKE on dates, timestamps, numbers and flags matches their text
    ("SELECT id FROM shop WHERE opened LIKE '2016%' ORDER BY id", ["LIKE non-text"], [(1,), (3,)]),
    ("SELECT id FROM shop WHERE seen LIKE '% 03:04:%' ORDER BY id", ["LIKE non-text"], [(1,)]),
    (
        "SELECT id FROM shop WHERE open_year LIKE '201%' AND NOT flag LIKE '0' ORDER BY id",
        ["LIKE non-text"],
        [(1,), (3,), (5,)],
    ),
    # set operations: text wins, numbers compared as their text; flags beside numbers are integers
    (
        "SELECT open_year FROM shop INTERSECT SELECT code FROM sale ORDER BY 1",
        ["set-op types"],
        [(None,), ("2011",)],  # NULL rows match too
    ),
    (
        "SELECT flag FROM shop WHERE id = 1 UNION SELECT amount FROM sale WHERE id = 4",
        ["set-op types"],
        [(1,)],
    ),
    # SELECT DISTINCT over groups: every row is one group already
    (
        "SELECT DISTINCT s.name FROM shop AS s JOIN sale AS t ON s.id = t.shop_id "
        "GROUP BY s.name ORDER BY COUNT(*) DESC",
        ["DISTINCT ORDER BY"],
        [("a",), ("b",)],
    ),
    # several rules on one answer, in RULES order
    (
        "SELECT COUNT(*) FROM shop WHERE zip > (SELECT AVG(staff) FROM shop)",
        ["sum(text)", "text=number"],
        [(4,)],  # 10, 9, 012 and 12abc are above 3.25
    ),
]


@pytest.mark.parametrize(("sql", "fired", "expected"), MYSQL_CASES)
def test_rules_give_mysql_results(shop_db, sql, fired, expected):
    out, got = run(sql)
    assert got == fired
    assert rows(shop_db, out) == expected


def test_integer_division_is_left_to_sqlglot(shop_db):
    """MySQL's `/` never truncates and gives NULL for a zero divisor; sqlglot already prints it so."""
    out, fired = run("SELECT amount / shop_id FROM sale ORDER BY id")
    assert fired == [] and out.startswith("SELECT CAST(amount AS DOUBLE PRECISION) / NULLIF(shop_id, 0)")
    assert rows(shop_db, out) == [(3.5,), (None,), (4.0,), (1.0,)]


def test_rewrites_read_plainly_where_they_can():
    assert run("SELECT id FROM shop WHERE flag = 1 OR flag IN (0, 1)")[0] == (
        "SELECT id FROM shop WHERE flag = TRUE OR flag IN (FALSE, TRUE)"
    )
    assert run("SELECT id FROM shop WHERE flag > 0")[0] == "SELECT id FROM shop WHERE CAST(flag AS INT) > 0"
    assert run("SELECT id FROM shop WHERE id = 'null'")[0] == "SELECT id FROM shop WHERE id = 0"
    assert run("SELECT id FROM shop WHERE opened LIKE '2016%'")[0] == (
        "SELECT id FROM shop WHERE CAST(opened AS TEXT) LIKE '2016%'"
    )
    assert run("SELECT open_year FROM shop UNION SELECT zip FROM shop")[0] == (
        "SELECT CAST(open_year AS TEXT) FROM shop UNION SELECT zip FROM shop"
    )
    assert run("SELECT DISTINCT name FROM shop GROUP BY name ORDER BY COUNT(*)")[0] == (
        "SELECT name FROM shop GROUP BY name ORDER BY COUNT(*) NULLS FIRST"
    )


# ---------------------------------------------------------------- no rule fires on well-typed answers

WELL_TYPED = [
    "SELECT id FROM shop WHERE name = 'x' AND open_year = 5 AND zip = '94002'",
    "SELECT id FROM shop WHERE flag = TRUE OR flag OR flag = '1'",
    "SELECT SUM(open_year), AVG(score), MIN(zip), MAX(name), COUNT(staff) FROM shop",
    "SELECT id FROM shop WHERE open_year = '2010' AND score > '1.5' AND id IN ('1', ' 2')",
    "SELECT id FROM shop WHERE name LIKE 'a%' AND zip LIKE '9%'",
    "SELECT name FROM shop UNION SELECT code FROM sale UNION SELECT 'x'",
    "SELECT DISTINCT name FROM shop ORDER BY name",
    "SELECT DISTINCT name AS n FROM shop ORDER BY n DESC",
    "SELECT id, name FROM shop GROUP BY id",  # functionally dependent on the primary key
    "SELECT s.id, s.name, COUNT(*) FROM shop AS s JOIN sale AS t ON s.id = t.shop_id GROUP BY s.id",
    "SELECT name, COUNT(*) FROM shop GROUP BY name HAVING COUNT(*) > 1 ORDER BY COUNT(*) DESC",
    "SELECT open_year AS y, COUNT(*) FROM shop GROUP BY y",
    "SELECT s.name, (SELECT COUNT(*) FROM sale WHERE shop_id = s.id) FROM shop AS s",
    "SELECT name FROM shop AS s WHERE 2 < (SELECT COUNT(*) FROM sale WHERE sale.shop_id = s.id)",
    "SELECT open_year + 1, score * 2, amount / 2 FROM shop JOIN sale ON shop.id = sale.shop_id",
    "SELECT name FROM nosuch WHERE zip = 5",  # cannot be typed: left to EXPLAIN
    "INSERT INTO sale (id, code) VALUES (1, 2)",
]


@pytest.mark.parametrize("sql", WELL_TYPED)
def test_well_typed_answers_stay_byte_identical(sql):
    assert run(sql) == (transpile_answer(sql, "mysql", "postgres", unqualify=True), [])


def test_only_mysql_and_sqlite_into_postgres_with_a_typed_schema_are_coerced():
    sql = "SELECT id FROM shop WHERE zip = 5"
    for read, target, schema in (
        ("postgres", "postgres", SCHEMA),  # PostgreSQL's own answer: its errors are real
        ("tsql", "postgres", SCHEMA),  # no rules written for T-SQL's conversions
        ("mysql", "mysql", SCHEMA),  # the rules write PostgreSQL
        ("mysql", "postgres", "-- Dialect: postgres\n-- no table here\n"),
    ):
        tree = sqlglot.parse_one(sql, read=read)
        before = tree.sql(dialect=target)
        assert coerce(tree, schema, read, target) == (tree, [])
        assert tree.sql(dialect=target) == before


# ---------------------------------------------------------------- what has no faithful form

LOOSE = "GROUP BY selects columns not determined by the grouping keys (MySQL picks an arbitrary row)"
UNGROUPED = "aggregate query without GROUP BY"
UNFAITHFUL = [
    ("SELECT name, open_year FROM shop GROUP BY name", f"{LOOSE}: shop.open_year"),
    (
        "SELECT t.code, COUNT(*) FROM shop AS s JOIN sale AS t ON s.id = t.shop_id GROUP BY s.id",
        f"{LOOSE}: t.code",
    ),
    (
        "SELECT name, COUNT(*) FROM shop",
        f"{UNGROUPED} selects columns it does not aggregate (MySQL picks an arbitrary row): shop.name",
    ),
    (
        "SELECT SUM(amount) FROM sale ORDER BY code DESC LIMIT 3",
        f"{UNGROUPED} uses columns in ORDER BY that it does not aggregate (MySQL picks an arbitrary row): "
        "sale.code",
    ),
    (
        "SELECT name FROM shop GROUP BY name HAVING open_year > 3",
        "HAVING uses columns not determined by the grouping keys (MySQL picks an arbitrary row): "
        "shop.open_year",
    ),
    (
        "SELECT DISTINCT name FROM shop ORDER BY open_year",
        "SELECT DISTINCT is ordered by an expression it does",
    ),
]


@pytest.mark.parametrize(("sql", "reason"), UNFAITHFUL)
def test_what_has_no_faithful_form_is_rejected_with_the_construct(sql, reason):
    with pytest.raises(Unfaithful) as err:
        run(sql)
    assert err.value.reason.startswith(reason) and err.value.step == "coerce"


# ---------------------------------------------------------------- SQLite: its own answer is the truth

SQLITE_CASES = [
    ("SELECT id FROM shop WHERE zip > 9 ORDER BY id", "zip > '9'"),  # TEXT affinity: compared as text
    ("SELECT id FROM shop WHERE zip = 10 OR zip IN (12, 9) ORDER BY id", "zip = '10'"),
    (
        "SELECT t.id FROM sale AS t JOIN shop AS s ON s.zip = t.amount + 6 ORDER BY t.id",
        "s.zip = CAST(t.amount + 6 AS TEXT)",
    ),
    (
        "SELECT t.id FROM sale AS t JOIN shop AS s ON s.zip = t.amount ORDER BY t.id",
        "THEN CAST(s.zip AS DOUBLE",
    ),
    ("SELECT s.id, t.id FROM sale AS t JOIN shop AS s ON s.zip > t.amount ORDER BY 1, 2", "'Infinity'"),
    (
        "SELECT s.id FROM shop AS s JOIN sale AS t ON t.amount >= s.zip WHERE t.id = 1 ORDER BY 1",
        "'Infinity'",
    ),
    ("SELECT id FROM shop WHERE open_year = '2011.0' ORDER BY id", "open_year = 2011"),
    ("SELECT SUM(staff), AVG(staff) FROM shop", "SUM(CAST(COALESCE(SUBSTRING(staff"),
    ("SELECT id FROM shop WHERE opened LIKE '2016%' ORDER BY id", "CAST(opened AS TEXT) ILIKE"),
    ("SELECT amount / 2 FROM sale ORDER BY id", "amount / NULLIF(2, 0)"),  # integral between integers
    # dates and times are text in SQLite: '2017-05-06 00:00:00' > '2017-05-06' as text, not as time
    ("SELECT id FROM shop WHERE seen > '2017-05-06' ORDER BY id", "CAST(seen AS TEXT) > '2017-05-06'"),
    (
        "SELECT id FROM shop WHERE opened BETWEEN '2016-01-01' AND '2016-12-31' ORDER BY id",
        "CAST(opened AS TEXT)",
    ),
    # SQLite's LIKE ignores ASCII case
    ("SELECT id FROM shop WHERE name LIKE 'A%' OR name NOT LIKE '_' ORDER BY id", "name ILIKE 'A%'"),
]


@pytest.fixture(scope="module")
def sqlite_db():
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA.replace("DECIMAL(5,2)", "REAL"))
    shops = [(*s[:6], None if s[6] is None else int(s[6]), *s[7:]) for s in SHOPS]
    db.executemany("INSERT INTO shop VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", shops)
    db.executemany("INSERT INTO sale VALUES (?, ?, ?, ?)", SALES)
    yield db
    db.close()


@pytest.mark.parametrize(("sql", "fragment"), SQLITE_CASES)
def test_sqlite_answers_give_sqlite_results(shop_db, sqlite_db, sql, fragment):
    out, _ = run(sql, "sqlite")
    assert fragment in out
    assert rows(shop_db, out) == [
        tuple(float(v) if isinstance(v, float) else v for v in r) for r in sqlite_db.execute(sql)
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM shop WHERE id = 'null'",  # SQLite: a number never equals a non-numeric string
        "SELECT open_year FROM shop UNION SELECT zip FROM shop",  # 5 and '5' are different rows
        "SELECT id FROM shop WHERE SUBSTR(zip, 1, 2) = 12",  # no affinity on either side: never equal
    ],
)
def test_sqlite_comparisons_by_storage_class_are_rejected(sql):
    with pytest.raises(Unfaithful):
        run(sql, "sqlite")


# ---------------------------------------------------------------- the pieces


def test_mysql_string_to_number():
    assert [str(string_value(s)) for s in ("12abc", " 3.5e2x", "abc", "", "-.5", "1,000", "0x1A")] == [
        "12", "3.5E+2", "0", "0", "-0.5", "1", "0",
    ]  # fmt: skip
    assert [number_literal(string_value(s)).sql() for s in ("3.5e2", "12.50", "-7")] == ["350", "12.50", "-7"]
    assert (
        reads_as(" 12 ", integer=True)
        and not reads_as("12.0", integer=True)
        and reads_as("1e3", integer=False)
    )
    assert not reads_as("NaN", integer=False)  # PostgreSQL reads NaN, MySQL reads 0
    assert [sqlite_text(sqlglot.parse_one(n)).name for n in ("5", "-3", "2.5", "1e3")] == [
        "5", "-3", "2.5", "1000.0",
    ]  # fmt: skip


def test_typed_schema_reads_types_and_primary_keys():
    schema = typed_schema(
        'CREATE TABLE a (id INTEGER PRIMARY KEY, "Name" TEXT);\n'
        "CREATE TABLE b (x INTEGER, y INTEGER, z BOOLEAN, PRIMARY KEY (x, y));\n"
    )
    assert schema.keys == {("a",): frozenset({"id"}), ("b",): frozenset({"x", "y"})}
    assert schema.names["Name"] == frozenset({"text"}) and schema.names["z"] == frozenset({"boolean"})
    assert typed_schema("CREATE TABLE s.a (id INTEGER);\nCREATE TABLE b (id INTEGER);") is None  # mixed depth


def test_rules_are_labelled_once():
    assert len(set(LABELS)) == len(RULES) and all(callable(r) for r in RULES)


# ---------------------------------------------------------------- in the normalize pipeline

CONTEXT = (
    "CREATE TABLE `shop` (`id` INT NOT NULL, `name` VARCHAR(20), `zip` VARCHAR(10), `flag` BOOLEAN, "
    "PRIMARY KEY (`id`));"
)
ANSWERS = [
    "SELECT `name` FROM `shop` WHERE `zip` = 94002",
    "SELECT `name` FROM `shop` WHERE `flag` = 1",
    "SELECT `name` FROM `shop`",
    "SELECT `name`, `zip` FROM `shop` GROUP BY `name`",
]


def test_normalize_counts_and_marks_coerced_rows(tmp_path, pg_uri):
    src = tmp_path / "rows.jsonl"
    with open(src, "w", encoding="utf-8") as fh:
        for i, sql in enumerate(ANSWERS):
            fh.write(json.dumps({"sql_prompt": f"question {i}", "sql_context": CONTEXT, "sql": sql}) + "\n")
    out = tmp_path / "out.jsonl"
    opts = {"read": "mysql", "verify": "explain", "pg_uri": pg_uri, "num_proc": 1, "progress": False}
    s = normalize_dataset(src, out, **opts)
    assert (s.rows_out, dict(s.rejected)) == (3, {"coerce": 1})
    assert s.coerced == {"text=number": 1, "boolean=integer": 1}
    assert "coercions (kept rows per rule): boolean=integer 1, text=number 1" in s.text()
    kept = list(iter_output(out))
    assert [r.get("coerced") for r in kept] == [["text=number"], ["boolean=integer"], None]
    assert kept[1]["sql"] == "SELECT name FROM shop WHERE flag = TRUE"
    assert kept[2]["sql"] == "SELECT name FROM shop" and "coerced" not in kept[2]
    reject = json.loads(open(rejects_path(out), encoding="utf-8").read())
    assert reject["row"] == 4 and reject["reason"].startswith("GROUP BY selects columns not determined")

    plain = normalize_dataset(src, tmp_path / "plain.jsonl", coerce=False, **opts)
    assert (plain.rows_out, dict(plain.rejected), plain.coerced) == (1, {"explain": 3}, {})
    assert "coercions" not in plain.text()


def test_sqlite_only_rules_leave_mysql_answers_alone():
    # MySQL has temporal types (it reads the string as PostgreSQL does); its LIKE follows the
    # column's collation, which the schema does not say: neither rule fires
    for sql in ("SELECT id FROM shop WHERE seen > '2017-05-06'", "SELECT id FROM shop WHERE name LIKE 'A%'"):
        out, fired = run(sql, "mysql")
        assert fired == [] and "CAST" not in out and "ILIKE" not in out
    _, fired = run("SELECT id FROM shop WHERE seen > '2017-05-06' AND name LIKE 'A%'", "sqlite")
    assert fired == ["temporal=text", "LIKE case"]
