"""`--verify execute`: a transpiled answer must return what the source answer returns in its own engine.

EXPLAIN proves that PostgreSQL accepts the transpiled answer, not that it means the same: integer
division, string against number comparison, NULL ordering or a case-sensitive LIKE can plan fine and
return something else. So, for rows whose source dialect has an engine here (`ENGINES`: SQLite from
the standard library, PostgreSQL itself), `ExecuteVerifier.check`:

1. synthesizes K databases from the row's canonical schema, seeded by the transpiled answer's
   literals (`hive_data.synth`, the databases hive-eval scores on);
2. loads them into PostgreSQL's sandbox (`hive_data.execute.Executor`) and, for a SQLite source, into
   in-memory SQLite databases (the schema printed for SQLite by the normalizer, the same rows as
   parameters, `sqlite_value`: dates and times as the ISO text SQLite applications store), which
   then only read (`sqlite_guard`);
3. runs the source answer in its engine and the transpiled one in PostgreSQL on each database, under
   the per-query deadline, and compares the results (`agree`: rows as a multiset; when the source
   orders, the sort keys in the same order, ties in any order, and under LIMIT any of the tied rows),
   after putting both engines' values in one form (`neutral`: dates and times as ISO text, booleans
   as 0/1, as SQLite holds them).

The row is kept only when the results agree on every database; otherwise `check` raises `SQLError`
naming the first database that differs and both results, abbreviated. For a source dialect without
an engine `check` returns False (not verified by execution: the caller falls back to EXPLAIN and
counts the row).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import OrderedDict
from decimal import Decimal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from hive_core.errors import DDLError, SQLError
from hive_data.compare import normalize_value, orders_rows, results_equal
from hive_data.execute import MAX_ROWS, Executor
from hive_data.sqlite_guard import Deadline, guard, run_query
from hive_data.synth import GoldHints, parse_schema, row_identity, synthesize_databases

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


def sqlite_value(value: object) -> object:
    """A synthesized value as SQLite applications store it: dates and times as ISO text, booleans as
    0/1, decimals as reals, JSON as its text; numbers, text, bytes and NULL as they are."""
    if value is None or isinstance(value, (int, float, str, bytes)):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)  # dates, times, UUIDs: str() is their ISO text


def _tolerant(conn: sqlite3.Connection, sql: str, params: list) -> None:
    """Run one synthesized statement; a row SQLite refuses (a CHECK it judges otherwise) is left out,
    as PostgreSQL's loader leaves out the rows it refuses."""
    try:
        conn.execute(sql, [sqlite_value(v) for v in params])
    except sqlite3.IntegrityError:
        pass


def order_columns(tree: exp.Expr) -> list[int] | None:
    """Output positions of the top-level ORDER BY keys (a position, an output name, or an output
    expression itself), or None when some key is not an output column."""
    order = tree.args.get("order")
    if order is None:
        return None
    outputs = tree.selects
    names = [o.alias_or_name for o in outputs]
    plain = [(o.this if isinstance(o, exp.Alias) else o).sql() for o in outputs]
    found = []
    for ordered in order.expressions:
        key = ordered.this
        if isinstance(key, exp.Literal) and key.is_int and 1 <= int(key.this) <= len(outputs):
            found.append(int(key.this) - 1)
        elif isinstance(key, exp.Column) and not key.table and key.name in names:
            found.append(names.index(key.name))
        elif key.sql() in plain:
            found.append(plain.index(key.sql()))
        else:
            return None
    return found


def with_order_keys(tree: exp.Expr) -> exp.Expr | None:
    """A copy of the query with its top-level ORDER BY expressions appended to its outputs, so that
    the sort keys of each row can be compared; None when that would change the rows (DISTINCT, set
    operations) or there is nothing to append."""
    order = tree.args.get("order")
    if not isinstance(tree, exp.Select) or order is None or tree.args.get("distinct"):
        return None
    out = tree.copy()
    keys = [o.this.copy() for o in order.expressions]
    return out.select(*keys, copy=False)


