"""Root-cause analysis: why did a failed (or neutral) insight fail? Ranked causes with calibrated
confidence, a sentence a trader understands, and the numbers behind it.

`analyze_failures(audits, insights, candles, news=None, regimes=None)` takes the current audits
whose outcome (``replay_outcome`` for filtered insights) is failed or neutral and returns, per
audit, one row per cause that counts, ranked (rank 1 = the primary cause), or one ``unknown`` row.

Every cause of DESIGN section 2 has a heuristic. Each computes the numbers it relies on and turns
them into a **raw score** 0-100 on a fixed scale where 50 means "the rule's condition is just
met" (e.g. a realised range of exactly 2x the baseline), 0 "no evidence" and 100 "as strong as
the scale goes". Raw scores are then mapped to **calibrated confidences** (below).

The adverse moment (DESIGN 2a) is the exit bar for stop exits (stop, gap_stop), else the bar of
maximum adverse excursion between created_at and the exit. Window features are read from the
candles the audit walked (``candle_timeframe``; else the finest timeframe of the symbol):

=================  ===========================================================================
news_shock         a high-impact event for either currency of the symbol within +-30 min of the
                   adverse bar (`news.nearest_high_impact`). raw = 50 + 30 x (1 - |dt| / 30)
                   + 20 x clip((move_atr - 1) / (k - 1), 0, 1). Needs a news source.
volatility_spike   realised range: the largest rolling mean true range of ``realised_bars`` bars
                   (each bar winsorised at ``winsor_atr`` x baseline, so a single jump is not a
                   spike) ending between created_at and ``after_bars`` bars past the adverse
                   bar, over the trailing baseline ATR (mean true range of the
                   ``baseline_minutes`` before created_at). raw = 25 x ratio (2x -> 50).
liquidity_event    volume collapse (the smallest rolling mean volume over the same span, over
                   the trailing baseline volume; 0.35 -> 50, 0 -> 100) or price gaps (bars that
                   open more than ``gap_atr`` x ATR away from the previous close, plus missing
                   bars outside market closures; 2 -> 50, 4 -> 100). raw = max + 0.25 x min.
external_shock     the adverse move: over the ``move_bars`` bars ending at the adverse bar,
                   from the close before them to the worst price, in ATRs of the ``atr_bars``
                   bars before them; a move of k (``shock_k`` = 6) ATR -> 50, 2k -> 100.
                   Only without high-impact news within +-30 min; needs a news source.
regime_drift       the regime at created_at against the regime later (at the adverse bar's close
                   or at the horizon's end, whichever differs more): changed -> 30 + 10 x
                   (depth0 + depth1) + 20 if it was a trend with the trade + 25 if it became a
                   trend against it (+5 both); unchanged -> 0.8 x the confidence drop (max 40).
                   depth = (regime confidence - 50) / 50. Regimes default to `derive_regimes`
                   on the candles at the insight's timeframe (resampled when absent).
model_error        the insight's confidence (ai_score when missing): raw = 2 x (confidence - 50),
                   so 75 -> 50 (overconfident); <= 50 -> 0 ("a failure was expected").
detector_misid     claimed patterns not re-verified (`patterns.verify_patterns`, 20 bars):
                   raw = 50 + 50 x unverified / claimed; no claim -> not applicable.
spread_slippage    the worst of: an adverse fill at once (filled within one bar of the
                   insight's timeframe; slippage_pips), the spread at entry (the bars around
                   created_at) and at the exit bar, in pips: raw = 50 x pips / 3 (3 -> 50).
user_psychology    only for acted insights filled more than one bar after created_at:
                   raw = 50 + 12.5 x (delay_bars - 1) + 25 x clip(chase, 0, 1), chase = how far
                   the fill was from entry towards the target, as a share of the risk.
false_positive     the fail rate of the strategy x symbol x pattern set (x horizon) over the
                   ``fp_window_days`` before created_at, from audits that exited before
                   created_at (at least ``fp_min_audits`` of them): raw = 50 at 60%, 100 at
                   100%, 50 x rate / 0.6 below. A base-rate cause.
=================  ===========================================================================

Calibration. ``config/rca_calibration.yaml`` holds, per cause, a monotone map (piecewise linear
knots, isotonic) from raw score to the probability that the cause is the right one, fitted on the
synthetic benchmark market (``python benchmarks/bench_rca.py --fit-calibration``; the file says
which seed). A cause **counts** when its calibrated confidence reaches ``threshold`` (50).
Without the file every map is the identity (raw score = confidence).

Ranking (DESIGN 2a). Causes that count are ordered by confidence, with three rules on top:
volatility_spike, liquidity_event and external_shock rank below news_shock when high-impact news
is within +-30 min of the adverse moment; false_positive (a base rate) ranks below every cause
with evidence in the insight's own window and leads only when none counts; user_psychology never
applies to an unacted insight. The confidence shown for rank 1 is the calibrated one; a lower rank
shows its own, capped at the rank above (a secondary cause is never shown as likelier than the
primary). When no cause counts, the audit gets one ``unknown`` row at rank 1 whose raw score is
100 - the best calibrated confidence (mapped by the calibrated ``unknown`` map when the file has
one).

Degradation. Without news, news_shock and external_shock are skipped (external needs to rule
news out); without candles for the window, the candle heuristics; without a confidence, without
claimed patterns, without fill data, the ones that need them. Every row's evidence lists what
was skipped and why in ``skipped``; nothing raises for a missing source.

Speed. Everything is vectorised: window features are cumulative sums, sparse-table range queries
and searchsorted over each (symbol, timeframe) candle array; news, regimes and the trailing fail
rates are single vectorised joins. Python loops run only over causes, candle series and distinct
groups (evidence JSON and summaries are built by column-wise string operations).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from autopsy_assets.domain import instruments
from autopsy_assets.domain.news import nearest_high_impact, normalise_news, parse_currencies
from autopsy_assets.domain.patterns import verify_patterns
from autopsy_assets.domain.regimes import derive_regimes, regimes_at
from autopsy_assets.domain.schemas import HORIZONS, TIMEFRAMES
from autopsy_assets.domain.validation import Quarantine

__all__ = ["CAUSES", "ALL_CAUSES", "RCA_COLUMNS", "RcaParams", "Calibration", "analyze_failures",
           "rca_scores", "load_calibration"]

CAUSES = ("news_shock", "regime_drift", "volatility_spike", "liquidity_event", "model_error",
          "detector_misid", "spread_slippage", "false_positive", "user_psychology",
          "external_shock")
ALL_CAUSES = CAUSES + ("unknown",)
RCA_COLUMNS = ("insight_id", "horizon", "cause", "confidence", "rank", "summary", "evidence")
BASE_RATE = ("false_positive",)
NEWS_DEFERS = ("volatility_spike", "liquidity_event", "external_shock")
ANALYSED = ("failed", "neutral")
STOP_EXITS = ("stop", "gap_stop")

_NS_MIN = 60 * 10**9
_NAT = np.iinfo(np.int64).min
_CALIBRATION_FILE = "rca_calibration.yaml"


@dataclass(frozen=True)
class RcaParams:
    """The numbers the heuristics use (module docstring). Defaults are what was calibrated."""

    news_window_min: float = 30.0      # high-impact news within +- this of the adverse bar
    baseline_minutes: int = 1440       # trailing baseline (ATR, volume) before created_at
    atr_bars: int = 14                 # ATR before the adverse move
    realised_bars: int = 15            # rolling window of realised range / volume
    after_bars: int = 15               # bars after the adverse bar still read
    winsor_atr: float = 4.0            # a bar's true range is capped at this x baseline ATR
    move_bars: int = 3                 # the adverse move spans this many bars
    shock_k: float = 6.0               # external shock: move > k x ATR
    spike_ratio: float = 2.0           # volatility spike: realised range >= 2x baseline
    volume_collapse: float = 0.35      # liquidity: volume below 35% of baseline
    gap_atr: float = 0.5               # a bar opening this many ATR off the previous close
    gaps_at_threshold: int = 2         # liquidity: this many gaps/missing bars -> 50
    spread_pips: float = 3.0           # spread or adverse fill beyond this -> 50
    overconfident_at: float = 75.0     # model_error raw 50 at this confidence
    fp_rate: float = 0.60              # false positive: trailing fail rate above this
    fp_window_days: float = 30.0
    fp_min_audits: int = 10
    pattern_lookback_bars: int = 20
    regime_bars: int = 24              # the regime later = this many bars after the adverse bar
    trend_threshold: float = 0.3       # regime_drift: trend strength that makes a trend


# --- calibration -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """Monotone maps, as piecewise-linear knots, per cause (+ 'unknown').

    ``maps``: raw score -> the probability (%) that this cause is the right one; it decides
    whether a cause counts and orders the causes. ``rank1``: that confidence -> how often the
    cause is right when it leads (rank 1); it gives the confidence shown for rank 1. A cause
    missing from either is mapped by the identity.
    """

    maps: dict = field(default_factory=dict)    # cause -> (x knots, y knots)
    rank1: dict = field(default_factory=dict)   # cause -> (x knots, y knots)
    source: str = "identity (no calibration file)"

    @staticmethod
    def _map(table: dict, cause: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if cause not in table:
            return np.clip(x, 0.0, 100.0)
        kx, ky = table[cause]
        return np.where(np.isnan(x), np.nan, np.interp(np.clip(x, 0.0, 100.0), kx, ky))

    def apply(self, cause: str, raw: np.ndarray) -> np.ndarray:
        """Raw score -> calibrated confidence (NaN stays NaN)."""
        return self._map(self.maps, cause, raw)

    def leading(self, cause: str, conf: np.ndarray) -> np.ndarray:
        """Calibrated confidence of a cause that leads -> the confidence shown at rank 1."""
        return self._map(self.rank1, cause, conf)


def _parse_maps(spec_maps: dict, source: str, what: str) -> dict:
    maps = {}
    for cause, spec in (spec_maps or {}).items():
        x = np.asarray(spec["x"], dtype=float)
        y = np.asarray(spec["y"], dtype=float)
        if len(x) != len(y) or len(x) < 1:
            raise ValueError(f"{source}: {what} map of {cause} needs as many x as y knots")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError(f"{source}: {what} map of {cause} is not monotone")
        maps[str(cause)] = (x, y)
    return maps


def _parse_calibration(raw: dict, source: str) -> Calibration:
    return Calibration(maps=_parse_maps(raw.get("maps"), source, "cause"),
                       rank1=_parse_maps(raw.get("rank1"), source, "rank-1"), source=source)


@lru_cache(maxsize=4)
def load_calibration(path: str | None = None) -> Calibration:
    """The calibration maps from ``path`` or the packaged ``config/rca_calibration.yaml``;
    the identity when the packaged file does not exist yet."""
    if path is None:
        ref = resources.files("autopsy_assets.config").joinpath(_CALIBRATION_FILE)
        if not ref.is_file():
            return Calibration()
        text, source = ref.read_text(), f"{_CALIBRATION_FILE} (packaged)"
    else:
        text, source = Path(path).read_text(), str(path)
    return _parse_calibration(yaml.safe_load(text) or {}, source)


CALIBRATION = load_calibration()


# --- small helpers ---------------------------------------------------------------------------

def _i8(values, name: str) -> np.ndarray:
    """Times (tz-aware datetimes or ISO strings with an offset) -> int64 ns UTC; NaT -> _NAT."""
    s = pd.Series(values).reset_index(drop=True)
    if len(s) == 0:
        return np.empty(0, dtype=np.int64)
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(s.dtype):
            if s.notna().any():
                raise ValueError(f"column `{name}` is timezone-naive; localise it to UTC")
            s = s.dt.tz_localize("UTC")
        else:
            obj = s.astype(object).where(s.notna(), None)
            s = pd.to_datetime(obj, utc=True, errors="coerce", format="ISO8601")
    s = s.dt.tz_convert("UTC").dt.as_unit("ns")
    out = s.astype("int64").to_numpy().copy()
    out[s.isna().to_numpy()] = _NAT
    return out


def _bar_ns(timeframes: np.ndarray, default_ns: np.ndarray | int) -> np.ndarray:
    """Bar length per row from timeframe labels (unknown/blank -> default)."""
    codes, uniq = pd.factorize(pd.Series(timeframes, dtype=object).astype(str))
    table = np.array([TIMEFRAMES.get(str(u), 0) * _NS_MIN for u in uniq] + [0], dtype=np.int64)
    out = table[np.where(codes < 0, len(uniq), codes)]
    return np.where(out > 0, out, default_ns)


def _cumsum0(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.nan_to_num(x, nan=0.0))])


class _Sparse:
    """Range max (op=np.fmax) / min (np.fmin) over x with levels up to ``levels``; O(1) queries
    and binary-lifted "first index reaching a level"."""

    def __init__(self, x: np.ndarray, op, levels: int):
        self.op = op
        self.levels = [np.asarray(x, dtype=float)]
        for k in range(1, max(1, levels)):
            prev, step = self.levels[-1], 1 << (k - 1)
            if step >= len(prev):
                break
            cur = prev.copy()
            cur[:-step] = op(prev[:-step], prev[step:])
            self.levels.append(cur)

    def query(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """op over x[a:b] (inclusive a, exclusive b; b > a required)."""
        length = np.maximum(b - a, 1)
        k = np.minimum(np.floor(np.log2(length)).astype(np.int64), len(self.levels) - 1)
        out = np.empty(len(a))
        for kk in np.unique(k):
            sel = k == kk
            lev = self.levels[int(kk)]
            out[sel] = self.op(lev[a[sel]], lev[np.maximum(b[sel] - (1 << int(kk)), a[sel])])
        return out

    def first_reaching(self, a: np.ndarray, b: np.ndarray, level: np.ndarray, below: bool
                       ) -> np.ndarray:
        """First j in [a, b) with x[j] <= level (below, on a min table) or >= level; else b."""
        pos = a.copy()
        for k in range(len(self.levels) - 1, -1, -1):
            step = 1 << k
            can = pos + step <= b
            if not can.any():
                continue
            vals = self.levels[k][np.minimum(pos, len(self.levels[0]) - 1)]
            clear = vals > level if below else vals < level
            pos = np.where(can & clear, pos + step, pos)
        return pos


class _Bars:
    """One (symbol, timeframe) of candles as arrays, with the cumulative sums the heuristics use."""

    def __init__(self, frame: pd.DataFrame, bar_ns: int, closure: str, p: RcaParams):
        self.bar_ns = int(bar_ns)
        self.ts = frame["ts"].to_numpy(dtype=np.int64)
        n = len(self.ts)
        self.n = n
        self.open = frame["open"].to_numpy(dtype=float)
        self.high = frame["high"].to_numpy(dtype=float)
        self.low = frame["low"].to_numpy(dtype=float)
        self.close = frame["close"].to_numpy(dtype=float)
        self.has_volume = "volume" in frame and bool(np.isfinite(frame["volume"].to_numpy(
            dtype=float)).any())
        self.volume = frame["volume"].to_numpy(dtype=float) if self.has_volume else None
        self.has_spread = "spread" in frame and bool(np.isfinite(frame["spread"].to_numpy(
            dtype=float)).any())
        self.spread = frame["spread"].to_numpy(dtype=float) if self.has_spread else None
        prev = np.concatenate([[np.nan], self.close[:-1]])
        self.tr = np.fmax(self.high, prev) - np.fmin(self.low, prev)
        self.c_tr = _cumsum0(self.tr)
        self.base_n = max(p.atr_bars, int(round(p.baseline_minutes * _NS_MIN / self.bar_ns)))
        j = np.arange(n)
        lo = np.maximum(j - self.base_n, 0)
        cnt = j - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            base_bar = np.where(cnt >= p.atr_bars, (self.c_tr[j] - self.c_tr[lo]) / cnt, np.nan)
        self.base_atr_bar = base_bar               # trailing baseline ATR before bar j
        trw = np.fmin(self.tr, np.where(np.isnan(base_bar), np.inf, p.winsor_atr * base_bar))
        W = p.realised_bars
        c_trw = _cumsum0(trw)
        lo_w = np.maximum(j + 1 - W, 0)
        self.roll_tr = (c_trw[j + 1] - c_trw[lo_w]) / (j + 1 - lo_w)
        if self.has_volume:
            self.c_vol = _cumsum0(self.volume)
            self.roll_vol = (self.c_vol[j + 1] - self.c_vol[lo_w]) / (j + 1 - lo_w)
        gap = np.abs(self.open - prev)
        with np.errstate(invalid="ignore"):
            is_gap = np.nan_to_num(gap, nan=0.0) > p.gap_atr * np.nan_to_num(base_bar, nan=np.inf)
        self.c_gap = _cumsum0(is_gap.astype(float))
        missing = np.zeros(n)
        if n > 1:
            step = np.diff(self.ts)
            miss = np.maximum(step // self.bar_ns - 1, 0).astype(float)
            if miss.any() and closure != "none":
                iv = instruments.closure_intervals(
                    closure, pd.Timestamp(int(self.ts[0]), tz="UTC"),
                    pd.Timestamp(int(self.ts[-1]), tz="UTC"))
                excused = instruments.inside_closure(self.ts[:-1] + self.bar_ns, self.ts[1:], iv)
                miss[excused] = 0.0
            missing[1:] = miss
        self.c_missing = _cumsum0(missing)
        K = p.move_bars
        self.low_k = pd.Series(self.low).rolling(K, min_periods=1).min().to_numpy()
        self.high_k = pd.Series(self.high).rolling(K, min_periods=1).max().to_numpy()
        self._tables: dict = {}

    def table(self, name: str, levels: int) -> _Sparse:
        have = self._tables.get(name)
        if have is None or len(have.levels) < levels:
            src = {"roll_tr_max": (self.roll_tr, np.fmax),
                   "roll_vol_min": (getattr(self, "roll_vol", self.roll_tr), np.fmin),
                   "low_min": (self.low, np.fmin), "high_max": (self.high, np.fmax)}[name]
            have = _Sparse(src[0], src[1], levels)
            self._tables[name] = have
        return have

    def mean_tr(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Mean true range over bars [a, b) (NaN where empty or a < 0)."""
        ok = (a >= 0) & (b > a)
        aa, bb = np.clip(a, 0, self.n), np.clip(b, 0, self.n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, (self.c_tr[bb] - self.c_tr[aa]) / np.maximum(bb - aa, 1), np.nan)


