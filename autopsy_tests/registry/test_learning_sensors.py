"""The learning loop's sensors on a real MLflow store and audit store: a degraded champion
raises a retrain request; a request approved in the MLflow UI (tag approved_by) gets trained."""
from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
from registry_helpers import FAST, STRATEGY, make_dataset

from autopsy_assets import registry as R
from autopsy_assets.defs.learning import champion_degradation_sensor, retrain_approval_sensor
from autopsy_assets.definitions import defs
from autopsy_assets.domain import meta_model as mm
from autopsy_assets.domain.schemas import AUDIT_COLUMNS
from autopsy_assets.resources import AuditStoreResource, MlflowResource


def _resources(store, mlflow_uri):
    return {"audit_store": AuditStoreResource(database_url=store.url),
            "mlflow": MlflowResource(tracking_uri=mlflow_uri)}


def _tick(sensor, store, mlflow_uri):
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, definitions=defs,
                                      resources=_resources(store, mlflow_uri))
        return sensor.evaluate_tick(ctx)


def _audits(n: int, failed_share: float) -> pd.DataFrame:
    """n finished 24H audits of the strategy, the first failed_share of them failed."""
    created = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="h")
    outcome = np.where(np.arange(n) < int(n * failed_share), "failed", "succeeded")
    df = pd.DataFrame({c: [None] * n for c in AUDIT_COLUMNS})
    df = df.assign(insight_id=[f"A{i}" for i in range(n)], horizon="24H", symbol="EURUSD",
                   side="long", strategy=STRATEGY, timeframe="1h", candle_timeframe="1h",
                   status="published", user_id="u1", user_acted=False, created_at=created,
                   outcome=outcome, replay_outcome=outcome, exit_reason="horizon",
                   exit_price=1.0, exit_time=created + pd.Timedelta(hours=24), ambiguous=False,
                   needs_review=False, needs_review_reason="", window_start=created,
                   window_end=created + pd.Timedelta(hours=24), rule_id=1, rule_snapshot="{}",
                   rule_hash="a" * 64, candles_hash="b" * 64, candle_blocks="",
                   snapshot_hash="c" * 64, candles_until=created + pd.Timedelta(hours=24))
    return df


def test_degradation_sensor_requests_a_retrain_only_when_the_champion_drifts(
        client, store, mlflow_uri):
    assert _tick(champion_degradation_sensor, store, mlflow_uri).skip_message  # no model yet
    ds = make_dataset(seed=1)
    champion = mm.train_meta_model(ds, params=FAST).fit_final(ds)
    _, version, _ = R.log_model_version(champion, ds, STRATEGY, client=client)
    R.promote(STRATEGY, version, "ops", "initial champion", store, client=client)
    fpr = champion.metrics["overall"]["fpr"]

    store.upsert_audits(_audits(100, fpr))                    # as at validation: no request
    assert not _tick(champion_degradation_sensor, store, mlflow_uri).run_requests
    store.upsert_audits(_audits(100, min(fpr + 0.25, 1.0)).assign(candles_hash="d" * 64))
    (request,) = _tick(champion_degradation_sensor, store, mlflow_uri).run_requests
    cfg = request.run_config["ops"]["simulate_retrain"]["config"]
    assert cfg["strategy"] == STRATEGY and cfg["source"] == "degradation"
    assert "degraded: false-positive rate" in cfg["reason"]


def test_approval_sensor_trains_a_request_approved_in_the_mlflow_ui(client, store, mlflow_uri):
    rid = R.request_retrain(STRATEGY, "alice", "weekly", store, client=client)
    R.simulate(rid, make_dataset(seed=1), store, client=client, params=FAST)
    assert _tick(retrain_approval_sensor, store, mlflow_uri).skip_message   # not approved yet
    client.set_tag(rid, "approved_by", "bob")                  # what a person does in the UI
    (request,) = _tick(retrain_approval_sensor, store, mlflow_uri).run_requests
    assert request.run_key == f"approve:{rid}"
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("retrain_training_job").execute_in_process(
            instance=instance, run_config=request.run_config,
            resources=_resources(store, mlflow_uri))
    assert result.success
    assert R.aliases(STRATEGY, client=client) == {"champion": "1"}
    assert store.latest_status(rid) == "completed"
    assert not _tick(retrain_approval_sensor, store, mlflow_uri).run_requests
