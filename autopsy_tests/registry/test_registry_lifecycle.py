"""The retrain-request lifecycle on a real MLflow store (SQLite in tmp_path) and a real audit store
(SQLite, and PostgreSQL for the trail): the whole loop, every illegal step, the per-symbol gate,
and an approval racing a rejection."""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from registry_helpers import FAST, STRATEGY, make_dataset, snapshot

from autopsy_assets import registry as R
from autopsy_assets.domain import meta_model as mm
from autopsy_assets.registry import LifecycleError

NAME = f"autopsy-meta-{STRATEGY}"


def _assert_trail(store, request_id, expected):
    """The request's trail is exactly `expected` [(from, to, actor)], each with a UTC time."""
    tr = store.trail(request_id)
    got = list(zip(tr["from_status"], tr["to_status"], tr["actor"], strict=True))
    assert got == expected
    assert isinstance(tr["at"].dtype, pd.DatetimeTZDtype)
    assert tr["at"].notna().all() and tr["at"].is_monotonic_increasing


def _requested_and_simulated(client, store, dataset, by="alice"):
    rid = R.request_retrain(STRATEGY, by, "weekly retrain", store, client=client)
    result = R.simulate(rid, dataset, store, client=client, params=FAST)
    return rid, result


def test_whole_loop_request_simulate_approve_promote_rollback(client, store):
    # first request: no champion yet, so metrics_before is the no-filter baseline
    ds1 = make_dataset(seed=1)
    rid1 = R.request_retrain(STRATEGY, "alice", "first model", store, client=client)
    assert client.get_run(rid1).data.tags["status"] == "requested"
    sim1 = R.simulate(rid1, ds1, store, client=client, params=FAST)
    assert sim1["gate_passed"], sim1["gate_reasons"]
    assert sim1["gate"] == {"passed": True, "reasons": [], "compared_with": "baseline"}
    assert sim1["champion_version"] is None
    assert sim1["metrics_before"]["overall"]["fp_cut"] == 0.0          # baseline keeps all
    assert set(sim1["metrics_after_simulation"]["per_symbol"]) == {"EURUSD", "GBPUSD"}
    shown = R.show_request(rid1, client=client, store=store)
    assert shown["status"] == "pending_approval" and shown["gate"]["passed"] is True
    assert set(shown["metrics_before"]["per_symbol"]) == {"EURUSD", "GBPUSD"}
    assert shown["metrics_after_simulation"]["overall"]["fp_cut"] > 0.3
    pending = R.list_requests("pending_approval", STRATEGY, client=client)
    assert list(pending["request_id"]) == [rid1]

    done1 = R.approve(rid1, "bob", "looks right", None, store, client=client)
    assert done1["version"] == "1" and done1["aliases"] == {"champion": "1"}
    assert done1["model_version"] == f"{NAME}/1"
    assert R.aliases(STRATEGY, client=client) == {"champion": "1"}
    v1 = R.load_meta_model(f"models:/{NAME}@champion", client=client)
    assert v1.final and v1.trained_on == client.get_run(rid1).data.tags["dataset.sha256"]
    assert v1.threshold == pytest.approx(sim1["metrics_after_simulation"]["threshold"])

    # second request: a dataset with a signal the champion does not know (ai_score), covering
    # twice the time: the comparison uses only insights created after the champion's last one
    ds2 = make_dataset(seed=2, ai_weight=3.0, days=120)
    rid2 = R.request_retrain(STRATEGY, "alice", "new ai_score signal", store, client=client)
    sim2 = R.simulate(rid2, ds2, store, client=client, params=FAST)
    assert sim2["champion_version"] == "1"
    assert pd.Timestamp(sim2["validation_from"]) > pd.Timestamp(
        R.load_meta_model(f"models:/{NAME}/1", client=client).trained_until)
    # metrics_before = the champion scored on the same validation rows, per symbol
    champion = R.load_meta_model(f"models:/{NAME}/1", client=client)
    expected_before = mm.evaluate_model(champion, ds2, sim2["validation_from"])
    assert sim2["metrics_before"]["overall"]["fp_cut"] == pytest.approx(
        expected_before["overall"]["fp_cut"])
    for sym in ("EURUSD", "GBPUSD"):
        assert sim2["metrics_before"]["per_symbol"][sym]["n"] == \
            sim2["metrics_after_simulation"]["per_symbol"][sym]["n"]
    assert sim2["gate_passed"], sim2["gate_reasons"]
    run2 = client.get_run(rid2)
    assert run2.data.tags["gate_passed"] == "true"
    assert "before.EURUSD.fp_cut" in run2.data.metrics and "after.GBPUSD.fp_cut" in \
        run2.data.metrics

    done2 = R.approve(rid2, "carol", "", None, store, client=client)
    assert done2["version"] == "2"
    assert R.aliases(STRATEGY, client=client) == {"champion": "2", "previous": "1"}
    versions = R.model_versions_frame(STRATEGY, client=client)
    assert list(versions["version"]) == ["2", "1"]
    assert list(versions["aliases"]) == [["champion"], ["previous"]]
    assert list(versions["retrain_request"]) == [rid2, rid1]
    assert versions["val.fp_cut"].notna().all()

    # rollback: champion == previous version again, the request that produced v2 rolled back
    back = R.rollback(STRATEGY, "dave", "fills look wrong", store, client=client)
    assert back["request_id"] == rid2 and back["rolled_back_version"] == "2"
    assert R.aliases(STRATEGY, client=client) == {"champion": "1"}
    assert client.get_model_version_by_alias(NAME, "champion").version in (1, "1")

    _assert_trail(store, rid1, [("", "requested", "alice"), ("requested", "simulating", "autopsy"),
                                ("simulating", "pending_approval", "autopsy"),
                                ("pending_approval", "approved", "bob"),
                                ("approved", "training", "bob"),
                                ("training", "completed", "bob")])
    _assert_trail(store, rid2, [("", "requested", "alice"), ("requested", "simulating", "autopsy"),
                                ("simulating", "pending_approval", "autopsy"),
                                ("pending_approval", "approved", "carol"),
                                ("approved", "training", "carol"),
                                ("training", "completed", "carol"),
                                ("completed", "rolled_back", "dave")])
    moves = store.alias_moves(NAME)
    assert list(zip(moves["alias"], moves["from_version"], moves["to_version"], moves["actor"],
                    strict=True)) == [
        ("champion", None, "1", "bob"), ("champion", "1", "2", "carol"),
        ("previous", None, "1", "carol"), ("champion", "2", "1", "dave"),
        ("previous", "1", None, "dave")]
    assert client.get_run(rid2).data.tags["status"] == "rolled_back"
    client.set_tag(rid2, "status", "completed")       # a tag lagging the trail (crash)
    assert R.sync_status(rid2, store, client=client) == "rolled_back"
    assert client.get_run(rid2).data.tags["status"] == "rolled_back"
    listed = R.list_requests(client=client, store=store)
    assert dict(zip(listed["request_id"], listed["status"], strict=True)) == {
        rid1: "completed", rid2: "rolled_back"}

    # a second rollback has no previous version left: refused, nothing changes
    before = snapshot(client, store)
    with pytest.raises(LifecycleError, match="no previous version"):
        R.rollback(STRATEGY, "dave", "again", store, client=client)
    assert snapshot(client, store) == before


