"""The REAL EURUSD sample read from the backtesting distribution's CSV (never imported)."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from autopsy_assets.data import samples

try:
    importlib.metadata.distribution("backtesting")
    HAVE_BACKTESTING = True
except importlib.metadata.PackageNotFoundError:
    HAVE_BACKTESTING = False

needs_sample = pytest.mark.skipif(not HAVE_BACKTESTING, reason="pip install autopsy[demo]")

# Read off backtesting 0.6.5's backtesting/test/EURUSD.csv once: 5,000 data lines,
# first "2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413",
# last  "2018-02-07 15:00:00,1.23427,1.23444,1.22904,1.22904,6143".
N_ROWS = 5000
FIRST_TS = pd.Timestamp("2017-04-19 09:00", tz="UTC")
LAST_TS = pd.Timestamp("2018-02-07 15:00", tz="UTC")


@needs_sample
def test_sample_shape_and_bounds():
    df = samples.eurusd_sample()
    assert list(df.columns) == ["symbol", "timeframe", "ts", "open", "high", "low", "close",
                                "volume"]
    assert len(df) == N_ROWS
    assert df["ts"].iloc[0] == FIRST_TS
    assert df["ts"].iloc[-1] == LAST_TS
    assert (df["symbol"] == "EURUSD").all() and (df["timeframe"] == "1h").all()
    first = df.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        1.0716, 1.0722, 1.07083, 1.07219, 1413.0)
    assert df.iloc[-1]["close"] == 1.22904


@needs_sample
def test_sample_times_are_utc_ns_sorted_unique():
    df = samples.eurusd_sample()
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"
    assert df["ts"].is_monotonic_increasing and df["ts"].is_unique
    # hourly bars: the most common spacing is one hour, all bars on the hour
    assert df["ts"].diff().mode().iloc[0] == pd.Timedelta(hours=1)
    assert (df["ts"].dt.minute == 0).all()


@needs_sample
def test_sample_ohlc_sane():
    df = samples.eurusd_sample()
    for col in ("open", "high", "low", "close", "volume"):
        assert df[col].dtype == np.float64 and df[col].notna().all()
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert df["low"].min() > 1.06 and df["high"].max() < 1.26  # EURUSD 2017-2018
    assert (df["volume"] > 0).all()


@needs_sample
def test_sample_is_cached_but_returns_copies():
    a = samples.eurusd_sample()
    a.loc[0, "close"] = -1.0
    b = samples.eurusd_sample()
    assert b.loc[0, "close"] == 1.07219
    assert samples._load.cache_info().hits >= 1


def test_missing_backtesting_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(samples.importlib.metadata, "distribution", missing)
    samples._load.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"pip install autopsy\[demo\]"):
            samples.eurusd_sample()
    finally:
        samples._load.cache_clear()


@needs_sample
def test_backtesting_code_is_never_imported():
    code = ("import sys; from autopsy_assets.data import demo_candles; demo_candles(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('backtesting', 'bokeh', 'dagster', 'mlflow', 'sqlalchemy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
