"""Audit store: audits with history (one current row per insight x horizon), pending
readiness, outcome summary (DESIGN.md 2a "Audit identity and snapshots")."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
import sqlalchemy as sa

from autopsy_assets.domain.schemas import AUDIT_COLUMNS
from autopsy_assets.store import AuditStore
from autopsy_tests.store.race import race

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")
H1 = "1" * 64
H2 = "2" * 64


def _rows(store: AuditStore) -> int:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM audits").scalar_one()


def _current_per_key(store: AuditStore) -> list[tuple[str, str, int]]:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT insight_id, horizon, sum(CASE WHEN is_current THEN 1 ELSE 0 END) "
            "FROM audits GROUP BY insight_id, horizon ORDER BY insight_id, horizon")).all()


def test_audits_round_trip_exactly(store, make_audits) -> None:
    a = make_audits(3, horizons=("1H", "24H"))
    a.loc[0, "pnl_pct"] = 0.1 + 0.2
    a.loc[1, "exit_time"] = pd.NaT
    a.loc[1, ["exit_price", "pnl_pct"]] = np.nan
    a.loc[2, ["outcome", "needs_review", "needs_review_reason"]] = ["needs_review", True, "hole"]
    a.loc[3, "rule_snapshot"] = 'tab\there\nnewline \\ backslash "quoted" \\N'
    a.loc[4, "created_at"] = T0 + pd.Timedelta(microseconds=123456)
    counts = store.upsert_audits(a, run_id="run-1", evaluated_at=T0 + pd.Timedelta(days=30))
    assert counts == {"inserted": 6, "refreshed": 0, "unchanged": 0, "superseded": 0}
    got = store.current_audits()
    assert len(got) == 6
    want = a.sort_values(["created_at", "insight_id"], kind="stable").reset_index(drop=True)
    pdt.assert_frame_equal(got[list(AUDIT_COLUMNS)], want, check_dtype=False, check_exact=True)
    for col, kind in AUDIT_COLUMNS.items():
        if kind == "datetime":
            assert str(got[col].dtype) == "datetime64[ns, UTC]", col
    assert got["is_current"].all() and (got["run_id"] == "run-1").all()
    assert (got["evaluated_at"] == T0 + pd.Timedelta(days=30)).all()
    assert got["rule_id"].dtype == "int64" and got["user_acted"].dtype == bool
    # filters
    assert store.current_audits(horizons=["24H"])["horizon"].unique().tolist() == ["24H"]
    assert store.current_audits(insight_ids=["ins000001"])["insight_id"].tolist() == [
        "ins000001", "ins000001"]
    assert len(store.current_audits(start=T0 + pd.Timedelta(hours=1), end=T0 + pd.Timedelta(
        hours=2))) == 2
    assert store.current_audits(outcomes=["needs_review"])["needs_review_reason"].tolist() == [
        "hole"]
    assert store.current_audits(symbols=["GBPUSD"]).empty
    with pytest.raises(ValueError, match="start"):
        store.current_audits(start=pd.Timestamp("2024-03-04"))


def test_identical_rerun_is_unchanged(store, make_audits) -> None:
    a = make_audits(4, horizons=("1H", "4H"))
    store.upsert_audits(a, run_id="r1")
    assert store.upsert_audits(a, run_id="r2") == {
        "inserted": 0, "refreshed": 0, "unchanged": 8, "superseded": 0}
    assert _rows(store) == 8
    assert (store.current_audits()["run_id"] == "r1").all()  # nothing was written


def test_changed_hashes_with_same_metrics_refresh_in_place(store, make_audits) -> None:
    a = make_audits(2, slippage_pips=np.nan)
    store.upsert_audits(a, run_id="r1", evaluated_at=T0 + pd.Timedelta(days=1))
    before = store.audit_history("ins000000", "1H")
    b = a.copy()
    b.loc[0, ["candles_hash", "candle_blocks", "snapshot_hash"]] = [H1, f"{H1},{H2}", H2]
    b.loc[0, "rule_snapshot"] = '{"rule_id": 1, "success_rr_ratio": 2.0, "notes": "v2"}'
    b.loc[0, "rule_hash"] = H2
    b.loc[0, "high_price"] = 1.2  # not a compared metric: taken over with the refresh
    counts = store.upsert_audits(b, run_id="r2", evaluated_at=T0 + pd.Timedelta(days=2))
    assert counts == {"inserted": 0, "refreshed": 1, "unchanged": 1, "superseded": 0}
    assert _rows(store) == 2
    after = store.audit_history("ins000000", "1H")
    assert len(after) == 1 and after["id"].iat[0] == before["id"].iat[0]
    row = after.iloc[0]
    assert (row.candles_hash, row.rule_hash, row.candle_blocks) == (H1, H2, f"{H1},{H2}")
    assert row.rule_snapshot.endswith('"notes": "v2"}') and row.high_price == 1.2
    assert row.evaluated_at == T0 + pd.Timedelta(days=2) and row.run_id == "r2"
    assert row.is_current
    # the refreshed key is now the current one: the same input again is unchanged
    assert store.upsert_audits(b)["unchanged"] == 2


def test_changed_outcome_adds_history_and_keeps_one_current(store, make_audits) -> None:
    a = make_audits(3)
    store.upsert_audits(a, run_id="r1")
    b = a.copy()
    b.loc[1, ["outcome", "replay_outcome", "exit_reason"]] = ["failed", "failed", "stop"]
    b.loc[1, ["exit_price", "pnl_pct"]] = [1.099, -0.09090909090909091]
    b.loc[1, "candles_hash"] = H1
    assert store.upsert_audits(b, run_id="r2") == {
        "inserted": 1, "refreshed": 0, "unchanged": 2, "superseded": 1}
    assert _rows(store) == 4
    hist = store.audit_history("ins000001", "1H")
    assert hist["outcome"].tolist() == ["succeeded", "failed"]
    assert hist["is_current"].tolist() == [False, True]
    assert hist["run_id"].tolist() == ["r1", "r2"]
    cur = store.current_audits(insight_ids=["ins000001"])
    assert cur["outcome"].tolist() == ["failed"] and cur["candles_hash"].tolist() == [H1]
    assert all(n == 1 for *_, n in _current_per_key(store))
    # a float metric one ulp away is a change too (exact comparison)
    c = b.copy()
    c.loc[0, "pnl_pct"] = np.nextafter(c.loc[0, "pnl_pct"], 1.0)
    c.loc[0, "candles_hash"] = H2
    assert store.upsert_audits(c)["inserted"] == 1
    assert all(n == 1 for *_, n in _current_per_key(store))


def test_flip_back_reuses_the_history_row_with_that_key(store, make_audits) -> None:
    first = make_audits(1)
    second = first.assign(outcome="failed", replay_outcome="failed", candles_hash=H1)
    store.upsert_audits(first)
    store.upsert_audits(second)
    # back to the first candles: the unique key exists as history, so it becomes current again
    assert store.upsert_audits(first) == {
        "inserted": 1, "refreshed": 0, "unchanged": 0, "superseded": 1}
    hist = store.audit_history("ins000000", "1H")
    assert len(hist) == 2
    assert hist.set_index("candles_hash")["is_current"].to_dict() == {"b" * 64: True, H1: False}
    # refreshed onto a key a history row holds: that row becomes current, no third row
    third = first.assign(candles_hash=H1)  # the current row's metrics, a history row's key
    assert store.upsert_audits(third) == {
        "inserted": 0, "refreshed": 1, "unchanged": 0, "superseded": 1}
    hist = store.audit_history("ins000000", "1H")
    assert len(hist) == 2
    assert hist.set_index("candles_hash")["is_current"].to_dict() == {"b" * 64: False, H1: True}
    assert hist.set_index("candles_hash").loc[H1, "outcome"] == "succeeded"


def test_pending_gaining_candles_refreshes_without_history(store, make_audits) -> None:
    a = make_audits(1, horizons=("24H",), outcome="pending", replay_outcome="pending",
                    exit_reason="", exit_price=1.1003, pnl_pct=0.027, candles_hash=H1)
    a["exit_time"] = T0 + pd.Timedelta(hours=3)
    store.upsert_audits(a)
    for hours in (4, 5, 6):  # sensor ticks: more candles, new hash, moving provisional metrics
        tick = a.assign(candles_hash=replay_hash(hours), exit_price=1.1 + hours * 1e-4,
                        pnl_pct=hours * 0.01, exit_time=T0 + pd.Timedelta(hours=hours))
        assert store.upsert_audits(tick)["refreshed"] == 1
    assert _rows(store) == 1
    row = store.current_audits().iloc[0]
    assert row.exit_time == T0 + pd.Timedelta(hours=6) and row.outcome == "pending"
    # settling is a real change: history row + new current
    done = a.assign(outcome="succeeded", replay_outcome="succeeded", exit_reason="target",
                    candles_hash=replay_hash(7))
    assert store.upsert_audits(done) == {
        "inserted": 1, "refreshed": 0, "unchanged": 0, "superseded": 1}
    assert _rows(store) == 2


def replay_hash(i: int) -> str:
    return f"{i:064x}"


def test_bad_audit_frames_are_refused_with_the_row_named(store, make_audits) -> None:
    a = make_audits(2)
    with pytest.raises(ValueError, match="snapshot_hash"):
        store.upsert_audits(a.drop(columns=["snapshot_hash"]))
    with pytest.raises(ValueError, match="ins000001"):
        store.upsert_audits(pd.concat([a, a.iloc[[1]]]))
    naive = a.copy()
    naive["window_end"] = naive["window_end"].astype(object)
    naive.loc[1, "window_end"] = "2024-03-04 02:00"
    with pytest.raises(ValueError, match="window_end of row 'ins000001' is naive"):
        store.upsert_audits(naive)
    with pytest.raises(ValueError, match="candles_hash is blank"):
        store.upsert_audits(a.assign(candles_hash=""))
    assert _rows(store) == 0


def test_pending_ready_once_candles_pass_window_end(store, make_audits, make_candles) -> None:
    created = T0 + pd.Timedelta(hours=1)
    a = make_audits(4, horizons=("1H",), start=created, outcome="pending",
                    replay_outcome="pending", exit_reason="")
    a["symbol"] = ["EURUSD", "EURUSD", "GBPUSD", "EURUSD"]
    a.loc[1, ["outcome", "replay_outcome"]] = ["succeeded", "succeeded"]  # settled: never listed
    a.loc[3, ["status", "outcome"]] = ["filtered", "filtered_out"]  # replay still pending
    # labeled with candles up to 01:30 (insight 0) / 04:30 (insight 3, created 04:00)
    a["candles_until"] = a["created_at"] + pd.Timedelta(minutes=30)
    a["exit_time"] = pd.NaT  # pending: no exit yet
    store.upsert_audits(a)
    assert store.pending_ready().empty  # no candles at all
    store.put_candles(make_candles(start=T0, periods=90))  # 1m bars through 01:29, end 01:30
    assert store.pending_ready().empty  # nothing beyond what insight 0 was labeled with
    store.put_candles(make_candles(start=T0, periods=100))  # end 01:40: could settle it now
    ready = store.pending_ready()
    assert ready["insight_id"].tolist() == ["ins000000"]
    assert ready.columns.tolist()[:2] == ["insight_id", "horizon"]
    assert {"created_at", "window_end"} <= set(ready.columns)
    store.upsert_audits(a.iloc[[0]].assign(candles_until=T0 + pd.Timedelta(minutes=100),
                                           candles_hash=H1))
    assert store.pending_ready().empty  # relabeled with everything there is
    # hourly candles through 05:00 end past insight 3's window_end (05:00): it is ready
    store.put_candles(make_candles("EURUSD", "1h", start=T0, periods=5))
    ready = store.pending_ready()
    assert ready["insight_id"].tolist() == ["ins000000", "ins000003"]
    assert ready.set_index("insight_id").loc["ins000003", "window_end"] == \
        T0 + pd.Timedelta(hours=5)
    assert "ins000002" not in ready["insight_id"].tolist()  # GBPUSD: no candles


def test_outcome_summary_counts_current_rows(store, make_audits) -> None:
    a = make_audits(5, horizons=("1H", "4H"))
    a.loc[[0, 2], "outcome"] = "failed"
    a.loc[3, "outcome"] = "pending"
    store.upsert_audits(a)
    store.upsert_audits(a.assign(outcome="neutral", candles_hash=H1).iloc[[9]])  # supersedes
    got = store.outcome_summary()
    assert got.values.tolist() == [["1H", "succeeded", 3], ["1H", "failed", 2],
                                   ["4H", "succeeded", 3], ["4H", "neutral", 1],
                                   ["4H", "pending", 1]]
    assert store.outcome_summary(start=T0 + pd.Timedelta(hours=4))["count"].sum() == 2


def test_concurrent_writers_keep_one_current_row(db_url, make_audits) -> None:
    a = make_audits(50, horizons=("1H", "4H"))
    b = a.assign(outcome="failed", candles_hash=H1)
    stores = [AuditStore(db_url) for _ in range(2)]
    stores[0].migrate()
    batches, errors = race(
        [lambda s=s, f=f: [s.upsert_audits(f) for _ in range(3)] for s, f in zip(stores, (a, b))]
    )
    for s in stores:
        s.close()
    assert not errors, errors
    check = AuditStore(db_url)
    assert all(n == 1 for *_, n in _current_per_key(check))
    assert len(_current_per_key(check)) == 100
    assert _rows(check) == 200
    assert sum(r["inserted"] for batch in batches for r in batch) >= 200
    check.close()


def test_50k_audits_upsert_insert_refresh_supersede(store, make_audits) -> None:
    # 50,000 on SQLite (the embedded default); 20,000 on PostgreSQL keeps the suite short.
    # Timings: benchmarks/bench_store.py
    n = 12_500 if store.dialect == "sqlite" else 5_000
    a = make_audits(n, horizons=("1H", "4H", "24H", "7D"))
    total, changed = 4 * n, n  # the first `changed` rows change outcome, the rest refresh
    assert store.upsert_audits(a)["inserted"] == total
    assert store.upsert_audits(a)["unchanged"] == total
    b = a.assign(candles_hash=H1)
    b.loc[:changed - 1, "outcome"] = "failed"
    assert store.upsert_audits(b) == {"inserted": changed, "refreshed": total - changed,
                                      "unchanged": 0, "superseded": changed}
    assert _rows(store) == total + changed
    assert all(n == 1 for *_, n in _current_per_key(store))


def test_reviews_attach_to_the_current_audit(store, make_audits) -> None:
    a = make_audits(2, horizons=("4H",), outcome="needs_review", needs_review=True,
                    needs_review_reason="hole: 300 minutes of candles missing")
    store.upsert_audits(a)
    rid = store.add_review("ins000001", "4h", "carol", "broker outage; candles re-imported",
                           decision="data_issue")
    reviews = store.read_reviews()
    history = store.audit_history("ins000001", "4H")
    assert reviews[["id", "insight_id", "horizon", "decision", "reviewer"]].values.tolist() == [
        [rid, "ins000001", "4H", "data_issue", "carol"]]
    assert reviews["audit_id"].iloc[0] == history.loc[history["is_current"], "id"].iloc[0]
    with pytest.raises(ValueError, match="decision 'maybe' is not one of"):
        store.add_review("ins000001", "4H", "carol", "", decision="maybe")
    with pytest.raises(ValueError, match="no current audit"):
        store.add_review("nope", "4H", "carol", "")
    with pytest.raises(ValueError, match="reviewer name is needed"):
        store.add_review("ins000000", "4H", " ", "")
    assert len(store.read_reviews(["ins000000"])) == 0