def agree(want: list[tuple], got: list[tuple], tree: exp.Expr, keys: list[int] | None = None) -> bool:
    """Whether two results of the query `tree` (the source's) say the same. Unordered: equal as
    multisets of rows. Ordered by output columns (or `keys`: the positions of the sort keys, appended
    by `with_order_keys` after the `len(tree.selects)` outputs): the sort keys in the same sequence
    (rows tied on them may come in any order), and the outputs equal as multisets, except under
    LIMIT, where the engine may cut among tied rows. Ordered by anything else: equal row by row."""
    if not orders_rows(tree):
        return results_equal(want, got, "bag")
    cols = keys if keys is not None else order_columns(tree)
    if cols is None:
        return results_equal(want, got, "bag", ordered=True)

    def sort_keys(rows: list[tuple]) -> list[tuple]:
        return [tuple(normalize_value(row[i]) for i in cols) for row in rows]

    if sort_keys(want) != sort_keys(got):
        return False
    if tree.args.get("limit") is not None:
        return True
    width = len(tree.selects)
    return results_equal([r[:width] for r in want], [r[:width] for r in got], "bag")


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
        self._ddl: dict[str, str | SQLError] = {}  # canonical schema -> its SQLite text
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

    def sqlite_databases(self, key: str, schema: str, gold: str, dbs=None) -> list[sqlite3.Connection]:
        """The K synthesized databases of (schema, gold) in SQLite (`key`: the executor's name for the
        set; `dbs`: the set when the executor just synthesized it), built once and then read-only."""
        got = self._sqlite.pop(key, None)
        if got is None:
            try:
                if dbs is None:  # evicted here but not in PostgreSQL: the same rows again (deterministic)
                    tables = parse_schema(schema)
                    hints = GoldHints.of(gold, tables)
                    dbs = synthesize_databases(schema, hints, k=self.k, seed=self.seed, tables=tables)
                got = [guard(self._sqlite_copy(schema, db), self._deadline) for db in dbs]
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

    def _sqlite_ddl(self, schema: str) -> str:
        from hive_data.ddl import normalize_ddl

        if schema not in self._ddl:
            if len(self._ddl) >= self.max_cached:
                self._ddl.pop(next(iter(self._ddl)))
            try:
                self._ddl[schema] = normalize_ddl(schema, read="postgres", dialect="sqlite").text
            except DDLError as err:
                self._ddl[schema] = SQLError(f"schema does not convert to SQLite: {err.reason}")
        got = self._ddl[schema]
        if isinstance(got, SQLError):
            raise SQLError(got.reason)
        return got

    def _sqlite_copy(self, schema: str, db) -> sqlite3.Connection:
        """One synthesized database in a new in-memory SQLite database (still writable)."""
        conn = sqlite3.connect(":memory:")
        try:
            conn.executescript(self._sqlite_ddl(schema))
            for table, cols, values in db.inserts():
                names = ", ".join(c.name for c in cols)
                marks = ", ".join("?" * len(cols))
                _tolerant(conn, f"INSERT INTO {table.name} ({names}) VALUES ({marks})", values)
            for table, row, values in db.updates():
                sets = ", ".join(f"{table.columns[c].name} = ?" for c in values)
                ident = row_identity(table, row)
                where = " AND ".join(f"{table.columns[c].name} IS ?" for c in ident)
                _tolerant(
                    conn,
                    f"UPDATE {table.name} SET {sets} WHERE {where}",
                    [*values.values()] + [row[c] for c in ident],
                )
            conn.commit()
        except (sqlite3.Error, SQLError) as err:
            conn.close()
            reason = err.reason if isinstance(err, SQLError) else str(err)
            raise SQLError(f"schema does not execute in SQLite: {reason}") from None
        return conn

    # ------------------------------------------------------------------ one row

    def _source_rows(self, sql: str, read: str, pg_db: str, sqlite_db) -> list[tuple]:
        if read == "sqlite":
            return run_query(sqlite_db, sql, self._deadline, self.timeout_ms, MAX_ROWS)
        out = self.executor.run(sql, pg_db, bound=True)
        if out.error is not None:
            raise SQLError(out.error)
        return out.rows

    @staticmethod
    def _ordered_forms(tree, source_sql: str, read: str, target_sql: str):
        """(source, target, key positions): both queries with their sort keys appended when the source
        orders by something that is not an output column, else as written with no positions."""
        if not orders_rows(tree) or order_columns(tree) is not None:
            return source_sql, target_sql, None
        try:
            source = with_order_keys(tree)
            target = with_order_keys(sqlglot.parse_one(target_sql, read="postgres"))
        except SqlglotError:
            return source_sql, target_sql, None
        if source is None or target is None or len(source.selects) != len(target.selects):
            return source_sql, target_sql, None
        width = len(tree.selects)
        keys = list(range(width, len(source.selects)))
        return source.sql(dialect=read), target.sql(dialect="postgres"), keys

    def _results(self, i: int, engine: str, source: str, read: str, target: str, pg_db, lite_db, quiet=False):
        """(source rows, target rows) on database `i`, values in one form. A failing side raises
        SQLError naming it; with `quiet`, the result is None instead."""
        try:
            want = _neutral_rows(self._source_rows(source, read, pg_db, lite_db))
        except SQLError as err:
            if quiet:
                return None
            raise SQLError(
                f"source answer fails in {engine} on synthesized database {i}: {err.reason}"
            ) from None
        got = self.executor.run(target, pg_db, bound=True)
        if got.error is not None:
            if quiet:
                return None
            raise SQLError(f"transpiled answer fails on synthesized database {i}: {got.error}")
        return want, _neutral_rows(got.rows)

    def check(self, source_sql: str, read: str, target_sql: str, schema: str) -> bool:
        """True when the source answer (dialect `read`) and the transpiled PostgreSQL answer return
        equal results on every synthesized database; False when `read` has no engine here (not
        verified). Raises SQLError with the reason (which side fails, or where the results differ)."""
        if read not in ENGINES:
            return False
        try:
            tree = sqlglot.parse_one(source_sql, read=read)
        except SqlglotError as err:
            raise SQLError(f"source answer does not parse: {str(err).splitlines()[0]}") from None
        built: dict = {}
        pg_dbs = self.executor.databases(schema, target_sql, built=lambda key, dbs: built.update({key: dbs}))
        key = self.executor.last_key
        if read == "sqlite":
            lite_dbs = self.sqlite_databases(key, schema, target_sql, built.get(key))
        else:
            lite_dbs = [None] * len(pg_dbs)
        engine = "SQLite" if read == "sqlite" else "PostgreSQL"
        source, target, keys = self._ordered_forms(tree, source_sql, read, target_sql)
        for i, (pg_db, lite_db) in enumerate(zip(pg_dbs, lite_dbs), 1):
            pair = None
            if keys is not None:
                pair = self._results(i, engine, source, read, target, pg_db, lite_db, quiet=True)
                if pair is None:  # the key-appended forms fail (a key naming an alias): as written
                    keys = None
            if keys is None:
                pair = self._results(i, engine, source_sql, read, target_sql, pg_db, lite_db)
            want, rows = pair
            if not agree(want, rows, tree, keys):
                raise SQLError(
                    f"results differ on synthesized database {i}: {engine} {_abbreviated(want)}, "
                    f"PostgreSQL {_abbreviated(rows)}"
                )
        return True
