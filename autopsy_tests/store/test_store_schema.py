"""Audit store: URLs, default location, Alembic migrations (idempotent, own version table)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pandas.testing as pdt
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from autopsy_assets.store import VERSION_TABLE, AuditStore, normalize_url
from autopsy_assets.store import models
from autopsy_tests.store.race import race

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")
TABLES = {"candle_blocks", "candle_days", "insights", "labeling_rules", "audits", "quarantine",
          "news_events", "market_regimes", "pattern_checks", "audit_rca", "explanations",
          "audit_trail", "alias_moves", "ab_assignments", "audit_reviews"}
HEAD = "0003"


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
        assert store.migrate() == HEAD
        assert store.migrate() == HEAD
        assert store.current_revision() == store.head_revision() == HEAD
        insp = sa.inspect(store.engine)
        names = set(insp.get_table_names())
        assert TABLES | {VERSION_TABLE} <= names
        with store.engine.connect() as conn:
            versions = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
            assert versions == [(HEAD,)]
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
        # 0002: the learning loop's keys and indexes
        uniques = {u["name"]: u["column_names"] for t in ("audit_trail", "explanations")
                   for u in insp.get_unique_constraints(t)}
        assert uniques["uq_audit_trail_request_from"] == ["request_id", "from_status"]
        assert uniques["uq_explanations_key"] == ["insight_id", "horizon", "model_name",
                                                  "model_version"]
        idx = {i["name"]: i["column_names"] for i in insp.get_indexes("audit_rca")}
        assert idx["ix_audit_rca_audit_rank"] == ["audit_id", "rank"]
        assert idx["ix_audit_rca_cause_confidence"] == ["cause", "confidence"]
        assert [i["column_names"] for i in insp.get_indexes("news_events")] == [["ts"]]
        fks = insp.get_foreign_keys("audit_rca")
        assert [(f["referred_table"], f["constrained_columns"], f["referred_columns"])
                for f in fks] == [("audits", ["audit_id"], ["id"])]
        pks = {t: insp.get_pk_constraint(t)["constrained_columns"] for t in (
            "news_events", "market_regimes", "pattern_checks", "alias_moves", "ab_assignments")}
        assert pks == {"news_events": ["event_id"], "market_regimes": ["symbol", "timeframe", "ts"],
                       "pattern_checks": ["insight_id", "pattern"],
                       "alias_moves": ["model_name", "seq"],
                       "ab_assignments": ["insight_id", "model_name"]}
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
    results, errors = race([s.migrate for s in stores])
    for s in stores:
        s.close()
    assert not errors, errors
    assert results == [HEAD] * 3


@pytest.mark.parametrize("backend", [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration)])
def test_upgrade_0001_to_0002_in_place_keeps_the_data(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, make_audits,
        make_candles) -> None:
    url = (f"sqlite:///{tmp_path / 'audit.db'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    store = AuditStore(url)
    try:
        # a database as release 0001 left it, with data in it
        assert store.migrate("0001") == "0001"
        assert "audit_rca" not in sa.inspect(store.engine).get_table_names()
        candles = make_candles(periods=120)
        store.put_candles(candles)
        store.put_insights(pd.DataFrame({
            "insight_id": ["ins000000", "ins000001"], "created_at": [T0, T0 + pd.Timedelta(
                hours=1)], "symbol": "EURUSD", "side": ["long", "short"],
            "entry_price": [1.1, 1.1003], "patterns": ["BOS|FVG", ""]}))
        audits = make_audits(2, horizons=("1H", "24H"), outcome="failed")
        store.upsert_audits(audits, run_id="r-0001")
        store.quarantine([{"source": "news", "row_id": "n1", "reason": "impact is missing"}])
        before = {"audits": store.current_audits(), "insights": store.read_insights(),
                  "candles": store.read_candles(None, None), "q": store.read_quarantine()}

        assert store.migrate() == HEAD == store.head_revision()
        assert store.migrate() == HEAD  # idempotent
        assert TABLES <= set(sa.inspect(store.engine).get_table_names())
        pdt.assert_frame_equal(store.current_audits(), before["audits"])
        pdt.assert_frame_equal(store.read_insights(), before["insights"])
        pdt.assert_frame_equal(store.read_candles(None, None), before["candles"])
        pdt.assert_frame_equal(store.read_quarantine(), before["q"])
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": False,
                "include_name": lambda name, type_, parent: name != VERSION_TABLE})
            assert compare_metadata(ctx, models.metadata) == []
        # the new tables work on the old rows: findings link to the audits 0001 wrote
        ids = before["audits"].set_index(["insight_id", "horizon"])
        assert store.replace_rca(pd.DataFrame({
            "insight_id": ["ins000001"], "horizon": ["24H"], "cause": ["regime_drift"],
            "confidence": [64.3], "rank": [1], "summary": ["trend turned against the trade"],
            "evidence": [{"regime_before": "trending_up", "regime_after": "trending_down"}]})) == 1
        rca = store.read_rca()
        with store.engine.connect() as conn:
            want = conn.execute(sa.text(
                "SELECT id FROM audits WHERE insight_id = 'ins000001' AND horizon = '24H'")
            ).scalar_one()
        assert rca["audit_id"].tolist() == [want]
        assert rca["snapshot_hash"].tolist() == [ids.loc[("ins000001", "24H"), "snapshot_hash"]]
    finally:
        store.close()
