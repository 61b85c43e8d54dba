"""Root-cause analysis of every failed or neutral audit."""

import dagster as dg
import pandas as pd

from autopsy_assets import api
from autopsy_assets.defs.assets import DAILY_IN_STORE, _window
from autopsy_assets.defs.metadata import md_table
from autopsy_assets.defs.partitions import CANDLE_WINDOW, HORIZON_DAYS
from autopsy_assets.resources import AuditStoreResource

# trailing history the heuristics compare against (ATR, volume and volatility baselines,
# strategy fail rates)
RCA_LOOKBACK = pd.Timedelta(days=30)


@dg.asset(
    **DAILY_IN_STORE,
    group_name="rca",
    deps=[
        dg.AssetDep("labeled_audits"),
        dg.AssetDep("news_events", partition_mapping=CANDLE_WINDOW),
        dg.AssetDep("market_regimes", partition_mapping=CANDLE_WINDOW),
    ],
)
def rca_findings(
    context: dg.AssetExecutionContext, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """Ranked probable causes of each failed or neutral audit (rank 1 = primary), each with a
    calibrated confidence, a one-line summary and its evidence; stored in audit_rca."""
    start, end = _window(context)
    store = audit_store.get()
    audits = store.current_audits(start, end)
    failed = audits[
        audits["outcome"].isin(["failed", "neutral"])
        | audits["replay_outcome"].isin(["failed", "neutral"])
    ]
    if failed.empty:
        return dg.MaterializeResult(metadata={"analysed": 0, "findings": 0})
    symbols = sorted(failed["symbol"].unique())
    insights = store.read_insights(start - RCA_LOOKBACK, end)
    candles = store.read_candles(
        start - RCA_LOOKBACK, end + pd.Timedelta(days=HORIZON_DAYS), symbols=symbols
    )
    news = store.read_news(start - pd.Timedelta(days=1), end + pd.Timedelta(days=HORIZON_DAYS))
    regimes = store.read_regimes(
        start - RCA_LOOKBACK, end + pd.Timedelta(days=HORIZON_DAYS), symbols=symbols
    )
    history = store.current_audits(start - RCA_LOOKBACK, end)  # trailing fail rates
    findings = api.analyze_failures(
        history,
        insights,
        candles,
        news=news if len(news) else None,
        regimes=regimes if len(regimes) else None,
    )
    # the trailing history only informs the base rates: findings are this range's failures
    findings = findings.merge(failed[["insight_id", "horizon"]], on=["insight_id", "horizon"])
    written = store.replace_rca(findings, run_id=context.run.run_id) if len(findings) else 0
    primary = findings[findings["rank"] == 1]
    top = (
        primary.groupby("cause")
        .agg(audits=("insight_id", "size"), mean_confidence=("confidence", "mean"))
        .sort_values("audits", ascending=False)
        .reset_index()
    )
    return dg.MaterializeResult(
        metadata={
            "analysed": int(primary[["insight_id", "horizon"]].drop_duplicates().shape[0]),
            "findings": written,
            "top_causes": dg.MetadataValue.md(md_table(top)),
            "examples": dg.MetadataValue.md(
                md_table(
                    primary[["insight_id", "horizon", "cause", "confidence", "summary"]].head(10)
                )
            ),
        }
    )
