"""Audit store: URLs, default location, Alembic migrations (idempotent, own version table)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from autopsy_assets.store import VERSION_TABLE, AuditStore, normalize_url
from autopsy_assets.store import models

TABLES = {"candle_blocks", "candle_days", "insights", "labeling_rules", "audits", "quarantine"}


def test_postgres_urls_are_rewritten_to_psycopg2() -> None:
    assert normalize_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg2://u:p@h:5432/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_default_url_is_env_or_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOPSY_DATABASE_URL", raising=False)
    url = AuditStore.default_url()
    assert url == f"sqlite:///{tmp_path.resolve()}/.autopsy/audit.db"
    assert (tmp_path / ".autopsy").is_dir()
    monkeypatch.setenv("AUTOPSY_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")
    assert AuditStore.default_url() == "postgresql+psycopg2://postgres@127.0.0.1:5432/x"
    store = AuditStore("postgresql://postgres@127.0.0.1:5432/x")
    assert store.engine.dialect.driver == "psycopg2"
    store.close()


@pytest.mark.parametrize("backend", [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration)])
def test_migrate_twice_is_idempotent_and_uses_own_version_table(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'deep' / 'er' / 'audit.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    store = AuditStore(url)
    try:
        if backend == "postgresql":
            # MLflow / Dagster keep Alembic's default table in a shared database: leave it alone
            with store.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE alembic_version (version_num varchar(32) "
                                     "NOT NULL PRIMARY KEY)")
                conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('mlflow_head')")
        assert store.current_revision() is None
        assert store.migrate() == "0001"
        assert store.migrate() == "0001"
        assert store.current_revision() == store.head_revision() == "0001"
        insp = sa.inspect(store.engine)
        names = set(insp.get_table_names())
        assert TABLES | {VERSION_TABLE} <= names
        with store.engine.connect() as conn:
            versions = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
            assert versions == [("0001",)]
            if backend == "postgresql":
                assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() \
                    == [("mlflow_head",)]
            else:
                assert "alembic_version" not in names
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        # the migration and the runtime tables agree (columns, indexes, constraints)
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": False,
                "include_name": lambda name, type_, parent: name not in (
                    VERSION_TABLE, "alembic_version")})
            assert compare_metadata(ctx, models.metadata) == []
        idx = {i["name"]: i for i in insp.get_indexes("audits")}
        assert idx["uq_audits_one_current"]["unique"]
        assert {"ix_audits_insight_horizon", "ix_audits_outcome_evaluated_at",
                "ix_audits_user_evaluated_at", "ix_audits_needs_review_evaluated_at",
                "ix_audits_current_created_at"} <= set(idx)
        uniques = {u["name"]: u["column_names"] for u in insp.get_unique_constraints("audits")}
        assert uniques["uq_audits_key"] == ["insight_id", "horizon", "rule_hash", "candles_hash"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration)])
def test_concurrent_first_migrations_serialise(backend: str, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'audit.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    stores = [AuditStore(url) for _ in range(3)]
    gate = threading.Barrier(len(stores))
    results: list[str] = []
    errors: list[BaseException] = []

    def run(store: AuditStore) -> None:
        try:
            gate.wait()
            results.append(store.migrate())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert not errors, errors
    assert results == ["0001"] * 3
