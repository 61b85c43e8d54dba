"""Model versions, aliases and A/B scoring on a real MLflow store (SQLite + local artifacts in
tmp_path) and a real audit store."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from registry_helpers import FAST, STRATEGY, make_dataset

from autopsy_assets import registry as R
from autopsy_assets.domain import meta_model as mm
from autopsy_assets.registry import LifecycleError
from autopsy_assets.registry.aliases import trail_state

NAME = f"autopsy-meta-{STRATEGY}"


@pytest.fixture(scope="module")
def trained() -> tuple[pd.DataFrame, mm.MetaModel]:
    ds = make_dataset(seed=1)
    return ds, mm.train_meta_model(ds, params=FAST).fit_final(ds)


def _extra_versions(client, n: int) -> list[str]:
    """More versions of NAME pointing at version 1's model (registering costs no training)."""
    first = client.get_model_version(NAME, "1")
    return [str(client.create_model_version(NAME, source=first.source, run_id=first.run_id)
                .version) for _ in range(n)]


def test_log_load_champion_gives_identical_probabilities(client, store, trained, mlflow_uri):
    ds, model = trained
    name, version, run_id = R.log_model_version(model, ds, STRATEGY, request_id="req-123",
                                                client=client)
    assert (name, version) == (NAME, "1")
    R.promote(STRATEGY, version, "ops", "first champion", store, client=client)

    loaded = R.load_meta_model(f"models:/{NAME}@champion", client=client)
    np.testing.assert_array_equal(loaded.score(ds), model.score(ds))
    assert loaded.feature_names == model.feature_names
    assert loaded.threshold == model.threshold and loaded.kind == model.kind
    assert loaded.trained_on == model.trained_on == mm.dataset_hash(ds)
    assert loaded.metrics["per_symbol"].keys() == model.metrics["per_symbol"].keys()
    assert loaded.registry == {"name": NAME, "version": "1", "run_id": run_id,
                               "uri": f"models:/{NAME}/1"}
    # the domain's score_insights resolves a models:/ URI through the registry (env URI)
    via_uri = mm.score_insights(ds, f"models:/{NAME}@champion")
    np.testing.assert_array_equal(via_uri.to_numpy(), model.score(ds))
    np.testing.assert_array_equal(
        R.load_meta_model(f"{NAME}@champion", client=client).score(ds), model.score(ds))

    # what the version's run holds
    run = client.get_run(run_id)
    assert run.info.experiment_id == client.get_experiment_by_name("autopsy-meta").experiment_id
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["val.fp_cut"] == pytest.approx(model.metrics["overall"]["fp_cut"])
    assert m["val.EURUSD.fp_cut"] == pytest.approx(model.metrics["per_symbol"]["EURUSD"]["fp_cut"])
    assert "val.GBPUSD.n" in m and any(k.startswith("shap.") for k in m)
    p = run.data.params
    assert p["kind"] == "hgb" and p["est.max_iter"] == "60" and p["strategy"] == STRATEGY
    tags = run.data.tags
    assert tags["dataset.sha256"] == mm.dataset_hash(ds) and len(tags["dataset.sha256"]) == 64
    assert tags["retrain_request"] == "req-123"
    assert tags["git_commit"] == "unknown" or len(tags["git_commit"]) == 40
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"shap", "importance", "meta_model.json"} <= artifacts
    assert {a.path for a in client.list_artifacts(run_id, "shap")} == {
        "shap/summary.png", "shap/global_importance.json"}
    local = Path(client.download_artifacts(run_id, "shap/global_importance.json"))
    gi = json.loads(local.read_text())
    assert gi["rows"] == len(ds) and gi["output"] == "log-odds"
    assert {r["feature"] for r in gi["importance"]} == set(model.feature_names)
    # dataset input: our digest (<= 36 chars), the full sha256 in an input tag
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == mm.dataset_hash(ds)[:32]
    assert {t.key: t.value for t in inp.tags}["sha256"] == mm.dataset_hash(ds)
    # the estimator and meta_model.json side by side in the model directory
    mv = client.get_model_version(NAME, "1")
    assert mv.tags["retrain_request"] == "req-123"
    model_dir = Path(client.get_model_version_download_uri(NAME, "1").removeprefix("file://"))
    assert {"MLmodel", "model.skops", "meta_model.json"} <= {f.name for f in model_dir.iterdir()}
    assert str(model_dir).startswith(str(Path(mlflow_uri.removeprefix("sqlite:///")).parent))
    meta = json.loads((model_dir / "meta_model.json").read_text())
    assert meta["feature_names"] == model.feature_names and meta["estimator"] == \
        "HistGradientBoostingClassifier"

    frame = R.model_versions_frame(client=client)
    assert list(frame["version"]) == ["1"] and frame["aliases"].iat[0] == ["champion"]
    assert frame["retrain_request"].iat[0] == "req-123"
    assert frame["val.fp_cut"].iat[0] == pytest.approx(m["val.fp_cut"])
    assert isinstance(frame["created"].dtype, pd.DatetimeTZDtype)

    with pytest.raises(LifecycleError, match="no such registered model version"):
        R.load_meta_model(f"models:/{NAME}@challenger", client=client)
    with pytest.raises(LifecycleError, match="not a registered model reference"):
        R.load_meta_model("runs:/abc/model", client=client)


