"""The meta-model: given an insight as it was published, how likely is it to succeed?

Meta-labeling (DESIGN.md sections 2 "Learning loop" and 2a): a scikit-learn tree ensemble on the
`features.build_dataset` table, trained on a time-ordered split and judged by the gate metric,
then explained per insight with SHAP TreeExplainer in the model's own output space.

Terms
-----
- Split: validation rows have created_at >= validation_from (default: earliest + 70% of the
  span); training rows have created_at < validation_from *and* exit_time < validation_from, so no
  training label comes from the validation period.
- Output space: `MetaModel.decision_output` is log-odds (``decision_function``) for gradient
  boosting and ``predict_proba[:, 1]`` for a random forest; SHAP values add up to it.
- Gate metric, ``fp_cut``: the share of failed validation insights removed at the score threshold
  that keeps 95% of the succeeded ones (keep ``score >= threshold``; the threshold is the
  succeeded scores' order statistic that removes at most 5% of them). A bootstrap over the
  validation rows (seeded, 500 resamples, vectorised) gives its 95% interval.
- False-positive rate, where reported: failed / (succeeded + failed) among the kept insights.
- Expectancy: mean pnl_pct of the kept insights.

No dagster, mlflow or database import here; ``shap`` is imported lazily (it costs ~2 s). The
MLflow registry wraps `MetaModel` (see `MetaModel.to_metadata` / `MetaModel.from_metadata`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autopsy_assets.domain.features import FEATURE_LABELS
from autopsy_assets.domain.features import feature_names as _dataset_features

KEEP_SHARE = 0.95          # share of succeeded insights the threshold keeps
N_BOOT = 500
GATE_MIN_SYMBOL_ROWS = 50
GATE_MAX_SYMBOL_DROP = 3.0  # percentage points of fp_cut
ADDITIVITY_TOLERANCE = 1e-6
SHAP_PREFIX = "shap_"
KINDS = ("hgb", "rf")

# bounded depth keeps SHAP fast (cookbook h: cost grows with total leaves); single-threaded RF
# so that parallel Dagster runs do not oversubscribe the cores
HGB_PARAMS = {"max_iter": 200, "learning_rate": 0.05, "max_depth": 4, "max_leaf_nodes": 15,
              "min_samples_leaf": 40, "l2_regularization": 1.0, "early_stopping": False}
RF_PARAMS = {"n_estimators": 100, "max_depth": 6, "min_samples_leaf": 20,
             "max_features": "sqrt", "n_jobs": 1}


class AdditivityError(RuntimeError):
    """SHAP values do not add up to the model output (base + sum != output)."""


# --- the model -----------------------------------------------------------------------------------

def make_estimator(kind: str = "hgb", random_state: int = 0, params: dict | None = None):
    """A fresh, unfitted estimator: HistGradientBoostingClassifier (bounded depth, numeric
    features only: never native categoricals, which SHAP 0.51 misreads) or a depth-bounded
    RandomForestClassifier (TreeExplainer on deep forests is very slow)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    if kind == "hgb":
        p = {**HGB_PARAMS, **(params or {}), "random_state": random_state}
        p["categorical_features"] = None
        return HistGradientBoostingClassifier(**p)
    if kind == "rf":
        p = {**RF_PARAMS, **(params or {}), "random_state": random_state}
        if p.get("max_depth") is None:
            raise ValueError("kind='rf' needs a bounded max_depth (SHAP on deep forests takes "
                             "minutes per 10,000 rows)")
        return RandomForestClassifier(**p)
    raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")