# --- skipped-reason bookkeeping ----------------------------------------------------------------

class _Skips:
    """Per row, the heuristics that could not run and why, as a bit mask over distinct reasons."""

    def __init__(self, n: int):
        self.mask = np.zeros(n, dtype=object)   # python ints: any number of reasons
        self.mask[:] = 0
        self.reasons: list[str] = []

    def add(self, rows: np.ndarray, cause: str, why: str) -> None:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if not rows.any():
                return
        elif len(rows) == 0:
            return
        text = f"{cause}: {why}"
        if text not in self.reasons:
            self.reasons.append(text)
        bit = 1 << self.reasons.index(text)
        self.mask[rows] = self.mask[rows] | bit

    def json(self) -> np.ndarray:
        """JSON array text per row (reasons in the order first met)."""
        codes, uniq = pd.factorize(pd.Series(self.mask, dtype=object))
        texts = [json.dumps([r for i, r in enumerate(self.reasons) if (int(m) >> i) & 1])
                 for m in uniq]
        return np.asarray(texts, dtype=object)[codes]


# --- JSON / text rendering, column-wise ---------------------------------------------------------

def _num_text(x, decimals: int = 4) -> np.ndarray:
    """Numbers as JSON text ('null' for NaN/inf), rounded (numpy's repr: '3.4', '1e-05')."""
    a = np.asarray(x, dtype=float)
    out = (np.round(a, decimals) + 0.0).astype(str).astype(object)   # + 0.0: no '-0.0'
    out[~np.isfinite(a)] = "null"
    return out


