import dagster as dg

from autopsy_assets.defs.jobs import autopsy_job

# Every night at 01:15 UTC, the day that just closed: its 1H/4H audits settle now, the longer
# horizons stay pending until the sensor sees their candles arrive.
autopsy_daily_schedule = dg.build_schedule_from_partitioned_job(
    autopsy_job, hour_of_day=1, minute_of_hour=15, name="autopsy_daily_schedule")
