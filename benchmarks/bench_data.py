"""Generated-data and regime timings, printed as plain figures (no reference, no target).

    python benchmarks/bench_data.py [--repeat 3]

- generate_market(): the default generated 1-minute market (5 symbols, 4 weeks), its cache
  cleared before each run;
- generate_insights() over that market (bad rows included, the default);
- derive_regimes() on 260,000 one-minute random-walk closes of one symbol;
- regimes_at() for 100,000 random times on the regimes of 5,000 hourly closes;
- news.nearest_high_impact() for 100,000 random (symbol, time) queries on the scheduled
  calendar of 2017-04..2018-06.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from autopsy_assets.data import generate_insights, market
from autopsy_assets.data.news_calendar import scheduled_calendar
from autopsy_assets.domain import news, regimes

T0 = pd.Timestamp("2018-01-01", tz="UTC")


def closes(n: int, sigma: float, step: pd.Timedelta, timeframe: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"symbol": "EURUSD", "timeframe": timeframe,
                         "ts": pd.date_range(T0, periods=n, freq=step),
                         "close": np.exp(np.cumsum(rng.normal(0, sigma, n)))})


def best(fn: Callable[[], Any], repeat: int, before: Callable[[], Any] = lambda: None
         ) -> tuple[float, Any]:
    runs = []
    for _ in range(repeat):
        before()
        t = time.perf_counter()
        value = fn()
        runs.append(time.perf_counter() - t)
    return min(runs), value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    r = args.repeat

    s, candles = best(market.generate_market, r, before=market._generate.cache_clear)
    print(f"generate_market: {len(candles):,} candles in {s:.3f} s (best of {r}) = "
          f"{len(candles) / s:,.0f} candles/s")
    s, ins = best(lambda: generate_insights(candles), r)
    print(f"generate_insights: {len(ins):,} insights over {len(candles):,} candles in {s:.3f} s "
          f"(best of {r})")

    minute = closes(260_000, 1e-4, pd.Timedelta(minutes=1), "1m", seed=5)
    regimes.derive_regimes(minute.iloc[:1000])  # warm-up
    s, out = best(lambda: regimes.derive_regimes(minute), r)
    print(f"derive_regimes: {len(out):,} rows in {s:.3f} s (best of {r}) = "
          f"{len(out) / s:,.0f} rows/s")

    rng = np.random.default_rng(6)
    reg = regimes.derive_regimes(closes(5000, 1e-3, pd.Timedelta(hours=1), "1h", seed=6))
    q = pd.DataFrame({"symbol": "EURUSD",
                      "ts": T0 + pd.to_timedelta(rng.integers(0, 5000 * 60, 100_000), unit="min")})
    s, out = best(lambda: regimes.regimes_at(reg, q), r)
    print(f"regimes_at: {len(out):,} queries on {len(reg):,} regimes in {s:.3f} s "
          f"(best of {r}) = {len(out) / s:,.0f} queries/s")

    calendar = scheduled_calendar("2017-04-01", "2018-06-30")
    n = 100_000
    start, end = pd.Timestamp("2017-04-19", tz="UTC"), pd.Timestamp("2018-04-01", tz="UTC")
    times = pd.Series(pd.to_datetime(rng.integers(start.value, end.value, n), utc=True))
    syms = rng.choice(["EURUSD", "USDJPY", "GBPUSD", "XAUUSD", "AUDUSD"], n)
    news.nearest_high_impact(calendar, syms[:100], times[:100])  # warm-up
    s, out = best(lambda: news.nearest_high_impact(calendar, syms, times), r)
    print(f"nearest_high_impact: {len(out):,} queries on {len(calendar):,} events in {s:.3f} s "
          f"(best of {r}) = {len(out) / s:,.0f} queries/s")


if __name__ == "__main__":
    main()
