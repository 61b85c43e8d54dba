"""Row-level validation of insights and candles, vectorised.

Bad rows never take a batch down: each is left out with a reason a person understands and comes
back as a quarantine record (source, row_id, reason). Only structural problems raise: a missing
required column, a timezone-naive candle `ts`, or nothing valid left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from autopsy_assets.domain import instruments
from autopsy_assets.domain.arrays import (
    UTC_NS,
    change_starts,
    factorize,
    filled,
    text_all_distinct,
    text_runs,
    utc_index,
)
from autopsy_assets.domain.arrays import arrow_array as _arrow_array
from autopsy_assets.domain.schemas import (
    CANDLE_REQUIRED,
    INSIGHT_OPTIONAL,
    INSIGHT_REQUIRED,
    INSIGHT_STATUSES,
    SIDES,
    TIMEFRAMES,
)

_TZ_SUFFIX = r"(?:Z|[+-]\d{2}:?\d{2}|UTC)$"


class Quarantine(tuple):
    """Rejected rows: an immutable sequence of dicts (source, row_id, reason; validation adds
    row, the row's position in the frame it was given, so the caller can keep the raw row).

    It lives in DataFrame.attrs, which pandas deep-copies into every derived frame and compares
    with == in concat: a tuple that returns itself from deepcopy keeps both cheap and safe.
    """

    def __new__(cls, rows: Iterable[dict] = ()):
        return super().__new__(cls, tuple(rows))

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __add__(self, other):
        return Quarantine(tuple(self) + tuple(other))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self), columns=["source", "row_id", "reason"])


class InputError(ValueError):
    """A frame autopsy cannot use at all (missing column, naive ts, nothing valid left)."""


def require_columns(df: pd.DataFrame, required: Sequence[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{what} are missing required column(s): {', '.join(missing)}")


def to_utc_ns(values: pd.Series, column: str, what: str) -> pd.Series:
    """A datetime Series as UTC ns; naive datetimes are refused (never silently UTC)."""
    if values.dtype == UTC_NS:  # (as it is: pandas' copy-on-write keeps edits apart)
        return values
    if isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_timestamp(
        values.dtype.pyarrow_dtype
    ):  # (parquet read with the pyarrow backend): as numpy-backed datetimes, zone and all
        tz = values.dtype.pyarrow_dtype.tz
        values = values.astype(pd.DatetimeTZDtype("ns", tz) if tz else "datetime64[ns]")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.as_unit("ns")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        raise InputError(
            f"{what} column `{column}` is timezone-naive; localise it to UTC explicitly"
        )
    parsed = pd.to_datetime(values, errors="raise", format="ISO8601")
    if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        raise InputError(
            f"{what} column `{column}` is timezone-naive; localise it to UTC explicitly"
        )
    return parsed.dt.tz_convert("UTC").dt.as_unit("ns")


class _Reasons:
    """First failing reason per row; later checks never overwrite an earlier one.

    Only failing rows carry a reason (a dict), so the common case of a clean batch costs one
    boolean array, not an object array of empty strings.
    """

    def __init__(self, n: int):
        self.bad = np.zeros(n, dtype=bool)
        self.by_row: dict[int, str] = {}

    def add(self, mask: np.ndarray, make) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():  # (the common case: one pass over the mask)
            return
        idx = np.flatnonzero(mask & ~self.bad)
        if len(idx):
            self.bad[idx] = True
            for i in idx.tolist():  # only the bad rows are formatted
                self.by_row[i] = make(i)

    def add_codes(self, codes: np.ndarray, reasons: dict) -> None:
        """`add` for each code a compiled check pass gave (0: passed), in the order of
        ``reasons`` (code -> make); a clean batch costs one test."""
        if codes.any():
            for code, make in reasons.items():
                self.add(codes == code, make)

    def reason(self, i: int) -> str:
        return self.by_row[i]


def _numeric(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, not_a_number): values as float; flags entries that are present but not numbers."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        vals = series.to_numpy(dtype=float, na_value=np.nan)
        return vals, np.zeros(len(vals), dtype=bool)
    vals = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    blank = series.isna().to_numpy() | (series.astype(str).str.strip() == "").to_numpy()
    return vals, np.isnan(vals) & ~blank


def _factor_text(
    series: pd.Series, lower: bool = False, upper: bool = False, strip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(codes, table) of a text column, normalised (stripped, cased) once per distinct value:
    the table holds each normalised value once ('eurusd' and 'EURUSD ' share a code) and
    missing values become ''.

    Columns such as symbol or timeframe hold a handful of values over many rows: string work is
    done on the uniques and broadcast by code, never per row.
    """
    codes, uniques = factorize(series)
    uniques = np.asarray(uniques, dtype=object)
    if len(uniques) <= 64:  # a handful (symbols, sides): plain str methods, no pandas per call
        raw = [str(v) for v in uniques.tolist()]
        values = raw
        if strip:
            values = [v.strip() for v in values]
        if lower:
            values = [v.lower() for v in values]
        if upper:
            values = [v.upper() for v in values]
        changed = values != raw
        table = np.empty(len(values) + 1, dtype=object)
        table[:-1] = values
    else:
        u = pd.Series(uniques, dtype=object, copy=False)
        if pd.api.types.infer_dtype(u, skipna=False) != "string":  # (50,000 ids: skip a copy)
            u = u.astype(str)
        if strip:
            u = u.str.strip()
        if lower:
            u = u.str.lower()
        if upper:
            u = u.str.upper()
        changed = strip or lower or upper
        table = np.empty(len(u) + 1, dtype=object)
        table[:-1] = u.to_numpy(dtype=object)
    table[-1] = ""  # code -1 (missing) -> ''
    codes = np.where(codes < 0, len(table) - 1, codes) if (codes < 0).any() else codes
    if changed or (table[:-1] == "").any():  # two values may have become one
        merged, distinct_values = pd.factorize(table)
        if len(distinct_values) < len(table):
            return merged[codes], np.asarray(distinct_values, dtype=object)
    return codes, table


def _parse_created_at(raw: pd.Series, reasons: _Reasons) -> np.ndarray:
    """created_at as int64 ns UTC; rows without a timezone or unparseable get a reason."""
    n = len(raw)
    if raw.dtype == UTC_NS:  # (already UTC in ns: its int64 values, without a copy)
        ns = raw.array.asi8
        na = ns == np.iinfo(np.int64).min
        reasons.add(na, lambda i: "created_at is missing")
        return np.where(na, 0, ns) if na.any() else ns
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        ts = raw.dt.tz_convert("UTC").dt.as_unit("ns")
        na = ts.isna().to_numpy()
        reasons.add(na, lambda i: "created_at is missing")
        return (
            ts.astype("int64").to_numpy()
            if not na.any()
            else np.where(na, 0, ts.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy())
        )
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        reasons.add(
            np.ones(n, bool),
            lambda i: f"created_at {raw.iloc[i]} has no timezone; autopsy never assumes UTC",
        )
        return np.zeros(n, dtype=np.int64)
    text = pd.Series(
        [v.isoformat() if isinstance(v, pd.Timestamp) else v for v in raw.to_numpy()]
        if raw.dtype == object
        else raw,
        index=raw.index,
    ).astype(object)
    s = text.where(text.notna(), "").astype(str).str.strip()
    missing = (s == "").to_numpy()
    reasons.add(missing, lambda i: "created_at is missing")
    naive = ~s.str.contains(_TZ_SUFFIX, regex=True).to_numpy() & ~missing
    reasons.add(
        naive, lambda i: f"created_at '{s.iloc[i]}' has no timezone; autopsy never assumes UTC"
    )
    parsed = pd.to_datetime(
        s.where(~(missing | naive), None), utc=True, errors="coerce", format="ISO8601"
    ).dt.as_unit("ns")
    bad = parsed.isna().to_numpy() & ~(missing | naive)
    reasons.add(bad, lambda i: f"created_at '{s.iloc[i]}' is not a timestamp")
    return parsed.fillna(pd.Timestamp(0, tz="UTC")).astype("int64").to_numpy()


_CLEAN_INSIGHT_ORDER = (
    "insight_id", "created_at", "symbol", "side", "entry_price", "stop_loss", "take_profit",
    "timeframe", "status", "fill_price", "ai_score", "confidence", "truth_index", "strategy",
    "user_id", "patterns", "user_acted", "filled_at",
)


def validate_insights(
    insights: pd.DataFrame, instruments_path: str | None = None
) -> tuple[pd.DataFrame, Quarantine]:
    """Normalised good insights and the quarantine of bad ones.

    Good rows get: insight_id str, created_at datetime64[ns, UTC], symbol upper, side lower,
    floats for prices, timeframe lower ('' = none), status, strategy, user_id, user_acted bool,
    and every optional column with its default (schemas.INSIGHT_OPTIONAL).
    """
    clean, quarantine, _ = validate_insights_coded(insights, instruments_path)
    return clean, quarantine


def validate_insights_coded(
    insights: pd.DataFrame, instruments_path: str | None = None, frame: bool = True
) -> tuple[pd.DataFrame | dict, Quarantine, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """`validate_insights`, plus the codes it found for the text columns of few values
    (symbol, side, timeframe, status, strategy, user_id): ``codes[col] = (code per clean row,
    distinct values)``, so the labeling engine does not hash the same text again.

    ``frame=False``: the clean columns the labeling engine reads (insight_id, created_at,
    the prices and scores, user_acted) as a dict instead of the whole clean frame; the text
    columns are only in the codes.
    """
    require_columns(insights, INSIGHT_REQUIRED, "insights")
    df = insights.reset_index(drop=True)
    n = len(df)
    r = _Reasons(n)
    unique_ids = _unique_text_ids(df["insight_id"])
    if unique_ids is not None:  # the common case: text ids, none missing or repeated
        (ids, empty), counts = unique_ids, None
    else:
        id_codes, id_table = _factor_text(df["insight_id"], strip=False)  # taken verbatim
        ids = id_table[id_codes]
        empty = ids == ""
        counts = np.bincount(id_codes, minlength=len(id_table))[id_codes]
    r.add(empty, lambda i: f"row {i}: insight_id is missing")
    if counts is not None:
        r.add(
            (counts > 1) & ~empty,
            lambda i: f"insight_id {ids[i]} appears {counts[i]} times; none of them is labeled",
        )
    created_ns = _parse_created_at(df["created_at"], r)
    sym_codes, sym_table = _factor_text(df["symbol"], upper=True)
    r.add((sym_table == "")[sym_codes], lambda i: "symbol is missing")
    r.add(
        ~instruments.known(sym_table, instruments_path)[sym_codes],
        lambda i: f"unknown symbol {sym_table[sym_codes[i]]!r}: it is not in the instruments table",
    )
    # low-cardinality text is checked on its distinct values and broadcast by code
    side_codes, side_table = _factor_text(df["side"], lower=True)
    r.add(
        ~np.isin(side_table, SIDES)[side_codes],
        lambda i: f"unknown side {df['side'].iloc[i]!r}: expected long or short",
    )
    entry, entry_nan = _numeric(df["entry_price"])
    levels = {}
    nan_texts = {}
    for col in ("stop_loss", "take_profit", "fill_price", "ai_score", "confidence", "truth_index"):
        levels[col], nan_texts[col] = _numeric(df[col]) if col in df else (np.full(n, np.nan), None)
    is_long, is_short = (side_table == "long")[side_codes], (side_table == "short")[side_codes]
    sl, tp = levels["stop_loss"], levels["take_profit"]
    entry_problem, level_problem = _insight_number_problems(
        entry, sl, tp, levels["ai_score"], levels["confidence"], is_long, is_short
    )
    # the reasons in the order they are checked: the first one a row fails is its reason
    r.add(entry_nan, lambda i: f"entry_price {df['entry_price'].iloc[i]!r} is not a number")
    r.add_codes(
        entry_problem,
        {
            _ENTRY_MISSING: lambda i: "entry_price is missing",
            _ENTRY_NOT_POSITIVE: lambda i: f"entry_price {entry[i]} must be positive",
        },
    )
    for col, nan_text in nan_texts.items():
        if nan_text is not None and nan_text.any():
            r.add(nan_text, lambda i, col=col: f"{col} {df[col].iloc[i]!r} is not a number")
    ai, conf = levels["ai_score"], levels["confidence"]
    r.add_codes(
        level_problem,
        {
            _LONG_STOP: lambda i: f"long with stop_loss {sl[i]} at or above entry {entry[i]}",
            _SHORT_STOP: lambda i: f"short with stop_loss {sl[i]} at or below entry {entry[i]}",
            _LONG_TARGET: lambda i: (
                f"long with take_profit {tp[i]} at or below entry {entry[i]}"
            ),
            _SHORT_TARGET: lambda i: (
                f"short with take_profit {tp[i]} at or above entry {entry[i]}"
            ),
            _LEVEL_NOT_POSITIVE: lambda i: "stop_loss and take_profit must be positive prices",
            _SCORE_RANGE: lambda i: f"ai_score {ai[i]} is outside 0-100",
            _CONFIDENCE_RANGE: lambda i: f"confidence {conf[i]} is outside 0-100",
        },
    )
    tf_codes, tf_table = (
        _factor_text(df["timeframe"], lower=True)
        if "timeframe" in df
        else (np.zeros(n, dtype=np.int64), np.array([""], dtype=object))
    )
    r.add(
        ((tf_table != "") & ~np.isin(tf_table, list(TIMEFRAMES)))[tf_codes],
        lambda i: (
            f"unknown timeframe {tf_table[tf_codes[i]]!r}: expected one of {', '.join(TIMEFRAMES)}"
        ),
    )
    st_codes, st_table = (
        _factor_text(df["status"], lower=True)
        if "status" in df
        else (np.zeros(n, dtype=np.int64), np.array([""], dtype=object))
    )
    st_table = np.where(st_table == "", "published", st_table).astype(object)
    r.add(
        ~np.isin(st_table, INSIGHT_STATUSES)[st_codes],
        lambda i: f"unknown status {st_table[st_codes[i]]!r}: expected published or filtered",
    )

    bad = r.bad
    quarantine = Quarantine(
        {"source": "insights", "row_id": ids[i] or f"row {i}", "reason": r.reason(i), "row": int(i)}
        for i in np.flatnonzero(bad)
    )
    good = np.flatnonzero(~bad)
    n_good = len(good)
    everyone = n_good == n  # the common case: the clean columns are the checked ones, no copies
    keep = (lambda a: a) if everyone else (lambda a: a[good])  # noqa: E731

    def number(name: str, values: np.ndarray):
        """A clean number column: the good rows' values, or with every row good, the caller's
        own column where these are its values (_given_column), else these (fresh) values."""
        if not everyone:
            return values[good]
        given = _given_column(df, name, values)
        return values if given is None else given

    # object columns of shared strings (no per-row arrow string copies); one block per column
    obj = lambda a: pd.Series(a, dtype=object, copy=False)  # noqa: E731
    columns = {
        # arrow-backed ids stay arrow (one Python string per id would cost more than the rest
        # of the insight checks); a clean batch keeps the caller's immutable arrow data, in a
        # wrapper of its own (editing the clean frame never edits the caller's)
        "insight_id": obj(ids[good]) if isinstance(ids, np.ndarray)
        else pd.Series(ids.copy() if everyone else ids.take(good), copy=False),
        "created_at": df["created_at"]
        if everyone and df["created_at"].dtype == UTC_NS
        else utc_index(created_ns[good]),
        "entry_price": number("entry_price", entry),
        "stop_loss": number("stop_loss", sl),
        "take_profit": number("take_profit", tp),
    }
    for col in ("fill_price", "ai_score", "confidence", "truth_index"):
        columns[col] = number(col, levels[col])
    codes = {
        "symbol": _compact_codes(keep(sym_codes), sym_table),
        "side": _compact_codes(keep(side_codes), side_table),
        "timeframe": _compact_codes(keep(tf_codes), tf_table),
        "status": _compact_codes(keep(st_codes), st_table),
    }
    for col in ("strategy", "user_id"):
        c, table = _factor_text(df[col]) if col in df else (np.zeros(n, np.int64), np.array([""]))
        codes[col] = _compact_codes(keep(c), table.astype(object))
    if "user_acted" in df:
        acted = df["user_acted"].map(
            lambda v: str(v).strip().lower() in ("1", "true", "yes", "y", "t")
        )
        columns["user_acted"] = acted.to_numpy(dtype=bool)[good]
    else:
        columns["user_acted"] = ~np.isnan(keep(levels["fill_price"]))
    if not frame:  # what the labeling engine reads; its text comes from the codes
        return columns, quarantine, codes
    for col, (c, table) in codes.items():
        # one value (an absent optional column, one symbol...): references, not a lookup
        columns[col] = obj(filled(n_good, table[0]) if len(table) == 1 else table[c])
    columns["patterns"] = obj(
        df["patterns"].to_numpy(dtype=object)[good] if "patterns" in df else filled(n_good, "")
    )
    if "filled_at" in df:
        fa = pd.to_datetime(df["filled_at"], utc=True, errors="coerce", format="ISO8601")
        columns["filled_at"] = utc_index(fa.to_numpy(dtype="datetime64[ns]").view("int64")[good])
    else:
        columns["filled_at"] = utc_index(np.full(n_good, np.iinfo(np.int64).min))
    out = pd.DataFrame({col: columns[col] for col in _CLEAN_INSIGHT_ORDER}, copy=False)
    assert set(INSIGHT_OPTIONAL) <= set(out.columns)
    return out, quarantine, codes


def _given_column(df: pd.DataFrame, name: str, values: np.ndarray) -> pd.Series | None:
    """The caller's float64 column ``name`` when ``values`` are its very values (a view
    _numeric made), else None. Kept as a pandas column, not copied: pandas' copy-on-write keeps
    an edit of the caller's frame out of the clean one, and the other way round; the view
    itself would be read-only and would follow the caller's edits."""
    if name in df and df[name].dtype == np.float64:
        given = df[name]
        if np.may_share_memory(values, given.to_numpy()):
            return given
    return None


def _unique_text_ids(ids: pd.Series) -> tuple[np.ndarray | pd.api.extensions.ExtensionArray,
                                                np.ndarray] | None:
    """(ids, which are empty) when the ids are text, none missing and none repeated; None
    otherwise (the caller factorizes them and names the repeats).

    Arrow-backed ids are checked on their buffers (arrays.text_all_distinct, outside the GIL)
    and returned as they are: no Python string is made per id. Other text is hashed once per
    id (~2x faster than factorizing it) and returned as an object array.
    """
    if not isinstance(ids.dtype, pd.StringDtype) or ids.hasnans:
        return None
    arrow = _arrow_array(ids)
    if arrow is not None:
        checked = text_all_distinct(arrow)
        if checked is not None:
            distinct, empty = checked
            return (ids.array, empty) if distinct else None
        if len(pc.unique(arrow)) != len(arrow):
            return None
        return ids.array, pc.equal(arrow, "").to_numpy(zero_copy_only=False)
    values = ids.to_numpy(dtype=object)
    return (values, values == "") if len(set(values)) == len(values) else None


def _compact_codes(codes: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, distinct values) keeping each value once and only the values some row uses: a
    table may hold values of rejected rows, and a value twice (a blank status read as
    'published' beside 'published'; _factor_text's own tables hold each value once)."""
    if len(table) == 1 and len(codes):  # (an absent optional column: every code 0)
        return codes, np.asarray(table, dtype=object)
    used = np.flatnonzero(np.bincount(codes, minlength=len(table)))
    values = np.asarray(table[used], dtype=object)
    if len(set(values.tolist())) == len(values):  # (the common case: nothing to merge)
        if np.array_equal(used, np.arange(len(used))):  # codes 0..k-1: kept as they are
            return codes, values
        used_codes, uniques = np.arange(len(used)), values
    else:
        used_codes, uniques = pd.factorize(values)
    remap = np.zeros(len(table), dtype=np.int64)
    remap[used] = used_codes
    return remap[codes], np.asarray(uniques, dtype=object)


def _categorical(
    codes: np.ndarray, table: np.ndarray, runs: _Runs | None = None
) -> pd.Categorical:
    """A categorical of ``table[codes]`` (``codes`` per run of ``runs`` when given), its
    categories in name order: the order of the sorted clean candles, whatever the input's."""
    codes, uniques = _compact_codes(codes, table)
    order = np.argsort(uniques.astype(str), kind="stable")
    if (order != np.arange(len(order))).any():
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        codes, uniques = rank[codes], uniques[order]
    codes = codes.astype(np.int8 if len(uniques) < 128 else np.int32)  # (repeated small)
    # (the codes index the uniques by construction: no pass over every row to check them)
    return pd.Categorical.from_codes(
        codes if runs is None else runs.rows(codes),
        categories=pd.Index(uniques, dtype=object),
        validate=False,
    )


# the number checks of an insight, in the order their reasons are given (first failing wins)
_ENTRY_MISSING, _ENTRY_NOT_POSITIVE = 1, 2
_LONG_STOP, _SHORT_STOP, _LONG_TARGET, _SHORT_TARGET = 1, 2, 3, 4
_LEVEL_NOT_POSITIVE, _SCORE_RANGE, _CONFIDENCE_RANGE = 5, 6, 7


@numba.njit(cache=True, nogil=True)
def _insight_number_problems(entry, sl, tp, ai, conf, is_long, is_short):  # pragma: no cover
    """Per insight, the code of its first failing check of the entry, and of its levels and
    scores (0: none), in one pass instead of a dozen whole-array comparisons. A blank (NaN)
    level or score fails nothing."""
    n = len(entry)
    entry_problem, level_problem = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8)
    for i in range(n):
        en = entry[i]
        if np.isnan(en):
            entry_problem[i] = _ENTRY_MISSING
        elif not en > 0:
            entry_problem[i] = _ENTRY_NOT_POSITIVE
        if is_long[i] and sl[i] >= en:
            level_problem[i] = _LONG_STOP
        elif is_short[i] and sl[i] <= en:
            level_problem[i] = _SHORT_STOP
        elif is_long[i] and tp[i] <= en:
            level_problem[i] = _LONG_TARGET
        elif is_short[i] and tp[i] >= en:
            level_problem[i] = _SHORT_TARGET
        elif sl[i] <= 0 or tp[i] <= 0:
            level_problem[i] = _LEVEL_NOT_POSITIVE
        elif ai[i] < 0 or ai[i] > 100:
            level_problem[i] = _SCORE_RANGE
        elif conf[i] < 0 or conf[i] > 100:
            level_problem[i] = _CONFIDENCE_RANGE
    return entry_problem, level_problem


# the price checks of a candle, in the order their reasons are given (first failing wins)
_NAN_PRICE, _NOT_POSITIVE, _HIGH_BELOW_LOW, _OUTSIDE_RANGE, _NEGATIVE_SPREAD = range(1, 6)


@numba.njit(cache=True, nogil=True)
def _any_price_problem(o, h, lo, c, spread):  # pragma: no cover - compiled
    """Whether some candle fails a check of `_price_problems`: one test per candle without a
    branch, which the compiler vectorises (~5x faster than finding each candle's first failing
    check, which only a batch with a bad candle needs). low > 0 with open, high and close
    inside [low, high] makes every price positive; a NaN fails every comparison."""
    bad = False
    for i in range(len(o)):
        ok = (lo[i] > 0) & (h[i] >= lo[i]) & (o[i] <= h[i]) & (o[i] >= lo[i])
        bad |= not (ok & (c[i] <= h[i]) & (c[i] >= lo[i]) & (spread[i] >= 0))
    return bad


@numba.njit(cache=True, nogil=True)
def _price_problems(o, h, lo, c, spread):  # pragma: no cover - compiled
    """Per candle, the code of its first failing price check (0: none), in one pass instead
    of a dozen whole-array comparisons."""
    out = np.zeros(len(o), dtype=np.int8)
    for i in range(len(o)):
        if np.isnan(o[i]) or np.isnan(h[i]) or np.isnan(lo[i]) or np.isnan(c[i]):
            out[i] = _NAN_PRICE
        elif o[i] <= 0 or h[i] <= 0 or lo[i] <= 0 or c[i] <= 0:
            out[i] = _NOT_POSITIVE
        elif h[i] < lo[i]:
            out[i] = _HIGH_BELOW_LOW
        elif o[i] > h[i] or o[i] < lo[i] or c[i] > h[i] or c[i] < lo[i]:
            out[i] = _OUTSIDE_RANGE
        elif spread[i] < 0:
            out[i] = _NEGATIVE_SPREAD
    return out


@numba.njit(cache=True, nogil=True)
def _run_order(starts, run_group, ts):  # pragma: no cover - compiled
    """(sorted, repeats) of candles in runs (run k starts at row starts[k], all its rows in
    group run_group[k]): whether they are sorted by (group, ts), and whether two neighbours
    share group and ts."""
    in_order, repeats = True, False
    for k in range(len(starts)):
        a = starts[k]
        b = starts[k + 1] if k + 1 < len(starts) else len(ts)
        if k and run_group[k] < run_group[k - 1]:
            in_order = False
        first = a + 1 if k == 0 or run_group[k] != run_group[k - 1] else a
        for i in range(first, b):
            if ts[i] < ts[i - 1]:
                in_order = False
            elif ts[i] == ts[i - 1]:
                repeats = True
    return in_order, repeats


class _Runs:
    """Runs of candles that share their symbol and timeframe with the row before them.

    Candles arrive grouped: 265,000 rows are a handful of runs, so text is looked up, checked
    and coded per run and broadcast to the rows only where a row-level array is needed. When
    either column is not grouped, every row is a run of its own.
    """

    def __init__(self, columns: dict[str, pd.Series], n: int):
        self.columns = columns
        self.found = {name: text_runs(c) for name, c in columns.items()}
        starts = (
            np.unique(np.concatenate([f[0] for f in self.found.values()]))
            if self.found and all(f is not None for f in self.found.values())
            else None
        )
        self.n, self.by_row = n, starts is None or len(starts) > n // 8
        self.starts = np.arange(n) if self.by_row else starts

    def values(self, name: str) -> pd.Series:
        """Column ``name``'s value in each run (its first row's), read off the column's own
        runs (taking them from an arrow column would join its chunks: a copy of every row)."""
        if self.by_row:
            return self.columns[name]
        own_starts, own_values = self.found[name]
        return pd.Series(
            own_values[np.searchsorted(own_starts, self.starts, side="right") - 1], dtype=object
        )

    def rows(self, per_run: np.ndarray) -> np.ndarray:
        """A per-run array broadcast to the rows."""
        return per_run if self.by_row else np.repeat(per_run, np.diff(self.starts, append=self.n))

    def add(self, reasons: _Reasons, per_run: np.ndarray, make) -> None:
        """`_Reasons.add` of a per-run mask (broadcast only when some run fails)."""
        if per_run.any():
            reasons.add(self.rows(per_run), make)

    def of_row(self, i: int) -> int:
        """The run row ``i`` lies in."""
        return i if self.by_row else int(np.searchsorted(self.starts, i, side="right")) - 1


def infer_timeframe(ts_ns: np.ndarray) -> str | None:
    """The timeframe whose bar length is the most common spacing (never the mean)."""
    if len(ts_ns) < 2:
        return None
    diffs = np.diff(np.sort(ts_ns))
    diffs = diffs[diffs > 0]
    if not len(diffs):
        return None
    vals, counts = np.unique(diffs, return_counts=True)
    mode_min = vals[np.argmax(counts)] / 60e9
    for name, minutes in TIMEFRAMES.items():
        if minutes == mode_min:
            return name
    return None


def _sorted_without_duplicates(
    good: np.ndarray,
    group: np.ndarray,
    ts_ns: np.ndarray,
    prices: tuple[np.ndarray, ...],
    reasons: _Reasons,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, their groups) of the ``good`` candles in (group, ts) order: exact duplicates
    keep one row, and every copy of a conflicting one (same group and ts, different prices)
    goes to ``reasons``; sorting and dropped copies are noted."""
    g, t = group[good], ts_ns[good]
    sorted_already = len(good) < 2 or bool(
        np.all((g[1:] > g[:-1]) | ((g[1:] == g[:-1]) & (t[1:] >= t[:-1])))
    )
    if not sorted_already:
        notes.append("candles were not sorted; sorted by symbol, timeframe, ts")
        order = np.lexsort((t, g))
        good, g, t = good[order], g[order], t[order]
    # duplicates are neighbours once sorted
    same_key = np.zeros(len(good), dtype=bool)
    if len(good) > 1:
        same_key[1:] = (g[1:] == g[:-1]) & (t[1:] == t[:-1])
    if not same_key.any():
        return good, g
    dup_group = np.cumsum(~same_key)
    first = np.flatnonzero(~same_key)[dup_group - 1]
    differs = np.zeros(len(good), dtype=bool)
    for arr in prices:
        a = arr[good]
        differs |= a != a[first]
    conflicted = (np.bincount(dup_group, weights=differs.astype(float)) > 0)[dup_group]
    exact = same_key & ~conflicted
    if exact.any():
        notes.append(f"{int(exact.sum())} exact duplicate candle row(s) dropped (one copy kept)")
    if conflicted.any():
        mask = np.zeros(len(group), dtype=bool)
        mask[good[conflicted]] = True
        reasons.add(
            mask,
            lambda i: (
                f"conflicting duplicate candle at {pd.Timestamp(ts_ns[i], tz='UTC')}: "
                "two rows with different prices; all copies quarantined"
            ),
        )
    drop = exact | conflicted
    return good[~drop], g[~drop]


def validate_candles(
    candles: pd.DataFrame, instruments_path: str | None = None
) -> tuple[pd.DataFrame, Quarantine, tuple[str, ...]]:
    """Clean candles sorted by (symbol, timeframe, ts), the quarantine, and notes for the run.

    See `validate_candle_runs`, which also says where each (symbol, timeframe) run starts.
    """
    clean, quarantine, notes, _ = validate_candle_runs(candles, instruments_path)
    for col in ("symbol", "timeframe"):
        clean[col] = pd.Series(clean[col].to_numpy(dtype=object), dtype=object, copy=False)
    return clean, quarantine, notes


def validate_candle_runs(
    candles: pd.DataFrame, instruments_path: str | None = None
) -> tuple[pd.DataFrame, Quarantine, tuple[str, ...], np.ndarray]:
    """`validate_candles`, plus the row where each (symbol, timeframe) run of the clean frame
    starts (the labeling engine and block hashing use them instead of comparing text again);
    symbol and timeframe come as categoricals.

    Refused outright: a missing required column or a naive `ts`. Quarantined per row: unknown
    symbol or timeframe, a NaN or non-positive price, high < low, open/close outside [low, high],
    a negative spread, and every row of a conflicting duplicate (same symbol, timeframe and ts,
    different prices). Exact duplicates keep one row; unsorted input is sorted; both are noted.
    Vectorised throughout: text work is per distinct value, duplicates are found on sorted keys.
    """
    require_columns(candles, CANDLE_REQUIRED, "candles")
    df = candles.reset_index(drop=True)
    ts = to_utc_ns(df["ts"], "ts", "candles")
    n = len(df)
    r = _Reasons(n)
    # symbol and timeframe are looked up, checked and coded per run of rows sharing both
    runs = _Runs({c: df[c] for c in ("symbol", "timeframe") if c in df}, n)
    sym_codes, sym_table = _factor_text(runs.values("symbol"), upper=True)  # (per run)
    symbol = lambda i: sym_table[sym_codes[runs.of_row(i)]]  # noqa: E731  (per bad row)
    runs.add(
        r,
        ~instruments.known(sym_table, instruments_path)[sym_codes],
        lambda i: f"unknown symbol {symbol(i)!r}: it is not in the instruments table",
    )
    ts_missing = ts.isna().to_numpy()
    ts_ns = (
        ts.to_numpy(dtype="datetime64[ns]").view("int64")
        if not ts_missing.any()
        else ts.fillna(pd.Timestamp(0, tz="UTC")).to_numpy(dtype="datetime64[ns]").view("int64")
    )
    r.add(ts_missing, lambda i: "ts is missing")
    o, h, lo, c = (_numeric(df[col])[0] for col in ("open", "high", "low", "close"))
    volume = _numeric(df["volume"])[0] if "volume" in df else np.full(n, np.nan)
    spread = _numeric(df["spread"])[0] if "spread" in df else np.zeros(n)
    if np.isnan(spread).any():
        spread = np.nan_to_num(spread, nan=0.0)  # unknown spread: bid only
    prices = tuple(np.ascontiguousarray(a) for a in (o, h, lo, c, spread))
    if _any_price_problem(*prices):  # (a clean batch: one vectorised test, no codes)
        r.add_codes(
            _price_problems(*prices),
            {
                _NAN_PRICE: lambda i: "a price (open/high/low/close) is missing or not a number",
                _NOT_POSITIVE: lambda i: "prices must be positive",
                _HIGH_BELOW_LOW: lambda i: f"high {h[i]} is below low {lo[i]}",
                _OUTSIDE_RANGE: lambda i: (
                    f"open {o[i]} / close {c[i]} outside the bar's range [{lo[i]}, {h[i]}]"
                ),
                _NEGATIVE_SPREAD: lambda i: f"spread {spread[i]} is negative",
            },
        )
    if "timeframe" in df:
        tf_codes, tf_table = _factor_text(runs.values("timeframe"), lower=True)
    else:
        tf_codes = np.zeros(len(runs.starts), dtype=np.int64)
        tf_table = np.array([""], dtype=object)
    if (tf_table == "")[tf_codes].any():
        # inferred per symbol from the most common spacing among the rows that lack one
        tf = tf_table[tf_codes]
        missing_tf = tf == ""
        for code in np.unique(sym_codes[missing_tf]):
            in_symbol = missing_tf & (sym_codes == code)
            tf[in_symbol] = infer_timeframe(ts_ns[runs.rows(in_symbol)]) or "?"
        tf_codes, tf_table = _factor_text(pd.Series(tf, dtype=object))
    tf = lambda i: tf_table[tf_codes[runs.of_row(i)]]  # noqa: E731
    runs.add(
        r,
        (tf_table == "?")[tf_codes],
        lambda i: (
            f"timeframe of {symbol(i)} candles cannot be "
            "inferred from their spacing; give a timeframe column"
        ),
    )
    runs.add(
        r,
        ~np.isin(tf_table, list(TIMEFRAMES))[tf_codes],
        lambda i: f"unknown timeframe {tf(i)!r}: expected one of {', '.join(TIMEFRAMES)}",
    )

    notes: list[str] = []
    # one integer per (symbol, timeframe), in name order: clean rows are sorted by (group, ts)
    sym_rank = np.argsort(np.argsort(sym_table.astype(str)))
    tf_rank = np.argsort(np.argsort(tf_table.astype(str)))
    run_group = sym_rank[sym_codes] * len(tf_table) + tf_rank[tf_codes]
    in_order, repeats = _run_order(runs.starts, run_group, ts_ns)
    everything_good = not r.bad.any()  # the common case: no copies of 265,000-row columns
    as_given = everything_good and in_order and not repeats
    if as_given:  # sorted, no duplicates: the runs of groups are the (symbol, timeframe) runs
        quarantine = Quarantine()
        run_starts = runs.starts[change_starts(run_group)]
        take = lambda a: a  # noqa: E731
        symbol_col = _categorical(sym_codes, sym_table, runs)
        timeframe_col = _categorical(tf_codes, tf_table, runs)
    else:
        good = np.arange(n) if everything_good else np.flatnonzero(~r.bad)
        keep, kept_group = _sorted_without_duplicates(
            good, runs.rows(run_group), ts_ns, (o, h, lo, c, spread), r, notes
        )

        def rid(i: int) -> str:
            return f"{symbol(i)}|{tf(i)}|{pd.Timestamp(ts_ns[i], tz='UTC').isoformat()}"

        quarantine = Quarantine(
            {"source": "candles", "row_id": rid(i), "reason": r.reason(i), "row": int(i)}
            for i in np.flatnonzero(r.bad)
        )
        take = lambda a: a[keep]  # noqa: E731
        run_starts = change_starts(kept_group)
        symbol_col = _categorical(take(runs.rows(sym_codes)), sym_table)
        timeframe_col = _categorical(take(runs.rows(tf_codes)), tf_table)

    def price(name: str, values: np.ndarray):
        """A clean price column: the caller's own where these are its values and kept as
        given (_given_column), else the checked (fresh) array."""
        given = _given_column(df, name, values) if as_given else None
        return take(values) if given is None else given

    clean = pd.DataFrame(
        {
            # categorical: 265,000 references to a handful of strings cost ~3 ms per column
            "symbol": symbol_col,
            "timeframe": timeframe_col,
            "ts": ts if as_given else utc_index(ts_ns[keep]),
            "open": price("open", o),
            "high": price("high", h),
            "low": price("low", lo),
            "close": price("close", c),
            "volume": price("volume", volume),
            "spread": price("spread", spread),
        },
        copy=False,  # no need to consolidate (copy) the columns into blocks
    )
    return clean, quarantine, tuple(notes), run_starts
