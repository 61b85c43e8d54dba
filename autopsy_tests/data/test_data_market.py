"""The GENERATED 1-minute market and resampling."""
from __future__ import annotations

import hashlib
import importlib.metadata

import numpy as np
import pandas as pd
import pytest

from autopsy_assets.data import market
from autopsy_assets.domain import instruments

FX_LIKE = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD")
# 4 weeks of minutes: 40,320 for crypto; FX/metals lose Fri 20:00-Mon 00:00 each week
# (Mon 00:00 -> Fri 20:00 = 4 x 1440 + 20 x 60 = 6,960 minutes a week).
N_CRYPTO = 4 * 7 * 1440
N_FX = 4 * 6960
# Plausible median 1-minute high-low range, in pips of each symbol (2018-like markets):
# FX majors 0.5-5 pips; gold 1-10 pips (0.1 USD each); bitcoin 3-60 pips (1 USD each).
RANGE_BAND_PIPS = {"EURUSD": (0.5, 5), "GBPUSD": (0.5, 5), "USDJPY": (0.5, 5),
                   "XAUUSD": (1, 10), "BTCUSD": (3, 60)}
LEVELS = {"EURUSD": 1.231, "GBPUSD": 1.385, "USDJPY": 105.9, "XAUUSD": 1321.0, "BTCUSD": 9000.0}


