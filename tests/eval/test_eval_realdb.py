"""Execution on real databases: `--db-dir` (Spider-style SQLite files) and `--db-uri` (a PostgreSQL
database). Right predictions score 1, wrong ones 0; hostile ones (writes, ATTACH, extensions, endless
queries) score 0 within the deadline and leave the data exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from hive_core.errors import ConfigError
from hive_data.execute import MAX_ROWS
from hive_eval.evaluate import EvalConfig, evaluate

# --------------------------------------------------------------------------- SQLite: a Spider-style DIR

DATABASES = {
    "concert": [
        "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT, age INTEGER)",
        "INSERT INTO singer VALUES (1, 'Ann', 'France', 34), (2, 'Bob', 'Peru', 25),"
        " (3, 'Cid', 'France', 41), (4, 'Dee', NULL, 30)",
    ],
    "shop": [
        "CREATE TABLE product (product_id INTEGER PRIMARY KEY, name TEXT, price REAL)",
        "INSERT INTO product VALUES (1, 'pen', 1.5), (2, 'ink', 7.25), (3, 'pad', 3.0)",
    ],
}

ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"

# (gold, prediction, db_id, ex) in dialect sqlite
ROWS = [
    ("SELECT name FROM singer WHERE country = 'France'",
     "SELECT s.name FROM singer AS s WHERE 'France' = s.country", "concert", True),
    ("SELECT name FROM singer WHERE age > 30", "SELECT name FROM singer WHERE age >= 30", "concert", False),
    # gold does not order: any row order is right
    ("SELECT name FROM singer", "SELECT name FROM singer ORDER BY name DESC", "concert", True),
    # gold orders: the order must agree
    ("SELECT name FROM singer ORDER BY age", "SELECT name FROM singer ORDER BY age DESC", "concert", False),
    ("SELECT name, price FROM product WHERE price > 2", "SELECT price, name FROM product WHERE NOT price <= 2",
     "shop", True),
    ("SELECT count(*) FROM product", "SELECT count(*) FROM singer", "shop", False),  # not in this db
    ("SELECT name FROM product", "ATTACH DATABASE 'other.sqlite' AS other", "shop", False),
    ("SELECT name FROM product", "DROP TABLE product", "shop", False),
    ("SELECT name FROM product", "DELETE FROM product", "shop", False),
    ("SELECT count(*) FROM singer", ENDLESS, "concert", False),
    ("SELECT name FROM product", "SELECT load_extension('/tmp/evil')", "shop", False),
    ("SELECT name FROM product", "SELECT name FROM product; DROP TABLE product", "shop", False),
    ("SELECT name FROM product", "SELECT name FROM product", "nowhere", False),  # no such database
]  # fmt: skip


def _digest(root) -> dict:
    """Every file under root (names and contents): journals or changes would show."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def db_dir(tmp_path):
    root = tmp_path / "database"
    for db_id, statements in DATABASES.items():
        (root / db_id).mkdir(parents=True)
        conn = sqlite3.connect(root / db_id / f"{db_id}.sqlite")
        for sql in statements:
            conn.execute(sql)
        conn.commit()
        conn.close()
    return root


def _write(tmp_path, rows, dialect="sqlite"):
    data, preds = tmp_path / "dev.jsonl", tmp_path / "preds.jsonl"
    with open(data, "w") as d, open(preds, "w") as p:
        for i, (gold, pred, db_id, _) in enumerate(rows, 1):
            row = {"question": f"question {i}", "query": gold, "db_id": db_id}
            if dialect:
                row["dialect"] = dialect
            d.write(json.dumps(row) + "\n")
            p.write(json.dumps({"row": i, "prediction": pred}) + "\n")
    return data, preds


def _scored(out):
    return [json.loads(line) for line in open(out / "predictions.jsonl")]