@dataclass
class MetaModel:
    """A fitted meta-model with what the registry keeps beside it.

    estimator: the fitted scikit-learn classifier (class 1 = succeeded).
    feature_names: the columns it reads, in order.
    metrics: validation metrics (see `evaluate`), JSON-ready.
    threshold: success probability at or above which an insight is kept (chosen on validation to
        keep 95% of succeeded insights; `fit_final` keeps it).
    kind: 'hgb' | 'rf'. trained_on: sha256 of the dataset it was trained from (`dataset_hash`).
    validation_from: ISO time of the split. reference: training median per feature (phrasing of
    explanations: "low confidence" = below it). params: estimator parameters.
    """
    estimator: Any
    feature_names: list[str]
    metrics: dict = field(default_factory=dict)
    threshold: float = 0.5
    kind: str = "hgb"
    trained_on: str = ""
    validation_from: str | None = None
    reference: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    final: bool = False
    # the last created_at a final fit learned from: a fair comparison scores it only on later rows
    trained_until: str | None = None
    _explainer: Any = field(default=None, repr=False, compare=False)

    # -- sklearn-style
    @property
    def classes_(self):
        return self.estimator.classes_

    def matrix(self, X) -> np.ndarray:
        """The feature matrix (float64, feature_names order) from a frame or an array."""
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise ValueError(f"the data lack feature column(s) {', '.join(missing)} "
                                 f"that the model was trained on")
            return X[self.feature_names].to_numpy(dtype=float)
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise ValueError(f"expected an (n, {len(self.feature_names)}) matrix, got "
                             f"{arr.shape}")
        return arr

    def decision_output(self, X) -> np.ndarray:
        """The output SHAP explains: log-odds for HGB, P(success) for RF."""
        m = self.matrix(X)
        if self.kind == "rf":
            return self.estimator.predict_proba(m)[:, 1]
        return self.estimator.decision_function(m)

    def predict_proba(self, X) -> np.ndarray:
        return self.estimator.predict_proba(self.matrix(X))

    def score(self, X) -> np.ndarray:
        """P(success) per row."""
        return self.predict_proba(X)[:, 1]

    def predict(self, X) -> np.ndarray:
        """1 = keep (score >= threshold), 0 = filter out."""
        return (self.score(X) >= self.threshold).astype(np.int64)

    # -- final fit
    def fit_final(self, dataset: pd.DataFrame, random_state: int = 0) -> MetaModel:
        """A copy refitted on every row of ``dataset`` (same kind, params, threshold and
        simulation metrics); trained_on becomes this dataset's hash."""
        X, y = _xy(dataset, self.feature_names)
        _check_trainable(y, "all rows")
        est = make_estimator(self.kind, random_state, self.params)
        est.fit(X, y)
        return MetaModel(estimator=est, feature_names=list(self.feature_names),
                         metrics=copy.deepcopy(self.metrics), threshold=self.threshold,
                         kind=self.kind, trained_on=dataset_hash(dataset),
                         validation_from=self.validation_from,
                         reference=_reference(X, self.feature_names), params=dict(self.params),
                         final=True, trained_until=_times(dataset, "created_at").max().isoformat()
                         if "created_at" in dataset and len(dataset) else None)

    # -- what the registry stores beside the estimator
    def to_metadata(self) -> dict:
        """JSON-ready: feature_names, metrics, threshold, kind, trained_on, validation_from,
        reference, params, final (NaN -> None)."""
        return _jsonable({"feature_names": list(self.feature_names), "metrics": self.metrics,
                          "threshold": self.threshold, "kind": self.kind,
                          "trained_on": self.trained_on, "validation_from": self.validation_from,
                          "reference": self.reference, "params": self.params,
                          "final": self.final, "trained_until": self.trained_until})

    @classmethod
    def from_metadata(cls, estimator, meta: dict) -> MetaModel:
        """Rebuild from an estimator loaded back (e.g. through skops) and `to_metadata` output."""
        ref = {k: (np.nan if v is None else float(v)) for k, v in (meta.get("reference")
                                                                   or {}).items()}
        return cls(estimator=estimator, feature_names=list(meta["feature_names"]),
                   metrics=meta.get("metrics") or {}, threshold=float(meta.get("threshold", 0.5)),
                   kind=meta.get("kind", "hgb"), trained_on=meta.get("trained_on", ""),
                   validation_from=meta.get("validation_from"), reference=ref,
                   params=meta.get("params") or {}, final=bool(meta.get("final", False)),
                   trained_until=meta.get("trained_until"))

    def explainer(self):
        """The SHAP TreeExplainer of this model, built once and cached."""
        if self._explainer is None:
            import shap
            self._explainer = shap.TreeExplainer(self.estimator)
        return self._explainer


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dataset_hash(dataset: pd.DataFrame) -> str:
    """sha256 of a dataset's content: column names (sorted) and each column's values (pandas'
    stable row hashes, row order included). The same table gives the same hash in any run."""
    cols = sorted(map(str, dataset.columns))
    h = hashlib.sha256()
    h.update(json.dumps(cols).encode())
    h.update(str(len(dataset)).encode())
    for c in cols:
        col = dataset[c]
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            col = col.dt.tz_convert("UTC").dt.as_unit("ns")
        h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _xy(dataset: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in [*names, "label"] if c not in dataset.columns]
    if missing:
        raise ValueError(f"dataset lacks column(s) {', '.join(missing)}")
    return dataset[names].to_numpy(dtype=float), dataset["label"].to_numpy(dtype=np.int64)


def _check_trainable(y: np.ndarray, what: str) -> None:
    n1 = int(y.sum())
    n0 = len(y) - n1
    if len(y) < 20 or n1 == 0 or n0 == 0:
        raise ValueError(f"cannot train on {what}: {len(y)} rows ({n1} succeeded, {n0} failed); "
                         f"need at least 20 rows with both outcomes")


