"""SQLite connections that only read, with a deadline: where dataset and predicted SQL runs in SQLite.

`guard(conn, deadline)` installs on a connection, after it has been loaded:

- an authorizer that lets statements only read tables (and views and CTEs through them) and call
  functions: no ATTACH, PRAGMA, writes, or functions that reach outside the database
  (`load_extension`, and the sqlite3 shell's file functions in case a build links them in);
- `PRAGMA query_only`, limits on string size and on attached databases;
- a progress handler that aborts the running statement once `deadline.passed()`, so an endless
  recursive query stops at its deadline (SQLite calls the handler while a query runs).

`run_query(conn, sql, deadline, timeout_ms, max_rows)` runs one statement under the deadline and
returns at most `max_rows` rows (more is an error), with every failure as an `SQLError`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time

from hive_core.errors import SQLError

# Numbers are SQLite's action codes; Python names some of them only from 3.11 on.
READS = frozenset(
    {
        getattr(sqlite3, "SQLITE_SELECT", 21),
        getattr(sqlite3, "SQLITE_READ", 20),
        getattr(sqlite3, "SQLITE_FUNCTION", 31),
        getattr(sqlite3, "SQLITE_RECURSIVE", 33),
    }
)
FUNCTION = getattr(sqlite3, "SQLITE_FUNCTION", 31)
REFUSED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"})
MAX_LENGTH = 100_000_000  # bytes in one string or blob: randomblob(1e9) in one VM step
PROGRESS_STEPS = 1000  # VM instructions between deadline checks (microseconds apart)


class Deadline:
    """A monotonic deadline armed per statement; 0 means "abort anything that runs now"."""

    def __init__(self) -> None:
        self.at = 0.0

    def passed(self) -> bool:
        return time.monotonic() > self.at


def authorize(action: int, arg1, arg2, db_name, trigger) -> int:
    """The read-only authorizer: called while a statement compiles, so what is not a read is refused
    before it can run."""
    if action not in READS:
        return sqlite3.SQLITE_DENY
    if action == FUNCTION and str(arg2).lower() in REFUSED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def guard(conn: sqlite3.Connection, deadline: Deadline) -> sqlite3.Connection:
    """Make `conn` read-only and interruptible (see the module docstring); returns it."""
    conn.execute("PRAGMA query_only = ON")
    if hasattr(conn, "setlimit"):  # Python 3.11+
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_LENGTH)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(authorize)
    conn.set_progress_handler(deadline.passed, PROGRESS_STEPS)
    return conn


@contextlib.contextmanager
def armed(deadline: Deadline, timeout_ms: int, what: str = ""):
    """The deadline armed for one statement, and its errors as SQLError (prefixed by `what`)."""
    deadline.at = time.monotonic() + timeout_ms / 1000
    try:
        yield
    except sqlite3.OperationalError as err:
        if str(err) == "interrupted" and deadline.passed():
            raise SQLError(f"{what}timed out after {timeout_ms} ms") from None
        raise SQLError(f"{what}{err}") from None
    except (sqlite3.Error, ValueError, OverflowError, MemoryError) as err:
        # ValueError: "the query contains a null character"; ProgrammingError: several statements
        raise SQLError(f"{what}{err}") from None
    finally:
        deadline.at = 0.0  # a statement run outside this guard is aborted at once


def run_query(
    conn: sqlite3.Connection, sql: str, deadline: Deadline, timeout_ms: int, max_rows: int
) -> list[tuple]:
    """The rows of one statement on a guarded connection (see the module docstring)."""
    with armed(deadline, timeout_ms):
        cur = conn.execute(sql)
        try:
            rows = cur.fetchmany(max_rows + 1)  # stepped lazily: the rest is never computed
        finally:
            cur.close()
    if len(rows) > max_rows:
        raise SQLError(f"more than {max_rows} rows")
    return rows
