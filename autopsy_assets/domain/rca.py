"""Root-cause analysis: why did a failed (or neutral) insight fail? Ranked causes with calibrated
confidence, a sentence a trader understands, and the numbers behind it.

`analyze_failures(audits, insights, candles, news=None, regimes=None)` takes the current audits
whose outcome (``replay_outcome`` for filtered insights) is failed or neutral and returns, per
audit, one row per cause that counts, ranked (rank 1 = the primary cause), or one ``unknown`` row.

Every cause of DESIGN section 2 has a heuristic. Each computes the numbers it relies on (they go
into the evidence) and turns them into a **raw score** 0-100 on a fixed scale: 0 = no evidence,
50 = the rule's condition is just met (e.g. a realised range of exactly 2x the baseline), 100 =
as strong as the scale goes. Raw scores are then mapped to **calibrated confidences** (below).

The adverse moment (DESIGN 2a) is the exit bar for stop exits (stop, gap_stop), else the bar of
maximum adverse excursion between created_at and the exit. Window features are read from the
candles the audit walked (``candle_timeframe``; else the finest timeframe of the symbol).
Defaults of every number below are in `RcaParams`.

news_shock
    A high-impact event for either currency of the symbol within +-30 min of the adverse bar
    (`news.nearest_high_impact`). raw = 50 + 30 x (1 - |dt| / 30) + 20 x clip((move_atr - 1) /
    (k - 1), 0, 1): closer and bigger is stronger. Needs a news source.
volatility_spike
    Realised range: the largest rolling mean true range over ``realised_bars`` bars (each bar
    capped at ``winsor_atr`` x baseline, so one jump is not a spike), for windows ending between
    created_at and ``after_bars`` bars past the adverse bar, over the baseline ATR (mean true
    range over the ``baseline_minutes`` before created_at). raw = 25 x ratio (2x -> 50).
liquidity_event
    Volume collapse (the smallest rolling mean volume over the same windows over the baseline
    volume: 0.35 -> 50, 0 -> 100) or price gaps (bars opening more than ``gap_atr`` x baseline
    ATR away from the previous close, plus missing bars outside market closures: 2 -> 50,
    4 -> 100). raw = the larger + 0.25 x the smaller.
external_shock
    The adverse move over the ``move_bars`` bars ending at the adverse bar (from the close before
    them to the worst price), in ATRs of the ``atr_bars`` bars before them: k (``shock_k``) ATR
    -> 50, 2k -> 100. Only without high-impact news within +-30 min, so it needs a news source.
regime_drift
    The regime at created_at against the regime one regime window (``regime_bars`` bars of the
    insight's timeframe) after the adverse bar, within the horizon. On the regime's own
    trend-strength scale (signed efficiency ratio): raw = 50 x (trend with the trade at creation
    + trend against it later) / (2 x ``trend_threshold``), each clipped to 0..1; for a feed
    without trend strength, from the labels: a trend with the trade that turned against it or
    volatile 60-100 (by both confidences), one that faded to another regime 40-50, other changes
    20-40, an unchanged regime half its confidence drop. Regimes default to `derive_regimes` on
    the candles at the insight's timeframe (resampled when absent).
model_error
    The insight's confidence (ai_score when missing): raw = 2 x (confidence - 50), so 75 -> 50
    (overconfident) and <= 50 -> 0 ("a failure was expected").
detector_misid
    Claimed patterns that `patterns.verify_patterns` does not find in the insight's direction in
    the 20 bars before created_at: raw = 50 + 50 x unverified / claimed; no claim -> 0.
spread_slippage
    The worst of: an adverse fill at once (filled within one bar of the insight's timeframe;
    slippage_pips), the spread at entry (the bars around created_at), the spread on the exit bar,
    in pips: raw = 50 x pips / 3 (3 pips -> 50).
user_psychology
    Only for acted insights filled more than one bar of their timeframe after created_at:
    raw = 50 + 12.5 x (delay in bars - 1) + 25 x clip(chase, 0, 1), chase = how far the fill
    was from entry towards the target, as a share of the risk. Never for an unacted insight.
false_positive
    A base rate: the fail rate of the strategy x symbol x pattern set x horizon over the
    ``fp_window_days`` before created_at, from audits that exited before created_at (at least
    ``fp_min_audits``): above 60% raw = 50 + 50 x (rate - 0.6) / 0.4 (100 at 100%); at or
    below, 49 x rate / 0.6.

Calibration. ``config/rca_calibration.yaml`` holds, per cause, a monotone map (piecewise-linear
knots from an isotonic fit) from raw score to the share of rows where that cause is the right
one when no other in-window cause explains the failure, and a second map from that confidence
to how often the cause is right when it leads (rank 1), both fitted on the synthetic benchmark
market (``python benchmarks/bench_rca.py --fit-calibration``; the file names the seed and
says how). A cause **counts** when its calibrated confidence reaches ``threshold`` (50) and its
rule holds (raw score >= 50: e.g. a fail rate above 60%, a spread beyond 3 pips). Loaded once at
import (`CALIBRATION`); without the file every map is the identity.

Ranking (DESIGN 2a). Causes that count are ordered by calibrated confidence, with the rules:
volatility_spike, liquidity_event and external_shock rank below news_shock when high-impact news
is within +-30 min of the adverse moment; false_positive (a base rate) ranks below every cause
with evidence in the insight's own window and leads only when none counts; user_psychology never
applies to an unacted insight. Rank 1 shows its rank-1 calibrated confidence; a lower rank shows
its own calibrated confidence capped at the rank above. When no cause counts, the audit gets one
``unknown`` row at rank 1 whose raw score is 100 - the best calibrated confidence (mapped by the
``unknown`` maps of the calibration file).

Degradation. Without news, news_shock and external_shock are skipped (an external shock needs
news ruled out); without candles for the window, the candle heuristics; a news or regime source
that cannot be used is treated as missing (its reason is kept). Every evidence lists what was
skipped for that audit, and why, in ``skipped``; a missing source never raises.

Speed. Everything is vectorised: window features are cumulative sums, sparse-table range queries
and searchsorted over each (symbol, timeframe) candle array; news, regimes and the trailing fail
rates are single vectorised joins. Python loops run only over causes, candle series, timeframes
and distinct groups; evidence JSON and summaries are built column-wise.
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
from autopsy_assets.domain.validation import Quarantine, infer_timeframe

__all__ = ["ALL_CAUSES", "CAUSES", "RCA_COLUMNS", "Calibration", "RcaParams", "analyze_failures",
           "calibrated", "load_calibration", "parse_calibration", "rank_causes", "rca_scores"]

CAUSES = ("news_shock", "regime_drift", "volatility_spike", "liquidity_event", "model_error",
          "detector_misid", "spread_slippage", "false_positive", "user_psychology",
          "external_shock")
ALL_CAUSES = CAUSES + ("unknown",)
RCA_COLUMNS = ("insight_id", "horizon", "cause", "confidence", "rank", "summary", "evidence")
BASE_RATE = ("false_positive",)
NEWS_DEFERS = ("volatility_spike", "liquidity_event", "external_shock")
ANALYSED = ("failed", "neutral")
STOP_EXITS = ("stop", "gap_stop")
RULE_MET = 50.0          # a raw score at which the heuristic's rule holds

_NS_MIN = 60 * 10**9
_NAT = np.iinfo(np.int64).min
_CALIBRATION_FILE = "rca_calibration.yaml"


@dataclass(frozen=True)
class RcaParams:
    """The numbers the heuristics use (module docstring). The calibration was fitted with the
    defaults: change one and refit it."""

    news_window_min: float = 30.0      # high-impact news within +- this of the adverse bar
    baseline_minutes: int = 1440       # trailing baseline (ATR, volume) before created_at
    atr_bars: int = 14                 # ATR before the adverse move
    realised_bars: int = 15            # rolling window of realised range / volume
    after_bars: int = 15               # bars after the adverse bar still read
    winsor_atr: float = 4.0            # a bar's true range is capped at this x baseline ATR
    move_bars: int = 3                 # the adverse move spans this many bars
    shock_k: float = 6.0               # external shock: a move > k x ATR
    spike_ratio: float = 2.0           # volatility spike: realised range >= 2x baseline
    volume_collapse: float = 0.35      # liquidity: volume below 35% of baseline
    gap_atr: float = 0.5               # a gap: a bar opening this many ATR off the last close
    gaps_at_threshold: int = 2         # liquidity: this many gaps / missing bars -> 50
    spread_pips: float = 3.0           # spread or adverse fill beyond this -> 50
    overconfident_at: float = 75.0     # model_error: raw 50 at this confidence
    fp_rate: float = 0.60              # false positive: trailing fail rate above this
    fp_window_days: float = 30.0
    fp_min_audits: int = 10
    pattern_lookback_bars: int = 20
    regime_bars: int = 24              # the later regime: this many bars after the adverse bar
    trend_threshold: float = 0.3       # trend strength that makes a trend (regimes.py)


# --- calibration -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """Monotone maps, as piecewise-linear knots, per cause (+ 'unknown').

    ``maps``: raw score -> the probability (%) that this cause is the right one; it decides
    whether a cause counts and orders the causes. ``rank1``: that confidence -> how often the
    cause is right when it leads; it gives the confidence shown at rank 1. A cause missing from
    either is mapped by the identity.
    """

    maps: dict = field(default_factory=dict)    # cause -> (x knots, y knots)
    rank1: dict = field(default_factory=dict)   # cause -> (x knots, y knots)
    source: str = "identity (no calibration file)"

    @staticmethod
    def _map(table: dict, cause: str, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if cause not in table:
            return np.clip(x, 0.0, 100.0)
        kx, ky = table[cause]
        return np.where(np.isnan(x), np.nan, np.interp(np.clip(x, 0.0, 100.0), kx, ky))

    def apply(self, cause: str, raw) -> np.ndarray:
        """Raw score -> calibrated confidence (NaN stays NaN)."""
        return self._map(self.maps, cause, raw)

    def leading(self, cause: str, conf) -> np.ndarray:
        """Calibrated confidence of a cause that leads -> the confidence shown at rank 1."""
        return self._map(self.rank1, cause, conf)


def _parse_maps(spec_maps: dict | None, source: str, what: str) -> dict:
    maps = {}
    for cause, spec in (spec_maps or {}).items():
        x = np.asarray(spec["x"], dtype=float)
        y = np.asarray(spec["y"], dtype=float)
        if len(x) != len(y) or len(x) < 1:
            raise ValueError(f"{source}: the {what} map of {cause} needs as many x as y knots")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError(f"{source}: the {what} map of {cause} is not monotone")
        maps[str(cause)] = (x, y)
    return maps


def parse_calibration(raw: dict, source: str) -> Calibration:
    """A Calibration from the YAML structure (``maps`` and ``rank1``: cause -> {x, y})."""
    return Calibration(maps=_parse_maps(raw.get("maps"), source, "cause"),
                       rank1=_parse_maps(raw.get("rank1"), source, "rank-1"), source=source)


@lru_cache(maxsize=4)
def load_calibration(path: str | None = None) -> Calibration:
    """The calibration from ``path`` or the packaged ``config/rca_calibration.yaml``; the
    identity when the packaged file does not exist."""
    if path is None:
        ref = resources.files("autopsy_assets.config").joinpath(_CALIBRATION_FILE)
        if not ref.is_file():
            return Calibration()
        text, source = ref.read_text(), f"{_CALIBRATION_FILE} (packaged)"
    else:
        text, source = Path(path).read_text(), str(path)
    return parse_calibration(yaml.safe_load(text) or {}, source)


CALIBRATION = load_calibration()


# --- array helpers -----------------------------------------------------------------------------

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


def _utc(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]")).tz_localize(
        "UTC")


def _texts(df: pd.DataFrame, col: str, n: int) -> np.ndarray:
    """A text column as an object array ('' for missing, or when the column is absent)."""
    if col not in df.columns:
        return np.full(n, "", dtype=object)
    return df[col].astype(object).where(df[col].notna(), "").astype(str).to_numpy(dtype=object)


def _bar_ns(timeframes: np.ndarray, default_ns) -> np.ndarray:
    """Bar length per row from timeframe labels (unknown or blank -> default)."""
    codes, uniq = pd.factorize(pd.Series(timeframes, dtype=object).astype(str))
    table = np.array([TIMEFRAMES.get(str(u), 0) * _NS_MIN for u in uniq] + [0], dtype=np.int64)
    out = table[np.where(codes < 0, len(uniq), codes)]
    return np.where(out > 0, out, default_ns)


def _cumsum0(x: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.nan_to_num(x, nan=0.0))])


def _frame(columns: dict) -> pd.DataFrame:
    """A DataFrame whose text columns stay object arrays (pandas 3 would infer its arrow-backed
    str dtype and copy every string: most of the time of a large batch)."""
    return pd.DataFrame({k: pd.Series(v, dtype=object, copy=False)
                         if isinstance(v, np.ndarray) and v.dtype == object else v
                         for k, v in columns.items()})


class _Sparse:
    """Range max (op=np.fmax) or min (np.fmin) over x, levels up to ``levels`` (enough for the
    longest query): O(1) range queries and binary-lifted "first index reaching a level"."""

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
        """op over x[a:b] per row (b > a)."""
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
        n = self.n = len(self.ts)
        self.high = frame["high"].to_numpy(dtype=float)
        self.low = frame["low"].to_numpy(dtype=float)
        self.close = frame["close"].to_numpy(dtype=float)
        opens = frame["open"].to_numpy(dtype=float)

        def optional(col: str) -> np.ndarray | None:
            if col not in frame:
                return None
            v = frame[col].to_numpy(dtype=float)
            return v if np.isfinite(v).any() else None

        self.volume, self.spread = optional("volume"), optional("spread")
        prev = np.concatenate([[np.nan], self.close[:-1]])
        self.tr = np.fmax(self.high, prev) - np.fmin(self.low, prev)
        self.c_tr = _cumsum0(self.tr)
        # trailing baseline ATR before bar j: mean true range of the base_n bars before it
        self.base_n = max(p.atr_bars, round(p.baseline_minutes * _NS_MIN / self.bar_ns))
        j = np.arange(n)
        lo = np.maximum(j - self.base_n, 0)
        cnt = j - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            self.base_atr = np.where(cnt >= p.atr_bars, (self.c_tr[j] - self.c_tr[lo]) / cnt,
                                     np.nan)
        # rolling means over realised_bars bars ending at j (true range capped per bar)
        cap = np.where(np.isnan(self.base_atr), np.inf, p.winsor_atr * self.base_atr)
        lo_w = np.maximum(j + 1 - p.realised_bars, 0)
        c_trw = _cumsum0(np.fmin(self.tr, cap))
        self.roll_tr = (c_trw[j + 1] - c_trw[lo_w]) / (j + 1 - lo_w)
        if self.volume is not None:
            self.c_vol = _cumsum0(self.volume)
            self.roll_vol = (self.c_vol[j + 1] - self.c_vol[lo_w]) / (j + 1 - lo_w)
        # gaps (open away from the previous close) and missing bars outside closures
        with np.errstate(invalid="ignore"):
            is_gap = np.nan_to_num(np.abs(opens - prev), nan=0.0) > \
                p.gap_atr * np.nan_to_num(self.base_atr, nan=np.inf)
        self.c_gap = _cumsum0(is_gap.astype(float))
        missing = np.zeros(n)
        if n > 1:
            miss = np.maximum(np.diff(self.ts) // self.bar_ns - 1, 0).astype(float)
            if miss.any() and closure != "none":
                iv = instruments.closure_intervals(closure, pd.Timestamp(int(self.ts[0]), tz="UTC"),
                                                   pd.Timestamp(int(self.ts[-1]), tz="UTC"))
                miss[instruments.inside_closure(self.ts[:-1] + self.bar_ns, self.ts[1:], iv)] = 0
            missing[1:] = miss
        self.c_missing = _cumsum0(missing)
        self.low_k = pd.Series(self.low).rolling(p.move_bars, min_periods=1).min().to_numpy()
        self.high_k = pd.Series(self.high).rolling(p.move_bars, min_periods=1).max().to_numpy()
        self._tables: dict = {}

    def table(self, name: str, levels: int) -> _Sparse:
        have = self._tables.get(name)
        if have is None or len(have.levels) < levels:
            x, op = {"roll_tr_max": (self.roll_tr, np.fmax),
                     "roll_vol_min": (getattr(self, "roll_vol", self.roll_tr), np.fmin),
                     "low_min": (self.low, np.fmin), "high_max": (self.high, np.fmax)}[name]
            have = self._tables[name] = _Sparse(x, op, levels)
        return have

    def mean_tr(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Mean true range over bars [a, b) (NaN where a < 0 or empty)."""
        ok = (a >= 0) & (b > a)
        aa, bb = np.clip(a, 0, self.n), np.clip(b, 0, self.n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, (self.c_tr[bb] - self.c_tr[aa]) / np.maximum(bb - aa, 1), np.nan)


