"""The one Definitions object that workspace.yaml loads, merged from defs/ by concern."""
import dagster as dg

from autopsy_assets.defs import assets, context, jobs, rca, schedules, sensors
from autopsy_assets.resources import default_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, context, rca]),
    jobs=[jobs.autopsy_job, jobs.label_job, jobs.relabel_job],
    schedules=[schedules.autopsy_daily_schedule],
    sensors=[sensors.pending_audits_sensor],
    resources=default_resources(),
)
