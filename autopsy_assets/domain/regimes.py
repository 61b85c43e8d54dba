"""Market regimes from candles (trending_up, trending_down, ranging, volatile), and drift tests.

A regime is derived per candle from two causal measures over trailing windows of *closes*:

* **trend strength** -- Kaufman's efficiency ratio with its sign,
  ``er_t = (c_t - c_{t-n}) / sum_{k=t-n+1..t} |c_k - c_{k-1}|`` in [-1, 1] (``n = window``).
  +1 is a straight line up, -1 straight down, ~0 a market that went nowhere however busy it was.
* **realised volatility** -- ``rv_t = sqrt(mean(r_k^2))`` of the last ``vol_window`` log returns,
  compared with its own history up to and including bar t: ``vol_percentile`` is the percentile
  rank of ``rv_t`` among all earlier values (expanding; or the last ``vol_lookback`` values) and
  ``vol_ratio = rv_t / mean(rv)`` over the same history (a mean by cumulative sums: exact,
  causal and O(n); the percentile already gives the robust, rank-based view).

Classification (first match wins):

1. ``volatile`` when ``vol_percentile > vol_pct`` (default the 90th) **and** ``vol_ratio >=
   min_vol_ratio`` (default 1.5). The ratio guard keeps a calm, stationary market from being
   called volatile 10% of the time merely because a percentile always has a top decile.
2. ``trending_up`` / ``trending_down`` when ``|er| >= trend_threshold`` (default 0.3), by its sign.
3. ``ranging`` otherwise.

Confidence (0-100) says how far inside its class the bar sits: ``50 + 50 * depth`` where depth in
[0, 1] is the distance from the nearest class boundary in units of a stated band, so a bar on a
boundary gets 50 (a coin flip between two classes) and one deep inside gets 100:

* volatile: ``depth = min((pct - vol_pct) / (1 - vol_pct), ratio / min_vol_ratio - 1)``
  (both conditions must hold, so the weaker one decides);
* trending: ``depth = min((|er| - thr) / (1 - thr), calm)``;
* ranging: ``depth = min((thr - |er|) / thr, calm)``;
* where ``calm = max((vol_pct - pct) / (1 - vol_pct),
  (min_vol_ratio - ratio) / (min_vol_ratio - 1))``
  is how clearly the bar is *not* volatile (either condition failing is enough, so the stronger
  one decides). Every depth is clipped to [0, 1]; percentiles here are fractions.

Causality: every quantity at bar t uses bars <= t of the same (symbol, timeframe) only, computed
by sequential cumulative sums and expanding/rolling windows, so appending candles never changes
an earlier row. The first bars lack history: a row gets a regime only once the efficiency ratio
(``window`` returns) and the volatility history (``min_history`` values of ``rv``) exist; before
that ``regime`` is missing and ``confidence`` NaN.

A regime is known when its bar closes: ``ts_end = ts + bar length``. `regimes_at` returns the
regime of the last bar whose end is <= the asked time, never a bar still open.

Drift: `psi` (population stability index) and `ks_drift` (scipy's two-sample Kolmogorov-Smirnov
test) compare a reference sample with a recent one (DESIGN section 5: enough, no Evidently).
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from . import instruments
from .arrays import utc_index
from .schemas import TIMEFRAMES

REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
REGIME_COLUMNS = ("symbol", "timeframe", "ts", "ts_end", "regime", "confidence",
                  "trend_strength", "realised_vol", "vol_percentile", "vol_ratio")
FEED_REQUIRED = ("symbol", "ts", "regime", "confidence")

_NS_PER_MIN = 60 * 10**9
_TF_RE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_TF_UNIT_MIN = {"m": 1, "h": 60, "d": 1440, "w": 10080}


# --- timeframes ----------------------------------------------------------------------------------

def bar_minutes(timeframe: str) -> int:
    """Length of one bar of ``timeframe`` in minutes ('1m' 1, '4h' 240, '1d' 1440, '15M' 15)."""
    tf = str(timeframe)
    if tf in TIMEFRAMES:
        return TIMEFRAMES[tf]
    m = _TF_RE.match(tf)
    if not m:
        raise ValueError(
            f"timeframe {timeframe!r} is not understood (use e.g. 1m, 15m, 1h, 4h, 1d)")
    return int(m.group(1)) * _TF_UNIT_MIN[m.group(2).lower()]


def _timeframe_label(minutes: int) -> str:
    for label, mins in TIMEFRAMES.items():
        if mins == minutes:
            return label
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def _infer_timeframe(ts_ns: np.ndarray) -> str:
    """The most common spacing of sorted bar times (never the mean: weekends would skew it)."""
    d = np.diff(np.unique(ts_ns))
    d = d[d > 0]
    if len(d) == 0:
        raise ValueError("cannot infer the timeframe of a single candle: give a timeframe column")
    vals, counts = np.unique(d, return_counts=True)
    minutes = int(round(vals[np.argmax(counts)] / _NS_PER_MIN))
    return _timeframe_label(max(minutes, 1))


def _utc_ns(series: pd.Series, name: str) -> pd.Series:
    """A tz-aware datetime column as UTC nanoseconds; a naive or non-time column is refused."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(series.dtype):
            raise ValueError(f"{name} has no timezone (naive times): localise it to UTC first")
        raise ValueError(f"{name} must be tz-aware datetimes, got dtype {series.dtype}")
    return series.dt.tz_convert("UTC").dt.as_unit("ns")


