"""Audit store, migration 0002: news events, market regimes, pattern checks, RCA findings, SHAP
explanations, the retrain-request audit trail, alias moves, A/B assignments (DESIGN.md 2a
"Learning loop")."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
import sqlalchemy as sa

from autopsy_assets.domain import regimes as regimes_mod
from autopsy_assets.store import AliasMoveConflict, AuditStore, TransitionConflict
from autopsy_assets.store import db as store_db
from autopsy_tests.store.race import race

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")
H1 = "1" * 64


def _count(store: AuditStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


# ----------------------------------------------------------------------------- news

def test_news_round_trip_and_upsert(store) -> None:
    news = pd.DataFrame({
        "event_id": ["nfp-2024-03", "ecb-2024-03", "boj-2024-03"],
        "ts": [T0 + pd.Timedelta(hours=13, minutes=30), T0 + pd.Timedelta(hours=12, minutes=15),
               T0 + pd.Timedelta(days=1, microseconds=250)],
        "currencies": [["usd"], "EUR|usd", "jpy, USD"],
        "impact": ["High", "medium", "LOW"],
        "title": ["Non-Farm Payrolls", "ECB rate decision\tstatement", "BoJ minutes"],
        "source": ["forexfactory", None, "forexfactory"],
    })
    assert store.put_news(news) == 3
    got = store.read_news()
    assert got.columns.tolist() == ["event_id", "ts", "currencies", "impact", "title", "source"]
    assert got["event_id"].tolist() == ["ecb-2024-03", "nfp-2024-03", "boj-2024-03"]  # by ts
    assert got["currencies"].tolist() == [["EUR", "USD"], ["USD"], ["JPY", "USD"]]
    assert got["impact"].tolist() == ["medium", "high", "low"]
    assert got["title"].iat[0] == "ECB rate decision\tstatement"
    assert got["source"].tolist() == ["", "forexfactory", "forexfactory"]
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]"
    assert got["ts"].iat[2] == T0 + pd.Timedelta(days=1, microseconds=250)
    # upsert by event_id: the revised title wins, nothing is duplicated
    assert store.put_news(news.iloc[[0]].assign(title="NFP (revised)", currencies="USD")) == 1
    got = store.read_news().set_index("event_id")
    assert len(got) == 3 and got.loc["nfp-2024-03", "title"] == "NFP (revised)"
    assert store.read_news(start=T0 + pd.Timedelta(hours=13), end=T0 + pd.Timedelta(days=1)
                           )["event_id"].tolist() == ["nfp-2024-03"]
    # bad rows are refused, naming the event
    with pytest.raises(ValueError, match="'boj-2024-03': impact 'huge'"):
        store.put_news(news.assign(impact=["high", "low", "huge"]))
    naive = news.assign(ts=["2024-03-04T13:30:00Z", "2024-03-04 12:15", "2024-03-05T00:00Z"])
    with pytest.raises(ValueError, match="ts of row 'ecb-2024-03' is naive"):
        store.put_news(naive)
    with pytest.raises(ValueError, match="impact"):
        store.put_news(news.drop(columns="impact"))
    assert _count(store, "news_events") == 3


# ----------------------------------------------------------------------------- regimes

def test_store_regimes_match_the_domain() -> None:
    assert store_db.REGIMES == regimes_mod.REGIMES


def test_regimes_round_trip_derived_and_feed(store, make_candles) -> None:
    candles = pd.concat([make_candles("EURUSD", "1m", periods=400, seed=1),
                         make_candles("GBPUSD", "1m", periods=400, seed=2)], ignore_index=True)
    derived = regimes_mod.derive_regimes(candles, window=12, min_history=30)
    known = derived[derived["regime"].notna()].reset_index(drop=True)
    assert 0 < len(known) < len(derived)  # warm-up bars have no regime
    assert store.put_regimes(derived) == len(known)  # warm-up bars are not stored
    feed = pd.DataFrame({"symbol": ["XAUUSD", "XAUUSD"],
                         "ts": [T0, T0 + pd.Timedelta(hours=1)],
                         "regime": ["volatile", "Ranging"], "confidence": [91.25, 57.5],
                         "source": ["feed", "feed"]})
    assert store.put_regimes(feed) == 2
    got = store.read_regimes()
    assert got.columns.tolist() == ["symbol", "timeframe", "ts", "ts_end", "regime",
                                    "confidence", "source"]
    eur = got[got["source"] == "derived"].reset_index(drop=True)
    want = known[["symbol", "timeframe", "ts", "ts_end", "regime", "confidence"]]
    pdt.assert_frame_equal(eur.drop(columns="source"), want, check_exact=True,
                           check_dtype=False)
    assert str(eur["ts_end"].dtype) == "datetime64[ns, UTC]"
    xau = got[got["symbol"] == "XAUUSD"]
    assert xau["timeframe"].tolist() == ["", ""] and xau["ts_end"].isna().all()
    assert xau["regime"].tolist() == ["volatile", "ranging"]
    assert xau["confidence"].tolist() == [91.25, 57.5]
    # filters
    assert set(store.read_regimes(symbols=["GBPUSD"])["symbol"]) == {"GBPUSD"}
    window = store.read_regimes(start=T0, end=T0 + pd.Timedelta(hours=1))
    assert window["ts"].min() >= T0 and window["ts"].max() < T0 + pd.Timedelta(hours=1)
    # upsert: the same key again overwrites
    assert store.put_regimes(feed.iloc[[1]].assign(regime="trending_down",
                                                   confidence=80.0)) == 1
    xau = store.read_regimes(symbols=["XAUUSD"])
    assert xau["regime"].tolist() == ["volatile", "trending_down"] and len(xau) == 2
    with pytest.raises(ValueError, match=r"XAUUSD\|\|2024-03-04T00:00:00\+00:00.*sideways"):
        store.put_regimes(feed.assign(regime="sideways"))
    with pytest.raises(ValueError, match="confidence 120"):
        store.put_regimes(feed.assign(confidence=[120.0, 50.0]))
    with pytest.raises(ValueError, match="source 'vendor'"):
        store.put_regimes(feed.assign(source="vendor"))


# ----------------------------------------------------------------------------- pattern checks

def test_pattern_checks_replace_per_insight_and_replay_verified(store) -> None:
    bos_ev = {"matched_kind": "CHOCH", "ts": "2024-03-04T08:00:00+00:00", "top": 1.10231,
              "bars_before": np.int64(3)}
    checks = pd.DataFrame({
        "insight_id": ["i1", "i1", "i2"],
        "pattern": ["BOS", "fvg", "OB"],
        "verified": [True, False, True],
        "evidence": [bos_ev, '{"reason": "no bullish FVG confirmed in the 20 bars"}',
                     {"ts": pd.Timestamp("2024-03-04 07:00", tz="UTC"), "bottom": 1.0991}],
    })
    assert store.put_pattern_checks(checks, run_id="run-7") == 3
    got = store.read_pattern_checks()
    assert got[["insight_id", "pattern", "verified"]].values.tolist() == [
        ["i1", "BOS", True], ["i1", "FVG", False], ["i2", "OB", True]]
    assert got["evidence"].iat[0] == {"matched_kind": "CHOCH", "ts": "2024-03-04T08:00:00+00:00",
                                      "top": 1.10231, "bars_before": 3}
    assert got["evidence"].iat[1] == {"reason": "no bullish FVG confirmed in the 20 bars"}
    assert got["evidence"].iat[2] == {"ts": "2024-03-04T07:00:00+00:00", "bottom": 1.0991}
    assert got["verified"].dtype == bool and (got["run_id"] == "run-7").all()
    assert str(got["checked_at"].dtype) == "datetime64[ns, UTC]"
    rv = store.replay_verified()
    assert rv.name == "replay_verified" and rv.index.name == "insight_id"
    assert rv.to_dict() == {"i1": False, "i2": True}
    rv = store.replay_verified(["i2", "i9", "i1"])
    assert rv.index.tolist() == ["i2", "i9", "i1"]
    assert rv.iat[0] and rv.isna().iat[1] and not rv.iat[2]
    # re-checking i1 replaces all of its rows; i2 is untouched
    assert store.put_pattern_checks(pd.DataFrame({"insight_id": ["i1"], "pattern": ["BOS"],
                                                  "verified": [1]})) == 1
    got = store.read_pattern_checks(["i1"])
    assert got["pattern"].tolist() == ["BOS"] and got["evidence"].tolist() == [{}]
    assert got["run_id"].tolist() == [None]
    assert store.replay_verified().to_dict() == {"i1": True, "i2": True}
    assert _count(store, "pattern_checks") == 2
    with pytest.raises(ValueError, match="'i3/BOS' is given twice"):
        store.put_pattern_checks(pd.DataFrame({"insight_id": ["i3", "i3"],
                                               "pattern": ["BOS", "bos"], "verified": True}))
    with pytest.raises(ValueError, match="'i3/OB': verified must be True or False"):
        store.put_pattern_checks(pd.DataFrame({"insight_id": ["i3"], "pattern": ["OB"],
                                               "verified": ["maybe"]}))
    with pytest.raises(ValueError, match="'i3/OB': evidence is not valid JSON"):
        store.put_pattern_checks(pd.DataFrame({"insight_id": ["i3"], "pattern": ["OB"],
                                               "verified": [True], "evidence": ["{oops"]}))
    assert _count(store, "pattern_checks") == 2


# ----------------------------------------------------------------------------- RCA

def _findings() -> pd.DataFrame:
    return pd.DataFrame({
        "insight_id": ["ins000000", "ins000000", "ins000000", "ins000001"],
        "horizon": ["1H", "1H", "24H", "1H"],
        "cause": ["news_shock", "volatility_spike", "unknown", "model_error"],
        "confidence": [82.5, 61.3, 55.0, 70.2],
        "rank": [1, 2, 1, 1],
        "summary": ["High-impact USD news 12 min before the stop",
                    "Range 2.4x its baseline", "No cause reached the threshold",
                    "Confidence 85 on a failed insight"],
        "evidence": ['{"event_id": "nfp-2024-03", "minutes": -12}',
                     {"ratio": 2.4171, "baseline_atr": 0.00031},
                     {"best_cause": "news_shock", "best_confidence": 41.0},
                     {"confidence": 85.0, "skipped": ["news_shock: no news source"]}],
    })


def _audit_ids(store: AuditStore) -> dict[tuple[str, str], int]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT insight_id, horizon, id FROM audits "
                                    "WHERE is_current")).all()
    return {(i, h): int(n) for i, h, n in rows}


def test_replace_rca_links_current_audits_and_replaces(store, make_audits) -> None:
    audits = make_audits(2, horizons=("1H", "24H"), outcome="failed", replay_outcome="failed",
                         exit_reason="stop", strategy="smc")
    store.upsert_audits(audits)
    ids = _audit_ids(store)
    assert store.replace_rca(_findings(), run_id="rca-1") == 4
    got = store.read_rca()
    assert got.columns.tolist() == [
        "id", "audit_id", "insight_id", "horizon", "cause", "confidence", "rank", "summary",
        "evidence", "snapshot_hash", "analysed_at", "run_id", "created_at", "symbol",
        "strategy", "outcome", "is_current"]
    assert got[["insight_id", "horizon", "rank"]].values.tolist() == [
        ["ins000000", "1H", 1], ["ins000000", "1H", 2], ["ins000000", "24H", 1],
        ["ins000001", "1H", 1]]
    assert got["audit_id"].tolist() == [ids[("ins000000", "1H")], ids[("ins000000", "1H")],
                                        ids[("ins000000", "24H")], ids[("ins000001", "1H")]]
    assert got["confidence"].tolist() == [82.5, 61.3, 55.0, 70.2]
    assert got["rank"].dtype == "int64" and got["audit_id"].dtype == "int64"
    assert got["evidence"].iat[0] == {"event_id": "nfp-2024-03", "minutes": -12}
    assert got["evidence"].iat[1] == {"ratio": 2.4171, "baseline_atr": 0.00031}
    assert got["snapshot_hash"].tolist() == ["d" * 64] * 4
    assert got["created_at"].tolist() == [T0, T0, T0, T0 + pd.Timedelta(hours=1)]
    assert (got["symbol"] == "EURUSD").all() and (got["strategy"] == "smc").all()
    assert (got["outcome"] == "failed").all() and got["is_current"].all()
    assert (got["run_id"] == "rca-1").all()
    assert str(got["analysed_at"].dtype) == "datetime64[ns, UTC]"
    # filters
    assert store.read_rca(primary_only=True)["cause"].tolist() == [
        "news_shock", "unknown", "model_error"]
    assert store.read_rca(causes=["model_error"])["insight_id"].tolist() == ["ins000001"]
    assert store.read_rca(insight_ids=["ins000001"])["cause"].tolist() == ["model_error"]
    assert len(store.read_rca(start=T0 + pd.Timedelta(minutes=30))) == 1
    # re-analysis of one key replaces its findings: no duplicates, other keys untouched
    again = _findings().iloc[[1]].assign(rank=1, confidence=66.6)
    assert store.replace_rca(again, run_id="rca-2") == 1
    got = store.read_rca()
    assert len(got) == 3 == _count(store, "audit_rca")
    key = got[(got["insight_id"] == "ins000000") & (got["horizon"] == "1H")]
    assert key[["cause", "confidence", "rank", "run_id"]].values.tolist() == [
        ["volatility_spike", 66.6, 1, "rca-2"]]
    # a re-label supersedes the audit: the findings keep pointing at the row they analysed
    old_id = ids[("ins000001", "1H")]
    relabel = audits[(audits["insight_id"] == "ins000001") & (audits["horizon"] == "1H")]
    relabel = relabel.assign(outcome="neutral", replay_outcome="neutral", candles_hash=H1,
                             snapshot_hash=H1)
    assert store.upsert_audits(relabel)["superseded"] == 1
    new_id = _audit_ids(store)[("ins000001", "1H")]
    assert new_id != old_id
    stale = store.read_rca(insight_ids=["ins000001"])
    assert stale["audit_id"].tolist() == [old_id] and not stale["is_current"].iat[0]
    assert stale["outcome"].tolist() == ["failed"]  # what the analysed row said
    fresh = _findings().iloc[[3]].assign(cause="regime_drift", confidence=58.0)
    assert store.replace_rca(fresh) == 1
    now = store.read_rca(insight_ids=["ins000001"])
    assert now["audit_id"].tolist() == [new_id] and now["is_current"].all()
    assert now["snapshot_hash"].tolist() == [H1] and now["outcome"].tolist() == ["neutral"]
    assert _count(store, "audit_rca") == 3


def test_replace_rca_refuses_rows_without_a_current_audit(store, make_audits) -> None:
    store.upsert_audits(make_audits(1, outcome="failed"))
    store.replace_rca(_findings().iloc[[0]])
    bad = _findings().iloc[[0, 3]].assign(insight_id=["ins000000", "ins000404"])
    with pytest.raises(ValueError, match="'ins000404/1H'.*no current audit"):
        store.replace_rca(bad)
    with pytest.raises(ValueError, match="'ins000000/1H': rank 1 is given twice"):
        store.replace_rca(_findings().iloc[[0, 1]].assign(rank=1))
    with pytest.raises(ValueError, match="confidence 'high' is not a number"):
        store.replace_rca(_findings().iloc[[0]].assign(confidence="high"))
    with pytest.raises(ValueError, match="evidence must be an object"):
        store.replace_rca(_findings().iloc[[0]].assign(evidence="[1, 2]"))
    got = store.read_rca()  # nothing changed
    assert got["cause"].tolist() == ["news_shock"] and _count(store, "audit_rca") == 1


# ----------------------------------------------------------------------------- explanations

def test_explanations_round_trip_and_upsert(store) -> None:
    contrib = {"ai_score": 0.41234567890123, "hour": -0.0312, "session_london": 1e-17,
               "confidence": -0.2875, "spread_pips": 0.0625, "atr_ratio": 0.11}
    base = -0.2204831
    df = pd.DataFrame({
        "insight_id": ["i1", "i2"], "horizon": ["24H", "24H"],
        "model_name": ["autopsy-meta-smc"] * 2, "model_version": [3, "3"],
        "base_value": [base, base], "output": [base + sum(contrib.values()), 0.5],
        "contributions": [contrib, json.dumps({"ai_score": -0.25, "hour": 0.75})],
        "summary": ["ai_score pushed towards success", ""],
    })
    df.loc[1, "top_features"] = None
    assert store.put_explanations(df, run_id="shap-1") == 2
    got = store.read_explanations()
    assert got.columns.tolist() == [
        "id", "insight_id", "horizon", "model_name", "model_version", "base_value", "output",
        "contributions", "top_features", "summary", "explained_at", "run_id"]
    row = got.iloc[0]
    assert row.contributions == contrib  # floats exact
    assert row.base_value == base and row.output == base + sum(contrib.values())
    assert row.model_version == "3" and got["model_version"].iat[1] == "3"
    assert row.top_features == ["ai_score", "confidence", "atr_ratio", "spread_pips", "hour"]
    assert got["top_features"].iat[1] == ["hour", "ai_score"]
    assert (got["run_id"] == "shap-1").all()
    # upsert by (insight_id, horizon, model_name, model_version); a new version is a new row
    first_id = int(row.id)
    upd = df.iloc[[0]].assign(base_value=-0.1, top_features=[["hour"]], summary="v3 again")
    assert store.put_explanations(upd) == 1
    assert store.put_explanations(df.iloc[[0]].assign(model_version=4.0)) == 1
    got = store.read_explanations(insight_ids=["i1"])
    assert got["model_version"].tolist() == ["3", "4"]
    assert got["id"].iat[0] == first_id and got["base_value"].iat[0] == -0.1
    assert got["top_features"].iat[0] == ["hour"] and got["summary"].iat[0] == "v3 again"
    assert got["run_id"].iat[0] is None
    assert len(store.read_explanations(model_version=3)) == 2
    assert store.read_explanations(model_name="autopsy-meta-breakout").empty
    assert _count(store, "explanations") == 3
    with pytest.raises(ValueError, match="'i1/24H/autopsy-meta-smc/3': contributions is not "
                                         "valid JSON"):
        store.put_explanations(df.iloc[[0]].assign(contributions="{ai_score: 1}"))
    with pytest.raises(ValueError, match="model_version is blank"):
        store.put_explanations(df.iloc[[0]].assign(model_version=None))


# ----------------------------------------------------------------------------- audit trail

CHAIN = [("", "requested"), ("requested", "simulating"), ("simulating", "pending_approval"),
         ("pending_approval", "approved")]


def test_transition_chain_and_conflicts(store) -> None:
    assert store.latest_status("req-1") is None
    for frm, to in CHAIN:
        actor = "bob" if to == "approved" else "alice"
        store.record_transition("req-1", frm, to, actor, reason=f"{frm or 'new'} done")
        assert store.latest_status("req-1") == to
    trail = store.trail("req-1")
    assert trail.columns.tolist() == ["id", "request_id", "from_status", "to_status", "actor",
                                      "reason", "at"]
    assert list(zip(trail["from_status"], trail["to_status"])) == CHAIN
    assert trail["actor"].tolist() == ["alice", "alice", "alice", "bob"]
    assert trail["at"].is_monotonic_increasing and str(trail["at"].dtype) == \
        "datetime64[ns, UTC]"
    # approving twice: the request is no longer pending_approval
    with pytest.raises(TransitionConflict, match="'req-1'.*expected status 'pending_approval', "
                                                  "actual status 'approved'") as exc:
        store.record_transition("req-1", "pending_approval", "approved", "bob")
    assert isinstance(exc.value, ValueError)
    assert (exc.value.request_id, exc.value.expected, exc.value.actual) == (
        "req-1", "pending_approval", "approved")
    with pytest.raises(TransitionConflict, match="actual status 'approved'"):
        store.record_transition("req-1", "", "requested", "alice")  # created twice
    # skipping a step: requested -> pending_approval without simulating
    store.record_transition("req-2", "", "requested", "carol")
    with pytest.raises(TransitionConflict, match="'req-2' cannot move from 'simulating' to "
                                                  "'pending_approval'.*actual status "
                                                  "'requested'"):
        store.record_transition("req-2", "simulating", "pending_approval", "carol")
    with pytest.raises(TransitionConflict, match="actual status none"):
        store.record_transition("req-3", "requested", "simulating", "carol")
    assert store.trail("req-2")["to_status"].tolist() == ["requested"]
    assert store.latest_status("req-3") is None
    assert len(store.trail()) == 5 == _count(store, "audit_trail")
    with pytest.raises(ValueError, match="names no actor"):
        store.record_transition("req-2", "requested", "simulating", " ")


def test_unique_constraint_backstops_a_stale_check(store, monkeypatch) -> None:
    for frm, to in CHAIN[:3]:
        store.record_transition("req-1", frm, to, "alice")
    store.record_transition("req-1", "pending_approval", "rejected", "bob")
    # a writer whose check saw a stale status (as one outside the lock would): the unique
    # (request_id, from_status) refuses the second transition out of pending_approval
    monkeypatch.setattr(AuditStore, "_latest_status",
                        staticmethod(lambda conn, rid: "pending_approval"))
    with pytest.raises(TransitionConflict, match="'req-1'") as exc:
        store.record_transition("req-1", "pending_approval", "approved", "bob")
    assert isinstance(exc.value.__cause__, sa.exc.IntegrityError)
    monkeypatch.undo()
    assert store.trail("req-1")["to_status"].tolist() == [
        "requested", "simulating", "pending_approval", "rejected"]


def test_racing_approve_and_reject_one_wins(db_url) -> None:
    setup = AuditStore(db_url)
    rounds = 3
    for k in range(rounds):
        for frm, to in CHAIN[:3]:
            setup.record_transition(f"race-{k}", frm, to, "alice")
    stores = [AuditStore(db_url) for _ in range(2)]
    won: list[tuple[int, str]] = []
    lost: list[BaseException] = []
    errors: list[BaseException] = []

    def decide(store: AuditStore, k: int, to: str) -> tuple[int, str]:
        store.record_transition(f"race-{k}", "pending_approval", to, "bob")
        return k, to

    for k in range(rounds):
        results, raised = race([
            lambda s=s, to=to, k=k: decide(s, k, to)
            for s, to in zip(stores, ("approved", "rejected"))
        ])
        won += results
        lost += [e for e in raised if isinstance(e, TransitionConflict)]
        errors += [e for e in raised if not isinstance(e, TransitionConflict)]
    for s in stores:
        s.close()
    assert not errors, errors
    assert sorted(k for k, _ in won) == list(range(rounds)) and len(lost) == rounds
    for k, to in won:
        trail = setup.trail(f"race-{k}")
        assert len(trail) == 4  # exactly one row added
        assert setup.latest_status(f"race-{k}") == to == trail["to_status"].iat[-1]
    setup.close()


# ----------------------------------------------------------------------------- alias moves

def test_alias_moves_sequence_and_stale_expected_seq(store) -> None:
    name = "autopsy-meta-smc"
    assert store.last_alias_seq(name) == 0
    assert store.record_alias_move(name, "champion", None, 1, "demo-reviewer",
                                   reason="first model", expected_seq=0) == 1
    assert store.record_alias_move(name, "challenger", None, "2", "demo-reviewer") == 2
    assert store.record_alias_move(name, "champion", "1", 2, "demo-reviewer",
                                   reason="promotion", expected_seq=2) == 3
    assert store.last_alias_seq(name) == 3
    # a caller that read seq 2 before the promotion is refused and nothing is written
    with pytest.raises(AliasMoveConflict, match="expected the last move to be #2, but it is #3"
                       ) as exc:
        store.record_alias_move(name, "champion", "2", "1", "ops", reason="rollback",
                                expected_seq=2)
    assert isinstance(exc.value, ValueError) and exc.value.actual_seq == 3
    assert store.last_alias_seq(name) == 3
    # another model has its own sequence
    assert store.record_alias_move("autopsy-meta-breakout", "champion", None, 7, "ops") == 1
    moves = store.alias_moves(name)
    assert moves.columns.tolist() == ["model_name", "seq", "alias", "from_version",
                                      "to_version", "actor", "reason", "at"]
    assert moves["seq"].tolist() == [1, 2, 3]
    assert moves["alias"].tolist() == ["champion", "challenger", "champion"]
    assert moves["from_version"].tolist() == [None, None, "1"]
    assert moves["to_version"].tolist() == ["1", "2", "2"]
    assert moves["reason"].tolist() == ["first model", "", "promotion"]
    assert str(moves["at"].dtype) == "datetime64[ns, UTC]"
    assert store.alias_moves()["model_name"].tolist() == ["autopsy-meta-breakout"] + [name] * 3
    assert _count(store, "alias_moves") == 4


def test_racing_alias_moves_serialise(db_url) -> None:
    stores = [AuditStore(db_url) for _ in range(2)]
    stores[0].record_alias_move("m", "champion", None, 1, "ops")
    won, lost = race([
        lambda s=s, to=to: s.record_alias_move("m", "champion", 1, to, "ops", expected_seq=1)
        for s, to in zip(stores, (2, 3))
    ])
    assert won == [2] and len(lost) == 1 and isinstance(lost[0], AliasMoveConflict)
    assert stores[0].alias_moves("m")["seq"].tolist() == [1, 2]
    for s in stores:
        s.close()


# ----------------------------------------------------------------------------- A/B

def test_ab_assignments_round_trip_and_upsert(store) -> None:
    df = pd.DataFrame({
        "insight_id": ["i1", "i2", "i1"], "model_name": ["autopsy-meta-smc",
                                                         "autopsy-meta-smc", "autopsy-meta-bo"],
        "arm": ["champion", "Challenger", "champion"], "share": [0.1, 0.1, 0.25],
        "model_version": [3, "4", np.nan],
        "assigned_at": [T0, T0 + pd.Timedelta(minutes=1, microseconds=7), pd.NaT],
    })
    assert store.put_ab_assignments(df) == 3
    got = store.read_ab_assignments()
    assert got.columns.tolist() == ["insight_id", "model_name", "arm", "share",
                                    "model_version", "assigned_at"]
    assert got[["insight_id", "model_name", "arm", "share", "model_version"]].values.tolist() \
        == [["i1", "autopsy-meta-bo", "champion", 0.25, None],
            ["i1", "autopsy-meta-smc", "champion", 0.1, "3"],
            ["i2", "autopsy-meta-smc", "challenger", 0.1, "4"]]
    assert got["assigned_at"].iat[2] == T0 + pd.Timedelta(minutes=1, microseconds=7)
    assert got["assigned_at"].notna().all()  # a missing time is the time of writing
    assert store.put_ab_assignments(df.iloc[[0]].assign(arm="challenger", model_version=4)) == 1
    got = store.read_ab_assignments(insight_ids=["i1"], model_name="autopsy-meta-smc")
    assert got[["arm", "model_version"]].values.tolist() == [["challenger", "4"]]
    assert _count(store, "ab_assignments") == 3
    with pytest.raises(ValueError, match="'i2/autopsy-meta-smc': arm 'control'"):
        store.put_ab_assignments(df.assign(arm=["champion", "control", "champion"]))
    with pytest.raises(ValueError, match="'i1/autopsy-meta-smc': share 10"):
        store.put_ab_assignments(df.assign(share=[10, 0.1, 0.1]))
