"""Rule suggestions, each with counterfactual evidence from finished audits.

Three searches over finished audits (``replay_outcome`` succeeded/failed of one horizon, so
filtered insights count with what would have happened):

1. ``min_confidence``: raise the minimum confidence for a symbol x timeframe to X (X scanned
   over a grid); removes the scope's insights with confidence < X.
2. ``news_window``: skip N minutes before high-impact news (N in ``news_windows``); removes
   insights created 0..N minutes before the next event. With ``news`` given, per currency
   ("USD news", applying to every symbol that has USD); otherwise per symbol from the features'
   minutes_to_next_news (either currency of the symbol).
3. ``disable_detector``: stop publishing insights that claim pattern P on a symbol during a
   session (Asia 00-08, London 07-16, New York 12-21, overlap 12-16 UTC).

Honesty: each candidate is chosen on a *discovery* period (created and exited before
``validation_from``; default earliest + 70% of the span) and then re-counted on the later
*validation* period (created at or after it). On discovery a candidate must remove at least
``min_support`` insights, have a positive net benefit, and remove failures at a significantly
higher rate than it keeps them (one-sided hypergeometric test, Bonferroni-corrected over every
candidate tried); per scope the best such threshold/window (largest net benefit) goes to
validation. It is shown only when it also holds there: it removes at least
``max(5, min_support // 4)`` insights, removes a larger share of the false positives than of the
successes, has a positive net benefit, and its validation p-value is < ``alpha``.

Figures per period: fp_removed of fp_total false positives (failed audits in the scope), tp_lost
of tp_total successes. net_benefit: the P&L avoided, -sum(pnl_pct) of the removed insights, in
percent-of-entry points (a removed loser adds its loss, a removed winner subtracts its gain).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from autopsy_assets.domain.features import (
    PATTERN_FLAGS,
    SESSIONS,
    _claims,
    _finished_outcome,
    _utc_times,
)

SUGGESTION_COLUMNS = (
    "kind", "scope", "params", "suggestion",
    "fp_removed_discovery", "fp_total_discovery", "tp_lost_discovery", "tp_total_discovery",
    "fp_removed_validation", "fp_total_validation", "tp_lost_validation", "tp_total_validation",
    "net_benefit_discovery", "net_benefit_validation", "net_benefit",
    "p_value_discovery", "p_value_validation", "held", "rejected_reason", "evidence",
)
CONFIDENCE_GRID = tuple(range(30, 95, 5))
NEWS_WINDOWS = (15, 30, 60, 120)
_SESSION_TEXT = {"asia": "the Asia session (00-08 UTC)", "london": "the London session "
                 "(07-16 UTC)", "new_york": "the New York session (12-21 UTC)",
                 "overlap": "the London/New York overlap (12-16 UTC)"}


def _table(insights: pd.DataFrame, audits: pd.DataFrame, features: pd.DataFrame | None,
           horizon: str | None) -> pd.DataFrame:
    a = audits
    if horizon is not None and "horizon" in a.columns:
        a = a[a["horizon"].astype(str).str.upper() == str(horizon).upper()]
    if "is_current" in a.columns:
        a = a[a["is_current"].astype(bool)]
    oc = _finished_outcome(a)
    a = a.assign(_oc=oc.to_numpy())
    a = a[a["_oc"].isin(["succeeded", "failed"])].drop_duplicates("insight_id", keep="last")
    cols = [c for c in ("insight_id", "created_at", "symbol", "timeframe", "confidence",
                        "patterns") if c in insights.columns]
    ins = insights[cols].drop_duplicates("insight_id", keep="last")
    if features is not None and "minutes_to_next_news" in features.columns:
        if "insight_id" in features.columns:
            fn = features[["insight_id", "minutes_to_next_news"]].drop_duplicates(
                "insight_id", keep="last")
            ins = ins.merge(fn, on="insight_id", how="left")
        else:
            ins = ins.assign(minutes_to_next_news=features["minutes_to_next_news"].reindex(
                insights.index).loc[ins.index].to_numpy())
    keep = [c for c in ("insight_id", "_oc", "exit_time", "pnl_pct") if c in a.columns]
    t = a[keep].merge(ins, on="insight_id", how="inner")
    t["created_at"] = _utc_times(t["created_at"], "created_at").to_numpy()
    t["exit_time"] = _utc_times(t["exit_time"], "exit_time").to_numpy()
    t["failed"] = (t["_oc"] == "failed").to_numpy()
    t["pnl"] = (pd.to_numeric(t["pnl_pct"], errors="coerce").fillna(0.0)
                if "pnl_pct" in t.columns else 0.0)
    t["hour"] = t["created_at"].dt.hour
    return t.reset_index(drop=True)


def _counts(failed: np.ndarray, pnl: np.ndarray, scope: np.ndarray, remove: np.ndarray) -> dict:
    r = scope & remove
    return {"fp_removed": int((r & failed).sum()), "fp_total": int((scope & failed).sum()),
            "tp_lost": int((r & ~failed).sum()), "tp_total": int((scope & ~failed).sum()),
            "net_benefit": float(-pnl[r].sum())}


def _p_value(c: dict) -> float:
    """P(at least fp_removed failures among the removed | the scope's failure share), one-sided
    hypergeometric (Fisher's exact test)."""
    n_scope = c["fp_total"] + c["tp_total"]
    n_rem = c["fp_removed"] + c["tp_lost"]
    if n_rem == 0 or n_scope == 0:
        return 1.0
    return float(hypergeom.sf(c["fp_removed"] - 1, n_scope, c["fp_total"], n_rem))


def _candidates(t: pd.DataFrame, news: pd.DataFrame | None, grid, windows):
    """Yield (kind, scope text, params, scope mask, [(param value, remove mask), ...])."""
    sym = t["symbol"].astype(str).to_numpy()
    if "confidence" in t.columns and "timeframe" in t.columns:
        conf = pd.to_numeric(t["confidence"], errors="coerce").to_numpy(dtype=float)
        tf = t["timeframe"].astype(str).to_numpy()
        for (s, f) in sorted(set(zip(sym, tf))):
            scope = (sym == s) & (tf == f)
            yield ("min_confidence", f"{s} {f}", {"symbol": s, "timeframe": f}, scope,
                   [(x, conf < x) for x in grid])
    if news is not None:
        from autopsy_assets.domain.news import (
            nearest_high_impact,
            parse_currencies,
            symbol_currencies,
        )
        parsed = news["currencies"].map(parse_currencies)
        ccys = sorted({c for v in parsed for c in v})
        sym_ccy = {s: set(symbol_currencies(s)) for s in pd.unique(sym)}
        created = pd.Series(t["created_at"].to_numpy())
        for c in ccys:
            has = np.array([c in sym_ccy[s] for s in sym], dtype=bool)
            if not has.any():
                continue
            only = news[np.array([c in v for v in parsed], dtype=bool)]
            near = nearest_high_impact(only, pd.Series(sym), created)
            mins = near["minutes_to_next"].to_numpy(dtype=float)
            yield ("news_window", f"{c} news", {"currency": c}, has,
                   [(w, (mins >= 0) & (mins <= w)) for w in windows])
    elif "minutes_to_next_news" in t.columns:
        mins = t["minutes_to_next_news"].to_numpy(dtype=float)
        for s in sorted(pd.unique(sym)):
            scope = sym == s
            yield ("news_window", f"{s} news", {"symbol": s}, scope,
                   [(w, (mins >= 0) & (mins <= w)) for w in windows])
    if "patterns" in t.columns:
        claims = _claims(t["patterns"])
        hour = t["hour"].to_numpy()
        for s in sorted(pd.unique(sym)):
            scope = sym == s
            for j, p in enumerate(PATTERN_FLAGS):
                for sess, (a, b) in SESSIONS.items():
                    rem = (claims[:, j] == 1) & (hour >= a) & (hour < b)
                    yield ("disable_detector", f"{p} on {s} in {sess}",
                           {"symbol": s, "pattern": p, "session": sess}, scope, [(None, rem)])


def _sentence(kind: str, params: dict, value, v: dict, d: dict, vf: pd.Timestamp) -> str:
    figures = (f"would have removed {v['fp_removed']} of the last {v['fp_total']} false "
               f"positives and {v['tp_lost']} of {v['tp_total']} successes (validation, from "
               f"{vf:%Y-%m-%d}; discovery: {d['fp_removed']} of {d['fp_total']} and "
               f"{d['tp_lost']} of {d['tp_total']})")
    if kind == "min_confidence":
        head = (f"Raise min confidence for {params['symbol']} {params['timeframe']} to "
                f"{value:g}")
    elif kind == "news_window":
        what = (f"high-impact {params['currency']} news" if "currency" in params
                else f"high-impact news for {params['symbol']}")
        head = f"Skip {value:g} min before {what}"
    else:
        head = (f"Disable the {params['pattern']} detector for {params['symbol']} during "
                f"{_SESSION_TEXT[params['session']]}")
    return f"{head}: {figures}"


def suggest_rules(insights: pd.DataFrame, audits: pd.DataFrame,
                  features: pd.DataFrame | None = None, validation_from=None,
                  min_support: int = 20, *, horizon: str | None = "24H",
                  news: pd.DataFrame | None = None, alpha: float = 0.05,
                  confidence_grid=CONFIDENCE_GRID, news_windows=NEWS_WINDOWS,
                  include_rejected: bool = False) -> pd.DataFrame:
    """Suggestions that held on the validation period, best net benefit first.

    insights: insight_id, created_at, symbol, timeframe, confidence, patterns. audits:
    insight_id, exit_time, outcome/replay_outcome, pnl_pct [, horizon]. features: with
    minutes_to_next_news (an insight_id column, or the insights' index) for news windows per
    symbol; ``news`` (a calendar) gives per-currency windows instead. ``horizon`` None uses the
    audits as given. Columns SUGGESTION_COLUMNS; params and evidence are JSON strings.
    ``include_rejected`` also returns the candidates that went to validation and failed there
    (held False, with the reason).
    """
    for c in ("insight_id", "created_at", "symbol"):
        if c not in insights.columns:
            raise ValueError(f"insights lack required column {c}")
    for c in ("insight_id", "exit_time"):
        if c not in audits.columns:
            raise ValueError(f"audits lack required column {c}")
    t = _table(insights, audits, features, horizon)
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in SUGGESTION_COLUMNS})
    if t.empty:
        return empty
    created = t["created_at"]
    if validation_from is None:
        lo, hi = created.min(), created.max()
        vf = lo + (hi - lo) * 0.7
    else:
        vf = pd.Timestamp(validation_from)
        if vf.tzinfo is None:
            raise ValueError("validation_from is timezone-naive: give a UTC time")
        vf = vf.tz_convert("UTC")
    disc = ((created < vf) & (t["exit_time"] < vf)).to_numpy()
    val = (created >= vf).to_numpy()
    failed = t["failed"].to_numpy()
    pnl = t["pnl"].to_numpy(dtype=float)
    min_val = max(5, min_support // 4)

    # pass 1, discovery: every candidate value with enough support
    tried = []
    for kind, scope_txt, params, scope, options in _candidates(t, news, confidence_grid,
                                                               news_windows):
        sd = scope & disc
        if not sd.any():
            continue
        for value, remove in options:
            d = _counts(failed, pnl, sd, remove)
            if d["fp_removed"] + d["tp_lost"] < min_support:
                continue
            if d["fp_removed"] + d["tp_lost"] == d["fp_total"] + d["tp_total"]:
                continue                      # removes the whole scope: not a filter
            tried.append((kind, scope_txt, params, scope, value, remove, d))
    n_tests = max(len(tried), 1)
    best: dict[tuple, tuple] = {}
    for item in tried:
        kind, scope_txt, params, scope, value, remove, d = item
        p = _p_value(d)
        if p >= alpha / n_tests or d["net_benefit"] <= 0:
            continue
        key = (kind, scope_txt)
        if key not in best or d["net_benefit"] > best[key][-1]["net_benefit"]:
            best[key] = (*item[:-1], p, d)

    # pass 2, validation
    rows = []
    for (kind, scope_txt), (_, _, params, scope, value, remove, p_d, d) in sorted(best.items()):
        v = _counts(failed, pnl, scope & val, remove)
        p_v = _p_value(v)
        n_rem = v["fp_removed"] + v["tp_lost"]
        fp_share = v["fp_removed"] / v["fp_total"] if v["fp_total"] else 0.0
        tp_share = v["tp_lost"] / v["tp_total"] if v["tp_total"] else 0.0
        reason = ""
        if n_rem < min_val:
            reason = f"removes only {n_rem} validation insights (needs {min_val})"
        elif fp_share <= tp_share:
            reason = (f"removes {100 * fp_share:.0f}% of validation false positives but "
                      f"{100 * tp_share:.0f}% of successes")
        elif v["net_benefit"] <= 0:
            reason = f"net benefit on validation is {v['net_benefit']:.2f} (not positive)"
        elif p_v >= alpha:
            reason = f"not significant on validation (p = {p_v:.3f} >= {alpha:g})"
        if reason and not include_rejected:
            continue
        full = dict(params)
        if kind == "min_confidence":
            full["min_confidence"] = value
        elif kind == "news_window":
            full["minutes_before"] = value
        removed_ids = t.loc[scope & val & remove, "insight_id"].astype(str).tolist()
        evidence = {
            "validation_from": vf.isoformat(),
            "discovery": {**d, "p_value": p_d, "rows": int((scope & disc).sum())},
            "validation": {**v, "p_value": p_v, "rows": int((scope & val).sum())},
            "tests": n_tests, "alpha": alpha, "min_support": min_support,
            "removed_validation_ids": removed_ids[:50],
        }
        if kind == "min_confidence":
            evidence["scanned"] = list(confidence_grid)
        elif kind == "news_window":
            evidence["scanned"] = list(news_windows)
        rows.append({
            "kind": kind, "scope": scope_txt, "params": json.dumps(full, sort_keys=True),
            "suggestion": _sentence(kind, params, value, v, d, vf),
            **{f"{k}_discovery": d[k] for k in ("fp_removed", "fp_total", "tp_lost",
                                                 "tp_total")},
            **{f"{k}_validation": v[k] for k in ("fp_removed", "fp_total", "tp_lost",
                                                  "tp_total")},
            "net_benefit_discovery": d["net_benefit"], "net_benefit_validation": v["net_benefit"],
            "net_benefit": v["net_benefit"], "p_value_discovery": p_d, "p_value_validation": p_v,
            "held": not reason, "rejected_reason": reason,
            "evidence": json.dumps(evidence, sort_keys=True, default=float),
        })
    if not rows:
        return empty
    out = pd.DataFrame(rows, columns=list(SUGGESTION_COLUMNS))
    return out.sort_values(["held", "net_benefit"], ascending=[False, False],
                           kind="stable").reset_index(drop=True)