def test_sqlite_dir_scores_on_the_rows_database_and_changes_nothing(tmp_path, db_dir):
    data, preds = _write(tmp_path, ROWS)
    before = _digest(db_dir)
    started = time.monotonic()
    summary = evaluate(
        data, preds, tmp_path / "out", EvalConfig(db_dir=str(db_dir), timeout_ms=300), progress=False
    )
    assert time.monotonic() - started < 10  # the endless query ended at its deadline
    got = _scored(tmp_path / "out")
    assert [r["ex"] for r in got] == [r[3] for r in ROWS]
    by_pred = {r["prediction"]: r for r in got}
    assert by_pred[ENDLESS]["error"] == "timed out after 300 ms" and by_pred[ENDLESS]["valid"] is True
    assert by_pred["DROP TABLE product"]["error"].startswith("not a query")
    loader = by_pred["SELECT load_extension('/tmp/evil')"]
    assert loader["valid"] is False and "load_extension" in loader["error"]  # refused while compiling
    assert got[5]["valid"] is False and "no such table: singer" in got[5]["error"]
    missing = got[-1]
    assert missing["valid"] is None and missing["error"] == f"no database nowhere in {db_dir}"
    assert got[2]["valid"] is True and got[0]["parses"] is True
    assert summary["by"]["db_id"]["concert"]["rows"] == 5
    assert summary["config"]["db_dir"] == str(db_dir) and summary["config"]["db_uri"] is None
    assert _digest(db_dir) == before  # same files, same bytes: no journal, no change


def test_sqlite_guards_hold_past_the_query_check(db_dir, tmp_path):
    """The connection itself (read-only, authorizer, deadline, row cap) refuses what check_query would."""
    from hive_eval.realdb import SqliteDatabases

    before = _digest(db_dir)
    other = tmp_path / "other.sqlite"
    with SqliteDatabases(db_dir, timeout_ms=300) as db:
        for sql in (
            f"ATTACH DATABASE '{other}' AS other",
            "DROP TABLE singer",
            "DELETE FROM singer",
            "INSERT INTO singer VALUES (9, 'x', 'y', 1)",
            "CREATE TEMP TABLE t (a)",
            "PRAGMA query_only = OFF",
            "SELECT load_extension('/tmp/evil')",
            "SELECT * FROM pragma_table_info('singer')",
            "SELECT 1; DROP TABLE singer",
        ):
            assert db.run(sql, "concert").error, sql
        started = time.monotonic()
        assert db.run(ENDLESS, "concert").error == "timed out after 300 ms"
        assert time.monotonic() - started < 1.5
        huge = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r"
        assert db.run(huge, "concert").error == f"more than {MAX_ROWS} rows"
        assert db.run("SELECT count(*) FROM singer", "concert").rows == [(4,)]  # still usable
        assert db.run("SELECT 1", "../concert/concert").error.startswith("no database")  # no paths
    assert _digest(db_dir) == before and not other.exists()


def test_rows_in_another_dialect_are_transpiled_to_sqlite(tmp_path, db_dir):
    rows = [
        ("SELECT name FROM singer WHERE age::int > 30", "SELECT name FROM singer WHERE CAST(age AS INT) > 30",
         "concert", True),
        ("SELECT name FROM singer ORDER BY age DESC NULLS LAST LIMIT 2",
         "SELECT name FROM singer WHERE age IS NOT NULL ORDER BY age DESC LIMIT 2", "concert", True),
        ("SELECT name FROM singer WHERE name ILIKE 'a%'", "SELECT name FROM singer WHERE name = 'Ann'",
         "concert", True),
    ]  # fmt: skip
    data, preds = _write(tmp_path, rows, dialect="postgres")
    evaluate(data, preds, tmp_path / "out", EvalConfig(db_dir=str(db_dir)), progress=False)
    got = _scored(tmp_path / "out")
    assert [r["ex"] for r in got] == [True, True, True], [r["error"] for r in got]


