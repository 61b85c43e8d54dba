"""The one Definitions object that workspace.yaml loads, merged from defs/ by concern."""
import dagster as dg

from autopsy_assets.defs import assets, context, jobs, learning, rca, schedules, sensors
from autopsy_assets.resources import default_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, context, rca, learning]),
    jobs=[jobs.autopsy_job, jobs.label_job, jobs.relabel_job, jobs.learning_job,
          learning.retrain_simulation_job, learning.retrain_training_job],
    schedules=[schedules.autopsy_daily_schedule],
    sensors=[sensors.pending_audits_sensor, learning.champion_degradation_sensor,
             learning.retrain_approval_sensor],
    resources=default_resources(),
)
