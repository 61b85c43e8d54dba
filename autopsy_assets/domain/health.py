"""Strategy health: the KPI table per strategy and per strategy x symbol (DESIGN.md section 3).

Definitions (outcomes as labeled, i.e. the insight as published; filtered insights are counted
apart, since nobody was shown them):

- n_audited: audit rows in the group (every outcome); n_<outcome> per outcome.
- success_rate: succeeded / (succeeded + failed); false_positive_rate: failed / (succeeded +
  failed) (DESIGN 2a), NaN when neither.
- expectancy: mean pnl_pct of resolved published audits (succeeded, failed, neutral);
  avg_drawdown: mean max_drawdown (%), avg_duration_minutes: mean duration_minutes, over the same.
- filter_hit_rate: share of filtered_out audits whose replay says they would have failed (was the
  filter right?), NaN without filtered rows.
- with ``causes`` (RCA rows: insight_id, [horizon,] cause, rank; rank 1 = primary): for each
  cause, cause_<name>_share = failed audits whose primary cause it is / failed audits;
  news_impact_ratio = the news_shock share, regime_drift_ratio = the regime_drift share;
  cause_unanalysed_share = failed audits with no RCA row.

Only current audit rows count (``is_current`` when present). Audits of several horizons are kept
apart: the table has one row per horizon x group.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from autopsy_assets.domain.schemas import OUTCOMES

CAUSES = ("model_error", "regime_drift", "news_shock", "liquidity_event", "detector_misid",
          "user_psychology", "volatility_spike", "spread_slippage", "false_positive",
          "external_shock", "unknown")
ALL = "*"

HEALTH_COLUMNS = ("level", "strategy", "symbol", "horizon", "n_audited",
                  *(f"n_{o}" for o in OUTCOMES), "success_rate", "false_positive_rate",
                  "expectancy", "avg_drawdown", "avg_duration_minutes", "filter_hit_rate")


def _primary_causes(causes: pd.DataFrame, by_horizon: bool) -> pd.DataFrame:
    for c in ("insight_id", "cause"):
        if c not in causes.columns:
            raise ValueError(f"causes lack required column {c}")
    keys = ["insight_id", "horizon"] if by_horizon else ["insight_id"]
    c = causes.copy()
    c["rank"] = pd.to_numeric(c["rank"], errors="coerce") if "rank" in c.columns else 1
    c = c.sort_values([*keys, "rank"], kind="stable").drop_duplicates(keys, keep="first")
    return c[[*keys, "cause"]].rename(columns={"cause": "_primary"})


def strategy_health(audits: pd.DataFrame, causes: pd.DataFrame | None = None, *,
                    horizon: str | None = None) -> pd.DataFrame:
    """KPI rows per strategy (level 'strategy', symbol '*') and per strategy x symbol (level
    'strategy_symbol'), per horizon; columns HEALTH_COLUMNS plus the cause shares when ``causes``
    is given. ``horizon`` keeps one horizon only."""
    for c in ("strategy", "symbol", "outcome"):
        if c not in audits.columns:
            raise ValueError(f"audits lack required column {c}")
    a = audits
    if "is_current" in a.columns:
        a = a[a["is_current"].astype(bool)]
    if "horizon" not in a.columns:
        a = a.assign(horizon="")
    if horizon is not None:
        a = a[a["horizon"].astype(str).str.upper() == str(horizon).upper()]
    a = a.copy()
    a["strategy"] = a["strategy"].astype("str").where(a["strategy"].notna(), "")
    a["symbol"] = a["symbol"].astype(str)
    a["horizon"] = a["horizon"].astype(str)
    oc = a["outcome"].astype(str)
    resolved = oc.isin(["succeeded", "failed", "neutral"])
    num = {c: pd.to_numeric(a[c], errors="coerce") if c in a.columns else np.nan
           for c in ("pnl_pct", "max_drawdown", "duration_minutes")}
    work = pd.DataFrame({
        "strategy": a["strategy"].to_numpy(), "symbol": a["symbol"].to_numpy(),
        "horizon": a["horizon"].to_numpy(),
        **{f"n_{o}": (oc == o).to_numpy().astype(np.int64) for o in OUTCOMES},
        "pnl": np.where(resolved, num["pnl_pct"], np.nan),
        "dd": np.where(resolved, num["max_drawdown"], np.nan),
        "dur": np.where(resolved, num["duration_minutes"], np.nan),
    })
    rep = (a["replay_outcome"].astype(str) if "replay_outcome" in a.columns
           else pd.Series("", index=a.index))
    work["filt_failed"] = ((oc == "filtered_out") & (rep == "failed")).to_numpy().astype(np.int64)
    work["filt_resolved"] = ((oc == "filtered_out") & rep.isin(["failed", "succeeded", "neutral"])
                             ).to_numpy().astype(np.int64)
    cause_cols: list[str] = []
    if causes is not None:
        by_h = "horizon" in causes.columns and (a["horizon"] != "").any()
        prim = _primary_causes(causes.assign(horizon=causes["horizon"].astype(str))
                               if by_h else causes, by_h)
        keys = ["insight_id", "horizon"] if by_h else ["insight_id"]
        if "insight_id" not in a.columns:
            raise ValueError("audits lack insight_id (needed to join causes)")
        joined = a[keys].astype(str).merge(prim.astype({k: str for k in keys}), on=keys,
                                           how="left")["_primary"].to_numpy()
        failed = (oc == "failed").to_numpy()
        names = list(CAUSES) + sorted(set(pd.unique(joined[failed & pd.notna(joined)]))
                                      - set(CAUSES))
        for name in names:
            col = f"cause_{name}_share"
            work[col] = (failed & (joined == name)).astype(np.int64)
            cause_cols.append(col)
        work["cause_unanalysed_share"] = (failed & pd.isna(joined)).astype(np.int64)
        cause_cols.append("cause_unanalysed_share")

    sums = {f"n_{o}": "sum" for o in OUTCOMES}
    sums.update({"filt_failed": "sum", "filt_resolved": "sum",
                 **{c: "sum" for c in cause_cols}})
    means = {"pnl": "mean", "dd": "mean", "dur": "mean"}

    def table(keys: list[str], level: str) -> pd.DataFrame:
        g = work.groupby(keys, sort=True)
        t = g.agg({**sums, **means}).reset_index()
        t.insert(0, "level", level)
        return t

    per_s = table(["horizon", "strategy"], "strategy")
    per_s["symbol"] = ALL
    per_ss = table(["horizon", "strategy", "symbol"], "strategy_symbol")
    t = pd.concat([per_s, per_ss], ignore_index=True)
    n_cols = [f"n_{o}" for o in OUTCOMES]
    t["n_audited"] = t[n_cols].sum(axis=1)
    decided = (t["n_succeeded"] + t["n_failed"]).to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t["success_rate"] = np.where(decided > 0, t["n_succeeded"] / decided, np.nan)
        t["false_positive_rate"] = np.where(decided > 0, t["n_failed"] / decided, np.nan)
        fr = t["filt_resolved"].to_numpy(dtype=float)
        t["filter_hit_rate"] = np.where(fr > 0, t["filt_failed"] / fr, np.nan)
        nf = t["n_failed"].to_numpy(dtype=float)
        for col in cause_cols:
            t[col] = np.where(nf > 0, t[col] / nf, np.nan)
    t = t.rename(columns={"pnl": "expectancy", "dd": "avg_drawdown", "dur": "avg_duration_minutes"})
    if cause_cols:
        t["news_impact_ratio"] = t["cause_news_shock_share"]
        t["regime_drift_ratio"] = t["cause_regime_drift_share"]
        cause_cols = ["news_impact_ratio", "regime_drift_ratio", *cause_cols]
    t = t.sort_values(["horizon", "strategy", "level", "symbol"], kind="stable")
    return t[[*HEALTH_COLUMNS, *cause_cols]].reset_index(drop=True)