def test_random_forest_round_trip(client, trained):
    ds, _ = trained
    rf = mm.train_meta_model(ds, kind="rf", params={"n_estimators": 20, "max_depth": 4})
    rf = rf.fit_final(ds)
    name, version, run_id = R.log_model_version(rf, ds, "ForestStrat", client=client)
    loaded = R.load_meta_model(f"models:/{name}/{version}", client=client)
    np.testing.assert_array_equal(loaded.score(ds), rf.score(ds))
    assert type(loaded.estimator).__name__ == "RandomForestClassifier"
    gi = json.loads(Path(client.download_artifacts(run_id, "shap/global_importance.json"))
                    .read_text())
    assert gi["output"] == "probability"
    imp = json.loads(Path(client.download_artifacts(
        run_id, "importance/feature_importance.json")).read_text())
    assert set(imp["impurity"]) == set(rf.feature_names)


def test_aliases_promote_rollback_challenger_are_recorded(client, store, trained):
    ds, model = trained
    R.log_model_version(model, ds, STRATEGY, client=client)
    v2, v3 = _extra_versions(client, 2)

    with pytest.raises(LifecycleError, match="no previous version"):
        R.rollback_alias(STRATEGY, "ops", "nothing yet", store, client=client)
    with pytest.raises(LifecycleError, match="has no version 99"):
        R.promote(STRATEGY, 99, "ops", "typo", store, client=client)
    with pytest.raises(LifecycleError, match="actor is required"):
        R.promote(STRATEGY, 1, " ", "anonymous", store, client=client)
    assert store.alias_moves().empty

    R.promote(STRATEGY, 1, "ops", "first", store, client=client)
    R.promote(STRATEGY, v2, "ops", "second", store, client=client)
    assert R.aliases(STRATEGY, client=client) == {"champion": v2, "previous": "1"}
    with pytest.raises(LifecycleError, match="already the champion"):
        R.promote(STRATEGY, v2, "ops", "again", store, client=client)

    R.set_challenger(STRATEGY, v3, "ops", "A/B", store, client=client)
    with pytest.raises(LifecycleError, match="is the challenger: promote it with"):
        R.promote(STRATEGY, v3, "ops", "skip the A/B", store, client=client)
    with pytest.raises(LifecycleError, match="cannot also be the challenger"):
        R.set_challenger(STRATEGY, v2, "ops", "self", store, client=client)
    assert R.aliases(STRATEGY, client=client) == {"champion": v2, "previous": "1",
                                                  "challenger": v3}

    # A/B evidence decides a challenger's promotion
    audits = pd.DataFrame({"insight_id": [f"i{i}" for i in range(80)],
                           "arm": ["champion"] * 40 + ["challenger"] * 40,
                           "outcome": (["failed"] * 10 + ["succeeded"] * 30)
                           + (["failed"] * 20 + ["succeeded"] * 20)})
    before = (R.aliases(STRATEGY, client=client), len(store.alias_moves()))
    with pytest.raises(LifecycleError, match="worse"):
        R.promote_challenger(STRATEGY, "ops", "ab done", audits, store, client=client)
    assert (R.aliases(STRATEGY, client=client), len(store.alias_moves())) == before
    better = audits.assign(arm=["challenger"] * 40 + ["champion"] * 40)
    R.promote_challenger(STRATEGY, "ops", "ab done", better, store, client=client)
    assert R.aliases(STRATEGY, client=client) == {"champion": v3, "previous": v2}

    R.rollback_alias(STRATEGY, "ops", "oops", store, client=client)
    assert R.aliases(STRATEGY, client=client) == {"champion": v2}
    moves = store.alias_moves(NAME)
    assert list(moves["seq"]) == list(range(1, len(moves) + 1))
    assert trail_state(store, NAME) == {"champion": v2, "previous": None, "challenger": None}
    assert (moves["actor"] == "ops").all() and moves["at"].notna().all()
    frame = R.model_versions_frame(STRATEGY, client=client)
    assert dict(zip(frame["version"], frame["aliases"], strict=True)) == {
        v3: [], v2: ["champion"], "1": []}