class _Skips:
    """Per row, the heuristics that could not run and why, as a bit mask over distinct reasons."""

    def __init__(self, n: int):
        self.mask = np.zeros(n, dtype=object)   # Python ints: any number of reasons
        self.mask[:] = 0
        self.reasons: list[str] = []

    def add(self, rows, cause: str, why: str) -> None:
        rows = np.asarray(rows)
        if not (rows.any() if rows.dtype == bool else len(rows)):
            return
        text = f"{cause}: {why}"
        if text not in self.reasons:
            self.reasons.append(text)
        self.mask[rows] = self.mask[rows] | (1 << self.reasons.index(text))

    def json(self) -> np.ndarray:
        """A JSON array text per row (reasons in the order first met)."""
        codes, uniq = pd.factorize(pd.Series(self.mask, dtype=object))
        texts = [json.dumps([r for i, r in enumerate(self.reasons) if (int(m) >> i) & 1])
                 for m in uniq]
        return np.asarray(texts, dtype=object)[codes]


# --- column-wise JSON and text -----------------------------------------------------------------

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
    codes, uniq = pd.factorize(pd.Series(x, dtype=object), use_na_sentinel=True)
    table = np.array([json.dumps(str(u)) for u in uniq] + ["null"], dtype=object)
    return table[np.where(codes < 0, len(uniq), codes)]