def _reference(X: np.ndarray, names: list[str]) -> dict:
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(X, axis=0) if len(X) else np.full(len(names), np.nan)
    return {n: float(m) for n, m in zip(names, med)}


# --- the gate metric -----------------------------------------------------------------------------

def _k_removable(n_succeeded, keep: float):
    """How many succeeded insights a threshold may remove and still keep ``keep`` of them."""
    return np.floor(np.asarray(n_succeeded, dtype=float) * (1.0 - keep) + 1e-9).astype(np.int64)


def fp_cut(scores, labels, keep: float = KEEP_SHARE) -> tuple[float, float]:
    """(cut, threshold): the share of failed rows with score < threshold, where threshold is the
    lowest score that keeps ``keep`` of the succeeded rows (keep = score >= threshold). NaN when
    either class is absent."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    succ = np.sort(s[y])
    n_f = int((~y).sum())
    if len(succ) == 0 or n_f == 0:
        return float("nan"), float("nan")
    t = float(succ[int(_k_removable(len(succ), keep))])
    return float((s[~y] < t).sum() / n_f), t


def bootstrap_batches(n: int, n_boot: int = N_BOOT, seed: int = 0, batch: int = 50):
    """The resample index arrays, (b, n) per batch, that `bootstrap_fp_cut` draws (seeded)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(batch, n_boot - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def bootstrap_fp_cut(scores, labels, n_boot: int = N_BOOT, seed: int = 0,
                     keep: float = KEEP_SHARE, alpha: float = 0.05) -> dict:
    """Bootstrap of `fp_cut` over the rows: dict(lower, upper, mean, std, uplift_lower,
    uplift_upper, n_boot).

    uplift = cut - the share of succeeded rows the threshold removed: what the filter removes
    beyond a random filter that drops the same share of successes (a score with no skill still
    "cuts" ~5% of failures when it drops 5% of successes; the uplift is then ~0).
    Vectorised: rows are grouped by distinct score; a resample is a row of counts; cumulative
    succeeded/failed counts per score level give each resample's threshold level (the first
    level where cumulative succeeded > removable) and the rows strictly below it.
    Resamples without a succeeded or a failed row are left out (NaN).
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    n = len(s)
    nan = {"lower": float("nan"), "upper": float("nan"), "mean": float("nan"),
           "std": float("nan"), "uplift_lower": float("nan"), "uplift_upper": float("nan"),
           "n_boot": int(n_boot)}
    if n == 0 or y.all() or (~y).all():
        return nan
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    succ_sorted = y[order]
    cuts, ups = [], []
    for idx in bootstrap_batches(n, n_boot, seed):
        b = idx.shape[0]
        counts = np.bincount((idx + (np.arange(b) * n)[:, None]).ravel(),
                             minlength=b * n).reshape(b, n)[:, order]
        cs = np.cumsum(np.add.reduceat(counts * succ_sorted, starts, axis=1), axis=1)
        cf = np.cumsum(np.add.reduceat(counts * ~succ_sorted, starts, axis=1), axis=1)
        n_s, n_f = cs[:, -1], cf[:, -1]
        k = _k_removable(n_s, keep)
        level = np.argmax(cs > k[:, None], axis=1)             # threshold level per resample
        below = np.maximum(level - 1, 0)
        rows = np.arange(b)
        removed_f = np.where(level > 0, cf[rows, below], 0)
        removed_s = np.where(level > 0, cs[rows, below], 0)
        ok = (n_s > 0) & (n_f > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cut = np.where(ok, removed_f / n_f, np.nan)
            up = np.where(ok, cut - removed_s / n_s, np.nan)
        cuts.append(cut)
        ups.append(up)
    c, u = np.concatenate(cuts), np.concatenate(ups)
    if np.isnan(c).all():
        return nan
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {"lower": float(np.nanpercentile(c, lo)), "upper": float(np.nanpercentile(c, hi)),
            "mean": float(np.nanmean(c)), "std": float(np.nanstd(c)),
            "uplift_lower": float(np.nanpercentile(u, lo)),
            "uplift_upper": float(np.nanpercentile(u, hi)), "n_boot": int(n_boot)}


def _at_threshold(scores: np.ndarray, y: np.ndarray, pnl: np.ndarray, threshold: float) -> dict:
    kept = scores >= threshold
    n_k = int(kept.sum())
    s_k = int((kept & y).sum())
    f_k = n_k - s_k
    n_s, n_f = int(y.sum()), int((~y).sum())

    def mean(x):
        x = x[~np.isnan(x)]
        return float(x.mean()) if len(x) else float("nan")

    return {
        "n": len(y), "n_succeeded": n_s, "n_failed": n_f,
        "n_kept": n_k, "kept_share": n_k / len(y) if len(y) else float("nan"),
        "precision": s_k / n_k if n_k else float("nan"),
        "recall": s_k / n_s if n_s else float("nan"),
        "fpr": f_k / n_k if n_k else float("nan"),
        "fpr_baseline": n_f / len(y) if len(y) else float("nan"),
        "fp_removed": n_f - f_k, "tp_lost": n_s - s_k,
        "fp_cut_at_threshold": (n_f - f_k) / n_f if n_f else float("nan"),
        "expectancy": mean(pnl[kept]), "expectancy_baseline": mean(pnl),
    }


def evaluate(scores, labels, pnl=None, symbols=None, *, threshold: float | None = None,
             n_boot: int = N_BOOT, seed: int = 0, keep: float = KEEP_SHARE) -> dict:
    """Validation metrics of success probabilities ``scores`` against ``labels`` (1 succeeded).

    Returns {"overall": {...}, "per_symbol": {symbol: {...}}, "threshold": t}. Overall: n,
    n_succeeded, n_failed, n_kept, kept_share, precision, recall, fpr (failed share of kept),
    fpr_baseline (no filter), fp_removed, tp_lost, fp_cut_at_threshold, expectancy (mean pnl_pct
    kept), expectancy_baseline, fp_cut and fp_cut_lower / fp_cut_upper (bootstrap 95%),
    fp_cut_chance (share of successes the threshold drops: what a random filter would cut),
    fp_uplift = fp_cut - fp_cut_chance with fp_uplift_lower / _upper (bootstrap 95%), auc.
    ``threshold`` None = the one that keeps ``keep`` of the succeeded rows here.
    Per symbol: the same at the overall threshold, except fp_cut, which applies the gate
    metric's definition within the symbol (its own 95%-retention threshold), so symbols and
    models compare on ranking quality, not on how many of a symbol's successes one global
    threshold happens to sacrifice.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    p = np.full(len(s), np.nan) if pnl is None else np.asarray(pnl, dtype=float)
    cut, t = fp_cut(s, y, keep)
    if threshold is None:
        threshold = t
    overall = _at_threshold(s, y, p, threshold if not np.isnan(threshold) else -np.inf)
    boot = bootstrap_fp_cut(s, y, n_boot=n_boot, seed=seed, keep=keep)
    chance = (float((s[y] < t).sum() / y.sum()) if not np.isnan(t) else float("nan"))
    overall.update({"fp_cut": cut, "fp_cut_lower": boot["lower"], "fp_cut_upper": boot["upper"],
                    "fp_cut_chance": chance, "fp_uplift": cut - chance,
                    "fp_uplift_lower": boot["uplift_lower"],
                    "fp_uplift_upper": boot["uplift_upper"], "threshold": float(threshold)})
    try:
        from sklearn.metrics import roc_auc_score
        overall["auc"] = float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")
    except ValueError:
        overall["auc"] = float("nan")
    per_symbol = {}
    if symbols is not None:
        sym = pd.Series(symbols).astype(str).to_numpy()
        for name in sorted(pd.unique(sym)):
            m = sym == name
            d = _at_threshold(s[m], y[m], p[m],
                              threshold if not np.isnan(threshold) else -np.inf)
            d["fp_cut"] = fp_cut(s[m], y[m], keep)[0]
            per_symbol[str(name)] = d
    return {"overall": overall, "per_symbol": per_symbol, "threshold": float(threshold)}


def flat_metrics(metrics: dict) -> dict[str, float]:
    """``metrics`` as flat float names for MLflow: 'fp_cut', 'symbol.EURUSD.fp_cut', ...
    (NaN values are left out; counts become floats)."""
    out = {}
    for k, v in (metrics.get("overall") or {}).items():
        if isinstance(v, (int, float, np.integer, np.floating)) and not (
                isinstance(v, float) and math.isnan(v)):
            out[k] = float(v)
    for sym, d in (metrics.get("per_symbol") or {}).items():
        for k, v in d.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and v is not None and not (
                    isinstance(v, float) and math.isnan(v)):
                out[f"symbol.{sym}.{k}"] = float(v)
    for k in ("n_train", "n_validation"):
        if k in metrics:
            out[k] = float(metrics[k])
    return out


# --- training ------------------------------------------------------------------------------------

def _times(dataset: pd.DataFrame, col: str) -> pd.Series:
    s = dataset[col]
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        raise ValueError(  # noqa: TRY004 - a naive time is a bad value, as everywhere else
            f"dataset column {col} must be tz-aware UTC datetimes")
    return s.dt.tz_convert("UTC").dt.as_unit("ns")


def split(dataset: pd.DataFrame, validation_from=None) -> tuple[np.ndarray, np.ndarray,
                                                                  pd.Timestamp]:
    """(train mask, validation mask, validation_from) per DESIGN 2a."""
    created = _times(dataset, "created_at")
    exit_t = _times(dataset, "exit_time")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    if validation_from is None:
        lo, hi = created.min(), created.max()
        validation_from = lo + (hi - lo) * 0.7
    vf = pd.Timestamp(validation_from)
    if vf.tzinfo is None:
        raise ValueError("validation_from is timezone-naive: give a UTC time")
    vf = vf.tz_convert("UTC")
    val = (created >= vf).to_numpy()
    train = ((created < vf) & (exit_t < vf)).to_numpy()
    return train, val, vf


def train_meta_model(dataset: pd.DataFrame, validation_from=None, kind: str = "hgb",
                     random_state: int = 0, *, params: dict | None = None,
                     n_boot: int = N_BOOT) -> MetaModel:
    """Fit on the training rows, evaluate on the validation rows (see module docstring).

    Returns a MetaModel whose metrics are `evaluate` on validation plus n_train, n_validation,
    validation_from, kind; threshold keeps 95% of validation successes. Raises ValueError when
    either split lacks rows of both outcomes (with the counts).
    """
    names = _dataset_features(dataset)
    train, val, vf = split(dataset, validation_from)
    X, y = _xy(dataset, names)
    _check_trainable(y[train], f"the training rows (created and exited before {vf.isoformat()})")
    # a feature with no value at all in training (its source was not given) cannot be learnt
    # from: leave it out, so scoring never depends on it
    present = ~np.isnan(X[train]).all(axis=0)
    dropped = [nm for nm, ok in zip(names, present) if not ok]
    if dropped:
        names = [nm for nm, ok in zip(names, present) if ok]
        X = X[:, present]
    if val.sum() == 0:
        raise ValueError(f"no validation rows: nothing was created at or after {vf.isoformat()}")
    est = make_estimator(kind, random_state, params)
    est.fit(X[train], y[train])
    model = MetaModel(estimator=est, feature_names=names, kind=kind,
                      trained_on=dataset_hash(dataset), validation_from=vf.isoformat(),
                      reference=_reference(X[train], names),
                      params={k: v for k, v in est.get_params().items()
                              if k in {**(HGB_PARAMS if kind == "hgb" else RF_PARAMS),
                                       **(params or {})}})
    scores = model.score(X[val])
    pnl = dataset["pnl_pct"].to_numpy(dtype=float)[val] if "pnl_pct" in dataset.columns else None
    m = evaluate(scores, y[val], pnl, dataset["symbol"].to_numpy()[val], n_boot=n_boot,
                 seed=random_state)
    m.update({"n_train": int(train.sum()), "n_validation": int(val.sum()),
              "validation_from": vf.isoformat(), "kind": kind, "dropped_features": dropped})
    model.metrics = m
    model.threshold = float(m["threshold"]) if not np.isnan(m["threshold"]) else 0.5
    return model


def fit_final(model: MetaModel, dataset: pd.DataFrame, random_state: int = 0) -> MetaModel:
    """`MetaModel.fit_final`: refit on all rows, keeping the chosen threshold."""
    return model.fit_final(dataset, random_state=random_state)


def evaluate_model(model, dataset: pd.DataFrame, validation_from=None, *, n_boot: int = N_BOOT,
                   seed: int = 0) -> dict:
    """Metrics of any model (e.g. the champion) on the validation rows of ``dataset``, so that a
    candidate and the champion are compared on the same insights (metrics_before)."""
    model = _resolve(model)
    _, val, vf = split(dataset, validation_from)
    sub = dataset[val]
    pnl = sub["pnl_pct"].to_numpy(dtype=float) if "pnl_pct" in sub.columns else None
    m = evaluate(model.score(sub), sub["label"].to_numpy(), pnl, sub["symbol"].to_numpy(),
                 n_boot=n_boot, seed=seed)
    m.update({"n_validation": int(val.sum()), "validation_from": vf.isoformat(),
              "kind": model.kind})
    return m


def baseline_metrics(dataset: pd.DataFrame, validation_from=None) -> dict:
    """The no-filter baseline on the validation rows: every insight kept, fp_cut 0."""
    _, val, vf = split(dataset, validation_from)
    sub = dataset[val]
    y = sub["label"].to_numpy().astype(bool)
    p = sub["pnl_pct"].to_numpy(dtype=float) if "pnl_pct" in sub.columns else np.full(len(y),
                                                                                       np.nan)
    o = _at_threshold(np.zeros(len(y)), y, p, 0.0)
    o.update({"fp_cut": 0.0, "fp_cut_lower": 0.0, "fp_cut_upper": 0.0, "fp_cut_chance": 0.0,
              "fp_uplift": 0.0, "fp_uplift_lower": 0.0, "fp_uplift_upper": 0.0,
              "threshold": 0.0})
    per = {}
    sym = sub["symbol"].astype(str).to_numpy()
    for name in sorted(pd.unique(sym)):
        m = sym == name
        d = _at_threshold(np.zeros(int(m.sum())), y[m], p[m], 0.0)
        d["fp_cut"] = 0.0
        per[str(name)] = d
    return {"overall": o, "per_symbol": per, "threshold": 0.0, "n_validation": int(val.sum()),
            "validation_from": vf.isoformat(), "kind": "baseline"}


# --- scoring and A/B -----------------------------------------------------------------------------

def _resolve(model) -> MetaModel:
    if isinstance(model, str):
        if not model.startswith("models:/"):
            raise ValueError(f"model URI {model!r}: expected 'models:/<name>@<alias>' or "
                             f"'models:/<name>/<version>'")
        from autopsy_assets import registry  # lazily: the MLflow side lives there
        model = registry.load_meta_model(model)
    if not isinstance(model, MetaModel):
        raise TypeError(f"expected a MetaModel or a models:/ URI, got {type(model).__name__}")
    return model


def score_insights(dataset: pd.DataFrame, model) -> pd.Series:
    """P(success) per row of ``dataset`` (index kept), from a MetaModel or a models:/ URI."""
    m = _resolve(model)
    return pd.Series(m.score(dataset) if len(dataset) else np.empty(0), index=dataset.index,
                     name="success_probability", dtype=float)


def _arm_value(user_id) -> float:
    return int(hashlib.sha256(str(user_id).encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32


def arm_for(user_id, share: float) -> str:
    """'challenger' when int(sha256(user_id)[:8], 16) / 2**32 < share, else 'champion'.
    Stable across runs and processes (no Python hash seed)."""
    return "challenger" if _arm_value("" if user_id is None else user_id) < share else "champion"


def arms_for(user_ids, share: float) -> np.ndarray:
    """`arm_for` per element, hashing each distinct user once."""
    s = pd.Series(user_ids, dtype=object).where(pd.Series(user_ids, dtype=object).notna(), "")
    codes, uniq = pd.factorize(s.astype(str))
    vals = np.array([_arm_value(u) for u in uniq], dtype=float)
    arm = np.where(vals < share, "challenger", "champion").astype(object)
    return arm[codes] if len(codes) else np.empty(0, dtype=object)


def score_ab(dataset: pd.DataFrame, champion, challenger=None, share: float = 0.0
             ) -> pd.DataFrame:
    """A/B scoring: each row's arm by `arms_for(user_id, share)`, scored by that arm's model.
    Returns arm and success_probability (index kept). Without a challenger every row is
    'champion'."""
    champ = _resolve(champion)
    users = dataset["user_id"] if "user_id" in dataset.columns else pd.Series(
        [""] * len(dataset), index=dataset.index)
    arm = arms_for(users.to_numpy(), share if challenger is not None else 0.0)
    prob = np.full(len(dataset), np.nan)
    ch = arm == "champion"
    if ch.any():
        prob[ch] = champ.score(dataset[ch])
    if challenger is not None and (~ch).any():
        prob[~ch] = _resolve(challenger).score(dataset[~ch])
    return pd.DataFrame({"arm": arm, "success_probability": prob}, index=dataset.index)


# --- promotion gate ------------------------------------------------------------------------------

def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def promotion_gate(candidate_metrics: dict, champion_metrics: dict | None = None, *,
                   min_symbol_rows: int = GATE_MIN_SYMBOL_ROWS,
                   max_symbol_drop_points: float = GATE_MAX_SYMBOL_DROP
                   ) -> tuple[bool, list[str]]:
    """(passed, reasons): every reason is a sentence with the numbers; passed = no reason.

    The candidate passes only when
    1. its fp_cut bootstrap 95% lower bound is > 0 and > the champion's fp_cut (without a
       champion, the no-filter baseline's 0);
    2. its uplift over chance (fp_cut minus the share of successes the threshold drops, see
       `bootstrap_fp_cut`) has a bootstrap lower bound > 0, when the metrics carry it: a score
       with no skill "cuts" ~5% of false positives by dropping 5% of successes at random, so
       "> 0" alone would pass it;
    3. no symbol with >= ``min_symbol_rows`` validation rows has an fp_cut more than
       ``max_symbol_drop_points`` percentage points below the champion's on that symbol.
    Compare metrics computed on the same validation rows (`evaluate_model` for the champion).
    """
    reasons: list[str] = []
    cand = candidate_metrics.get("overall", {}) or {}
    champ = (champion_metrics or {}).get("overall", {}) or {}

    def num(d, k):
        v = d.get(k)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    lower, cut, n = num(cand, "fp_cut_lower"), num(cand, "fp_cut"), cand.get("n", "?")
    if lower is None:
        reasons.append(f"The candidate's false-positive cut has no bootstrap lower bound (cut "
                       f"{_pct(cut)} on {n} validation insights): the validation rows lack "
                       f"succeeded or failed insights.")
    else:
        if lower <= 0:
            reasons.append(f"The candidate's false-positive cut is {_pct(cut)} on {n} validation "
                           f"insights, but its bootstrap 95% lower bound is {_pct(lower)}, not "
                           f"above 0 (the no-filter baseline).")
        up_lo = num(cand, "fp_uplift_lower")
        if up_lo is not None and up_lo <= 0:
            chance = num(cand, "fp_cut_chance")
            reasons.append(f"The candidate's false-positive cut of {_pct(cut)} is no better than "
                           f"chance: a random filter dropping the same {_pct(chance)} of successes "
                           f"removes {_pct(chance)} of false positives, and the bootstrap 95% "
                           f"lower bound of the difference is {100 * up_lo:+.1f} points "
                           f"(needs > 0).")
        if champion_metrics is not None:
            champ_cut = num(champ, "fp_cut") or 0.0
            if lower <= champ_cut:
                reasons.append(f"The candidate's false-positive cut lower bound {_pct(lower)} "
                               f"(cut {_pct(cut)}) is not above the champion's cut of "
                               f"{_pct(champ_cut)} on the same validation insights.")
    if champion_metrics:
        cps = champion_metrics.get("per_symbol", {}) or {}
        for sym, d in sorted((candidate_metrics.get("per_symbol") or {}).items()):
            rows = int(d.get("n", 0) or 0)
            if rows < min_symbol_rows or sym not in cps:
                continue
            c_new, c_old = num(d, "fp_cut"), num(cps[sym], "fp_cut")
            if c_new is None or c_old is None:
                continue
            drop = 100.0 * (c_old - c_new)
            if drop > max_symbol_drop_points:
                reasons.append(f"{sym}: the candidate cuts {_pct(c_new)} of false positives on "
                               f"{rows} validation insights, {drop:.1f} points below the "
                               f"champion's {_pct(c_old)} (at most {max_symbol_drop_points:g} "
                               f"points worse is allowed).")
    return (not reasons), reasons


# --- explanations --------------------------------------------------------------------------------

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_REGIME_NAMES = {0.0: "ranging", 1.0: "trending up", 2.0: "trending down", 3.0: "volatile"}


def describe_feature(name: str, value: float, reference: float | None = None,
                     symbol: str | None = None, strategy: str | None = None,
                     timeframe: str | None = None) -> str:
    """A trader's words for one feature value ("low confidence", "Asia session", ...)."""
    label = FEATURE_LABELS.get(name, name.replace("_", " "))
    v = value
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{label} unknown"
    if name.startswith("session_"):
        return label if v >= 0.5 else f"outside {label}"
    if name.startswith("claimed_"):
        p = name[len("claimed_"):]
        return f"claims {p}" if v >= 0.5 else f"no {p} claimed"
    if name.startswith("verified_"):
        p = name[len("verified_"):]
        return f"{p} re-verified" if v >= 0.5 else f"{p} not re-verified"
    if name == "side":
        return "long" if v > 0 else "short"
    if name == "symbol_code":
        return f"symbol {symbol}" if symbol else "symbol"
    if name == "strategy_code":
        return f"strategy {strategy}" if strategy else "strategy"
    if name == "timeframe_minutes":
        return f"{timeframe} timeframe" if timeframe else f"{v:g}-minute timeframe"
    if name == "hour":
        return f"{int(v):02d}h UTC"
    if name == "day_of_week":
        return _DAYS[int(v) % 7]
    if name == "regime_code":
        return f"{_REGIME_NAMES.get(float(v), 'unknown')} regime"
    if name == "regime_with_side":
        return ("trend with the side" if v > 0 else "trend against the side" if v < 0
                else "no trend regime")
    if name == "minutes_to_next_news":
        return f"high-impact news in {v:.0f} min"
    if name == "minutes_since_last_news":
        return f"high-impact news {v:.0f} min ago"
    if reference is None or (isinstance(reference, float) and math.isnan(reference)):
        return label
    return f"{'low' if v < reference else 'high'} {label}"


def _explain_arrays(model: MetaModel, X: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    ex = model.explainer()
    sv = np.asarray(ex.shap_values(X))
    ev = np.atleast_1d(np.asarray(ex.expected_value, dtype=float))
    if sv.ndim == 3:          # random forest: (n, p, 2) in probability units; class 1
        sv, base = sv[:, :, 1], float(ev[1] if len(ev) > 1 else ev[0])
    else:                     # gradient boosting: (n, p) log-odds
        base = float(ev[0])
    out = model.decision_output(X)
    err = np.abs(base + sv.sum(axis=1) - out) if len(out) else np.zeros(0)
    if len(err) and not (err.max() < ADDITIVITY_TOLERANCE):
        i = int(np.nanargmax(err)) if not np.isnan(err).all() else 0
        raise AdditivityError(
            f"SHAP values do not add up to the model output: row {i} has base {base:.6g} + "
            f"sum {sv[i].sum():.6g} vs output {out[i]:.6g} (error {err[i]:.3g} >= "
            f"{ADDITIVITY_TOLERANCE:g}); check for categorical features or a model the explainer "
            f"misreads")
    return sv, base, out


def explain_insights(dataset: pd.DataFrame, model, top_n: int = 5) -> pd.DataFrame:
    """SHAP TreeExplainer per insight, in the model's output space (log-odds for HGB, probability
    for RF); raises AdditivityError when |base + sum - output| >= 1e-6 for any row.

    Returns (index = dataset.index): insight_id (when present), base_value, one ``shap_<feature>``
    column per feature, model_output, probability, top_features (list of (feature,
    contribution), largest |contribution| first), summary ("score 0.31: low confidence (-0.12),
    Asia session (-0.08), ..."). attrs["feature_names"] lists the features.
    """
    m = _resolve(model)
    X = m.matrix(dataset)
    names = m.feature_names
    if len(X):
        sv, base, out = _explain_arrays(m, X)
    else:
        sv, base, out = np.zeros((0, len(names))), float("nan"), np.zeros(0)
    prob = m.score(X) if len(X) else np.zeros(0)
    res = pd.DataFrame(index=dataset.index)
    if "insight_id" in dataset.columns:
        res["insight_id"] = dataset["insight_id"].to_numpy()
    res["base_value"] = base
    contrib = pd.DataFrame(sv, columns=[SHAP_PREFIX + f for f in names], index=dataset.index)
    res = pd.concat([res, contrib], axis=1)
    res["model_output"] = out
    res["probability"] = prob

    k = min(top_n, len(names))
    order = np.argsort(-np.abs(sv), axis=1, kind="stable")[:, :k] if len(X) else np.zeros((0, k),
                                                                                         int)
    sym = dataset["symbol"].astype(str).to_numpy() if "symbol" in dataset.columns else None
    strat = dataset["strategy"].astype(str).to_numpy() if "strategy" in dataset.columns else None
    tf = dataset["timeframe"].astype(str).to_numpy() if "timeframe" in dataset.columns else None
    ref = [m.reference.get(f) for f in names]
    tops, summaries = [], []
    for i in range(len(X)):
        items, words = [], []
        for j in order[i]:
            c = float(sv[i, j])
            items.append((names[j], c))
            words.append(f"{describe_feature(names[j], float(X[i, j]), ref[j], sym[i] if sym is not None else None, strat[i] if strat is not None else None, tf[i] if tf is not None else None)} ({c:+.2f})")
        tops.append(items)
        summaries.append(f"score {prob[i]:.2f}: " + ", ".join(words))
    res["top_features"] = pd.Series(tops, index=dataset.index, dtype=object)
    res["summary"] = pd.Series(summaries, index=dataset.index, dtype=object)
    res.attrs["feature_names"] = list(names)
    return res


def global_importance(explanations: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per feature over the explained insights, largest first: feature, label,
    mean_abs_shap, mean_shap."""
    cols = [c for c in explanations.columns if str(c).startswith(SHAP_PREFIX)]
    names = [c[len(SHAP_PREFIX):] for c in cols]
    vals = explanations[cols].to_numpy(dtype=float) if cols else np.zeros((0, 0))
    out = pd.DataFrame({
        "feature": names,
        "label": [FEATURE_LABELS.get(n, n) for n in names],
        "mean_abs_shap": np.abs(vals).mean(axis=0) if len(vals) else np.full(len(names), np.nan),
        "mean_shap": vals.mean(axis=0) if len(vals) else np.full(len(names), np.nan),
    })
    return out.sort_values(["mean_abs_shap", "feature"], ascending=[False, True],
                           kind="stable").reset_index(drop=True)
