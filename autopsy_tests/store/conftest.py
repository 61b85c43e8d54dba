"""Fixtures of the audit store tests: real SQLite files and real PostgreSQL databases.

PostgreSQL runs at 127.0.0.1:5432 (trust auth, user postgres; AUTOPSY_TEST_PG_URL overrides).
Databases get unique names (autocommit CREATE DATABASE) and are dropped afterwards: one per test
where the test needs an empty server database (migrations), else one migrated database per
session whose tables are emptied before each test. When the server is down the fixture starts the
local cluster; PostgreSQL tests are never skipped.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from autopsy_assets.store import AuditStore, models
from autopsy_tests.conftest import _create_database, _drop_database, _url_of
from autopsy_tests.store.frames import audit_frame, candles_frame

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]


@pytest.fixture(scope="session")
def pg_session_url(pg_admin: sa.Engine) -> Iterator[str]:
    """One migrated PostgreSQL database for the behavioural tests of this session (each test
    starts from emptied tables, see `db_url`); dropped at the end."""
    name = _create_database(pg_admin)
    url = _url_of(name)
    store = AuditStore(url)
    store.migrate()
    store.close()
    yield url
    _drop_database(pg_admin, name)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty audit store database: a SQLite file in tmp_path, or the session's
    PostgreSQL database with every table emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
        AuditStore(url).migrate()
        yield url
        return
    url = request.getfixturevalue("pg_session_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE " + ", ".join(models.metadata.tables)
                             + " RESTART IDENTITY CASCADE")
    engine.dispose()
    yield url


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    s = AuditStore(db_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def make_candles() -> Callable[..., pd.DataFrame]:
    return candles_frame


@pytest.fixture
def make_audits() -> Callable[..., pd.DataFrame]:
    return audit_frame
