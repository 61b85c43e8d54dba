"""The asset graph: candles and insights in, labeled audits out.

Each asset is a thin shell: read from a resource, call the domain core, write through the audit
store, attach metadata. Every asset is daily-partitioned on the insight's created_at (candles on
their bar time) and materialises a whole partition range in one run (BackfillPolicy.single_run),
which is why they write through the store rather than return values to an IO manager.
"""

import time

import dagster as dg
import pandas as pd

from autopsy_assets import api
from autopsy_assets.defs.metadata import md_table, outcome_matrix, quarantine_summary
from autopsy_assets.defs.partitions import CANDLE_WINDOW, DAILY, HORIZON_DAYS
from autopsy_assets.domain.rules import load_rules_yaml
from autopsy_assets.domain.schemas import (
    HORIZONS,
    audits_schema,
    clean_candles_schema,
    clean_insights_schema,
)
from autopsy_assets.domain.validation import InputError, validate_candles, validate_insights
from autopsy_assets.resources import AuditStoreResource, CandleSource, InsightSource

SINGLE_RUN = dg.BackfillPolicy.single_run()
# what every daily asset shares: a partition range runs as one run and writes through the audit
# store (so it returns no value), one writer at a time
DAILY_IN_STORE = dict(
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    pool="audit_db",
    kinds={"pandas", "sqlalchemy"},
)
REPLAY_CHECK = "replay_is_deterministic"
REPLAY_SAMPLE = 25


class LabelingConfig(dg.Config):
    """Which audits a run produces (the CLI's filters). Empty lists mean all."""

    horizons: list[str] = list(HORIZONS)
    symbols: list[str] = []
    strategies: list[str] = []
    insight_ids: list[str] = []


