"""Insight features for the meta-model, each known at the insight's created_at and never later.

`insight_features` turns insights (plus the optional candles, news, regimes and audits) into one
numeric row per insight; `build_dataset` joins those rows with the audits of one horizon into the
meta-model's training table (DESIGN.md sections 2 "Learning loop", 2a and 3).

What "known at created_at" means for each source:

- insight fields (scores, side, timeframe, symbol, strategy, claimed patterns, stop, target) are
  published with the insight;
- candles: only bars of the insight's own timeframe that had *closed* by created_at (bar ts + bar
  length <= created_at). Finer candles are resampled (`data.market.resample`) to the insight's
  timeframe; a bar still open at created_at is never read. Pattern re-verification
  (`patterns.verify_patterns`) looks at the 20 closed bars before created_at, and detection is
  causal, so later candles cannot change it;
- regimes: `regimes.regimes_at` returns the regime of the last bar that had closed (or the last
  feed row stamped) by created_at. Without a regime feed, regimes are derived from the same
  resampled candles (`regimes.derive_regimes`, causal);
- news: a *scheduled* calendar is public ahead of time, so "minutes to the next high-impact
  event" is known at created_at (`news.nearest_high_impact`). Pass only events that were
  scheduled in advance (a calendar, not a feed of surprises);
- audits: the strategy x symbol trailing success rate counts only audits whose exit_time is
  strictly before created_at (their outcome was known then).

Every feature is a plain float column (never a pandas categorical: SHAP 0.51 misreads native
categorical splits, DESIGN section 5). Symbol and strategy are stable hash codes
(`stable_code`), so the same name gets the same number in every dataset and every model.
A missing optional source leaves its features NaN.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from autopsy_assets.domain.schemas import TIMEFRAMES

PATTERN_FLAGS = ("BOS", "FVG", "OB", "BREAKOUT")
# claimed codes folded onto a flag: a CHOCH claim is a break of structure (DESIGN 2a)
_CLAIM_FLAG = {"BOS": "BOS", "CHOCH": "BOS", "FVG": "FVG", "OB": "OB", "BREAKOUT": "BREAKOUT"}
REGIME_CODES = {"ranging": 0.0, "trending_up": 1.0, "trending_down": 2.0, "volatile": 3.0}
# session hours in UTC, [start, end)
SESSIONS = {"asia": (0, 8), "london": (7, 16), "new_york": (12, 21), "overlap": (12, 16)}
ATR_BARS = 14
VOL_BARS = 20
PATTERN_LOOKBACK_BARS = 20

FEATURE_COLUMNS: tuple[str, ...] = (
    "ai_score", "confidence", "truth_index",
    "timeframe_minutes", "side", "symbol_code", "strategy_code",
    "hour", "day_of_week",
    "session_asia", "session_london", "session_new_york", "session_overlap",
    *(f"claimed_{p}" for p in PATTERN_FLAGS),
    *(f"verified_{p}" for p in PATTERN_FLAGS),
    "regime_code", "regime_confidence", "regime_with_side",
    "realised_vol", "atr_pct", "stop_atr", "target_atr",
    "minutes_to_next_news", "minutes_since_last_news",
    "trailing_success_rate",
)

# Short human names, for explanation summaries ("low confidence", "Asia session", ...).
FEATURE_LABELS: dict[str, str] = {
    "ai_score": "AI score", "confidence": "confidence", "truth_index": "truth index",
    "timeframe_minutes": "timeframe", "side": "side", "symbol_code": "symbol",
    "strategy_code": "strategy", "hour": "hour of day", "day_of_week": "day of week",
    "session_asia": "Asia session", "session_london": "London session",
    "session_new_york": "New York session", "session_overlap": "London/NY overlap",
    **{f"claimed_{p}": f"claims {p}" for p in PATTERN_FLAGS},
    **{f"verified_{p}": f"{p} re-verified" for p in PATTERN_FLAGS},
    "regime_code": "regime", "regime_confidence": "regime confidence",
    "regime_with_side": "trend regime vs side", "realised_vol": "realised volatility",
    "atr_pct": "ATR", "stop_atr": "stop distance", "target_atr": "target distance",
    "minutes_to_next_news": "minutes to next high-impact news",
    "minutes_since_last_news": "minutes since last high-impact news",
    "trailing_success_rate": "strategy x symbol trailing success rate",
}

# Dataset columns that travel with the features but are never features.
DATASET_ID_COLUMNS = ("insight_id", "created_at", "symbol", "strategy", "timeframe", "horizon")
DATASET_CARRIED_COLUMNS = ("label", "outcome_source", "exit_time", "user_id", "pnl_pct")

_NS_MIN = 60 * 10**9
_NAT = np.iinfo(np.int64).min


# --- helpers -------------------------------------------------------------------------------------

def stable_code(name) -> float:
    """A number for a name that never depends on which other names exist: the first 8 hex digits
    of sha256(name) as an integer (exact in float64). '' and missing names give NaN."""
    if name is None or (isinstance(name, float) and np.isnan(name)) or str(name) == "":
        return float("nan")
    return float(int(hashlib.sha256(str(name).encode("utf-8")).hexdigest()[:8], 16))


def stable_codes(values) -> np.ndarray:
    """`stable_code` per element, hashing each distinct value once."""
    s = pd.Series(values, dtype=object)
    codes, uniq = pd.factorize(s, use_na_sentinel=True)
    table = np.array([stable_code(u) for u in uniq] + [np.nan], dtype=float)
    return table[np.where(codes < 0, len(uniq), codes)]


def _utc_times(values, name: str) -> pd.Series:
    """A time column as tz-aware UTC ns; ISO strings with an offset are parsed; naive refused."""
    s = pd.Series(values)
    naive = f"{name} is timezone-naive: give UTC times"
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").dt.as_unit("ns")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        raise ValueError(naive)
    try:
        parsed = pd.to_datetime(s, utc=False, format="ISO8601")
    except ValueError:                      # mixed offsets: parse each to UTC
        parsed = None
    all_offsets = s.dropna().astype(str).str.contains(r"(?:[+-]\d\d:?\d\d|Z)$").all()
    if (parsed is None or parsed.dtype == object) and all_offsets:
        parsed = pd.to_datetime(s, utc=True, format="ISO8601")
    if parsed is None or not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        raise ValueError(naive)
    return parsed.dt.tz_convert("UTC").dt.as_unit("ns")


def _ns(values, name: str) -> np.ndarray:
    s = _utc_times(values, name)
    return s.astype("int64").to_numpy()


def _opt(frame: pd.DataFrame, col: str, n: int) -> np.ndarray:
    if col not in frame.columns:
        return np.full(n, np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)


def _claims(patterns: pd.Series) -> np.ndarray:
    """(n, 4) 0/1 matrix of claimed PATTERN_FLAGS from lists or '|'/','-joined strings."""
    n = len(patterns)
    out = np.zeros((n, len(PATTERN_FLAGS)))
    col = {p: j for j, p in enumerate(PATTERN_FLAGS)}
    s = pd.Series(patterns.to_numpy(dtype=object))
    s = s.map(lambda v: "|".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else v)
    text = s.astype("str").where(s.notna(), "").str.upper().str.replace(",", "|", regex=False)
    exploded = text.str.split("|").explode()
    exploded = exploded.str.strip()
    flags = exploded.map(_CLAIM_FLAG)
    ok = flags.notna().to_numpy()
    rows = exploded.index.to_numpy()[ok]
    cols = flags[ok].map(col).to_numpy(dtype=np.int64)
    out[rows, cols] = 1.0
    return out


# --- candles: bars of each insight's timeframe ---------------------------------------------------

def _bars_by_timeframe(candles: pd.DataFrame, timeframes) -> dict[str, pd.DataFrame]:
    """Candles of each wanted timeframe, resampled from finer ones where absent."""
    from autopsy_assets.data.market import resample

    out = {}
    c = candles
    if "ts" in c.columns:
        c = c.assign(ts=_utc_times(c["ts"], "candles ts").to_numpy())
    if "timeframe" in c.columns:   # resample maps the column per value: map categories once
        c = c.assign(timeframe=c["timeframe"].astype("str").astype("category"))
    for tf in timeframes:
        try:
            bars = resample(c, tf)
        except ValueError:
            continue
        if len(bars):
            out[tf] = bars
    return out


def _atr_vol(bars: pd.DataFrame, tf_min: int) -> dict[str, tuple[np.ndarray, ...]]:
    """Per symbol: (bar end ns, ATR(14), realised vol of the last 20 log returns)."""
    res = {}
    for sym, g in bars.groupby("symbol", sort=False):
        g = g.sort_values("ts", kind="stable")
        ts = g["ts"].dt.as_unit("ns").astype("int64").to_numpy()
        h, lo, c = (g[k].to_numpy(dtype=float) for k in ("high", "low", "close"))
        prev_c = np.r_[np.nan, c[:-1]]
        tr = np.fmax(h - lo, np.fmax(np.abs(h - prev_c), np.abs(lo - prev_c)))
        atr = pd.Series(tr).rolling(ATR_BARS, min_periods=ATR_BARS).mean().to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(c / prev_c)
        vol = pd.Series(r).rolling(VOL_BARS, min_periods=VOL_BARS).std().to_numpy()
        res[str(sym)] = (ts + tf_min * _NS_MIN, atr, vol)
    return res


def _candle_features(ins: pd.DataFrame, created_ns: np.ndarray, tf: np.ndarray,
                     candles: pd.DataFrame) -> dict[str, np.ndarray]:
    """ATR, realised vol, verified patterns and derived-regime inputs from closed bars."""
    from autopsy_assets.domain import patterns as P

    n = len(ins)
    atr = np.full(n, np.nan)
    vol = np.full(n, np.nan)
    verified = np.full((n, len(PATTERN_FLAGS)), np.nan)
    sym = ins["symbol"].astype(str).to_numpy()
    wanted = [t for t in pd.unique(tf) if t in TIMEFRAMES]
    bars_by_tf = _bars_by_timeframe(candles, wanted)
    has_patterns = "patterns" in ins.columns
    for t, bars in bars_by_tf.items():
        sel = np.flatnonzero(tf == t)
        if not len(sel):
            continue
        per_sym = _atr_vol(bars, TIMEFRAMES[t])
        for s, (end, a, v) in per_sym.items():
            rows = sel[sym[sel] == s]
            if not len(rows):
                continue
            k = np.searchsorted(end, created_ns[rows], side="right") - 1   # last closed bar
            ok = k >= 0
            kk = np.clip(k, 0, None)
            atr[rows] = np.where(ok, a[kk], np.nan)
            vol[rows] = np.where(ok, v[kk], np.nan)
        if not has_patterns:
            continue
        covered = sel[np.isin(sym[sel], list(per_sym))]
        if not len(covered):
            continue
        # one timeframe at a time, without the timeframe column: the lookback then counts the
        # closed candles themselves (a weekend does not eat the window)
        sub = pd.DataFrame({"insight_id": np.arange(len(covered)),
                            "created_at": _utc_times(ins["created_at"].iloc[covered],
                                                     "created_at").to_numpy(),
                            "symbol": sym[covered],
                            "side": ins["side"].iloc[covered].astype(str).to_numpy(),
                            "patterns": ins["patterns"].iloc[covered].to_numpy(dtype=object)})
        v = P.verify_patterns(sub, bars, lookback_bars=PATTERN_LOOKBACK_BARS)
        if not len(v):
            continue
        flag = v["pattern"].map(_CLAIM_FLAG)
        ok = flag.notna().to_numpy()
        col = flag[ok].map({p: j for j, p in enumerate(PATTERN_FLAGS)}).to_numpy(dtype=np.int64)
        rows = covered[v["insight_id"].to_numpy(dtype=np.int64)[ok]]
        vals = v["verified"].to_numpy(dtype=float)[ok]
        # BOS and CHOCH claims share the BOS flag: verified only when every such claim is
        folded = pd.DataFrame({"r": rows, "c": col, "v": vals}).groupby(["r", "c"])["v"].min()
        verified[folded.index.get_level_values(0).to_numpy(),
                 folded.index.get_level_values(1).to_numpy()] = folded.to_numpy()
    return {"atr": atr, "vol": vol, "verified": verified, "bars": bars_by_tf}


# --- trailing success rate -----------------------------------------------------------------------

def _finished_outcome(audits: pd.DataFrame) -> pd.Series:
    """replay_outcome where present (what would have happened, filtered insights included),
    else outcome."""
    if "replay_outcome" in audits.columns:
        rep = audits["replay_outcome"].astype("str").where(audits["replay_outcome"].notna(), "")
        if "outcome" in audits.columns:
            out = audits["outcome"].astype("str").where(audits["outcome"].notna(), "")
            rep = rep.where(rep != "", out)
        return rep
    return audits["outcome"].astype("str")


def trailing_success(audits: pd.DataFrame | None, strategy, symbol, created_at
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Strategy x symbol success rate of the audits that exited strictly before each query time.

    audits: strategy, symbol, exit_time, and outcome/replay_outcome (succeeded/failed count;
    anything else is ignored). Returns (rate, n): n finished audits so far, rate = succeeded / n
    (NaN when n = 0). Vectorised: audits are summed per (key, exit time), cumulated per key, and
    each query takes the cumulative counts of the last exit strictly before it (merge_asof).
    """
    q_ns = _ns(created_at, "created_at")
    m = len(q_ns)
    rate, cnt = np.full(m, np.nan), np.zeros(m)
    if audits is None or len(audits) == 0 or m == 0:
        return rate, cnt
    for c in ("strategy", "symbol", "exit_time"):
        if c not in audits.columns:
            raise ValueError(f"audits lack column {c} (needed for the trailing success rate)")
    oc = _finished_outcome(audits).to_numpy()
    fin = np.isin(oc, ("succeeded", "failed"))
    exit_ns = _ns(audits["exit_time"], "exit_time")
    fin &= exit_ns != _NAT
    a_key = (audits["strategy"].astype(str).to_numpy(dtype=object)[fin] + "\x1f"
             + audits["symbol"].astype(str).to_numpy(dtype=object)[fin])
    q_key = (pd.Series(strategy, dtype=object).astype(str).to_numpy(dtype=object) + "\x1f"
             + pd.Series(symbol, dtype=object).astype(str).to_numpy(dtype=object))
    codes, _ = pd.factorize(np.concatenate([a_key, q_key]))
    a_code, q_code = codes[: len(a_key)], codes[len(a_key):]
    agg = pd.DataFrame({"key": a_code, "t": exit_ns[fin],
                        "s": (oc[fin] == "succeeded").astype(np.int64), "n": 1})
    agg = agg.groupby(["key", "t"], sort=True).sum().reset_index()
    agg[["cs", "cn"]] = agg.groupby("key")[["s", "n"]].cumsum().to_numpy()
    left = pd.DataFrame({"key": q_code, "t": q_ns, "pos": np.arange(m)}).sort_values(
        "t", kind="stable")
    right = agg[["key", "t", "cs", "cn"]].sort_values("t", kind="stable")
    merged = pd.merge_asof(left, right, on="t", by="key", direction="backward",
                           allow_exact_matches=False)
    pos = merged["pos"].to_numpy()
    cn = merged["cn"].to_numpy(dtype=float)
    cs = merged["cs"].to_numpy(dtype=float)
    has = ~np.isnan(cn)
    cnt[pos[has]] = cn[has]
    rate[pos[has]] = cs[has] / cn[has]
    return rate, cnt


