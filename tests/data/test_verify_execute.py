"""`--verify execute` on its own: a transpiled answer is kept only when it returns, in PostgreSQL, what
the source answer returns in its own engine, on the same synthesized databases."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_core.errors import SQLError
from hive_data.verify_execute import ExecuteVerifier, neutral, sqlite_value

SCHEMA = """-- Dialect: postgres
CREATE TABLE artist (id INTEGER PRIMARY KEY, name TEXT NOT NULL, born DATE, score NUMERIC(5, 2), active BOOLEAN,
  seen TIMESTAMP);
CREATE TABLE album (id INTEGER PRIMARY KEY, artist_id INTEGER REFERENCES artist (id), title TEXT, tracks INTEGER);
"""


@pytest.fixture(scope="module")
def verifier(pg_uri):
    with ExecuteVerifier(pg_uri, prefix="hive_vx_test") as v:
        yield v


def to_pg(sql: str) -> str:
    """The answer as normalize writes it: transpiled, and coerced against the schema."""
    from hive_data.verify import transpile_coerced

    return transpile_coerced(sql, "sqlite", "postgres", SCHEMA)[0]


def test_values_meet_in_one_form():
    assert neutral(True) == 1 and neutral(False) == 0
    assert neutral(dt.date(2020, 1, 2)) == "2020-01-02"
    assert neutral(dt.datetime(2020, 1, 2, 3, 4, 5)) == "2020-01-02 03:04:05"
    assert neutral("2020-01-02") == "2020-01-02" and neutral(3) == 3
    # synthesized values are stored as SQLite applications store them: dates and times as ISO text
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (d DATE, ts TIMESTAMP, b BOOLEAN, n NUMERIC, j TEXT)")
    values = [dt.date(2020, 1, 2), dt.datetime(2020, 1, 2, 3, 4, 5), True, Decimal("2.50"), {"b": 1, "a": 2}]
    conn.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", [sqlite_value(v) for v in values])
    assert conn.execute("SELECT * FROM t").fetchall() == [
        ("2020-01-02", "2020-01-02 03:04:05", 1, 2.5, '{"a": 2, "b": 1}')
    ]


@pytest.mark.parametrize(
    "source",
    [
        "SELECT name, born FROM artist WHERE score > 3.5 ORDER BY born",
        "SELECT a.name, COUNT(*) FROM artist a JOIN album b ON a.id = b.artist_id GROUP BY a.id, a.name",
        "SELECT name FROM artist WHERE born > '2010-01-01'",
        "SELECT strftime('%Y', seen), COUNT(*) FROM artist GROUP BY 1",
        "SELECT id / 2, tracks / 3 FROM album",  # integer division in both engines
        "SELECT active, seen FROM artist",
        "SELECT AVG(score), SUM(tracks) FROM artist, album",
        "SELECT name || ' (' || id || ')' FROM artist",
    ],
)
def test_faithful_answers_agree(verifier, source):
    assert verifier.check(source, "sqlite", to_pg(source), SCHEMA) is True


def test_a_different_meaning_is_caught_and_shown(verifier):
    from hive_data.verify import transpile_answer

    # SQLite's LIKE ignores ASCII case, PostgreSQL's does not: the transpiled syntax alone plans and
    # returns other rows; the coercion rule (ILIKE) makes it agree
    source = "SELECT name FROM artist WHERE name LIKE 'b%'"
    plain = transpile_answer(source, "sqlite", "postgres")
    assert "LIKE" in plain and "ILIKE" not in plain
    with pytest.raises(
        SQLError, match=r"results differ on synthesized database \d: SQLite \[.*\], PostgreSQL \["
    ):
        verifier.check(source, "sqlite", plain, SCHEMA)
    assert verifier.check(source, "sqlite", to_pg(source), SCHEMA) is True
    # a timestamp compared with a date string: text comparison in SQLite, midnight in PostgreSQL
    source = "SELECT id FROM artist WHERE seen >= '2016-07-17'"
    assert "CAST(seen AS TEXT)" in to_pg(source)
    assert verifier.check(source, "sqlite", to_pg(source), SCHEMA) is True
    # a transpiled answer that returns other rows than the source's
    with pytest.raises(SQLError, match="results differ"):
        verifier.check(
            "SELECT id FROM album", "sqlite", "SELECT id FROM album WHERE tracks > 1000000", SCHEMA
        )


def test_failures_name_their_side_and_unknown_engines_are_not_verified(verifier):
    with pytest.raises(SQLError, match="source answer fails in SQLite"):
        verifier.check("SELECT nope FROM artist", "sqlite", "SELECT id FROM artist", SCHEMA)
    with pytest.raises(SQLError, match="transpiled answer fails"):
        verifier.check("SELECT id FROM artist", "sqlite", "SELECT nope FROM artist", SCHEMA)
    # PostgreSQL sources run in PostgreSQL on both sides
    assert verifier.check("SELECT id FROM artist", "postgres", "SELECT id FROM artist", SCHEMA) is True
    # no MySQL engine here: not verified by execution (the caller falls back to EXPLAIN)
    assert verifier.check("SELECT id FROM artist", "mysql", "SELECT id FROM artist", SCHEMA) is False


def test_hostile_source_answers_are_contained_in_sqlite(verifier):
    for source in (
        "ATTACH DATABASE '/tmp/hive-vx-attack.db' AS x",
        "DELETE FROM artist",
        "SELECT load_extension('x')",
    ):
        with pytest.raises(SQLError, match="source answer fails in SQLite"):
            verifier.check(source, "sqlite", "SELECT 1", SCHEMA)
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT COUNT(*) FROM r"
    with pytest.raises(SQLError, match="timed out"):
        verifier.check(endless, "sqlite", "SELECT 1", SCHEMA)
    # the databases are intact: the same answer still agrees
    assert verifier.check("SELECT COUNT(*) FROM artist", "sqlite", "SELECT COUNT(*) FROM artist", SCHEMA)


# ------------------------------------------------------------------------- property

COLUMNS = {"id": "int", "name": "text", "born": "date", "score": "num", "tracks": "int", "title": "text"}
LITERALS = {
    "int": st.integers(-3, 40).map(str),
    "num": st.sampled_from(["0", "2.5", "3.5", "10"]),
    "text": st.sampled_from(["'Bob'", "'b'", "'London'", "''"]),
    "date": st.sampled_from(["'2010-01-01'", "'2020-06-30'"]),
}
ARTIST = ["id", "name", "born", "score"]
ALBUM = ["id", "title", "tracks"]


@st.composite
def sqlite_queries(draw) -> str:
    """SELECTs over the test schema in SQLite's dialect: projections, comparisons with literals,
    aggregates with GROUP BY, a join on the foreign key, ORDER BY over every output column, LIMIT."""
    join = draw(st.booleans())
    table, cols = ("album", ALBUM) if not join and draw(st.booleans()) else ("artist", ARTIST)
    pool = [f"a.{c}" for c in ARTIST] + [f"b.{c}" for c in ALBUM] if join else cols
    source = "artist a JOIN album b ON a.id = b.artist_id" if join else table
    where = ""
    if draw(st.booleans()):
        col = draw(st.sampled_from(pool))
        kind = COLUMNS[col.split(".")[-1]]
        ops = ["=", "<>", "<", ">=", "IS NULL", "IS NOT NULL"] + (["LIKE"] if kind == "text" else [])
        op = draw(st.sampled_from(ops))
        value = (
            draw(st.sampled_from(["'b%'", "'B%'", "'%o%'", "'bob'"]))
            if op == "LIKE"
            else draw(LITERALS[kind])
        )
        where = f" WHERE {col} {op}" + ("" if "NULL" in op else f" {value}")
    if draw(st.booleans()):  # grouped
        key = draw(st.sampled_from(pool))
        agg = draw(st.sampled_from(["COUNT(*)", "MIN({})", "MAX({})", "COUNT({})"]))
        agg = agg.format(draw(st.sampled_from(pool)))
        return f"SELECT {key}, {agg} FROM {source}{where} GROUP BY {key} ORDER BY 1, 2"
    chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    order = " ORDER BY " + ", ".join(f"{i} NULLS FIRST" for i in range(1, len(chosen) + 1))
    limit = f" LIMIT {draw(st.integers(1, 5))}" if draw(st.booleans()) else ""
    return f"SELECT {', '.join(chosen)} FROM {source}{where}{order if (limit or draw(st.booleans())) else ''}{limit}"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=sqlite_queries())
def test_whenever_both_engines_accept_a_query_their_results_agree(verifier, query):
    try:
        target = to_pg(query)
    except SQLError:
        return  # not transpiled: nothing is kept
    try:
        verifier.check(query, "sqlite", target, SCHEMA)
    except SQLError as err:
        assert "results differ" not in err.reason, (query, target, err.reason)


def test_the_property_generator_reaches_every_shape():
    # the generator above covers joins, groups, filters and limits (checked on a sample of its output)
    seen = set()

    @settings(max_examples=200, deadline=None)
    @given(query=sqlite_queries())
    def collect(query):
        sqlglot.parse_one(query, read="sqlite")
        seen.update(k for k in ("JOIN", "GROUP BY", "WHERE", "LIMIT", "ORDER BY", "LIKE") if k in query)

    collect()
    assert seen == {"JOIN", "GROUP BY", "WHERE", "LIMIT", "ORDER BY", "LIKE"}


def test_ordered_results_agree_on_their_sort_keys_and_ties_may_come_in_any_order():
    from hive_data.verify_execute import agree, order_columns, with_order_keys

    limited = sqlglot.parse_one("SELECT name FROM t ORDER BY n DESC LIMIT 2", read="sqlite")
    assert with_order_keys(limited).sql() == "SELECT name, n FROM t ORDER BY n DESC LIMIT 2"
    keys = [1]  # the appended sort key
    assert agree([("a", 3), ("b", 3)], [("b", 3), ("a", 3)], limited, keys)  # a tie, either order
    assert not agree([("a", 3), ("b", 2)], [("b", 2), ("a", 3)], limited, keys)  # the keys out of order
    assert agree([("a", 3), ("b", 3)], [("c", 3), ("a", 3)], limited, keys)  # LIMIT cut among ties
    unlimited = sqlglot.parse_one("SELECT name FROM t ORDER BY n DESC", read="sqlite")
    assert not agree([("a", 3), ("b", 3)], [("c", 3), ("a", 3)], unlimited, keys)  # other rows
    # keys that are outputs need nothing appended; DISTINCT would change the rows, so it stays strict
    assert order_columns(sqlglot.parse_one("SELECT name, n AS k FROM t ORDER BY k, 1")) == [1, 0]
    assert with_order_keys(sqlglot.parse_one("SELECT DISTINCT name FROM t ORDER BY n")) is None
    assert not agree([("a",), ("b",)], [("b",), ("a",)], unlimited)  # unknown keys: row by row
