"""A GENERATED 1-minute market for demos and tests, plus resampling to coarser bars.

Nothing in this module is real market data. `generate_market()` simulates 1-minute candles that
look and behave like the real thing, so that labeling, patterns, regimes and RCA have something
rich to chew on:

- price levels of early March 2018 (EURUSD ~1.23, GBPUSD ~1.39, USDJPY ~106, XAUUSD ~1320,
  BTCUSD ~9000) and a typical daily volatility per symbol (`SYMBOL_PARAMS`);
- fat tails: standardised Student-t returns (4 degrees of freedom, 3.5 for crypto);
- volatility clustering: a stochastic log-volatility (two AR(1) components, half-lives 20 min and
  8 h) plus extra volatility decaying after every jump (a GARCH-like aftershock);
- intraday seasonality: quiet Asia, busy London and the London/New York overlap (`HOUR_ACTIVITY`);
  crypto has a flatter profile;
- occasional jumps (about 3 a week per symbol, 6-25 one-minute sigmas, either sign);
- market closures from the instruments table (`instruments.closure_intervals`): FX, metals and
  indices have no candles from Friday 20:00 to Monday 00:00 UTC (and the Christmas/New Year
  closures), and reopen with a weekend gap; crypto trades 24/7;
- open == previous close except across a closure; high >= max(open, close); low <= min(open,
  close); prices rounded to the instrument's digits;
- a positive spread in price units (bid candles + spread = ask), wider in Asia, at the daily
  rollover, when volatility is high and right after a reopen (Sunday night/Monday 00:00);
- tick volume following activity and volatility.

Everything is vectorised (the only Python loop is one per symbol: AR(1) filters run through
pandas' exponentially weighted mean in C) and seeded: the same arguments give a byte-identical
frame. The default 4 weeks x 5 symbols (~180,000 candles) take well under a second.

The generated range starts 2018-03-05, after the real EURUSD sample (2017-04-19..2018-02-07), so
`demo_candles()` can carry both without overlap.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from autopsy_assets.domain import instruments
from autopsy_assets.domain.schemas import TIMEFRAMES

DEFAULT_SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
DEFAULT_START = "2018-03-05"
DEFAULT_SEED = 20180305
CANDLE_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "spread")

_NS_PER_MIN = 60 * 10**9


@dataclass(frozen=True)
class SymbolParams:
    level: float          # price at the start (early March 2018)
    daily_vol: float      # standard deviation of one trading day's log return
    spread_pips: float    # typical London/New York spread, in pips of the symbol
    volume: float         # typical tick volume of a 1-minute bar
    tail_df: float = 4.0  # Student-t degrees of freedom of the 1-minute returns


# March 2018 levels and typical volatilities. Symbols listed in the instruments table but not here
# cannot be generated (add a row to generate them).
SYMBOL_PARAMS: dict[str, SymbolParams] = {
    "EURUSD": SymbolParams(1.2310, 0.0050, 0.8, 80.0),
    "GBPUSD": SymbolParams(1.3850, 0.0060, 1.2, 70.0),
    "AUDUSD": SymbolParams(0.7760, 0.0060, 1.0, 50.0),
    "NZDUSD": SymbolParams(0.7260, 0.0065, 1.5, 35.0),
    "USDCHF": SymbolParams(0.9430, 0.0050, 1.2, 40.0),
    "USDCAD": SymbolParams(1.2900, 0.0050, 1.5, 45.0),
    "EURGBP": SymbolParams(0.8880, 0.0045, 1.2, 40.0),
    "USDJPY": SymbolParams(105.90, 0.0055, 1.0, 75.0),
    "EURJPY": SymbolParams(130.40, 0.0065, 1.8, 50.0),
    "GBPJPY": SymbolParams(146.70, 0.0075, 2.5, 45.0),
    "XAUUSD": SymbolParams(1321.0, 0.0080, 3.0, 120.0),
    "XAGUSD": SymbolParams(16.45, 0.0120, 3.0, 60.0),
    "US30": SymbolParams(24800.0, 0.0120, 2.5, 150.0),
    "US500": SymbolParams(2720.0, 0.0110, 0.5, 150.0),
    "NAS100": SymbolParams(6950.0, 0.0140, 1.5, 150.0),
    "GER40": SymbolParams(12300.0, 0.0110, 1.5, 120.0),
    "BTCUSD": SymbolParams(9000.0, 0.0500, 30.0, 25.0, tail_df=3.5),
    "ETHUSD": SymbolParams(800.0, 0.0600, 3.0, 20.0, tail_df=3.5),
}

# Relative activity by UTC hour (March, before the European clock change): Asia quiet, the London
# open and the London/New York overlap busy, the evening and the rollover quiet.
HOUR_ACTIVITY = np.array([
    0.55, 0.55, 0.60, 0.60, 0.55, 0.55, 0.65,   # 00-06 Tokyo/Sydney
    1.00, 1.40, 1.30, 1.10, 1.00,               # 07-11 London
    1.20, 1.60, 1.60, 1.40, 1.10,               # 12-16 New York open, overlap, London fix
    0.90, 0.80, 0.80, 0.60, 0.45, 0.50, 0.55,   # 17-23 New York afternoon, rollover
])
# Spread multiplier by UTC hour: wide in Asia and around the 21-22h rollover, tight in London/NY.
HOUR_SPREAD = np.array([
    1.6, 1.6, 1.5, 1.5, 1.5, 1.5, 1.3,
    1.0, 1.0, 1.0, 1.0, 1.0,
    1.0, 1.0, 1.0, 1.0, 1.0,
    1.1, 1.2, 1.2, 1.4, 2.5, 2.2, 1.8,
])
JUMPS_PER_WEEK = 3.0


def _symbol_rng(seed: int, symbol: str) -> np.random.Generator:
    """One independent stream per symbol: adding a symbol never changes the others."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(symbol.encode())]))


