"""`make run` as a newcomer meets it: the demo labels the sample data, analyses the failures and
runs the retrain lifecycle once per strategy, so it ends with champions, their SHAP summaries,
explanations stored with the audits, a versioned dataset, suggestions and strategy health."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from autopsy_assets import cli, registry
from autopsy_assets.store import AuditStore

pytestmark = pytest.mark.dagster


def test_demo_ends_with_a_champion_per_strategy(tmp_path, monkeypatch, capsys):
    home = tmp_path / ".autopsy"
    monkeypatch.setenv("AUTOPSY_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
    monkeypatch.delenv("AUTOPSY_DATABASE_URL", raising=False)
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Quarantined rows in this run: 6" in out and "learning assets" in out

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    store = AuditStore(f"sqlite:///{home}/audit.db")
    strategies = sorted(store.read_insights()["strategy"].unique())
    assert strategies == ["BreakoutPro", "MeanRevert", "ZenithEdge"]
    versions = registry.model_versions_frame(client=client)
    champions = versions[versions["aliases"].map(lambda a: "champion" in a)]
    assert sorted(champions["strategy"]) == strategies
    for row in champions.itertuples():
        artifacts = {a.path for a in client.list_artifacts(row.run_id, "shap")}
        assert "shap/summary.png" in artifacts, artifacts
        trail = store.trail(row.retrain_request)
        assert trail["to_status"].tolist() == ["requested", "simulating", "pending_approval",
                                               "approved", "training", "completed"]
        assert set(trail["actor"]) >= {"demo-requester", "demo-reviewer"}
    explained = store.read_explanations()
    assert set(explained["model_name"]) == {f"autopsy-meta-{s}" for s in strategies}
    assert len(list((home / "datasets" / "24H").glob("*.parquet"))) == 1
    assert (home / "rule_suggestions.csv").exists() and (home / "strategy_health.csv").exists()
