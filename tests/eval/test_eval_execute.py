"""Execution accuracy in the sandbox: correct predictions that differ textually from gold score 1,
wrong ones 0, and hostile predictions change nothing and score 0."""

from __future__ import annotations

import os

import pytest

from hive_core.errors import SQLError
from hive_data.execute import MAX_ROWS, bounded, check_query
from hive_eval.scoring import Case, Context, canonical_sql, score, similarity

SCHEMA = """-- Dialect: postgres
-- Table: singer
CREATE TABLE singer (
  singer_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT,
  age INTEGER CHECK (age > 0)
);

-- Table: concert
CREATE TABLE concert (
  concert_id INTEGER PRIMARY KEY,
  singer_id INTEGER REFERENCES singer(singer_id),
  year INTEGER,
  stadium TEXT
);
"""


@pytest.fixture(scope="module")
def ctx(pg_uri):
    from hive_data.execute import Executor

    with Executor(pg_uri, prefix=f"t_exec{os.getpid()}", timeout_ms=500) as ex:
        yield Context(compare="bag", executor_factory=lambda: ex)


def _ex(ctx, gold, pred, compare="bag"):
    ctx.compare = compare
    return score("sql", Case(gold, pred, SCHEMA, "postgres"), ctx)


@pytest.mark.parametrize(
    "gold, pred",
    [
        (
            "SELECT name FROM singer WHERE country = 'France'",
            "SELECT s.name FROM singer AS s WHERE 'France' = s.country",
        ),
        ("SELECT name, age FROM singer WHERE age > 30", "SELECT age, name FROM singer WHERE NOT age <= 30"),
        (
            "SELECT c.stadium FROM concert AS c JOIN singer AS s ON c.singer_id = s.singer_id WHERE s.name = 'Bob'",
            "SELECT concert.stadium FROM singer, concert WHERE singer.singer_id = concert.singer_id AND singer.name = 'Bob'",
        ),
        (
            "SELECT COUNT(*) FROM singer WHERE country IN ('France', 'Peru')",
            "SELECT count(1) FROM singer WHERE country = 'France' OR country = 'Peru'",
        ),
        (
            "SELECT name FROM singer ORDER BY age DESC, singer_id",
            "SELECT name FROM singer ORDER BY age DESC NULLS FIRST, singer_id",
        ),
        ("SELECT AVG(age) FROM singer", "SELECT SUM(age)::float / COUNT(age) FROM singer"),
    ],
)
def test_correct_predictions_that_differ_in_text_score_1(ctx, gold, pred):
    got = _ex(ctx, gold, pred)
    assert got["ex"] is True and got["valid"] is True and got["parses"] is True, got["error"]
    assert got["exact_text"] is False


@pytest.mark.parametrize(
    "gold, pred",
    [
        (
            "SELECT name FROM singer WHERE country = 'France'",
            "SELECT name FROM singer WHERE country = 'Peru'",
        ),
        ("SELECT name FROM singer WHERE age > 30", "SELECT name FROM singer WHERE age >= 30"),
        ("SELECT DISTINCT country FROM singer", "SELECT country FROM singer"),
        (
            "SELECT name FROM singer ORDER BY age, singer_id",
            "SELECT name FROM singer ORDER BY age DESC, singer_id",
        ),
        ("SELECT name FROM singer", "SELECT name, age FROM singer"),
        ("SELECT name FROM singer", "SELECT nme FROM singer"),  # does not plan: invalid, wrong
    ],
)
def test_wrong_predictions_score_0(ctx, gold, pred):
    got = _ex(ctx, gold, pred)
    assert got["ex"] is False and got["error"]


def test_set_rule_ignores_duplicates_bag_does_not(ctx):
    gold, pred = "SELECT DISTINCT country FROM singer", "SELECT country FROM singer"
    assert _ex(ctx, gold, pred, "set")["ex"] is True
    assert _ex(ctx, gold, pred, "bag")["ex"] is False
    # set keeps column order, bag does not
    assert _ex(ctx, "SELECT name, age FROM singer", "SELECT age, name FROM singer", "set")["ex"] is False
    assert _ex(ctx, "SELECT name, age FROM singer", "SELECT age, name FROM singer", "bag")["ex"] is True


def test_exact_is_canonical_not_textual(ctx):
    got = _ex(ctx, "SELECT name FROM singer WHERE age > 3", "select  NAME\nfrom Singer where AGE > 3")
    assert got["exact"] is True and got["exact_text"] is False and got["ex"] is True
    assert canonical_sql("SELECT a AS x FROM t", "postgres") != canonical_sql(
        "SELECT a AS y FROM t", "postgres"
    )


def test_similarity_bounds():
    assert similarity("SELECT 1", "SELECT   1") == 1.0
    assert similarity("abc", "xyz") == 0.0
    assert 0 < similarity("SELECT a FROM t", "SELECT b FROM t") < 1


def test_missing_and_unparsable_predictions(ctx):
    got = _ex(ctx, "SELECT name FROM singer", None)
    assert got["ex"] is False and got["error"] == "no prediction" and got["similarity"] == 0.0
    got = _ex(ctx, "SELECT name FROM singer", "SELEC name FROM singer")
    assert (got["parses"], got["valid"], got["ex"]) == (False, False, False)


