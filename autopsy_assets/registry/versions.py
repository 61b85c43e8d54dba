"""Model versions: log a trained meta-model as an MLflow run + registered version, load it back,
and the registry's view of every version (DESIGN.md sections 2 "Learning loop", 2a, 5).

One registered model per strategy, `autopsy-meta-<strategy>`. A version's run (experiment
`autopsy-meta`) holds params, validation metrics (overall and per symbol, flattened as
`val.<metric>` and `val.<SYMBOL>.<metric>`), feature importance, the SHAP summary plot and global
importance JSON, the dataset as an MLflow dataset input (our own digest; the full sha256 in a
tag), the git commit, and the estimator (skops, reviewed trusted types) with `meta_model.json`
(feature_names, metrics, threshold, kind, trained_on) in the same model directory.
"""
from __future__ import annotations

import copy
import json
import math
import re
import tempfile
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from autopsy_assets.domain.meta_model import dataset_hash
from autopsy_assets.registry.errors import LifecycleError
from autopsy_assets.registry.tracking import (
    META_EXPERIMENT,
    MODEL_PREFIX,
    ClientLike,
    artifact_root,
    autopsy_home,
    client_uri,
    ensure_experiment,
    fluent,
    get_client,
    git_commit,
    model_name,
    quiet_downloads,
    version_str,
)

ALIASES = ("champion", "challenger", "previous")
META_JSON = "meta_model.json"
SHAP_PLOT = "shap/summary.png"
SHAP_JSON = "shap/global_importance.json"
IMPORTANCE_JSON = "importance/feature_importance.json"

