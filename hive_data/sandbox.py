"""Run untrusted SQL (dataset schemas, kept rows, answers) in PostgreSQL where it cannot reach the host.

The boundary is a login role, not a setting. `Sandbox` connects to the server twice:

- an *admin* connection as the user of the URI (the embedded server's superuser), which only ever
  runs hive's own statements: it creates a dedicated database (`hive_sandbox`, no privileges for
  PUBLIC), one login role per sandbox, and the role's scratch schemas;
- a *sandbox* connection that logs in as that role. The role is no superuser, cannot create roles
  or databases, is a member of no role (so `SET ROLE`, `RESET ROLE`, `set_config('role', ...)` and
  `SET SESSION AUTHORIZATION` have nowhere to go), and has no privilege on the database beyond
  CONNECT: no temporary tables, no extensions, no reading or writing server files, no programs, no
  server-side large-object import or export.

Time is bounded from outside the server too: every statement runs under `SET LOCAL
statement_timeout`, and a watchdog thread cancels the query when the deadline passes anyway (the
SQL can change its own timeout) and terminates the backend from the admin connection if a cancel
does not end it. Untrusted text is refused if it holds a NUL byte (the wire protocol would cut it);
single statements travel by the extended protocol, which the server refuses to split into several.
Every transaction is ended, and whatever a committed batch left in the session (settings, advisory
locks, prepared statements) is discarded before the next one.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Iterator

from hive_core.errors import SQLError

DATABASE = "hive_sandbox"
GRACE_S = 1.0  # after the deadline: cancel; after twice this more: terminate the backend
# Worker processes set up sandboxes at the same moment; grants on one database update one catalog
# row, which PostgreSQL refuses to do concurrently ("tuple concurrently updated"): take turns.
_SETUP_LOCK = 0x68697665
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class SandboxTimeout(SQLError):
    """The statement ran past its deadline and was cancelled."""


def _ident(name: str) -> str:
    """A name hive chose itself, checked so that it needs no quoting."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain SQL name: {name!r}")
    return name


def refuse_nul(text: str, what: str = "SQL") -> None:
    """PostgreSQL's protocol ends a string at NUL: whatever follows would silently be dropped."""
    if "\x00" in text:
        raise SQLError(f"{what} contains a NUL byte")


@contextlib.contextmanager
def _taking_turns(admin) -> Iterator[None]:
    admin.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
    try:
        yield
    finally:
        admin.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


def pg_message(err) -> str:
    """A server error as one line: its primary message, the hint if any, and the SQLSTATE code."""
    diag = getattr(err, "diag", None)
    msg = (diag.message_primary if diag else None) or (str(err).splitlines() or [type(err).__name__])[0]
    hint = diag.message_hint if diag else None
    code = diag.sqlstate if diag else None
    text = msg + (f" (hint: {hint})" if hint else "")
    return f"{text} [{code}]" if code else text


class _Deadline:
    """One watchdog thread per sandbox: `armed(s)` cancels the running query s seconds later, and
    kills its backend if it still runs 2 x GRACE_S after that."""

    def __init__(self, cancel, kill):
        self._cancel, self._kill = cancel, kill
        self._cond = threading.Condition()
        self._at: float | None = None
        self._fired = 0  # 0 nothing, 1 cancelled, 2 killed
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="hive-sql-deadline", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def armed(self, seconds: float) -> Iterator[_Deadline]:
        with self._cond:
            self._at, self._fired = time.monotonic() + seconds, 0
            self._cond.notify()
        try:
            yield self
        finally:
            with self._cond:
                self._at = None

    @property
    def fired(self) -> bool:
        return self._fired > 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._at is None:
                    self._cond.wait()
                    continue
                if self._fired == 2:  # nothing more to do until the next statement
                    self._cond.wait()
                    continue
                late = time.monotonic() - self._at
                due = 0.0 if self._fired == 0 else 2 * GRACE_S
                if late < due:
                    self._cond.wait(due - late)
                    continue
                self._fired += 1
                action = self._cancel if self._fired == 1 else self._kill
                self._cond.release()
                try:
                    with contextlib.suppress(Exception):
                        action()
                finally:
                    self._cond.acquire()


