"""Sensors: re-label pending audits as soon as the candles that can settle them have arrived."""

import dagster as dg
import pandas as pd

from autopsy_assets.defs.jobs import relabel_job
from autopsy_assets.resources import AuditStoreResource


@dg.sensor(
    job=relabel_job,
    minimum_interval_seconds=60,
    description="An insight whose horizon has elapsed and whose candles have arrived gets "
    "its partition re-labeled; until then its audit stays pending.",
)
def pending_audits_sensor(context: dg.SensorEvaluationContext, audit_store: AuditStoreResource):
    store = audit_store.get()
    ready = store.pending_ready()
    if ready.empty:
        return dg.SkipReason("no pending audit has new candles")
    coverage = store.candle_coverage()
    latest = coverage.groupby("symbol")["last_ts"].max()
    ready = ready.assign(day=ready["created_at"].dt.strftime("%Y-%m-%d"),
                         candles_to=ready["symbol"].map(latest))
    # the run key names the newest candle that made the day ready: a day is re-run once per
    # arrival of candles (the daemon skips a run key it has seen), never twice for the same one
    requests = [
        dg.RunRequest(
            partition_key=day,
            run_key=f"relabel:{day}:{pd.Timestamp(grp['candles_to'].max()).isoformat()}",
            tags={"autopsy/trigger": "pending_audits_sensor", "autopsy/pending": str(len(grp))},
        )
        for day, grp in ready.groupby("day")
    ]
    return dg.SensorResult(run_requests=requests)