def test_illegal_steps_raise_and_change_nothing(client, store):
    ds = make_dataset(seed=1)
    rid = R.request_retrain(STRATEGY, "alice", "retrain", store, client=client)

    def refused(call, match):
        before = snapshot(client, store, request_id=rid)
        with pytest.raises(LifecycleError, match=match) as info:
            call()
        assert rid in str(info.value) or NAME in str(info.value)
        assert snapshot(client, store, request_id=rid) == before

    # skipping the simulation
    refused(lambda: R.approve(rid, "bob", "ok", ds, store, client=client),
            "not been simulated")
    refused(lambda: R.reject(rid, "bob", "no", store, client=client), "not been simulated")
    R.simulate(rid, ds, store, client=client, params=FAST)
    refused(lambda: R.simulate(rid, ds, store, client=client), "waiting for a reviewer")
    # a decision written as tags in the MLflow UI is carried out through approve(), which
    # still refuses the requester
    client.set_tag(rid, "approved_by", "alice")
    ui = R.ui_decisions(client=client)
    assert ui[["request_id", "decision", "reviewer"]].values.tolist() == [
        [rid, "approve", "alice"]]
    # self-approval, also spelled differently
    refused(lambda: R.approve(rid, "alice", "mine", None, store, client=client),
            "self-approval")
    refused(lambda: R.approve(rid, "  ALICE ", "mine", None, store, client=client),
            "self-approval")
    refused(lambda: R.reject(rid, "Alice", "mine", store, client=client), "self-approval")
    refused(lambda: R.approve(rid, "", "who?", None, store, client=client), "reviewer")
    refused(lambda: R.reject(rid, "bob", "  ", store, client=client), "needs notes")
    # a dataset other than the simulated one
    refused(lambda: R.approve(rid, "bob", "ok", make_dataset(seed=9), store, client=client),
            "not the one simulated")
    # rollback with no previous version (no champion at all yet)
    refused(lambda: R.rollback(STRATEGY, "bob", "undo", store, client=client),
            "no previous version")

    out = R.approve(rid, "bob", "ok", ds, store, client=client)  # the simulated dataset: fine
    assert out["version"] == "1"
    # approving twice, or rejecting after approval
    refused(lambda: R.approve(rid, "carol", "again", None, store, client=client),
            "already approved")
    refused(lambda: R.reject(rid, "carol", "too late", store, client=client), "already approved")
    refused(lambda: R.rollback(STRATEGY, "carol", "undo", store, client=client),
            "no previous version")
    refused(lambda: R.rollback_request(rid, "carol", "undo", store, client=client),
            "no previous version")
    with pytest.raises(LifecycleError, match="no such request"):
        R.approve("0" * 32, "bob", "", None, store, client=client)
    assert store.latest_status(rid) == "completed"


