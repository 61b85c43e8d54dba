"""Fixtures shared by every test folder: real PostgreSQL databases, created and dropped per use.

PostgreSQL runs at 127.0.0.1:5432 (trust auth, user postgres; AUTOPSY_TEST_PG_URL overrides).
When the server is down the fixture starts the local cluster; PostgreSQL tests are never skipped.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("AUTOPSY_TEST_PG_URL",
                              "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")



def _start_local_postgres() -> None:
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path(
        "/etc/postgresql").exists() else []
    for version in versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                       check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 30
    started = False
    while True:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            break
        except sa.exc.OperationalError as exc:
            if not started:
                _start_local_postgres()
                started = True
            elif time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
            time.sleep(0.5)
    yield engine
    engine.dispose()


def _create_database(admin: sa.Engine) -> str:
    name = f"autopsy_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": name})
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _url_of(name: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    name = _create_database(pg_admin)
    yield _url_of(name)
    _drop_database(pg_admin, name)


