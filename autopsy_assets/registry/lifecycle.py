"""The retrain-request lifecycle (DESIGN.md sections 2 "Learning loop" and 2a; issue 5 item 5).

A request is a run in experiment `autopsy-retrain` whose `status` tag holds its state:

    requested -> simulating -> pending_approval -> approved | rejected
    approved -> training -> completed -> rolled_back
    simulating | training -> failed        (an error during the step; the reason is recorded)

Every transition is first appended to the audit store's `audit_trail` (`record_transition`,
race-proof: it refuses unless the request is in the status the transition starts from, so of an
approval and a rejection racing exactly one wins), then written to the tags: the trail is
authoritative, the tags are MLflow's copy for search and the UI. Every illegal step raises
`LifecycleError` naming the request and the reason before anything is written.

The reviewer must not be the requester. Approval runs the final fit, registers the version and
moves the alias before it returns. Approval uses the dataset the simulation saw (a Parquet
snapshot logged on the request run); a different dataset is refused, so what a reviewer approves
is what was simulated.
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from autopsy_assets.registry import aliases as _aliases
from autopsy_assets.registry.errors import LifecycleError
from autopsy_assets.registry.tracking import (
    RETRAIN_EXPERIMENT,
    ClientLike,
    ensure_experiment,
    get_client,
    model_name,
    quiet_downloads,
    version_str,
)
from autopsy_assets.registry.versions import (
    _require_text,
    aliases,
    flatten_metrics,
    jsonable,
    load_meta_model,
    log_model_version,
)

STATUSES = ("requested", "simulating", "pending_approval", "approved", "rejected", "training",
            "completed", "rolled_back", "failed")
NEXT: dict[str, tuple[str, ...]] = {
    "": ("requested",), "requested": ("simulating",),
    "simulating": ("pending_approval", "failed"), "pending_approval": ("approved", "rejected"),
    "approved": ("training",), "training": ("completed", "failed"),
    "completed": ("rolled_back",),
}
SYSTEM_ACTOR = "autopsy"
ROLE_TAG = "autopsy.role"
SIM_DIR = "simulation"
BEFORE_JSON = f"{SIM_DIR}/metrics_before.json"
AFTER_JSON = f"{SIM_DIR}/metrics_after_simulation.json"
GATE_JSON = f"{SIM_DIR}/gate.json"
DATASET_PARQUET = f"{SIM_DIR}/dataset.parquet"
CANDIDATE_JSON = f"{SIM_DIR}/candidate.json"  # MetaModel.to_metadata() of the simulated model
_TAG_MAX = 8000  # MLflow silently truncates longer run tag values

REQUEST_COLUMNS = ("request_id", "strategy", "status", "requested_by", "reason", "reviewer",
                   "gate_passed", "model_version", "created", "source")


def _mm() -> Any:
    from autopsy_assets.domain import meta_model

    return meta_model


def _now() -> str:
    return pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")


def _same_person(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


# ----------------------------------------------------------------------------- plumbing

def _request_run(c: MlflowClient, request_id: str) -> Any:
    rid = str(request_id or "").strip()
    if not rid:
        raise LifecycleError("a retrain request id is required")
    try:
        run = c.get_run(rid)
    except MlflowException as exc:
        raise LifecycleError(f"retrain request {rid}: no such request (no MLflow run with that "
                             "id)", request_id=rid, reason="unknown request") from exc
    exp = c.get_experiment(run.info.experiment_id)
    if exp.name != RETRAIN_EXPERIMENT or run.data.tags.get(ROLE_TAG) != "retrain_request":
        raise LifecycleError(f"retrain request {rid}: run {rid} is not a retrain request (it is "
                             f"in experiment {exp.name!r})", request_id=rid,
                             reason="not a retrain request")
    return run


def _status(store: Any, request_id: str) -> str:
    status = store.latest_status(request_id)
    if status is None:
        raise LifecycleError(f"retrain request {request_id}: the audit trail has no record of it",
                             request_id=request_id, reason="unknown request")
    return str(status)


def _refuse(request_id: str, reason: str) -> LifecycleError:
    return LifecycleError(f"retrain request {request_id}: {reason}; nothing was changed",
                          request_id=request_id, reason=reason)


def _expect(request_id: str, status: str, wanted: str, action: str) -> None:
    """Refuse `action` unless the request is in `wanted`, saying what is wrong in words."""
    if status == wanted:
        return
    hints = {
        "requested": "it has not been simulated yet (run the simulation first)",
        "simulating": "its simulation is still running or did not finish",
        "pending_approval": "it is waiting for a reviewer's decision",
        "approved": "it was already approved",
        "training": "it was already approved and is training",
        "completed": "it was already approved and completed",
        "rejected": "it was rejected",
        "rolled_back": "it was completed and then rolled back",
        "failed": "it failed",
    }
    raise _refuse(request_id, f"cannot {action}: it is {status!r}, not {wanted!r} "
                              f"({hints.get(status, 'unexpected status')})")


def _transition(c: MlflowClient, store: Any, request_id: str, frm: str, to: str, actor: str,
                reason: str = "", tags: Mapping[str, Any] | None = None) -> None:
    """Trail first (refuses unless the request is in `frm`), then the MLflow tags."""
    from autopsy_assets.store import TransitionConflict

    try:
        store.record_transition(request_id, frm, to, actor, reason)
    except TransitionConflict as exc:
        actual = getattr(exc, "actual", None)
        raise _refuse(request_id, f"cannot move {frm!r} -> {to!r}: another actor changed it "
                                  f"first (it is now {actual!r})") from exc
    all_tags = {"status": to, f"{to}_at": _now(), f"{to}_by": actor, **(tags or {})}
    _set_tags(c, request_id, all_tags)


def _set_tags(c: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    c.log_batch(run_id, tags=[RunTag(k, _tag_value(v)) for k, v in tags.items()])


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(jsonable(value))
    return text if len(text) <= _TAG_MAX else text[:_TAG_MAX - 20] + " ... [truncated]"


def _strategy_rows(dataset: pd.DataFrame, strategy: str, request_id: str) -> pd.DataFrame:
    if not isinstance(dataset, pd.DataFrame):
        raise _refuse(request_id, "the dataset must be a DataFrame from build_dataset")
    ds = dataset
    if "strategy" in ds.columns:
        ds = ds[ds["strategy"].astype(str) == strategy]
    if len(ds) == 0:
        raise _refuse(request_id, f"the dataset has no rows of strategy {strategy!r}")
    out = ds.reset_index(drop=True)
    out.attrs = dict(dataset.attrs)
    return out


def _log_json(c: MlflowClient, run_id: str, obj: Any, path: str) -> None:
    c.log_dict(run_id, jsonable(obj), path)


def _load_json(c: MlflowClient, run_id: str, path: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp, quiet_downloads():
        try:
            local = c.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return json.loads(Path(local).read_text())


def _snapshot_dataset(c: MlflowClient, run_id: str, dataset: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(DATASET_PARQUET).name
        dataset.to_parquet(path)
        c.log_artifact(run_id, str(path), SIM_DIR)


def _load_snapshot(c: MlflowClient, run_id: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp, quiet_downloads():
        try:
            local = c.download_artifacts(run_id, DATASET_PARQUET, tmp)
        except (MlflowException, OSError):
            return None
        return pd.read_parquet(local)


# ----------------------------------------------------------------------------- the steps

def request_retrain(strategy: str, requested_by: str, reason: str, store: Any, *,
                    client: ClientLike = None, source: str = "manual") -> str:
    """Open a retrain request for `strategy` (status `requested`); returns its id (the run id).
    `source` says who raised it (manual, degradation, ...)."""
    c = get_client(client)
    name = model_name(strategy)
    strategy = name[len("autopsy-meta-"):]
    who = _require_text(requested_by, "requested_by", f"retrain request for {name}")
    why = str(reason or "").strip()
    exp_id = ensure_experiment(c, RETRAIN_EXPERIMENT)
    run = c.create_run(exp_id, run_name=f"retrain-{strategy}", tags={
        ROLE_TAG: "retrain_request", "status": "opening", "strategy": strategy,
        "model_name": name, "requested_by": who, "reason": _tag_value(why), "source": source})
    rid = run.info.run_id
    c.set_terminated(rid)  # a record, not a job; finished runs still take tags and artifacts
    try:
        _transition(c, store, rid, "", "requested", who, why)
    except BaseException:
        _set_tags(c, rid, {"status": "failed", "failed_reason": "could not record the request"})
        raise
    return rid


def simulate(request_id: str, dataset: pd.DataFrame, store: Any, *, client: ClientLike = None,
             validation_from: Any = None, kind: str = "hgb", actor: str = SYSTEM_ACTOR,
             params: Mapping[str, Any] | None = None, n_boot: int | None = None
             ) -> dict[str, Any]:
    """requested -> simulating -> pending_approval. Trains a candidate on the training split of
    the strategy's rows (`train_meta_model`), evaluates it on the later validation split, and
    scores the champion (if any; else the no-filter baseline) on the same validation rows.
    `kind` and `params` (estimator parameters) are the candidate's; the final fit at approval
    reuses them.
    Logs metrics_before / metrics_after_simulation (overall and per symbol) and the gate result
    to the request run. Returns {request_id, strategy, gate_passed, gate_reasons, gate
    {passed, reasons, compared_with}, metrics_before, metrics_after_simulation,
    champion_version, validation_from}. An error while
    simulating moves the request to `failed` (with the reason) and is re-raised."""
    c = get_client(client)
    run = _request_run(c, request_id)
    rid = run.info.run_id
    strategy = run.data.tags["strategy"]
    name = model_name(strategy)
    _expect(rid, _status(store, rid), "requested", "simulate")
    mm = _mm()
    ds = _strategy_rows(dataset, strategy, rid)
    champ_version = aliases(name, client=c).get("champion")
    champion = (load_meta_model(f"models:/{name}/{champ_version}", client=c)
                if champ_version is not None else None)
    if validation_from is None and champion is not None and champion.trained_until:
        # the champion's final fit learned every row up to trained_until: scoring it there would
        # flatter it, so both models are compared on insights created after that only
        default_vf = mm.split(ds)[2]
        validation_from = max(default_vf, pd.Timestamp(champion.trained_until) + pd.Timedelta(1))
    try:
        train, val, vf = mm.split(ds, validation_from)
    except ValueError as exc:
        raise _refuse(rid, f"cannot split the dataset: {exc}") from exc
    if not train.any() or not val.any():
        since = (f" (the champion {name}/{champ_version} learned every insight up to "
                 f"{champion.trained_until}: wait for audits of later insights)"
                 if champion is not None and champion.trained_until else "")
        raise _refuse(rid, f"the split at {vf.isoformat()} leaves {int(train.sum())} training "
                           f"and {int(val.sum())} validation rows; both are needed{since}")
    if kind not in mm.KINDS:
        raise _refuse(rid, f"unknown model kind {kind!r} (expected one of {mm.KINDS})")

    _transition(c, store, rid, "requested", "simulating", actor, "simulation started")
    try:
        boot = {} if n_boot is None else {"n_boot": n_boot}
        candidate = mm.train_meta_model(ds, validation_from=vf, kind=kind,
                                        params=dict(params) if params else None, **boot)
        if champion is not None:
            before = mm.evaluate_model(champion, ds, vf, **boot)
            gate = mm.promotion_gate(candidate.metrics, before)
        else:
            before = mm.baseline_metrics(ds, vf)
            gate = mm.promotion_gate(candidate.metrics, None)
        after = candidate.metrics
        passed, reasons = bool(gate[0]), list(gate[1])
        sha = mm.dataset_hash(ds)
        gate_doc = {"passed": passed, "reasons": reasons,
                    "compared_with": f"{name}/{champ_version}" if champ_version else "baseline"}
        _log_json(c, rid, before, BEFORE_JSON)
        _log_json(c, rid, after, AFTER_JSON)
        _log_json(c, rid, gate_doc, GATE_JSON)
        _log_json(c, rid, candidate.to_metadata(), CANDIDATE_JSON)
        _snapshot_dataset(c, rid, ds)
        metrics = {**flatten_metrics(before, "before"), **flatten_metrics(after, "after")}
        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for i in range(0, len(ms), 1000):
            c.log_batch(rid, metrics=ms[i:i + 1000])
        ov_b, ov_a = before.get("overall", {}), after.get("overall", {})
        _set_tags(c, rid, {
            "gate_passed": "true" if passed else "false",
            "gate_reasons": "\n".join(reasons) if reasons else "passed",
            "champion_version": champ_version or "none", "kind": kind,
            "validation_from": vf.isoformat(), "n_train": str(int(train.sum())),
            "n_validation": str(int(val.sum())), "dataset.sha256": sha,
            "dataset.rows": str(len(ds)),
            "before.fp_cut": _num(ov_b.get("fp_cut")), "after.fp_cut": _num(ov_a.get("fp_cut")),
            "after.fp_cut_lower": _num(ov_a.get("fp_cut_lower")),
            "before.fpr": _num(ov_b.get("fpr")), "after.fpr": _num(ov_a.get("fpr")),
        })
    except BaseException as exc:
        _fail(c, store, rid, "simulating", exc)
        raise
    _transition(c, store, rid, "simulating", "pending_approval", actor,
                "gate passed" if passed else "gate failed: " + " ".join(reasons))
    return {"request_id": rid, "strategy": strategy, "gate_passed": passed,
            "gate_reasons": reasons, "gate": gate_doc, "metrics_before": before,
            "metrics_after_simulation": after, "champion_version": champ_version,
            "validation_from": vf.isoformat()}


def _num(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if f != f else f"{f:.4f}"


def _fail(c: MlflowClient, store: Any, rid: str, frm: str, exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        _transition(c, store, rid, frm, "failed", SYSTEM_ACTOR, reason,
                    {"failed_reason": reason, "failed_step": frm})
    except Exception:  # noqa: BLE001 - keep the original error; the trail shows the status
        pass


def _check_reviewer(run: Any, rid: str, reviewer: str, action: str) -> str:
    who = _require_text(reviewer, "reviewer", f"retrain request {rid}")
    requester = run.data.tags.get("requested_by", "")
    if _same_person(who, requester):
        raise _refuse(rid, f"{who} requested it and cannot also {action} it (self-approval is "
                           "not allowed; another person must review)")
    return who


def approve(request_id: str, reviewer: str, notes: str = "", dataset: pd.DataFrame | None = None,
            store: Any = None, *, client: ClientLike = None) -> dict[str, Any]:
    """pending_approval -> approved -> training -> completed, before returning: the final fit
    (`fit_final` on every row of the simulated dataset), a registered version with the
    `retrain_request` tag, and the champion alias moved to it (the old one becomes `previous`).

    Refused (LifecycleError, nothing changed) when the reviewer is the requester, the request is
    not pending approval (not simulated yet, already decided), the simulation's gate failed, or
    `dataset` differs from the simulated one (pass None to use the simulation's snapshot). An
    error during training moves the request to `failed` and is re-raised."""
    if store is None:
        raise LifecycleError("approve needs the audit store (store=...)")
    c = get_client(client)
    run = _request_run(c, request_id)
    rid = run.info.run_id
    tags = run.data.tags
    who = _check_reviewer(run, rid, reviewer, "approve")
    _expect(rid, _status(store, rid), "pending_approval", "approve")
    if tags.get("gate_passed") != "true":
        raise _refuse(rid, "its simulation failed the promotion gate: "
                           + tags.get("gate_reasons", "no gate result recorded")
                           + " (reject it, or raise a new request with more data)")
    strategy = tags["strategy"]
    mm = _mm()
    ds = _approval_dataset(c, rid, tags, dataset, strategy)
    notes = str(notes or "").strip()

    _transition(c, store, rid, "pending_approval", "approved", who, notes,
                {"reviewer": who, "review_notes": notes, "decision": "approved"})
    _transition(c, store, rid, "approved", "training", who, "final fit started")
    try:
        meta = _load_json(c, rid, CANDIDATE_JSON)
        if meta is not None:  # the simulated candidate's kind, params, threshold and metrics
            candidate = mm.MetaModel.from_metadata(None, meta)
        else:
            candidate = mm.train_meta_model(ds, validation_from=tags.get("validation_from"),
                                            kind=tags.get("kind", "hgb"))
        final = candidate.fit_final(ds)
        name, version, model_run = log_model_version(final, ds, strategy, request_id=rid,
                                                     client=c)
        _set_tags(c, rid, {"model_version": f"{name}/{version}", "model_run_id": model_run})
        moved = _aliases.promote(strategy, version, who,
                                 f"retrain request {rid} approved by {who}"
                                 + (f": {notes}" if notes else ""), store=store, client=c)
    except BaseException as exc:
        _fail(c, store, rid, "training", exc)
        raise
    _transition(c, store, rid, "training", "completed", who,
                f"{name} version {version} is the champion")
    return {"request_id": rid, "strategy": strategy, "model_name": name, "version": version,
            "model_version": f"{name}/{version}", "run_id": model_run,
            "aliases": moved["aliases"]}


def _approval_dataset(c: MlflowClient, rid: str, tags: Mapping[str, str],
                      dataset: pd.DataFrame | None, strategy: str) -> pd.DataFrame:
    mm = _mm()
    snap = _load_snapshot(c, rid)
    if dataset is None:
        if snap is None:
            raise _refuse(rid, "the simulation's dataset snapshot is missing; pass the dataset")
        return snap
    ds = _strategy_rows(dataset, strategy, rid)
    want = tags.get("dataset.sha256")
    if want and mm.dataset_hash(ds) != want:
        raise _refuse(rid, f"the dataset given ({len(ds)} rows of {strategy}) is not the one "
                           f"simulated (sha256 {want[:12]}..., {tags.get('dataset.rows')} rows); "
                           "approve with dataset=None to use the simulated snapshot, or raise "
                           "a new request")
    return ds


def reject(request_id: str, reviewer: str, notes: str, store: Any, *,
           client: ClientLike = None) -> dict[str, Any]:
    """pending_approval -> rejected, by a reviewer who is not the requester, with notes."""
    c = get_client(client)
    run = _request_run(c, request_id)
    rid = run.info.run_id
    who = _check_reviewer(run, rid, reviewer, "reject")
    notes = str(notes or "").strip()
    if not notes:
        raise _refuse(rid, "a rejection needs notes saying why")
    _expect(rid, _status(store, rid), "pending_approval", "reject")
    _transition(c, store, rid, "pending_approval", "rejected", who, notes,
                {"reviewer": who, "review_notes": notes, "decision": "rejected"})
    return {"request_id": rid, "status": "rejected", "reviewer": who}


def rollback(strategy: str, actor: str, reason: str, store: Any, *,
             client: ClientLike = None) -> dict[str, Any]:
    """Champion back to `previous`, recorded in alias_moves; the request that produced the
    current champion (if any, and completed) moves completed -> rolled_back. Refused when there
    is no previous version."""
    c = get_client(client)
    name = model_name(strategy)
    who = _require_text(actor, "actor", name)
    live = aliases(name, client=c)
    champ = live.get("champion")
    if live.get("previous") is None:
        raise LifecycleError(f"{name}: no previous version to roll back to (champion: "
                             f"{champ or 'none'}); nothing was changed", request_id=name,
                             reason="no previous version")
    rid = None
    if champ is not None:
        mv = c.get_model_version(name, champ)
        rid = (mv.tags or {}).get("retrain_request")
        if rid and store.latest_status(rid) != "completed":
            rid = None
    return _do_rollback(c, store, name, champ, rid, who, reason)


def rollback_request(request_id: str, actor: str, reason: str, store: Any, *,
                     client: ClientLike = None) -> dict[str, Any]:
    """completed -> rolled_back for `request_id`, whose version must be the current champion;
    the champion goes back to `previous`."""
    c = get_client(client)
    run = _request_run(c, request_id)
    rid = run.info.run_id
    who = _require_text(actor, "actor", f"retrain request {rid}")
    _expect(rid, _status(store, rid), "completed", "roll back")
    name = model_name(run.data.tags["strategy"])
    mv_ref = run.data.tags.get("model_version", "")
    version = mv_ref.rsplit("/", 1)[-1] if mv_ref else None
    live = aliases(name, client=c)
    if version is None or live.get("champion") != version:
        raise _refuse(rid, f"its version {version} is not the champion of {name} (the champion "
                           f"is {live.get('champion')}); only the champion can be rolled back")
    if live.get("previous") is None:
        raise _refuse(rid, f"{name} has no previous version to roll back to")
    return _do_rollback(c, store, name, version, rid, who, reason)


def _do_rollback(c: MlflowClient, store: Any, name: str, champ: str | None, rid: str | None,
                 who: str, reason: str) -> dict[str, Any]:
    why = str(reason or "").strip() or "rollback"
    moved = _aliases._rollback(c, store, name, who,
                               why + (f" (retrain request {rid})" if rid else ""),
                               expect_champion=champ)
    if rid:
        _transition(c, store, rid, "completed", "rolled_back", who, why,
                    {"rolled_back_to": moved["aliases"].get("champion", "")})
    return {"model_name": name, "rolled_back_version": champ, "request_id": rid,
            "aliases": moved["aliases"]}


# ----------------------------------------------------------------------------- views

def sync_status(request_id: str, store: Any, *, client: ClientLike = None) -> str:
    """Rewrite the `status` tag from the trail (after a crash between the two writes)."""
    c = get_client(client)
    status = _status(store, request_id)
    if c.get_run(request_id).data.tags.get("status") != status:
        _set_tags(c, request_id, {"status": status})
    return status


def list_requests(status: str | None = None, strategy: str | None = None, *,
                  client: ClientLike = None, store: Any = None) -> pd.DataFrame:
    """Retrain requests, newest first: request_id, strategy, status, requested_by, reason,
    reviewer, gate_passed, model_version, created, source. One search per status (tag filters
    support no IN/OR). With `store`, status comes from the audit trail (authoritative)."""
    c = get_client(client)
    if status is not None and status not in STATUSES:
        raise LifecycleError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
    exp = c.get_experiment_by_name(RETRAIN_EXPERIMENT)
    if exp is None:
        return pd.DataFrame(columns=list(REQUEST_COLUMNS))
    wanted = [status] if status is not None and store is None else [*STATUSES, "opening"]
    extra = f" AND tags.strategy = '{model_name(strategy)[len('autopsy-meta-'):]}'" \
        if strategy else ""
    rows: dict[str, dict[str, Any]] = {}
    for s in wanted:
        token = None
        while True:
            page = c.search_runs([exp.experiment_id],
                                 filter_string=f"tags.status = '{s}'{extra}",
                                 max_results=1000, page_token=token)
            for r in page:
                t = r.data.tags
                if t.get(ROLE_TAG) != "retrain_request":
                    continue
                rows[r.info.run_id] = {
                    "request_id": r.info.run_id, "strategy": t.get("strategy"),
                    "status": t.get("status"), "requested_by": t.get("requested_by"),
                    "reason": t.get("reason", ""), "reviewer": t.get("reviewer"),
                    "gate_passed": {"true": True, "false": False}.get(t.get("gate_passed", "")),
                    "model_version": t.get("model_version"),
                    "created": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC"),
                    "source": t.get("source", "")}
            token = page.token
            if not token:
                break
    df = pd.DataFrame(list(rows.values()), columns=list(REQUEST_COLUMNS))
    if store is not None and len(df):
        df["status"] = [store.latest_status(r) or s for r, s in zip(df["request_id"],
                                                                    df["status"], strict=True)]
        if status is not None:
            df = df[df["status"] == status]
    return df.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def show_request(request_id: str, *, client: ClientLike = None,
                 store: Any = None) -> dict[str, Any]:
    """Everything about one request: request_id, strategy, status (from the trail when `store`
    is given), requested_by, reason, reviewer, review_notes, model_version, tags, gate {passed,
    reasons, compared_with}, metrics_before, metrics_after_simulation (overall + per symbol),
    trail (list of transitions with actor and time; needs `store`)."""
    c = get_client(client)
    run = _request_run(c, request_id)
    rid = run.info.run_id
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    status = tags.get("status")
    trail: list[dict[str, Any]] = []
    if store is not None:
        status = store.latest_status(rid) or status
        tr = store.trail(rid)
        trail = [jsonable(r) for r in tr.to_dict(orient="records")]
    gate = _load_json(c, rid, GATE_JSON)
    return {
        "request_id": rid, "strategy": tags.get("strategy"), "status": status,
        "requested_by": tags.get("requested_by"), "reason": tags.get("reason", ""),
        "source": tags.get("source"), "reviewer": tags.get("reviewer"),
        "review_notes": tags.get("review_notes"), "model_version": tags.get("model_version"),
        "created": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").isoformat(),
        "gate": gate or {"passed": None, "reasons": [], "compared_with": None},
        "metrics_before": _load_json(c, rid, BEFORE_JSON),
        "metrics_after_simulation": _load_json(c, rid, AFTER_JSON),
        "tags": tags, "trail": trail,
    }


def ui_decisions(*, client: ClientLike = None) -> pd.DataFrame:
    """Decisions a reviewer wrote as tags in the MLflow UI on a pending request, for the approval
    sensor to carry out with `approve` / `reject` (which still refuse self-approval and every
    other illegal step): tag `approved_by` = the reviewer's name (optional `approval_notes`), or
    `rejected_by` (optional `rejection_notes`). Columns: request_id, strategy, decision
    (approve | reject), reviewer, notes."""
    c = get_client(client)
    cols = ["request_id", "strategy", "decision", "reviewer", "notes"]
    exp = c.get_experiment_by_name(RETRAIN_EXPERIMENT)
    if exp is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for decision, by, notes in (("approve", "approved_by", "approval_notes"),
                                ("reject", "rejected_by", "rejection_notes")):
        runs = c.search_runs([exp.experiment_id], filter_string=(
            f"tags.status = 'pending_approval' AND tags.{by} != ''"), max_results=1000)
        for r in runs:
            t = r.data.tags
            if t.get(ROLE_TAG) == "retrain_request" and t.get(by, "").strip():
                rows.append([r.info.run_id, t.get("strategy"), decision, t[by].strip(),
                             t.get(notes, "")])
    return pd.DataFrame(rows, columns=cols)


def version_of(request_id: str, *, client: ClientLike = None) -> tuple[str, str] | None:
    """(model_name, version) a completed request registered, else None."""
    c = get_client(client)
    ref = c.get_run(request_id).data.tags.get("model_version")
    if not ref:
        return None
    name, version = ref.rsplit("/", 1)
    return name, version_str(version)
