"""The learning loop as Dagster definitions: the training dataset, the registry's view, SHAP
explanations, rule suggestions and strategy health (assets); the retrain simulation and the
approved training (op jobs the CLI and the sensors launch); degradation and approval sensors.

Everything substantive happens in the domain core (features, meta_model, suggestions, health)
and in autopsy_assets.registry (MLflow); this module wires them to the audit store.
"""

import json

import dagster as dg
import pandas as pd

from autopsy_assets import api
from autopsy_assets.defs.metadata import md_table
from autopsy_assets.resources import AuditStoreResource, MlflowResource, autopsy_home

DATASET_HORIZON = "24H"


def load_dataset(
    store, horizon: str = DATASET_HORIZON, strategy: str | None = None
) -> pd.DataFrame:
    """The labeled dataset from the store's current audits, with every context source it has."""
    audits = store.current_audits()
    insights = store.read_insights(strategies=[strategy] if strategy else None)
    if insights.empty or audits.empty:
        return pd.DataFrame()
    start = insights["created_at"].min() - pd.Timedelta(days=10)  # ATR and regime warm-up
    candles = store.read_candles(
        start,
        insights["created_at"].max() + pd.Timedelta(days=1),
        symbols=sorted(insights["symbol"].unique()),
    )
    news, regimes = store.read_news(), store.read_regimes()
    return api.build_dataset(
        insights,
        audits,
        candles if len(candles) else None,
        news if len(news) else None,
        regimes if len(regimes) else None,
        horizon=horizon,
    )


def champion_versions(client) -> pd.DataFrame:
    """The registry's current champions: one row per strategy (model_versions_frame columns)."""
    from autopsy_assets import registry

    versions = registry.model_versions_frame(client=client)
    if versions.empty:
        return versions
    return versions[versions["aliases"].map(lambda a: "champion" in a)]


def materialized_dataset(context: dg.AssetExecutionContext, store, horizon: str) -> pd.DataFrame:
    """The dataset the latest `training_dataset` materialization wrote for ``horizon`` (the
    assets downstream of it read that version instead of rebuilding the features); built from
    the store when there is none yet."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("training_dataset"))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    path = meta.get("path")
    if path is not None and meta.get("horizon") and meta["horizon"].value == horizon:
        try:
            return pd.read_parquet(path.value)
        except OSError:  # the file was removed: rebuild rather than fail
            pass
    return load_dataset(store, horizon)


class DatasetConfig(dg.Config):
    horizon: str = DATASET_HORIZON


@dg.asset(
    group_name="learning",
    deps=["labeled_audits", "news_events", "market_regimes"],
    kinds={"pandas", "parquet"},
)
def training_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """Features known at each insight's creation + its label (1 succeeded, 0 failed), versioned
    by content hash as Parquet under .autopsy/datasets/<horizon>/, with succeeded/failed CSVs."""
    from autopsy_assets.domain.meta_model import dataset_hash

    ds = load_dataset(audit_store.get(), config.horizon)
    if ds.empty:
        return dg.MaterializeResult(metadata={"rows": 0})
    version = dataset_hash(ds)
    folder = autopsy_home() / "datasets" / config.horizon
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{version[:16]}.parquet"
    ds.to_parquet(path, index=False)
    ds[ds["label"] == 1].to_csv(folder / "succeeded_cases.csv", index=False)
    ds[ds["label"] == 0].to_csv(folder / "failed_cases.csv", index=False)
    per = (
        ds.groupby(["strategy", "symbol"])["label"]
        .agg(rows="size", success_rate="mean")
        .reset_index()
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version[:16]),
        metadata={
            "rows": len(ds),
            "succeeded": int(ds["label"].sum()),
            "failed": int((ds["label"] == 0).sum()),
            "version": version,
            "path": dg.MetadataValue.path(str(path)),
            "horizon": config.horizon,
            "features": len(ds.attrs.get("feature_names", [])),
            "per_strategy": dg.MetadataValue.md(md_table(per)),
        },
    )


@dg.asset(group_name="learning", deps=["training_dataset"], kinds={"mlflow"})
def model_versions(
    context: dg.AssetExecutionContext, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The MLflow registry's view: every autopsy-meta-<strategy> version, its aliases and metrics."""
    from autopsy_assets import registry

    frame = registry.model_versions_frame(client=mlflow.client())
    if frame.empty:
        return dg.MaterializeResult(metadata={"versions": 0})
    show = frame[["name", "version", "aliases", "created", "retrain_request"]].assign(
        aliases=frame["aliases"].map(lambda a: ",".join(a)), created=frame["created"].astype(str)
    )
    return dg.MaterializeResult(
        metadata={
            "versions": len(frame),
            "models": int(frame["name"].nunique()),
            "champions": int(frame["aliases"].map(lambda a: "champion" in a).sum()),
            "registry": dg.MetadataValue.md(md_table(show.head(30))),
        }
    )