def test_rows_without_a_dialect_are_sqlite_under_db_dir(tmp_path, db_dir):
    rows = [
        (
            "SELECT name FROM product WHERE price > 2",
            "SELECT name FROM product WHERE price > 2.5",
            "shop",
            True,
        )
    ]
    data, preds = _write(tmp_path, rows, dialect=None)
    evaluate(data, preds, tmp_path / "out", EvalConfig(db_dir=str(db_dir)), progress=False)
    (got,) = _scored(tmp_path / "out")
    assert got["kind"] == "sql" and got["ex"] is True and got["valid"] is True


def test_config_errors(tmp_path, db_dir):
    data, preds = _write(tmp_path, ROWS[:1])
    with pytest.raises(ConfigError, match="no such directory"):
        evaluate(data, preds, tmp_path / "out", EvalConfig(db_dir=str(tmp_path / "nope")), progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="exclude each other"):
        EvalConfig(db_dir=str(db_dir), db_uri="postgresql://localhost/x").check()


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "hive_eval.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_cli_db_dir_end_to_end_and_errors(tmp_path, db_dir):
    data, preds = _write(tmp_path, ROWS[:4])
    out = tmp_path / "eval"
    res = _cli(data, "-p", preds, "-o", out, "--db-dir", db_dir, "--no-progress")
    assert res.returncode == 0, res.stderr
    assert [r["ex"] for r in _scored(out)] == [True, False, True, False]
    assert res.stdout.splitlines()[1].split()[:3] == ["all", "4", "50.0%"]

    res = _cli(data, "-p", preds, "-o", out, "--db-dir", tmp_path / "nope")
    assert res.returncode == 1 and "no such directory (--db-dir)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = _cli(data, "-p", preds, "-o", out, "--db-dir", db_dir, "--db-uri", "postgresql://x/y")
    assert res.returncode == 1 and "exclude each other" in res.stderr
    res = _cli("--help")
    assert "--db-dir" in res.stdout and "--db-uri" in res.stdout


# --------------------------------------------------------------------------- PostgreSQL: --db-uri