def _i8(series: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch of a tz-aware datetime Series (NaT -> int64 min)."""
    return series.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").to_numpy()


# --- derivation ----------------------------------------------------------------------------------

def _group_bounds(keys: np.ndarray) -> list[tuple[int, int]]:
    if len(keys) == 0:
        return []
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(keys)]])
    return list(zip(starts.tolist(), ends.tolist()))


def _measures(close: np.ndarray, window: int, vol_window: int, min_history: int,
              vol_lookback: int | None) -> tuple[np.ndarray, ...]:
    """Signed efficiency ratio, realised vol, its percentile (fraction) and ratio to its mean."""
    n = len(close)
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(close)
    r = np.zeros(n)
    r[1:] = np.diff(logc)
    r[~np.isfinite(r)] = 0.0
    absd = np.zeros(n)
    absd[1:] = np.abs(np.diff(close))
    absd[~np.isfinite(absd)] = 0.0

    # padded cumulative sums: C[k] = sum of the first k terms; window sum ending at t is
    # C[t+1] - C[t+1-w]. Sequential sums keep every prefix identical (causality).
    c1 = np.concatenate([[0.0], np.cumsum(absd)])
    c2 = np.concatenate([[0.0], np.cumsum(r * r)])
    idx = np.arange(n)

    er = np.full(n, np.nan)
    ok = idx >= window
    t = idx[ok]
    path = np.maximum(c1[t + 1] - c1[t + 1 - window], 0.0)
    move = close[t] - close[t - window]
    with np.errstate(divide="ignore", invalid="ignore"):
        e = np.where(path > 0, move / path, 0.0)
    er[ok] = np.clip(e, -1.0, 1.0)

    rv = np.full(n, np.nan)
    ok = idx >= vol_window
    t = idx[ok]
    rv[ok] = np.sqrt(np.maximum(c2[t + 1] - c2[t + 1 - vol_window], 0.0) / vol_window)

    s = pd.Series(rv)
    roll = (s.expanding(min_periods=min_history) if vol_lookback is None
            else s.rolling(vol_lookback, min_periods=min_history))
    pct = roll.rank(pct=True).to_numpy(dtype=float)
    # mean of rv over the same history, by cumulative sums (rv is NaN before bar vol_window)
    c_rv = np.concatenate([[0.0], np.cumsum(np.nan_to_num(rv))])
    first = np.where(vol_lookback is None, vol_window,
                     np.maximum(vol_window, idx + 1 - (vol_lookback or 0)))
    count = idx + 1 - first
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count >= min_history,
                        np.maximum(c_rv[idx + 1] - c_rv[np.minimum(first, idx + 1)], 0.0) / count,
                        np.nan)
        ratio = np.where(mean > 0, rv / mean, np.where(rv > 0, np.inf, 1.0))
    ratio[np.isnan(mean) | np.isnan(rv)] = np.nan
    return er, rv, pct, ratio


def classify(trend_strength: np.ndarray, vol_pct: np.ndarray, vol_ratio: np.ndarray, *,
             trend_threshold: float = 0.3, vol_percentile: float = 90.0,
             min_vol_ratio: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Regime labels and confidences from the measures (percentile as a fraction 0-1).

    Rows where any measure is missing get regime None and confidence NaN. See the module
    docstring for the rule and the confidence formula.
    """
    er = np.asarray(trend_strength, dtype=float)
    pct = np.asarray(vol_pct, dtype=float)
    ratio = np.asarray(vol_ratio, dtype=float)
    p = vol_percentile / 100.0
    thr = float(trend_threshold)
    if not 0 < p < 1:
        raise ValueError("vol_percentile must lie strictly between 0 and 100")
    if not 0 < thr < 1:
        raise ValueError("trend_threshold must lie strictly between 0 and 1")
    valid = ~(np.isnan(er) | np.isnan(pct) | np.isnan(ratio))
    a = np.abs(er)

    is_vol = valid & (pct > p) & (ratio >= min_vol_ratio)
    is_trend = valid & ~is_vol & (a >= thr)
    labels = np.full(len(er), None, dtype=object)
    labels[valid] = "ranging"
    labels[is_trend & (er > 0)] = "trending_up"
    labels[is_trend & (er < 0)] = "trending_down"
    labels[is_vol] = "volatile"

    with np.errstate(divide="ignore", invalid="ignore"):
        d_pct_hi = np.clip((pct - p) / (1 - p), 0, 1)
        d_ratio_hi = (np.clip(ratio / min_vol_ratio - 1, 0, 1) if min_vol_ratio > 0
                      else np.ones_like(ratio))
        d_vol = np.minimum(d_pct_hi, d_ratio_hi)
        calm_pct = np.clip((p - pct) / (1 - p), 0, 1)
        calm_ratio = (np.clip((min_vol_ratio - ratio) / (min_vol_ratio - 1), 0, 1)
                      if min_vol_ratio > 1 else np.zeros_like(ratio))
        calm = np.maximum(calm_pct, calm_ratio)
        d_trend = np.minimum(np.clip((a - thr) / (1 - thr), 0, 1), calm)
        d_range = np.minimum(np.clip((thr - a) / thr, 0, 1), calm)
    depth = np.where(is_vol, d_vol, np.where(is_trend, d_trend, d_range))
    conf = np.where(valid, 50.0 + 50.0 * depth, np.nan)
    return labels, conf


def derive_regimes(candles: pd.DataFrame, window: int = 24, *, vol_window: int | None = None,
                   trend_threshold: float = 0.3, vol_percentile: float = 90.0,
                   min_vol_ratio: float = 1.5, min_history: int = 100,
                   vol_lookback: int | None = None) -> pd.DataFrame:
    """One regime per candle, per (symbol, timeframe), causal and vectorised.

    candles: symbol, ts (bar open, tz-aware), close; timeframe optional (inferred per symbol
    from the most common spacing when absent). Other columns are ignored. Rows are sorted by
    (symbol, timeframe, ts); a repeated (symbol, timeframe, ts) keeps its last row (candles are
    expected clean: the candle validator quarantines conflicting duplicates upstream).

    Parameters: ``window`` bars for the efficiency ratio; ``vol_window`` returns for realised
    vol (default ``window``); ``min_history`` vol values before percentiles count;
    ``vol_lookback`` None = expanding history, or that many trailing vol values. Thresholds as in
    the module docstring.

    Returns columns REGIME_COLUMNS: symbol, timeframe, ts, ts_end (bar close, when the regime is
    known), regime (None during warm-up), confidence (0-100, NaN in warm-up), trend_strength
    (signed efficiency ratio, -1..1), realised_vol (RMS log return per bar), vol_percentile
    (0-100), vol_ratio (realised vol / its mean so far).
    """
    missing = [c for c in ("symbol", "ts", "close") if c not in candles.columns]
    if missing:
        raise ValueError(f"candles lack required column(s): {', '.join(missing)}")
    window = int(window)
    vol_window = int(vol_window or window)
    if window < 2 or vol_window < 2:
        raise ValueError("window and vol_window must be at least 2 bars")
    if min_history < 1:
        raise ValueError("min_history must be at least 1")
    if vol_lookback is not None and vol_lookback < min_history:
        raise ValueError("vol_lookback must be at least min_history")

    sym = candles["symbol"].astype(str).to_numpy(dtype=object)
    ts_all = _i8(_utc_ns(candles["ts"], "ts"))
    close_all = pd.to_numeric(candles["close"], errors="coerce").to_numpy(dtype=float)
    if "timeframe" in candles.columns:
        tf = candles["timeframe"].to_numpy(dtype=object).copy()
        blank = pd.isna(tf)
    else:
        tf = np.full(len(sym), None, dtype=object)
        blank = np.ones(len(sym), dtype=bool)
    if blank.any():   # infer per symbol from the most common spacing
        for s_ in pd.unique(sym[blank]):
            rows = blank & (sym == s_)
            tf[rows] = _infer_timeframe(np.sort(ts_all[rows]))
    tf = tf.astype(str).astype(object)
    if len(sym) == 0:
        return pd.DataFrame({
            "symbol": pd.Series(dtype=str), "timeframe": pd.Series(dtype=str),
            "ts": pd.Series(dtype="datetime64[ns, UTC]"),
            "ts_end": pd.Series(dtype="datetime64[ns, UTC]"),
            "regime": pd.Series(dtype=object),
            **{c: pd.Series(dtype=float) for c in REGIME_COLUMNS[5:]}})

    # sort by (symbol, timeframe, ts) on integer codes; a repeated key keeps its last row
    s_code, s_uniq = pd.factorize(sym, sort=True)
    t_code, t_uniq = pd.factorize(tf, sort=True)
    order = np.lexsort((ts_all, t_code, s_code))
    s_code, t_code, ts_ns, close = s_code[order], t_code[order], ts_all[order], close_all[order]
    same_next = np.zeros(len(order), dtype=bool)
    same_next[:-1] = ((s_code[1:] == s_code[:-1]) & (t_code[1:] == t_code[:-1])
                      & (ts_ns[1:] == ts_ns[:-1]))
    if same_next.any():
        keep = ~same_next
        s_code, t_code, ts_ns, close = s_code[keep], t_code[keep], ts_ns[keep], close[keep]

    n = len(ts_ns)
    er = np.full(n, np.nan)
    rv = np.full(n, np.nan)
    pct = np.full(n, np.nan)
    ratio = np.full(n, np.nan)
    ends = np.empty(n, dtype=np.int64)
    group = s_code.astype(np.int64) * (len(t_uniq) + 1) + t_code
    for a, b in _group_bounds(group):
        er[a:b], rv[a:b], pct[a:b], ratio[a:b] = _measures(
            close[a:b], window, vol_window, min_history, vol_lookback)
        ends[a:b] = ts_ns[a:b] + bar_minutes(t_uniq[t_code[a]]) * _NS_PER_MIN

    labels, conf = classify(er, pct, ratio, trend_threshold=trend_threshold,
                            vol_percentile=vol_percentile, min_vol_ratio=min_vol_ratio)

    out = pd.DataFrame({
        "symbol": pd.Series(np.asarray(s_uniq, dtype=object)[s_code], dtype=str),
        "timeframe": pd.Series(np.asarray(t_uniq, dtype=object)[t_code], dtype=str),
        "ts": utc_index(ts_ns),
        "ts_end": utc_index(ends),
        "regime": pd.Series(labels, dtype=object),
        "confidence": conf,
        "trend_strength": er,
        "realised_vol": rv,
        "vol_percentile": pct * 100.0,
        "vol_ratio": ratio,
    })
    return out


# --- lookup --------------------------------------------------------------------------------------

def regimes_at(regimes: pd.DataFrame, frame: pd.DataFrame, *, timeframe: str | None = None,
               time_col: str = "ts") -> pd.DataFrame:
    """The regime in force at each row of ``frame`` (symbol, ``time_col``), vectorised.

    "In force" means the last regime row whose availability time is <= the asked time: ``ts_end``
    (the bar close) for derived regimes, ``ts`` for a feed without ``ts_end``. A bar still open
    at the asked time is never used.

    Which timeframe: ``timeframe`` if given; else the row's own ``timeframe`` column when
    ``frame`` has one and that (symbol, timeframe) exists in ``regimes``; else the finest
    timeframe ``regimes`` holds for the symbol (its last closed bar is the most recent).

    Returns a frame with ``frame``'s index: regime (None when nothing closed yet, the symbol is
    unknown, or the bar used is still in its warm-up: never a guessed label), confidence, regime_ts (bar open of the row used), regime_timeframe, and
    trend_strength / vol_percentile when ``regimes`` has them.
    """
    if "symbol" not in frame.columns or time_col not in frame.columns:
        raise ValueError(f"frame needs columns symbol and {time_col}")
    for c in ("symbol", "ts", "regime"):
        if c not in regimes.columns:
            raise ValueError(f"regimes lack required column {c}")
    extra = [c for c in ("trend_strength", "vol_percentile") if c in regimes.columns]
    q_ns = _utc_ns(pd.Series(frame[time_col]).reset_index(drop=True), time_col)
    q_ns = _i8(q_ns)
    q_sym = frame["symbol"].astype(str).to_numpy()
    n = len(frame)

    R = regimes
    avail_col = "ts_end" if "ts_end" in R.columns else "ts"
    has_tf = "timeframe" in R.columns
    if has_tf and timeframe is not None:
        R = R[R["timeframe"].astype(str) == str(timeframe)]
    r_sym = R["symbol"].astype(str).to_numpy()
    r_tf = R["timeframe"].astype(str).to_numpy() if has_tf else np.full(len(R), "", dtype=object)

    # integer keys: symbol code x timeframe code (no string building per row)
    s_codes, _ = pd.factorize(np.concatenate([q_sym.astype(object), r_sym.astype(object)]))
    q_sc, r_sc = s_codes[:n].astype(np.int64), s_codes[n:].astype(np.int64)
    r_tc, t_uniq = pd.factorize(r_tf.astype(object))
    r_tc = r_tc.astype(np.int64)
    width = len(t_uniq) + 1
    r_key = r_sc * width + r_tc

    # chosen timeframe per query row
    if has_tf and len(R):
        minutes = np.array([bar_minutes(t) for t in t_uniq], dtype=np.int64)
        pair_keys = np.unique(r_key)
        p_sym, p_tf = pair_keys // width, pair_keys % width
        o = np.lexsort((np.asarray(t_uniq, dtype=str)[p_tf], minutes[p_tf], p_sym))
        finest = np.full(int(s_codes.max()) + 1 if len(s_codes) else 1, -1, dtype=np.int64)
        first = np.ones(len(o), dtype=bool)
        first[1:] = p_sym[o][1:] != p_sym[o][:-1]
        finest[p_sym[o][first]] = p_tf[o][first]
        chosen = finest[q_sc]
        if timeframe is None and "timeframe" in frame.columns:
            own = pd.Index(t_uniq).get_indexer(frame["timeframe"].astype(str).to_numpy())
            own_ok = (own >= 0) & np.isin(q_sc * width + own, pair_keys)
            chosen = np.where(own_ok, own, chosen)
    else:
        chosen = np.zeros(n, dtype=np.int64)
    q_key = np.where(chosen >= 0, q_sc * width + chosen, -1)

    left = pd.DataFrame({"key": q_key, "t": q_ns, "pos": np.arange(n)})
    right = pd.DataFrame({
        "key": r_key,
        "t": _i8(_utc_ns(R[avail_col], avail_col)),
        "ridx": np.arange(len(R)),
    })
    left = left.sort_values("t", kind="stable")
    right = right.sort_values("t", kind="stable")
    m = pd.merge_asof(left, right, on="t", by="key", direction="backward",
                      allow_exact_matches=True).sort_values("pos")
    ridx = m["ridx"].to_numpy()
    hit = ~np.isnan(ridx)
    ri = np.where(hit, ridx, 0).astype(np.int64)

    def take(col: str, fill, dtype=None):
        vals = R[col].to_numpy(dtype=dtype) if len(R) else np.array([], dtype=dtype)
        out = np.empty(n, dtype=object if dtype is None else dtype)
        out[:] = fill
        if hit.any():
            out[hit] = vals[ri[hit]]
        return out

    regime_ts = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    if hit.any():
        regime_ts[hit] = _i8(_utc_ns(R["ts"], "ts"))[ri[hit]].view("datetime64[ns]")
    out = pd.DataFrame({
        "regime": pd.Series(take("regime", None), dtype=object, index=frame.index),
        "confidence": (take("confidence", np.nan, float) if "confidence" in R.columns
                       else np.full(n, np.nan)),
        "regime_ts": pd.to_datetime(regime_ts).tz_localize("UTC").as_unit("ns"),
        "regime_timeframe": pd.Series(
            np.where(hit, r_tf[ri] if len(R) else None, None) if has_tf
            else np.full(n, None, dtype=object), dtype=object, index=frame.index),
    }, index=frame.index)
    for c in extra:
        out[c] = take(c, np.nan, float)
    return out


def regime_at(regimes: pd.DataFrame, symbol: str, times, *, timeframe: str | None = None
              ) -> pd.DataFrame:
    """`regimes_at` for one symbol at many times (a sequence of tz-aware timestamps)."""
    idx = pd.DatetimeIndex(pd.to_datetime(times))
    if idx.tz is None:
        raise ValueError("times have no timezone (naive): give them in UTC")
    frame = pd.DataFrame({"symbol": str(symbol), "ts": idx.tz_convert("UTC")})
    return regimes_at(regimes, frame, timeframe=timeframe)


# --- external feed -------------------------------------------------------------------------------

def _norm_label(v) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return re.sub(r"[\s\-]+", "_", str(v).strip().lower())


def normalise_regime_feed(feed: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Validate an external regime feed (symbol, ts, regime, confidence [, timeframe]).

    Labels are matched case-insensitively, spaces and hyphens read as underscores ('Trending
    Up' -> trending_up). A row is quarantined when its ts is missing, unparseable or naive,
    its regime is not one of REGIMES, its confidence is missing or outside 0-100, its symbol is
    not in the instruments table, or when the same (symbol[, timeframe], ts) appears with
    different content (all copies; exact repeats keep one). Quarantine rows are dicts with
    source='regimes', row_id='symbol|ts', reason.

    Returns (clean, quarantine): clean has symbol, [timeframe,] ts (UTC ns), regime, confidence
    sorted by symbol[, timeframe], ts. Raises ValueError naming a missing required column.
    """
    from .news import parse_times  # one place for the tz-aware/naive parsing rule

    missing = [c for c in FEED_REQUIRED if c not in feed.columns]
    if missing:
        raise ValueError(f"regime feed lacks required column(s): {', '.join(missing)}")
    n = len(feed)
    has_tf = "timeframe" in feed.columns
    raw_ts = feed["ts"].reset_index(drop=True)
    ts, ts_reason = parse_times(raw_ts, "ts")
    symbol = feed["symbol"].astype(object).reset_index(drop=True)
    sym_str = symbol.map(lambda s: "" if s is None or (isinstance(s, float) and np.isnan(s))
                         else str(s).strip().upper())
    regime = feed["regime"].reset_index(drop=True).map(_norm_label)
    conf = pd.to_numeric(feed["confidence"].reset_index(drop=True), errors="coerce")
    conf_raw = feed["confidence"].reset_index(drop=True)

    reasons: list[list[str]] = [[] for _ in range(n)]

    def add(mask: np.ndarray, fn) -> None:
        for i in np.flatnonzero(mask):
            reasons[i].append(fn(i))

    add(ts_reason.to_numpy() != "", lambda i: ts_reason.iat[i])
    add((sym_str == "").to_numpy(), lambda i: "symbol is missing")
    known = instruments.known(sym_str.to_numpy())
    add((sym_str != "").to_numpy() & ~known,
        lambda i: f"unknown symbol {sym_str.iat[i]!r}: it is not in the instruments table")
    add(~regime.isin(REGIMES).to_numpy(),
        lambda i: (f"regime {feed['regime'].iat[i]!r} is not one of {', '.join(REGIMES)}"
                   if not pd.isna(regime.iat[i]) else "regime is missing"))
    add(conf.isna().to_numpy(),
        lambda i: (f"confidence {conf_raw.iat[i]!r} is not a number"
                   if not pd.isna(conf_raw.iat[i]) else "confidence is missing"))
    add((conf.notna() & ((conf < 0) | (conf > 100))).to_numpy(),
        lambda i: f"confidence {conf.iat[i]:g} is outside 0-100")

    clean = pd.DataFrame({"symbol": sym_str, "ts": ts, "regime": regime, "confidence": conf})
    if has_tf:
        clean.insert(1, "timeframe", feed["timeframe"].astype(str).reset_index(drop=True))
    key_cols = ["symbol", "timeframe", "ts"] if has_tf else ["symbol", "ts"]
    ok = np.array([not r for r in reasons], dtype=bool)
    good = clean[ok]
    dup_any = good.duplicated(key_cols, keep=False)
    if dup_any.any():
        distinct = good[dup_any].drop_duplicates()
        conflicted = distinct[distinct.duplicated(key_cols, keep=False)][key_cols].drop_duplicates()
        if len(conflicted):
            flag = good.reset_index().merge(conflicted, on=key_cols, how="inner")["index"]
            for i in flag.to_numpy():
                reasons[i].append("the same symbol and ts appear with different regimes or "
                                  "confidences; all copies are held back")

    bad = np.array([bool(r) for r in reasons], dtype=bool)

    def row_id(i: int) -> str:
        t = ts.iat[i]
        t_txt = t.isoformat() if not pd.isna(t) else str(raw_ts.iat[i])
        return f"{sym_str.iat[i]}|{t_txt}"

    quarantine = [{"source": "regimes", "row_id": row_id(i), "reason": "; ".join(reasons[i])}
                  for i in np.flatnonzero(bad)]
    clean = (clean[~bad].drop_duplicates(key_cols).sort_values(key_cols, kind="stable")
             .reset_index(drop=True))
    clean["confidence"] = clean["confidence"].astype(float)
    return clean, quarantine


# --- drift ---------------------------------------------------------------------------------------

def _clean_sample(x: Iterable) -> np.ndarray:
    return np.asarray(x if hasattr(x, "__len__") else list(x))


def _is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biuf"


def psi(expected, actual, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``actual`` against the reference ``expected``.

    Numeric samples: bin edges are the quantiles of ``expected`` at k/bins, k = 1..bins-1
    (numpy's default linear interpolation), duplicates removed; a value x falls in bin
    i = number of edges <= x, so bins are [e_{i-1}, e_i) with open outer ends. Categorical
    samples (strings, e.g. regime labels): one bin per category seen in either sample.
    Proportions are floored at ``eps`` so an empty bin does not make the index infinite, then
    ``PSI = sum((a - e) * ln(a / e))``. NaN values are dropped; an empty sample gives NaN.
    Reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 a real shift.
    """
    e = _clean_sample(expected)
    a = _clean_sample(actual)
    numeric = _is_numeric(e) and _is_numeric(a)
    if numeric:
        e = e.astype(float)
        a = a.astype(float)
        e = e[~np.isnan(e)]
        a = a[~np.isnan(a)]
    else:
        e = np.array([v for v in e.astype(object) if not pd.isna(v)], dtype=object)
        a = np.array([v for v in a.astype(object) if not pd.isna(v)], dtype=object)
    if len(e) == 0 or len(a) == 0:
        return float("nan")
    if numeric:
        if bins < 1:
            raise ValueError("bins must be at least 1")
        edges = np.unique(np.quantile(e, np.arange(1, bins) / bins))
        e_counts = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1)
        a_counts = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
    else:
        cats = sorted(set(map(str, e)) | set(map(str, a)))
        pos = {c: i for i, c in enumerate(cats)}
        e_counts = np.bincount([pos[str(v)] for v in e], minlength=len(cats))
        a_counts = np.bincount([pos[str(v)] for v in a], minlength=len(cats))
    pe = np.maximum(e_counts / e_counts.sum(), eps)
    pa = np.maximum(a_counts / a_counts.sum(), eps)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def ks_drift(expected, actual, alpha: float = 0.05) -> dict:
    """Two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp) of ``actual`` vs ``expected``.

    Returns dict(statistic, pvalue, drifted=pvalue < alpha, n_expected, n_actual). NaNs are
    dropped; an empty sample gives NaN statistic and pvalue and drifted False.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = e[~np.isnan(e)]
    a = a[~np.isnan(a)]
    if len(e) == 0 or len(a) == 0:
        return {"statistic": float("nan"), "pvalue": float("nan"), "drifted": False,
                "n_expected": int(len(e)), "n_actual": int(len(a))}
    res = stats.ks_2samp(e, a)
    p = float(res.pvalue)
    return {"statistic": float(res.statistic), "pvalue": p, "drifted": bool(p < alpha),
            "n_expected": int(len(e)), "n_actual": int(len(a))}


def drift_report(expected, actual, bins: int = 10, psi_threshold: float = 0.2,
                 alpha: float = 0.05) -> dict:
    """Both tests at once: dict(psi, psi_drifted, ks_statistic, ks_pvalue, ks_drifted, drifted).

    ``drifted`` is true when both agree (PSI above ``psi_threshold`` and KS significant): on large
    samples KS alone flags differences too small to matter, and PSI alone is noisy on small ones.
    """
    value = psi(expected, actual, bins=bins)
    ks = ks_drift(expected, actual, alpha=alpha)
    psi_drifted = bool(value > psi_threshold) if not np.isnan(value) else False
    return {"psi": value, "psi_drifted": psi_drifted, "ks_statistic": ks["statistic"],
            "ks_pvalue": ks["pvalue"], "ks_drifted": ks["drifted"],
            "drifted": psi_drifted and ks["drifted"]}