def test_absurd_nesting_is_wrong_not_a_crash(ctx):
    got = _ex(ctx, "SELECT 1", "SELECT " + "(" * 20000 + "1" + ")" * 20000)
    assert got["ex"] is False and got["error"]


def test_gold_that_fails_scores_wrong_with_reason(ctx):
    got = _ex(ctx, "SELECT 1 / (age - age) FROM singer", "SELECT 1")
    assert got["ex"] is False and "gold query fails" in got["error"]


def test_json_scorer():
    c = Context()
    got = score("json", Case('{"a": [1, 2]}', '{ "a":[1,2] }'), c)
    assert got["parses"] and got["exact"] and not got["exact_text"]
    got = score("json", Case('{"a": 1}', "{a: 1}"), c)
    assert not got["parses"] and not got["exact"] and got["error"].startswith("not JSON")


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM singer",
        "INSERT INTO singer VALUES (99, 'x', 'y', 1)",
        "UPDATE singer SET name = 'x'",
        "DROP TABLE singer",
        "COPY singer TO PROGRAM 'touch /tmp/hive_eval_pwned'",
        "WITH d AS (DELETE FROM singer RETURNING *) SELECT * FROM d",
        "SELECT * INTO stolen FROM singer",
        "SELECT * FROM singer FOR UPDATE",
        "TRUNCATE singer",
        "SET search_path TO public",
        "SELECT 1; DROP TABLE singer",
    ],
)
def test_check_query_refuses_non_queries(sql):
    with pytest.raises(SQLError):
        check_query(sql)


def _snapshot(ctx, names):
    admin = ctx.executor.sandbox.admin
    out = {}
    for name in names:
        for (table,) in admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (name,)
        ).fetchall():
            out[(name, table)] = sorted(
                map(repr, admin.execute(f'SELECT * FROM {name}."{table}"').fetchall())
            )
    return out


HOSTILE = [
    "DROP TABLE singer",
    "DELETE FROM singer",
    "INSERT INTO singer VALUES (99, 'x', 'y', 1)",
    "UPDATE singer SET name = 'x'",
    "TRUNCATE singer",
    "COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
    "SELECT pg_sleep(1000)",
    "SELECT set_config('statement_timeout', '0', false), pg_sleep(1000)",  # the watchdog still ends it
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "SELECT set_config('search_path', 'public', false)",
    "WITH d AS (DELETE FROM singer RETURNING *) SELECT name FROM d",
    "SELECT pg_advisory_lock(1751742053)",
    "SELECT name FROM singer; DROP TABLE singer",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT query_to_xml('DELETE FROM singer RETURNING 1', true, true, '')",
    "SELECT * FROM generate_series(1, 100000000)",  # would fill the client's memory: capped
]


def test_hostile_predictions_change_nothing_and_score_wrong(ctx, tmp_path):
    gold = "SELECT name FROM singer"
    names = ctx.executor.databases(SCHEMA, gold)
    before = _snapshot(ctx, names)
    assert before and all(before.values())
    marker = tmp_path / "pwned"
    for sql in HOSTILE:
        got = _ex(ctx, gold, sql.format(marker=marker))
        assert got["ex"] is False, sql
    assert _snapshot(ctx, names) == before
    assert not marker.exists()
    # the session is clean: search_path and locks did not outlive their transactions
    admin = ctx.executor.sandbox.admin
    assert not admin.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'").fetchall()
    assert _ex(ctx, gold, "SELECT name FROM singer")["ex"] is True


def test_sandbox_refuses_writes_even_past_the_gate(ctx, tmp_path):
    """The read-only transaction and the role, not only check_query, keep the data intact."""
    names = ctx.executor.databases(SCHEMA, "SELECT name FROM singer")
    before = _snapshot(ctx, names)
    marker = tmp_path / "pwned"
    for sql in (
        "DELETE FROM singer",
        "DROP TABLE singer",
        "INSERT INTO singer VALUES (99, 'x', 'y', 1)",
        f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "CREATE TABLE x (a int)",
    ):
        assert ctx.executor.run(sql, names[0]).error is not None, sql
    assert _snapshot(ctx, names) == before
    assert not marker.exists()


def test_bounded_keeps_order_and_survives_trailing_semicolons_and_comments(ctx):
    db = ctx.executor.databases(SCHEMA, None)[0]
    plain = ctx.executor.run("SELECT name FROM singer ORDER BY name DESC, singer_id", db).rows
    for text in (
        "SELECT name FROM singer ORDER BY name DESC, singer_id;",
        "SELECT name FROM singer ORDER BY name DESC, singer_id -- newest first",
        "SELECT name FROM singer ORDER BY name DESC, singer_id ; -- done\n;",
    ):
        assert bounded(text).endswith(f"LIMIT {MAX_ROWS + 1}")
        assert ctx.executor.run(text, db, bound=True).rows == plain
    got = ctx.executor.run("SELECT * FROM generate_series(1, 1000000)", db, bound=True)
    assert got.error == f"more than {MAX_ROWS} rows"


def test_timeout_never_hangs(ctx):
    import time

    started = time.monotonic()
    got = ctx.executor.run("SELECT pg_sleep(1000)", ctx.executor.databases(SCHEMA, None)[0])
    assert "timed out" in got.error and time.monotonic() - started < 5
