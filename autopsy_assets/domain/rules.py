"""Labeling rules: how far is "stopped", "succeeded" and "neutral" when the insight does not say.

A rule has a scope (strategy, symbol, timeframe, horizon; blank = any) and values
(fail_sl_pips, success_tp_pips, success_rr_ratio, fail_adverse_pct, neutral_band_pips). For each
insight x horizon the winning active rule is the one with the most non-blank scope fields, then
the highest priority, then the lowest rule_id. It is used whole: its full content is snapshotted
with the audit as canonical JSON, and its sha256 is the audit's rule_hash.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

SCOPE_FIELDS = ("strategy", "symbol", "timeframe", "horizon")
VALUE_FIELDS = (
    "success_tp_pips",
    "success_rr_ratio",
    "fail_sl_pips",
    "fail_adverse_pct",
    "neutral_band_pips",
)
RULE_COLUMNS = ("rule_id", *SCOPE_FIELDS, *VALUE_FIELDS, "is_active", "priority", "notes")


class RuleError(ValueError):
    """A labeling rule that cannot be used, with the rule and the reason."""


def _blank(v) -> bool:
    return (
        v is None
        or (isinstance(v, float) and math.isnan(v))
        or (isinstance(v, str) and v.strip() == "")
    )


def normalise_rules(rules) -> pd.DataFrame:
    """Rules as a DataFrame with every RULE_COLUMNS column; accepts a DataFrame or list of dicts.

    Raises RuleError naming the rule for a missing/duplicate rule_id, a negative or non-numeric
    value, or a rule that can never set a target (no success_tp_pips and no success_rr_ratio).
    """
    df = pd.DataFrame(list(rules)) if not isinstance(rules, pd.DataFrame) else rules.copy()
    if df.empty:
        raise RuleError("no labeling rules given")
    if "rule_id" not in df:
        raise RuleError("labeling rules need a rule_id column")
    for col in SCOPE_FIELDS:
        if col not in df:
            df[col] = ""
        df[col] = df[col].map(lambda v: "" if _blank(v) else str(v).strip())
    df["symbol"] = df["symbol"].str.upper()
    df["horizon"] = df["horizon"].str.upper()
    for col in VALUE_FIELDS:
        if col not in df:
            df[col] = np.nan
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() & ~df[col].map(_blank)
        bad |= vals < 0
        if bad.any():
            rid = df.loc[bad, "rule_id"].iloc[0]
            raise RuleError(
                f"rule {rid}: {col} must be a non-negative number, got {df.loc[bad, col].iloc[0]!r}"
            )
        df[col] = vals.astype(float)
    if "is_active" not in df:
        df["is_active"] = True
    df["is_active"] = df["is_active"].fillna(True).astype(bool)
    if "priority" not in df:
        df["priority"] = 0
    df["priority"] = pd.to_numeric(df["priority"], errors="coerce").fillna(0).astype(int)
    if "notes" not in df:
        df["notes"] = ""
    df["notes"] = df["notes"].fillna("").astype(str)
    try:
        df["rule_id"] = df["rule_id"].astype(int)
    except (TypeError, ValueError) as exc:
        raise RuleError(f"rule_id must be an integer: {exc}") from None
    dup = df["rule_id"].duplicated()
    if dup.any():
        raise RuleError(f"rule {df.loc[dup, 'rule_id'].iloc[0]}: rule_id used twice")
    return df[list(RULE_COLUMNS)].reset_index(drop=True)


def load_rules_yaml(path: str | Path | None = None) -> pd.DataFrame:
    """The packaged rules (or those in ``path``) as a normalised DataFrame."""
    if path is None:
        text = resources.files("autopsy_assets.config").joinpath("labeling_rules.yaml").read_text()
    else:
        text = Path(path).read_text()
    return normalise_rules((yaml.safe_load(text) or {}).get("rules", []))


def rule_snapshot(rule: pd.Series | dict) -> str:
    """Canonical JSON of a rule (sorted keys, floats by repr, blanks as null): hashed per audit."""
    out = {}
    for k in RULE_COLUMNS:
        v = rule[k]
        if isinstance(v, (np.floating, float)):
            v = None if math.isnan(float(v)) else float(v)
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.bool_,)):
            v = bool(v)
        out[k] = v
    return json.dumps(out, sort_keys=True, separators=(",", ":"), allow_nan=False)


def resolve(
    rules: pd.DataFrame,
    strategy: np.ndarray,
    symbol: np.ndarray,
    timeframe: np.ndarray,
    horizon: np.ndarray,
) -> np.ndarray:
    """Index into ``rules`` of the winning active rule per row; -1 where none applies.

    Vectorised over rows: rules are few, so each is tested against all rows at once, in order of
    preference, and a row keeps the first rule that matches it.
    """
    active = rules[rules["is_active"]].copy()
    active["_specificity"] = sum((active[f] != "").astype(int) for f in SCOPE_FIELDS)
    order = active.sort_values(
        ["_specificity", "priority", "rule_id"], ascending=[False, False, True]
    ).index
    # resolve once per distinct scope combination, then broadcast to the rows
    cols = {"strategy": strategy, "symbol": symbol, "timeframe": timeframe, "horizon": horizon}
    key = np.zeros(len(np.asarray(symbol)), dtype=np.int64)
    tables = {}
    for f in SCOPE_FIELDS:
        codes_f, uniq_f = pd.factorize(pd.Series(np.asarray(cols[f], dtype=object), dtype=object))
        tables[f] = (codes_f, np.asarray(uniq_f, dtype=object))
        key = key * (len(uniq_f) + 1) + codes_f
    uniq, first, codes = np.unique(key, return_index=True, return_inverse=True)
    fields = {f: tables[f][1][tables[f][0][first]] for f in SCOPE_FIELDS}
    winner = np.full(len(uniq), -1, dtype=np.int64)
    for idx in order:
        open_rows = winner < 0
        if not open_rows.any():
            break
        match = open_rows.copy()
        for f in SCOPE_FIELDS:
            want = rules.at[idx, f]
            if want != "":
                match &= fields[f] == want
        winner[match] = idx
    return winner[codes]