# Reviewed skops types per estimator: skops refuses anything not listed, at save and at load.
SKOPS_TRUSTED: dict[str, list[str]] = {
    "HistGradientBoostingClassifier": [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
    "RandomForestClassifier": ["sklearn.tree._tree.Tree"],
    "ExtraTreesClassifier": ["sklearn.tree._tree.Tree"],
    "DecisionTreeClassifier": ["sklearn.tree._tree.Tree"],
}
# Further types skops may ask for that we accept for our own estimators (HGB with native
# categoricals, DESIGN section 5; autopsy encodes categoricals as numbers, but accept them).
SKOPS_ALSO_ACCEPTED = frozenset({"functools.partial", "sklearn.utils.validation.check_array"})

_METRIC_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")
_MAX_PARAM = 6000
_EXPLAIN_ROWS = 1000


# ----------------------------------------------------------------------------- small helpers

def _require_text(value: object, what: str, subject: str = "") -> str:
    """`value` stripped; LifecycleError naming `subject` (a request or model) when blank."""
    text = str(value or "").strip()
    if not text:
        where = f"{subject}: " if subject else ""
        raise LifecycleError(f"{where}{what} is required (a person's name, not blank); nothing "
                             "was changed", request_id=subject, reason=f"{what} is blank")
    return text


def _finite(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return v if not math.isnan(v) else None
    return None


def flatten_metrics(metrics: Mapping[str, Any] | None, prefix: str = "val") -> dict[str, float]:
    """`{"overall": {"fp_cut": .4}, "per_symbol": {"EURUSD": {"fp_cut": .3, "n": 80}},
    "n_train": 500}` -> `{"val.fp_cut": .4, "val.EURUSD.fp_cut": .3, "val.EURUSD.n": 80.0,
    "val.n_train": 500.0}`. Non-numbers and NaN are left out (MLflow metrics are floats); nested
    dicts other than `overall` / `per_symbol` keep their key in the name."""
    out: dict[str, float] = {}

    def walk(d: Mapping[str, Any], path: list[str]) -> None:
        for key, value in d.items():
            key = str(key)
            if isinstance(value, Mapping):
                walk(value, path if key in ("overall", "per_symbol") else [*path, key])
                continue
            v = _finite(value)
            if v is not None:
                name = _METRIC_NAME_BAD.sub("_", ".".join([*path, key]))
                out[name] = v

    walk(metrics or {}, [prefix] if prefix else [])
    return out


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays, Timestamps, NaN -> None, nested containers."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Index, pd.Series)):
        return [jsonable(v) for v in list(value)]
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        ts = pd.Timestamp(value)
        return None if pd.isna(ts) else ts.isoformat()
    if isinstance(value, (pd.Timedelta, np.timedelta64)):
        return str(pd.Timedelta(value))
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, (int, str)):
        return value
    if value is pd.NaT:
        return None
    return str(value)


def skops_trusted_types(estimator: Any) -> list[str]:
    """The reviewed skops types of `estimator`: the list of SKOPS_TRUSTED for a known estimator
    class; for another, what skops asks for, refused (ValueError) unless every type is in
    SKOPS_ALSO_ACCEPTED."""
    known = SKOPS_TRUSTED.get(type(estimator).__name__)
    if known is not None:  # reviewed; log_model's save-and-reload still refuses anything else
        return list(known)
    import skops.io as sio

    asked = set(sio.get_untrusted_types(data=sio.dumps(estimator)))
    reviewed = SKOPS_ALSO_ACCEPTED
    unknown = sorted(asked - reviewed)
    if unknown:
        raise ValueError(f"{type(estimator).__name__} needs skops types nobody reviewed: "
                         f"{unknown}; review them and add them to SKOPS_TRUSTED")
    return sorted(asked)


def pip_requirements() -> list[str]:
    """Explicit requirements for log_model (inference would cost ~4.5 s a call)."""
    import sklearn
    import skops

    return [f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"]


def _feature_frame(meta_model: Any, dataset: pd.DataFrame) -> pd.DataFrame:
    names = list(meta_model.feature_names)
    missing = [c for c in names if c not in dataset.columns]
    if missing:
        raise ValueError(f"dataset lacks the model's feature columns {missing}")
    return dataset[names].astype(float)


def _meta_json(meta_model: Any) -> dict[str, Any]:
    """What `meta_model.json` holds: MetaModel.to_metadata() (feature_names, metrics, threshold,
    kind, trained_on, validation_from, reference, params, final) plus the estimator's class."""
    if hasattr(meta_model, "to_metadata"):
        meta = dict(meta_model.to_metadata())
    else:
        meta = {"feature_names": list(meta_model.feature_names),
                "metrics": dict(meta_model.metrics or {}),
                "threshold": getattr(meta_model, "threshold", None),
                "kind": getattr(meta_model, "kind", None),
                "trained_on": getattr(meta_model, "trained_on", None)}
    meta["estimator"] = type(meta_model.estimator).__name__
    return jsonable(meta)


def _params(meta_model: Any, dataset: pd.DataFrame, strategy: str) -> dict[str, str]:
    est = meta_model.estimator
    params: dict[str, Any] = {
        "strategy": strategy, "kind": getattr(meta_model, "kind", ""),
        "estimator": type(est).__name__, "threshold": getattr(meta_model, "threshold", None),
        "n_features": len(meta_model.feature_names), "dataset_rows": len(dataset),
        "trained_on": getattr(meta_model, "trained_on", None),
        "validation_from": getattr(meta_model, "validation_from", None),
        "final_fit": getattr(meta_model, "final", None),
    }
    try:
        for k, v in est.get_params(deep=False).items():
            params[f"est.{k}"] = jsonable(v)
    except Exception:  # noqa: BLE001 - params are a convenience, never a reason to fail
        pass
    return {k: str(v)[:_MAX_PARAM] for k, v in params.items() if v is not None}


# ----------------------------------------------------------------------------- SHAP artifacts

def _shap_columns(meta_model: Any, explanations: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, base values) from `explain_insights` output (`shap_<feature>` columns)."""
    if not isinstance(explanations, pd.DataFrame) or "base_value" not in explanations.columns:
        return None
    cols = [f"shap_{n}" for n in meta_model.feature_names]
    if not all(c in explanations.columns for c in cols):
        return None
    return (explanations[cols].to_numpy(dtype=float),
            explanations["base_value"].to_numpy(dtype=float))


def _log_shap(client: MlflowClient, run_id: str, meta_model: Any, dataset: pd.DataFrame,
              explanations: Any) -> dict[str, float]:
    """SHAP beeswarm summary plot (Agg, figure closed), global importance JSON and feature
    importance on the model's run. Uses `explanations` (explain_insights output for rows of
    `dataset`) when given, else explains up to 1,000 rows of `dataset` (additivity checked by
    explain_insights). Returns the top-10 mean |SHAP| as metrics."""
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    from autopsy_assets.domain import meta_model as mm

    names = list(meta_model.feature_names)
    got = _shap_columns(meta_model, explanations)
    if got is None:
        sample = dataset.sample(n=_EXPLAIN_ROWS, random_state=0) \
            if len(dataset) > _EXPLAIN_ROWS else dataset
        explanations = mm.explain_insights(sample, meta_model)
        got = _shap_columns(meta_model, explanations)
        assert got is not None
    values, base = got
    if "insight_id" in explanations.columns and "insight_id" in dataset.columns:
        data = dataset.set_index("insight_id").reindex(explanations["insight_id"])
    else:
        data = dataset.loc[explanations.index]
    X = data[names].to_numpy(dtype=float)
    gi = mm.global_importance(explanations)
    mean_abs = dict(zip(gi["feature"], gi["mean_abs_shap"].astype(float), strict=True))
    if len(values):
        expl = shap.Explanation(values=values, base_values=base, data=X, feature_names=names)
        shap.plots.beeswarm(expl, max_display=15, show=False)
        fig = plt.gcf()
        try:
            fig.set_size_inches(8, 6)
            fig.tight_layout()
            client.log_figure(run_id, fig, SHAP_PLOT)
        finally:
            plt.close(fig)
    client.log_dict(run_id, {
        "rows": int(len(values)),
        "output": "log-odds" if getattr(meta_model, "kind", "hgb") == "hgb" else "probability",
        "importance": jsonable(gi.to_dict(orient="records")),
    }, SHAP_JSON)
    importance: dict[str, Any] = {"mean_abs_shap": jsonable(mean_abs)}
    fi = getattr(meta_model.estimator, "feature_importances_", None)
    if fi is not None:
        importance["impurity"] = {n: float(v) for n, v in zip(names, fi, strict=True)}
    client.log_dict(run_id, importance, IMPORTANCE_JSON)
    top = sorted(mean_abs.items(), key=lambda kv: -(kv[1] if kv[1] == kv[1] else -1))[:10]
    return {_METRIC_NAME_BAD.sub("_", f"shap.{k}"): float(v) for k, v in top if v == v}


# ----------------------------------------------------------------------------- dataset input

def _log_dataset(client: MlflowClient, run_id: str, dataset: pd.DataFrame, sha: str,
                 strategy: str, context: str, source: str | None) -> None:
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    if source is None:
        root = artifact_root(client_uri(client)) or autopsy_home() / "mlartifacts"
        snap = root / "datasets" / f"{sha[:16]}.parquet"
        if not snap.exists():
            snap.parent.mkdir(parents=True, exist_ok=True)
            tmp = snap.with_suffix(f".{threading.get_ident()}.tmp")
            dataset.to_parquet(tmp)
            tmp.replace(snap)
        source = str(snap)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "source interpreted in multiple ways"
        # MLflow's dataset profile reads tz-aware columns through Series.values (pandas 3.1
        # deprecation inside MLflow, not ours)
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        # the schema is inferred here too ("integer column(s)" hint for label: expected)
        ds = mlflow.data.from_pandas(dataset, name=f"autopsy-dataset-{strategy}",
                                     targets="label" if "label" in dataset.columns else None,
                                     source=source, digest=sha[:32])
        entity = ds._to_mlflow_entity()
    client.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=[
        InputTag("mlflow.data.context", context), InputTag("sha256", sha),
        InputTag("rows", str(len(dataset)))])])


# ----------------------------------------------------------------------------- log + register

def log_model_version(meta_model: Any, dataset: pd.DataFrame, strategy: str, *,
                      request_id: str | None = None, explanations: Any = None,
                      client: ClientLike = None, dataset_source: str | None = None
                      ) -> tuple[str, str, str]:
    """Log `meta_model` (trained on `dataset`) as one run in `autopsy-meta` and register it as a
    new version of `autopsy-meta-<strategy>`. Returns (model_name, version, run_id); the version
    is a str on every store. No alias moves here (see `aliases.promote`)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    c = get_client(client)
    name = model_name(strategy)
    est = meta_model.estimator
    trusted = skops_trusted_types(est)
    X = _feature_frame(meta_model, dataset)
    sha = dataset_hash(dataset)
    exp_id = ensure_experiment(c, META_EXPERIMENT)
    tags = {"strategy": strategy, "kind": str(getattr(meta_model, "kind", "") or ""),
            "git_commit": git_commit(), "dataset.sha256": sha, "dataset.rows": str(len(dataset)),
            "autopsy.role": "model_version"}
    if request_id:
        tags["retrain_request"] = str(request_id)
    run = c.create_run(exp_id, run_name=f"train-{strategy}-{type(est).__name__}", tags=tags)
    rid = run.info.run_id
    try:
        metrics = flatten_metrics(getattr(meta_model, "metrics", None))
        params = _params(meta_model, dataset, strategy)
        _log_batch(c, rid, metrics, params)
        shap_top = _log_shap(c, rid, meta_model, dataset, explanations)
        _log_batch(c, rid, shap_top, {})
        _log_dataset(c, rid, dataset, sha, strategy, "training", dataset_source)
        sample = X.head(50)
        signature = infer_signature(sample, est.predict_proba(sample.to_numpy(dtype=float)))
        # MLflow 3 files a logged model under the *active* run's experiment (else under the
        # Default experiment, whose artifacts land in ./mlruns): log it inside the run
        with fluent(c), mlflow.start_run(run_id=rid, nested=mlflow.active_run() is not None):
            info = mlflow.sklearn.log_model(
                est, name="model", skops_trusted_types=trusted,
                signature=signature, pip_requirements=pip_requirements(),
                pyfunc_predict_fn="predict_proba",
                metadata={"autopsy": {"strategy": strategy, "meta_model_json": META_JSON}})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / META_JSON
            path.write_text(json.dumps(_meta_json(meta_model), indent=1, sort_keys=True))
            c.log_model_artifact(info.model_id, str(path))
            c.log_artifact(rid, str(path))  # also on the run, for the MLflow UI
        version = _register(c, name, strategy, info.model_uri, info.model_id, rid, request_id,
                            sha)
        c.set_terminated(rid, "FINISHED")
    except BaseException:
        c.set_terminated(rid, "FAILED")
        raise
    return name, version, rid


def _log_batch(c: MlflowClient, run_id: str, metrics: Mapping[str, float],
               params: Mapping[str, str]) -> None:
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    ps = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(ms), 1000):  # log_batch takes at most 1000 metrics per call
        c.log_batch(run_id, metrics=ms[i:i + 1000])
    for i in range(0, len(ps), 100):  # ... and at most 100 params
        c.log_batch(run_id, params=ps[i:i + 100])