def frame_digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for col in df.columns:
        s = df[col]
        if s.dtype.kind == "M":
            h.update(s.dt.as_unit("ns").astype("int64").to_numpy().tobytes())
        elif s.dtype.kind in "fiub":
            h.update(np.ascontiguousarray(s.to_numpy()).tobytes())
        else:
            h.update("\x1f".join(s.astype(str)).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def m() -> pd.DataFrame:
    return market.generate_market()


def test_default_call_is_deterministic():
    market._generate.cache_clear()
    a = market.generate_market()
    market._generate.cache_clear()
    b = market.generate_market()
    pd.testing.assert_frame_equal(a, b)
    assert frame_digest(a) == frame_digest(b)
    c = market.generate_market(seed=1)
    assert frame_digest(c) != frame_digest(a)


def test_symbols_have_independent_streams(m):
    only = market.generate_market(symbols=("EURUSD",))
    pd.testing.assert_frame_equal(
        only, m[m["symbol"] == "EURUSD"].reset_index(drop=True))


def test_columns_dtypes_counts(m):
    assert list(m.columns) == list(market.CANDLE_COLUMNS)
    assert str(m["ts"].dtype) == "datetime64[ns, UTC]"
    assert (m["timeframe"] == "1m").all()
    counts = m.groupby("symbol").size().to_dict()
    assert counts == {"BTCUSD": N_CRYPTO, **{s: N_FX for s in FX_LIKE}}
    assert m["ts"].min() == pd.Timestamp("2018-03-05", tz="UTC")
    assert m["ts"].max() == pd.Timestamp("2018-04-01 23:59", tz="UTC")
    for _, g in m.groupby("symbol"):
        assert g["ts"].is_monotonic_increasing and g["ts"].is_unique
    assert (m["ts"].dt.second == 0).all()


def test_no_fx_candle_inside_a_closure_but_crypto_trades_weekends(m):
    ts_ns = m["ts"].astype("int64").to_numpy()
    start, end = m["ts"].min(), m["ts"].max()
    iv = instruments.closure_intervals("fx_weekend", start, end)
    for sym in FX_LIKE:
        t = ts_ns[(m["symbol"] == sym).to_numpy()]
        # a bar [t, t + 1 min) may not overlap any closure [open, close)
        k = np.searchsorted(iv[:, 0], t + 60 * 10**9, side="left") - 1
        overlaps = (k >= 0) & (iv[np.clip(k, 0, None), 1] > t)
        assert not overlaps.any(), sym
        # and the three weekends inside the range are wholly missing
        gaps = np.diff(t)
        assert (gaps > 60 * 10**9).sum() == 3
        gap_ok = instruments.inside_closure(t[:-1] + 60 * 10**9, t[1:], iv)
        assert gap_ok[gaps > 60 * 10**9].all()
        wd = pd.DatetimeIndex(t.astype("datetime64[ns]"), tz="UTC")
        assert not ((wd.day_of_week == 4) & (wd.hour >= 20)).any()
        assert not (wd.day_of_week >= 5).any()
    btc = m[m["symbol"] == "BTCUSD"]
    assert (btc["ts"].dt.day_of_week == 5).sum() == 4 * 1440
    assert (btc["ts"].dt.day_of_week == 6).sum() == 4 * 1440


def test_ohlc_invariants_and_continuity(m):
    assert (m["high"] >= m[["open", "close"]].max(axis=1)).all()
    assert (m["low"] <= m[["open", "close"]].min(axis=1)).all()
    assert (m["spread"] > 0).all() and (m["volume"] >= 1).all()
    assert m[["open", "high", "low", "close", "spread", "volume"]].notna().all().all()
    for sym, g in m.groupby("symbol"):
        step = g["ts"].diff()
        prev_close = g["close"].shift()
        cont = step == pd.Timedelta(minutes=1)
        assert (g["open"][cont] == prev_close[cont]).all(), sym
        gaps = step > pd.Timedelta(minutes=1)
        if sym == "BTCUSD":
            assert not gaps.any()
        else:
            # 3 weekend reopens (Monday 00:00), each opening with a gap from Friday's close
            assert gaps.sum() == 3
            assert (g["ts"][gaps].dt.day_of_week == 0).all()
            assert (g["open"][gaps] != prev_close[gaps]).all()


def test_levels_and_pip_scale(m):
    for sym, g in m.groupby("symbol"):
        assert abs(g["open"].iloc[0] / LEVELS[sym] - 1) < 0.01, sym
        pip = instruments.pip_size(sym)
        med = ((g["high"] - g["low"]) / pip).median()
        lo, hi = RANGE_BAND_PIPS[sym]
        assert lo <= med <= hi, f"{sym}: median 1m range {med:.2f} pips"
        digits = instruments.get(sym).digits
        assert np.allclose(g["close"], g["close"].round(digits), rtol=0, atol=1e-9)


def test_fat_tails_clustering_and_seasonality(m):
    for sym, g in m.groupby("symbol"):
        r = np.log(g["close"]).diff().dropna()
        assert r.kurt() > 3, sym                        # excess kurtosis: fatter than normal
        assert r.abs().autocorr(1) > 0.05, sym          # volatility clusters
        hour = g["ts"].dt.hour.iloc[1:]
        asia = r[(hour >= 0) & (hour < 6)].abs().mean()
        busy = r[(hour >= 12) & (hour < 16)].abs().mean()
        assert busy > (1.8 if sym != "BTCUSD" else 1.2) * asia, sym


def test_spread_wider_in_asia_and_at_the_reopen(m):
    for sym in FX_LIKE:
        g = m[m["symbol"] == sym]
        pip = instruments.pip_size(sym)
        sp = g["spread"] / pip
        hour = g["ts"].dt.hour
        assert sp[hour.between(1, 5)].median() > 1.3 * sp[hour.between(8, 15)].median()
        reopen = (g["ts"].dt.day_of_week == 0) & (hour == 0) & (g["ts"].dt.minute < 5)
        assert sp[reopen].median() > 3 * sp[hour.between(8, 15)].median()


def test_resample_consistency(m):
    eur = m[m["symbol"] == "EURUSD"]
    h1 = market.resample(m, "1h")
    assert (h1["timeframe"] == "1h").all() and str(h1["ts"].dtype) == "datetime64[ns, UTC]"
    e1 = h1[h1["symbol"] == "EURUSD"].set_index("ts")
    grp = eur.groupby(eur["ts"].dt.floor("1h"))
    assert len(e1) == grp.ngroups == N_FX // 60
    assert (e1["high"] == grp["high"].max()).all()
    assert (e1["low"] == grp["low"].min()).all()
    assert (e1["open"] == grp["open"].first()).all()
    assert (e1["close"] == grp["close"].last()).all()
    assert np.allclose(e1["volume"], grp["volume"].sum())
    assert np.allclose(e1["spread"], grp["spread"].mean())
    # every timeframe: bar opens aligned, invariants hold, totals preserved
    for tf, minutes in (("5m", 5), ("15m", 15), ("4h", 240), ("1d", 1440)):
        r = market.resample(m, tf)
        assert (r["ts"].astype("int64") % (minutes * 60 * 10**9) == 0).all()
        assert (r["high"] >= r[["open", "close"]].max(axis=1)).all()
        assert (r["low"] <= r[["open", "close"]].min(axis=1)).all()
        assert np.isclose(r["volume"].sum(), m["volume"].sum())
    d1 = market.resample(m, "1d")
    assert (d1["symbol"] == "BTCUSD").sum() == 28 and (d1["symbol"] == "EURUSD").sum() == 20


def test_resample_mixed_sources_and_errors(m):
    eur = m[m["symbol"] == "EURUSD"]
    coarse = market.resample(eur, "1h")
    both = pd.concat([eur, coarse], ignore_index=True)
    # the 1h source can make 4h bars, the 1m one too: the finer source wins, same result
    pd.testing.assert_frame_equal(market.resample(both, "4h"), market.resample(eur, "4h"))
    with pytest.raises(ValueError, match="no candles can be resampled"):
        market.resample(coarse, "15m")
    with pytest.raises(ValueError, match="unknown timeframe"):
        market.resample(eur, "7m")
    # without a timeframe column the source is inferred from the most common spacing
    pd.testing.assert_frame_equal(market.resample(eur.drop(columns="timeframe"), "1h"), coarse)


@pytest.mark.skipif(
    not any(d.metadata["Name"] == "backtesting" for d in importlib.metadata.distributions()),
    reason="pip install autopsy[demo]")
def test_demo_candles_never_overlap():
    d = market.demo_candles()
    assert list(d.columns) == list(market.CANDLE_COLUMNS)
    sample = d[d["timeframe"] == "1h"]
    gen = d[d["timeframe"] == "1m"]
    assert len(sample) == 5000 and (sample["symbol"] == "EURUSD").all()
    assert sample["spread"].isna().all()  # the real sample has no spread: unknown, not zero
    assert gen["ts"].min() > sample["ts"].max()
    assert len(gen) == N_CRYPTO + 4 * N_FX
    assert str(d["ts"].dtype) == "datetime64[ns, UTC]"
    key = d["symbol"] + "|" + d["timeframe"]
    assert (d.groupby(key)["ts"].apply(lambda s: s.is_monotonic_increasing)).all()


def test_unknown_or_unsupported_symbols_are_refused():
    with pytest.raises(instruments.UnknownSymbolError):
        market.generate_market(symbols=("FOOBAR",), weeks=1)
    g = market.generate_market(symbols=("US500",), weeks=1)
    assert len(g) == 6960 and abs(g["open"].iloc[0] / 2720 - 1) < 0.01
