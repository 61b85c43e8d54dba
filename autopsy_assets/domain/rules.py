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

from autopsy_assets.domain.arrays import distinct

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


def _rule_number(v) -> float | None:
    """A rule value as float; NaN when blank; None when it is not a number."""
    if _blank(v):
        return math.nan
    try:
        return float(str(v).strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        return None


def _rule_id(v) -> int:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        return int(v.strip())
    raise RuleError(f"rule_id must be an integer: got {v!r}")


def normalise_rules(rules) -> pd.DataFrame:
    """Rules as a DataFrame with every RULE_COLUMNS column; accepts a DataFrame or list of dicts.

    Raises RuleError naming the rule for a missing/duplicate rule_id, a negative or non-numeric
    value, or a rule that can never set a target (no success_tp_pips and no success_rr_ratio).
    Rules are a handful of rows: they are normalised as plain records (pandas' per-column
    machinery costs more than the work on a frame this small, and runs on every labeling call).
    """
    records = (
        rules_as_records(rules) if isinstance(rules, pd.DataFrame) else [dict(r) for r in rules]
    )
    key = _content_key(records)
    done = _NORMALISED.get(key)
    if done is None:
        done = _normalise_records(records)
        if len(_NORMALISED) >= 16:  # a few rule sets are in use at a time; forget the oldest
            _NORMALISED.pop(next(iter(_NORMALISED)), None)
        _NORMALISED[key] = done
    return done.copy(deep=False)  # (copy-on-write: what the caller edits is its own)


# rule sets normalised before, by content: every labeling call normalises its rules, mostly the
# same few, and a frame's worth of pandas machinery costs more than the labeling of a small batch
_NORMALISED: dict[tuple, pd.DataFrame] = {}


def _content_key(records: list[dict]) -> tuple:
    """The rules' content, hashable: each value with its type (1, 1.0, True and '1' normalise
    differently), NaN as one marker (NaN != NaN would miss every time)."""

    def part(v):
        if isinstance(v, float) and math.isnan(v):
            return ("nan",)
        try:
            hash(v)
        except TypeError:
            return (type(v).__name__, repr(v))
        return (type(v).__name__, v)

    return tuple(tuple((k, part(v)) for k, v in r.items()) for r in records)


def _normalise_records(records: list[dict]) -> pd.DataFrame:
    if not records:
        raise RuleError("no labeling rules given")
    if not any("rule_id" in r for r in records):
        raise RuleError("labeling rules need a rule_id column")
    out = [{} for _ in records]
    for rec, o in zip(records, out):
        o["rule_id"] = _rule_id(rec.get("rule_id"))
        for col in SCOPE_FIELDS:
            v = rec.get(col)
            o[col] = "" if _blank(v) else str(v).strip()
        o["symbol"], o["horizon"] = o["symbol"].upper(), o["horizon"].upper()
    for col in VALUE_FIELDS:  # column by column: the first bad value of the first bad column
        for rec, o in zip(records, out):
            v = _rule_number(rec.get(col))
            if v is None or v < 0:
                raise RuleError(
                    f"rule {o['rule_id']}: {col} must be a non-negative number, "
                    f"got {rec.get(col)!r}"
                )
            o[col] = v
    for rec, o in zip(records, out):
        active = rec.get("is_active")
        o["is_active"] = True if _blank(active) and not isinstance(active, str) else bool(active)
        priority = _rule_number(rec.get("priority"))
        o["priority"] = 0 if priority is None or math.isnan(priority) else int(priority)
        notes = rec.get("notes")
        o["notes"] = "" if _blank(notes) and not isinstance(notes, str) else str(notes)
    seen: set[int] = set()
    for o in out:
        if o["rule_id"] in seen:
            raise RuleError(f"rule {o['rule_id']}: rule_id used twice")
        seen.add(o["rule_id"])
    column = lambda c, dtype=None: np.array([o[c] for o in out], dtype=dtype)  # noqa: E731
    return pd.DataFrame(
        {
            "rule_id": column("rule_id", np.int64),
            **{c: pd.array([o[c] for o in out], dtype="str") for c in SCOPE_FIELDS},
            **{c: column(c, float) for c in VALUE_FIELDS},
            "is_active": column("is_active", bool),
            "priority": column("priority", np.int64),
            "notes": pd.array([o["notes"] for o in out], dtype="str"),
        }
    )


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
    cols = {"strategy": strategy, "symbol": symbol, "timeframe": timeframe, "horizon": horizon}
    coded = {}
    for f in SCOPE_FIELDS:
        codes_f, uniq_f = pd.factorize(np.asarray(cols[f], dtype=object))
        coded[f] = (codes_f, np.asarray(uniq_f, dtype=object))
    return resolve_coded(rules, coded)


def rules_as_records(rules: pd.DataFrame) -> list[dict]:
    """The rules as plain dicts of Python values, the values Series.tolist gives (one object
    array for the whole frame: ~3x faster than a Series per column, ~10x than to_dict)."""
    cols = list(rules.columns)
    return [dict(zip(cols, row)) for row in rules.to_numpy(dtype=object).tolist()]


def resolve_coded(
    rules: pd.DataFrame, scope: dict, records: list[dict] | None = None
) -> np.ndarray:
    """`resolve` on factorized scope columns: ``scope[field] = (codes, distinct values)`` for
    each of SCOPE_FIELDS (codes >= 0, one per row). The rules are a handful: they are ordered
    in plain Python, without pandas machinery per call. ``records``: rules_as_records(rules),
    when the caller has them already."""
    records = rules_as_records(rules) if records is None else records
    active = [(i, r) for i, r in zip(rules.index, records) if r["is_active"]]
    index, recs = [i for i, _ in active], [r for _, r in active]
    specificity = [sum(r[f] != "" for f in SCOPE_FIELDS) for r in recs]
    order = sorted(
        range(len(recs)),
        key=lambda k: (-specificity[k], -recs[k]["priority"], recs[k]["rule_id"]),
    )
    # resolve once per distinct scope combination, then broadcast to the rows
    key = np.zeros(len(scope["symbol"][0]), dtype=np.int64)
    tables = {}
    for f in SCOPE_FIELDS:
        codes_f, uniq_f = scope[f]
        tables[f] = (codes_f, np.asarray(uniq_f, dtype=object))
        if len(uniq_f) > 1:  # (one value: the same for every row, nothing to tell apart)
            key = key * (len(uniq_f) + 1) + codes_f
    codes, first = distinct(key)
    fields = {f: tables[f][1][tables[f][0][first]] for f in SCOPE_FIELDS}
    winner = np.full(len(first), -1, dtype=np.int64)
    for k in order:
        open_rows = winner < 0
        if not open_rows.any():
            break
        match = open_rows.copy()
        for f in SCOPE_FIELDS:
            if recs[k][f] != "":
                match &= fields[f] == recs[k][f]
        winner[match] = index[k]
    return winner[codes]
