import dagster as dg

REPLAY = ["candles", "insights", "labeled_audits"]
CONTEXT = ["news_events", "market_regimes"]

# The main job: candles, insights and context in; audits and their root causes out.
autopsy_job = dg.define_asset_job(
    "autopsy_job", selection=[*REPLAY, *CONTEXT, "rca_findings"], tags={"autopsy/db": "audit"},
    description="Load candles, insights, news and regimes for the day(s), label every insight x "
                "horizon, then analyse the root causes of failures.")

# The same without root-cause analysis (`autopsy run --skip-rca`).
label_job = dg.define_asset_job(
    "label_job", selection=REPLAY, tags={"autopsy/db": "audit"},
    description="Load candles and insights for the day(s) and label every insight x horizon.")

# Re-label and re-analyse only (the sensor's job when candles arrive for pending audits).
relabel_job = dg.define_asset_job(
    "relabel_job", selection=["labeled_audits", "rca_findings"], tags={"autopsy/db": "audit"},
    description="Re-label the insights of the day(s) from stored candles and re-analyse failures.")

# The learning loop's assets: dataset, registry view, explanations, suggestions, health.
learning_job = dg.define_asset_job(
    "learning_job", selection=["training_dataset", "model_versions", "explanations",
                               "insight_scores", "rule_suggestions", "strategy_health"],
    tags={"autopsy/db": "audit"},
    description="Rebuild the training dataset, refresh the registry view, explain every audited "
                "insight under its champion, search rule suggestions and strategy health.")