class Sandbox:
    """A login role of its own in the `hive_sandbox` database, and a connection as that role.

    `name` must be unique among sandboxes open on one server at a time (give each process its own);
    it names the role. `timeout_ms` is the default deadline of `run`. Closing drops the role and
    everything it owns.
    """

    def __init__(self, uri: str, *, name: str, timeout_ms: int = 5000):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self._psycopg = psycopg
        self.timeout_ms = int(timeout_ms)
        self.role = _ident(f"{name.lower()}_sandbox")
        params = conninfo_to_dict(uri)
        admin = psycopg.connect(uri, autocommit=True)
        try:
            self._check_admin(admin)
            with _taking_turns(admin):
                self._create_database(admin, params)
        finally:
            admin.close()
        self.admin = psycopg.connect(make_conninfo(**{**params, "dbname": DATABASE}), autocommit=True)
        self._password = secrets.token_hex(24)
        with _taking_turns(self.admin):
            self._create_role()
        self._conninfo = make_conninfo(
            **{**params, "dbname": DATABASE, "user": self.role, "password": self._password}
        )
        self.conn = self._connect()
        self.batch_offset = 0  # where `sql` starts in the last batch sent (for error positions)
        self._deadline = _Deadline(self._cancel, self._terminate)

    # ------------------------------------------------------------ setting up (hive's own SQL only)

    @staticmethod
    def _check_admin(admin) -> None:
        row = admin.execute(
            "SELECT rolsuper, rolcreaterole AND rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not row or not (row[0] or row[1]):
            raise SQLError(
                "the PostgreSQL user of --verify explain must be a superuser or may create roles and"
                " databases: hive runs dataset SQL as a login role of its own, never as you"
            )

    @staticmethod
    def _create_database(admin, params: dict) -> None:
        import psycopg
        from psycopg.conninfo import make_conninfo

        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            admin.execute(f"CREATE DATABASE {DATABASE}")  # several worker processes may race here
        admin.execute(f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC")
        with psycopg.connect(make_conninfo(**{**params, "dbname": DATABASE}), autocommit=True) as db:
            db.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")

    def _create_role(self) -> None:
        role, admin = self.role, self.admin
        super_ = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        self._drop_role()  # a process with this name that died before closing its sandbox
        admin.execute(
            f"CREATE ROLE {role} LOGIN PASSWORD '{self._password}' NOSUPERUSER NOCREATEDB NOCREATEROLE"
            " NOINHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 2"
        )
        admin.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO {role}")
        # Defaults for every session of the role; the watchdog enforces time whatever the SQL sets.
        for setting, value in (
            ("statement_timeout", self.timeout_ms),
            ("lock_timeout", self.timeout_ms),
            ("idle_in_transaction_session_timeout", 60_000),
            ("synchronous_commit", "off"),  # scratch schemas need no durability: no WAL flush per commit
        ):
            admin.execute(f"ALTER ROLE {role} SET {setting} = {value}")
        if super_:  # only a superuser may fix these, and the role cannot change them back
            admin.execute(f"ALTER ROLE {role} SET temp_file_limit = '1GB'")
            admin.execute(f"ALTER ROLE {role} SET log_min_messages = 'panic'")

    def _drop_role(self) -> None:
        admin, role = self.admin, self.role
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            return
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        # One schema per statement first: DROP OWNED takes a lock per object in one transaction, and a
        # long evaluation's scratch schemas (hundreds of sets of tables) exceed the lock table
        owned = admin.execute(
            "SELECT nspname FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner WHERE r.rolname = %s",
            (role,),
        ).fetchall()
        for (schema,) in owned:  # quoted: whatever the name, it is only ever a name here
            quoted = '"' + schema.replace('"', '""') + '"'
            admin.execute(f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
        admin.execute(f"DROP OWNED BY {role} CASCADE")
        admin.execute(f"DROP ROLE {role}")

    def _connect(self):
        # no server-side prepared statements: DISCARD ALL would pull them from under psycopg
        return self._psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=None)

    def create_schema(self, name: str) -> None:
        """A fresh, empty schema owned by the sandbox role (dropped first if it exists)."""
        name = _ident(name)
        self.admin.execute(
            f"DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name} AUTHORIZATION {self.role}"
        )

    def drop_schema(self, name: str) -> None:
        self.admin.execute(f"DROP SCHEMA IF EXISTS {_ident(name)} CASCADE")

    def close(self) -> None:
        self._deadline.close()
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception), _taking_turns(self.admin):
            self._drop_role()
        with contextlib.suppress(Exception):
            self.admin.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ running untrusted SQL

    def _cancel(self) -> None:
        self.conn.cancel_safe(timeout=GRACE_S)

    def _terminate(self) -> None:
        self.admin.execute("SELECT pg_terminate_backend(%s)", (self.conn.info.backend_pid,))

    def run(
        self,
        sql: str,
        *,
        search_path: str | None = None,
        read_only: bool = True,
        commit: bool = False,
        single: bool = True,
        timeout_ms: int | None = None,
        reset: bool = False,
    ) -> list[tuple]:
        """Run `sql` as the sandbox role in a transaction of its own and return its rows.

        `single` sends it by the extended protocol (exactly one statement, or the server refuses) and
        returns its rows; otherwise the setup, `sql` and the end of the transaction go as one
        simple-protocol batch (one round trip; no rows; a server error position counts from
        `batch_offset`). The boundary is the role and the deadline either way. The transaction is rolled back unless
        `commit`. After a committed batch, or with `reset` (for SQL that was executed, not only
        planned), the session is reset (`DISCARD ALL`): session-level advisory locks and settings
        outlive a rollback. Raises
        SandboxTimeout past the deadline, and the server's error (a psycopg.Error) otherwise; the
        connection is usable again either way.
        """
        refuse_nul(sql)
        ms = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        setup = ["BEGIN READ ONLY" if read_only else "BEGIN"]
        setup += [f"SET LOCAL statement_timeout = {ms}", f"SET LOCAL lock_timeout = {ms}"]
        if search_path is not None:
            setup.append(f"SET LOCAL search_path TO {_ident(search_path)}")
        end = "COMMIT" if commit else "ROLLBACK"
        committed = False
        try:
            with self._deadline.armed(ms / 1000 + GRACE_S) as deadline:
                try:
                    if single:  # the statement alone, by the extended protocol
                        self.conn.execute("; ".join(setup))
                        cur = self.conn.execute(sql, binary=True)
                        rows = cur.fetchall() if cur.description else []
                        self.conn.execute(end)
                    else:  # one round trip: setup, the text, the end of the transaction
                        self.batch_offset = len("; ".join(setup)) + 2
                        self.conn.execute("; ".join(setup) + ";\n" + sql + f"\n;{end}")
                        rows = []
                    committed = commit
                    return rows
                except self._psycopg.errors.QueryCanceled:
                    raise SandboxTimeout(f"timed out after {ms} ms") from None
                except self._psycopg.OperationalError:
                    if deadline.fired:  # the watchdog had to end the backend
                        raise SandboxTimeout(f"timed out after {ms} ms") from None
                    raise
        finally:
            self._end(discard=committed or reset)

    def _end(self, *, discard: bool) -> None:
        """Leave the session as a fresh one: no open transaction, and after a commit nothing kept."""
        try:
            if self.conn.closed or self.conn.broken:
                raise self._psycopg.OperationalError("connection lost")
            if self.conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
                self.conn.execute("ROLLBACK")
            if discard:
                self.conn.execute("DISCARD ALL")
        except self._psycopg.Error:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = self._connect()