def _register(c: MlflowClient, name: str, strategy: str, source: str, model_id: str,
              run_id: str, request_id: str | None, sha: str) -> str:
    try:
        c.create_registered_model(name, tags={"strategy": strategy},
                                  description=f"autopsy meta-model of strategy {strategy}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {"strategy": strategy, "dataset.sha256": sha, "run_id": run_id}
    if request_id:
        tags["retrain_request"] = str(request_id)
    mv = c.create_model_version(name, source=source, run_id=run_id, tags=tags, model_id=model_id)
    return version_str(mv.version)


# ----------------------------------------------------------------------------- load

_URI = re.compile(r"^(?:models:/)?(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def resolve_version(client: MlflowClient, uri_or_name_alias: str) -> Any:
    """The ModelVersion behind `models:/<name>@<alias>`, `models:/<name>/<version>` or
    `<name>@<alias>`; LifecycleError when it does not exist."""
    m = _URI.match(str(uri_or_name_alias).strip())
    if not m:
        raise LifecycleError(f"{uri_or_name_alias!r} is not a registered model reference: use "
                             "models:/<name>@<alias> or models:/<name>/<version>")
    name = m.group("name")
    try:
        if m.group("alias"):
            return client.get_model_version_by_alias(name, m.group("alias"))
        return client.get_model_version(name, m.group("version"))
    except MlflowException as exc:
        raise LifecycleError(f"{uri_or_name_alias}: no such registered model version "
                             f"({exc.message.splitlines()[0] if exc.message else exc})") from exc


def load_meta_model(uri_or_name_alias: str, *, client: ClientLike = None) -> Any:
    """A MetaModel from the registry, e.g. `models:/autopsy-meta-ZenithEdge@champion`: the
    skops-loaded estimator plus feature_names, metrics, threshold, kind, trained_on from
    `meta_model.json`. The result's `registry` attribute says which version it is."""
    c = get_client(client)
    mv = resolve_version(c, uri_or_name_alias)
    download_uri = c.get_model_version_download_uri(mv.name, mv.version)
    est, meta = _load_artifacts(client_uri(c), str(download_uri))
    est, meta = copy.deepcopy(est), copy.deepcopy(meta)  # the cache's copy stays pristine
    from autopsy_assets.domain.meta_model import MetaModel

    model = MetaModel.from_metadata(est, meta)
    info = {"name": mv.name, "version": version_str(mv.version), "run_id": mv.run_id,
            "uri": f"models:/{mv.name}/{version_str(mv.version)}"}
    try:
        model.registry = info
    except AttributeError:  # a frozen/slotted MetaModel: the information is in the URI anyway
        pass
    return model


@lru_cache(maxsize=32)
def _load_artifacts(tracking: str, download_uri: str) -> tuple[Any, dict[str, Any]]:
    """(estimator, meta_model.json) of one model version; cached (versions are immutable)."""
    import mlflow.artifacts
    import mlflow.sklearn

    with tempfile.TemporaryDirectory() as tmp, quiet_downloads():
        local = mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=tmp,
                                                    tracking_uri=tracking)
        est = mlflow.sklearn.load_model(local)
        meta_path = Path(local) / META_JSON
        if not meta_path.exists():
            raise LifecycleError(f"model at {download_uri} has no {META_JSON}: it was not logged "
                                 "by autopsy's log_model_version")
        meta = json.loads(meta_path.read_text())
    return est, meta


# ----------------------------------------------------------------------------- registry view

def aliases(strategy_or_name: str, *, client: ClientLike = None) -> dict[str, str]:
    """{alias: version} of a strategy's registered model (read through get_registered_model:
    search_model_versions returns empty aliases, an open MLflow bug). {} when not registered."""
    c = get_client(client)
    name = strategy_or_name if strategy_or_name.startswith(MODEL_PREFIX) else model_name(
        strategy_or_name)
    try:
        rm = c.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {str(a): version_str(v) for a, v in (rm.aliases or {}).items()}


def _registered_models(c: MlflowClient, strategy: str | None) -> list[Any]:
    if strategy is not None:
        name = model_name(strategy)
        try:
            return [c.get_registered_model(name)]
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
    out: list[Any] = []
    token = None
    while True:
        page = c.search_registered_models(filter_string=f"name LIKE '{MODEL_PREFIX}%'",
                                          max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


VERSION_COLUMNS = ("name", "strategy", "version", "aliases", "created", "run_id",
                   "retrain_request", "status", "metrics")


def model_versions_frame(strategy: str | None = None, *, client: ClientLike = None
                         ) -> pd.DataFrame:
    """The registry's view, one row per model version (newest first per model): name, strategy,
    version (str), aliases (sorted list), created (UTC), run_id, retrain_request, status, metrics
    (dict of the run's metrics) and one `val.<metric>` column per overall validation metric."""
    c = get_client(client)
    rows: list[dict[str, Any]] = []
    for rm in _registered_models(c, strategy):
        by_version: dict[str, list[str]] = {}
        for alias, v in (rm.aliases or {}).items():
            by_version.setdefault(version_str(v), []).append(str(alias))
        versions: list[Any] = []
        token = None
        while True:
            page = c.search_model_versions(f"name = '{rm.name}'", max_results=1000,
                                           page_token=token)
            versions.extend(page)
            token = page.token
            if not token:
                break
        for mv in versions:
            v = version_str(mv.version)
            metrics: dict[str, float] = {}
            if mv.run_id:
                try:
                    metrics = dict(c.get_run(mv.run_id).data.metrics)
                except MlflowException:
                    metrics = {}
            row = {"name": rm.name, "strategy": rm.name[len(MODEL_PREFIX):], "version": v,
                   "aliases": sorted(by_version.get(v, [])),
                   "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
                   "run_id": mv.run_id, "retrain_request": (mv.tags or {}).get("retrain_request"),
                   "status": str(mv.status), "metrics": metrics}
            for k, val in metrics.items():
                if k.startswith("val.") and k.count(".") == 1:
                    row[k] = val
            rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else list(VERSION_COLUMNS))
    if rows:
        df["_v"] = df["version"].astype(int)
        df = df.sort_values(["name", "_v"], ascending=[True, False]).drop(columns="_v")
        df = df.reset_index(drop=True)
        extra = sorted(c for c in df.columns if c not in VERSION_COLUMNS)
        df = df[[*VERSION_COLUMNS, *extra]]
    return df
