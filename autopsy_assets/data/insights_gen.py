"""GENERATED demo insights over any candles (the real EURUSD sample, the generated market, ...).

Which data is real and which is generated: the candles given may be real (`samples.
eurusd_sample()`, from the backtesting package's EURUSD.csv) or generated (`market.
generate_market()`); every insight made here is GENERATED, as are the users, their actions and
fills. No real trading signal, user or account is behind any row.

How a row is made (all seeded; the same candles and arguments give an identical frame):

- Where: per symbol, over its candles (when a symbol has several timeframes that overlap, the
  finest covers its span and coarser candles only the time outside it). Insights per symbol =
  ``per_symbol_per_day`` x the UTC days that have candles, drawn without replacement among the
  bar ends, more often in London/New York hours than in Asia.
- When: ``created_at`` is the end of a candle (an insight is published at the close of the bar
  that triggered it), strictly after the symbol's first candle and after enough history for
  the ATR.
- Timeframe: the insight's own; on 1-minute candles a mix of 5m/15m/1h, on the hourly sample 1h.
- Entry: the close of the last candle that ended at or before ``created_at``: no later price.
- Side: ZenithEdge and BreakoutPro follow the trend of the last 20 bars 70% of the time,
  MeanRevert fades it 70% of the time.
- Stop: 1-2 x ATR(14) of the insight's timeframe, from bars that ended at or before created_at
  (never later bars), at least 3 pips; take profit at a risk:reward of 1.5-3. About 10% of rows
  lack a stop, a target or both, so labeling rules must supply them.
- Scores: ``ai_score``, ``confidence`` and ``truth_index`` are made MILDLY informative about the
  outcome. To decide that, the generator PEEKS at the candles after created_at (a latent quality:
  +1 when the target would be hit before the stop within 24 hours, -1 when the stop comes first or
  both fall in one bar, in between by the 24-hour P&L otherwise) and mixes it with much noise. This
  is a simulation device only: nothing else here (entry, stop, target) looks ahead, and autopsy's
  own code must never do this. ``status`` is 'filtered' for the lowest-scoring 15%.
- Users: u01..u20, each with their own propensity to act; about 40% of all rows are acted on
  (filtered rows never). An acted row has ``fill_price`` = entry +- a little slippage (mostly
  adverse) and ``filled_at`` 0-90 minutes after created_at; an unacted row NaN / NaT.

``include_bad_rows=True`` appends the rows in `BAD_ROWS` (ids 'BAD-...'), each with exactly one
defect that input validation must quarantine. To carry them, ``created_at`` becomes an object
column of ISO strings (every good row ends in '+00:00'; the bad one has no offset) and
``entry_price`` an object column (one 'n/a', one missing).
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from autopsy_assets.data.market import HOUR_ACTIVITY, resample
from autopsy_assets.domain import instruments
from autopsy_assets.domain.arrays import utc_index
from autopsy_assets.domain.schemas import INSIGHT_OPTIONAL, INSIGHT_REQUIRED, TIMEFRAMES

INSIGHT_COLUMNS = tuple(INSIGHT_REQUIRED) + tuple(INSIGHT_OPTIONAL)
STRATEGIES = ("ZenithEdge", "MeanRevert", "BreakoutPro")
_STRATEGY_P = (0.45, 0.30, 0.25)
_STRATEGY_SCORE = (2.0, -1.0, 0.0)  # per-strategy offset of ai_score
PATTERNS = ("BOS", "FVG", "OB", "BREAKOUT")
# probability of each pattern code per strategy (rows: STRATEGIES, columns: PATTERNS)
_PATTERN_P = np.array([
    [0.60, 0.50, 0.40, 0.10],   # ZenithEdge: smart-money structure
    [0.15, 0.35, 0.45, 0.05],   # MeanRevert: imbalances and order blocks to fade into
    [0.40, 0.10, 0.10, 0.85],   # BreakoutPro
])
INSIGHT_TIMEFRAMES = ("5m", "15m", "1h")
_TF_P = {"5m": 0.30, "15m": 0.35, "1h": 0.35}
ATR_BARS = 14
TREND_BARS = 20
LATENT_HORIZON_MIN = 1440
FILTERED_SHARE = 0.15
N_USERS = 20

BAD_ROWS: dict[str, str] = {
    "BAD-UNKNOWN-SYMBOL": "symbol 'FOOBAR' is not in the instruments table",
    "BAD-NAIVE-TIME": "created_at has no timezone",
    "BAD-ENTRY-NOT-NUMBER": "entry_price is 'n/a'",
    "BAD-STOP-WRONG-SIDE": "a long whose stop_loss is above entry_price",
    "BAD-UNKNOWN-SIDE": "side 'sideways' is neither long nor short",
    "BAD-MISSING-ENTRY": "entry_price is missing",
}

_NS_MIN = 60 * 10**9
_NS_DAY = 1440 * _NS_MIN
_TF_BY_MIN = {v: k for k, v in TIMEFRAMES.items()}
_ISO_UTC = "%Y-%m-%dT%H:%M:%S+00:00"


def _rng(seed: int, *keys: object) -> np.random.Generator:
    parts = [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(parts))


def _bar_minutes(candles: pd.DataFrame, ts_ns: np.ndarray) -> np.ndarray:
    """Bar length per row from the timeframe column, else the most common spacing per symbol."""
    if "timeframe" in candles.columns:
        tf = candles["timeframe"].astype(str)
        bad = ~tf.isin(list(TIMEFRAMES))
        if bad.any():
            raise ValueError(f"candles have unknown timeframe {tf[bad].iloc[0]!r}")
        return tf.map(TIMEFRAMES).to_numpy(dtype=np.int64)
    out = np.ones(len(candles), dtype=np.int64)
    for _, idx in candles.groupby("symbol", sort=False).indices.items():
        d = np.diff(np.sort(ts_ns[idx]))
        d = d[d > 0]
        if len(d):
            vals, counts = np.unique(d, return_counts=True)
            out[idx] = max(int(vals[np.argmax(counts)] // _NS_MIN), 1)
    return out


def _segments(candles: pd.DataFrame) -> list[tuple[str, int, pd.DataFrame]]:
    """(symbol, bar minutes, candles sorted by ts): per symbol, finest timeframe first; a coarser
    one only contributes candles outside the spans already covered."""
    ts_ns = candles["ts"].dt.as_unit("ns").astype("int64").to_numpy()
    minutes = _bar_minutes(candles, ts_ns)
    frame = pd.DataFrame({
        "symbol": candles["symbol"].astype(str).str.upper().to_numpy(),
        "ts_ns": ts_ns, "minutes": minutes,
        **{c: candles[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close")},
    })
    out = []
    for symbol, sym in frame.groupby("symbol", sort=True):
        covered: list[tuple[int, int]] = []
        for m, part in sym.groupby("minutes", sort=True):
            part = part.sort_values("ts_ns", kind="stable").drop_duplicates("ts_ns")
            keep = np.ones(len(part), dtype=bool)
            t = part["ts_ns"].to_numpy()
            for a, b in covered:
                keep &= ~((t >= a) & (t < b))
            part = part[keep]
            if len(part) == 0:
                continue
            covered.append((int(t[keep][0]), int(t[keep][-1] + m * _NS_MIN)))
            out.append((str(symbol), int(m), part.reset_index(drop=True)))
    return out


def _atr_lookup(seg: pd.DataFrame, src_min: int, tf: str, created_ns: np.ndarray) -> np.ndarray:
    """ATR(14) of `tf` bars that ended at or before each created_at (NaN without 14 such bars)."""
    if TIMEFRAMES[tf] == src_min:
        bars_ts, h, lo, c = (seg["ts_ns"].to_numpy(), seg["high"].to_numpy(),
                             seg["low"].to_numpy(), seg["close"].to_numpy())
    else:
        tmp = pd.DataFrame({
            "symbol": "X", "timeframe": _TF_BY_MIN[src_min],
            "ts": utc_index(seg["ts_ns"].to_numpy()),
            "open": seg["open"].to_numpy(), "high": seg["high"].to_numpy(),
            "low": seg["low"].to_numpy(), "close": seg["close"].to_numpy()})
        bars = resample(tmp, tf)
        bars_ts = bars["ts"].dt.as_unit("ns").astype("int64").to_numpy()
        h, lo, c = bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy()
    prev_c = np.r_[np.nan, c[:-1]]
    tr = np.fmax(h - lo, np.fmax(np.abs(h - prev_c), np.abs(lo - prev_c)))
    atr = pd.Series(tr).rolling(ATR_BARS, min_periods=ATR_BARS).mean().to_numpy()
    end = bars_ts + TIMEFRAMES[tf] * _NS_MIN
    k = np.searchsorted(end, created_ns, side="right") - 1
    return np.where(k >= 0, atr[np.clip(k, 0, None)], np.nan)


def _latent(seg: pd.DataFrame, src_min: int, created_ns: np.ndarray, side: np.ndarray,
            entry: np.ndarray, stop: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The generator's PEEK at the future (simulation only): +1 target first within 24 h, -1 stop
    first (or both in one bar), else the 24-hour P&L squashed into (-0.5, 0.5)."""
    ts = seg["ts_ns"].to_numpy()
    h, lo, c = seg["high"].to_numpy(), seg["low"].to_numpy(), seg["close"].to_numpy()
    width = max(LATENT_HORIZON_MIN // src_min, 1)
    pad = np.full(width, np.nan)
    hw = sliding_window_view(np.r_[h, pad], width)
    lw = sliding_window_view(np.r_[lo, pad], width)
    cw = sliding_window_view(np.r_[c, pad], width)
    j0 = np.searchsorted(ts, created_ns, side="left")
    H, L, C = hw[j0], lw[j0], cw[j0]
    long = side > 0
    hit_stop = np.where(long[:, None], L <= stop[:, None], H >= stop[:, None])
    hit_tgt = np.where(long[:, None], H >= target[:, None], L <= target[:, None])
    big = width + 1
    first_stop = np.where(hit_stop.any(axis=1), hit_stop.argmax(axis=1), big)
    first_tgt = np.where(hit_tgt.any(axis=1), hit_tgt.argmax(axis=1), big)
    n_valid = (~np.isnan(C)).sum(axis=1)
    last_close = np.where(n_valid > 0, C[np.arange(len(C)), np.maximum(n_valid - 1, 0)], entry)
    risk = np.abs(entry - stop)
    drift = 0.5 * np.tanh(side * (last_close - entry) / risk)
    return np.where(first_tgt < first_stop, 1.0, np.where(first_stop < big, -1.0, drift))


def _segment_insights(symbol: str, src_min: int, seg: pd.DataFrame, per_day: float,
                      seed: int) -> pd.DataFrame | None:
    inst = instruments.get(symbol)
    pip, digits = inst.pip_size, inst.digits
    rng = _rng(seed, symbol, src_min)
    ts = seg["ts_ns"].to_numpy()
    close = seg["close"].to_numpy()
    src_len = src_min * _NS_MIN
    end = ts + src_len

    choices = [t for t in INSIGHT_TIMEFRAMES
               if TIMEFRAMES[t] >= src_min and TIMEFRAMES[t] % src_min == 0]
    if not choices:
        choices = [_TF_BY_MIN.get(src_min, f"{src_min}m")]
    p_tf = np.array([_TF_P.get(t, 1.0) for t in choices])
    p_tf = p_tf / p_tf.sum()
    warm_ns = (ATR_BARS + 2) * max(TIMEFRAMES.get(t, src_min) for t in choices) * _NS_MIN
    eligible = np.flatnonzero(end >= ts[0] + warm_ns)
    if len(eligible) == 0:
        return None
    n_days = len(np.unique(ts // _NS_DAY))
    n = int(min(round(per_day * n_days), len(eligible)))
    if n <= 0:
        return None
    hour = (end[eligible] // (3600 * 10**9)) % 24
    w = HOUR_ACTIVITY[hour]
    pick = np.sort(rng.choice(eligible, size=n, replace=False, p=w / w.sum()))

    # published at the close of the bar that triggered it, so even a 1H audit of an hourly
    # insight has one complete hourly bar to walk
    created = end[pick]
    entry = close[pick]
    tf = np.asarray(choices, dtype=object)[rng.choice(len(choices), size=n, p=p_tf)]
    strat = rng.choice(len(STRATEGIES), size=n, p=_STRATEGY_P)

    atr = np.full(n, np.nan)
    trend = np.zeros(n)
    for t in choices:
        m = tf == t
        if not m.any():
            continue
        atr[m] = _atr_lookup(seg, src_min, t, created[m])
        back = TREND_BARS * TIMEFRAMES[t] // src_min
        trend[m] = np.sign(entry[m] - close[np.maximum(pick[m] - back, 0)])
    trend = np.where(trend == 0, 1.0, trend)
    follow = np.where(strat == 1, rng.random(n) >= 0.7, rng.random(n) < 0.7)
    side = np.where(follow, trend, -trend)

    ok = ~np.isnan(atr) & (atr > 0)
    if not ok.any():
        return None
    sel = np.flatnonzero(ok)
    pick, created, entry, tf, strat, atr, side = (a[sel] for a in
                                                  (pick, created, entry, tf, strat, atr, side))
    n = len(sel)

    dist = np.maximum(rng.uniform(1.0, 2.0, n) * atr, 3.0 * pip)
    rr = rng.uniform(1.5, 3.0, n)
    stop = np.round(entry - side * dist, digits)
    target = np.round(entry + side * rr * dist, digits)
    latent = _latent(seg, src_min, created, side, entry, stop, target)

    pat_hits = rng.random((n, len(PATTERNS))) < _PATTERN_P[strat]
    patterns = np.array(["|".join(p for p, hit in zip(PATTERNS, row) if hit) for row in pat_hits],
                        dtype=object)
    ai = np.clip(56.0 + 4.5 * latent + np.asarray(_STRATEGY_SCORE)[strat]
                 + 1.5 * pat_hits.sum(axis=1) + rng.normal(0.0, 14.0, n), 0.0, 100.0)
    conf = np.clip(0.55 * ai + 24.0 + 2.0 * latent + rng.normal(0.0, 10.0, n), 0.0, 100.0)
    truth = np.clip(0.5 + 0.06 * latent + rng.normal(0.0, 0.18, n), 0.0, 1.0)

    u = rng.random(n)
    stop = np.where((u < 0.04) | ((u >= 0.07) & (u < 0.10)), np.nan, stop)
    target = np.where((u >= 0.04) & (u < 0.10), np.nan, target)

    return pd.DataFrame({
        "created_ns": created, "symbol": symbol, "side": np.where(side > 0, "long", "short"),
        "entry_price": entry, "timeframe": tf, "stop_loss": stop, "take_profit": target,
        "strategy": np.asarray(STRATEGIES, dtype=object)[strat], "patterns": patterns,
        "ai_score": np.round(ai, 1), "confidence": np.round(conf, 1),
        "truth_index": np.round(truth, 3), "pip": pip, "digits": digits,
    })


def _bad_rows(good: pd.DataFrame) -> pd.DataFrame:
    """One row per BAD_ROWS entry, each a copy of a good row with exactly one defect."""
    base = good.iloc[: len(BAD_ROWS)].copy().reset_index(drop=True)
    base["insight_id"] = list(BAD_ROWS)
    base["entry_price"] = base["entry_price"].astype(object)
    created = base["created_at"].dt.strftime(_ISO_UTC).astype(object)
    for i, bad in enumerate(BAD_ROWS):
        e = float(base.at[i, "entry_price"])
        pip = instruments.pip_size(base.at[i, "symbol"])
        if bad == "BAD-UNKNOWN-SYMBOL":
            base.at[i, "symbol"] = "FOOBAR"
        elif bad == "BAD-NAIVE-TIME":
            created[i] = created[i].replace("+00:00", "")
        elif bad == "BAD-ENTRY-NOT-NUMBER":
            base.at[i, "entry_price"] = "n/a"
        elif bad == "BAD-STOP-WRONG-SIDE":
            base.at[i, "side"] = "long"
            base.at[i, "stop_loss"] = e + 20 * pip
            base.at[i, "take_profit"] = e + 40 * pip
        elif bad == "BAD-UNKNOWN-SIDE":
            base.at[i, "side"] = "sideways"
        elif bad == "BAD-MISSING-ENTRY":
            base.at[i, "entry_price"] = np.nan
    base["created_at"] = created
    return base


def generate_insights(candles: pd.DataFrame, per_symbol_per_day: float = 6, seed: int = 7,
                      include_bad_rows: bool = True) -> pd.DataFrame:
    """GENERATED demo insights over `candles`; columns INSIGHT_REQUIRED + INSIGHT_OPTIONAL.

    Sorted by created_at; ids 'INS-000001'.. in that order. See the module docstring for how each
    column is made. With `include_bad_rows`, the rows of `BAD_ROWS` follow (created_at then holds
    ISO strings and entry_price is an object column).
    """
    for col in ("symbol", "ts", "open", "high", "low", "close"):
        if col not in candles.columns:
            raise ValueError(f"candles need a {col!r} column")
    if candles["ts"].dt.tz is None:
        raise ValueError("candles column 'ts' is timezone-naive: localise it to UTC first")
    parts = [p for sym, m, seg in _segments(candles)
             if (p := _segment_insights(sym, m, seg, per_symbol_per_day, seed)) is not None]
    if not parts:
        raise ValueError(
            "the candles are too short to place any insight (need ~16 bars of history)")
    df = pd.concat(parts, ignore_index=True)
    df = df.sort_values(["created_ns", "symbol"], kind="stable").reset_index(drop=True)
    n = len(df)
    rng = _rng(seed, "users")

    threshold = np.quantile(df["ai_score"].to_numpy(), FILTERED_SHARE)
    filtered = df["ai_score"].to_numpy() < threshold
    user = rng.integers(1, N_USERS + 1, n)
    propensity = rng.permutation(np.linspace(0.20, 0.75, N_USERS))  # mean 0.475 x 85% ~ 40%
    acted = ~filtered & (rng.random(n) < propensity[user - 1])
    side = np.where(df["side"].to_numpy() == "long", 1.0, -1.0)
    slip_pips = rng.normal(0.3, 0.6, n)  # > 0 is adverse
    scale = 10.0 ** df["digits"].to_numpy(dtype=float)  # round each fill to its symbol's digits
    fill = np.round((df["entry_price"].to_numpy() + side * slip_pips * df["pip"].to_numpy())
                    * scale) / scale
    delay = np.minimum(np.round(rng.exponential(12.0, n)), 90).astype(np.int64)
    created_ns = df["created_ns"].to_numpy()
    filled_ns = created_ns + delay * _NS_MIN

    out = pd.DataFrame({
        "insight_id": [f"INS-{i:06d}" for i in range(1, n + 1)],
        "created_at": pd.Series(utc_index(created_ns)),
        "symbol": df["symbol"], "side": df["side"], "entry_price": df["entry_price"],
        "timeframe": df["timeframe"], "stop_loss": df["stop_loss"],
        "take_profit": df["take_profit"], "strategy": df["strategy"], "patterns": df["patterns"],
        "ai_score": df["ai_score"], "confidence": df["confidence"],
        "truth_index": df["truth_index"],
        "status": np.where(filtered, "filtered", "published"),
        "user_id": [f"u{u:02d}" for u in user],
        "user_acted": acted,
        "fill_price": np.where(acted, fill, np.nan),
        "filled_at": pd.Series(utc_index(np.where(acted, filled_ns, np.iinfo(np.int64).min))),
    })
    for col in ("insight_id", "symbol", "side", "timeframe", "strategy", "patterns", "status",
                "user_id"):
        out[col] = out[col].astype(str)
    out["created_at"] = out["created_at"].dt.as_unit("ns")
    out["filled_at"] = out["filled_at"].dt.as_unit("ns")
    out = out[list(INSIGHT_COLUMNS)]
    if include_bad_rows:
        bad = _bad_rows(out)
        good = out.copy()
        good["created_at"] = good["created_at"].dt.strftime(_ISO_UTC).astype(object)
        good["entry_price"] = good["entry_price"].astype(object)
        out = pd.concat([good, bad], ignore_index=True)
        out["created_at"] = out["created_at"].astype(object)
        out["entry_price"] = out["entry_price"].astype(object)
    return out.reset_index(drop=True)