def _ar1(rng: np.random.Generator, n: int, half_life_min: float) -> np.ndarray:
    """A stationary AR(1) path with unit variance, vectorised via pandas' EWM (adjust=False)."""
    a = 1.0 - 0.5 ** (1.0 / half_life_min)
    stat_sd = np.sqrt(a / (2.0 - a))
    x = rng.standard_normal(n)
    x[0] *= stat_sd  # start at the stationary distribution: no burn-in needed
    y = pd.Series(x).ewm(alpha=a, adjust=False).mean().to_numpy()
    return y / stat_sd


def _closed_mask(ts_ns: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    if len(intervals) == 0:
        return np.zeros(ts_ns.shape, dtype=bool)
    k = np.searchsorted(intervals[:, 0], ts_ns, side="right") - 1
    kk = np.clip(k, 0, None)
    return (k >= 0) & (ts_ns < intervals[kk, 1])


def _one_symbol(symbol: str, start: pd.Timestamp, n_minutes: int, seed: int) -> dict[str, object]:
    inst = instruments.get(symbol)
    try:
        p = SYMBOL_PARAMS[inst.symbol]
    except KeyError:
        raise ValueError(
            f"cannot generate {symbol}: no price level/volatility for it in "
            f"market.SYMBOL_PARAMS (known: {', '.join(sorted(SYMBOL_PARAMS))})") from None
    rng = _symbol_rng(seed, inst.symbol)
    pip = inst.pip_size
    crypto = inst.closure == "none"

    grid = start.value + np.arange(n_minutes, dtype=np.int64) * _NS_PER_MIN
    end = pd.Timestamp(int(grid[-1]) + _NS_PER_MIN, tz="UTC")
    closed = _closed_mask(grid, instruments.closure_intervals(inst.closure, start, end))
    ts = grid[~closed]
    n = len(ts)
    # the first bar after a closure (weekend gap) and the minutes since that reopen
    step = np.diff(ts, prepend=ts[0] - _NS_PER_MIN)
    reopen = step > _NS_PER_MIN
    seg_start = np.maximum.accumulate(np.where(reopen, np.arange(n), 0))
    since_reopen = (np.arange(n) - seg_start).astype(float)
    since_reopen[seg_start == 0] = np.inf  # the very first bar is not a reopen

    hour = (ts // (3600 * 10**9)) % 24
    activity = HOUR_ACTIVITY[hour]
    if crypto:
        activity = 1.0 + 0.35 * (activity - 1.0)
    activity = activity / np.sqrt(np.mean(activity**2))

    # stochastic volatility: a fast and a slow log-vol component
    logvol = 0.30 * _ar1(rng, n, 20.0) + 0.35 * _ar1(rng, n, 480.0)
    sv = np.exp(logvol - 0.5 * (0.30**2 + 0.35**2))

    # jumps with a volatility aftershock (half-life 45 min)
    per_min = JUMPS_PER_WEEK / (7 * 1440)
    jump_at = rng.random(n) < per_min
    jump_size = rng.uniform(6.0, 25.0, n) * rng.choice([-1.0, 1.0], n)
    shock = pd.Series(np.where(jump_at, 1.0, 0.0)).ewm(
        alpha=1.0 - 0.5 ** (1 / 45.0), adjust=False).mean().to_numpy()
    aftershock = 1.0 + 25.0 * shock

    sigma_min = p.daily_vol / np.sqrt(1440.0)
    sigma = sigma_min * activity * sv * aftershock  # per-bar log-return scale
    t = rng.standard_t(p.tail_df, n) / np.sqrt(p.tail_df / (p.tail_df - 2.0))
    r = sigma * t + np.where(jump_at, jump_size * sigma_min, 0.0)
    # weekend gap: about two hours' worth of movement, opened at the reopen bar
    gap = np.where(reopen, rng.standard_normal(n) * sigma_min * np.sqrt(120.0), 0.0)

    log_close = np.log(p.level) + np.cumsum(r + gap)
    digits = inst.digits
    close = np.round(np.exp(log_close), digits)
    open_ = np.empty(n)
    open_[1:] = close[:-1]
    first_or_gap = reopen.copy()
    first_or_gap[0] = True
    open_[first_or_gap] = np.round(np.exp(log_close - r)[first_or_gap], digits)

    body_hi = np.maximum(open_, close)
    body_lo = np.minimum(open_, close)
    scale = np.exp(log_close) * sigma
    high = np.round(body_hi + 0.6 * scale * np.abs(rng.standard_normal(n)), digits)
    low = np.round(body_lo - 0.6 * scale * np.abs(rng.standard_normal(n)), digits)
    high = np.maximum(high, body_hi)
    low = np.minimum(low, body_lo)

    spread_mult = HOUR_SPREAD[hour] if not crypto else 1.0 + 0.3 * (HOUR_SPREAD[hour] - 1.0)
    spread_mult = spread_mult * (1.0 + 4.0 * np.exp(-since_reopen / 20.0))
    spread_mult = spread_mult * np.sqrt(sv * aftershock) * np.exp(0.15 * rng.standard_normal(n))
    spread = np.round(np.maximum(p.spread_pips * spread_mult, 0.1) * pip, digits + 1)
    spread = np.maximum(spread, 0.1 * pip)

    volume = np.maximum(
        np.round(p.volume * activity * sv * aftershock * np.exp(0.3 * rng.standard_normal(n))), 1.0)
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close,
            "volume": volume, "spread": spread}


@lru_cache(maxsize=4)
def _generate(symbols: tuple[str, ...], start: str, weeks: int, seed: int) -> pd.DataFrame:
    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    t0 = t0.floor("min")
    n_minutes = int(weeks) * 7 * 1440
    if n_minutes <= 0:
        raise ValueError(f"weeks must be positive, got {weeks!r}")
    parts = []
    for symbol in sorted({s.upper() for s in symbols}):
        cols = _one_symbol(symbol, t0, n_minutes, seed)
        n = len(cols["ts"])
        parts.append(pd.DataFrame({
            "symbol": np.full(n, symbol, dtype=object),
            "timeframe": np.full(n, "1m", dtype=object),
            "ts": pd.DatetimeIndex(
                np.asarray(cols["ts"]).astype("datetime64[ns]")).tz_localize("UTC"),
            **{k: cols[k] for k in ("open", "high", "low", "close", "volume", "spread")},
        }))
    out = pd.concat(parts, ignore_index=True)
    out["symbol"] = out["symbol"].astype("str")
    out["timeframe"] = out["timeframe"].astype("str")
    out["ts"] = out["ts"].dt.as_unit("ns")
    return out


def generate_market(symbols: tuple[str, ...] | list[str] = DEFAULT_SYMBOLS,
                    start: str | pd.Timestamp = DEFAULT_START, weeks: int = 4,
                    seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """GENERATED 1-minute candles, sorted by (symbol, ts).

    Columns: symbol, timeframe ('1m'), ts (bar open, datetime64[ns, UTC]), open, high, low, close
    (bid), volume (ticks), spread (price units, > 0). `weeks` x 7 days from `start` (UTC midnight
    unless a time is given); FX/metals/indices skip their closures, crypto runs 24/7.
    Deterministic: the same arguments give a byte-identical frame (each call returns a copy).
    """
    if isinstance(symbols, str):
        symbols = (symbols,)
    start_key = str(pd.Timestamp(start).isoformat())
    return _generate(tuple(symbols), start_key, int(weeks), int(seed)).copy()


# --- resampling ----------------------------------------------------------------------------------

def _infer_minutes(ts_ns: np.ndarray) -> int:
    """Bar length from the most common spacing (never the mean: closures would inflate it)."""
    d = np.diff(np.sort(ts_ns))
    d = d[d > 0]
    if len(d) == 0:
        return 1
    vals, counts = np.unique(d, return_counts=True)
    return max(int(vals[np.argmax(counts)] // _NS_PER_MIN), 1)


def _tf_minutes(tf: str) -> int:
    try:
        return TIMEFRAMES[tf]
    except KeyError:
        raise ValueError(f"unknown timeframe {tf!r} (known: {', '.join(TIMEFRAMES)})") from None


def _sum_or_nan(x: np.ndarray, idx: np.ndarray, counts_valid: np.ndarray) -> np.ndarray:
    s = np.add.reduceat(np.nan_to_num(x, nan=0.0), idx)
    return np.where(counts_valid > 0, s, np.nan)


def resample(candles: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Aggregate finer candles to `timeframe` ('5m', '15m', '1h', '4h', '1d', ...).

    Bars are labelled by their open (UTC, aligned to midnight UTC): open = first, high = max,
    low = min, close = last, volume = sum, spread = mean. Only bars that have candles are
    returned (a closure leaves no empty bar). Works per (symbol, source timeframe); a source whose
    bar length does not divide `timeframe` (e.g. 1h candles asked for 15m) is left out, and where
    two sources give the same bar the finer one wins. The source timeframe comes from the
    ``timeframe`` column, else from the most common spacing per symbol. Raises ValueError when
    no candle can be resampled to `timeframe`.
    """
    target = _tf_minutes(timeframe)
    step = target * _NS_PER_MIN
    if candles.empty:
        raise ValueError(f"no candles to resample to {timeframe}: the frame is empty")
    df = candles
    ts_all = df["ts"].dt.as_unit("ns").astype("int64").to_numpy()
    if "timeframe" in df.columns:
        src_min = df["timeframe"].map(lambda v: _tf_minutes(str(v))).to_numpy()
    else:
        src_min = np.zeros(len(df), dtype=np.int64)
        for idx in df.groupby("symbol", sort=False).indices.values():
            src_min[idx] = _infer_minutes(ts_all[idx])
    has_vol = "volume" in df.columns
    has_spread = "spread" in df.columns
    parts = []
    key = pd.DataFrame({"symbol": df["symbol"].to_numpy(), "src": src_min})
    for (sym, src), idx in key.groupby(["symbol", "src"], sort=True).indices.items():
        if src > target or target % src:
            continue
        idx = idx[np.argsort(ts_all[idx], kind="stable")]
        ts = ts_all[idx]
        bucket = (ts // step) * step
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:] - 1, len(ts) - 1]
        o = df["open"].to_numpy(dtype=float)[idx]
        h = df["high"].to_numpy(dtype=float)[idx]
        lo = df["low"].to_numpy(dtype=float)[idx]
        c = df["close"].to_numpy(dtype=float)[idx]
        part = {
            "symbol": sym, "timeframe": timeframe, "ts": bucket[starts], "src": src,
            "open": o[starts], "high": np.maximum.reduceat(h, starts),
            "low": np.minimum.reduceat(lo, starts), "close": c[ends],
        }
        if has_vol:
            v = df["volume"].to_numpy(dtype=float)[idx]
            part["volume"] = _sum_or_nan(v, starts, np.add.reduceat(~np.isnan(v), starts))
        if has_spread:
            s = df["spread"].to_numpy(dtype=float)[idx]
            n_ok = np.add.reduceat((~np.isnan(s)).astype(np.int64), starts)
            with np.errstate(invalid="ignore", divide="ignore"):
                part["spread"] = _sum_or_nan(s, starts, n_ok) / n_ok
        parts.append(pd.DataFrame(part))
    if not parts:
        raise ValueError(
            f"no candles can be resampled to {timeframe}: every source timeframe is coarser "
            f"than it or does not divide it")
    out = pd.concat(parts, ignore_index=True)
    out = out.sort_values(["symbol", "ts", "src"], kind="stable")
    out = out.drop_duplicates(["symbol", "ts"], keep="first").drop(columns="src")
    out["ts"] = pd.DatetimeIndex(out["ts"].to_numpy().astype("datetime64[ns]")).tz_localize("UTC")
    out["symbol"] = out["symbol"].astype("str")
    out["timeframe"] = out["timeframe"].astype("str")
    cols = [c for c in CANDLE_COLUMNS if c in out.columns]
    return out[cols].reset_index(drop=True)


def demo_candles() -> pd.DataFrame:
    """The demo market: the REAL EURUSD 1h sample plus the GENERATED 1-minute market.

    Sorted by (symbol, ts) (hence also by symbol, timeframe, ts). The sample (2017-04-19..
    2018-02-07) has no spread: its spread is NaN (unknown, not zero). The generated range starts
    2018-03-05, so the two never overlap.
    """
    from autopsy_assets.data.samples import eurusd_sample

    sample = eurusd_sample()
    market = generate_market()
    if market["ts"].min() <= sample["ts"].max():
        raise RuntimeError("the generated market overlaps the real EURUSD sample")
    out = pd.concat([sample, market], ignore_index=True)
    out = out.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    out["ts"] = out["ts"].dt.as_unit("ns")
    return out[list(CANDLE_COLUMNS)]
