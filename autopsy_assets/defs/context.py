"""Context sources for root-cause analysis: the news calendar and market regimes."""

import dagster as dg
import pandas as pd

from autopsy_assets.api import candles_for_timeframe
from autopsy_assets.defs.assets import DAILY_IN_STORE, _quarantine, _window
from autopsy_assets.defs.metadata import md_table
from autopsy_assets.domain.news import normalise_news
from autopsy_assets.domain.regimes import derive_regimes, normalise_regime_feed
from autopsy_assets.resources import AuditStoreResource, NewsSource, RegimeSource

# derive_regimes needs trailing history before the first bar it labels
REGIME_WARMUP = pd.Timedelta(days=10)


@dg.asset(
    **DAILY_IN_STORE,
    group_name="context",
)
def news_events(
    context: dg.AssetExecutionContext, news_source: NewsSource, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """Economic calendar events by day; bad rows (naive times, unknown impact, no currency) go to
    quarantine."""
    start, end = _window(context)
    raw = news_source.load(start, end)
    store = audit_store.get()
    if raw.empty:
        return dg.MaterializeResult(metadata={"events": 0})
    clean, quarantine = normalise_news(raw)
    n_q = _quarantine(store, quarantine, context)
    stored = store.put_news(clean) if len(clean) else 0
    high = clean[clean["impact"] == "high"]
    return dg.MaterializeResult(
        metadata={
            "events": len(clean),
            "stored": stored,
            "high_impact": len(high),
            "quarantined": n_q,
            "sample": dg.MetadataValue.md(
                md_table(high[["ts", "impact", "title"]].assign(ts=high["ts"].astype(str)).head(10))
            ),
        }
    )


@dg.asset(
    **DAILY_IN_STORE,
    group_name="context",
    deps=[dg.AssetDep("candles")],
)
def market_regimes(
    context: dg.AssetExecutionContext, regime_source: RegimeSource, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """Market regime per symbol and bar (trending_up, trending_down, ranging, volatile) with a
    confidence: derived causally from the candles, or read from a regime feed."""
    start, end = _window(context)
    store = audit_store.get()
    if regime_source.kind == "csv":
        clean, quarantine = normalise_regime_feed(regime_source.load_feed(start, end))
        _quarantine(store, quarantine, context)
        regimes = clean.assign(source="feed")
    else:
        candles = store.read_candles(start - REGIME_WARMUP, end)
        parts = [
            candles_for_timeframe(candles, sym, regime_source.timeframe)
            for sym in sorted(candles["symbol"].unique())
        ]
        parts = [p for p in parts if len(p)]
        if not parts:
            return dg.MaterializeResult(metadata={"rows": 0, "note": "no candles in range"})
        regimes = derive_regimes(pd.concat(parts, ignore_index=True))
        regimes = regimes[
            (regimes["ts"] >= start) & (regimes["ts"] < end) & regimes["regime"].notna()
        ].assign(source="derived")
    stored = store.put_regimes(regimes) if len(regimes) else 0
    share = (
        (regimes.groupby(["symbol", "regime"]).size() / regimes.groupby("symbol").size())
        .rename("share")
        .reset_index()
        if len(regimes)
        else pd.DataFrame()
    )
    return dg.MaterializeResult(
        metadata={
            "rows": len(regimes),
            "stored": stored,
            "source": regime_source.kind,
            "share_by_symbol": dg.MetadataValue.md(md_table(share)),
        }
    )
