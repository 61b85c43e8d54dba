"""The REAL EURUSD hourly sample (2017-04-19 09:00 to 2018-02-07 15:00 UTC, 5,000 bars).

The candles are the ``EURUSD.csv`` that ships inside the ``backtesting`` PyPI package. That
package is AGPL-3.0, so autopsy never imports it (importing ``backtesting.test`` would also pull in
bokeh) and never copies the file: the CSV is located through the installed distribution's file
list and read with pandas. It is an optional extra: ``pip install autopsy[demo]``.

The file's timestamps are naive; they are localised to UTC here, explicitly (DESIGN.md 2a: a
loader of a naive source localises, the API refuses naive candles). The file has no spread.
"""
from __future__ import annotations

import importlib.metadata
from functools import lru_cache
from pathlib import Path

import pandas as pd

SAMPLE_SYMBOL = "EURUSD"
SAMPLE_TIMEFRAME = "1h"
_DIST = "backtesting"
_CSV = "backtesting/test/EURUSD.csv"
CANDLE_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


def sample_path() -> Path:
    """Where the installed ``backtesting`` distribution keeps EURUSD.csv (never imported)."""
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            "the real EURUSD demo sample comes from the optional 'backtesting' package, which is "
            "not installed: run `pip install autopsy[demo]` (or `pip install backtesting==0.6.5`)"
        ) from None
    path = Path(str(dist.locate_file(_CSV)))
    if not path.is_file():
        raise RuntimeError(
            f"the 'backtesting' package is installed but {_CSV} is missing at {path}: "
            "reinstall it with `pip install --force-reinstall autopsy[demo]`")
    return path


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    raw = pd.read_csv(sample_path())
    ts = pd.to_datetime(raw.iloc[:, 0], format="%Y-%m-%d %H:%M:%S")
    out = pd.DataFrame({
        "symbol": SAMPLE_SYMBOL,
        "timeframe": SAMPLE_TIMEFRAME,
        "ts": ts.dt.tz_localize("UTC").dt.as_unit("ns"),
        "open": raw["Open"].astype("float64"),
        "high": raw["High"].astype("float64"),
        "low": raw["Low"].astype("float64"),
        "close": raw["Close"].astype("float64"),
        "volume": raw["Volume"].astype("float64"),
    })
    out = out.sort_values("ts", kind="stable").reset_index(drop=True)
    return out


def eurusd_sample() -> pd.DataFrame:
    """The real EURUSD 1h candles: symbol, timeframe, ts (UTC, ns), open, high, low, close, volume.

    Read once per process and cached; every call returns a fresh copy, so callers may mutate it.
    Raises RuntimeError (saying ``pip install autopsy[demo]``) when backtesting is not installed.
    """
    return _load().copy()