def test_gate_failing_on_a_symbol_refuses_approval(client, store):
    # champion: trained where confidence drives success on both symbols
    champ_ds = make_dataset(seed=1, days=30)  # learned the first month only
    champion = mm.train_meta_model(champ_ds, params=FAST).fit_final(champ_ds)
    name, version, _ = R.log_model_version(champion, champ_ds, STRATEGY, client=client)
    R.promote(STRATEGY, version, "ops", "initial champion", store, client=client)

    # the new data flips GBPUSD's relation during the training period: the candidate learns it
    # wrong and is far worse than the champion on GBPUSD's validation rows
    ds = make_dataset(seed=3, reverse_train={"GBPUSD": 0.7})
    rid, sim = _requested_and_simulated(client, store, ds)
    assert not sim["gate_passed"]
    per_symbol = [r for r in sim["gate_reasons"] if r.startswith("GBPUSD:")]
    assert per_symbol and "points below the champion" in per_symbol[0]
    assert sim["metrics_after_simulation"]["per_symbol"]["GBPUSD"]["n"] >= 50
    assert client.get_run(rid).data.tags["gate_passed"] == "false"
    assert "GBPUSD" in R.show_request(rid, client=client, store=store)["tags"]["gate_reasons"]

    before = snapshot(client, store, request_id=rid)
    with pytest.raises(LifecycleError, match="(?s)failed the promotion gate.*GBPUSD"):
        R.approve(rid, "bob", "ship it", None, store, client=client)
    assert snapshot(client, store, request_id=rid) == before
    assert R.aliases(STRATEGY, client=client) == {"champion": version}

    R.reject(rid, "bob", "worse on GBPUSD", store, client=client)
    assert store.latest_status(rid) == "rejected"
    assert client.get_run(rid).data.tags["status"] == "rejected"


