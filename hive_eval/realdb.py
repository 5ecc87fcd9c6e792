"""Execute gold and predicted queries on real databases instead of synthesized ones.

Two kinds, one contract (`RealDatabase`): `execution_match(gold, prediction, db_id, compare=...,
dialect=...)` is `(correct, reason when not)` under the rules of synthesized execution
(`hive_data.compare`: bag or set, row order only when gold orders its result), on the one database
the row names instead of K synthesized ones; `explain(prediction, db_id, dialect=...)` is the
`valid` verdict (the database plans it). Both sides are written in the row's dialect and transpiled
by sqlglot to the database's when the two differ. A prediction must be one read-only query
(`hive_data.execute.check_query`): anything else is wrong and never sent. A timeout, an error or
more than `MAX_ROWS` rows is a wrong answer, never a hang.

- `SqliteDatabases(db_dir)`: Spider/BIRD layout, `DIR/<db_id>/<db_id>.sqlite` (or `.sqlite3`, `.db`,
  or `DIR/<db_id>.sqlite` etc.). Each file is opened read-only (`mode=ro`, `PRAGMA query_only`), and
  `hive_data.sqlite_guard` lets statements only read tables and call functions (no ATTACH, PRAGMA, writes or
  `load_extension`); the deadline is a progress handler, which SQLite calls while a query runs.
- `PostgresDatabase(uri)`: a database the user owns. Every query runs in a READ ONLY transaction that
  is always rolled back, under `SET LOCAL statement_timeout` and a watchdog that cancels it from the
  client side; the session is reset after it (`DISCARD ALL`). The read-only transaction does not stop
  a superuser's functions that reach outside it (files, programs, dblink): pass a role that can only
  read.
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from collections import OrderedDict
from pathlib import Path

import sqlglot
from sqlglot.errors import SqlglotError

from hive_core.errors import ConfigError, SQLError
from hive_data.compare import orders_rows, results_equal
from hive_data.execute import MAX_ROWS, Outcome, bounded, check_query, match_inputs
from hive_data.sqlite_guard import Deadline, armed, guard, run_query

SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


def transpile(sql: str, read: str, write: str) -> str:
    """`sql` in dialect `write`: as written when the dialects agree, else printed by sqlglot.
    Raises SQLError when sqlglot cannot."""
    if read == write:
        return sql
    try:
        out = [s for s in sqlglot.transpile(sql, read=read, write=write) if s.strip()]
    except SqlglotError as err:
        raise SQLError(f"does not transpile from {read} to {write}: {str(err).splitlines()[0]}") from None
    if len(out) != 1:
        raise SQLError(f"does not transpile from {read} to {write}: {len(out)} statements")
    return out[0]


class RealDatabase:
    """What both kinds share: transpiling, the gold cache and the comparison (see the module
    docstring). Subclasses provide `dialect`, `_execute` and `_plan`, and may refuse a db_id in
    `unavailable`."""

    dialect = "postgres"

    def __init__(self, *, timeout_ms: int = 5000, max_cached: int = 1024):
        self.timeout_ms = int(timeout_ms)
        self.max_cached = max_cached
        self._gold: OrderedDict[tuple[str | None, str], Outcome] = OrderedDict()

    # ------------------------------------------------------------ what a kind provides

    def unavailable(self, db_id: str | None) -> str | None:
        """Why the row's database cannot be used (scored wrong), or None."""
        return None

    def _execute(self, sql: str, db_id: str | None) -> list[tuple]:
        """At most MAX_ROWS rows of `sql` (in this dialect); SQLError for anything else."""
        raise NotImplementedError

    def _plan(self, sql: str, db_id: str | None) -> None:
        """SQLError unless the database compiles `sql` (in this dialect) without running it."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ shared

    def run(self, sql: str, db_id: str | None, *, dialect: str | None = None) -> Outcome:
        """Rows of `sql` (written in `dialect`, default this database's) on database `db_id`, or the
        reason there are none. Guards apply whatever the text; it is not checked to be a query."""
        why = self.unavailable(db_id)
        if why is not None:
            return Outcome(None, why)
        try:
            return Outcome(self._execute(transpile(sql, dialect or self.dialect, self.dialect), db_id))
        except SQLError as err:
            return Outcome(None, err.reason)

    def gold(self, sql: str, db_id: str | None, *, dialect: str | None = None) -> Outcome:
        """`run` of a gold query, once per (database, text): the data does not change."""
        key = (db_id, f"{dialect}\0{sql}")
        got = self._gold.pop(key, None) or self.run(sql, db_id, dialect=dialect)
        self._gold[key] = got  # most recently used last: eviction takes the oldest
        if len(self._gold) > self.max_cached:
            self._gold.popitem(last=False)
        return got

    def explain(self, sql: str, db_id: str | None, *, dialect: str | None = None, query: bool = True) -> None:
        """Raise SQLError unless `sql` (when `query`: one read-only query, checked before anything is
        sent) compiles on database `db_id`."""
        dialect = dialect or self.dialect
        if query:
            check_query(sql, dialect)
        why = self.unavailable(db_id)
        if why is not None:
            raise SQLError(why)
        self._plan(transpile(sql, dialect, self.dialect), db_id)

    def execution_match(
        self,
        gold: str,
        prediction: str,
        db_id: str | None,
        *,
        compare: str = "bag",
        dialect: str | None = None,
    ) -> tuple[bool, str | None]:
        """(correct, reason when not): the prediction's result equals gold's on database `db_id`."""
        dialect = dialect or self.dialect
        gold_tree, why = match_inputs(gold, prediction, dialect)
        if gold_tree is None:
            return False, why
        why = self.unavailable(db_id)
        if why is not None:
            return False, why
        want = self.gold(gold, db_id, dialect=dialect)
        where = f" on {db_id}" if db_id is not None else ""
        if want.error is not None:
            return False, f"gold query fails{where}: {want.error}"
        got = self.run(prediction, db_id, dialect=dialect)
        if got.error is not None:
            return False, got.error
        if not results_equal(want.rows, got.rows, compare, ordered=orders_rows(gold_tree)):
            return False, f"result differs from gold{where}"
        return True, None


# --------------------------------------------------------------------------- SQLite


class SqliteDatabases(RealDatabase):
    """The SQLite files of a Spider/BIRD-style directory, opened read-only on first use (at most
    `max_open` at a time). Raises ConfigError when `db_dir` is not a directory."""

    dialect = "sqlite"

    def __init__(self, db_dir: str | Path, *, timeout_ms: int = 5000, max_open: int = 16, **kw):
        super().__init__(timeout_ms=timeout_ms, **kw)
        self.db_dir = Path(db_dir)
        if not self.db_dir.is_dir():
            raise ConfigError("no such directory (--db-dir)", file=str(db_dir))
        self.max_open = max_open
        self._conns: OrderedDict[str, sqlite3.Connection] = OrderedDict()
        self._paths: dict[str, Path | None] = {}
        self._deadline = Deadline()

    def path(self, db_id: str | None) -> Path | None:
        """The file of database `db_id`, or None. A db_id is a plain name: never a path out of DIR."""
        if not db_id or db_id in (".", "..") or Path(db_id).name != db_id or "\\" in db_id:
            return None
        if db_id not in self._paths:
            candidates = [self.db_dir / db_id / f"{db_id}{s}" for s in SQLITE_SUFFIXES]
            candidates += [self.db_dir / f"{db_id}{s}" for s in SQLITE_SUFFIXES]
            self._paths[db_id] = next((p for p in candidates if p.is_file()), None)
        return self._paths[db_id]

    def unavailable(self, db_id: str | None) -> str | None:
        if not db_id:
            return "row has no db_id to pick its database in --db-dir"
        if self.path(db_id) is None:
            return f"no database {db_id} in {self.db_dir}"
        return None

    def _open(self, db_id: str) -> sqlite3.Connection:
        path = self.path(db_id)
        assert path is not None  # unavailable() was asked first
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # reads the schema: a database?
        except sqlite3.Error as err:
            raise SQLError(f"cannot open database {db_id}: {err}") from None
        conn.text_factory = lambda b: b.decode("utf-8", "replace")  # BIRD holds some text that is not UTF-8
        return guard(conn, self._deadline)

    def _conn(self, db_id: str) -> sqlite3.Connection:
        conn = self._conns.pop(db_id, None) or self._open(db_id)
        self._conns[db_id] = conn
        if len(self._conns) > self.max_open:
            self._conns.popitem(last=False)[1].close()
        return conn

    def _execute(self, sql: str, db_id: str | None) -> list[tuple]:
        return run_query(self._conn(db_id), sql, self._deadline, self.timeout_ms, MAX_ROWS)

    def _plan(self, sql: str, db_id: str | None) -> None:
        conn = self._conn(db_id)
        with armed(self._deadline, self.timeout_ms, "EXPLAIN: "):
            conn.execute("EXPLAIN " + sql).close()  # compiles the program; lists it without running it

    def close(self) -> None:
        while self._conns:
            self._conns.popitem()[1].close()


# --------------------------------------------------------------------------- PostgreSQL


class PostgresDatabase(RealDatabase):
    """One PostgreSQL database reached by `uri` (see the module docstring). Raises ConfigError when
    it cannot connect; warns when the role is a superuser (a read-only transaction is then the only
    guard)."""

    dialect = "postgres"

    def __init__(self, uri: str, *, timeout_ms: int = 5000, **kw):
        import psycopg

        from hive_data.sandbox import _Deadline

        super().__init__(timeout_ms=timeout_ms, **kw)
        self._psycopg = psycopg
        self._uri = uri
        self.conn = None
        try:
            self.conn = self._connect()
        except psycopg.Error as err:
            # the message names host and port, never the password
            raise ConfigError(f"cannot connect to --db-uri: {str(err).strip().splitlines()[0]}") from None
        row = self.conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        self.superuser = bool(row and row[0])
        if self.superuser:
            warnings.warn(
                "--db-uri connects as a superuser: queries run in read-only transactions, but a role"
                " that can only read is the safe choice for untrusted predictions",
                RuntimeWarning,
                stacklevel=2,
            )
        # the same watchdog as the sandbox: cancel past the deadline, then end the backend
        self._watch = _Deadline(self._cancel, self._terminate)

    def _connect(self):
        # no server-side prepared statements: DISCARD ALL would pull them from under psycopg
        return self._psycopg.connect(self._uri, autocommit=True, prepare_threshold=None, connect_timeout=10)

    def _cancel(self) -> None:
        self.conn.cancel_safe(timeout=1.0)

    def _terminate(self) -> None:
        pid = self.conn.info.backend_pid
        with self._connect() as other:  # a role may end its own backends
            other.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def _transaction(self, sql: str) -> list[tuple]:
        """Rows of `sql` sent alone by the extended protocol (the server refuses a second statement)
        in a READ ONLY transaction that is rolled back, under the deadline; SQLError otherwise."""
        from hive_data.sandbox import GRACE_S, pg_message, refuse_nul

        psycopg, ms = self._psycopg, self.timeout_ms
        refuse_nul(sql)
        if self.conn is None or self.conn.closed:
            try:
                self.conn = self._connect()
            except psycopg.Error as err:
                raise SQLError(
                    f"lost the connection to --db-uri: {str(err).strip().splitlines()[0]}"
                ) from None
        try:
            with self._watch.armed(ms / 1000 + GRACE_S) as deadline:
                try:
                    self.conn.execute(
                        f"BEGIN READ ONLY; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}"
                    )
                    cur = self.conn.execute(sql, binary=True)
                    return cur.fetchall() if cur.description else []
                except psycopg.errors.QueryCanceled:
                    raise SQLError(f"timed out after {ms} ms") from None
                except psycopg.OperationalError as err:
                    if deadline.fired:  # the watchdog had to end the backend
                        raise SQLError(f"timed out after {ms} ms") from None
                    raise SQLError(pg_message(err)) from None
                except psycopg.Error as err:
                    raise SQLError(pg_message(err)) from None
        finally:
            self._end()

    def _end(self) -> None:
        """No open transaction, and nothing the statement left in the session (advisory locks and
        settings outlive a rollback); a broken connection is dropped, reopened by the next query."""
        psycopg = self._psycopg
        try:
            if self.conn.closed or self.conn.broken:
                raise psycopg.OperationalError("connection lost")
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
            self.conn.execute("DISCARD ALL")
        except psycopg.Error:
            with contextlib.suppress(Exception):
                self.conn.close()

    def _execute(self, sql: str, db_id: str | None) -> list[tuple]:
        try:
            text = bounded(sql)
        except SqlglotError as err:
            raise SQLError(f"does not tokenize: {str(err).splitlines()[0]}") from None
        rows = self._transaction(text)
        if len(rows) > MAX_ROWS:
            raise SQLError(f"more than {MAX_ROWS} rows")
        return rows

    def _plan(self, sql: str, db_id: str | None) -> None:
        try:
            self._transaction("EXPLAIN " + sql)
        except SQLError as err:
            raise SQLError(f"EXPLAIN: {err.reason}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._watch.close()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
