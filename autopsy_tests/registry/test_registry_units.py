"""Fast unit tests of the registry's plumbing: URIs, names, metric flattening, the fluent-URI
guard, champion degradation and the A/B arm comparison."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from autopsy_assets import registry as R
from autopsy_assets.registry.tracking import artifact_root, fluent


def test_tracking_uri_defaults_to_sqlite_under_autopsy_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AUTOPSY_HOME", str(tmp_path / "home"))
    uri = R.tracking_uri()
    assert uri == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert uri.startswith("sqlite:////")                      # absolute: four slashes
    assert (tmp_path / "home").is_dir()
    assert artifact_root(uri) == tmp_path / "home" / "mlartifacts"
    monkeypatch.delenv("AUTOPSY_HOME")
    monkeypatch.chdir(tmp_path)
    assert R.tracking_uri() == f"sqlite:///{tmp_path.resolve() / '.autopsy' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://u@127.0.0.1:5432/mlflow")
    assert R.tracking_uri() == "postgresql+psycopg2://u@127.0.0.1:5432/mlflow"
    assert artifact_root(R.tracking_uri()) == tmp_path.resolve() / ".autopsy" / "mlartifacts"
    assert artifact_root("http://127.0.0.1:5000") is None


def test_file_store_is_refused():
    for uri in ("file:///tmp/mlruns", "./mlruns"):
        with pytest.raises(ValueError, match="file store"):
            R.get_client(uri)


def test_experiments_keep_artifacts_beside_the_store(client, mlflow_uri):
    exp_id = R.ensure_experiment(client, "autopsy-meta")
    assert R.ensure_experiment(client, "autopsy-meta") == exp_id
    location = client.get_experiment(exp_id).artifact_location
    db_dir = Path(mlflow_uri.removeprefix("sqlite:///")).parent
    assert location == (db_dir / "mlartifacts" / "autopsy-meta").as_uri()


def test_fluent_restores_uris_and_environment(client, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri()
    with fluent(client):
        assert mlflow.get_tracking_uri() == client.tracking_uri
        assert mlflow.get_registry_uri() == client.tracking_uri
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////elsewhere/mlflow.db"
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() == before


def test_model_names():
    assert R.model_name("ZenithEdge") == "autopsy-meta-ZenithEdge"
    for bad in ("", "  ", "a/b", "x@champion", "it's"):
        with pytest.raises(ValueError):
            R.model_name(bad)


def test_flatten_metrics_names():
    metrics = {"overall": {"fp_cut": 0.4, "auc": float("nan"), "note": "x"},
               "per_symbol": {"EURUSD": {"fp_cut": 0.3, "n": 80}, "US 500": {"n": 3}},
               "n_train": 500, "threshold": 0.42, "validation_from": "2024-01-01"}
    assert R.flatten_metrics(metrics) == {
        "val.fp_cut": 0.4, "val.EURUSD.fp_cut": 0.3, "val.EURUSD.n": 80.0,
        "val.US 500.n": 3.0, "val.n_train": 500.0, "val.threshold": 0.42}
    assert R.flatten_metrics({"overall": {"fp_cut": 1}}, "before") == {"before.fp_cut": 1.0}


def _audits(n_ok: int, n_failed: int, n_other: int = 0) -> pd.DataFrame:
    outcomes = ["succeeded"] * n_ok + ["failed"] * n_failed + ["neutral"] * n_other
    return pd.DataFrame({
        "insight_id": [f"i{i}" for i in range(len(outcomes))], "outcome": outcomes,
        "created_at": pd.date_range("2024-05-01", periods=len(outcomes), freq="h", tz="UTC")})


def test_champion_degraded_over_a_trailing_window():
    champion = {"overall": {"fpr": 0.20}}
    degraded, ev = R.champion_degraded(_audits(60, 40, 10), champion, 0.10)
    assert degraded and ev["fpr_recent"] == pytest.approx(0.40) and ev["n"] == 100
    assert "up 20.0 points" in ev["reason"] and ev["window"]["column"] == "created_at"
    assert not R.champion_degraded(_audits(75, 25), champion, 0.10)[0]      # +5 points
    few, ev = R.champion_degraded(_audits(5, 15), champion, 0.10)
    assert not few and "only 20 finished audits" in ev["reason"]
    # the flattened run metrics of model_versions_frame work as well
    assert R.champion_degraded(_audits(60, 40), {"val.fpr": 0.2, "val.fp_cut": 0.5}, 0.1)[0]
    with pytest.raises(ValueError, match="fpr"):
        R.champion_degraded(_audits(60, 40), {"overall": {}}, 0.1)


def test_compare_arms():
    a = _audits(30, 10).assign(arm="champion")
    b = _audits(28, 12).assign(arm="challenger")
    passed, ev = R.compare_arms(pd.concat([a, b]), min_rows=30)
    assert not passed and ev["challenger"]["fpr"] == pytest.approx(0.3)
    passed, _ = R.compare_arms(pd.concat([a, b]), min_rows=30, tolerance=0.06)
    assert passed
    passed, ev = R.compare_arms(pd.concat([a, b]), min_rows=50)
    assert not passed and "too few" in ev["reason"]


def test_client_accepts_uri_or_client(mlflow_uri):
    c = R.get_client(mlflow_uri)
    assert isinstance(c, MlflowClient) and c.tracking_uri == mlflow_uri
    assert R.get_client(c) is c
    assert R.get_client().tracking_uri == mlflow_uri            # MLFLOW_TRACKING_URI
