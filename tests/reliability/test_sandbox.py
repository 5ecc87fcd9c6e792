"""The SQL sandbox of `--verify explain`, attacked as a hostile dataset would: dataset SQL runs as a
login role that cannot reach the host or change its own limits, whatever it sets, and every row
starts from a clean session. Also: the embedded server's directory is gone after a kill during start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from hive_core.errors import SQLError
from hive_data.verify import ExplainVerifier

TABLE = "CREATE TABLE t (a TEXT);"
ROLE_RESETS = [  # every spelling that turns the effective role back into the session user's
    "set_config('role', 'none', true)",
    "set_config('role', 'postgres', true)",
    "set_config('role', 'none', false)",
    "set_config('session_authorization', 'postgres', true)",
]


@pytest.fixture
def verifier(pg_uri):
    with ExplainVerifier(pg_uri, timeout_ms=400, prefix="hive_sbx") as v:
        yield v


def _schema_error(verifier, data: str) -> str:
    with pytest.raises(SQLError) as err:
        verifier.schema(f"{TABLE}\n{data}")
    return err.value.reason


@pytest.mark.parametrize("reset", ROLE_RESETS)
def test_kept_rows_cannot_leave_the_sandbox_role(verifier, tmp_path, reset):
    """A kept INSERT that resets the role and then reads or writes host files gets permission denied."""
    written = tmp_path / "written-by-postgres"
    for attack in (
        "INSERT INTO t SELECT pg_read_file('/etc/hostname')",
        f"INSERT INTO t VALUES (lo_export(lo_from_bytea(0, 'owned'), '{written}')::TEXT)",
        "INSERT INTO t SELECT string_agg(f, ',') FROM pg_ls_dir('/') AS f",
    ):
        reason = _schema_error(verifier, f"INSERT INTO t VALUES ({reset});\n{attack}")
        assert "permission denied" in reason or "must be" in reason or "not allowed" in reason, reason
    assert not written.exists()


def test_the_sandbox_role_reaches_nothing_outside(verifier, tmp_path):
    """Arbitrary statements as the sandbox role, as if every parser check had been fooled."""
    box = verifier.sandbox
    written = tmp_path / "x"
    refused = [
        "RESET ROLE",  # allowed, but changes nothing: see below
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT pg_read_file('/etc/hostname')",
        "SELECT pg_read_binary_file('/etc/hostname')",
        "SELECT pg_ls_dir('.')",
        "SELECT lo_import('/etc/hostname')",
        f"SELECT lo_export(lo_create(0), '{written}')",
        f"COPY (SELECT 1) TO '{written}'",
        f"COPY (SELECT 1) TO PROGRAM 'touch {written}'",
        "CREATE EXTENSION IF NOT EXISTS vector",
        "CREATE TEMP TABLE survivor (a INT)",
        "CREATE TABLE public.survivor (a INT)",
        "CREATE ROLE evil SUPERUSER",
        "ALTER SYSTEM SET statement_timeout = 0",
        "CREATE DATABASE evil",
        "SELECT dblink_connect('host=localhost')",
        "ALTER ROLE postgres PASSWORD 'x'",
    ]
    for sql in refused:
        try:
            box.run(sql, read_only=False)
        except psycopg.Error:
            pass
        user = box.run("SELECT current_user, session_user, pg_has_role('postgres', 'MEMBER')")[0]
        assert user == (box.role, box.role, False), sql
    assert not written.exists()
    with psycopg.connect(box._conninfo.replace(f"user={box.role}", "user=postgres")) as admin:
        assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'evil'").fetchone() == (0,)
        assert admin.execute("SELECT to_regclass('public.survivor')").fetchone() == (None,)


def test_only_one_statement_travels(verifier):
    with pytest.raises(psycopg.Error, match="multiple commands"):
        verifier.sandbox.run("SELECT 1; SELECT 2")


def test_the_timeout_cannot_be_switched_off(verifier):
    """SQL may set statement_timeout to 0 for itself; the client-side deadline still ends it."""
    for off in (
        "set_config('statement_timeout', '0', true)",
        "set_config('statement_timeout', '0', false)",
    ):
        start = time.monotonic()
        reason = _schema_error(
            verifier, f"INSERT INTO t VALUES ({off});\nINSERT INTO t SELECT pg_sleep(20)::TEXT"
        )
        assert "timed out" in reason
        assert time.monotonic() - start < 10
    # and the session is clean for the next row: EXPLAIN works and is fast
    verifier.explain("SELECT a FROM t", TABLE)


def test_a_killed_backend_is_replaced(verifier):
    """A statement that ignores cancels (here: the cancel itself is lost) is ended by terminating
    its backend; the next row gets a fresh connection."""
    box = verifier.sandbox
    box._cancel = lambda: None  # a cancel that never arrives
    start = time.monotonic()
    with pytest.raises(SQLError, match="timed out"):
        box.run("SELECT set_config('statement_timeout', '0', true), pg_sleep(30)", timeout_ms=100)
    assert time.monotonic() - start < 10
    assert box.run("SELECT 1") == [(1,)]


def test_session_state_does_not_survive_a_row(verifier, pg_uri):
    """Advisory locks and settings taken by one schema's kept rows are gone before the next row."""
    verifier.schema(
        f"{TABLE}\nINSERT INTO t VALUES (pg_advisory_lock(4242)::TEXT);\n"
        "INSERT INTO t VALUES (set_config('search_path', 'pg_catalog', false))"
    )
    with psycopg.connect(pg_uri, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)
    assert verifier.sandbox.run("SELECT current_setting('search_path')") != [("pg_catalog",)]
    assert verifier.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


