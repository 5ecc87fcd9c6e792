"""Shared fixtures: the embedded PostgreSQL, the shared corpora, the bundled fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from train_helpers import write_shards

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


# Small trainer shards (24 + 4 documents at seq 96), built once per module; each test gets a copy.
@pytest.fixture(scope="module")
def good_shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "good", seq=96, train_docs=24, val_docs=4)


@pytest.fixture
def shards(good_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(good_shards, copy)
    return copy