@dg.asset(group_name="learning", deps=["model_versions"], kinds={"shap", "sqlalchemy"})
def explanations(
    context: dg.AssetExecutionContext,
    config: DatasetConfig,
    audit_store: AuditStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """SHAP values of every audited insight under its strategy's champion, stored with the audit,
    and the global importance per model version."""
    from autopsy_assets import registry
    from autopsy_assets.domain.meta_model import explain_insights, global_importance

    store, client = audit_store.get(), mlflow.client()
    champions = champion_versions(client)
    if champions.empty:
        return dg.MaterializeResult(metadata={"explained": 0, "note": "no champion model yet"})
    ds = materialized_dataset(context, store, config.horizon)
    written, tables = 0, []
    for row in champions.itertuples():
        rows = ds[ds["strategy"] == row.strategy]
        if rows.empty:
            continue
        model = registry.load_meta_model(f"models:/{row.name}@champion", client=client)
        ex = explain_insights(rows, model)
        contributions = ex[[c for c in ex.columns if c.startswith("shap_")]]
        frame = pd.DataFrame(
            {
                "insight_id": ex["insight_id"],
                "horizon": config.horizon,
                "model_name": row.name,
                "model_version": str(row.version),
                "base_value": ex["base_value"],
                "output": ex["model_output"],
                "contributions": [
                    json.dumps({k[5:]: float(v) for k, v in r.items()}, sort_keys=True)
                    for r in contributions.to_dict("records")
                ],
                "top_features": [
                    json.dumps([[f, float(v)] for f, v in t]) for t in ex["top_features"]
                ],
                "summary": ex["summary"],
            }
        )
        written += store.put_explanations(frame, run_id=context.run.run_id)
        imp = global_importance(ex).head(8).assign(model=f"{row.name} v{row.version}")
        tables.append(imp)
    importance = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return dg.MaterializeResult(
        metadata={
            "explained": written,
            "global_importance": dg.MetadataValue.md(md_table(importance)),
        }
    )


@dg.asset(group_name="learning", deps=["training_dataset", "rca_findings"], kinds={"pandas"})
def rule_suggestions(
    context: dg.AssetExecutionContext, config: DatasetConfig, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """Rule changes found by counterfactual search over finished audits, shown only when they
    also held on a later validation period (both periods' figures in each row)."""
    from autopsy_assets.domain.suggestions import suggest_rules

    store = audit_store.get()
    ds = materialized_dataset(context, store, config.horizon)
    if ds.empty:
        return dg.MaterializeResult(metadata={"suggestions": 0})
    news = store.read_news()
    found = suggest_rules(
        store.read_insights(),
        store.current_audits(),
        features=ds,
        horizon=config.horizon,
        news=news if len(news) else None,
    )
    path = autopsy_home() / "rule_suggestions.csv"
    found.to_csv(path, index=False)
    return dg.MaterializeResult(
        metadata={
            "suggestions": len(found),
            "path": dg.MetadataValue.path(str(path)),
            "top": dg.MetadataValue.md(
                md_table(found[["kind", "scope", "suggestion"]].head(10) if len(found) else found)
            ),
        }
    )


@dg.asset(group_name="learning", deps=["rca_findings"], kinds={"pandas"})
def strategy_health(
    context: dg.AssetExecutionContext, audit_store: AuditStoreResource
) -> dg.MaterializeResult:
    """KPIs per strategy and strategy x symbol: success and false-positive rates, expectancy,
    drawdown, duration, and the share of failures per primary cause."""
    store = audit_store.get()
    audits = store.current_audits()
    if audits.empty:
        return dg.MaterializeResult(metadata={"strategies": 0})
    causes = store.read_rca(primary_only=True)
    table = api.strategy_health(audits, causes if len(causes) else None)
    path = autopsy_home() / "strategy_health.csv"
    table.to_csv(path, index=False)
    top = table[(table["level"] == "strategy")]
    cols = [
        c
        for c in (
            "strategy",
            "horizon",
            "n_audited",
            "success_rate",
            "false_positive_rate",
            "expectancy",
            "news_impact_ratio",
            "regime_drift_ratio",
        )
        if c in top
    ]
    return dg.MaterializeResult(
        metadata={
            "rows": len(table),
            "path": dg.MetadataValue.path(str(path)),
            "strategies": dg.MetadataValue.md(md_table(top[cols])),
        }
    )


class ScoringConfig(dg.Config):
    horizon: str = DATASET_HORIZON
    challenger_share: float = 0.2  # users sent to the challenger, when one is set


@dg.asset(group_name="learning", deps=["model_versions"], kinds={"mlflow", "sqlalchemy"})
def insight_scores(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    audit_store: AuditStoreResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Every audited insight scored by its strategy's champion, or by the challenger for the
    users a stable sha256 of user_id puts in the challenger arm; the arms are recorded with the
    audits, and each arm's false-positive rate compared (the A/B evidence for a promotion)."""
    from autopsy_assets import registry

    store, client = audit_store.get(), mlflow.client()
    champions = champion_versions(client)
    if champions.empty:
        return dg.MaterializeResult(metadata={"scored": 0, "note": "no champion model yet"})
    ds = materialized_dataset(context, store, config.horizon)
    audits = store.current_audits(horizons=[config.horizon])
    scored, rows = 0, []
    for row in champions.itertuples():
        part = ds[ds["strategy"] == row.strategy]
        if part.empty:
            continue
        scores = registry.score_with_ab(
            part, row.strategy, config.challenger_share, store, client=client
        )
        scored += len(scores)
        passed, evidence = registry.compare_arms(registry.arm_audits(audits, store, row.strategy))
        rows.append(
            {
                "strategy": row.strategy,
                "champion_rows": int((scores["arm"] == "champion").sum()),
                "challenger_rows": int((scores["arm"] == "challenger").sum()),
                "challenger_no_worse": passed,
                "evidence": json.dumps(evidence, default=str)[:200],
            }
        )
    return dg.MaterializeResult(
        metadata={"scored": scored, "arms": dg.MetadataValue.md(md_table(pd.DataFrame(rows)))}
    )


# --- the retrain lifecycle as op jobs (so every simulation and training is a Dagster run) -------


class RetrainRequestConfig(dg.Config):
    """Open (when request_id is empty) and simulate a retrain request."""

    request_id: str = ""
    strategy: str = ""
    requested_by: str = ""
    reason: str = ""
    source: str = "manual"
    horizon: str = DATASET_HORIZON


@dg.op(tags={"autopsy/lifecycle": "simulate"})
def simulate_retrain(
    context: dg.OpExecutionContext,
    config: RetrainRequestConfig,
    audit_store: AuditStoreResource,
    mlflow: MlflowResource,
) -> str:
    from autopsy_assets import registry

    store, client = audit_store.get(), mlflow.client()
    rid = config.request_id or registry.request_retrain(
        config.strategy,
        config.requested_by,
        config.reason,
        store,
        client=client,
        source=config.source,
    )
    dataset = load_dataset(
        store, config.horizon, strategy=registry.show_request(rid, client=client)["strategy"]
    )
    result = registry.simulate(rid, dataset, store, client=client)
    context.add_output_metadata(
        {"request_id": rid, "gate_passed": bool(result.get("gate", {}).get("passed", False))}
    )
    return rid


class ApprovalConfig(dg.Config):
    request_id: str
    reviewer: str
    notes: str = ""


@dg.op(tags={"autopsy/lifecycle": "train"}, pool="promotions")
def train_approved(
    context: dg.OpExecutionContext,
    config: ApprovalConfig,
    audit_store: AuditStoreResource,
    mlflow: MlflowResource,
) -> str:
    """Approve by a named reviewer (not the requester), final fit, register, move the alias."""
    from autopsy_assets import registry

    result = registry.approve(
        config.request_id,
        config.reviewer,
        config.notes,
        None,
        audit_store.get(),
        client=mlflow.client(),
    )
    context.add_output_metadata(
        {"request_id": config.request_id, "model_version": str(result.get("model_version", ""))}
    )
    return config.request_id


@dg.job(
    tags={"autopsy/db": "audit"}, description="Open (if needed) and simulate a retrain request."
)
def retrain_simulation_job():
    simulate_retrain()


@dg.job(
    tags={"autopsy/db": "audit"},
    description="Approve a simulated retrain request: final fit, new version, champion alias.",
)
def retrain_training_job():
    train_approved()


@dg.sensor(
    job=retrain_simulation_job,
    minimum_interval_seconds=300,
    description="Raises a retrain request when a champion's false-positive rate over the "
    "trailing audits exceeds its validation figure by the margin.",
)
def champion_degradation_sensor(
    context: dg.SensorEvaluationContext, audit_store: AuditStoreResource, mlflow: MlflowResource
):
    from autopsy_assets import registry

    client = mlflow.client()
    champions = champion_versions(client)
    if champions.empty:
        return dg.SkipReason("no champion model yet")
    store = audit_store.get()
    open_ = registry.list_requests(client=client)
    busy = (
        set(
            open_.loc[
                open_["status"].isin(
                    ["requested", "simulating", "pending_approval", "approved", "training"]
                ),
                "strategy",
            ]
        )
        if len(open_)
        else set()
    )
    requests = []
    for row in champions.itertuples():
        if row.strategy in busy:
            continue
        audits = store.current_audits(horizons=[DATASET_HORIZON])
        audits = audits[audits["strategy"] == row.strategy]
        if audits.empty:
            continue
        recent = audits[audits["created_at"] >= audits["created_at"].max() - pd.Timedelta(days=14)]
        degraded, evidence = registry.champion_degraded(recent, row.metrics, margin=0.05)
        if degraded:
            reason = (
                f"champion v{row.version} degraded: false-positive rate "
                f"{evidence['fpr_recent']:.1%} over the last 14 days vs "
                f"{evidence['fpr_validation']:.1%} at validation"
            )
            requests.append(
                dg.RunRequest(
                    run_key=f"degraded:{row.strategy}:{row.version}:{recent['created_at'].max().date()}",
                    run_config={
                        "ops": {
                            "simulate_retrain": {
                                "config": {
                                    "strategy": row.strategy,
                                    "requested_by": "degradation-sensor",
                                    "reason": reason,
                                    "source": "degradation",
                                }
                            }
                        }
                    },
                    tags={"autopsy/trigger": "champion_degradation_sensor"},
                )
            )
    return requests or dg.SkipReason("no champion has degraded")


@dg.sensor(
    job=retrain_training_job,
    minimum_interval_seconds=60,
    description="Launches the training of a request approved in the MLflow UI (tag "
    "approved_by=<reviewer> on the request run, status pending_approval).",
)
def retrain_approval_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource):
    from autopsy_assets import registry

    client = mlflow.client()
    pending = registry.list_requests(status="pending_approval", client=client)
    requests = []
    for row in pending.itertuples():
        tags = registry.show_request(row.request_id, client=client).get("tags", {})
        reviewer = tags.get("approved_by", "").strip()
        if reviewer:
            requests.append(
                dg.RunRequest(
                    run_key=f"approve:{row.request_id}",
                    run_config={
                        "ops": {
                            "train_approved": {
                                "config": {
                                    "request_id": row.request_id,
                                    "reviewer": reviewer,
                                    "notes": tags.get(
                                        "approval_notes", "approved in the MLflow UI"
                                    ),
                                }
                            }
                        }
                    },
                    tags={"autopsy/trigger": "retrain_approval_sensor"},
                )
            )
    return requests or dg.SkipReason("no request approved in the MLflow UI")
