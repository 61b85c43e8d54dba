"""Test data for the audit store: random-walk candles and audit rows with every column.

Plain functions (no pytest), so that benchmarks/bench_store.py writes the same rows the store
tests do; the store tests get them through the make_candles / make_audits fixtures.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopsy_assets.domain.schemas import AUDIT_COLUMNS, HORIZONS

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")  # a Monday


def candles_frame(symbol: str = "EURUSD", timeframe: str = "1m", start: Any = T0,
                  periods: int = 1440, seed: int = 0, spread: bool = False) -> pd.DataFrame:
    """Random-walk candles with full float64 precision (no rounding)."""
    rng = np.random.default_rng(seed)
    freq = {"1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h", "1d": "1D"}
    ts = pd.date_range(pd.Timestamp(start), periods=periods, freq=freq[timeframe]).as_unit("ns")
    close = 1.1 + np.cumsum(rng.normal(0, 1e-4, periods))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(0, 5e-5, (2, periods)))
    df = pd.DataFrame({"symbol": symbol, "timeframe": timeframe, "ts": ts, "open": open_,
                       "high": np.maximum(open_, close) + wick[0],
                       "low": np.minimum(open_, close) - wick[1], "close": close,
                       "volume": rng.integers(1, 500, periods).astype(float)})
    if spread:
        df["spread"] = rng.uniform(0.00005, 0.0002, periods)
    return df


_DEFAULTS: dict[str, Any] = {
    "horizon": "1H", "symbol": "EURUSD", "side": "long", "strategy": "smc", "timeframe": "1h",
    "candle_timeframe": "1m", "status": "published", "user_id": "u1", "user_acted": False,
    "outcome": "succeeded", "replay_outcome": "succeeded", "exit_reason": "target",
    "entry_price": 1.1, "stop_price": 1.099, "target_price": 1.102, "exit_price": 1.102,
    "high_price": 1.1021, "low_price": 1.0995, "pnl_pct": 0.18181818181818182,
    "max_drawdown": 0.045454545454545456, "max_favorable": 0.18181818181818182,
    "duration_minutes": 30.0, "risk_reward_actual": 2.0, "slippage_pips": np.nan,
    "gap_pips": np.nan, "ambiguous": False, "needs_review": False, "needs_review_reason": "",
    "rule_id": 1, "rule_snapshot": '{"rule_id": 1, "success_rr_ratio": 2.0}',
    "rule_hash": "a" * 64, "candles_hash": "b" * 64, "candle_blocks": "c" * 64,
    "snapshot_hash": "d" * 64,
}


def audit_frame(n: int = 1, *, horizons: tuple[str, ...] = ("1H",), start: Any = T0,
                prefix: str = "ins", **overrides: Any) -> pd.DataFrame:
    """n insights x horizons audit rows with every AUDIT_COLUMNS column; overrides set columns
    (a scalar or one value per row)."""
    k = np.repeat(np.arange(n), len(horizons))
    hz = np.tile(np.array(horizons, dtype=object), n)
    created = pd.Timestamp(start) + pd.to_timedelta(k * 60, unit="min")
    minutes = pd.to_timedelta([HORIZONS[h] for h in hz], unit="min")
    df = pd.DataFrame({c: [_DEFAULTS.get(c)] * len(k) for c in AUDIT_COLUMNS})
    df["insight_id"] = [f"{prefix}{i:06d}" for i in k]
    df["horizon"] = hz
    df["created_at"] = pd.Series(created).dt.as_unit("ns")
    df["window_start"] = df["created_at"]
    df["window_end"] = (created + minutes).as_unit("ns")
    df["exit_time"] = (created + pd.Timedelta(minutes=30)).as_unit("ns")
    df["candles_until"] = df["exit_time"]
    for col, value in overrides.items():
        df[col] = value
    return df[list(AUDIT_COLUMNS)]
