"""autopsy's public Python API: plain pandas DataFrames in, DataFrames out (DESIGN.md section 3).

Every function validates what it is given, leaves bad rows out, processes every good row and
returns the rejected rows in ``result.attrs["quarantine"]`` (a `Quarantine`: an immutable sequence
of dicts with source, row_id and reason). It raises only when a required column is missing or
nothing valid is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from autopsy_assets.domain import labeling
from autopsy_assets.domain import rules as rules_mod
from autopsy_assets.domain.schemas import AUDIT_COLUMNS, HORIZONS
from autopsy_assets.domain.validation import (
    InputError,
    Quarantine,
    validate_candle_runs,
    validate_candles,
    validate_insights,
    validate_insights_coded,
)

__all__ = [
    "label_outcomes",
    "replay_audits",
    "detect_patterns",
    "verify_insight_patterns",
    "analyze_failures",
    "replay_window",
    "build_dataset",
    "train_meta_model",
    "score_insights",
    "explain_insights",
    "strategy_health",
    "InputError",
    "Quarantine",
]


def label_outcomes(
    insights: pd.DataFrame,
    candles: pd.DataFrame,
    horizons: Sequence[str] = ("1H", "4H", "24H", "7D"),
    rules: pd.DataFrame | Iterable[dict] | None = None,
    now: pd.Timestamp | str | None = None,
    instruments_path: str | None = None,
) -> pd.DataFrame:
    """Label every insight x horizon: succeeded, failed, neutral, filtered_out, pending or
    needs_review, with exit, excursions and a reproducible snapshot identity.

    insights: required insight_id, created_at (tz-aware, or ISO strings with an offset), symbol,
        side (long|short), entry_price. Optional, with defaults: timeframe (the walked candles'),
        stop_loss / take_profit (from the winning rule), strategy (''), patterns (''), ai_score,
        confidence, truth_index (NaN), status ('published'; 'filtered' -> filtered_out with
        replay_outcome), user_id (''), user_acted (fill_price present), fill_price (NaN =
        not acted), filled_at (NaT).
    candles: required symbol, ts (tz-aware UTC bar open), open, high, low, close (bid prices).
        Optional timeframe (inferred per symbol from the most common spacing), volume, spread
        (price units; shorts fill on bid + spread). Several timeframes of one symbol may be given:
        each window walks the finest one that covers it.
    horizons: any of 1H, 4H, 24H, 7D.
    rules: labeling rules (DataFrame or dicts); None = the packaged YAML.
    now: candles ending after it are ignored; None = the latest candle end of each symbol (never
        the wall clock, so a replay is deterministic).

    Returns one row per valid insight x horizon with schemas.AUDIT_COLUMNS.
    """
    horizons = tuple(str(h).upper() for h in horizons)
    bad_h = [h for h in horizons if h not in HORIZONS]
    if bad_h:
        raise InputError(f"unknown horizon(s) {', '.join(bad_h)}: expected {', '.join(HORIZONS)}")
    if now is not None:
        now = pd.Timestamp(now)
        if now.tzinfo is None:
            raise InputError("now is timezone-naive; give a UTC timestamp")
    rule_frame = rules_mod.load_rules_yaml() if rules is None else rules_mod.normalise_rules(rules)
    # the insights first, then the candles, on this thread: both checks hold the GIL for their
    # pandas glue, so a worker checking the candles beside them overlapped little and cost
    # more in GIL handoffs than it saved (A/B, 41 rounds: 0.93-0.97 of the time without it).
    # Laying out the candles starts their block hashing in a worker (it needs no GIL), which
    # runs while the insights' rows are prepared here.
    clean_insights, q_ins, codes = validate_insights_coded(insights, instruments_path, False)
    clean_candles, q_can, notes, book = _candle_book(candles, instruments_path)
    n_clean = len(clean_insights["created_at"])
    rows = (
        labeling.InsightRows(clean_insights, horizons, rule_frame, instruments_path, codes)
        if n_clean
        else None
    )
    quarantine = Quarantine(q_ins) + q_can
    if not n_clean and len(insights):
        raise InputError(
            f"no valid insight left: all {len(insights)} rows were rejected "
            f"(first: {q_ins[0]['row_id']}: {q_ins[0]['reason']})"
        )
    if clean_candles.empty and len(candles):
        raise InputError(
            f"no valid candle left: all {len(candles)} rows were rejected "
            f"(first: {q_can[0]['row_id']}: {q_can[0]['reason']})"
        )
    if not n_clean:
        result = pd.DataFrame({c: pd.Series(dtype=object) for c in AUDIT_COLUMNS})
    else:
        result = labeling.label(
            clean_insights, clean_candles, horizons, rule_frame, now, instruments_path, book,
            codes, rows,
        )
    result.attrs["quarantine"] = quarantine
    result.attrs["notes"] = tuple(notes)
    return result


def _candle_book(candles: pd.DataFrame, instruments_path: str | None):
    """(clean candles, quarantine, notes, CandleBook): what label_outcomes needs of the
    candles, from the candles alone (a CandleBook only when some candle is clean)."""
    clean, quarantine, notes, runs = validate_candle_runs(candles, instruments_path)
    book = labeling.CandleBook(clean, runs, instruments_path, hash_now=True) if len(clean) else None
    return clean, quarantine, notes, book


def replay_audits(audits: pd.DataFrame, insights: pd.DataFrame, read_blocks) -> pd.DataFrame:
    """Re-label ``audits`` from the candle blocks they recorded and compare them, column by column.

    read_blocks(hashes) returns the candles of those content-addressed blocks (the audit store's
    `read_blocks`). Each audit is replayed with its own rule snapshot and `now` at its window end,
    so nothing but what the audit recorded is used. Returns one row per audit: insight_id,
    horizon, outcome, replayed_outcome, snapshot_hash, replayed_hash, differing (the audit
    columns whose values differ, '' when byte-identical) and match (bool).
    """
    import json

    by_id = insights.set_index("insight_id", drop=False)
    rows = []
    for a in audits.to_dict("records"):
        hashes = [h for h in str(a["candle_blocks"]).split(",") if h]
        replayed: dict = {}
        if hashes and a["insight_id"] in by_id.index:
            ins = by_id.loc[[a["insight_id"]]].reset_index(drop=True)
            out = label_outcomes(ins, read_blocks(hashes), horizons=(a["horizon"],),
                                 rules=[json.loads(a["rule_snapshot"])],
                                 now=pd.Timestamp(a["window_end"]))
            replayed = out.iloc[0].to_dict() if len(out) else {}
        differing = [c for c in AUDIT_COLUMNS if not _same_value(a.get(c), replayed.get(c))]
        rows.append({"insight_id": a["insight_id"], "horizon": a["horizon"],
                     "outcome": a["outcome"], "replayed_outcome": replayed.get("outcome", ""),
                     "snapshot_hash": a["snapshot_hash"],
                     "replayed_hash": replayed.get("snapshot_hash", ""),
                     "differing": ",".join(differing), "match": not differing})
    return pd.DataFrame(rows, columns=["insight_id", "horizon", "outcome", "replayed_outcome",
                                       "snapshot_hash", "replayed_hash", "differing", "match"])


def _same_value(a, b) -> bool:
    """Exact equality where two missing values (None, NaN, NaT) count as equal."""
    a_missing = a is None or (not isinstance(a, str) and bool(pd.isna(a)))
    b_missing = b is None or (not isinstance(b, str) and bool(pd.isna(b)))
    if a_missing or b_missing:
        return a_missing and b_missing
    return bool(a == b)


def detect_patterns(
    candles: pd.DataFrame, swing_length: int = 5, breakout_lookback: int = 20, **kwargs
) -> pd.DataFrame:
    """Every BOS, CHOCH, FVG, OB and BREAKOUT in ``candles``, stamped at the bar that confirms it.

    One row per pattern: symbol, timeframe, kind, direction (bullish|bearish), ts (the confirming
    bar), origin_ts (the bar it refers to), top, bottom, filled_ts (FVG fill / OB mitigation, NaT
    while open). Detection is causal: appending candles never changes an earlier detection.
    Bad candles are left out (``attrs["quarantine"]``).
    """
    from autopsy_assets.domain import patterns

    clean, quarantine, notes = validate_candles(candles)
    if clean.empty and len(candles):
        raise InputError(f"no valid candle left: all {len(candles)} rows were rejected")
    out = patterns.detect_patterns(
        clean, swing_length=swing_length, breakout_lookback=breakout_lookback, **kwargs
    )
    out.attrs["quarantine"] = quarantine
    out.attrs["notes"] = tuple(notes)
    return out


def candles_for_timeframe(candles: pd.DataFrame, symbol: str, timeframe: str) -> pd.DataFrame:
    """Clean candles of one symbol at ``timeframe``, resampled from finer ones when absent."""
    from autopsy_assets.data.market import resample

    own = candles[(candles["symbol"] == symbol) & (candles["timeframe"] == timeframe)]
    if len(own):
        return own
    finer = candles[candles["symbol"] == symbol]
    try:
        return resample(finer, timeframe) if len(finer) else finer
    except ValueError:  # nothing finer divides the timeframe
        return finer.iloc[0:0]


def verify_insight_patterns(
    insights: pd.DataFrame, candles: pd.DataFrame, lookback_bars: int = 20
) -> pd.DataFrame:
    """Re-verify every pattern each insight claims, on the candles that existed at its
    created_at, in its direction and on its own timeframe (resampled from finer candles when
    the timeframe itself is absent).

    Returns one row per (insight_id, claimed pattern): insight_id, pattern, verified, evidence.
    Insights without a timeframe use the finest candles of their symbol.
    """
    from autopsy_assets.domain import patterns

    clean_ins, q_ins = validate_insights(insights)
    clean_candles, q_can, _ = validate_candles(candles)
    claims = clean_ins[
        clean_ins["patterns"].astype(str).str.strip().ne("") & clean_ins["patterns"].notna()
    ]
    parts = []
    for (symbol, tf), group in claims.groupby(["symbol", "timeframe"], sort=True):
        if not tf:
            tfs = clean_candles.loc[clean_candles["symbol"] == symbol, "timeframe"]
            from autopsy_assets.domain.schemas import TIMEFRAMES

            tf = min(tfs.unique(), key=TIMEFRAMES.get) if len(tfs) else ""
        bars = candles_for_timeframe(clean_candles, symbol, tf) if tf else clean_candles.iloc[0:0]
        if bars.empty:
            parts.append(
                patterns.verify_patterns(
                    group, bars.assign(timeframe=tf or "1h"), lookback_bars, bar_length=tf or "1h"
                )
            )
            continue
        parts.append(patterns.verify_patterns(group, bars, lookback_bars))
    out = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["insight_id", "pattern", "verified", "evidence"])
    )
    out.attrs["quarantine"] = Quarantine(q_ins) + q_can
    return out


def analyze_failures(
    audits: pd.DataFrame,
    insights: pd.DataFrame,
    candles: pd.DataFrame,
    news: pd.DataFrame | None = None,
    regimes: pd.DataFrame | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Ranked root causes of every failed or neutral audit (DESIGN.md section 2, "RCA causes").

    One row per (insight_id, horizon, cause): confidence (0-100, calibrated so that rank-1
    causes at confidence c are right about c% of the time), rank (1 = primary), summary (one
    sentence with the numbers) and evidence (JSON; `skipped` names the heuristics that had no
    source, e.g. no news). Missing news or regimes degrade to the other heuristics; regimes are
    derived from the candles when not given. Bad insight and candle rows are left out
    (``attrs["quarantine"]``).
    """
    from autopsy_assets.domain import rca

    clean_ins, q_ins = validate_insights(insights)
    clean_candles, q_can, _ = validate_candles(candles)
    out = rca.analyze_failures(
        audits, clean_ins, clean_candles, news=news, regimes=regimes, **kwargs
    )
    out.attrs["quarantine"] = Quarantine(q_ins) + q_can
    return out


def replay_window(audit: dict | pd.Series, read_blocks, max_points: int = 500) -> dict:
    """What an audit saw, re-read from its content-addressed candle blocks (no candle source).

    Returns a dict: ``candles`` (the bars inside the audit's window, up to the bar it read last),
    ``aggregate`` (the horizon's OHLCV as one bar: open, high, low, close, volume, bars, first and
    last bar time) and ``path`` (ts and close, thinned to at most ``max_points`` points for a
    chart, always keeping the first, the last and the extreme bars).
    """
    audit = pd.Series(audit)
    hashes = [h for h in str(audit["candle_blocks"]).split(",") if h]
    empty = {
        "candles": pd.DataFrame(),
        "aggregate": {},
        "path": pd.DataFrame(columns=["ts", "close"]),
    }
    if not hashes:
        return empty
    candles = read_blocks(hashes)
    if "timeframe" in candles and audit.get("candle_timeframe"):
        candles = candles[candles["timeframe"] == audit["candle_timeframe"]]
    start, end = pd.Timestamp(audit["window_start"]), pd.Timestamp(audit["window_end"])
    until = audit.get("candles_until")
    until = end if until is None or pd.isna(until) else min(pd.Timestamp(until), end)
    from autopsy_assets.domain.schemas import TIMEFRAMES

    bar = pd.Timedelta(minutes=TIMEFRAMES.get(str(audit.get("candle_timeframe")), 1))
    window = candles[(candles["ts"] >= start) & (candles["ts"] + bar <= until)].reset_index(
        drop=True
    )
    if window.empty:
        return empty
    aggregate = {
        "open": float(window["open"].iloc[0]),
        "high": float(window["high"].max()),
        "low": float(window["low"].min()),
        "close": float(window["close"].iloc[-1]),
        "volume": float(window["volume"].sum(min_count=1)) if "volume" in window else float("nan"),
        "bars": int(len(window)),
        "first_bar": window["ts"].iloc[0],
        "last_bar": window["ts"].iloc[-1],
    }
    keep = set(np.linspace(0, len(window) - 1, min(max_points, len(window))).round().astype(int))
    keep |= {int(window["high"].idxmax()), int(window["low"].idxmin())}
    path = window.loc[sorted(keep), ["ts", "close"]].reset_index(drop=True)
    return {"candles": window, "aggregate": aggregate, "path": path}


def build_dataset(
    insights: pd.DataFrame,
    audits: pd.DataFrame,
    candles: pd.DataFrame | None = None,
    news: pd.DataFrame | None = None,
    regimes: pd.DataFrame | None = None,
    horizon: str = "24H",
) -> pd.DataFrame:
    """One row per insight with a succeeded or failed audit for ``horizon``: insight_id,
    created_at, symbol, strategy, the feature columns (``attrs["feature_names"]``), label
    (1 succeeded, 0 failed), and exit_time, user_id, pnl_pct (carried, never features).
    Every feature is known at created_at; missing optional sources leave theirs NaN.
    Bad insight and candle rows are left out (``attrs["quarantine"]``)."""
    from autopsy_assets.domain import features

    clean_ins, q_ins = validate_insights(insights)
    quarantine = Quarantine(q_ins)
    if candles is not None:
        candles, q_can, _ = validate_candles(candles)
        quarantine = quarantine + q_can
    out = features.build_dataset(
        clean_ins, audits, candles=candles, news=news, regimes=regimes, horizon=str(horizon).upper()
    )
    out.attrs["quarantine"] = quarantine
    return out


def train_meta_model(dataset: pd.DataFrame, validation_from=None, kind: str = "hgb", **kwargs):
    """A fitted meta-model (gradient boosting by default, ``kind="rf"`` for a bounded random
    forest) trained on rows created before ``validation_from`` whose label was known by then
    (default: the last 30% of the time range is held out) and evaluated on the rest.
    It exposes ``feature_names`` and ``metrics`` (overall and per symbol: precision, recall,
    false-positive rate, expectancy of the kept insights, and fp_cut with its bootstrap bounds)."""
    from autopsy_assets.domain import meta_model

    return meta_model.train_meta_model(
        dataset, validation_from=validation_from, kind=kind, **kwargs
    )


def score_insights(dataset: pd.DataFrame, model) -> pd.Series:
    """Success probabilities aligned with ``dataset``; ``model`` is a fitted meta-model or a
    ``models:/autopsy-meta-<strategy>@champion`` URI."""
    from autopsy_assets.domain import meta_model

    return meta_model.score_insights(dataset, model)


def explain_insights(dataset: pd.DataFrame, model, top_n: int = 5) -> pd.DataFrame:
    """SHAP per insight: base value, one contribution per feature, the model output they add up
    to (checked to 1e-6), the top features and a one-line summary a trader reads."""
    from autopsy_assets.domain import meta_model

    if isinstance(model, str):
        from autopsy_assets.registry import load_meta_model

        model = load_meta_model(model)
    return meta_model.explain_insights(dataset, model, top_n=top_n)


def strategy_health(
    audits: pd.DataFrame, causes: pd.DataFrame | None = None, horizon: str | None = None
) -> pd.DataFrame:
    """KPI table per strategy and per strategy x symbol: success and false-positive rates,
    expectancy, drawdown, duration, counts per outcome and, with ``causes``, the share of
    failures per primary cause."""
    from autopsy_assets.domain import health

    return health.strategy_health(audits, causes, horizon=horizon)