def _int_text(x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    ok = np.isfinite(a)
    out = np.where(ok, a, 0).astype(np.int64).astype(str).astype(object)
    out[~ok] = "null"
    return out


def _str_text(x) -> np.ndarray:
    """Strings as JSON string literals (None/NaN -> null), escaped once per distinct value."""
    s = pd.Series(x, dtype=object)
    codes, uniq = pd.factorize(s, use_na_sentinel=True)
    table = np.array([json.dumps(str(u)) for u in uniq] + ["null"], dtype=object)
    return table[np.where(codes < 0, len(uniq), codes)]


def _bool_text(x) -> np.ndarray:
    return np.where(np.asarray(x, dtype=bool), "true", "false").astype(object)


def _json_objects(fields: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Rows of pre-rendered JSON values -> one JSON object text per row, keys sorted."""
    out = np.full(n, "{", dtype=object)
    for i, key in enumerate(sorted(fields)):
        out = out + ((", " if i else "") + json.dumps(key) + ": ") + fields[key]
    return out + "}"


def _fmt(x, decimals: int) -> np.ndarray:
    """Numbers for a sentence with ``decimals`` decimals ('?' for NaN), vectorised."""
    a = np.asarray(x, dtype=float)
    ok = np.isfinite(a)
    v = np.where(ok, a, 0.0)
    if decimals == 0:
        out = np.round(v).astype(np.int64).astype(str).astype(object)
    else:
        out = (np.round(v, decimals) + 0.0).astype(str).astype(object)
    out[~ok] = "?"
    return out


def _text(x, default: str) -> np.ndarray:
    """Object array of text with missing values replaced by ``default``."""
    a = np.asarray(x, dtype=object).copy()
    a[pd.isna(a)] = default
    return a


def _frame(columns: dict) -> pd.DataFrame:
    """A DataFrame whose text columns stay object arrays (pandas 3 would otherwise infer its
    arrow-backed str dtype and copy every string: most of the time of a large batch)."""
    return pd.DataFrame({k: pd.Series(v, dtype=object, copy=False)
                         if isinstance(v, np.ndarray) and v.dtype == object else v
                         for k, v in columns.items()})


def _iso(ns: np.ndarray) -> np.ndarray:
    """int64 ns -> 'YYYY-MM-DDTHH:MM:SS+00:00' (None for NaT), vectorised."""
    ns = np.asarray(ns, dtype=np.int64)
    text = np.datetime_as_string(ns.view("datetime64[ns]"), unit="s").astype(object) + "+00:00"
    text[ns == _NAT] = None
    return text


def _hhmm(ns: np.ndarray) -> np.ndarray:
    """int64 ns -> 'HH:MM UTC' ('?' for NaT), vectorised."""
    ns = np.asarray(ns, dtype=np.int64)
    hh = np.char.zfill(((ns // (60 * _NS_MIN)) % 24).astype(str), 2).astype(object)
    mm = np.char.zfill(((ns // _NS_MIN) % 60).astype(str), 2).astype(object)
    out = hh + ":" + mm + " UTC"
    out[ns == _NAT] = "?"
    return out


# --- inputs ------------------------------------------------------------------------------------

_AUDIT_REQUIRED = ("insight_id", "horizon", "symbol", "side", "created_at", "outcome")


def _select(audits: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(all current audits, the current failed/neutral ones to analyse, their positions in the
    first)."""
    missing = [c for c in _AUDIT_REQUIRED if c not in audits.columns]
    if missing:
        raise ValueError(f"audits lack required column(s): {', '.join(missing)}")
    cur = audits
    if "is_current" in audits.columns:
        cur = audits[audits["is_current"].fillna(False).astype(bool).to_numpy()]
    cur = cur.reset_index(drop=True)
    outcome = cur["outcome"].astype(str).to_numpy(dtype=object)
    effective = outcome.copy()
    if "replay_outcome" in cur.columns:
        rep = cur["replay_outcome"].astype(object).where(cur["replay_outcome"].notna(), "")
        rep = rep.astype(str).to_numpy(dtype=object)
        filtered = outcome == "filtered_out"
        effective[filtered] = rep[filtered]
    cur = cur.assign(_effective=effective)
    pos = np.flatnonzero(np.isin(effective, ANALYSED))
    return cur, cur.iloc[pos].reset_index(drop=True), pos


def _pattern_key(value) -> str:
    """Claimed pattern codes as a sorted '|'-joined key ('' for none)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    parts = value if isinstance(value, (list, tuple, set, np.ndarray)) else [value]
    codes = set()
    for part in parts:
        for c in str(part).upper().replace(",", "|").split("|"):
            c = c.strip()
            if c and c not in ("NAN", "NONE"):
                codes.add(c)
    return "|".join(sorted(codes))


_INSIGHT_FIELDS = ("confidence", "ai_score", "fill_price", "filled_ns", "user_acted",
                   "timeframe", "patterns")


def _insight_table(insights: pd.DataFrame | None) -> dict | None:
    """The insight columns RCA reads, normalised once, keyed by insight_id."""
    if insights is None or len(insights) == 0 or "insight_id" not in insights.columns:
        return None
    ins = insights.drop_duplicates("insight_id", keep="last")
    m = len(ins)
    t = {"index": pd.Index(ins["insight_id"].to_numpy(dtype=object))}
    for name in ("confidence", "ai_score", "fill_price"):
        t[name] = (pd.to_numeric(ins[name], errors="coerce").to_numpy(dtype=float)
                   if name in ins else np.full(m, np.nan))
    t["filled_ns"] = _i8(ins["filled_at"], "filled_at") if "filled_at" in ins \
        else np.full(m, _NAT, dtype=np.int64)
    t["user_acted"] = (ins["user_acted"].fillna(False).astype(bool).to_numpy()
                       if "user_acted" in ins else np.zeros(m, dtype=bool))
    t["timeframe"] = (ins["timeframe"].astype(object).where(ins["timeframe"].notna(), "")
                      .astype(str).to_numpy(dtype=object) if "timeframe" in ins
                      else np.full(m, "", dtype=object))
    if "patterns" in ins:
        raw = ins["patterns"]
        try:
            codes, uniq = pd.factorize(raw, use_na_sentinel=True)
            table = np.array([_pattern_key(u) for u in uniq] + [""], dtype=object)
            t["patterns"] = table[np.where(codes < 0, len(uniq), codes)]
        except TypeError:          # lists: unhashable, normalised one by one
            t["patterns"] = np.array([_pattern_key(v) for v in raw.to_numpy(dtype=object)],
                                     dtype=object)
    else:
        t["patterns"] = np.full(m, "", dtype=object)
    return t


def _insight_fields(ids: np.ndarray, table: dict | None) -> dict:
    """Per row of ``ids``: found, and the insight's fields (blank where not found)."""
    n = len(ids)
    out = {"found": np.zeros(n, dtype=bool), "confidence": np.full(n, np.nan),
           "ai_score": np.full(n, np.nan), "fill_price": np.full(n, np.nan),
           "filled_ns": np.full(n, _NAT, dtype=np.int64), "user_acted": np.zeros(n, dtype=bool),
           "timeframe": np.full(n, "", dtype=object), "patterns": np.full(n, "", dtype=object)}
    if table is None or not n:
        return out
    pos = table["index"].get_indexer(ids)
    found = pos >= 0
    pp = np.where(found, pos, 0)
    out["found"] = found
    for name in _INSIGHT_FIELDS:
        v = table[name][pp]
        out[name] = np.where(found, v, out[name])
    return out


def _candle_series(candles: pd.DataFrame | None, symbols: np.ndarray) -> dict:
    """(symbol, timeframe) -> sorted candle frame (ts as int64 ns), for the symbols asked."""
    if candles is None or len(candles) == 0:
        return {}
    for c in ("symbol", "ts", "open", "high", "low", "close"):
        if c not in candles.columns:
            raise ValueError(f"candles lack required column {c}")
    want = set(pd.unique(pd.Series(symbols, dtype=object)).tolist())
    c = candles[candles["symbol"].isin(want)]
    if c.empty:
        return {}
    ts = _i8(c["ts"], "ts")
    cols = {"symbol": c["symbol"].astype(str).to_numpy(dtype=object), "ts": ts}
    for k in ("open", "high", "low", "close", "volume", "spread"):
        if k in c.columns:
            cols[k] = pd.to_numeric(c[k], errors="coerce").to_numpy(dtype=float)
    frame = pd.DataFrame(cols)
    if "timeframe" in c.columns:
        frame["timeframe"] = c["timeframe"].astype(str).to_numpy(dtype=object)
    else:
        from autopsy_assets.domain.validation import infer_timeframe
        frame["timeframe"] = ""
        for sym, idx in frame.groupby("symbol").indices.items():
            frame.loc[frame.index[idx], "timeframe"] = infer_timeframe(np.sort(ts[idx])) or "1m"
    frame = frame[frame["ts"] != _NAT]
    out = {}
    for (sym, tf), g in frame.groupby(["symbol", "timeframe"], sort=True):
        if tf not in TIMEFRAMES:
            continue
        g = g.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
        out[(sym, tf)] = g.reset_index(drop=True)
    return out


def _candles_at(series: dict, symbols, tf: str) -> pd.DataFrame | None:
    """Candles of ``symbols`` at timeframe ``tf``: given, else resampled from the finest finer one."""
    from autopsy_assets.data.market import resample  # the one resampler (pure pandas)

    parts = []
    for sym in symbols:
        have = {t: f for (s, t), f in series.items() if s == sym}
        if tf in have:
            f = have[tf]
        else:
            finer = sorted((TIMEFRAMES[t], t) for t in have
                           if TIMEFRAMES[t] < TIMEFRAMES[tf] and TIMEFRAMES[tf] % TIMEFRAMES[t] == 0)
            if not finer:
                continue
            src = have[finer[0][1]]
            src = src.assign(ts=pd.DatetimeIndex(src["ts"].to_numpy().view("datetime64[ns]"))
                             .tz_localize("UTC"))
            f = resample(src, tf)
            f = f.assign(ts=f["ts"].dt.as_unit("ns").astype("int64"))
        f = f.assign(symbol=sym, timeframe=tf)
        parts.append(f)
    if not parts:
        return None
    out = pd.concat(parts, ignore_index=True)
    out["ts"] = pd.DatetimeIndex(out["ts"].to_numpy(dtype=np.int64).view("datetime64[ns]")) \
        .tz_localize("UTC")
    return out


# --- features ----------------------------------------------------------------------------------

def rca_scores(audits: pd.DataFrame, insights: pd.DataFrame | None, candles: pd.DataFrame | None,
               news: pd.DataFrame | None = None, regimes: pd.DataFrame | None = None, *,
               patterns: pd.DataFrame | None = None, params: RcaParams | None = None
               ) -> pd.DataFrame:
    """Per analysed audit (current, failed or neutral): every heuristic's numbers and raw score.

    Columns: insight_id, horizon, the feature columns the evidence uses, ``raw_<cause>`` (0-100,
    NaN when the heuristic could not run), ``news_near`` (bool) and ``skipped`` (JSON list).
    ``attrs``: quarantine (bad news rows), notes. `analyze_failures` ranks these; the benchmark
    fits the calibration on them.
    """
    p = params or RcaParams()
    notes: list[str] = []
    quarantine: list[dict] = []
    all_cur, A, a_pos = _select(audits)
    n = len(A)
    F: dict[str, np.ndarray] = {}
    skips = _Skips(n)
    F["insight_id"] = A["insight_id"].to_numpy(dtype=object)
    F["horizon"] = A["horizon"].astype(str).to_numpy(dtype=object)
    sym = A["symbol"].astype(str).to_numpy(dtype=object)
    side = A["side"].astype(str).str.lower().to_numpy(dtype=object)
    sign = np.where(side == "short", -1.0, 1.0)
    created = _i8(A["created_at"], "created_at")
    horizon_ns = np.array([HORIZONS.get(h, 0) * _NS_MIN for h in F["horizon"]], dtype=np.int64) \
        if n else np.empty(0, dtype=np.int64)
    win_end = _i8(A["window_end"], "window_end") if "window_end" in A else created + horizon_ns
    win_end = np.where(win_end == _NAT, created + horizon_ns, win_end)
    exit_ns = _i8(A["exit_time"], "exit_time") if "exit_time" in A else np.full(n, _NAT)
    exit_reason = (A["exit_reason"].astype(object).where(A["exit_reason"].notna(), "").astype(str)
                   .to_numpy(dtype=object) if "exit_reason" in A else np.full(n, "", object))
    num = lambda c: (pd.to_numeric(A[c], errors="coerce").to_numpy(dtype=float)  # noqa: E731
                     if c in A else np.full(n, np.nan))
    entry, stop, target = num("entry_price"), num("stop_price"), num("target_price")
    pip = instruments.pip_sizes(sym)
    ins_table = _insight_table(insights)
    ins = _insight_fields(A["insight_id"].to_numpy(dtype=object), ins_table)
    no_ins = ~ins["found"]
    skips.add(no_ins, "model_error", "the insight is not in the insights given")
    skips.add(no_ins, "detector_misid", "the insight is not in the insights given")
    ins_tf = np.where(A["timeframe"].astype(object).where(A["timeframe"].notna(), "").astype(str)
                      .to_numpy(dtype=object) != "", A["timeframe"].astype(str).to_numpy(
        dtype=object), ins["timeframe"]) if "timeframe" in A else ins["timeframe"]
    walked_tf = (A["candle_timeframe"].astype(object).where(A["candle_timeframe"].notna(), "")
                 .astype(str).to_numpy(dtype=object) if "candle_timeframe" in A
                 else np.full(n, "", dtype=object))

    # ---- candle window features ---------------------------------------------------------------
    series = _candle_series(candles, sym)
    tf_cache: dict = {}

    def candles_at(tf: str) -> pd.DataFrame | None:
        """Candles of the analysed symbols at ``tf`` (resampled when absent), once per tf."""
        if tf not in tf_cache:
            tf_cache[tf] = _candles_at(series, pd.unique(pd.Series(sym, dtype=object)), tf)
        return tf_cache[tf]

    have_bars = np.zeros(n, dtype=bool)
    s_idx = np.zeros(n, dtype=np.int64)
    adv_ns = np.full(n, _NAT, dtype=np.int64)
    adv_end_ns = np.full(n, _NAT, dtype=np.int64)
    bar_ns_row = np.full(n, _NS_MIN, dtype=np.int64)
    feats = {k: np.full(n, np.nan) for k in (
        "baseline_atr", "realised_ratio", "volume_ratio", "baseline_volume", "gap_bars",
        "missing_bars", "move", "atr_before", "move_atr", "bar_range_atr", "spread_entry_pips",
        "spread_exit_pips")}
    no_volume = np.zeros(n, dtype=bool)
    no_spread = np.zeros(n, dtype=bool)
    adverse_basis = np.where(np.isin(exit_reason, STOP_EXITS), "stop", "max_adverse").astype(object)
    by_symbol: dict[str, list[str]] = {}
    for (s_, tf) in series:
        by_symbol.setdefault(s_, []).append(tf)
    for s_ in by_symbol:
        by_symbol[s_].sort(key=lambda t: TIMEFRAMES[t])
    # which series each row reads: the walked timeframe when present, else the finest
    key_list = list(series)
    key_codes = np.full(n, -1, dtype=np.int64)
    if n:
        pair_codes, pairs = pd.factorize(pd.Series(list(zip(sym, walked_tf)), dtype=object))
        for code, (s_, tf) in enumerate(pairs):
            tfs = by_symbol.get(s_)
            if tfs:
                key_codes[pair_codes == code] = key_list.index((s_, tf if tf in tfs else tfs[0]))
    skips.add(key_codes < 0, "window", "no candles for the symbol")
    for kc, key in enumerate(key_list):
        rows = np.flatnonzero(key_codes == kc)
        if not len(rows):
            continue
        sym_k, tf_k = key
        try:
            closure = instruments.get(sym_k).closure
        except instruments.UnknownSymbolError:
            closure = "none"
        B = _Bars(series[key], TIMEFRAMES[tf_k] * _NS_MIN, closure, p)
        bar = B.bar_ns
        bar_ns_row[rows] = bar
        c_r = created[rows]
        s = np.searchsorted(B.ts, c_r, side="left")
        hi_win = np.searchsorted(B.ts, win_end[rows] - bar, side="right") - 1
        ex = exit_ns[rows]
        x = np.where(ex != _NAT, np.searchsorted(B.ts, ex - bar, side="right") - 1, hi_win)
        x = np.minimum(x, hi_win)
        ok = (s < B.n) & (x >= s) & (s > 0)
        if not ok.all():
            skips.add(rows[~ok], "window", f"no {tf_k} candles of {sym_k} cover the window")
        rows, s, x, hi_win = rows[ok], s[ok], x[ok], hi_win[ok]
        if not len(rows):
            continue
        have_bars[rows] = True
        s_idx[rows] = s
        sg = sign[rows]
        # adverse bar: the exit bar for stops, else the bar of maximum adverse excursion
        a = x.copy()
        other = adverse_basis[rows] != "stop"
        if other.any():
            oi = np.flatnonzero(other)
            levels = int(np.max(x[oi] - s[oi] + 1)).bit_length()
            lo_t, hi_t = B.table("low_min", levels), B.table("high_max", levels)
            long_ = sg[oi] > 0
            worst = np.where(long_, lo_t.query(s[oi], x[oi] + 1), hi_t.query(s[oi], x[oi] + 1))
            j_lo = lo_t.first_reaching(s[oi], x[oi] + 1, worst, below=True)
            j_hi = hi_t.first_reaching(s[oi], x[oi] + 1, worst, below=False)
            a[oi] = np.minimum(np.where(long_, j_lo, j_hi), x[oi])
        adv_ns[rows] = B.ts[a]
        adv_end_ns[rows] = B.ts[a] + bar
        # trailing baseline before created_at
        base = B.base_atr_bar[s]
        feats["baseline_atr"][rows] = base
        # realised range / volume over rolling windows ending in [s + W - 1, hi]
        hi = np.minimum(a + p.after_bars, hi_win)
        hi = np.maximum(hi, a)
        lo = np.minimum(s + p.realised_bars - 1, hi)
        levels = int(np.max(hi - lo + 1)).bit_length()
        with np.errstate(invalid="ignore", divide="ignore"):
            feats["realised_ratio"][rows] = B.table("roll_tr_max", levels).query(lo, hi + 1) / base
        if B.has_volume:
            j = s
            lo_b = np.maximum(j - B.base_n, 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                base_v = (B.c_vol[j] - B.c_vol[lo_b]) / np.maximum(j - lo_b, 1)
                feats["baseline_volume"][rows] = base_v
                feats["volume_ratio"][rows] = B.table("roll_vol_min", levels).query(lo, hi + 1) \
                    / base_v
        else:
            no_volume[rows] = True
        feats["gap_bars"][rows] = B.c_gap[hi + 1] - B.c_gap[s]
        feats["missing_bars"][rows] = B.c_missing[hi + 1] - B.c_missing[s + 1]
        # the adverse move over move_bars bars ending at a, in ATRs of the bars before them
        K = p.move_bars
        ref = a - K
        atr_b = B.mean_tr(ref + 1 - p.atr_bars, ref + 1)
        ref_close = np.where(ref >= 0, B.close[np.maximum(ref, 0)], np.nan)
        move = np.where(sg > 0, ref_close - B.low_k[a], B.high_k[a] - ref_close)
        move = np.maximum(move, 0.0)
        feats["move"][rows] = move
        feats["atr_before"][rows] = atr_b
        with np.errstate(invalid="ignore", divide="ignore"):
            feats["move_atr"][rows] = move / atr_b
            feats["bar_range_atr"][rows] = B.tr[a] / atr_b
        if B.has_spread:
            sp_entry = np.fmax(B.spread[np.maximum(s - 1, 0)], B.spread[s])
            feats["spread_entry_pips"][rows] = sp_entry / pip[rows]
            feats["spread_exit_pips"][rows] = B.spread[x] / pip[rows]
        else:
            no_spread[rows] = True
    for c in ("volatility_spike", "liquidity_event", "external_shock"):
        skips.add(~have_bars, c, "no candles cover the window")
    skips.add(have_bars & no_volume, "liquidity_event", "candles have no volume: gaps only")
    skips.add(no_spread | ~have_bars, "spread_slippage", "no spread at entry/exit: fills only")
    # rows without candles still have an adverse moment for news: the exit
    nob = ~have_bars
    adv_ns[nob] = np.where(exit_ns[nob] != _NAT, exit_ns[nob] - bar_ns_row[nob], created[nob])
    adv_end_ns[nob] = adv_ns[nob] + bar_ns_row[nob]
    F.update(feats)
    F["adverse_ns"] = adv_ns
    F["adverse_basis"] = adverse_basis
    F["bar_minutes"] = bar_ns_row / _NS_MIN
    F["pip"] = pip

    # ---- news ---------------------------------------------------------------------------------
    news_near = np.zeros(n, dtype=bool)
    raw = {c: np.full(n, np.nan) for c in CAUSES}
    bar_min = bar_ns_row / _NS_MIN
    if news is None:
        skips.add(np.ones(n, bool), "news_shock", "no news source")
        skips.add(np.ones(n, bool), "external_shock", "no news source: a shock cannot be told "
                                                      "from scheduled news")
        F.update({"news_minutes": np.full(n, np.nan), "news_title": np.full(n, None, object),
                  "news_event_id": np.full(n, None, object),
                  "news_currencies": np.full(n, None, object), "news_count": np.zeros(n)})
    else:
        clean, q = normalise_news(news) if len(news) else (news, [])
        quarantine.extend(q)
        q_ns = adv_ns + (bar_ns_row - _NS_MIN) // 2
        window = p.news_window_min + (bar_min - 1) / 2
        F_news = {"news_minutes": np.full(n, np.nan), "news_title": np.full(n, None, object),
                  "news_event_id": np.full(n, None, object),
                  "news_currencies": np.full(n, None, object), "news_count": np.zeros(n)}
        if n and len(clean):
            for w in np.unique(window):   # one window per walked timeframe
                rows = np.flatnonzero(window == w)
                times = pd.Series(pd.DatetimeIndex(q_ns[rows].view("datetime64[ns]"))
                                  .tz_localize("UTC"))
                res = nearest_high_impact(clean, sym[rows], times, window_minutes=float(w))
                within = res["within_window"].to_numpy()
                news_near[rows] = within
                mins = res["nearest_minutes"].to_numpy(dtype=float) + (bar_min[rows] - 1) / 2
                F_news["news_minutes"][rows] = np.where(within, mins, np.nan)
                F_news["news_count"][rows] = res["n_in_window"].to_numpy()
                F_news["news_title"][rows] = np.where(within, res["nearest_title"].to_numpy(
                    dtype=object), None)
                F_news["news_event_id"][rows] = np.where(within, res["nearest_event_id"]
                                                         .to_numpy(dtype=object), None)
            # the currencies of the matched event that move the symbol, once per (event, symbol)
            ccy = dict(zip(clean["event_id"].astype(str), clean["currencies"]))
            pairs = pd.Series(list(zip(F_news["news_event_id"], sym)), dtype=object)
            codes, uniq = pd.factorize(pairs)
            table = []
            for ev, s_ in uniq:
                if ev is None:
                    table.append(None)
                    continue
                mine = [c for c in parse_currencies(ccy.get(ev)) if c in
                        instruments.currencies(s_)] if instruments.known([s_])[0] else []
                table.append("/".join(mine) or "/".join(parse_currencies(ccy.get(ev))))
            F_news["news_currencies"] = np.asarray(table, dtype=object)[codes]
        F.update(F_news)
        dt = np.abs(F["news_minutes"])
        prox = np.clip(1 - dt / p.news_window_min, 0, 1)
        size = np.clip((np.nan_to_num(F["move_atr"], nan=0.0) - 1) / (p.shock_k - 1), 0, 1)
        raw["news_shock"] = np.where(news_near, 50 + 30 * prox + 20 * size, 0.0)
        ext = np.clip(50 * F["move_atr"] / p.shock_k, 0, 100)
        raw["external_shock"] = np.where(news_near, 0.0, ext)
        raw["external_shock"][~have_bars] = np.nan
    F["news_near"] = news_near

    # ---- volatility / liquidity -------------------------------------------------------------------
    raw["volatility_spike"] = np.clip(25 * F["realised_ratio"] * (2 / p.spike_ratio), 0, 100)
    v = F["volume_ratio"]
    vc = p.volume_collapse
    s_vol = np.where(v <= vc, 50 + 50 * (vc - v) / vc, 50 * (1 - v) / (1 - vc))
    s_vol = np.clip(s_vol, 0, 100)
    gaps = np.nan_to_num(F["gap_bars"], nan=0.0) + np.nan_to_num(F["missing_bars"], nan=0.0)
    F["gaps_total"] = gaps
    s_gap = np.clip(50 * gaps / p.gaps_at_threshold, 0, 100)
    s_vol_f = np.nan_to_num(s_vol, nan=0.0)
    liq = np.clip(np.maximum(s_vol_f, s_gap) + 0.25 * np.minimum(s_vol_f, s_gap), 0, 100)
    raw["liquidity_event"] = np.where(have_bars, liq, np.nan)
    raw["volatility_spike"] = np.where(have_bars, raw["volatility_spike"], np.nan)

    # ---- regimes ----------------------------------------------------------------------------------
    reg_cols = {k: np.full(n, None, dtype=object) for k in ("regime0", "regime1", "later_at")}
    reg_num = {k: np.full(n, np.nan) for k in ("rconf0", "rconf1", "trend0", "trend1")}
    regime_source = np.full(n, None, dtype=object)
    rtf = np.where(pd.Series(ins_tf).isin(list(TIMEFRAMES)).to_numpy(), ins_tf, walked_tf)
    if regimes is None and n:
        parts = []
        for tf in pd.unique(pd.Series(rtf, dtype=object)):
            if tf not in TIMEFRAMES:
                continue
            c_tf = candles_at(tf)
            if c_tf is not None and len(c_tf):
                parts.append(derive_regimes(c_tf))
        regimes_used = pd.concat(parts, ignore_index=True) if parts else None
        if regimes_used is None:
            skips.add(np.ones(n, bool), "regime_drift", "no regime feed and no candles to "
                                                        "derive regimes from")
        else:
            notes.append("regimes derived from candles (derive_regimes, default window)")
            regime_source[:] = np.array([f"derived from {t} candles" for t in rtf], dtype=object)
    else:
        regimes_used = regimes
        regime_source[:] = "regime feed"
    if regimes_used is not None and n:
        # later: one regime window (p.regime_bars of its timeframe) after the adverse bar's
        # close, within the horizon: the regime then measures the market that hit the trade
        r_bar = _bar_ns(rtf, bar_ns_row)
        rtimes = {"created": created,
                  "later": np.minimum(win_end, adv_end_ns + p.regime_bars * r_bar)}
        got = {}
        for name, t in rtimes.items():
            frame = pd.DataFrame({"symbol": sym, "timeframe": rtf,
                                  "ts": pd.DatetimeIndex(t.view("datetime64[ns]"))
                                  .tz_localize("UTC")})
            got[name] = regimes_at(regimes_used, frame)
        r0 = got["created"]["regime"].to_numpy(dtype=object)
        c0 = got["created"]["confidence"].to_numpy(dtype=float)
        t0 = (got["created"]["trend_strength"].to_numpy(dtype=float)
              if "trend_strength" in got["created"] else np.full(n, np.nan))

        r1g = got["later"]
        r1 = r1g["regime"].to_numpy(dtype=object)
        c1 = r1g["confidence"].to_numpy(dtype=float)
        t1 = (r1g["trend_strength"].to_numpy(dtype=float) if "trend_strength" in r1g
              else np.full(n, np.nan))
        known = pd.notna(r0) & pd.notna(r1)
        changed = known & (r0 != r1)
        d0 = np.clip((np.nan_to_num(c0, nan=50) - 50) / 50, 0, 1)
        d1 = np.clip((np.nan_to_num(c1, nan=50) - 50) / 50, 0, 1)
        with0 = np.where(sign > 0, r0 == "trending_up", r0 == "trending_down")
        against1 = np.where(sign > 0, r1 == "trending_down", r1 == "trending_up")
        turned = against1 | (r1 == "volatile")
        sc = np.where(with0 & turned, 60 + 20 * d0 + 20 * d1,
                      np.where(with0, 40 + 10 * d0,
                               np.where(against1, 30 + 10 * d1, 20 + 10 * d1)))
        drop = 0.5 * np.clip(np.nan_to_num(c0) - np.nan_to_num(c1), 0, 50)
        s_label = np.where(changed, sc, np.where(known, drop, np.nan))
        # on the regime's own trend-strength scale (signed efficiency ratio): how much it ran
        # with the trade at creation plus how much against it later; 50 = both at the
        # trend threshold
        aligned0, against1 = sign * t0, -sign * t1
        s_trend = 50 * (np.clip(aligned0, 0, 1) + np.clip(against1, 0, 1)) / (
            2 * p.trend_threshold)
        has_t = ~np.isnan(t0) & ~np.isnan(t1) & known
        raw["regime_drift"] = np.where(has_t, np.clip(s_trend, 0, 100), s_label)
        F["aligned_trend0"], F["against_trend1"] = aligned0, against1
        reg_cols["regime0"], reg_cols["regime1"] = r0, r1
        reg_cols["later_at"] = _iso(rtimes["later"])
        reg_num.update(rconf0=c0, rconf1=c1, trend0=t0, trend1=t1)
        skips.add(pd.isna(r0), "regime_drift", "no regime known at created_at (warm-up or no "
                                               "regime for the symbol)")
        skips.add(pd.notna(r0) & np.isnan(raw["regime_drift"]), "regime_drift",
                  "no regime known during the horizon")
    F.setdefault("aligned_trend0", np.full(n, np.nan))
    F.setdefault("against_trend1", np.full(n, np.nan))
    F.update(reg_cols)
    F.update(reg_num)
    F["regime_source"] = regime_source

    # ---- model error ------------------------------------------------------------------------------
    conf = ins["confidence"]
    score_src = np.where(np.isnan(conf), "ai_score", "confidence").astype(object)
    conf_used = np.where(np.isnan(conf), ins["ai_score"], conf)
    F["confidence_used"], F["confidence_source"] = conf_used, score_src
    F["ai_score"], F["confidence"] = ins["ai_score"], conf
    k_me = 50.0 / (p.overconfident_at - 50.0)
    raw["model_error"] = np.clip(k_me * (conf_used - 50.0), 0, 100)
    skips.add(~no_ins & np.isnan(conf_used), "model_error", "the insight has no confidence or "
                                                            "ai_score")

    # ---- detector misidentification ------------------------------------------------------------
    pats = ins["patterns"]
    claimed = (pats != "") & ~no_ins
    F["claimed"] = pats
    F["n_claimed"] = np.where(pats == "", 0, np.char.count(pats.astype(str), "|") + 1) \
        if n else np.zeros(0)
    F["unverified"] = np.full(n, "", dtype=object)
    F["n_unverified"] = np.full(n, np.nan)
    F["pattern_source"] = np.full(n, None, dtype=object)
    if claimed.any():
        ids = pd.unique(F["insight_id"][claimed])
        per = None
        if patterns is not None and "verified" in patterns.columns:
            per = patterns[patterns["insight_id"].isin(ids)]
            src = "verified patterns given"
        else:
            rows = np.flatnonzero(claimed)
            first = pd.Series(rows, index=F["insight_id"][rows]).groupby(level=0).first()
            q = pd.DataFrame({
                "insight_id": first.index.to_numpy(dtype=object),
                "created_at": pd.DatetimeIndex(created[first.to_numpy()].view("datetime64[ns]"))
                .tz_localize("UTC"),
                "side": side[first.to_numpy()], "symbol": sym[first.to_numpy()],
                "timeframe": rtf[first.to_numpy()], "patterns": pats[first.to_numpy()]})
            parts = []
            for tf in pd.unique(q["timeframe"]):
                qq = q[q["timeframe"] == tf]
                if patterns is not None and "kind" in patterns.columns:
                    src_frame = patterns
                    src = "detected patterns given"
                else:
                    src_frame = candles_at(tf) if tf in TIMEFRAMES else None
                    src = f"re-detected on {tf} candles"
                if src_frame is None or not len(src_frame):
                    continue
                if "symbol" in src_frame.columns:
                    qq = qq[qq["symbol"].isin(set(src_frame["symbol"]))]
                if len(qq):
                    parts.append(verify_patterns(qq, src_frame, p.pattern_lookback_bars))
            per = pd.concat(parts, ignore_index=True) if parts else None
        if per is not None and len(per):
            per_ids = per["insight_id"].to_numpy(dtype=object)
            bad = ~per["verified"].to_numpy(dtype=bool)
            b = pd.DataFrame({"i": per_ids[bad], "p": per["pattern"].astype(str).to_numpy(
                dtype=object)[bad]}).drop_duplicates().sort_values(["i", "p"], kind="stable")
            n_unv = np.zeros(n)
            if len(b):   # '|'-join the unverified codes of each insight, no loop per insight
                bi, bp = b["i"].to_numpy(dtype=object), b["p"].to_numpy(dtype=object)
                start = np.flatnonzero(np.r_[True, bi[1:] != bi[:-1]])
                piece = "|" + bp
                piece[start] = bp[start]
                joined = np.add.reduceat(piece, start)
                count = np.diff(np.r_[start, len(bp)])
                pos = pd.Index(bi[start]).get_indexer(F["insight_id"])
                hit = pos >= 0
                F["unverified"] = np.where(hit, joined[np.maximum(pos, 0)], "").astype(object)
                n_unv = np.where(hit, count[np.maximum(pos, 0)], 0)
            is_checked = (pd.Index(pd.unique(per_ids)).get_indexer(F["insight_id"]) >= 0) \
                & claimed
            F["n_unverified"] = np.where(is_checked, n_unv, np.nan)
            F["pattern_source"] = np.where(is_checked, src, None).astype(object)
        else:
            is_checked = np.zeros(n, dtype=bool)
        skips.add(claimed & ~is_checked, "detector_misid", "no candles or patterns at the "
                                                           "insight's timeframe to re-verify")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = F["n_unverified"] / np.maximum(F["n_claimed"], 1)
    raw["detector_misid"] = np.where(claimed, np.where(F["n_unverified"] > 0, 50 + 50 * share,
                                                       np.where(np.isnan(share), np.nan, 0.0)),
                                     0.0)
    raw["detector_misid"][no_ins] = np.nan

    # ---- fills: spread/slippage and user psychology ----------------------------------------------
    acted = (A["user_acted"].fillna(False).astype(bool).to_numpy() if "user_acted" in A
             else np.zeros(n, bool)) | ins["user_acted"]
    filled = ins["filled_ns"]
    ins_bar = _bar_ns(ins_tf, bar_ns_row)
    delay = np.where((filled != _NAT) & acted, (filled - created) / _NS_MIN, np.nan)
    at_once = acted & ~(delay * _NS_MIN > ins_bar)      # unknown time counts as at once
    slip = num("slippage_pips")
    fill = ins["fill_price"]
    slip = np.where(np.isnan(slip) & ~np.isnan(fill), sign * (fill - entry) / pip, slip)
    F["slippage_pips"], F["fill_delay_min"], F["filled_at_once"] = slip, delay, at_once
    F["ins_bar_minutes"] = ins_bar / _NS_MIN
    adverse_fill = np.where(at_once, np.nan_to_num(slip, nan=0.0), 0.0)
    worst = np.fmax(np.fmax(adverse_fill, F["spread_entry_pips"]), F["spread_exit_pips"])
    raw["spread_slippage"] = np.clip(50 * worst / p.spread_pips, 0, 100)
    raw["spread_slippage"][no_spread & ~acted] = np.nan
    late = acted & (delay * _NS_MIN > ins_bar)
    risk = np.abs(entry - stop)
    with np.errstate(invalid="ignore", divide="ignore"):
        chase = np.where(late, sign * (fill - entry) / risk, np.nan)
        delay_bars = delay * _NS_MIN / ins_bar
    F["chase_risk_share"], F["fill_delay_bars"] = chase, delay_bars
    F["user_acted"] = acted
    psych = 50 + 12.5 * (delay_bars - 1) + 25 * np.clip(np.nan_to_num(chase), 0, 1)
    raw["user_psychology"] = np.where(late, np.clip(psych, 0, 100), 0.0)
    skips.add(acted & (filled == _NAT), "user_psychology", "acted but filled_at is unknown")

    # ---- false positive: trailing fail rate of strategy x symbol x patterns x horizon --------------
    fp = _fail_rates(all_cur, a_pos, ins_table, created, p)
    F.update(fp)
    rate, cnt = fp["fp_rate"], fp["fp_n"]
    s_fp = np.where(rate > p.fp_rate, 50 + 50 * (rate - p.fp_rate) / (1 - p.fp_rate),
                    50 * rate / p.fp_rate)
    raw["false_positive"] = np.where(cnt >= p.fp_min_audits, np.clip(s_fp, 0, 100), 0.0)
    raw["false_positive"][fp["fp_group"] == None] = np.nan  # noqa: E711
    skips.add(fp["fp_group"] == None, "false_positive",  # noqa: E711
              "no strategy/pattern known for the insight")

    F["created_ns"], F["side"], F["symbol"] = created, side, sym
    F["entry"], F["stop"], F["target"] = entry, stop, target
    F["skipped"] = skips.json()
    for c in CAUSES:
        F[f"raw_{c}"] = raw[c]
    out = _frame(F)
    out.attrs["quarantine"] = Quarantine(quarantine)
    out.attrs["notes"] = tuple(notes)
    return out


def _fail_rates(all_cur: pd.DataFrame, a_pos: np.ndarray, table: dict | None,
                created: np.ndarray, p: RcaParams) -> dict:
    """Trailing fail rate per analysed audit of its strategy x symbol x pattern set x horizon,
    from audits that exited in [created_at - window, created_at): two merge_asof joins on
    cumulative counts, no loop per audit."""
    n = len(a_pos)
    out = {"fp_rate": np.full(n, np.nan), "fp_n": np.zeros(n), "fp_failed": np.zeros(n),
           "fp_group": np.full(n, None, dtype=object)}
    if not n:
        return out
    info = _insight_fields(all_cur["insight_id"].to_numpy(dtype=object), table)
    found_all = info["found"]
    strat = (all_cur["strategy"].astype(object).where(all_cur["strategy"].notna(), "")
             .astype(str).to_numpy(dtype=object) if "strategy" in all_cur
             else np.full(len(all_cur), "", dtype=object))
    pats = np.where(info["patterns"] == "", "(no pattern)", info["patterns"]).astype(object)
    keys = pd.DataFrame({"s": strat, "y": all_cur["symbol"].astype(str).to_numpy(dtype=object),
                         "p": pats, "h": all_cur["horizon"].astype(str).to_numpy(dtype=object)})
    gcode = keys.groupby(["s", "y", "p", "h"], sort=False).ngroup().to_numpy()
    gcode = np.where(found_all, gcode, -1)
    # a readable name per group, built once per group
    first = pd.Series(np.arange(len(keys))).groupby(gcode).first()
    names = {int(g): f"{keys['s'].iat[i]} {keys['y'].iat[i]} {keys['p'].iat[i]} "
                     f"{keys['h'].iat[i]}" for g, i in first.items() if g >= 0}
    g_a = gcode[a_pos]
    named = pd.Series(g_a).map(names).to_numpy(dtype=object)
    out["fp_group"] = np.where(g_a >= 0, named, None).astype(object)
    eff = all_cur["_effective"].to_numpy(dtype=object)
    exit_all = _i8(all_cur["exit_time"], "exit_time") if "exit_time" in all_cur \
        else np.full(len(all_cur), _NAT)
    ev_ok = np.isin(eff, ("succeeded", "failed", "neutral")) & (gcode >= 0) & (exit_all != _NAT)
    ev = pd.DataFrame({"gc": gcode[ev_ok], "t": exit_all[ev_ok],
                       "fail": (eff[ev_ok] == "failed").astype(np.int64)})
    if ev.empty:
        return out
    ev = ev.sort_values(["gc", "t"], kind="stable")
    ev["cn"] = ev.groupby("gc").cumcount() + 1
    ev["cf"] = ev.groupby("gc")["fail"].cumsum()
    ev = ev.sort_values("t", kind="stable")
    w_ns = int(p.fp_window_days * 1440 * _NS_MIN)

    def at(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = pd.DataFrame({"gc": g_a, "t": times, "pos": np.arange(n)})
        q = q[q["gc"] >= 0].sort_values("t", kind="stable")
        m = pd.merge_asof(q, ev[["gc", "t", "cn", "cf"]], on="t", by="gc",
                          direction="backward", allow_exact_matches=False)
        cn, cf = np.zeros(n), np.zeros(n)
        pos = m["pos"].to_numpy()
        cn[pos] = m["cn"].fillna(0).to_numpy(dtype=float)
        cf[pos] = m["cf"].fillna(0).to_numpy(dtype=float)
        return cn, cf

    n1, f1 = at(created)
    n0, f0 = at(created - w_ns)
    cnt, fails = n1 - n0, f1 - f0
    with np.errstate(invalid="ignore", divide="ignore"):
        out["fp_rate"] = np.where(cnt > 0, fails / cnt, np.nan)
    out["fp_n"], out["fp_failed"] = cnt, fails
    return out


# --- ranking and rendering ---------------------------------------------------------------------

def calibrated(scores: pd.DataFrame, calibration: Calibration | None = None) -> np.ndarray:
    """(n, len(CAUSES)) calibrated confidences; NaN where a heuristic could not run."""
    cal = calibration or CALIBRATION
    return np.column_stack([cal.apply(c, scores[f"raw_{c}"].to_numpy(dtype=float))
                            for c in CAUSES]) if len(scores) else np.zeros((0, len(CAUSES)))


def rank_causes(scores: pd.DataFrame, threshold: float = 50.0,
                calibration: Calibration | None = None) -> pd.DataFrame:
    """Long frame: row (index into scores), cause, confidence, rank; one unknown row where no
    cause reaches ``threshold``. Applies the ordering rules of DESIGN 2a."""
    return _rank(scores, threshold, calibration)[0]


def _rank(scores: pd.DataFrame, threshold: float, calibration: Calibration | None):
    """(ranked rows, best confidence per audit, its cause, all calibrated confidences)."""
    cal = calibration or CALIBRATION
    n = len(scores)
    conf = calibrated(scores, cal)
    conf0 = np.nan_to_num(conf, nan=0.0)
    counts = conf0 >= threshold
    sort_conf = conf0.copy()
    ci = {c: i for i, c in enumerate(CAUSES)}
    news = ci["news_shock"]
    near = scores["news_near"].to_numpy(dtype=bool) & counts[:, news]
    for c in NEWS_DEFERS:
        j = ci[c]
        sort_conf[near, j] = np.minimum(sort_conf[near, j], conf0[near, news] - 1e-6)
    tier = np.array([1 if c in BASE_RATE else 0 for c in CAUSES])
    r, c = np.nonzero(counts)
    order = np.lexsort((c, -sort_conf[r, c], tier[c], r))
    r, c = r[order], c[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:] != r[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(r)), 0))
    rank = np.arange(len(r)) - start + 1
    shown = conf0[r, c].copy()
    for j, cause in enumerate(CAUSES):     # rank 1: how often this cause is right when it leads
        lead = (rank == 1) & (c == j)
        if lead.any():
            shown[lead] = cal.leading(cause, shown[lead])
    shown = pd.Series(shown).groupby(r).cummin().to_numpy() if len(r) else np.zeros(0)
    found = pd.DataFrame({"row": r, "cause": np.asarray(CAUSES, dtype=object)[c],
                          "confidence": shown, "rank": rank})
    none = np.flatnonzero(~counts.any(axis=1))
    best = conf0.max(axis=1) if n else np.zeros(0)
    best_c = np.asarray(CAUSES, dtype=object)[conf0.argmax(axis=1)] if n else np.zeros(0, object)
    unk = pd.DataFrame({"row": none, "cause": "unknown",
                        "confidence": cal.leading("unknown", cal.apply("unknown",
                                                                       100.0 - best[none])),
                        "rank": np.ones(len(none), dtype=np.int64)})
    out = pd.concat([found, unk], ignore_index=True).sort_values(["row", "rank"], kind="stable")
    return out.reset_index(drop=True), best, best_c, conf0


def _render(scores: pd.DataFrame, ranked: pd.DataFrame, best: np.ndarray, best_c: np.ndarray,
            conf0: np.ndarray, p: RcaParams) -> pd.DataFrame:
    """Summary sentence and evidence JSON for each ranked row, column-wise per cause."""
    m = len(ranked)
    summary = np.full(m, "", dtype=object)
    evidence = np.full(m, "{}", dtype=object)
    rows_all = ranked["row"].to_numpy()
    cause_all = ranked["cause"].to_numpy(dtype=object)
    S = scores
    for cause in ALL_CAUSES:
        sel = np.flatnonzero(cause_all == cause)
        if not len(sel):
            continue
        i = rows_all[sel]
        g = lambda col: S[col].to_numpy()[i]  # noqa: E731
        k = len(i)
        common = {"skipped": g("skipped").astype(object)}
        if cause != "unknown":
            common["raw_score"] = _num_text(g(f"raw_{cause}"), 1)
        adverse_fields = {"adverse_time": _str_text(_iso(g("adverse_ns"))),
                          "adverse_basis": _str_text(g("adverse_basis"))}
        moment = np.where(g("adverse_basis") == "stop", "the stop was hit",
                          "the worst adverse move").astype(object)
        if cause == "news_shock":
            mins = g("news_minutes")
            when = np.where(mins <= 0, " min before ", " min after ").astype(object)
            summary[sel] = (_text(g("news_title"), "News")
                            + " (high impact, " + _text(g("news_currencies"), "?") + ") " + _fmt(np.abs(mins), 0) + when
                            + moment + "; the bar's range was " + _fmt(g("bar_range_atr"), 1)
                            + "x ATR")
            fields = {"event_id": _str_text(g("news_event_id")),
                      "title": _str_text(g("news_title")),
                      "currencies": _str_text(g("news_currencies")),
                      "impact": _str_text(np.full(k, "high", dtype=object)),
                      "minutes_from_adverse_bar": _num_text(mins, 1),
                      "events_in_window": _int_text(g("news_count")),
                      "window_minutes": _num_text(np.full(k, p.news_window_min), 1),
                      "move_atr": _num_text(g("move_atr"), 2),
                      "bar_range_atr": _num_text(g("bar_range_atr"), 2), **adverse_fields}
        elif cause == "volatility_spike":
            summary[sel] = ("Volatility spike: the " + str(p.realised_bars) + " bars around "
                            + moment + " ranged " + _fmt(g("realised_ratio"), 1)
                            + "x the trailing " + _fmt(np.full(k, p.baseline_minutes / 60), 0)
                            + "h average (ATR " + _fmt(g("baseline_atr") / g("pip"), 1)
                            + " pips)" + np.where(g("news_near"), ", with high-impact news "
                                                  "nearby", "").astype(object))
            fields = {"realised_range_ratio": _num_text(g("realised_ratio"), 2),
                      "baseline_atr_pips": _num_text(g("baseline_atr") / g("pip"), 2),
                      "baseline_minutes": _int_text(np.full(k, p.baseline_minutes)),
                      "realised_bars": _int_text(np.full(k, p.realised_bars)),
                      "threshold_ratio": _num_text(np.full(k, p.spike_ratio), 2),
                      "news_within_window": _bool_text(g("news_near")), **adverse_fields}
        elif cause == "liquidity_event":
            vr = g("volume_ratio")
            vol_txt = np.where(np.isfinite(vr), "volume fell to " + _fmt(100 * vr, 0)
                               + "% of its trailing average", "volume unknown").astype(object)
            summary[sel] = ("Liquidity dried up: " + vol_txt + " and "
                            + _fmt(g("gaps_total"), 0) + " price gaps or missing bars "
                            "before " + moment)
            fields = {"volume_ratio": _num_text(vr, 3),
                      "baseline_volume": _num_text(g("baseline_volume"), 1),
                      "gap_bars": _int_text(g("gap_bars")),
                      "missing_bars": _int_text(g("missing_bars")),
                      "gap_threshold_atr": _num_text(np.full(k, p.gap_atr), 2),
                      "collapse_threshold": _num_text(np.full(k, p.volume_collapse), 2),
                      "news_within_window": _bool_text(g("news_near")), **adverse_fields}
        elif cause == "external_shock":
            summary[sel] = ("A " + _fmt(g("move_atr"), 1) + "x ATR move against the trade in "
                            + str(p.move_bars) + " bars up to " + moment + " (" +
                            _fmt(g("move") / g("pip"), 1) + " pips) with no high-impact news "
                            "within " + f"{p.news_window_min:.0f}" + " min")
            fields = {"move_atr": _num_text(g("move_atr"), 2),
                      "move_pips": _num_text(g("move") / g("pip"), 1),
                      "atr_pips": _num_text(g("atr_before") / g("pip"), 2),
                      "atr_bars": _int_text(np.full(k, p.atr_bars)),
                      "move_bars": _int_text(np.full(k, p.move_bars)),
                      "k": _num_text(np.full(k, p.shock_k), 1),
                      "bar_range_atr": _num_text(g("bar_range_atr"), 2),
                      "news_within_window": _bool_text(g("news_near")), **adverse_fields}
        elif cause == "regime_drift":
            summary[sel] = ("Regime changed from " + _text(g("regime0"), "?") + " (" + _fmt(g("rconf0"), 0)
                            + ") at creation to " + _text(g("regime1"), "?") + " (" + _fmt(g("rconf1"), 0)
                            + ") by " + _hhmm(_i8(g("later_at"), "later_at")) + ", after "
                            + moment + " on a " + g("side").astype(object))
            fields = {"regime_at_creation": _str_text(g("regime0")),
                      "regime_confidence_at_creation": _num_text(g("rconf0"), 1),
                      "regime_later": _str_text(g("regime1")),
                      "regime_confidence_later": _num_text(g("rconf1"), 1),
                      "later_at": _str_text(g("later_at")),
                      "trend_strength_at_creation": _num_text(g("trend0"), 3),
                      "trend_strength_later": _num_text(g("trend1"), 3),
                      "trend_with_trade_at_creation": _num_text(g("aligned_trend0"), 3),
                      "trend_against_trade_later": _num_text(g("against_trend1"), 3),
                      "regime_source": _str_text(g("regime_source")), **adverse_fields}
        elif cause == "model_error":
            cu = g("confidence_used")
            summary[sel] = (np.where(cu >= p.overconfident_at, "Overconfident model: ",
                                     "").astype(object) + g("confidence_source").astype(object)
                            + " was " + _fmt(cu, 0) + " yet the insight failed")
            fields = {"confidence": _num_text(g("confidence"), 1),
                      "ai_score": _num_text(g("ai_score"), 1),
                      "score_used": _str_text(g("confidence_source")),
                      "overconfident_at": _num_text(np.full(k, p.overconfident_at), 1),
                      "reading": _str_text(np.where(cu >= p.overconfident_at, "overconfident",
                                                    "expected").astype(object))}
        elif cause == "detector_misid":
            commas = lambda v: np.char.replace(  # noqa: E731
                _text(v, "").astype(str), "|", ", ").astype(object)
            summary[sel] = ("Claimed " + commas(g("claimed")) + " but " + commas(g("unverified"))
                            + " was not on the chart in the " + str(p.pattern_lookback_bars)
                            + " bars before creation")
            fields = {"claimed": _str_text(g("claimed")), "unverified": _str_text(g("unverified")),
                      "n_claimed": _int_text(g("n_claimed")),
                      "n_unverified": _int_text(g("n_unverified")),
                      "lookback_bars": _int_text(np.full(k, p.pattern_lookback_bars)),
                      "pattern_source": _str_text(g("pattern_source"))}
        elif cause == "spread_slippage":
            sl = g("slippage_pips")
            once = g("filled_at_once")
            fill_txt = np.where(once & (np.nan_to_num(sl) > 0), "Filled " + _fmt(sl, 1)
                                + " pips worse than entry at once; ", "").astype(object)
            summary[sel] = (fill_txt + "spread " + _fmt(g("spread_entry_pips"), 1)
                            + " pips at entry and " + _fmt(g("spread_exit_pips"), 1)
                            + " at the exit (limit " + f"{p.spread_pips:g}" + " pips)")
            fields = {"slippage_pips": _num_text(sl, 2), "filled_at_once": _bool_text(once),
                      "fill_delay_minutes": _num_text(g("fill_delay_min"), 1),
                      "spread_entry_pips": _num_text(g("spread_entry_pips"), 2),
                      "spread_exit_pips": _num_text(g("spread_exit_pips"), 2),
                      "limit_pips": _num_text(np.full(k, p.spread_pips), 1)}
        elif cause == "false_positive":
            summary[sel] = (_text(g("fp_group"), "?")
                            + " failed " + _fmt(100 * g("fp_rate"), 0) + "% of "
                            + _fmt(g("fp_n"), 0) + " audits in the " +
                            f"{p.fp_window_days:g}" + " days before: a weak setup")
            fields = {"group": _str_text(g("fp_group")), "fail_rate": _num_text(g("fp_rate"), 3),
                      "n_audits": _int_text(g("fp_n")), "n_failed": _int_text(g("fp_failed")),
                      "window_days": _num_text(np.full(k, p.fp_window_days), 1),
                      "min_audits": _int_text(np.full(k, p.fp_min_audits)),
                      "threshold_rate": _num_text(np.full(k, p.fp_rate), 2)}
        elif cause == "user_psychology":
            chase = g("chase_risk_share")
            summary[sel] = ("Entered late: filled " + _fmt(g("fill_delay_min"), 0)
                            + " min (" + _fmt(g("fill_delay_bars"), 1) + " bars) after the "
                            "insight, " + _fmt(np.abs(chase) * 100, 0) + "% of the risk "
                            + np.where(np.nan_to_num(chase) >= 0, "worse", "better")
                            .astype(object) + " than entry")
            fields = {"fill_delay_minutes": _num_text(g("fill_delay_min"), 1),
                      "fill_delay_bars": _num_text(g("fill_delay_bars"), 2),
                      "bar_minutes": _num_text(g("ins_bar_minutes"), 0),
                      "chase_risk_share": _num_text(chase, 3),
                      "slippage_pips": _num_text(g("slippage_pips"), 2),
                      "user_acted": _bool_text(g("user_acted"))}
        else:   # unknown
            b, bc = best[i], best_c[i]
            summary[sel] = ("No cause reached the threshold (best: " + bc.astype(object) + " at "
                            + _fmt(b, 0) + ")")
            sc = np.full(k, "{", dtype=object)
            for j, c in enumerate(CAUSES):
                sc = sc + ((", " if j else "") + json.dumps(c) + ": ") + _num_text(
                    conf0[i, j], 1)
            fields = {"best_cause": _str_text(bc), "best_confidence": _num_text(b, 1),
                      "confidences": sc + "}"}
        evidence[sel] = _json_objects({**fields, **common}, k)
    return pd.DataFrame({"summary": summary, "evidence": evidence})


def analyze_failures(audits: pd.DataFrame, insights: pd.DataFrame | None,
                     candles: pd.DataFrame | None, news: pd.DataFrame | None = None,
                     regimes: pd.DataFrame | None = None, *, patterns: pd.DataFrame | None = None,
                     threshold: float = 50, params: RcaParams | None = None,
                     calibration: Calibration | None = None) -> pd.DataFrame:
    """Ranked root causes of every current failed or neutral audit (module docstring).

    audits: `label_outcomes` output (or the store's current rows; ``is_current`` is honoured when
        present). Every current audit also feeds the trailing fail rates of false_positive.
    insights: the insights (confidence, ai_score, patterns, fill_price, filled_at, user_acted).
    candles: the candles (1-minute or whatever the audits walked; the insight's timeframe is
        resampled from them for patterns and regimes).
    news: news events (ts, currencies, impact[, title, event_id]); None skips news_shock and
        external_shock. regimes: a regime feed or `derive_regimes` output; None derives them.
    patterns: `verify_patterns` output (per insight x pattern) or `detect_patterns` output;
        None re-detects on the candles.
    threshold: the calibrated confidence at which a cause counts.

    Returns one row per (audit, cause that counts) ranked 1.., or one unknown row: insight_id,
    horizon, cause, confidence (0-100, one decimal), rank, summary, evidence (JSON text, sorted
    keys, with ``skipped``). ``attrs``: quarantine (bad news rows), notes, calibration.
    """
    p = params or RcaParams()
    cal = calibration or CALIBRATION
    scores = rca_scores(audits, insights, candles, news, regimes, patterns=patterns, params=p)
    ranked, best, best_c, conf0 = _rank(scores, threshold, cal)
    text = _render(scores, ranked, best, best_c, conf0, p)
    rows = ranked["row"].to_numpy()
    out = _frame({
        "insight_id": scores["insight_id"].to_numpy(dtype=object)[rows],
        "horizon": scores["horizon"].to_numpy(dtype=object)[rows],
        "cause": ranked["cause"].to_numpy(dtype=object),
        "confidence": np.round(ranked["confidence"].to_numpy(dtype=float), 1),
        "rank": ranked["rank"].to_numpy(dtype=np.int64),
        "summary": text["summary"].to_numpy(dtype=object),
        "evidence": text["evidence"].to_numpy(dtype=object),
    })
    out.attrs["quarantine"] = scores.attrs.get("quarantine", Quarantine())
    out.attrs["notes"] = scores.attrs.get("notes", ()) + (f"calibration: {cal.source}",)
    return out

