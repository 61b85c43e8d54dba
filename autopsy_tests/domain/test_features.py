"""Insight features and the meta-model dataset (autopsy_assets.domain.features).

The headline test alters everything after each created_at (future candles, future audits, later
insights) and demands identical features: nothing is read from the future. Then the trailing
success rate against a slow loop (hypothesis), and hand-built cases for each feature family.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopsy_assets.api import label_outcomes
from autopsy_assets.data import generate_insights, generate_market
from autopsy_assets.data.news_calendar import scheduled_calendar
from autopsy_assets.domain import features as F
from autopsy_assets.domain.patterns import verify_patterns

T0 = pd.Timestamp("2018-03-06 00:00", tz="UTC")
MIN = pd.Timedelta(minutes=1)


@pytest.fixture(scope="module")
def world():
    candles = generate_market(("EURUSD", "GBPUSD", "BTCUSD"), weeks=2, seed=5)
    insights = generate_insights(candles, per_symbol_per_day=10, seed=3, include_bad_rows=False)
    audits = label_outcomes(insights, candles, horizons=("4H", "24H"))
    news = scheduled_calendar(candles["ts"].min(), candles["ts"].max() + pd.Timedelta(days=3))
    return candles, insights, audits, news


# --- no leakage ----------------------------------------------------------------------------------

def _alter_future(candles, audits, cutoff, rng):
    """Candles that open at/after the cutoff get other prices (and the frame is shuffled); audits
    that exit at/after it get shuffled outcomes and exits, and fake ones are added."""
    c = candles.copy()
    fut = (c["ts"] >= cutoff).to_numpy()
    k = int(fut.sum())
    factor = rng.uniform(0.9, 1.1, k)
    for col in ("open", "high", "low", "close"):
        c.loc[fut, col] = c.loc[fut, col].to_numpy() * factor
    c.loc[fut, "high"] = c.loc[fut, ["open", "high", "low", "close"]].max(axis=1) * 1.001
    c.loc[fut, "low"] = c.loc[fut, ["open", "high", "low", "close"]].min(axis=1) * 0.999
    c = c.sample(frac=1.0, random_state=1).reset_index(drop=True)

    a = audits.copy()
    fut_a = (a["exit_time"] >= cutoff).to_numpy()
    for col in ("outcome", "replay_outcome"):
        a.loc[fut_a, col] = rng.choice(["succeeded", "failed"], int(fut_a.sum()))
    a.loc[fut_a, "exit_time"] = cutoff + pd.to_timedelta(rng.integers(0, 5000, int(fut_a.sum())),
                                                          unit="min")
    fake = a[~fut_a].head(40).copy()
    fake["insight_id"] = [f"FAKE-{i}" for i in range(len(fake))]
    fake["exit_time"] = cutoff + pd.Timedelta(minutes=3)
    fake["replay_outcome"] = "succeeded"
    return c, pd.concat([a, fake], ignore_index=True)


def test_no_leakage_altering_the_future_changes_nothing(world):
    candles, insights, audits, news = world
    full = F.insight_features(insights, candles, news, None, audits, horizon="24H")
    # the features are really computed (so identical really means something)
    for col in ("verified_BOS", "verified_FVG", "regime_code", "realised_vol", "atr_pct",
                "stop_atr", "minutes_to_next_news", "trailing_success_rate"):
        assert full[col].notna().sum() > 20, col
    rng = np.random.default_rng(0)
    created = insights["created_at"]
    for q in (0.35, 0.6, 0.9):
        cutoff = created.quantile(q)
        cutoff = created[created <= cutoff].max()          # an insight's own created_at
        past = insights[created <= cutoff]
        c2, a2 = _alter_future(candles, audits, cutoff, rng)
        again = F.insight_features(past, c2, news, None, a2, horizon="24H")
        pd.testing.assert_frame_equal(full.loc[past.index], again, check_exact=True)


def test_altering_the_past_does_change_features(world):
    """The power check of the test above: the same alterations before the cutoff show up."""
    candles, insights, audits, news = world
    created = insights["created_at"]
    cutoff = created.quantile(0.6)
    past = insights[created <= cutoff]
    full = F.insight_features(past, candles, news, None, audits, horizon="24H")
    c = candles.copy()
    c[["open", "high", "low", "close"]] = c[["open", "high", "low", "close"]] * np.linspace(
        0.8, 1.2, len(c))[:, None]
    a = audits.copy()
    a["replay_outcome"] = "succeeded"
    changed = F.insight_features(past, c, news, None, a, horizon="24H")
    assert (changed["atr_pct"] != full["atr_pct"]).sum() > len(past) // 2
    assert (changed["trailing_success_rate"].dropna() == 1.0).all()
    assert (full["trailing_success_rate"].dropna() < 1.0).any()


# --- trailing success rate -----------------------------------------------------------------------

def _slow_trailing(audits, q):
    rate, cnt = [], []
    for r in q.itertuples(index=False):
        m = audits[(audits["strategy"] == r.strategy) & (audits["symbol"] == r.symbol)
                   & (audits["exit_time"] < r.created_at)
                   & audits["replay_outcome"].isin(["succeeded", "failed"])]
        cnt.append(len(m))
        rate.append((m["replay_outcome"] == "succeeded").mean() if len(m) else np.nan)
    return np.array(rate, dtype=float), np.array(cnt, dtype=float)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_trailing_success_matches_slow_loop(data):
    n_a = data.draw(st.integers(0, 40))
    n_q = data.draw(st.integers(1, 25))
    pick = lambda opts, n: data.draw(st.lists(st.sampled_from(opts), min_size=n, max_size=n))
    audits = pd.DataFrame({
        "strategy": pick(["A", "B"], n_a), "symbol": pick(["EURUSD", "XAUUSD"], n_a),
        "exit_time": T0 + pd.to_timedelta(data.draw(st.lists(st.integers(0, 30), min_size=n_a,
                                                             max_size=n_a)), unit="min"),
        "replay_outcome": pick(["succeeded", "failed", "neutral", "pending"], n_a),
    })
    audits["exit_time"] = audits["exit_time"].dt.as_unit("ns")
    q = pd.DataFrame({
        "strategy": pick(["A", "B", "C"], n_q), "symbol": pick(["EURUSD", "XAUUSD"], n_q),
        "created_at": (T0 + pd.to_timedelta(data.draw(st.lists(st.integers(-2, 33), min_size=n_q,
                                                               max_size=n_q)), unit="min")),
    })
    q["created_at"] = q["created_at"].dt.as_unit("ns")
    rate, cnt = F.trailing_success(audits, q["strategy"], q["symbol"], q["created_at"])
    want_rate, want_cnt = _slow_trailing(audits, q)
    np.testing.assert_array_equal(cnt, want_cnt)
    np.testing.assert_allclose(rate, want_rate, rtol=0, atol=1e-12, equal_nan=True)


def test_trailing_success_exit_at_created_at_does_not_count():
    audits = pd.DataFrame({"strategy": ["S"] * 3, "symbol": ["EURUSD"] * 3,
                           "exit_time": [T0, T0, T0 + MIN],
                           "replay_outcome": ["succeeded", "failed", "succeeded"]})
    rate, cnt = F.trailing_success(audits, ["S", "S", "S"], ["EURUSD"] * 3,
                                   pd.Series([T0, T0 + MIN, T0 + 2 * MIN]))
    np.testing.assert_array_equal(cnt, [0, 2, 3])
    np.testing.assert_allclose(rate, [np.nan, 0.5, 2 / 3], equal_nan=True)


# --- hand-built features -------------------------------------------------------------------------

def _insights(**cols):
    n = len(next(iter(cols.values())))
    base = {"insight_id": [f"I{i}" for i in range(n)], "symbol": ["EURUSD"] * n,
            "side": ["long"] * n, "created_at": [T0 + pd.Timedelta(hours=10)] * n}
    base.update(cols)
    return pd.DataFrame(base)


def test_time_session_side_and_codes():
    times = pd.Series(pd.to_datetime(["2018-03-06 03:00", "2018-03-06 07:30", "2018-03-06 13:30",
                                      "2018-03-06 16:00", "2018-03-10 21:00"], utc=True))
    ins = _insights(created_at=times, side=["long", "short", "long", "short", "long"],
                    timeframe=["5m", "15m", "1h", "4h", "1d"],
                    strategy=["A", "B", "A", "", "B"],
                    symbol=["EURUSD", "GBPUSD", "EURUSD", "XAUUSD", "EURUSD"])
    f = F.insight_features(ins)
    assert list(f.columns) == list(F.FEATURE_COLUMNS)
    assert (f.dtypes == "float64").all()                     # never a categorical
    assert f["hour"].tolist() == [3, 7, 13, 16, 21]
    assert f["day_of_week"].tolist() == [1, 1, 1, 1, 5]      # Tuesday x4, Saturday
    assert f["session_asia"].tolist() == [1, 1, 0, 0, 0]
    assert f["session_london"].tolist() == [0, 1, 1, 0, 0]
    assert f["session_new_york"].tolist() == [0, 0, 1, 1, 0]
    assert f["session_overlap"].tolist() == [0, 0, 1, 0, 0]
    assert f["timeframe_minutes"].tolist() == [5, 15, 60, 240, 1440]
    assert f["side"].tolist() == [1, -1, 1, -1, 1]
    assert f["symbol_code"][0] == f["symbol_code"][2] == F.stable_code("EURUSD")
    assert f["symbol_code"][1] != f["symbol_code"][0]
    assert np.isnan(f["strategy_code"][3])                   # blank strategy
    # codes never depend on the other names present
    alone = F.insight_features(ins.iloc[[1]])
    assert alone["symbol_code"].iloc[0] == f["symbol_code"][1]
    # no optional source: their features are NaN, never an error
    for col in ("ai_score", "atr_pct", "verified_BOS", "regime_code", "minutes_to_next_news",
                "trailing_success_rate"):
        assert f[col].isna().all(), col


def test_claimed_patterns_and_iso_strings():
    ins = _insights(patterns=["FVG|CHOCH", "ob, breakout", "", ["BOS", "OB"]],
                    created_at=["2018-03-06T10:00:00+00:00"] * 4, side=["long"] * 4,
                    symbol=["EURUSD"] * 4)
    f = F.insight_features(ins)
    got = f[[f"claimed_{p}" for p in F.PATTERN_FLAGS]].to_numpy().tolist()
    assert got == [[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]]


def test_naive_created_at_is_refused():
    ins = _insights(created_at=[pd.Timestamp("2018-03-06 10:00")])
    with pytest.raises(ValueError, match="naive"):
        F.insight_features(ins)


def _flat_hourly(n=60, rng_width=0.0010):
    ts = pd.date_range(T0, periods=n, freq="1h", tz="UTC")
    close = 1.2000 + 0.0001 * (np.arange(n) % 2)             # alternating closes
    return pd.DataFrame({"symbol": "EURUSD", "timeframe": "1h", "ts": ts, "open": close,
                         "high": close + rng_width / 2, "low": close - rng_width / 2,
                         "close": close, "volume": 100.0})


def test_atr_volatility_and_distances_from_closed_bars():
    c = _flat_hourly()
    # true range = high - low = 0.0010 on every bar (|high - prev close| <= 0.0006)
    at = T0 + pd.Timedelta(hours=30)
    ins = _insights(created_at=[at, at + pd.Timedelta(minutes=30)], timeframe=["1h", "1h"],
                    entry_price=[1.2000, 1.2000], stop_loss=[1.1980, 1.1980],
                    take_profit=[1.2030, np.nan], side=["long", "long"])
    f = F.insight_features(ins, candles=c)
    np.testing.assert_allclose(f["atr_pct"], 0.0010 / 1.2 * 100, rtol=1e-9)
    np.testing.assert_allclose(f["stop_atr"], 2.0, rtol=1e-9)
    assert f["target_atr"][0] == pytest.approx(3.0)
    assert np.isnan(f["target_atr"][1])
    r = np.log(1.2001 / 1.2000)
    assert f["realised_vol"][0] == pytest.approx(np.std([r, -r] * 10, ddof=1), rel=1e-6)
    # a bar still open is never read: changing the bar that opened at 30:00 changes nothing
    c2 = c.copy()
    c2.loc[30:, ["high"]] += 0.05
    f2 = F.insight_features(ins, candles=c2)
    pd.testing.assert_frame_equal(f, f2)
    # before 14 closed bars there is no ATR
    early = F.insight_features(_insights(created_at=[T0 + pd.Timedelta(hours=5)],
                                         timeframe=["1h"]), candles=c)
    assert np.isnan(early["atr_pct"][0])


def test_verified_patterns_match_verify_patterns_on_resampled_candles(world):
    candles, insights, _, _ = world
    f = F.insight_features(insights, candles)
    sub = insights[insights["timeframe"] == "15m"].copy()
    from autopsy_assets.data.market import resample
    bars = resample(candles, "15m")
    v = verify_patterns(sub.drop(columns="timeframe"), bars)
    v = v[v["pattern"] == "FVG"].set_index("insight_id")["verified"]
    got = f.loc[sub.index].set_index(sub["insight_id"])["verified_FVG"].dropna()
    assert len(got) > 10
    pd.testing.assert_series_equal(got.astype(bool), v.loc[got.index].astype(bool),
                                   check_names=False)
    # not claimed -> NaN
    assert f.loc[f["claimed_OB"] == 0, "verified_OB"].isna().all()


def test_news_minutes_for_either_currency():
    news = pd.DataFrame({"ts": pd.to_datetime(["2018-03-06 09:30", "2018-03-06 13:30",
                                               "2018-03-06 12:45"], utc=True),
                         "currencies": ["GBP", "USD", "EUR"], "impact": ["high", "high", "low"],
                         "title": ["UK CPI", "US CPI", "ECB speech"]})
    ins = _insights(symbol=["EURUSD", "EURGBP"],
                    created_at=[pd.Timestamp("2018-03-06 12:00", tz="UTC")] * 2,
                    side=["long", "short"])
    f = F.insight_features(ins, news=news)
    assert f["minutes_to_next_news"][0] == 90.0              # US CPI (USD), not the low ECB
    assert np.isnan(f["minutes_to_next_news"][1])            # EURGBP: no later high EUR/GBP
    assert np.isnan(f["minutes_since_last_news"][0])         # UK CPI is GBP, not EURUSD's
    assert f["minutes_since_last_news"][1] == 150.0          # UK CPI at 09:30


def test_regime_from_feed_at_creation():
    feed = pd.DataFrame({"symbol": ["EURUSD"] * 3,
                         "ts": pd.to_datetime(["2018-03-06 08:00", "2018-03-06 10:00",
                                               "2018-03-06 12:00"], utc=True),
                         "regime": ["ranging", "trending_down", "volatile"],
                         "confidence": [60.0, 80.0, 90.0]})
    ins = _insights(created_at=pd.Series(pd.to_datetime(
        ["2018-03-06 07:00", "2018-03-06 09:00", "2018-03-06 11:59"], utc=True)),
        side=["long", "long", "short"])
    f = F.insight_features(ins, regimes=feed)
    assert np.isnan(f["regime_code"][0])
    assert f["regime_code"].tolist()[1:] == [F.REGIME_CODES["ranging"],
                                             F.REGIME_CODES["trending_down"]]
    assert f["regime_confidence"].tolist()[1:] == [60.0, 80.0]
    assert f["regime_with_side"].tolist()[1:] == [0.0, 1.0]  # short in a downtrend: with it


# --- build_dataset -------------------------------------------------------------------------------

def test_build_dataset_rows_labels_and_carried_columns():
    ins = _insights(insight_id=["a", "b", "c", "d", "e"],
                    created_at=pd.Series(pd.to_datetime(
                        ["2018-03-06 12:00", "2018-03-06 09:00", "2018-03-06 10:00",
                         "2018-03-06 11:00", "2018-03-06 08:00"], utc=True)),
                    symbol=["EURUSD"] * 5, side=["long"] * 5, strategy=["S"] * 5,
                    confidence=[70.0, 40.0, 55.0, 60.0, 65.0], user_id=["u1", "u2", "u3", "u4",
                                                                          "u5"],
                    status=["published", "filtered", "published", "published", "published"])
    exit_ = pd.Series(pd.to_datetime(["2018-03-06 14:00", "2018-03-06 09:40",
                                      "2018-03-06 10:30", "2018-03-06 12:30",
                                      "2018-03-06 08:20"], utc=True))
    audits = pd.DataFrame({
        "insight_id": ["a", "b", "c", "d", "e"], "horizon": "24H", "symbol": "EURUSD",
        "strategy": "S",
        "outcome": ["succeeded", "filtered_out", "failed", "neutral", "succeeded"],
        "replay_outcome": ["succeeded", "failed", "failed", "neutral", "succeeded"],
        "exit_time": exit_, "pnl_pct": [0.5, -0.3, -0.2, 0.01, 0.4],
    })
    other_h = audits.assign(horizon="4H", replay_outcome="succeeded", outcome="succeeded")
    ds = F.build_dataset(ins, pd.concat([audits, other_h], ignore_index=True))
    assert ds["insight_id"].tolist() == ["e", "b", "c", "a"]  # sorted by created_at; no neutral
    assert ds["label"].tolist() == [1, 0, 0, 1]              # b: filtered, replay failed
    assert ds["outcome_source"].eq("replay_outcome").all()
    assert ds["pnl_pct"].tolist() == [0.4, -0.3, -0.2, 0.5]
    assert ds["user_id"].tolist() == ["u5", "u2", "u3", "u1"]
    assert ds.attrs["feature_names"] == list(F.FEATURE_COLUMNS)
    assert not set(F.DATASET_CARRIED_COLUMNS) & set(ds.attrs["feature_names"])
    # trailing success of the 24H audits that exited before each row: e exits 08:20 (succeeded),
    # b 09:40 (failed), c 10:30 (failed)
    np.testing.assert_allclose(ds["trailing_success_rate"], [np.nan, 1.0, 0.5, 1 / 3],
                               equal_nan=True)
    assert ds["confidence"].tolist() == [65.0, 40.0, 55.0, 70.0]
    assert ds["atr_pct"].isna().all() and ds["minutes_to_next_news"].isna().all()


def test_build_dataset_on_generated_world(world):
    candles, insights, audits, news = world
    ds = F.build_dataset(insights, audits, candles, news, horizon="24H")
    a = audits[audits["horizon"] == "24H"]
    assert len(ds) == int(a["replay_outcome"].isin(["succeeded", "failed"]).sum())
    assert ds["created_at"].is_monotonic_increasing
    assert ds["insight_id"].is_unique
    merged = ds.merge(a[["insight_id", "replay_outcome"]], on="insight_id")
    assert ((merged["replay_outcome"] == "succeeded") == (merged["label"] == 1)).all()
    assert ds["stop_atr"].notna().mean() > 0.95    # audits' resolved stops fill missing ones


def test_build_dataset_takes_the_walked_timeframe_when_the_insight_has_none(world):
    candles, insights, audits, news = world
    with_tf = F.build_dataset(insights, audits, horizon="24H")
    without = F.build_dataset(insights.drop(columns="timeframe"), audits, horizon="24H")
    pd.testing.assert_series_equal(without["timeframe_minutes"], with_tf["timeframe_minutes"])
    assert set(without["timeframe"]) == {"5m", "15m", "1h"}