@pytest.mark.parametrize(
    "answer",
    [
        "SELECT a FROM t --\x00\nWHERE nosuch = 1",  # PostgreSQL would only see `SELECT a FROM t --`
        "SELECT a FROM t WHERE a = '\x00' AND nosuch = 1",
    ],
)
def test_nul_bytes_are_refused_and_the_next_row_is_clean(verifier, answer):
    with pytest.raises(SQLError, match="NUL byte"):
        verifier.explain(answer, TABLE)
    assert verifier.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    verifier.explain("SELECT a FROM t", TABLE)
    with pytest.raises(SQLError, match="NUL byte"):
        verifier.schema(TABLE + "\nINSERT INTO t VALUES ('a\x00b')")


def test_closing_drops_the_role_and_its_schemas(pg_uri):
    with ExplainVerifier(pg_uri, prefix="hive_gone") as v:
        v.explain("SELECT a FROM t", TABLE)
        role = v.sandbox.role
        admin_info = v.sandbox._conninfo.replace(f"user={role}", "user=postgres")
    with psycopg.connect(admin_info) as admin:
        assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (0,)
        left = admin.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'hive_gone_%'").fetchone()
        assert left == (0,)


# ------------------------------------------------------------------ through the command, end to end


def _normalize(tmp_path: Path, rows: list[dict], **options):
    from hive_data.normalize_rows import normalize_dataset

    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return normalize_dataset(
        src,
        tmp_path / "clean.jsonl",
        read="postgres",
        verify="explain",
        num_proc=1,
        progress=False,
        **options,
    )


@pytest.mark.parametrize("keep", [True, False])
def test_hostile_dataset_through_the_command(tmp_path, keep):
    """Rows that would escape the sandbox, with and without --keep-data: no host file is read into
    the outputs, none is written, nothing hangs, and the honest row is kept."""
    written = tmp_path / "written-by-postgres"
    context = "CREATE TABLE t (a TEXT);"
    evil_contexts = [
        context + " INSERT INTO t VALUES (set_config('role', 'none', true));"
        " INSERT INTO t SELECT CAST(pg_read_file('/etc/passwd') AS INT)",
        context + " INSERT INTO t VALUES (set_config('role', 'none', true));"
        f" INSERT INTO t VALUES (lo_export(lo_from_bytea(0, 'owned'), '{written}'))",
        context + " INSERT INTO t VALUES (set_config('statement_timeout', '0', true));"
        " INSERT INTO t SELECT pg_sleep(60)",
    ]
    rows = [
        {"sql_prompt": f"q{i}", "sql_context": c, "sql": "SELECT a FROM t"}
        for i, c in enumerate(evil_contexts)
    ]
    rows.append(
        {"sql_prompt": "nul", "sql_context": context, "sql": "SELECT a FROM t --\x00\nWHERE nosuch = 1"}
    )
    rows.append({"sql_prompt": "honest", "sql_context": context, "sql": "SELECT a FROM t WHERE a = 'x'"})
    start = time.monotonic()
    summary = _normalize(tmp_path, rows, timeout_ms=500, keep_data=keep)
    assert time.monotonic() - start < 120, "something slept past its deadline"
    assert not written.exists()
    outputs = "".join(p.read_text() for p in tmp_path.glob("clean*"))
    assert "root:" not in outputs, "a server file reached the outputs"
    kept = [json.loads(line)["sql_prompt"] for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert "honest" in kept and "nul" not in kept, kept
    assert summary.rows_in == len(rows) == summary.rows_out + summary.rows_rejected + summary.duplicates
    if keep:
        assert kept == ["honest"]


# ------------------------------------------------------------------ the embedded server's directory

_START = "from hive_data.postgres import embedded_postgres\nwith embedded_postgres() as uri:\n    print(uri, flush=True)\n"


def _our_processes(root: Path) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds server processes through /proc")
@pytest.mark.parametrize("delay", [0.0, 0.4, 0.9])
def test_a_kill_during_start_leaves_no_directory(tmp_path, delay):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", _START], env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("hive-pg-*")) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while (list(tmp_path.glob("hive-pg-*")) or _our_processes(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(tmp_path.glob("hive-pg-*")), "the server directory was left behind"
    assert not _our_processes(tmp_path), "a server process was left running"
