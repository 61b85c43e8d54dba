"""Regimes from candles, the regime in force at a time, the regime feed, and drift tests."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autopsy_assets.domain import regimes as R

H = pd.Timedelta(hours=1)
T0 = pd.Timestamp("2018-01-01", tz="UTC")


def candles(closes, symbol="EURUSD", timeframe="1h", start=T0, step=H) -> pd.DataFrame:
    closes = np.asarray(closes, dtype=float)
    ts = pd.date_range(start, periods=len(closes), freq=step)
    return pd.DataFrame({"symbol": symbol, "timeframe": timeframe, "ts": ts, "close": closes})


def valid(out: pd.DataFrame) -> pd.DataFrame:
    return out[out["regime"].notna()]


# --- derive_regimes: hand-built series -----------------------------------------------------------

def test_straight_rise_is_trending_up_with_full_confidence():
    out = R.derive_regimes(candles(1.1 + 0.001 * np.arange(300)))
    # warm-up: 24 bars for the efficiency ratio, then 100 values of realised vol (from bar 24)
    assert out["regime"].iloc[:123].isna().all()
    assert out["regime"].iloc[123:].notna().all()
    v = valid(out)
    assert (v["regime"] == "trending_up").all()
    assert v["trend_strength"].min() > 0.999            # a straight line: move == path
    # constant step -> vol ratio 1 (calm), |er| 1 -> depth 1 -> confidence 100
    assert v["confidence"].min() > 99.9
    assert (out["ts_end"] - out["ts"] == H).all()


def test_straight_fall_is_trending_down():
    # constant log return, so realised vol is flat (ratio 1) and the bar is fully calm
    v = valid(R.derive_regimes(candles(1.3 * np.exp(-0.001 * np.arange(300)))))
    assert (v["regime"] == "trending_down").all()
    assert v["trend_strength"].max() < -0.999
    assert v["confidence"].min() > 99.9
    # a constant *price* step on a falling price means growing log returns: vol keeps making
    # new highs (percentile 100) at ratio ~1.07, so calm = (1.5 - 1.07) / 0.5 bounds confidence
    w = valid(R.derive_regimes(candles(1.3 - 0.001 * np.arange(300))))
    assert (w["regime"] == "trending_down").all()
    assert (w["vol_percentile"] == 100).all()
    np.testing.assert_allclose(w["confidence"], 50 + 50 * (1.5 - w["vol_ratio"]) / 0.5)


def test_rise_with_noise_is_trending_up_with_high_confidence():
    rng = np.random.default_rng(1)
    closes = 1.1 + 0.0005 * np.arange(400) + rng.normal(0, 0.00005, 400)
    v = valid(R.derive_regimes(candles(closes)))
    assert (v["regime"] == "trending_up").all()
    assert v["trend_strength"].min() > 0.8
    assert v["confidence"].min() > 85


def test_flat_noise_is_ranging():
    rng = np.random.default_rng(2)
    closes = 1.1 + rng.normal(0, 0.0002, 600)
    v = valid(R.derive_regimes(candles(closes)))
    assert len(v) == 600 - 123
    assert (v["regime"] == "ranging").all()
    assert v["trend_strength"].abs().max() < 0.3
    assert v["confidence"].mean() > 80


def test_variance_burst_is_volatile_at_the_burst():
    rng = np.random.default_rng(3)
    closes = 1.1 + rng.normal(0, 0.0002, 500)
    k = np.arange(20)
    closes[400:420] += 0.004 * np.where(k % 2 == 0, 1, -1)   # a 20-bar whipsaw, +-40 pips
    out = R.derive_regimes(candles(closes))
    assert (out["regime"].iloc[300:400] == "ranging").all()   # calm before
    assert out["regime"].iloc[400] == "volatile"               # the first burst bar
    assert (out["regime"].iloc[400:420] == "volatile").all()
    assert out["vol_percentile"].iloc[401] == 100.0            # a new high of realised vol
    assert out["vol_ratio"].iloc[410] > 5
    assert out["confidence"].iloc[410] == 100.0
    # the earlier rows never changed because of the burst (causal)
    before = R.derive_regimes(candles(closes[:400]))
    pd.testing.assert_frame_equal(before, out.iloc[:400].reset_index(drop=True), check_exact=True)


def test_confidence_formula_on_the_boundaries():
    er = np.array([0.3, 0.65, 1.0, 0.0, 0.15, 0.5, 0.5, 0.5, np.nan])
    pct = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.95, 1.0, 0.95, 0.5])
    ratio = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.5, 3.0, 1.2, 1.0])
    labels, conf = R.classify(er, pct, ratio)
    assert list(labels) == ["trending_up", "trending_up", "trending_up", "ranging", "ranging",
                            "volatile", "volatile", "trending_up", None]
    # trending at |er| = thr: depth 0 -> 50; halfway to 1 -> 75; er 1 -> 100
    # ranging at er 0 -> 100; er 0.15 (halfway to thr) -> 75
    # volatile: pct 0.95 gives 0.5 but ratio 1.5 (== threshold) gives 0 -> 50; pct 1, ratio 3 -> 100
    # pct 0.95 with ratio 1.2 is not volatile; calm = max(0, (1.5-1.2)/0.5 = 0.6) bounds er depth
    expected = [50, 75, 100, 100, 75, 50, 100, 50 + 50 * min((0.5 - 0.3) / 0.7, 0.6)]
    np.testing.assert_allclose(conf[:8], expected)
    assert math.isnan(conf[8])


def test_multi_symbol_unsorted_and_inferred_timeframe():
    a = candles(1.1 + 0.001 * np.arange(200), symbol="EURUSD")
    b = candles(150 - 0.1 * np.arange(200), symbol="USDJPY", step=pd.Timedelta(minutes=15),
                timeframe="15m")
    both = pd.concat([a, b]).sample(frac=1.0, random_state=0).drop(columns="timeframe")
    out = R.derive_regimes(both)
    assert list(out["symbol"].unique()) == ["EURUSD", "USDJPY"]
    assert set(out.loc[out.symbol == "EURUSD", "timeframe"]) == {"1h"}
    assert set(out.loc[out.symbol == "USDJPY", "timeframe"]) == {"15m"}
    assert (valid(out).query("symbol == 'EURUSD'")["regime"] == "trending_up").all()
    assert (valid(out).query("symbol == 'USDJPY'")["regime"] == "trending_down").all()
    alone = R.derive_regimes(a)
    pd.testing.assert_frame_equal(out[out.symbol == "EURUSD"].reset_index(drop=True), alone,
                                  check_exact=True)


def test_naive_ts_is_refused():
    c = candles(np.ones(10))
    c["ts"] = c["ts"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="ts"):
        R.derive_regimes(c)
    with pytest.raises(ValueError, match="close"):
        R.derive_regimes(c.drop(columns="close"))


def test_rolling_lookback_variant_is_causal_too():
    rng = np.random.default_rng(4)
    closes = np.exp(np.cumsum(rng.normal(0, 0.001, 800)))
    full = R.derive_regimes(candles(closes), vol_lookback=200)
    part = R.derive_regimes(candles(closes[:500]), vol_lookback=200)
    pd.testing.assert_frame_equal(part, full.iloc[:500].reset_index(drop=True), check_exact=True)


# --- causality (hypothesis) ----------------------------------------------------------------------

steps = st.lists(st.one_of(st.just(0.0), st.floats(-0.02, 0.02, allow_nan=False)),
                 min_size=2, max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=steps, b=steps, cut=st.floats(0.0, 1.0))
def test_prefix_results_equal_full_results(a, b, cut):
    """Appending candles never changes an earlier row (random walks, two symbols)."""
    ca = candles(np.exp(np.cumsum(a)), symbol="EURUSD")
    cb = candles(100 * np.exp(np.cumsum(b)), symbol="USDJPY")
    full_in = pd.concat([ca, cb], ignore_index=True)
    kw = {"window": 5, "min_history": 8}
    full = R.derive_regimes(full_in, **kw)
    cutoff = T0 + H * int(cut * max(len(a), len(b)))
    prefix = R.derive_regimes(full_in[full_in["ts"] < cutoff], **kw)
    expect = full[full["ts"] < cutoff].reset_index(drop=True)
    pd.testing.assert_frame_equal(prefix, expect, check_exact=True)
    lab = full["regime"].dropna()
    assert set(lab) <= set(R.REGIMES)
    conf = full.loc[full["regime"].notna(), "confidence"]
    assert ((conf >= 50) & (conf <= 100)).all()


def test_260k_rows_give_one_row_each():
    # timings: benchmarks/bench_data.py
    rng = np.random.default_rng(5)
    n = 260_000
    c = candles(np.exp(np.cumsum(rng.normal(0, 1e-4, n))), timeframe="1m",
                step=pd.Timedelta(minutes=1))
    out = R.derive_regimes(c)
    assert len(out) == n


# --- regimes_at ----------------------------------------------------------------------------------

def hand_regimes() -> pd.DataFrame:
    ts = pd.date_range(T0, periods=4, freq="1h")
    return pd.DataFrame({
        "symbol": "EURUSD", "timeframe": "1h", "ts": ts, "ts_end": ts + H,
        "regime": ["ranging", "trending_up", "volatile", "trending_down"],
        "confidence": [60.0, 70.0, 80.0, 90.0],
    })


def test_regimes_at_uses_the_last_closed_bar_only():
    reg = hand_regimes()
    times = [T0 + pd.Timedelta(minutes=59), T0 + H, T0 + pd.Timedelta(minutes=150),
             T0 + 3 * H - pd.Timedelta(nanoseconds=1), T0 + 3 * H, T0 + 10 * H]
    out = R.regime_at(reg, "EURUSD", times)
    # 00:59: bar 00:00 still open -> nothing; 01:00: bar 00:00 just closed; 02:30: bar 01:00
    # (bar 02:00 is open until 03:00); 03:00 - 1ns: still bar 01:00; 03:00: bar 02:00.
    assert out["regime"].isna().iloc[0]
    assert list(out["regime"].iloc[1:]) == ["ranging", "trending_up", "trending_up", "volatile",
                                            "trending_down"]
    assert list(out["confidence"].iloc[1:]) == [60.0, 70.0, 70.0, 80.0, 90.0]
    assert out["regime_ts"].iloc[2] == T0 + H
    assert out["regime_timeframe"].iloc[2] == "1h"


def test_regimes_at_keeps_the_frame_index_and_matches_symbols():
    reg = pd.concat([hand_regimes(), hand_regimes().assign(symbol="USDJPY", regime="ranging")])
    frame = pd.DataFrame({"symbol": ["USDJPY", "EURUSD", "XAUUSD"],
                          "ts": [T0 + 2 * H, T0 + 2 * H, T0 + 2 * H]}, index=[10, 20, 30])
    out = R.regimes_at(reg, frame)
    assert list(out.index) == [10, 20, 30]
    assert out.loc[10, "regime"] == "ranging"
    assert out.loc[20, "regime"] == "trending_up"
    assert pd.isna(out.loc[30, "regime"]) and pd.isna(out.loc[30, "confidence"])


def test_regimes_at_timeframe_choice():
    h1 = hand_regimes()
    h4 = pd.DataFrame({"symbol": "EURUSD", "timeframe": "4h", "ts": [T0], "ts_end": [T0 + 4 * H],
                       "regime": ["volatile"], "confidence": [55.0]})
    reg = pd.concat([h4, h1], ignore_index=True)
    t = T0 + 5 * H
    frame = pd.DataFrame({"symbol": ["EURUSD"] * 3, "ts": [t] * 3, "timeframe": ["4h", "1h", "1d"]})
    out = R.regimes_at(reg, frame)
    # own timeframe when present; 1d is absent -> the finest (1h)
    assert list(out["regime_timeframe"]) == ["4h", "1h", "1h"]
    assert list(out["regime"]) == ["volatile", "trending_down", "trending_down"]
    plain = R.regimes_at(reg, frame[["symbol", "ts"]])
    assert list(plain["regime_timeframe"]) == ["1h"] * 3
    forced = R.regimes_at(reg, frame[["symbol", "ts"]], timeframe="4h")
    assert list(forced["regime"]) == ["volatile"] * 3


def test_feed_without_ts_end_applies_from_its_ts():
    feed = hand_regimes().drop(columns=["ts_end", "timeframe"])
    out = R.regime_at(feed, "EURUSD", [T0, T0 + pd.Timedelta(minutes=30)])
    assert list(out["regime"]) == ["ranging", "ranging"]


@settings(max_examples=60, deadline=None)
@given(offsets=st.lists(st.integers(-60, 24 * 60), min_size=1, max_size=40),
       bars=st.integers(1, 30))
def test_regimes_at_matches_a_slow_reference(offsets, bars):
    ts = pd.date_range(T0, periods=bars, freq="1h")
    reg = pd.DataFrame({"symbol": "EURUSD", "timeframe": "1h", "ts": ts, "ts_end": ts + H,
                        "regime": [R.REGIMES[i % 4] for i in range(bars)],
                        "confidence": np.arange(bars, dtype=float)})
    times = [T0 + pd.Timedelta(minutes=m) for m in offsets]
    out = R.regime_at(reg, "EURUSD", times)
    for i, t in enumerate(times):
        closed = [j for j in range(bars) if reg["ts_end"].iat[j] <= t]
        if not closed:
            assert pd.isna(out["regime"].iat[i])
        else:
            j = closed[-1]
            assert out["regime"].iat[i] == reg["regime"].iat[j]
            assert out["regime_ts"].iat[i] == reg["ts"].iat[j]
            assert out["regime_ts"].iat[i] + H <= t          # never a bar still open


def test_regimes_at_on_derived_regimes_gives_the_latest_closed_bar():
    rng = np.random.default_rng(6)
    c = candles(np.exp(np.cumsum(rng.normal(0, 1e-3, 5000))))
    reg = R.derive_regimes(c)
    q = pd.DataFrame({"symbol": "EURUSD",
                      "ts": T0 + pd.to_timedelta(rng.integers(0, 5000 * 60, 100_000), unit="min")})
    out = R.regimes_at(reg, q)
    hit = out["regime_ts"].notna()
    assert (out.loc[hit, "regime_ts"] + H <= q.loc[hit, "ts"]).all()
    assert (out.loc[hit, "regime_ts"] + 2 * H > q.loc[hit, "ts"]).all()   # the latest closed one


# --- external regime feed ------------------------------------------------------------------------

def test_normalise_regime_feed_quarantines_bad_rows():
    feed = pd.DataFrame({
        "symbol": ["EURUSD", "EURUSD", "EURUSD", "EURUSD", "EURUSD", "ABCXYZ", "GBPUSD",
                   "GBPUSD", "USDJPY", "USDJPY"],
        "ts": ["2018-01-01T00:00:00Z", "2018-01-01T01:00:00Z", "2018-01-01T02:00:00Z",
               "2018-01-01 03:00", "2018-01-01T04:00:00+01:00", "2018-01-01T00:00:00Z",
               "2018-01-01T00:00:00Z", "2018-01-01T00:00:00Z", "2018-01-01T00:00:00Z",
               "2018-01-01T00:00:00Z"],
        "regime": ["Trending Up", "sideways", "ranging", "ranging", "volatile", "ranging",
                   "ranging", "volatile", "ranging", "ranging"],
        "confidence": [80, 50, 150, 50, -1, 50, 40, 40, 70, 70],
    })
    clean, q = R.normalise_regime_feed(feed)
    assert list(clean.columns) == ["symbol", "ts", "regime", "confidence"]
    assert list(clean["regime"]) == ["trending_up", "ranging"]          # EURUSD 00:00, USDJPY once
    assert list(clean["symbol"]) == ["EURUSD", "USDJPY"]
    assert str(clean["ts"].dtype) == "datetime64[ns, UTC]"
    reasons = {d["row_id"]: d["reason"] for d in q}
    assert all(d["source"] == "regimes" for d in q)
    assert "'sideways' is not one of" in reasons["EURUSD|2018-01-01T01:00:00+00:00"]
    assert "confidence 150 is outside 0-100" in reasons["EURUSD|2018-01-01T02:00:00+00:00"]
    assert "has no timezone" in reasons["EURUSD|2018-01-01 03:00"]
    assert "confidence -1 is outside 0-100" in reasons["EURUSD|2018-01-01T03:00:00+00:00"]
    assert "unknown symbol 'ABCXYZ'" in reasons["ABCXYZ|2018-01-01T00:00:00+00:00"]
    gbp = [d for d in q if d["row_id"].startswith("GBPUSD")]
    assert len(gbp) == 2 and all("different regimes" in d["reason"] for d in gbp)
    assert len(q) == 7


def test_normalise_regime_feed_missing_values_and_aware_column():
    feed = pd.DataFrame({"symbol": ["EURUSD", "EURUSD"],
                         "ts": pd.to_datetime(["2018-01-01 01:00", "2018-01-01 02:00"])
                         .tz_localize("Europe/Berlin"),
                         "regime": [np.nan, "Trending-Down"], "confidence": [5, "x"]})
    clean, q = R.normalise_regime_feed(feed)
    assert clean.empty
    assert [d["row_id"] for d in q] == ["EURUSD|2018-01-01T00:00:00+00:00",
                                        "EURUSD|2018-01-01T01:00:00+00:00"]
    assert q[0]["reason"] == "regime is missing"
    assert q[1]["reason"] == "confidence 'x' is not a number"


def test_normalise_regime_feed_requires_columns():
    with pytest.raises(ValueError, match="confidence"):
        R.normalise_regime_feed(pd.DataFrame({"symbol": [], "ts": [], "regime": []}))


# --- drift ---------------------------------------------------------------------------------------

def slow_psi(expected, actual, bins=10, eps=1e-4):
    """Obvious reference: hand-made quantiles, counting by loops."""
    e = sorted(float(x) for x in expected)
    a = [float(x) for x in actual]
    n = len(e)
    edges = []
    for k in range(1, bins):
        h = (n - 1) * (k / bins)  # numpy's order: the probability first, then its position
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        t = h - lo
        # numpy's linear interpolation: from the nearer end, so the edge is exact to the ulp
        # (a subnormal such as 5e-324 otherwise rounds to a different edge)
        q = e[lo] + t * (e[hi] - e[lo]) if t < 0.5 else e[hi] - (1 - t) * (e[hi] - e[lo])
        if q not in edges:
            edges.append(q)
    edges.sort()

    def bin_of(x):
        return sum(1 for ed in edges if ed <= x)

    total = 0.0
    for i in range(len(edges) + 1):
        pe = max(sum(1 for x in e if bin_of(x) == i) / len(e), eps)
        pa = max(sum(1 for x in a if bin_of(x) == i) / len(a), eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def test_identical_samples_do_not_drift():
    x = np.random.default_rng(7).normal(size=2000)
    assert R.psi(x, x) == 0.0
    ks = R.ks_drift(x, x)
    assert ks["statistic"] == 0.0 and ks["pvalue"] == 1.0 and ks["drifted"] is False
    rep = R.drift_report(x, x)
    assert rep["drifted"] is False and rep["psi"] == 0.0


def test_same_distribution_fresh_draws_do_not_drift():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=5000), rng.normal(size=5000)
    assert R.psi(a, b) < 0.02
    assert R.ks_drift(a, b)["drifted"] is False


def test_shifted_samples_drift():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=5000), rng.normal(0.5, 1.0, size=5000)
    value = R.psi(a, b)
    assert 0.18 < value < 0.35          # about delta^2 = 0.25 for a half-sigma shift
    ks = R.ks_drift(a, b)
    assert ks["drifted"] is True and ks["pvalue"] < 1e-20 and 0.15 < ks["statistic"] < 0.25
    assert R.drift_report(a, b)["drifted"] is True


def test_psi_on_regime_labels():
    before = ["ranging"] * 70 + ["trending_up"] * 20 + ["volatile"] * 10
    after = ["ranging"] * 30 + ["trending_up"] * 20 + ["volatile"] * 50
    expected = (0.3 - 0.7) * math.log(0.3 / 0.7) + (0.5 - 0.1) * math.log(0.5 / 0.1)
    assert R.psi(before, after) == pytest.approx(expected)
    assert R.psi(before, before) == 0.0


def test_drift_on_empty_samples_is_nan_not_a_crash():
    assert math.isnan(R.psi([], [1.0, 2.0]))
    ks = R.ks_drift([np.nan], [1.0])
    assert math.isnan(ks["statistic"]) and ks["drifted"] is False


@settings(max_examples=80, deadline=None)
@given(e=st.lists(st.one_of(st.integers(-5, 5).map(float), st.floats(-100, 100)),
                  min_size=1, max_size=60),
       a=st.lists(st.one_of(st.integers(-5, 5).map(float), st.floats(-100, 100)),
                  min_size=1, max_size=60),
       bins=st.integers(1, 12))
@example(e=[-2.0, -2.0, -2.0, -2.0, 4.0, 4.0], a=[0.0], bins=9)  # an edge ~0 rounded both ways
def test_psi_matches_a_slow_reference(e, a, bins):
    assert R.psi(e, a, bins=bins) == pytest.approx(slow_psi(e, a, bins=bins), rel=1e-9, abs=1e-12)
