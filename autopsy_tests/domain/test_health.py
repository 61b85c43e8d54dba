"""Strategy health KPIs (autopsy_assets.domain.health) on a hand-built audit frame, every number
worked out by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopsy_assets.domain.health import HEALTH_COLUMNS, strategy_health

T0 = pd.Timestamp("2018-03-05 00:00", tz="UTC")


@pytest.fixture()
def audits():
    rows = [
        # id, strategy, symbol, horizon, outcome, replay, pnl, drawdown, duration, current
        ("a1", "Zen", "EURUSD", "24H", "succeeded", "succeeded", 2.0, 0.2, 100, True),
        ("a2", "Zen", "EURUSD", "24H", "failed", "failed", -1.0, 1.0, 50, True),
        ("a3", "Zen", "EURUSD", "24H", "failed", "failed", -1.0, 1.2, 30, True),
        ("a4", "Zen", "EURUSD", "24H", "neutral", "neutral", 0.1, 0.4, 1440, True),
        ("a5", "Zen", "EURUSD", "24H", "filtered_out", "failed", -1.0, 1.0, 20, True),
        ("a6", "Zen", "EURUSD", "24H", "pending", "pending", np.nan, np.nan, np.nan, True),
        ("a7", "Zen", "GBPUSD", "24H", "succeeded", "succeeded", 3.0, 0.0, 200, True),
        ("a8", "Zen", "GBPUSD", "24H", "filtered_out", "succeeded", 2.0, 0.1, 60, True),
        ("a9", "Zen", "GBPUSD", "24H", "failed", "failed", -1.0, 0.9, 10, False),  # history
        ("b1", "Rev", "EURUSD", "24H", "failed", "failed", -0.5, 0.5, 40, True),
        ("b2", "Rev", "EURUSD", "24H", "needs_review", "needs_review", np.nan, np.nan, np.nan,
         True),
        ("a1", "Zen", "EURUSD", "4H", "failed", "failed", -1.0, 1.0, 240, True),
    ]
    cols = ["insight_id", "strategy", "symbol", "horizon", "outcome", "replay_outcome",
            "pnl_pct", "max_drawdown", "duration_minutes", "is_current"]
    return pd.DataFrame(rows, columns=cols)


def _row(t, strategy, symbol, horizon="24H"):
    r = t[(t["strategy"] == strategy) & (t["symbol"] == symbol) & (t["horizon"] == horizon)]
    assert len(r) == 1
    return r.iloc[0]


def test_kpis_per_strategy_and_symbol(audits):
    t = strategy_health(audits)
    assert list(t.columns) == list(HEALTH_COLUMNS)
    assert len(t) == 2 + 3 + 2       # 24H: Rev, Rev/EUR, Zen, Zen/EUR, Zen/GBP; 4H: Zen, Zen/EUR
    r = _row(t, "Zen", "EURUSD")
    assert r["level"] == "strategy_symbol"
    assert r["n_audited"] == 6
    assert (r["n_succeeded"], r["n_failed"], r["n_neutral"], r["n_filtered_out"], r["n_pending"],
            r["n_needs_review"]) == (1, 2, 1, 1, 1, 0)
    assert r["success_rate"] == pytest.approx(1 / 3)
    assert r["false_positive_rate"] == pytest.approx(2 / 3)
    assert r["expectancy"] == pytest.approx((2 - 1 - 1 + 0.1) / 4)     # resolved published only
    assert r["avg_drawdown"] == pytest.approx((0.2 + 1.0 + 1.2 + 0.4) / 4)
    assert r["avg_duration_minutes"] == pytest.approx((100 + 50 + 30 + 1440) / 4)
    assert r["filter_hit_rate"] == 1.0                               # a5 would have failed

    g = _row(t, "Zen", "GBPUSD")                                     # a9 is history: ignored
    assert g["n_audited"] == 2 and g["success_rate"] == 1.0 and g["false_positive_rate"] == 0.0
    assert g["filter_hit_rate"] == 0.0 and g["expectancy"] == 3.0

    z = _row(t, "Zen", "*")
    assert z["level"] == "strategy" and z["n_audited"] == 8
    assert z["success_rate"] == pytest.approx(2 / 4)
    assert z["expectancy"] == pytest.approx((2 - 1 - 1 + 0.1 + 3) / 5)
    assert z["filter_hit_rate"] == pytest.approx(1 / 2)

    rev = _row(t, "Rev", "*")
    assert rev["n_audited"] == 2 and rev["n_needs_review"] == 1
    assert rev["success_rate"] == 0.0 and np.isnan(rev["filter_hit_rate"])

    four = _row(t, "Zen", "EURUSD", "4H")
    assert four["n_failed"] == 1 and four["expectancy"] == -1.0


def test_cause_shares(audits):
    causes = pd.DataFrame({
        "insight_id": ["a2", "a2", "a3", "b1", "a1"],
        "horizon": ["24H", "24H", "24H", "24H", "4H"],
        "cause": ["news_shock", "regime_drift", "regime_drift", "detector_misid", "news_shock"],
        "rank": [1, 2, 1, 1, 1],
    })
    t = strategy_health(audits, causes, horizon="24H")
    assert set(t["horizon"]) == {"24H"}
    r = _row(t, "Zen", "EURUSD")
    assert r["news_impact_ratio"] == 0.5 and r["regime_drift_ratio"] == 0.5
    assert r["cause_detector_misid_share"] == 0.0 and r["cause_unanalysed_share"] == 0.0
    b = _row(t, "Rev", "EURUSD")
    assert b["cause_detector_misid_share"] == 1.0 and b["news_impact_ratio"] == 0.0
    g = _row(t, "Zen", "GBPUSD")                                     # no failed audit
    assert np.isnan(g["news_impact_ratio"])
    # a failure without an RCA row is unanalysed
    t2 = strategy_health(audits, causes[causes["insight_id"] != "a3"], horizon="24H")
    r2 = _row(t2, "Zen", "EURUSD")
    assert r2["news_impact_ratio"] == 0.5 and r2["cause_unanalysed_share"] == 0.5
    assert r2["regime_drift_ratio"] == 0.0


def test_missing_column_is_named(audits):
    with pytest.raises(ValueError, match="strategy"):
        strategy_health(audits.drop(columns="strategy"))
