import dagster as dg

# The main job: candles and insights in, audits out, for a partition (range).
autopsy_job = dg.define_asset_job(
    "autopsy_job", selection=["candles", "insights", "labeled_audits"],
    tags={"autopsy/db": "audit"},
    description="Load candles and insights for the day(s), then label every insight x horizon.")

# Re-label only (the sensor's job when candles arrive for pending audits).
relabel_job = dg.define_asset_job(
    "relabel_job", selection=["labeled_audits"], tags={"autopsy/db": "audit"},
    description="Re-label the insights of the day(s) from stored candles.")
