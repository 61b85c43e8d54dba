"""Audit store: insights, labeling rules, quarantine."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopsy_assets.store import RULE_COLUMNS

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")


def _insights(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "insight_id": [f"i{k}" for k in range(n)],
        "created_at": [T0 + pd.Timedelta(hours=k) for k in range(n)],
        "symbol": ["EURUSD", "GBPUSD", "EURUSD"][:n],
        "side": ["long", "short", "long"][:n],
        "entry_price": [1.1, 1.27, 1.1 + 1e-12][:n],
        "strategy": ["smc", "breakout", "smc"][:n],
        "patterns": [["BOS", "FVG"], "bos, ob", np.nan][:n],
        "ai_score": [71.5, np.nan, 88.0][:n],
    })


def test_insights_upsert_and_read_back(store) -> None:
    df = _insights()
    assert store.put_insights(df) == 3
    got = store.read_insights()
    assert got["insight_id"].tolist() == ["i0", "i1", "i2"]
    assert got["patterns"].tolist() == ["BOS|FVG", "BOS|OB", ""]
    assert got["entry_price"].tolist() == [1.1, 1.27, 1.1 + 1e-12]
    assert got["created_at"].tolist() == df["created_at"].tolist()
    assert str(got["created_at"].dtype) == "datetime64[ns, UTC]"
    assert got["timeframe"].tolist() == [None, None, None]
    assert got["status"].tolist() == ["published"] * 3 and not got["user_acted"].any()
    assert np.isnan(got["ai_score"].iat[1]) and got["filled_at"].isna().all()
    # upsert: changed fields overwrite, new ids are added
    more = pd.DataFrame({"insight_id": ["i1", "i9"], "created_at": [T0, T0 + pd.Timedelta(days=2)],
                         "symbol": ["GBPUSD", "XAUUSD"], "side": ["short", "long"],
                         "entry_price": [1.28, 2000.5], "timeframe": ["1h", ""],
                         "user_acted": [True, False], "fill_price": [1.2805, np.nan],
                         "filled_at": [T0 + pd.Timedelta(minutes=3), pd.NaT]})
    assert store.put_insights(more) == 2
    got = store.read_insights().set_index("insight_id")
    assert len(got) == 4
    assert got.loc["i1", "entry_price"] == 1.28 and got.loc["i1", "timeframe"] == "1h"
    assert got.loc["i1", "user_acted"] and got.loc["i1", "fill_price"] == 1.2805
    assert got.loc["i1", "filled_at"] == T0 + pd.Timedelta(minutes=3)
    assert got.loc["i9", "timeframe"] is None
    # filters
    assert store.read_insights(start=T0 + pd.Timedelta(hours=1), end=T0 + pd.Timedelta(days=1)
                               )["insight_id"].tolist() == ["i2"]
    assert store.read_insights(insight_ids=["i9", "i0", "nope"])["insight_id"].tolist() == [
        "i0", "i9"]
    assert store.read_insights(symbols=["EURUSD"], strategies=["smc"])["insight_id"].tolist() \
        == ["i0", "i2"]
    assert store.read_insights(insight_ids=[]).empty


def test_insights_with_naive_times_are_refused(store) -> None:
    df = _insights(2)
    df["created_at"] = ["2024-03-04T00:00:00+00:00", "2024-03-04 01:00"]
    with pytest.raises(ValueError, match="created_at of row 'i1' is naive"):
        store.put_insights(df)
    with pytest.raises(ValueError, match="entry_price"):
        store.put_insights(_insights().drop(columns=["entry_price"]))
    df["created_at"] = ["2024-03-04T00:00:00+00:00", "2024-03-04T03:00:00+02:00"]  # strings ok
    assert store.put_insights(df) == 2
    assert store.read_insights()["created_at"].tolist() == [T0, T0 + pd.Timedelta(hours=1)]


def test_rules_seed_once_then_edit_in_the_store(store) -> None:
    seed = pd.DataFrame({
        "rule_id": [1, 2, 3],
        "strategy": ["", "smc", None], "symbol": ["", "", "XAUUSD"],
        "timeframe": [np.nan, "1h", ""], "horizon": ["", "", "24H"],
        "success_rr_ratio": [2.0, 3.0, np.nan], "fail_sl_pips": [np.nan, 15.0, 150.0],
        "neutral_band_pips": [5.0, np.nan, np.nan], "fail_adverse_pct": [1.0, np.nan, np.nan],
        "priority": [0, 10, 5], "notes": ["catch-all", "", "gold day"],
    })
    assert store.seed_rules(seed) == 3
    assert store.seed_rules(seed) == 0  # the store is the source of truth from now on
    rules = store.read_rules()
    assert rules.columns.tolist() == list(RULE_COLUMNS)
    assert rules["rule_id"].tolist() == [1, 2, 3]
    assert rules["strategy"].tolist() == ["", "smc", ""]
    assert rules["timeframe"].tolist() == ["", "1h", ""]
    assert rules["horizon"].tolist() == ["", "", "24H"]
    assert rules["success_rr_ratio"].iloc[:2].tolist() == [2.0, 3.0]
    assert np.isnan(rules["success_tp_pips"]).all()
    assert rules["is_active"].all() and rules["priority"].tolist() == [0, 10, 5]
    # edit one rule, deactivate another, add a new one (id = max + 1)
    assert store.upsert_rule(rule_id=2, success_rr_ratio=2.5, created_by="alice") == 2
    assert store.upsert_rule(rule_id=3, is_active=False) == 3
    new_id = store.upsert_rule(strategy="breakout", success_tp_pips=30.0, fail_sl_pips=10.0,
                               horizon="", created_by="bob")
    assert new_id == 4
    active = store.read_rules().set_index("rule_id")
    assert active.index.tolist() == [1, 2, 4]
    assert active.loc[2, "success_rr_ratio"] == 2.5 and active.loc[2, "fail_sl_pips"] == 15.0
    assert active.loc[2, "created_by"] == "alice" and active.loc[2, "strategy"] == "smc"
    assert active.loc[4, "strategy"] == "breakout" and active.loc[4, "horizon"] == ""
    assert len(store.read_rules(active_only=False)) == 4
    with pytest.raises(ValueError, match="fail_sl_pip"):
        store.upsert_rule(rule_id=1, fail_sl_pip=3.0)


def test_quarantine_round_trip(store) -> None:
    rows = [
        {"source": "candles", "row_id": "EURUSD|1m|2024-03-04T00:03:00+00:00",
         "reason": "conflicting duplicate: same ts, different close",
         "payload": {"ts": T0 + pd.Timedelta(minutes=3), "close": np.float64(1.1),
                     "volume": np.int64(12), "spread": float("nan"), "tags": ("a", "b")}},
        {"source": "insights", "row_id": "i7", "reason": "created_at has no timezone",
         "created_at": "2024-03-04 01:00", "symbol": "EURUSD"},  # extra keys: the payload
        {"source": "insights", "row_id": None, "reason": "insight_id is blank"},
    ]
    assert store.quarantine(rows, run_id="run-9", partition_key="2024-03-04") == 3
    assert store.quarantine(pd.DataFrame([{"source": "news", "row_id": "n1",
                                           "reason": "impact is not low|medium|high"}])) == 1
    got = store.read_quarantine()
    assert got["source"].tolist() == ["candles", "insights", "insights", "news"]
    assert got["payload"].iat[0] == {"ts": "2024-03-04T00:03:00+00:00", "close": 1.1,
                                     "volume": 12, "spread": None, "tags": ["a", "b"]}
    assert got["payload"].iat[1] == {"created_at": "2024-03-04 01:00", "symbol": "EURUSD"}
    assert got["payload"].iat[2] is None and got["row_id"].iat[2] == ""
    assert got["run_id"].tolist()[:3] == ["run-9"] * 3 and got["run_id"].iat[3] is None
    assert got["partition_key"].iat[0] == "2024-03-04"
    assert str(got["quarantined_at"].dtype) == "datetime64[ns, UTC]"
    ins = store.read_quarantine(source="insights")
    assert ins["row_id"].tolist() == ["i7", ""]
    assert ins["reason"].iat[0] == "created_at has no timezone"
    with pytest.raises(ValueError, match="reason"):
        store.quarantine([{"source": "insights", "row_id": "x"}])
