"""`--verify execute`: a transpiled answer must return what the source answer returns in its own engine.

EXPLAIN proves that PostgreSQL accepts the transpiled answer, not that it means the same: integer
division, string against number comparison, NULL ordering or a case-sensitive LIKE can plan fine and
return something else. So, for rows whose source dialect has an engine here (`ENGINES`: SQLite from
the standard library, PostgreSQL itself), `ExecuteVerifier.check`:

1. synthesizes K databases from the row's canonical schema, seeded by the transpiled answer's
   literals (`hive_data.synth`, the databases hive-eval scores on);
2. loads them into PostgreSQL's sandbox (`hive_data.execute.Executor`) and, for a SQLite source, into
   in-memory SQLite databases (the schema printed for SQLite by the normalizer, the same rows, dates
   and times as the ISO text SQLite applications store), which then only read (`sqlite_guard`);
3. runs the source answer in its engine and the transpiled one in PostgreSQL on each database, under
   the per-query deadline, and compares the results (`hive_data.compare`, bag rule: rows as a
   multiset, row order only when the source orders), after putting both engines' values in one form
   (`neutral`: dates and times as ISO text, booleans as 0/1, as SQLite holds them).

The row is kept only when the results agree on every database; otherwise `check` raises `SQLError`
naming the first database that differs and both results, abbreviated. For a source dialect without
an engine `check` returns False (not verified by execution: the caller falls back to EXPLAIN and
counts the row).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections import OrderedDict

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from hive_core.errors import DDLError, SQLError
from hive_data.compare import orders_rows, results_equal
from hive_data.execute import MAX_ROWS, Executor
from hive_data.sqlite_guard import Deadline, guard, run_query
from hive_data.synth import GoldHints, parse_schema, synthesize_databases

ENGINES = ("sqlite", "postgres")
SHOWN_ROWS = 3  # rows of each result quoted in a reject's reason


def neutral(value: object) -> object:
    """One engine-independent form of a result cell: dates and times as ISO text, booleans as 0/1,
    everything else as the driver returned it (numbers are unified later by `hive_data.compare`)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return value


def _neutral_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(neutral(v) for v in row) for row in rows]


def sqlite_statement(sql: str) -> str:
    """A synthesized PostgreSQL INSERT/UPDATE for SQLite: typed literals (`'2020-01-01'::DATE`) become
    their text, as SQLite applications store dates and times."""
    tree = sqlglot.parse_one(sql, read="postgres")
    for cast in list(tree.find_all(exp.Cast)):
        if isinstance(cast.this, exp.Literal):
            cast.replace(cast.this.copy())
    return tree.sql(dialect="sqlite")


def _abbreviated(rows: list[tuple] | None) -> str:
    if rows is None:
        return "(error)"
    shown = ", ".join(repr(tuple(r)) for r in rows[:SHOWN_ROWS])
    more = f", ... {len(rows)} rows" if len(rows) > SHOWN_ROWS else ""
    return f"[{shown}{more}]"


