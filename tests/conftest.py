"""Shared fixtures: the embedded PostgreSQL, the shared corpora, the bundled fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED = ROOT.parent / "shared"
CORPORA = SHARED / "corpora"


@pytest.fixture(scope="session")
def pg_uri():
    """One real PostgreSQL server for the whole test session."""
    from hive_data.postgres import embedded_postgres

    with embedded_postgres() as uri:
        yield uri


@pytest.fixture
def pg_conn(pg_uri):
    """A connection whose work is rolled back at the end of the test."""
    import psycopg

    with psycopg.connect(pg_uri) as conn:
        yield conn
        conn.rollback()


@pytest.fixture(scope="session")
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.skip("../shared/corpora is absent")
    return CORPORA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
