"""Sensors: re-label pending audits as soon as the candles that can settle them have arrived."""

import dagster as dg

from autopsy_assets.defs.jobs import relabel_job
from autopsy_assets.resources import AuditStoreResource


@dg.sensor(
    job=relabel_job,
    minimum_interval_seconds=60,
    description="An insight whose horizon has elapsed and whose candles have arrived gets "
    "its partition re-labeled; until then its audit stays pending.",
)
def pending_audits_sensor(context: dg.SensorEvaluationContext, audit_store: AuditStoreResource):
    ready = audit_store.get().pending_ready()
    if ready.empty:
        return dg.SkipReason("no pending audit has new candles")
    days = ready.assign(day=ready["created_at"].dt.strftime("%Y-%m-%d")).groupby("day")
    # the run key names the candles that made the day ready, so a day is re-run once per arrival
    requests = [
        dg.RunRequest(
            partition_key=day,
            run_key=f"relabel:{day}:{grp['window_end'].max().isoformat()}",
            tags={"autopsy/trigger": "pending_audits_sensor", "autopsy/pending": str(len(grp))},
        )
        for day, grp in days
    ]
    return dg.SensorResult(run_requests=requests)