def _race(client, store, rid, dataset):
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def run(kind, call):
        barrier.wait()
        try:
            results[kind] = call()
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[kind] = exc

    threads = [threading.Thread(target=run, args=("approve", lambda: R.approve(
                   rid, "bob", "go", None, store, client=client))),
               threading.Thread(target=run, args=("reject", lambda: R.reject(
                   rid, "carol", "no", store, client=client)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    failed = {k: v for k, v in results.items() if isinstance(v, Exception)}
    assert len(results) == 2 and len(failed) == 1, results
    assert all(isinstance(v, LifecycleError) for v in failed.values()), failed
    tr = store.trail(rid)
    decisions = tr[tr["from_status"] == "pending_approval"]
    assert len(decisions) == 1
    winner = "approve" if "reject" in failed else "reject"
    if winner == "approve":
        assert decisions["to_status"].iat[0] == "approved"
        assert store.latest_status(rid) == "completed"
        assert R.aliases(STRATEGY, client=client) == {"champion": "1"}
    else:
        assert decisions["to_status"].iat[0] == "rejected"
        assert store.latest_status(rid) == "rejected"
        assert R.aliases(STRATEGY, client=client) == {}
        assert len(R.model_versions_frame(STRATEGY, client=client)) == 0
    assert client.get_run(rid).data.tags["status"] == store.latest_status(rid)
    return winner


def test_racing_approve_and_reject_one_wins(client, store):
    rid, _ = _requested_and_simulated(client, store, make_dataset(seed=1))
    _race(client, store, rid, None)


@pytest.mark.integration
def test_trail_on_postgresql(client, pg_store):
    """The lifecycle's trail and alias moves on a PostgreSQL audit store: refusals, a racing
    approval and rejection, an approval and a rollback."""
    store = pg_store
    rid, sim = _requested_and_simulated(client, store, make_dataset(seed=1))
    assert sim["gate_passed"]
    before = snapshot(client, store, request_id=rid)
    with pytest.raises(LifecycleError, match="self-approval"):
        R.approve(rid, "alice", "", None, store, client=client)
    assert snapshot(client, store, request_id=rid) == before
    winner = _race(client, store, rid, None)
    expected = [("", "requested", "alice"), ("requested", "simulating", "autopsy"),
                ("simulating", "pending_approval", "autopsy")]
    if winner == "approve":
        expected += [("pending_approval", "approved", "bob"), ("approved", "training", "bob"),
                     ("training", "completed", "bob")]
    else:
        expected += [("pending_approval", "rejected", "carol")]
    _assert_trail(store, rid, expected)
    shown = R.show_request(rid, client=client, store=store)
    assert [(t["from_status"], t["to_status"], t["actor"]) for t in shown["trail"]] == expected
    assert all(t["at"] for t in shown["trail"])

    # a second request always goes through approval (its data beats either starting point)
    rid2, sim2 = _requested_and_simulated(client, store, make_dataset(seed=2, ai_weight=3.0,
                                                                      days=120), by="erin")
    assert sim2["gate_passed"], sim2["gate_reasons"]
    out = R.approve(rid2, "frank", "ok", None, store, client=client)
    first = winner == "approve"
    assert out["version"] == ("2" if first else "1")
    moves = store.alias_moves(NAME)
    assert moves["seq"].tolist() == list(range(1, len(moves) + 1))
    if first:
        R.rollback(STRATEGY, "grace", "undo", store, client=client)
        assert R.aliases(STRATEGY, client=client) == {"champion": "1"}
        assert store.latest_status(rid2) == "rolled_back"
    else:
        before = snapshot(client, store, request_id=rid2)
        with pytest.raises(LifecycleError, match="no previous version"):
            R.rollback(STRATEGY, "grace", "undo", store, client=client)
        assert snapshot(client, store, request_id=rid2) == before
        assert store.latest_status(rid2) == "completed"
    listed = R.list_requests(client=client, store=store)
    assert listed.set_index("request_id")["status"].to_dict() == {
        rid: store.latest_status(rid), rid2: store.latest_status(rid2)}
    assert np.isin(listed["status"], R.STATUSES).all()


@pytest.mark.integration
def test_everything_on_postgresql(pg_mlflow_uri, pg_store, tmp_path):
    """MLflow tracking + registry and the audit store both on PostgreSQL (the production
    setup): request, simulation, approval, the champion loaded back, the requests listed."""
    client = R.get_client()                                   # MLFLOW_TRACKING_URI
    assert client.tracking_uri.startswith("postgresql+psycopg2://")
    ds = make_dataset(seed=1)
    rid, sim = _requested_and_simulated(client, pg_store, ds)
    assert sim["gate_passed"]
    out = R.approve(rid, "bob", "ok", None, pg_store, client=client)
    assert out["version"] == "1"
    champion = R.load_meta_model(f"models:/{NAME}@champion")
    np.testing.assert_array_equal(champion.score(ds), mm.score_insights(
        ds, f"models:/{NAME}@champion").to_numpy())
    location = client.get_experiment_by_name("autopsy-meta").artifact_location
    assert location == (tmp_path / "home" / "mlartifacts" / "autopsy-meta").as_uri()
    listed = R.list_requests("completed", STRATEGY)
    assert list(listed["request_id"]) == [rid]
    _assert_trail(pg_store, rid, [
        ("", "requested", "alice"), ("requested", "simulating", "autopsy"),
        ("simulating", "pending_approval", "autopsy"), ("pending_approval", "approved", "bob"),
        ("approved", "training", "bob"), ("training", "completed", "bob")])


def test_a_champion_is_never_compared_on_rows_it_learned(client, store):
    ds = make_dataset(seed=1)
    champion = mm.train_meta_model(ds, params=FAST).fit_final(ds)
    assert champion.trained_until == ds["created_at"].max().isoformat()
    _, version, _ = R.log_model_version(champion, ds, STRATEGY, client=client)
    R.promote(STRATEGY, version, "ops", "initial champion", store, client=client)
    rid = R.request_retrain(STRATEGY, "alice", "same data again", store, client=client)
    before = snapshot(client, store, request_id=rid)
    with pytest.raises(LifecycleError, match="wait for audits of later insights"):
        R.simulate(rid, ds, store, client=client, params=FAST)
    assert snapshot(client, store, request_id=rid) == before