def _window(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    tw = context.partition_time_window
    return pd.Timestamp(tw.start).tz_convert("UTC"), pd.Timestamp(tw.end).tz_convert("UTC")


def _quarantine(
    store, rows, context: dg.AssetExecutionContext, raw: pd.DataFrame | None = None
) -> int:
    """Store rejected rows with their reasons and, when ``raw`` is the frame they came from, the
    raw row itself as payload: nothing is lost, a fixed row can be loaded again."""

    def raw_row(i: int) -> dict:
        return {str(k): None if pd.isna(v) else str(v) for k, v in raw.iloc[i].items()}

    rows = [
        {
            "source": r["source"],
            "row_id": r["row_id"],
            "reason": r["reason"],
            "payload": raw_row(r["row"]) if raw is not None and "row" in r else None,
        }
        for r in rows
    ]
    if rows:
        store.quarantine(rows, run_id=context.run.run_id, partition_key=_range_label(context))
        context.log.warning(
            f"{len(rows)} row(s) quarantined; first: {rows[0]['row_id']}: {rows[0]['reason']}"
        )
    return len(rows)


def _range_label(context: dg.AssetExecutionContext) -> str:
    r = context.partition_key_range
    return r.start if r.start == r.end else f"{r.start}...{r.end}"


@dg.asset(
    **DAILY_IN_STORE,
    group_name="replay",
)
def candles(
    context: dg.AssetExecutionContext, candle_source: CandleSource, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """OHLCV candles (bid prices), validated and stored once in content-addressed daily blocks."""
    start, end = _window(context)
    raw = candle_source.load(start, end)
    store = audit_store.get()
    if raw.empty:
        return dg.MaterializeResult(metadata={"rows": 0, "note": "the source has no candles here"})
    try:
        clean, quarantine, notes = validate_candles(raw)
    except InputError as exc:  # the whole frame is unusable (missing column, naive ts)
        raise dg.Failure(description=str(exc)) from exc
    for note in notes:
        context.log.info(note)
    n_q = _quarantine(store, quarantine, context, raw)
    clean_candles_schema().validate(clean, lazy=True)  # the store's edge: a failure is a bug
    counts = store.put_candles(clean) if len(clean) else {"blocks_new": 0, "blocks_unchanged": 0}
    per_symbol = clean.groupby(["symbol", "timeframe"]).size().rename("candles").reset_index()
    return dg.MaterializeResult(
        metadata={
            "rows": len(clean),
            "quarantined": n_q,
            "blocks_new": counts.get("blocks_new", 0),
            "blocks_unchanged": counts.get("blocks_unchanged", 0),
            "per_symbol": dg.MetadataValue.md(md_table(per_symbol)),
            "notes": "; ".join(notes) or "none",
        }
    )


@dg.asset(
    **DAILY_IN_STORE,
    group_name="replay",
)
def insights(
    context: dg.AssetExecutionContext,
    insight_source: InsightSource,
    audit_store: AuditStoreResource,
) -> dg.MaterializeResult:
    """The insights published on each day, validated; bad rows go to quarantine with a reason."""
    start, end = _window(context)
    raw = insight_source.load(start, end)
    store = audit_store.get()
    if raw.empty:
        return dg.MaterializeResult(metadata={"rows": 0, "quarantined": 0})
    try:
        clean, quarantine = validate_insights(raw)
    except InputError as exc:
        raise dg.Failure(description=str(exc)) from exc
    n_q = _quarantine(store, quarantine, context, raw)
    clean_insights_schema().validate(clean, lazy=True)
    stored = store.put_insights(clean) if len(clean) else 0
    return dg.MaterializeResult(
        metadata={
            "rows": len(clean),
            "stored": stored,
            "quarantined": n_q,
            "quarantine": dg.MetadataValue.md(md_table(quarantine_summary(quarantine))),
            "per_strategy": dg.MetadataValue.md(
                md_table(
                    clean.groupby(["strategy", "symbol"]).size().rename("insights").reset_index()
                )
            ),
        }
    )


def rules_from_store(store) -> pd.DataFrame:
    """The editable rules in the store, seeded from the packaged YAML the first time."""
    rules = store.read_rules(active_only=False)
    if rules.empty:
        store.seed_rules(load_rules_yaml())
        rules = store.read_rules(active_only=False)
    return rules


@dg.asset(
    **DAILY_IN_STORE,
    group_name="replay",
    deps=[dg.AssetDep("insights"), dg.AssetDep("candles", partition_mapping=CANDLE_WINDOW)],
    check_specs=[
        dg.AssetCheckSpec(
            REPLAY_CHECK,
            asset="labeled_audits",
            partitions_def=DAILY,
            description="re-label a sample of audits from their stored "
            "candle blocks and rule snapshots; hashes must match",
        )
    ],
)
def labeled_audits(
    context: dg.AssetExecutionContext, config: LabelingConfig, audit_store: AuditStoreResource
):
    """One audit per insight x horizon: outcome, exit, excursions and its replay identity.

    Re-materialising a partition never duplicates: the store keeps one current row per
    (insight, horizon) and adds history only when the outcome or metrics change.
    """
    started = time.perf_counter()
    start, end = _window(context)
    store = audit_store.get()
    ins = store.read_insights(
        start,
        end,
        insight_ids=config.insight_ids or None,
        symbols=config.symbols or None,
        strategies=config.strategies or None,
    )
    horizons = [h.upper() for h in config.horizons]
    if ins.empty:
        return dg.MaterializeResult(
            metadata={"audits": 0, "note": "nothing to (re)label in this range"},
            check_results=[
                dg.AssetCheckResult(check_name=REPLAY_CHECK, passed=True, metadata={"replayed": 0})
            ],
        )
    candle_frame = store.read_candles(
        start, end + pd.Timedelta(days=HORIZON_DAYS), symbols=sorted(ins["symbol"].unique())
    )
    rules = rules_from_store(store)
    audits = api.label_outcomes(ins, candle_frame, horizons=horizons, rules=rules)
    audits_schema().validate(audits, lazy=True)
    counts = store.upsert_audits(audits, run_id=context.run.run_id)
    n_q = _quarantine(store, audits.attrs["quarantine"], context)
    # replay re-verification of the patterns each insight claims, on the candles of its created_at
    checks = api.verify_insight_patterns(ins, candle_frame)
    if len(checks):
        store.put_pattern_checks(checks, run_id=context.run.run_id)

    resolved = audits[~audits["outcome"].isin(["pending", "needs_review"])]
    sample = (
        resolved.sample(min(REPLAY_SAMPLE, len(resolved)), random_state=0)
        if len(resolved)
        else resolved
    )
    replay = api.replay_audits(sample, ins, store.read_blocks)
    mismatches = replay[~replay["match"]]
    worst = audits[audits["outcome"] == "failed"].nsmallest(10, "pnl_pct")[
        [
            "insight_id",
            "horizon",
            "symbol",
            "side",
            "strategy",
            "exit_reason",
            "pnl_pct",
            "max_drawdown",
            "duration_minutes",
        ]
    ]
    review = audits[audits["outcome"] == "needs_review"]
    return dg.MaterializeResult(
        metadata={
            "audits": len(audits),
            "insights": len(ins),
            "inserted": counts.get("inserted", 0),
            "refreshed": counts.get("refreshed", 0),
            "unchanged": counts.get("unchanged", 0),
            "superseded": counts.get("superseded", 0),
            "quarantined": n_q,
            "ambiguous": int(audits["ambiguous"].sum()),
            "patterns_verified": f"{int(checks['verified'].sum()) if len(checks) else 0} of {len(checks)} claims",
            "outcomes": dg.MetadataValue.md(md_table(outcome_matrix(audits))),
            "worst_audits": dg.MetadataValue.md(md_table(worst)),
            "needs_review": dg.MetadataValue.md(
                md_table(review[["insight_id", "horizon", "needs_review_reason"]].head(10))
            ),
            "seconds": round(time.perf_counter() - started, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=REPLAY_CHECK,
                passed=bool(mismatches.empty),
                metadata={
                    "replayed": len(replay),
                    "mismatches": len(mismatches),
                    "details": dg.MetadataValue.md(md_table(mismatches.head(10))),
                },
            )
        ],
    )