class ExecuteVerifier:
    """Execution of source and transpiled answers on shared synthesized databases (module docstring).

    `prefix` names the PostgreSQL sandbox role and scratch schemas: give each process its own.
    """

    def __init__(
        self,
        uri: str,
        *,
        databases: int = 3,
        seed: int = 0,
        timeout_ms: int = 5000,
        prefix: str = "hive_vx",
        max_cached: int = 32,
    ):
        self.k, self.seed, self.timeout_ms = int(databases), int(seed), int(timeout_ms)
        self.executor = Executor(
            uri, databases=self.k, seed=self.seed, timeout_ms=self.timeout_ms, prefix=prefix
        )
        self.max_cached = max_cached
        self._sqlite: OrderedDict[str, list[sqlite3.Connection] | SQLError] = OrderedDict()
        self._deadline = Deadline()

    def close(self) -> None:
        for conns in self._sqlite.values():
            if isinstance(conns, list):
                for conn in conns:
                    conn.close()
        self._sqlite.clear()
        self.executor.close()

    def __enter__(self) -> ExecuteVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ SQLite copies

    def sqlite_databases(self, schema: str, gold: str) -> list[sqlite3.Connection]:
        """The K synthesized databases of (schema, gold) in SQLite, built once and then read-only."""
        tables = parse_schema(schema)
        hints = GoldHints.of(gold, tables)
        key = hashlib.blake2b(
            f"{self.seed}\0{self.k}\0{schema}\0{hints.signature()}".encode(), digest_size=8
        ).hexdigest()
        got = self._sqlite.pop(key, None)
        if got is None:
            try:
                got = self._build_sqlite(schema, hints, tables)
            except SQLError as err:
                got = err
        self._sqlite[key] = got  # most recently used last
        if len(self._sqlite) > self.max_cached:
            old = self._sqlite.popitem(last=False)[1]
            for conn in old if isinstance(old, list) else []:
                conn.close()
        if isinstance(got, SQLError):
            raise SQLError(got.reason)
        return got

    def _build_sqlite(self, schema: str, hints: GoldHints, tables) -> list[sqlite3.Connection]:
        from hive_data.ddl import normalize_ddl

        try:
            ddl = normalize_ddl(schema, read="postgres", dialect="sqlite").text
        except DDLError as err:
            raise SQLError(f"schema does not convert to SQLite: {err.reason}") from None
        conns = []
        for db in synthesize_databases(schema, hints, k=self.k, seed=self.seed, tables=tables):
            conn = sqlite3.connect(":memory:")
            try:
                conn.executescript(ddl)
                for stmt in db.statements():
                    try:
                        conn.execute(sqlite_statement(stmt))
                    except (sqlite3.Error, SqlglotError):
                        pass  # a row SQLite refuses (a CHECK it judges otherwise) is left out of it
                conn.commit()
            except sqlite3.Error as err:
                conn.close()
                raise SQLError(f"schema does not execute in SQLite: {err}") from None
            conns.append(guard(conn, self._deadline))
        return conns

    # ------------------------------------------------------------------ one row

    def _source_rows(self, sql: str, read: str, pg_db: str, sqlite_db) -> list[tuple]:
        if read == "sqlite":
            return run_query(sqlite_db, sql, self._deadline, self.timeout_ms, MAX_ROWS)
        out = self.executor.run(sql, pg_db, bound=True)
        if out.error is not None:
            raise SQLError(out.error)
        return out.rows

    def check(self, source_sql: str, read: str, target_sql: str, schema: str) -> bool:
        """True when the source answer (dialect `read`) and the transpiled PostgreSQL answer return
        equal results on every synthesized database; False when `read` has no engine here (not
        verified). Raises SQLError with the reason (which side fails, or where the results differ)."""
        if read not in ENGINES:
            return False
        try:
            ordered = orders_rows(sqlglot.parse_one(source_sql, read=read))
        except SqlglotError as err:
            raise SQLError(f"source answer does not parse: {str(err).splitlines()[0]}") from None
        pg_dbs = self.executor.databases(schema, target_sql)
        lite_dbs = self.sqlite_databases(schema, target_sql) if read == "sqlite" else [None] * len(pg_dbs)
        engine = "SQLite" if read == "sqlite" else "PostgreSQL"
        for i, (pg_db, lite_db) in enumerate(zip(pg_dbs, lite_dbs), 1):
            try:
                want = _neutral_rows(self._source_rows(source_sql, read, pg_db, lite_db))
            except SQLError as err:
                raise SQLError(
                    f"source answer fails in {engine} on synthesized database {i}: {err.reason}"
                ) from None
            got = self.executor.run(target_sql, pg_db, bound=True)
            if got.error is not None:
                raise SQLError(f"transpiled answer fails on synthesized database {i}: {got.error}")
            rows = _neutral_rows(got.rows)
            if not results_equal(want, rows, "bag", ordered=ordered):
                raise SQLError(
                    f"results differ on synthesized database {i}: {engine} {_abbreviated(want)}, "
                    f"PostgreSQL {_abbreviated(rows)}"
                )
        return True