# --- the features --------------------------------------------------------------------------------

def insight_features(insights: pd.DataFrame, candles: pd.DataFrame | None = None,
                     news: pd.DataFrame | None = None, regimes: pd.DataFrame | None = None,
                     audits: pd.DataFrame | None = None, *, horizon: str | None = None
                     ) -> pd.DataFrame:
    """The FEATURE_COLUMNS of each insight, as known at its created_at (index = insights.index).

    insights: insight_id, created_at (tz-aware or ISO strings with an offset), symbol, side;
        optional timeframe, strategy, patterns, ai_score, confidence, truth_index, entry_price,
        stop_loss, take_profit (missing -> NaN features).
    candles: any timeframes; each insight reads bars of its own timeframe that closed by its
        created_at (resampled from finer candles when needed). None -> ATR, volatility,
        verified_*, stop/target distances (and derived regimes) are NaN.
    news: scheduled calendar (ts, currencies, impact); None -> news features NaN.
    regimes: a regime feed or `derive_regimes` output; None -> derived from the candles at the
        insight's timeframe; NaN when neither.
    audits: labeled audits (strategy, symbol, exit_time, outcome/replay_outcome [, horizon]);
        only those with exit_time < created_at count. ``horizon`` selects one horizon's audits;
        None uses them all as given (pass one horizon's audits, or each insight counts up to
        once per horizon).
    """
    missing = [c for c in ("created_at", "symbol", "side") if c not in insights.columns]
    if missing:
        raise ValueError(f"insights lack required column(s): {', '.join(missing)}")
    ins = insights
    n = len(ins)
    created = _utc_times(ins["created_at"], "created_at")
    created_ns = created.astype("int64").to_numpy()
    sym = ins["symbol"].astype(str).to_numpy(dtype=object)
    tf = (ins["timeframe"].astype("str").where(ins["timeframe"].notna(), "").to_numpy(dtype=object)
          if "timeframe" in ins.columns else np.full(n, "", dtype=object))
    side = ins["side"].astype(str).str.lower().map({"long": 1.0, "short": -1.0}).to_numpy(
        dtype=float)
    strategy = (ins["strategy"].astype("str").where(ins["strategy"].notna(), "")
                if "strategy" in ins.columns else pd.Series([""] * n, dtype=object))

    f: dict[str, np.ndarray] = {}
    f["ai_score"] = _opt(ins, "ai_score", n)
    f["confidence"] = _opt(ins, "confidence", n)
    f["truth_index"] = _opt(ins, "truth_index", n)
    f["timeframe_minutes"] = np.array([TIMEFRAMES.get(t, np.nan) for t in tf], dtype=float)
    f["side"] = side
    f["symbol_code"] = stable_codes(sym)
    f["strategy_code"] = stable_codes(strategy.to_numpy(dtype=object))
    hour = created.dt.hour.to_numpy(dtype=float)
    f["hour"] = hour
    f["day_of_week"] = created.dt.day_of_week.to_numpy(dtype=float)
    for name, (a, b) in SESSIONS.items():
        f[f"session_{name}"] = ((hour >= a) & (hour < b)).astype(float)
    claims = (_claims(ins["patterns"]) if "patterns" in ins.columns
              else np.full((n, len(PATTERN_FLAGS)), np.nan))
    for j, p in enumerate(PATTERN_FLAGS):
        f[f"claimed_{p}"] = claims[:, j]

    # candles: volatility, ATR, pattern re-verification
    atr = np.full(n, np.nan)
    verified = np.full((n, len(PATTERN_FLAGS)), np.nan)
    f["realised_vol"] = np.full(n, np.nan)
    bars_by_tf: dict[str, pd.DataFrame] = {}
    if candles is not None and len(candles) and n:
        cf = _candle_features(ins, created_ns, tf, candles)
        atr, verified, bars_by_tf = cf["atr"], cf["verified"], cf["bars"]
        f["realised_vol"] = cf["vol"]
    for j, p in enumerate(PATTERN_FLAGS):
        # a pattern not claimed has nothing to verify
        f[f"verified_{p}"] = np.where(claims[:, j] == 1, verified[:, j], np.nan)

    # regime at creation
    regime_code = np.full(n, np.nan)
    regime_conf = np.full(n, np.nan)
    reg = regimes
    if reg is None and bars_by_tf:
        from autopsy_assets.domain.regimes import derive_regimes
        reg = derive_regimes(pd.concat(list(bars_by_tf.values()), ignore_index=True))
    if reg is not None and len(reg) and n:
        from autopsy_assets.domain.regimes import regimes_at
        frame = pd.DataFrame({"symbol": sym, "ts": created.to_numpy()})
        if "timeframe" in ins.columns:
            frame["timeframe"] = tf
        at = regimes_at(reg, frame)
        regime_code = at["regime"].map(REGIME_CODES).to_numpy(dtype=float)
        regime_conf = pd.to_numeric(at["confidence"], errors="coerce").to_numpy(dtype=float)
        regime_conf = np.where(np.isnan(regime_code), np.nan, regime_conf)
    f["regime_code"] = regime_code
    f["regime_confidence"] = regime_conf
    f["regime_with_side"] = np.where(
        np.isnan(regime_code), np.nan,
        np.where(regime_code == 1.0, side, np.where(regime_code == 2.0, -side, 0.0)))

    entry = _opt(ins, "entry_price", n)
    stop = _opt(ins, "stop_loss", n)
    target = _opt(ins, "take_profit", n)
    with np.errstate(divide="ignore", invalid="ignore"):
        atr_ok = np.where(atr > 0, atr, np.nan)
        f["atr_pct"] = atr / entry * 100.0
        f["stop_atr"] = np.abs(entry - stop) / atr_ok
        f["target_atr"] = np.abs(target - entry) / atr_ok

    # news
    to_next = np.full(n, np.nan)
    since_last = np.full(n, np.nan)
    if news is not None and n:
        from autopsy_assets.domain.news import nearest_high_impact
        near = nearest_high_impact(news, pd.Series(sym), pd.Series(created.to_numpy()))
        to_next = near["minutes_to_next"].to_numpy(dtype=float)
        since_last = near["minutes_since_last"].to_numpy(dtype=float)
    f["minutes_to_next_news"] = to_next
    f["minutes_since_last_news"] = since_last

    # strategy x symbol trailing success rate, from audits that had exited by created_at
    a = audits
    if a is not None and horizon is not None and "horizon" in a.columns:
        a = a[a["horizon"].astype(str).str.upper() == str(horizon).upper()]
    if a is not None and "is_current" in a.columns:
        a = a[a["is_current"].astype(bool)]
    if a is not None and len(a):
        rate, _ = trailing_success(a, strategy.to_numpy(dtype=object), sym, created)
    else:
        rate = np.full(n, np.nan)
    f["trailing_success_rate"] = rate

    out = pd.DataFrame({c: np.asarray(f[c], dtype=float) for c in FEATURE_COLUMNS},
                       index=insights.index)
    return out