def _bool_text(x) -> np.ndarray:
    return np.where(np.asarray(x, dtype=bool), "true", "false").astype(object)


def _json_objects(fields: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Pre-rendered JSON values per key -> one JSON object text per row, keys sorted."""
    out = np.full(n, "{", dtype=object)
    for i, key in enumerate(sorted(fields)):
        out = out + ((", " if i else "") + json.dumps(key) + ": ") + fields[key]
    return out + "}"


def _fmt(x, decimals: int) -> np.ndarray:
    """Numbers for a sentence with ``decimals`` decimals ('?' for NaN)."""
    a = np.asarray(x, dtype=float)
    ok = np.isfinite(a)
    v = np.where(ok, a, 0.0)
    out = (np.round(v).astype(np.int64).astype(str) if decimals == 0
           else (np.round(v, decimals) + 0.0).astype(str)).astype(object)
    out[~ok] = "?"
    return out


def _text(x, default: str) -> np.ndarray:
    """Text with missing values replaced by ``default``."""
    a = np.asarray(x, dtype=object).copy()
    a[pd.isna(a)] = default
    return a


def _iso(ns: np.ndarray) -> np.ndarray:
    """int64 ns -> 'YYYY-MM-DDTHH:MM:SS+00:00' (None for NaT)."""
    ns = np.asarray(ns, dtype=np.int64)
    text = np.datetime_as_string(ns.view("datetime64[ns]"), unit="s").astype(object) + "+00:00"
    text[ns == _NAT] = None
    return text


def _hhmm(ns: np.ndarray) -> np.ndarray:
    """int64 ns -> 'HH:MM UTC' ('?' for NaT)."""
    ns = np.asarray(ns, dtype=np.int64)
    hh = np.char.zfill(((ns // (60 * _NS_MIN)) % 24).astype(str), 2).astype(object)
    mm = np.char.zfill(((ns // _NS_MIN) % 60).astype(str), 2).astype(object)
    out = hh + ":" + mm + " UTC"
    out[ns == _NAT] = "?"
    return out


# --- inputs ------------------------------------------------------------------------------------

_AUDIT_REQUIRED = ("insight_id", "horizon", "symbol", "side", "created_at", "outcome")


def _select(audits: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(the current audits with their effective outcome, the failed/neutral ones to analyse,
    their positions among the current ones)."""
    missing = [c for c in _AUDIT_REQUIRED if c not in audits.columns]
    if missing:
        raise ValueError(f"audits lack required column(s): {', '.join(missing)}")
    cur = audits
    if "is_current" in audits.columns:
        cur = audits[audits["is_current"].fillna(False).astype(bool).to_numpy()]
    cur = cur.reset_index(drop=True)
    effective = _texts(cur, "outcome", len(cur))
    replay = _texts(cur, "replay_outcome", len(cur))
    filtered = effective == "filtered_out"
    effective[filtered] = replay[filtered]
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
    t["filled_ns"] = (_i8(ins["filled_at"], "filled_at") if "filled_at" in ins
                      else np.full(m, _NAT, dtype=np.int64))
    t["user_acted"] = (ins["user_acted"].fillna(False).astype(bool).to_numpy()
                       if "user_acted" in ins else np.zeros(m, dtype=bool))
    t["timeframe"] = _texts(ins, "timeframe", m)
    t["patterns"] = np.full(m, "", dtype=object)
    if "patterns" in ins:
        try:
            codes, uniq = pd.factorize(ins["patterns"], use_na_sentinel=True)
            table = np.array([_pattern_key(u) for u in uniq] + [""], dtype=object)
            t["patterns"] = table[np.where(codes < 0, len(uniq), codes)]
        except TypeError:          # lists are unhashable: normalised one by one
            t["patterns"] = np.array([_pattern_key(v) for v in ins["patterns"].to_numpy(
                dtype=object)], dtype=object)
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
        out[name] = np.where(found, table[name][pp], out[name])
    return out


def _candle_series(candles: pd.DataFrame | None, symbols: np.ndarray) -> dict:
    """(symbol, timeframe) -> candle frame sorted by ts (int64 ns), for the symbols asked."""
    if candles is None or len(candles) == 0:
        return {}
    for c in ("symbol", "ts", "open", "high", "low", "close"):
        if c not in candles.columns:
            raise ValueError(f"candles lack required column {c}")
    c = candles[candles["symbol"].isin(set(pd.unique(pd.Series(symbols, dtype=object))))]
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
    else:   # inferred per symbol from the most common spacing
        tf = np.full(len(frame), "1m", dtype=object)
        for idx in frame.groupby("symbol").indices.values():
            tf[idx] = infer_timeframe(np.sort(ts[idx])) or "1m"
        frame["timeframe"] = tf
    frame = frame[frame["ts"] != _NAT]
    out = {}
    for (sym, tf), g in frame.groupby(["symbol", "timeframe"], sort=True):
        if tf in TIMEFRAMES:
            g = g.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
            out[(sym, tf)] = g.reset_index(drop=True)
    return out


def _candles_at(series: dict, symbols, tf: str) -> pd.DataFrame | None:
    """Candles of ``symbols`` at ``tf``: given, else resampled from the finest finer timeframe."""
    from autopsy_assets.data.market import resample  # the one resampler (pure pandas)

    parts = []
    for sym in symbols:
        have = {t: f for (s, t), f in series.items() if s == sym}
        if tf in have:
            f = have[tf]
        else:
            want = TIMEFRAMES[tf]
            finer = sorted((TIMEFRAMES[t], t) for t in have
                           if TIMEFRAMES[t] < want and want % TIMEFRAMES[t] == 0)
            if not finer:
                continue
            src = have[finer[0][1]]
            f = resample(src.assign(ts=_utc(src["ts"].to_numpy())), tf)
            f = f.assign(ts=f["ts"].dt.as_unit("ns").astype("int64"))
        parts.append(f.assign(symbol=sym, timeframe=tf))
    if not parts:
        return None
    out = pd.concat(parts, ignore_index=True)
    out["ts"] = _utc(out["ts"].to_numpy(dtype=np.int64))
    return out


# --- per-audit context and features ------------------------------------------------------------

class _Ctx:
    """The analysed audits as arrays, shared by every feature function."""

    def __init__(self, audits: pd.DataFrame, insights, candles, p: RcaParams):
        self.p = p
        self.all_cur, A, self.a_pos = _select(audits)
        n = self.n = len(A)
        self.skips = _Skips(n)
        self.notes: list[str] = []
        self.quarantine: list[dict] = []
        self.ids = A["insight_id"].to_numpy(dtype=object)
        self.horizon = _texts(A, "horizon", n)
        self.sym = _texts(A, "symbol", n)
        self.side = np.char.lower(_texts(A, "side", n).astype(str)).astype(object)
        self.sign = np.where(self.side == "short", -1.0, 1.0)
        self.created = _i8(A["created_at"], "created_at")
        h_ns = np.array([HORIZONS.get(h, 0) * _NS_MIN for h in self.horizon], dtype=np.int64)
        win_end = _i8(A["window_end"], "window_end") if "window_end" in A else np.full(n, _NAT)
        self.win_end = np.where(win_end == _NAT, self.created + h_ns, win_end)
        self.exit_ns = _i8(A["exit_time"], "exit_time") if "exit_time" in A else np.full(n, _NAT)
        self.exit_reason = _texts(A, "exit_reason", n)

        def num(c):
            return (pd.to_numeric(A[c], errors="coerce").to_numpy(dtype=float) if c in A
                    else np.full(n, np.nan))

        self.entry, self.stop, self.slippage = num("entry_price"), num("stop_price"), \
            num("slippage_pips")
        self.pip = instruments.pip_sizes(self.sym)
        self.ins_table = _insight_table(insights)
        self.ins = _insight_fields(self.ids, self.ins_table)
        self.no_ins = ~self.ins["found"]
        own_tf = _texts(A, "timeframe", n)
        self.ins_tf = np.where(own_tf != "", own_tf, self.ins["timeframe"])
        self.walked_tf = _texts(A, "candle_timeframe", n)
        # the timeframe patterns and regimes are read at: the insight's, else the walked one
        self.rtf = np.where(pd.Series(self.ins_tf).isin(list(TIMEFRAMES)).to_numpy(),
                            self.ins_tf, self.walked_tf)
        self.acted = (A["user_acted"].fillna(False).astype(bool).to_numpy() if "user_acted" in A
                      else np.zeros(n, bool)) | self.ins["user_acted"]
        self.series = _candle_series(candles, self.sym)
        self._at_tf: dict = {}

    def candles_at(self, tf: str) -> pd.DataFrame | None:
        """Candles of the analysed symbols at ``tf`` (resampled when absent), once per tf."""
        if tf not in self._at_tf:
            self._at_tf[tf] = _candles_at(self.series, pd.unique(pd.Series(self.sym, dtype=object)),
                                          tf)
        return self._at_tf[tf]


def _window_features(ctx: _Ctx) -> dict:
    """Adverse moment, baseline, realised range, volume, gaps, the adverse move and spreads,
    per audit, from the candles it walked."""
    p, n = ctx.p, ctx.n
    F = {k: np.full(n, np.nan) for k in (
        "baseline_atr", "realised_ratio", "volume_ratio", "baseline_volume", "gap_bars",
        "missing_bars", "move", "atr_before", "move_atr", "bar_range_atr", "spread_entry_pips",
        "spread_exit_pips")}
    have = np.zeros(n, dtype=bool)
    no_volume, no_spread = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    adv_ns = np.full(n, _NAT, dtype=np.int64)
    bar_ns = np.full(n, _NS_MIN, dtype=np.int64)
    basis = np.where(np.isin(ctx.exit_reason, STOP_EXITS), "stop", "max_adverse").astype(object)
    # which series each row reads: its walked timeframe when given, else the symbol's finest
    by_symbol: dict[str, list[str]] = {}
    for s_, tf in ctx.series:
        by_symbol.setdefault(s_, []).append(tf)
    keys = list(ctx.series)
    key_of = np.full(n, -1, dtype=np.int64)
    if n:
        codes, pairs = pd.factorize(pd.Series(list(zip(ctx.sym, ctx.walked_tf)), dtype=object))
        for code, (s_, tf) in enumerate(pairs):
            tfs = sorted(by_symbol.get(s_, []), key=lambda t: TIMEFRAMES[t])
            if tfs:
                key_of[codes == code] = keys.index((s_, tf if tf in tfs else tfs[0]))
    for kc, (sym_k, tf_k) in enumerate(keys):
        rows = np.flatnonzero(key_of == kc)
        if not len(rows):
            continue
        try:
            closure = instruments.get(sym_k).closure
        except instruments.UnknownSymbolError:
            closure = "none"
        B = _Bars(ctx.series[(sym_k, tf_k)], TIMEFRAMES[tf_k] * _NS_MIN, closure, p)
        bar = B.bar_ns
        bar_ns[rows] = bar
        s = np.searchsorted(B.ts, ctx.created[rows], side="left")      # first window bar
        hi_win = np.searchsorted(B.ts, ctx.win_end[rows] - bar, side="right") - 1
        ex = ctx.exit_ns[rows]
        x = np.where(ex != _NAT, np.searchsorted(B.ts, ex - bar, side="right") - 1, hi_win)
        x = np.minimum(x, hi_win)                                     # the exit bar
        ok = (s > 0) & (s < B.n) & (x >= s)
        ctx.skips.add(rows[~ok], "window", f"no {tf_k} candles of {sym_k} cover the window "
                                           "(or none before it)")
        rows, s, x, hi_win = rows[ok], s[ok], x[ok], hi_win[ok]
        if not len(rows):
            continue
        have[rows] = True
        sg = ctx.sign[rows]
        a = x.copy()       # the adverse bar: the exit bar for stops, else the worst bar
        other = np.flatnonzero(basis[rows] != "stop")
        if len(other):
            so, xo = s[other], x[other] + 1
            levels = int(np.max(xo - so)).bit_length()
            lo_t, hi_t = B.table("low_min", levels), B.table("high_max", levels)
            long_ = sg[other] > 0
            worst = np.where(long_, lo_t.query(so, xo), hi_t.query(so, xo))
            j = np.where(long_, lo_t.first_reaching(so, xo, worst, below=True),
                         hi_t.first_reaching(so, xo, worst, below=False))
            a[other] = np.minimum(j, x[other])
        adv_ns[rows] = B.ts[a]
        base = B.base_atr[s]
        F["baseline_atr"][rows] = base
        # rolling windows ending between the first full one after created_at and after_bars
        # bars past the adverse bar
        hi = np.maximum(np.minimum(a + p.after_bars, hi_win), a)
        lo = np.minimum(s + p.realised_bars - 1, hi)
        levels = int(np.max(hi - lo + 1)).bit_length()
        with np.errstate(invalid="ignore", divide="ignore"):
            F["realised_ratio"][rows] = B.table("roll_tr_max", levels).query(lo, hi + 1) / base
            if B.volume is not None:
                lo_b = np.maximum(s - B.base_n, 0)
                base_v = (B.c_vol[s] - B.c_vol[lo_b]) / np.maximum(s - lo_b, 1)
                F["baseline_volume"][rows] = base_v
                F["volume_ratio"][rows] = B.table("roll_vol_min", levels).query(lo, hi + 1) / base_v
            else:
                no_volume[rows] = True
        F["gap_bars"][rows] = B.c_gap[hi + 1] - B.c_gap[s]
        F["missing_bars"][rows] = B.c_missing[hi + 1] - B.c_missing[s + 1]
        # the adverse move over move_bars bars ending at a, in ATRs of the bars before them
        ref = a - p.move_bars
        atr_b = B.mean_tr(ref + 1 - p.atr_bars, ref + 1)
        ref_close = np.where(ref >= 0, B.close[np.maximum(ref, 0)], np.nan)
        move = np.maximum(np.where(sg > 0, ref_close - B.low_k[a], B.high_k[a] - ref_close), 0)
        F["move"][rows], F["atr_before"][rows] = move, atr_b
        with np.errstate(invalid="ignore", divide="ignore"):
            F["move_atr"][rows] = move / atr_b
            F["bar_range_atr"][rows] = B.tr[a] / atr_b
        if B.spread is not None:
            entry_spread = np.fmax(B.spread[np.maximum(s - 1, 0)], B.spread[s])
            F["spread_entry_pips"][rows] = entry_spread / ctx.pip[rows]
            F["spread_exit_pips"][rows] = B.spread[x] / ctx.pip[rows]
        else:
            no_spread[rows] = True
    for c in ("volatility_spike", "liquidity_event", "external_shock"):
        ctx.skips.add(~have, c, "no candles cover the window")
    ctx.skips.add(have & no_volume, "liquidity_event", "the candles have no volume: gaps only")
    ctx.skips.add(no_spread | ~have, "spread_slippage", "no spread known: fills only")
    # without candles, the adverse moment falls back to the exit (news can still be matched)
    nob = ~have
    adv_ns[nob] = np.where(ctx.exit_ns[nob] != _NAT, ctx.exit_ns[nob] - bar_ns[nob],
                           ctx.created[nob])
    F.update(have_bars=have, adverse_ns=adv_ns, adverse_end_ns=adv_ns + bar_ns,
             adverse_basis=basis, bar_minutes=bar_ns / _NS_MIN, pip=ctx.pip)
    F["gaps_total"] = np.nan_to_num(F["gap_bars"]) + np.nan_to_num(F["missing_bars"])
    return F


def _news_features(ctx: _Ctx, news: pd.DataFrame | None, W: dict) -> dict:
    """The nearest high-impact event of the symbol's currencies around the adverse bar."""
    n, p = ctx.n, ctx.p
    F = {"news_ok": False, "news_near": np.zeros(n, dtype=bool),
         "news_minutes": np.full(n, np.nan), "news_count": np.zeros(n),
         "news_title": np.full(n, None, dtype=object),
         "news_event_id": np.full(n, None, dtype=object),
         "news_currencies": np.full(n, None, dtype=object)}
    reason = "no news source" if news is None else None
    clean = None
    if news is not None:
        try:
            clean, q = normalise_news(news) if len(news) else (news, [])
            ctx.quarantine.extend(q)
        except ValueError as e:          # a source without the columns news needs
            reason = f"news source unusable ({e})"
    if reason:
        ctx.skips.add(np.ones(n, bool), "news_shock", reason)
        ctx.skips.add(np.ones(n, bool), "external_shock",
                      f"{reason}: a shock cannot be told from news")
        return F
    F["news_ok"] = True
    if not n or not len(clean):
        return F
    # the adverse bar's span: for one-minute bars its open, +-30 min; coarser bars widen it
    bar_min = W["bar_minutes"]
    q_ns = W["adverse_ns"] + ((bar_min - 1) * _NS_MIN / 2).astype(np.int64)
    window = p.news_window_min + (bar_min - 1) / 2
    for w in np.unique(window):          # one query per walked timeframe
        rows = np.flatnonzero(window == w)
        res = nearest_high_impact(clean, ctx.sym[rows], pd.Series(_utc(q_ns[rows])),
                                  window_minutes=float(w))
        within = res["within_window"].to_numpy(dtype=bool)
        F["news_near"][rows] = within
        mins = res["nearest_minutes"].to_numpy(dtype=float) + (bar_min[rows] - 1) / 2
        F["news_minutes"][rows] = np.where(within, mins, np.nan)
        F["news_count"][rows] = res["n_in_window"].to_numpy()
        F["news_title"][rows] = np.where(within, res["nearest_title"].to_numpy(dtype=object),
                                         None)
        F["news_event_id"][rows] = np.where(within, res["nearest_event_id"].to_numpy(
            dtype=object), None)
    # the matched event's currencies that move the symbol, once per (event, symbol)
    ccy = dict(zip(clean["event_id"].astype(str), clean["currencies"]))
    codes, uniq = pd.factorize(pd.Series(list(zip(F["news_event_id"], ctx.sym)), dtype=object))
    table = []
    for ev, s_ in uniq:
        cur = parse_currencies(ccy.get(ev)) if ev is not None else []
        mine = [c for c in cur if instruments.known([s_])[0] and c in instruments.currencies(s_)]
        table.append("/".join(mine or cur) or None)
    F["news_currencies"] = np.asarray(table, dtype=object)[codes]
    return F


def _regime_features(ctx: _Ctx, regimes: pd.DataFrame | None, W: dict) -> dict:
    """The regime (and trend strength) at created_at and one regime window after the adverse
    bar, within the horizon."""
    n, p = ctx.n, ctx.p
    F = {k: np.full(n, None, dtype=object) for k in ("regime0", "regime1", "later_at",
                                                     "regime_source")}
    F.update({k: np.full(n, np.nan) for k in ("rconf0", "rconf1", "trend0", "trend1")})
    F["regime_known"] = np.zeros(n, dtype=bool)
    if not n:
        return F
    if regimes is None:
        parts = []
        for tf in pd.unique(pd.Series(ctx.rtf, dtype=object)):
            c_tf = ctx.candles_at(tf) if tf in TIMEFRAMES else None
            if c_tf is not None and len(c_tf):
                parts.append(derive_regimes(c_tf))
        if not parts:
            ctx.skips.add(np.ones(n, bool), "regime_drift",
                          "no regime feed and no candles to derive regimes from")
            return F
        regimes = pd.concat(parts, ignore_index=True)
        ctx.notes.append("regimes derived from candles (derive_regimes, default window)")
        source = "derived from " + ctx.rtf.astype(object) + " candles"
    else:
        source = np.full(n, "regime feed", dtype=object)
    r_bar = _bar_ns(ctx.rtf, W["bar_minutes"].astype(np.int64) * _NS_MIN)
    later = np.minimum(ctx.win_end, W["adverse_end_ns"] + p.regime_bars * r_bar)
    got = []
    try:
        for t in (ctx.created, later):
            frame = pd.DataFrame({"symbol": ctx.sym, "timeframe": ctx.rtf, "ts": _utc(t)})
            got.append(regimes_at(regimes, frame))
    except ValueError as e:              # a feed without the columns regimes_at needs
        ctx.skips.add(np.ones(n, bool), "regime_drift", f"regime source unusable ({e})")
        return F
    for k, g in enumerate(got):
        F[f"regime{k}"] = g["regime"].to_numpy(dtype=object)
        F[f"rconf{k}"] = g["confidence"].to_numpy(dtype=float)
        if "trend_strength" in g:
            F[f"trend{k}"] = g["trend_strength"].to_numpy(dtype=float)
    F["later_at"] = _iso(later)
    F["regime_source"] = source
    r0_known, r1_known = pd.notna(F["regime0"]), pd.notna(F["regime1"])
    F["regime_known"] = r0_known & r1_known
    ctx.skips.add(~r0_known, "regime_drift",
                  "no regime known at created_at (warm-up, or no regime for the symbol)")
    ctx.skips.add(r0_known & ~r1_known, "regime_drift", "no regime known after the adverse bar")
    return F


def _pattern_features(ctx: _Ctx, patterns: pd.DataFrame | None) -> dict:
    """Claimed patterns and the ones `verify_patterns` does not find (codes and counts)."""
    n, p = ctx.n, ctx.p
    pats = ctx.ins["patterns"]
    claimed = (pats != "") & ~ctx.no_ins
    F = {"claimed": pats, "unverified": np.full(n, "", dtype=object),
         "n_claimed": np.where(pats == "", 0, np.char.count(pats.astype(str), "|") + 1)
         if n else np.zeros(0), "n_unverified": np.full(n, np.nan),
         "pattern_source": np.full(n, None, dtype=object), "claimed_mask": claimed}
    if not claimed.any():
        return F
    rows = np.flatnonzero(claimed)
    first = pd.Series(rows).groupby(ctx.ids[rows], sort=False).first().to_numpy()
    src = ""
    if patterns is not None and "verified" in patterns.columns:
        per = patterns[patterns["insight_id"].isin(set(ctx.ids[first]))]
        src = "verify_patterns output given"
    else:
        q = pd.DataFrame({"insight_id": ctx.ids[first], "created_at": _utc(ctx.created[first]),
                          "side": ctx.side[first], "symbol": ctx.sym[first],
                          "timeframe": ctx.rtf[first], "patterns": pats[first]})
        parts = []
        for tf in pd.unique(q["timeframe"]):
            qq = q[q["timeframe"] == tf]
            if patterns is not None and "kind" in patterns.columns:
                source, src = patterns, "detect_patterns output given"
            else:
                source = ctx.candles_at(tf) if tf in TIMEFRAMES else None
                src = f"re-detected on {tf} candles"
            if source is None or not len(source):
                continue
            if "symbol" in source.columns:
                qq = qq[qq["symbol"].isin(set(source["symbol"]))]
            if len(qq):
                parts.append(verify_patterns(qq, source, p.pattern_lookback_bars))
        per = pd.concat(parts, ignore_index=True) if parts else None
    checked = np.zeros(n, dtype=bool)
    if per is not None and len(per):
        per_ids = per["insight_id"].to_numpy(dtype=object)
        bad = ~per["verified"].to_numpy(dtype=bool)
        b = pd.DataFrame({"i": per_ids[bad], "p": per["pattern"].astype(str).to_numpy(
            dtype=object)[bad]}).drop_duplicates().sort_values(["i", "p"], kind="stable")
        n_unv = np.zeros(n)
        if len(b):       # '|'-join each insight's unverified codes without a loop per insight
            bi, bp = b["i"].to_numpy(dtype=object), b["p"].to_numpy(dtype=object)
            start = np.flatnonzero(np.r_[True, bi[1:] != bi[:-1]])
            piece = "|" + bp
            piece[start] = bp[start]
            joined = np.add.reduceat(piece, start)
            count = np.diff(np.r_[start, len(bp)])
            pos = pd.Index(bi[start]).get_indexer(ctx.ids)
            hit = pos >= 0
            F["unverified"] = np.where(hit, joined[np.maximum(pos, 0)], "").astype(object)
            n_unv = np.where(hit, count[np.maximum(pos, 0)], 0)
        checked = (pd.Index(pd.unique(per_ids)).get_indexer(ctx.ids) >= 0) & claimed
        F["n_unverified"] = np.where(checked, n_unv, np.nan)
        F["pattern_source"] = np.where(checked, src, None).astype(object)
    ctx.skips.add(claimed & ~checked, "detector_misid",
                  "no candles or patterns at the insight's timeframe to re-verify its claims")
    return F


def _fill_features(ctx: _Ctx) -> dict:
    """Fill delay and slippage: at once (spread_slippage) or late (user_psychology)."""
    filled = ctx.ins["filled_ns"]
    ins_bar = _bar_ns(ctx.ins_tf, _NS_MIN)
    delay = np.where((filled != _NAT) & ctx.acted, (filled - ctx.created) / _NS_MIN, np.nan)
    late = ctx.acted & (delay * _NS_MIN > ins_bar)
    at_once = ctx.acted & ~late            # a fill of unknown time counts as at once
    fill = ctx.ins["fill_price"]
    slip = np.where(np.isnan(ctx.slippage) & ~np.isnan(fill),
                    ctx.sign * (fill - ctx.entry) / ctx.pip, ctx.slippage)
    risk = np.abs(ctx.entry - ctx.stop)
    with np.errstate(invalid="ignore", divide="ignore"):
        chase = np.where(late, ctx.sign * (fill - ctx.entry) / risk, np.nan)
        delay_bars = delay * _NS_MIN / ins_bar
    ctx.skips.add(ctx.acted & (filled == _NAT), "user_psychology",
                  "acted, but filled_at is unknown")
    return {"slippage_pips": slip, "fill_delay_min": delay, "fill_delay_bars": delay_bars,
            "filled_at_once": at_once, "filled_late": late, "chase_risk_share": chase,
            "ins_bar_minutes": ins_bar / _NS_MIN, "user_acted": ctx.acted}


def _fail_rates(ctx: _Ctx) -> dict:
    """Trailing fail rate per analysed audit of its strategy x symbol x pattern set x horizon,
    from audits that exited in [created_at - window, created_at): cumulative counts per group,
    read by two merge_asof joins (no loop per audit)."""
    n, p, cur = ctx.n, ctx.p, ctx.all_cur
    out = {"fp_rate": np.full(n, np.nan), "fp_n": np.zeros(n), "fp_failed": np.zeros(n),
           "fp_group": np.full(n, None, dtype=object)}
    if not n:
        return out
    info = _insight_fields(cur["insight_id"].to_numpy(dtype=object), ctx.ins_table)
    m = len(cur)
    keys = pd.DataFrame({
        "s": _texts(cur, "strategy", m), "y": _texts(cur, "symbol", m),
        "p": np.where(info["patterns"] == "", "(no pattern)", info["patterns"]).astype(object),
        "h": _texts(cur, "horizon", m)})
    gcode = keys.groupby(["s", "y", "p", "h"], sort=False).ngroup().to_numpy()
    gcode = np.where(info["found"], gcode, -1)
    g_a = gcode[ctx.a_pos]
    first = pd.Series(np.arange(m)).groupby(gcode).first()      # one row per group
    first = first[first.index >= 0]
    f = first.to_numpy()
    name = np.full(max(int(gcode.max()) + 1, 1) if m else 1, None, dtype=object)
    name[first.index.to_numpy()] = (keys["s"].to_numpy()[f] + " " + keys["y"].to_numpy()[f] + " "
                                    + keys["p"].to_numpy()[f] + " " + keys["h"].to_numpy()[f])
    out["fp_group"] = np.where(g_a >= 0, name[np.maximum(g_a, 0)], None).astype(object)
    eff = cur["_effective"].to_numpy(dtype=object)
    exits = _i8(cur["exit_time"], "exit_time") if "exit_time" in cur else np.full(m, _NAT)
    ok = np.isin(eff, ("succeeded", "failed", "neutral")) & (gcode >= 0) & (exits != _NAT)
    ev = pd.DataFrame({"gc": gcode[ok], "t": exits[ok],
                       "fail": (eff[ok] == "failed").astype(np.int64)})
    if ev.empty:
        return out
    ev = ev.sort_values(["gc", "t"], kind="stable")
    ev["cn"] = ev.groupby("gc").cumcount() + 1
    ev["cf"] = ev.groupby("gc")["fail"].cumsum()
    ev = ev.sort_values("t", kind="stable")[["gc", "t", "cn", "cf"]]

    def before(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Audits and failures of the row's group that exited strictly before ``times``."""
        q = pd.DataFrame({"gc": g_a, "t": times, "pos": np.arange(n)})
        q = q[q["gc"] >= 0].sort_values("t", kind="stable")
        hit = pd.merge_asof(q, ev, on="t", by="gc", direction="backward",
                            allow_exact_matches=False)
        cn, cf = np.zeros(n), np.zeros(n)
        pos = hit["pos"].to_numpy()
        cn[pos] = hit["cn"].fillna(0).to_numpy(dtype=float)
        cf[pos] = hit["cf"].fillna(0).to_numpy(dtype=float)
        return cn, cf

    n1, f1 = before(ctx.created)
    n0, f0 = before(ctx.created - int(p.fp_window_days * 1440 * _NS_MIN))
    cnt, fails = n1 - n0, f1 - f0
    with np.errstate(invalid="ignore", divide="ignore"):
        out["fp_rate"] = np.where(cnt > 0, fails / cnt, np.nan)
    out["fp_n"], out["fp_failed"] = cnt, fails
    ctx.skips.add(g_a < 0, "false_positive", "the insight is not in the insights given")
    return out


# --- raw scores --------------------------------------------------------------------------------

def _raw_scores(ctx: _Ctx, F: dict) -> dict:
    """Every heuristic's raw score 0-100 (NaN when it could not run), module docstring."""
    p, n = ctx.p, ctx.n
    have = F["have_bars"]
    def clip(x):
        return np.clip(x, 0.0, 100.0)

    raw = {}
    near = F["news_near"]
    if F["news_ok"]:
        prox = np.clip(1 - np.abs(F["news_minutes"]) / p.news_window_min, 0, 1)
        size = np.clip((np.nan_to_num(F["move_atr"]) - 1) / (p.shock_k - 1), 0, 1)
        raw["news_shock"] = np.where(near, 50 + 30 * prox + 20 * size, 0.0)
        raw["external_shock"] = np.where(have, np.where(near, 0.0, clip(
            50 * F["move_atr"] / p.shock_k)), np.nan)
    else:
        raw["news_shock"] = raw["external_shock"] = np.full(n, np.nan)
    raw["volatility_spike"] = np.where(have, clip(50 * F["realised_ratio"] / p.spike_ratio),
                                       np.nan)
    v, vc = F["volume_ratio"], p.volume_collapse
    s_vol = np.nan_to_num(clip(np.where(v <= vc, 50 + 50 * (vc - v) / vc,
                                        50 * (1 - v) / (1 - vc))))
    s_gap = clip(50 * F["gaps_total"] / p.gaps_at_threshold)
    raw["liquidity_event"] = np.where(have, clip(np.maximum(s_vol, s_gap)
                                                 + 0.25 * np.minimum(s_vol, s_gap)), np.nan)
    raw["regime_drift"] = _regime_score(ctx, F)
    conf = F["confidence_used"]
    raw["model_error"] = clip((conf - 50.0) * 50.0 / (p.overconfident_at - 50.0))
    claimed = F["claimed_mask"]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = F["n_unverified"] / np.maximum(F["n_claimed"], 1)
    raw["detector_misid"] = np.where(ctx.no_ins, np.nan, np.where(
        claimed, np.where(share > 0, 50 + 50 * share, np.where(np.isnan(share), np.nan, 0.0)),
        0.0))
    adverse_fill = np.where(F["filled_at_once"], np.nan_to_num(F["slippage_pips"]), 0.0)
    worst = np.fmax(np.fmax(adverse_fill, F["spread_entry_pips"]), F["spread_exit_pips"])
    raw["spread_slippage"] = clip(50 * worst / p.spread_pips)
    raw["spread_slippage"][np.isnan(F["spread_entry_pips"]) & ~ctx.acted] = np.nan
    psych = 50 + 12.5 * (F["fill_delay_bars"] - 1) + 25 * np.clip(
        np.nan_to_num(F["chase_risk_share"]), 0, 1)
    raw["user_psychology"] = np.where(F["filled_late"], clip(psych), 0.0)
    rate = F["fp_rate"]
    s_fp = np.where(rate > p.fp_rate, 50 + 50 * (rate - p.fp_rate) / (1 - p.fp_rate),
                    49 * rate / p.fp_rate)             # the rule is strict: above 60%
    raw["false_positive"] = np.where(pd.isna(F["fp_group"]), np.nan,
                                     np.where(F["fp_n"] >= p.fp_min_audits, clip(s_fp), 0.0))
    return raw


def _regime_score(ctx: _Ctx, F: dict) -> np.ndarray:
    """regime_drift's raw score: trend strengths when known, else the regime labels."""
    p, sign = ctx.p, ctx.sign
    r0, r1, c0, c1 = F["regime0"], F["regime1"], F["rconf0"], F["rconf1"]
    known = F["regime_known"]
    d0 = np.clip((np.nan_to_num(c0, nan=50) - 50) / 50, 0, 1)
    d1 = np.clip((np.nan_to_num(c1, nan=50) - 50) / 50, 0, 1)
    with0 = np.where(sign > 0, r0 == "trending_up", r0 == "trending_down")
    against1 = np.where(sign > 0, r1 == "trending_down", r1 == "trending_up")
    turned = against1 | (r1 == "volatile")
    by_label = np.where(with0 & turned, 60 + 20 * d0 + 20 * d1,
                        np.where(with0, 40 + 10 * d0, np.where(against1, 30 + 10 * d1,
                                                               20 + 10 * d1)))
    drop = 0.5 * np.clip(np.nan_to_num(c0) - np.nan_to_num(c1), 0, 50)
    by_label = np.where(known & (r0 != r1), by_label, np.where(known, drop, np.nan))
    F["trend_with0"], F["trend_against1"] = sign * F["trend0"], -sign * F["trend1"]
    by_trend = 50 * (np.clip(F["trend_with0"], 0, 1) + np.clip(F["trend_against1"], 0, 1)) / (
        2 * p.trend_threshold)
    has_trend = known & ~np.isnan(F["trend0"]) & ~np.isnan(F["trend1"])
    return np.where(has_trend, np.clip(by_trend, 0, 100), by_label)


def rca_scores(audits: pd.DataFrame, insights: pd.DataFrame | None, candles: pd.DataFrame | None,
               news: pd.DataFrame | None = None, regimes: pd.DataFrame | None = None, *,
               patterns: pd.DataFrame | None = None, params: RcaParams | None = None
               ) -> pd.DataFrame:
    """Per analysed audit (current, failed or neutral): every heuristic's numbers and raw score.

    Columns: insight_id, horizon, the feature columns the evidence uses, ``raw_<cause>`` (0-100,
    NaN when the heuristic could not run), ``news_near`` and ``skipped`` (JSON list of
    'cause: reason'). ``attrs``: quarantine (bad news rows), notes. `analyze_failures` ranks
    these; the benchmark fits the calibration on them.
    """
    p = params or RcaParams()
    ctx = _Ctx(audits, insights, candles, p)
    n = ctx.n
    ctx.skips.add(ctx.no_ins, "model_error", "the insight is not in the insights given")
    ctx.skips.add(ctx.no_ins, "detector_misid", "the insight is not in the insights given")
    F: dict = {"insight_id": ctx.ids, "horizon": ctx.horizon, "symbol": ctx.sym,
               "side": ctx.side, "created_ns": ctx.created}
    W = _window_features(ctx)
    F.update(W)
    F.update(_news_features(ctx, news, W))
    F.update(_regime_features(ctx, regimes, W))
    F.update(_pattern_features(ctx, patterns))
    F.update(_fill_features(ctx))
    F.update(_fail_rates(ctx))
    conf = ctx.ins["confidence"]
    F["confidence"], F["ai_score"] = conf, ctx.ins["ai_score"]
    F["confidence_used"] = np.where(np.isnan(conf), ctx.ins["ai_score"], conf)
    F["confidence_source"] = np.where(np.isnan(conf), "ai_score", "confidence").astype(object)
    ctx.skips.add(~ctx.no_ins & np.isnan(F["confidence_used"]), "model_error",
                  "the insight has no confidence or ai_score")
    raw = _raw_scores(ctx, F)
    F["skipped"] = ctx.skips.json() if n else np.zeros(0, dtype=object)
    for c in CAUSES:
        F[f"raw_{c}"] = raw[c]
    F.pop("news_ok")
    out = _frame({k: (v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in F.items()})
    out.attrs["quarantine"] = Quarantine(ctx.quarantine)
    out.attrs["notes"] = tuple(ctx.notes)
    return out


# --- ranking -----------------------------------------------------------------------------------

def calibrated(scores: pd.DataFrame, calibration: Calibration | None = None) -> np.ndarray:
    """(n, len(CAUSES)) calibrated confidences; NaN where a heuristic could not run."""
    cal = calibration or CALIBRATION
    if not len(scores):
        return np.zeros((0, len(CAUSES)))
    return np.column_stack([cal.apply(c, scores[f"raw_{c}"].to_numpy(dtype=float))
                            for c in CAUSES])


def rank_causes(scores: pd.DataFrame, threshold: float = 50.0,
                calibration: Calibration | None = None) -> pd.DataFrame:
    """Long frame: row (position in ``scores``), cause, confidence, rank; one unknown row where
    no cause reaches ``threshold``. Applies the ordering rules of DESIGN 2a."""
    return _rank(scores, threshold, calibration)[0]


def _rank(scores: pd.DataFrame, threshold: float, calibration: Calibration | None):
    """(ranked rows, best confidence per audit, its cause, all calibrated confidences)."""
    cal = calibration or CALIBRATION
    n = len(scores)
    conf = np.nan_to_num(calibrated(scores, cal), nan=0.0)
    raw = np.column_stack([scores[f"raw_{c}"].to_numpy(dtype=float) for c in CAUSES]) if n \
        else np.zeros((0, len(CAUSES)))
    counts = (conf >= threshold) & (np.nan_to_num(raw) >= RULE_MET)
    order_conf = conf.copy()
    ci = {c: i for i, c in enumerate(CAUSES)}
    news = ci["news_shock"]
    # news outranks volatility, liquidity and external shocks around the adverse moment
    near = scores["news_near"].to_numpy(dtype=bool) & counts[:, news]
    for c in NEWS_DEFERS:
        j = ci[c]
        order_conf[near, j] = np.minimum(order_conf[near, j], conf[near, news] - 1e-6)
    tier = np.array([1 if c in BASE_RATE else 0 for c in CAUSES])   # base rates last
    r, c = np.nonzero(counts)
    order = np.lexsort((c, -order_conf[r, c], tier[c], r))
    r, c = r[order], c[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = r[1:] != r[:-1]
    rank = np.arange(len(r)) - np.maximum.accumulate(np.where(first, np.arange(len(r)), 0)) + 1
    shown = conf[r, c].copy()
    for j, cause in enumerate(CAUSES):      # rank 1: how often this cause is right leading
        lead = (rank == 1) & (c == j)
        if lead.any():
            shown[lead] = cal.leading(cause, shown[lead])
    shown = pd.Series(shown).groupby(r).cummin().to_numpy() if len(r) else np.zeros(0)
    found = pd.DataFrame({"row": r, "cause": np.asarray(CAUSES, dtype=object)[c],
                          "confidence": shown, "rank": rank})
    none = np.flatnonzero(~counts.any(axis=1))
    best = conf.max(axis=1) if n else np.zeros(0)
    best_c = np.asarray(CAUSES, dtype=object)[conf.argmax(axis=1)] if n else np.zeros(0, object)
    unknown = pd.DataFrame({"row": none, "cause": "unknown",
                            "confidence": cal.leading("unknown",
                                                      cal.apply("unknown", 100.0 - best[none])),
                            "rank": np.ones(len(none), dtype=np.int64)})
    out = pd.concat([found, unknown], ignore_index=True).sort_values(["row", "rank"],
                                                                     kind="stable")
    return out.reset_index(drop=True), best, best_c, conf


# --- summaries and evidence ----------------------------------------------------------------------

def _render(S: pd.DataFrame, ranked: pd.DataFrame, best: np.ndarray, best_c: np.ndarray,
            conf: np.ndarray, p: RcaParams) -> tuple[np.ndarray, np.ndarray]:
    """(summary, evidence) per ranked row, built column-wise per cause."""
    m = len(ranked)
    summary = np.full(m, "", dtype=object)
    evidence = np.full(m, "{}", dtype=object)
    rows_all = ranked["row"].to_numpy()
    cause_all = ranked["cause"].to_numpy(dtype=object)
    for cause in ALL_CAUSES:
        sel = np.flatnonzero(cause_all == cause)
        if not len(sel):
            continue
        i = rows_all[sel]
        k = len(i)

        def g(col, i=i):
            return S[col].to_numpy()[i]

        def const(v, text=_num_text, k=k):
            return text(np.full(k, v))

        common = {"skipped": g("skipped").astype(object)}
        if cause != "unknown":
            common["raw_score"] = _num_text(g(f"raw_{cause}"), 1)
        adverse = {"adverse_time": _str_text(_iso(g("adverse_ns"))),
                   "adverse_basis": _str_text(g("adverse_basis"))}
        at_stop = g("adverse_basis") == "stop"
        moment = np.where(at_stop, "the stop was hit", "the worst adverse move").astype(object)
        point = np.where(at_stop, "the stop", "the worst adverse move").astype(object)
        pips = g("pip")
        if cause == "news_shock":
            mins = g("news_minutes")
            summary[sel] = (_text(g("news_title"), "News") + " (high impact, "
                            + _text(g("news_currencies"), "?") + ") " + _fmt(np.abs(mins), 0)
                            + np.where(mins <= 0, " min before ", " min after ").astype(object)
                            + moment + "; the bar's range was " + _fmt(g("bar_range_atr"), 1)
                            + "x ATR")
            fields = {"event_id": _str_text(g("news_event_id")),
                      "title": _str_text(g("news_title")),
                      "currencies": _str_text(g("news_currencies")),
                      "impact": const("high", _str_text),
                      "minutes_from_adverse_bar": _num_text(mins, 1),
                      "events_in_window": _int_text(g("news_count")),
                      "window_minutes": const(p.news_window_min),
                      "move_atr": _num_text(g("move_atr"), 2),
                      "bar_range_atr": _num_text(g("bar_range_atr"), 2), **adverse}
        elif cause == "volatility_spike":
            summary[sel] = ("Volatility spike: the range of " + str(p.realised_bars)
                            + " bars near " + point + " was " + _fmt(g("realised_ratio"), 1)
                            + "x the trailing " + f"{p.baseline_minutes / 60:g}" + "h average (ATR "
                            + _fmt(g("baseline_atr") / pips, 1) + " pips)"
                            + np.where(g("news_near"), ", with high-impact news nearby", "")
                            .astype(object))
            fields = {"realised_range_ratio": _num_text(g("realised_ratio"), 2),
                      "baseline_atr_pips": _num_text(g("baseline_atr") / pips, 2),
                      "baseline_minutes": const(p.baseline_minutes, _int_text),
                      "realised_bars": const(p.realised_bars, _int_text),
                      "threshold_ratio": const(p.spike_ratio),
                      "news_within_window": _bool_text(g("news_near")), **adverse}
        elif cause == "liquidity_event":
            vr = g("volume_ratio")
            summary[sel] = ("Liquidity dried up: " + np.where(
                np.isfinite(vr), "volume fell to " + _fmt(100 * vr, 0) + "% of its trailing "
                "average", "volume unknown").astype(object) + " and " + _fmt(g("gaps_total"), 0)
                + " price gaps or missing bars up to " + point)
            fields = {"volume_ratio": _num_text(vr, 3),
                      "baseline_volume": _num_text(g("baseline_volume"), 1),
                      "gap_bars": _int_text(g("gap_bars")),
                      "missing_bars": _int_text(g("missing_bars")),
                      "gap_threshold_atr": const(p.gap_atr),
                      "collapse_threshold": const(p.volume_collapse),
                      "news_within_window": _bool_text(g("news_near")), **adverse}
        elif cause == "external_shock":
            summary[sel] = ("A " + _fmt(g("move_atr"), 1) + "x ATR move against the trade ("
                            + _fmt(g("move") / pips, 1) + " pips in " + str(p.move_bars)
                            + " bars) as " + moment + ", with no high-impact news within "
                            + f"{p.news_window_min:g}" + " min")
            fields = {"move_atr": _num_text(g("move_atr"), 2),
                      "move_pips": _num_text(g("move") / pips, 1),
                      "atr_pips": _num_text(g("atr_before") / pips, 2),
                      "atr_bars": const(p.atr_bars, _int_text),
                      "move_bars": const(p.move_bars, _int_text), "k": const(p.shock_k),
                      "bar_range_atr": _num_text(g("bar_range_atr"), 2),
                      "news_within_window": _bool_text(g("news_near")), **adverse}
        elif cause == "regime_drift":
            summary[sel] = ("Regime changed from " + _text(g("regime0"), "?") + " ("
                            + _fmt(g("rconf0"), 0) + ") at creation to "
                            + _text(g("regime1"), "?") + " (" + _fmt(g("rconf1"), 0) + ") by "
                            + _hhmm(_i8(g("later_at"), "later_at")) + ": trend strength "
                            + _fmt(g("trend_with0"), 2) + " with the " + g("side").astype(object)
                            + ", then " + _fmt(g("trend_against1"), 2) + " against it")
            fields = {"regime_at_creation": _str_text(g("regime0")),
                      "regime_confidence_at_creation": _num_text(g("rconf0"), 1),
                      "regime_later": _str_text(g("regime1")),
                      "regime_confidence_later": _num_text(g("rconf1"), 1),
                      "later_at": _str_text(g("later_at")),
                      "trend_strength_at_creation": _num_text(g("trend0"), 3),
                      "trend_strength_later": _num_text(g("trend1"), 3),
                      "trend_with_trade_at_creation": _num_text(g("trend_with0"), 3),
                      "trend_against_trade_later": _num_text(g("trend_against1"), 3),
                      "regime_source": _str_text(g("regime_source")), **adverse}
        elif cause == "model_error":
            cu = g("confidence_used")
            over = cu >= p.overconfident_at
            summary[sel] = (np.where(over, "Overconfident model: ", "").astype(object)
                            + g("confidence_source").astype(object) + " was " + _fmt(cu, 0)
                            + " yet the insight failed")
            fields = {"confidence": _num_text(g("confidence"), 1),
                      "ai_score": _num_text(g("ai_score"), 1),
                      "score_used": _str_text(g("confidence_source")),
                      "overconfident_at": const(p.overconfident_at),
                      "reading": _str_text(np.where(over, "overconfident", "expected")
                                           .astype(object))}
        elif cause == "detector_misid":
            def commas(v):
                return np.char.replace(_text(v, "").astype(str), "|", ", ").astype(object)
            summary[sel] = ("Claimed " + commas(g("claimed")) + " but " + commas(g("unverified"))
                            + " was not on the chart in the " + str(p.pattern_lookback_bars)
                            + " bars before creation")
            fields = {"claimed": _str_text(g("claimed")), "unverified": _str_text(g("unverified")),
                      "n_claimed": _int_text(g("n_claimed")),
                      "n_unverified": _int_text(g("n_unverified")),
                      "lookback_bars": const(p.pattern_lookback_bars, _int_text),
                      "pattern_source": _str_text(g("pattern_source"))}
        elif cause == "spread_slippage":
            sl, once = g("slippage_pips"), g("filled_at_once").astype(bool)
            filled = once & (np.nan_to_num(sl) > 0)
            summary[sel] = (np.where(filled, "Filled " + _fmt(sl, 1) + " pips worse than entry "
                                     "at once; spread ", "Spread ").astype(object)
                            + _fmt(g("spread_entry_pips"), 1) + " pips at entry and "
                            + _fmt(g("spread_exit_pips"), 1) + " at the exit (limit "
                            + f"{p.spread_pips:g}" + " pips)")
            fields = {"slippage_pips": _num_text(sl, 2), "filled_at_once": _bool_text(once),
                      "fill_delay_minutes": _num_text(g("fill_delay_min"), 1),
                      "spread_entry_pips": _num_text(g("spread_entry_pips"), 2),
                      "spread_exit_pips": _num_text(g("spread_exit_pips"), 2),
                      "limit_pips": const(p.spread_pips)}
        elif cause == "false_positive":
            summary[sel] = (_text(g("fp_group"), "?") + " failed " + _fmt(100 * g("fp_rate"), 0)
                            + "% of " + _fmt(g("fp_n"), 0) + " audits in the "
                            + f"{p.fp_window_days:g}" + " days before: a weak setup")
            fields = {"group": _str_text(g("fp_group")), "fail_rate": _num_text(g("fp_rate"), 3),
                      "n_audits": _int_text(g("fp_n")), "n_failed": _int_text(g("fp_failed")),
                      "window_days": const(p.fp_window_days),
                      "min_audits": const(p.fp_min_audits, _int_text),
                      "threshold_rate": const(p.fp_rate)}
        elif cause == "user_psychology":
            chase = g("chase_risk_share")
            summary[sel] = ("Entered late: filled " + _fmt(g("fill_delay_min"), 0) + " min ("
                            + _fmt(g("fill_delay_bars"), 1) + " bars) after the insight, "
                            + _fmt(np.abs(chase) * 100, 0) + "% of the risk "
                            + np.where(np.nan_to_num(chase) >= 0, "worse", "better")
                            .astype(object) + " than entry")
            fields = {"fill_delay_minutes": _num_text(g("fill_delay_min"), 1),
                      "fill_delay_bars": _num_text(g("fill_delay_bars"), 2),
                      "bar_minutes": _num_text(g("ins_bar_minutes"), 0),
                      "chase_risk_share": _num_text(chase, 3),
                      "slippage_pips": _num_text(g("slippage_pips"), 2),
                      "user_acted": _bool_text(g("user_acted"))}
        else:   # unknown
            b, bc = best[i], best_c[i].astype(object)
            summary[sel] = ("No cause reached the threshold (best: " + bc + " at "
                            + _fmt(b, 0) + ")")
            per = np.full(k, "{", dtype=object)
            for j, c in enumerate(sorted(CAUSES)):
                per = per + ((", " if j else "") + json.dumps(c) + ": ") + _num_text(
                    conf[i, CAUSES.index(c)], 1)
            fields = {"best_cause": _str_text(bc), "best_confidence": _num_text(b, 1),
                      "confidences": per + "}"}
        evidence[sel] = _json_objects({**fields, **common}, k)
    return summary, evidence


def analyze_failures(audits: pd.DataFrame, insights: pd.DataFrame | None,
                     candles: pd.DataFrame | None, news: pd.DataFrame | None = None,
                     regimes: pd.DataFrame | None = None, *, patterns: pd.DataFrame | None = None,
                     threshold: float = 50, params: RcaParams | None = None,
                     calibration: Calibration | None = None) -> pd.DataFrame:
    """Ranked root causes of every current failed or neutral audit (see the module docstring).

    audits: `label_outcomes` output (or the store's rows; ``is_current`` is honoured when
        present). Every current audit also feeds the trailing fail rates of false_positive.
    insights: the insights (confidence, ai_score, patterns, fill_price, filled_at, user_acted).
    candles: the candles the audits walked (the insight's timeframe is resampled from them for
        patterns and regimes when absent).
    news: news events (ts, currencies, impact[, title, event_id]); None skips news_shock and
        external_shock. regimes: a regime feed or `derive_regimes` output; None derives them.
    patterns: `verify_patterns` output (per insight x claimed pattern) or `detect_patterns`
        output; None re-detects on the candles.
    threshold: the calibrated confidence at which a cause counts.

    Returns one row per (audit, cause that counts), ranked 1.., or one unknown row: insight_id,
    horizon, cause, confidence (0-100, one decimal), rank, summary, evidence (JSON text, sorted
    keys, with ``skipped``). ``attrs``: quarantine (bad news rows), notes (incl. calibration).
    """
    p = params or RcaParams()
    cal = calibration or CALIBRATION
    scores = rca_scores(audits, insights, candles, news, regimes, patterns=patterns, params=p)
    ranked, best, best_c, conf = _rank(scores, threshold, cal)
    summary, evidence = _render(scores, ranked, best, best_c, conf, p)
    rows = ranked["row"].to_numpy()
    out = _frame({
        "insight_id": scores["insight_id"].to_numpy(dtype=object)[rows],
        "horizon": scores["horizon"].to_numpy(dtype=object)[rows],
        "cause": ranked["cause"].to_numpy(dtype=object),
        "confidence": np.round(ranked["confidence"].to_numpy(dtype=float), 1),
        "rank": ranked["rank"].to_numpy(dtype=np.int64),
        "summary": summary,
        "evidence": evidence,
    })
    out.attrs["quarantine"] = scores.attrs.get("quarantine", Quarantine())
    out.attrs["notes"] = scores.attrs.get("notes", ()) + (f"calibration: {cal.source}",)
    return out