def test_concurrent_promotions_are_serialised_by_the_trail(client, store, trained):
    ds, model = trained
    R.log_model_version(model, ds, STRATEGY, client=client)
    versions = ["1", *_extra_versions(client, 4)]
    R.promote(STRATEGY, "1", "ops", "start", store, client=client)
    barrier = threading.Barrier(4)
    errors: list[Exception] = []

    def go(v: str) -> None:
        barrier.wait()
        try:
            R.promote(STRATEGY, v, f"ops-{v}", "race", store, client=client)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(v,)) for v in versions[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    moves = store.alias_moves(NAME)
    assert list(moves["seq"]) == list(range(1, len(moves) + 1))
    champ_moves = moves[moves["alias"] == "champion"]
    # each promotion took over from the one recorded just before it: a chain, nothing lost
    assert list(champ_moves["from_version"].iloc[1:]) == list(champ_moves["to_version"].iloc[:-1])
    assert sorted(champ_moves["to_version"]) == sorted(versions)
    # MLflow ends where the trail ends
    live = R.aliases(STRATEGY, client=client)
    state = trail_state(store, NAME)
    assert live["champion"] == state["champion"] == champ_moves["to_version"].iat[-1]
    assert live["previous"] == state["previous"] == champ_moves["from_version"].iat[-1]


def test_score_with_ab_assigns_arms_and_records_them(client, store, trained):
    ds, model = trained
    R.log_model_version(model, ds, STRATEGY, client=client)
    with pytest.raises(LifecycleError, match="no champion"):
        R.score_with_ab(ds, STRATEGY, 0.5, client=client)
    R.promote(STRATEGY, "1", "ops", "champion", store, client=client)
    solo = R.score_with_ab(ds, STRATEGY, 0.5, store, client=client)
    assert (solo["arm"] == "champion").all() and solo.attrs["share"] == 0.0
    np.testing.assert_allclose(solo["success_probability"], model.score(ds))

    other = mm.train_meta_model(ds, params={"max_iter": 20}).fit_final(ds)
    _, v2, _ = R.log_model_version(other, ds, STRATEGY, client=client)
    R.set_challenger(STRATEGY, v2, "ops", "try it", store, client=client)
    out = R.score_with_ab(ds, STRATEGY, 0.5, store, client=client)
    expected_arm = mm.arms_for(ds["user_id"].to_numpy(), 0.5)
    np.testing.assert_array_equal(out["arm"].to_numpy(), expected_arm)
    assert set(out["arm"]) == {"champion", "challenger"}
    ch = out["arm"] == "challenger"
    np.testing.assert_allclose(out.loc[ch, "success_probability"], other.score(ds[ch]))
    np.testing.assert_allclose(out.loc[~ch, "success_probability"], model.score(ds[~ch]))
    assert set(out.loc[ch, "model_version"]) == {v2}
    recorded = store.read_ab_assignments(model_name=NAME)
    assert len(recorded) == len(ds)
    got = recorded.set_index("insight_id").loc[ds["insight_id"], "arm"].to_numpy()
    np.testing.assert_array_equal(got, expected_arm)
    assert (recorded["share"] == 0.5).all()


def test_registry_refuses_unknown_models(client):
    assert R.aliases("Nobody", client=client) == {}
    assert R.model_versions_frame("Nobody", client=client).empty
    with pytest.raises(LifecycleError):
        R.load_meta_model("models:/autopsy-meta-Nobody@champion", client=client)
    with pytest.raises(MlflowException):
        client.get_registered_model("autopsy-meta-Nobody")