@pytest.fixture(scope="module")
def shop_pg(pg_uri):
    """A database of its own with a table and rows, and a login role that may only read it:
    (the superuser's URI for it, the reader's URI)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"hive_realdb_{os.getpid()}"
    params = conninfo_to_dict(pg_uri)
    with psycopg.connect(pg_uri, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"DROP ROLE IF EXISTS {name}_reader")
        admin.execute(f"CREATE DATABASE {name}")
        admin.execute(f"CREATE ROLE {name}_reader LOGIN PASSWORD 'secret-pw'")
    admin_uri = make_conninfo(**{**params, "dbname": name})
    with psycopg.connect(admin_uri, autocommit=True) as db:
        db.execute("CREATE TABLE product (product_id int PRIMARY KEY, name text, price numeric(6, 2))")
        db.execute("INSERT INTO product VALUES (1, 'pen', 1.50), (2, 'ink', 7.25), (3, 'pad', 3.00)")
        db.execute(f"GRANT SELECT ON product TO {name}_reader")
    reader_uri = make_conninfo(
        **{**params, "dbname": name, "user": f"{name}_reader", "password": "secret-pw"}
    )
    yield admin_uri, reader_uri
    with psycopg.connect(pg_uri, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {name}_reader")


def _pg_snapshot(admin_uri):
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as db:
        tables = db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {
            t: sorted(map(repr, db.execute(f'SELECT * FROM "{t}"').fetchall())) for (t,) in tables.fetchall()
        }


PG_SLEEP = "SELECT pg_sleep(30)"
PG_WATCHDOG = "SELECT set_config('statement_timeout', '0', true), pg_sleep(30)"
PG_ROWS = [
    ("SELECT name FROM product WHERE price > 2", "SELECT p.name FROM product AS p WHERE NOT p.price <= 2", True),
    ("SELECT name FROM product WHERE price > 2", "SELECT name FROM product WHERE price > 3", False),
    ("SELECT name FROM product", "SELECT name FROM product ORDER BY name", True),
    ("SELECT name FROM product ORDER BY price", "SELECT name FROM product ORDER BY price DESC", False),
    ("SELECT avg(price) FROM product", "SELECT sum(price) / count(price) FROM product", True),
    ("SELECT name FROM product", "SELECT nme FROM product", False),  # does not plan
    ("SELECT name FROM product", "DROP TABLE product", False),
    ("SELECT name FROM product", "COPY (SELECT 1) TO PROGRAM 'touch {marker}'", False),
    ("SELECT name FROM product", "WITH d AS (DELETE FROM product RETURNING *) SELECT name FROM d", False),
    ("SELECT name FROM product", PG_SLEEP, False),
    ("SELECT name FROM product", PG_WATCHDOG, False),
    ("SELECT count(*) FROM product", ENDLESS, False),
    ("SELECT name FROM product", "SELECT query_to_xml('DELETE FROM product RETURNING 1', true, true, '')", False),
    ("SELECT 1", "SELECT pg_advisory_lock(1751742053)", False),
]  # fmt: skip


def test_pg_uri_scores_in_the_users_database_and_changes_nothing(tmp_path, shop_pg):
    import psycopg

    admin_uri, reader_uri = shop_pg
    marker = tmp_path / "pwned"
    rows = [(g, p.format(marker=marker), None, ex) for g, p, ex in PG_ROWS]
    data, preds = _write(tmp_path, rows, dialect="postgres")
    before = _pg_snapshot(admin_uri)
    started = time.monotonic()
    summary = evaluate(
        data, preds, tmp_path / "out", EvalConfig(db_uri=reader_uri, timeout_ms=500), progress=False
    )
    assert time.monotonic() - started < 15  # three queries ran to their deadline, none hung
    got = _scored(tmp_path / "out")
    assert [r["ex"] for r in got] == [r[2] for r in PG_ROWS], [r["error"] for r in got]
    by_pred = {r["prediction"]: r for r in got}
    for sql in (PG_SLEEP, PG_WATCHDOG, ENDLESS):
        assert by_pred[sql]["error"] == "timed out after 500 ms", by_pred[sql]
    assert got[5]["valid"] is False and got[5]["error"].startswith("EXPLAIN:")  # planned in this database
    assert got[0]["valid"] is True
    assert by_pred["DROP TABLE product"]["error"].startswith("not a query")
    assert "DELETE" in got[12]["error"]  # refused by the server: the data below shows nothing changed
    assert _pg_snapshot(admin_uri) == before and not marker.exists()
    with psycopg.connect(admin_uri) as db:  # the advisory lock did not outlive its query
        assert not db.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'").fetchall()
    assert summary["config"]["db_uri"] == "(given)"
    assert "secret-pw" not in (tmp_path / "out" / "summary.json").read_text()


def test_pg_read_only_transaction_holds_even_for_a_superuser(shop_pg):
    from hive_eval.realdb import PostgresDatabase

    admin_uri, _ = shop_pg
    before = _pg_snapshot(admin_uri)
    with pytest.warns(RuntimeWarning, match="superuser"), PostgresDatabase(admin_uri, timeout_ms=500) as db:
        for sql in (
            "DROP TABLE product",
            "DELETE FROM product",
            "INSERT INTO product VALUES (9, 'x', 1)",
            "CREATE TABLE x (a int)",
            "SELECT 1; DROP TABLE product",
        ):
            assert db.run(sql, None).error, sql
        assert db.run("SELECT count(*) FROM product", None).rows == [(3,)]
    assert _pg_snapshot(admin_uri) == before


def test_pg_uri_that_cannot_connect_is_a_config_error(tmp_path):
    from hive_eval.realdb import PostgresDatabase

    with pytest.raises(ConfigError, match="cannot connect to --db-uri"):
        PostgresDatabase("postgresql://nobody:pw@127.0.0.1:1/none")
