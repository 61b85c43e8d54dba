"""Fixtures of the registry tests: a real MLflow store (SQLite + local artifacts in tmp_path) and
a real audit store (SQLite in tmp_path, or a PostgreSQL database created and dropped here).

Creating an MLflow SQLite database runs its migrations (~2 s), so one migrated template is made
per session and copied into each test's tmp_path: every test still gets its own empty store.
Datasets are synthetic `build_dataset`-shaped tables whose labels depend on known features, so
the meta-model learns something real in well under a second.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from registry_helpers import make_dataset
from sqlalchemy.engine import make_url

from autopsy_assets.store import AuditStore

PG_ADMIN_URL = os.environ.get("AUTOPSY_TEST_PG_URL",
                              "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


# ----------------------------------------------------------------------------- MLflow

@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    client.search_experiments()  # runs MLflow's migrations once
    return path


@pytest.fixture
def mlflow_uri(_mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty MLflow store of this test: sqlite:////<tmp_path>/mlruns-db/mlflow.db, artifacts
    beside it. MLFLOW_TRACKING_URI and AUTOPSY_HOME point there too, so nothing a test does can
    reach the developer's .autopsy/ (e.g. score_insights('models:/...') without a client)."""
    home = tmp_path / "home"
    home.mkdir()
    db = home / "mlflow.db"
    shutil.copyfile(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("AUTOPSY_HOME", str(home))
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return uri


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting fits and predicts with OpenMP threads; on a few hundred rows they
    gain nothing, and on a busy 2-core machine their spin-waiting made this folder ~4x slower
    (70 s instead of 18 s). One thread for these tests (threadpoolctl limits only libraries
    already loaded: import the estimators first)."""
    import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each test from its tmp_path: anything MLflow writes relative to the working directory
    (./mlruns, ./mlflow.db) stays out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


# ----------------------------------------------------------------------------- audit store

@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    s = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    yield s
    s.close()


def _pg_admin() -> sa.Engine:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 30
    while True:
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return engine
        except sa.exc.OperationalError as exc:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
            time.sleep(0.5)


@contextmanager
def _pg_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its URL), dropped afterwards."""
    admin = _pg_admin()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def pg_store() -> Iterator[AuditStore]:
    """A migrated audit store in a fresh PostgreSQL database, dropped afterwards."""
    with _pg_database("autopsy_registry_test") as url:
        s = AuditStore(url)
        try:
            s.migrate()
            yield s
        finally:
            s.close()


@pytest.fixture
def pg_mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow tracking + registry in a fresh PostgreSQL database (MLFLOW_TRACKING_URI points
    there; artifacts go to AUTOPSY_HOME/mlartifacts in tmp_path); dropped afterwards."""
    with _pg_database("autopsy_mlflow_test") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("AUTOPSY_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield url


# ----------------------------------------------------------------------------- datasets

@pytest.fixture
def dataset_factory() -> Callable[..., pd.DataFrame]:
    return make_dataset