# --- the dataset ---------------------------------------------------------------------------------

def build_dataset(insights: pd.DataFrame, audits: pd.DataFrame,
                  candles: pd.DataFrame | None = None, news: pd.DataFrame | None = None,
                  regimes: pd.DataFrame | None = None, horizon: str = "24H") -> pd.DataFrame:
    """One row per insight with a succeeded or failed audit for ``horizon``, sorted by created_at.

    The label comes from ``replay_outcome`` (falling back to ``outcome`` where it is blank):
    filtered insights are replayed too, so they count with what would have happened to them, which
    is exactly what the meta-model must learn (was the filter right?). Only current audit rows
    (``is_current`` when present); a repeated (insight_id, horizon) keeps its last row.
    Where an insight has no stop/target, the audit's resolved stop_price/target_price (fixed by
    the labeling rule at creation, never by later prices) feed stop_atr/target_atr.

    Columns: insight_id, created_at, symbol, strategy, timeframe, horizon, FEATURE_COLUMNS,
    label (1 succeeded, 0 failed), outcome_source ('replay_outcome' | 'outcome'), exit_time,
    user_id, pnl_pct. exit_time, user_id and pnl_pct are carried for splitting, A/B and
    expectancy; they are never features. ``attrs["feature_names"]`` lists the feature columns.
    """
    for c in ("insight_id", "created_at", "symbol", "side"):
        if c not in insights.columns:
            raise ValueError(f"insights lack required column {c}")
    for c in ("insight_id", "exit_time"):
        if c not in audits.columns:
            raise ValueError(f"audits lack required column {c}")
    if "outcome" not in audits.columns and "replay_outcome" not in audits.columns:
        raise ValueError("audits lack an outcome: give replay_outcome and/or outcome")
    h = str(horizon).upper()
    a = audits
    if "horizon" in a.columns:
        a = a[a["horizon"].astype(str).str.upper() == h]
    if "is_current" in a.columns:
        a = a[a["is_current"].astype(bool)]
    # the full audit history of this horizon feeds the trailing success rate (needs strategy)
    if "strategy" not in a.columns or "symbol" not in a.columns:
        extra = [c for c in ("strategy", "symbol") if c not in a.columns]
        a = a.merge(insights[["insight_id", *extra]].drop_duplicates("insight_id"),
                    on="insight_id", how="left")
    oc = _finished_outcome(a)
    if "replay_outcome" in a.columns:
        rep = a["replay_outcome"].astype("str").where(a["replay_outcome"].notna(), "")
        source = np.where(rep.to_numpy() != "", "replay_outcome", "outcome")
    else:
        source = np.full(len(a), "outcome", dtype=object)
    lab = a.assign(_oc=oc.to_numpy(), outcome_source=source)
    lab = lab[lab["_oc"].isin(["succeeded", "failed"])]
    lab = lab.drop_duplicates("insight_id", keep="last")

    ins = insights.drop_duplicates("insight_id", keep="last")
    ins = ins[ins["insight_id"].isin(lab["insight_id"])].copy()
    if ins.empty:
        return _empty_dataset(h)
    lab = lab.set_index("insight_id")
    ids = ins["insight_id"].to_numpy()
    # resolved levels from the audit where the insight has none (known at creation)
    for col, acol in (("stop_loss", "stop_price"), ("take_profit", "target_price")):
        if acol in lab.columns:
            fill = pd.to_numeric(lab[acol], errors="coerce").reindex(ids).to_numpy(dtype=float)
            cur = (pd.to_numeric(ins[col], errors="coerce").to_numpy(dtype=float)
                   if col in ins.columns else np.full(len(ins), np.nan))
            ins[col] = np.where(np.isnan(cur), fill, cur)
    if "timeframe" in lab.columns:      # an insight without one: the timeframe labeling walked
        walked = lab["timeframe"].reindex(ids).astype("str").to_numpy(dtype=object)
        cur = (ins["timeframe"].astype("str").where(ins["timeframe"].notna(), "").to_numpy(
            dtype=object) if "timeframe" in ins.columns else np.full(len(ins), "", dtype=object))
        ins["timeframe"] = np.where(np.isin(cur, ["", "None", "nan"]), walked, cur)
    feats = insight_features(ins, candles=candles, news=news, regimes=regimes, audits=a)

    n = len(ins)
    created = _utc_times(ins["created_at"], "created_at")
    out = pd.DataFrame({
        "insight_id": ins["insight_id"].astype(str).to_numpy(),
        "created_at": created.to_numpy(),
        "symbol": ins["symbol"].astype(str).to_numpy(),
        "strategy": (ins["strategy"].astype(str).to_numpy() if "strategy" in ins.columns
                     else np.full(n, "", dtype=object)),
        "timeframe": (ins["timeframe"].astype(str).to_numpy() if "timeframe" in ins.columns
                      else np.full(n, "", dtype=object)),
        "horizon": h,
    })
    for c in FEATURE_COLUMNS:
        out[c] = feats[c].to_numpy()
    out["label"] = (lab["_oc"].reindex(ids).to_numpy() == "succeeded").astype(np.int64)
    out["outcome_source"] = lab["outcome_source"].reindex(ids).to_numpy()
    out["exit_time"] = _utc_times(lab["exit_time"].reindex(ids).reset_index(drop=True),
                                  "exit_time").to_numpy()
    if "user_id" in ins.columns:
        out["user_id"] = ins["user_id"].astype("str").where(ins["user_id"].notna(), "").to_numpy()
    elif "user_id" in lab.columns:
        out["user_id"] = lab["user_id"].reindex(ids).astype(str).to_numpy()
    else:
        out["user_id"] = ""
    out["pnl_pct"] = (pd.to_numeric(lab["pnl_pct"], errors="coerce").reindex(ids).to_numpy(
        dtype=float) if "pnl_pct" in lab.columns else np.nan)
    out["created_at"] = pd.Series(out["created_at"]).dt.as_unit("ns")
    out = out.sort_values(["created_at", "insight_id"], kind="stable").reset_index(drop=True)
    out.attrs["feature_names"] = list(FEATURE_COLUMNS)
    return out


def _empty_dataset(horizon: str) -> pd.DataFrame:
    utc = "datetime64[ns, UTC]"
    out = pd.DataFrame({
        "insight_id": pd.Series(dtype=object), "created_at": pd.Series(dtype=utc),
        "symbol": pd.Series(dtype=object), "strategy": pd.Series(dtype=object),
        "timeframe": pd.Series(dtype=object), "horizon": pd.Series(dtype=object),
        **{c: pd.Series(dtype=float) for c in FEATURE_COLUMNS},
        "label": pd.Series(dtype=np.int64), "outcome_source": pd.Series(dtype=object),
        "exit_time": pd.Series(dtype=utc), "user_id": pd.Series(dtype=object),
        "pnl_pct": pd.Series(dtype=float)})
    out.attrs["feature_names"] = list(FEATURE_COLUMNS)
    return out


def feature_names(dataset: pd.DataFrame) -> list[str]:
    """The dataset's feature columns: ``attrs["feature_names"]`` when set, else FEATURE_COLUMNS
    that are present."""
    names = dataset.attrs.get("feature_names") if hasattr(dataset, "attrs") else None
    if names:
        return list(names)
    return [c for c in FEATURE_COLUMNS if c in dataset.columns]
