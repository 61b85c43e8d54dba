"""Helpers shared by the registry tests (a module of its own: test folders have no __init__.py,
so conftest.py modules cannot be imported by name)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from autopsy_assets.domain.features import FEATURE_COLUMNS
from autopsy_assets.store import AuditStore

STRATEGY = "ZenithEdge"
SYMBOLS = ("EURUSD", "GBPUSD")
T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")
# Fewer boosting iterations than the default 200: the tests' signals are strong, and fits, SHAP
# and scoring all scale with the number of trees.
FAST = {"max_iter": 60}


# ----------------------------------------------------------------------------- datasets

def make_dataset(n: int = 600, *, seed: int = 0, strategy: str = STRATEGY,
                 ai_weight: float = 0.0, conf_weight: float = 3.0,
                 reverse_train: dict[str, float] | None = None, start: pd.Timestamp = T0,
                 days: int = 60) -> pd.DataFrame:
    """A build_dataset-shaped table: success depends on confidence (and on ai_score with
    `ai_weight`); `reverse_train` {symbol: fraction of the span} flips the confidence effect for
    that symbol before that point in time (a regime change the candidate learns wrongly)."""
    rng = np.random.default_rng(seed)
    created = (start + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n)), unit="s")
               ).as_unit("ns")
    created = pd.Series(created).dt.floor("s")
    sym = np.array(SYMBOLS, dtype=object)[np.arange(n) % len(SYMBOLS)]
    feats = {c: rng.normal(size=n) for c in FEATURE_COLUMNS}
    feats["confidence"] = rng.uniform(0, 100, n)
    feats["ai_score"] = rng.uniform(0, 100, n)
    feats["symbol_code"] = np.where(sym == SYMBOLS[0], 1.0, 2.0)
    feats["strategy_code"] = np.full(n, 7.0)
    conf = (feats["confidence"] - 50) / 15
    frac = (created - created.min()) / (created.max() - created.min())
    sign = np.ones(n)
    for s, until in (reverse_train or {}).items():
        sign[(sym == s) & (frac.to_numpy() < until)] = -1.0
    logit = conf_weight * sign * conf + ai_weight * (feats["ai_score"] - 50) / 15
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    df = pd.DataFrame({"insight_id": [f"{strategy[:3]}-{seed}-{i:05d}" for i in range(n)],
                       "created_at": created.to_numpy(), "symbol": sym, "strategy": strategy,
                       "timeframe": "1h", "horizon": "24H"})
    for c in FEATURE_COLUMNS:
        df[c] = np.asarray(feats[c], dtype=float)
    df["label"] = label
    df["outcome_source"] = "outcome"
    df["exit_time"] = (pd.Series(created) + pd.Timedelta(hours=6)).to_numpy()
    df["user_id"] = [f"user{i % 40:02d}" for i in range(n)]
    df["pnl_pct"] = np.where(label == 1, 0.8, -0.5)
    df["created_at"] = pd.Series(df["created_at"]).dt.as_unit("ns")
    df["exit_time"] = pd.Series(df["exit_time"]).dt.as_unit("ns")
    df.attrs["feature_names"] = list(FEATURE_COLUMNS)
    return df


def snapshot(client: MlflowClient, store: AuditStore, strategy: str = STRATEGY,
             request_id: str | None = None) -> dict:
    """What an illegal step must leave unchanged: aliases, alias moves, the trail, the request's
    tags and the number of model versions."""
    from autopsy_assets.registry import aliases, model_versions_frame

    out = {"aliases": aliases(strategy, client=client),
           "alias_moves": store.alias_moves().drop(columns=["at"]).to_dict("records"),
           "trail": store.trail().drop(columns=["at"]).to_dict("records"),
           "versions": len(model_versions_frame(strategy, client=client))}
    if request_id:
        out["tags"] = {k: v for k, v in client.get_run(request_id).data.tags.items()}
    return out
