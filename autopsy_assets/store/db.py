"""The audit store: candles in content-addressed blocks, insights, labeling rules, audits with
history, quarantine (DESIGN.md sections 1, 2a, 4); and for the learning loop (migration 0002):
news events, market regimes, pattern checks, RCA findings, SHAP explanations, the retrain-request
audit trail, alias moves and A/B assignments. Pure SQLAlchemy 2, no dagster import.

SQLite is the zero-setup default (`.autopsy/audit.db`); PostgreSQL is chosen by URL
(`AUTOPSY_DATABASE_URL`). Every method takes and returns plain pandas frames; times are tz-aware
UTC `datetime64[ns, UTC]` and naive times are refused. Bulk paths are set-based: one query per
chunk of keys, comparisons in pandas, `executemany` writes.

Writers serialise per concern: on PostgreSQL a transaction-scoped advisory lock, on SQLite
`BEGIN IMMEDIATE` (the database's single writer lock, waited for with a busy timeout). So a
read-compare-write cycle such as `upsert_audits` never races another process doing the same.
"""
from __future__ import annotations

import datetime as dt
import functools
import io
import json
import math
import os
import sqlite3
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from autopsy_assets.domain import replay
from autopsy_assets.domain.news import IMPACTS, parse_currencies
from autopsy_assets.domain.schemas import (
    AUDIT_COLUMNS,
    HORIZONS,
    INSIGHT_OPTIONAL,
    INSIGHT_REQUIRED,
    OUTCOMES,
    TIMEFRAMES,
)
from autopsy_assets.store import models as m

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "autopsy_alembic_version"
DATABASE_URL_ENV = "AUTOPSY_DATABASE_URL"

CANDLE_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "spread")
INSIGHT_COLUMNS = tuple(INSIGHT_REQUIRED) + tuple(INSIGHT_OPTIONAL)
RULE_SCOPE = ("strategy", "symbol", "timeframe", "horizon")
RULE_NUMBERS = ("success_tp_pips", "success_rr_ratio", "fail_sl_pips", "fail_adverse_pct",
                "neutral_band_pips")
RULE_COLUMNS = ("rule_id", *RULE_SCOPE, *RULE_NUMBERS, "is_active", "priority", "notes",
                "created_by", "updated_at")
AUDIT_EXTRA = ("is_current", "evaluated_at", "run_id")
# compared to decide whether a re-run changed an audit (DESIGN.md 2a "Audit identity")
AUDIT_METRICS = ("outcome", "replay_outcome", "exit_reason", "exit_price", "exit_time", "pnl_pct",
                 "max_drawdown", "max_favorable", "duration_minutes", "ambiguous",
                 "needs_review_reason", "rule_id")
AUDIT_KEY = ("insight_id", "horizon")
UPSERT_COUNTS = ("inserted", "refreshed", "unchanged", "superseded")

# domain.regimes.REGIMES (a test keeps them equal; importing it would pull scipy into the store)
REGIMES = ("trending_up", "trending_down", "ranging", "volatile")
REGIME_SOURCES = ("derived", "feed")
AB_ARMS = ("champion", "challenger")

_CHUNK = 2000  # keys per IN (...) list: well under SQLite's variable limit (32766)


class MissingCandleBlocksError(LookupError):
    """Raised by `read_blocks` when a requested block hash is not in the store."""


class TransitionConflict(ValueError):
    """Raised by `record_transition` when a retrain request is not in the status the transition
    starts from (someone else moved it first, a step was skipped, or it was already decided)."""

    def __init__(self, message: str, request_id: str = "", expected: str = "",
                 actual: str | None = None) -> None:
        super().__init__(message)
        self.request_id, self.expected, self.actual = request_id, expected, actual


class AliasMoveConflict(ValueError):
    """Raised by `record_alias_move` when the model's last alias move is not the one the caller
    read (someone else moved an alias first): re-read the aliases and decide again."""

    def __init__(self, message: str, model_name: str = "", expected_seq: int | None = None,
                 actual_seq: int = 0) -> None:
        super().__init__(message)
        self.model_name, self.expected_seq, self.actual_seq = model_name, expected_seq, actual_seq


# ----------------------------------------------------------------------------- URLs and engine

def normalize_url(url: str | URL) -> str:
    """`postgresql://` and `postgres://` -> `postgresql+psycopg2://` (SQLAlchemy 2.1 maps plain
    postgresql to psycopg 3, which is not installed); anything else unchanged."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg2")
    return u.render_as_string(hide_password=False)


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock."""
    digest = replay.sha256_hex(f"autopsy.store.{name}")
    return int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)


def _make_engine(url: str) -> sa.Engine:
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        db = u.database or ""
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the "begin" listener below emits BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            if db and db != ":memory:":
                # switching a fresh file to WAL takes an exclusive lock and SQLite may answer
                # "database is locked" at once, without its busy handler, when several processes
                # open it together: retry briefly
                for attempt in range(100):
                    try:
                        cur.execute("PRAGMA journal_mode=WAL")
                        break
                    except sqlite3.OperationalError as exc:
                        if "locked" not in str(exc) or attempt == 99:
                            raise
                        time.sleep(0.05)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: sa.Connection) -> None:
            mode = conn.get_execution_options().get("autopsy_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if backend == "postgresql":
        return sa.create_engine(u, executemany_mode="values_plus_batch",
                                executemany_batch_page_size=500, pool_pre_ping=True)
    return sa.create_engine(u)


def _forget_pool(ref: weakref.ref[sa.Engine]) -> None:
    engine = ref()
    if engine is not None:
        engine.dispose(close=False)


# ----------------------------------------------------------------------------- value helpers

def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _utc_series(values: Any, name: str, row_ids: Sequence[Any] | None = None) -> pd.Series:
    """A column of times as datetime64[ns, UTC]; a naive time is refused, naming the row."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").dt.as_unit("ns")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        if s.notna().any():
            raise ValueError(f"{name} is naive (no timezone): the audit store takes tz-aware UTC "
                             "times")
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    parsed: list[Any] = []
    for i, v in enumerate(s.tolist()):
        if v is None or v is pd.NaT or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            parsed.append(pd.NaT)
            continue
        try:
            t = pd.Timestamp(v)
        except (ValueError, TypeError) as exc:
            rid = row_ids[i] if row_ids is not None else i
            raise ValueError(f"{name} of row {rid!r} is not a time: {v!r}") from exc
        if t is pd.NaT:
            parsed.append(pd.NaT)
            continue
        if t.tz is None:
            rid = row_ids[i] if row_ids is not None else i
            raise ValueError(f"{name} of row {rid!r} is naive (no timezone): {v!r}")
        parsed.append(t.tz_convert("UTC"))
    out = pd.to_datetime(pd.Series(parsed, index=s.index, dtype=object), utc=True)
    return out.dt.as_unit("ns")


def _boundary(value: Any, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    t = pd.Timestamp(value)
    if t.tz is None:
        raise ValueError(f"{name} must be a tz-aware UTC time, got naive {value!r}")
    return t.tz_convert("UTC").as_unit("ns")


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("us")


def _time_values(s: pd.Series, dialect: str) -> list[Any]:
    """UTC times -> what the driver binds: SQLite text, psycopg2 datetimes; NaT -> None."""
    s = s.dt.tz_convert("UTC").dt.floor("us")
    mask = s.isna().to_numpy()
    if dialect == "sqlite":
        naive = s.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        text = np.char.replace(np.datetime_as_string(naive, unit="us"), "T", " ").astype(object)
        text[mask] = None
        return text.tolist()
    out = s.dt.to_pydatetime()
    arr = np.array(out, dtype=object)
    arr[mask] = None
    return arr.tolist()


def _float_values(s: pd.Series) -> list[Any]:
    arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    obj = arr.astype(object)
    obj[np.isnan(arr)] = None
    return obj.tolist()


def _int_values(s: pd.Series) -> list[Any]:
    mask = s.isna().to_numpy()
    if not mask.any():
        return s.to_numpy(dtype="int64").tolist()
    return [None if na else int(v) for v, na in zip(s.tolist(), mask)]


def _bool_values(s: pd.Series) -> list[Any]:
    return s.fillna(False).to_numpy(dtype=bool).tolist()


def _str_values(s: pd.Series, blank_as_null: bool = False, missing: str | None = "") -> list[Any]:
    """Strings as Python str; missing -> `missing` (None with blank_as_null, also blanks)."""
    arr = np.array(s.astype(object).to_numpy(), dtype=object)
    mask = pd.isna(arr)
    if mask.any():
        arr[mask] = None
    if pd.api.types.infer_dtype(arr, skipna=True) not in ("string", "empty"):
        arr = np.array([v if v is None else str(v) for v in arr], dtype=object)
    if blank_as_null:
        blank = np.array([v is None or not v.strip() for v in arr], dtype=bool)
        arr[blank] = None
    elif mask.any() and missing is not None:
        arr[mask] = missing
    return arr.tolist()


def _kind(col: sa.Column) -> str:
    t = col.type
    if isinstance(t, m.UTCDateTime):
        return "time"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Double | sa.Float):
        return "float"
    if isinstance(t, sa.Integer):
        return "int"
    if isinstance(t, sa.LargeBinary):
        return "bytes"
    return "str"


def _column_values(df: pd.DataFrame, table: sa.Table, name: str, dialect: str) -> list[Any]:
    """One column of `df` as driver-ready Python scalars (None for missing)."""
    s = df[name]
    kind = _kind(table.c[name])
    if kind == "time":
        return _time_values(s, dialect)
    if kind == "float":
        return _float_values(s)
    if kind == "int":
        return _int_values(s)
    if kind == "bool":
        return _bool_values(s)
    if kind == "bytes":
        return [bytes(v) for v in s.tolist()]
    return _str_values(s, missing=None if table.c[name].nullable else "")


def _tuples(df: pd.DataFrame, table: sa.Table, columns: Sequence[str], dialect: str,
            extra: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of `df` (then the constant `extra` values) as driver-ready tuples."""
    values = [_column_values(df, table, c, dialect) for c in columns]
    for v in (extra or {}).values():
        values.append([v] * len(df))
    return list(zip(*values))


def _records(df: pd.DataFrame, table: sa.Table, columns: Sequence[str], dialect: str,
             extra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of `df` as driver-ready dicts, for the small SQLAlchemy Core writes."""
    names = [*columns, *(extra or {})]
    return [dict(zip(names, r)) for r in _tuples(df, table, columns, dialect, extra)]


def _db_times(values: Sequence[Any]) -> pd.Series:
    s = pd.Series(list(values), dtype=object)
    if s.isna().all():
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if isinstance(s.dropna().iloc[0], str):
        out = pd.to_datetime(s, utc=True, format="ISO8601")
    else:
        out = pd.to_datetime(s, utc=True)
    return out.dt.as_unit("ns")


def _frame(result: sa.CursorResult[Any], kinds: Mapping[str, str]) -> pd.DataFrame:
    """A result as a DataFrame, columns converted by kind (time/float/int/bool/str/bytes).

    Rows are fetched from the DBAPI cursor as plain tuples and converted column-wise (the select
    lists carry no per-value result processing, see `_raw`), which keeps 10^5-row reads fast."""
    keys = list(result.keys())
    rows = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    cols = list(zip(*rows)) if rows else [() for _ in keys]
    data: dict[str, Any] = {}
    for name, values in zip(keys, cols):
        kind = kinds.get(name, "str")
        if kind == "time":
            data[name] = _db_times(values)
        elif kind == "float":
            data[name] = pd.Series(list(values), dtype=object).astype(float)
        elif kind == "int":
            s = pd.Series([None if v is None else int(v) for v in values], dtype=object)
            data[name] = (s.astype("int64") if s.notna().all() else s.astype("Int64"))
        elif kind == "bool":
            data[name] = pd.Series(np.array([bool(v) for v in values], dtype=bool))
        elif kind == "bytes":
            data[name] = pd.Series([None if v is None else bytes(v) for v in values],
                                   dtype=object)
        else:
            data[name] = pd.Series(list(values), dtype=object)
    return pd.DataFrame(data, columns=keys)


def _raw(col: sa.Column) -> sa.ColumnElement[Any]:
    """A column for a select whose rows `_frame` converts: no per-value result processing."""
    if isinstance(col.type, sa.Boolean):
        return sa.type_coerce(col, sa.Integer()).label(col.name)
    if isinstance(col.type, sa.LargeBinary):
        return sa.type_coerce(col, sa.types.NullType()).label(col.name)
    return col


def _kinds(table: sa.Table) -> dict[str, str]:
    return {c.name: _kind(c) for c in table.columns}


def _same(a: pd.Series, b: pd.Series, kind: str) -> np.ndarray:
    """Element-wise equality where missing == missing; floats exact (NaN == NaN)."""
    if kind == "float":
        x = pd.to_numeric(a, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        y = pd.to_numeric(b, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return (x == y) | (np.isnan(x) & np.isnan(y))
    if kind == "time":
        x = a.isna().to_numpy()
        y = b.isna().to_numpy()
        eq = (pd.to_datetime(a, utc=True).to_numpy(dtype="datetime64[ns]")
              == pd.to_datetime(b, utc=True).to_numpy(dtype="datetime64[ns]"))
        return np.where(x | y, x & y, eq)
    if kind == "int":
        x = a.isna().to_numpy()
        y = b.isna().to_numpy()
        eq = (a.astype("Float64") == b.astype("Float64")).fillna(False).to_numpy(dtype=bool)
        return np.where(x | y, x & y, eq)
    if kind == "bool":
        return a.fillna(False).astype(bool).to_numpy() == b.fillna(False).astype(bool).to_numpy()
    x = a.astype(object).where(a.notna(), "").to_numpy()
    y = b.astype(object).where(b.notna(), "").to_numpy()
    return x == y


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, pd.Timedelta | dt.timedelta):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray | pd.Series | list | tuple | set | frozenset):
        return [_jsonable(v) for v in list(value)]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _bar_length(timeframe: str) -> pd.Timedelta:
    if timeframe in TIMEFRAMES:
        return pd.Timedelta(minutes=TIMEFRAMES[timeframe])
    try:
        return pd.Timedelta(timeframe)
    except (ValueError, TypeError):
        return pd.Timedelta(0)


def _empty_candles() -> pd.DataFrame:
    return pd.DataFrame({
        "symbol": pd.Series([], dtype=object), "timeframe": pd.Series([], dtype=object),
        "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
        **{c: pd.Series([], dtype=float) for c in replay.BLOCK_COLUMNS[1:]}})


def _normalize_patterns(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, str):
        parts = v.replace(",", "|").split("|")
    else:
        parts = [str(x) for x in v]
    return "|".join(p.strip().upper() for p in parts if p.strip())


def _pg_temp_table(cur: Any, table: sa.Table, columns: Sequence[str]) -> str:
    """A temporary table with these columns of `table` (types only), dropped at commit."""
    name = f"autopsy_tmp_{uuid.uuid4().hex[:12]}"
    cols = ", ".join(f'"{c}"' for c in columns)
    cur.execute(f'CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS SELECT {cols} FROM '
                f'"{table.name}" WITH NO DATA')
    return name


def _copy_column(df: pd.DataFrame, table: sa.Table, name: str, const: Any = None,
                 is_const: bool = False) -> list[str]:
    """One column as PostgreSQL COPY text fields (vectorised; \\N for NULL)."""
    n = len(df)
    if is_const:
        v = const
        if v is None:
            return ["\\N"] * n
        if isinstance(v, bool):
            return ["t" if v else "f"] * n
        if isinstance(v, dt.datetime):
            return [v.isoformat()] * n
        return [str(v).translate(_COPY_ESCAPES)] * n
    s = df[name]
    kind = _kind(table.c[name])
    if kind == "time":
        vals = _time_values(s, "sqlite")  # "YYYY-MM-DD HH:MM:SS.ffffff" in UTC
        return ["\\N" if v is None else v + "+00" for v in vals]
    if kind == "float":
        arr = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        out = np.array(list(map(repr, arr.tolist())), dtype=object)  # shortest exact repr
        out[np.isnan(arr)] = "\\N"
        return out.tolist()
    if kind == "int":
        return ["\\N" if v is None else str(v) for v in _int_values(s)]
    if kind == "bool":
        return np.where(s.fillna(False).to_numpy(dtype=bool), "t", "f").astype(object).tolist()
    vals = _str_values(s, missing=None if table.c[name].nullable else "")
    present = [v for v in vals if v is not None]
    joined = "".join(present)
    if any(ch in joined for ch in "\\\t\n\r"):
        return ["\\N" if v is None else v.translate(_COPY_ESCAPES) for v in vals]
    return ["\\N" if v is None else v for v in vals]


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _pg_copy(cur: Any, target: str, table: sa.Table, df: pd.DataFrame, columns: Sequence[str],
             extra: Mapping[str, Any] | None = None) -> None:
    """COPY the rows of `df` (then the constant `extra` columns) into `target`."""
    fields = [_copy_column(df, table, c) for c in columns]
    fields += [_copy_column(df, table, c, v, True) for c, v in (extra or {}).items()]
    text = "\n".join(map("\t".join, zip(*fields)))
    cols = ", ".join(f'"{c}"' for c in (*columns, *(extra or {})))
    cur.copy_expert(f"COPY {target} ({cols}) FROM STDIN", io.StringIO(text + "\n"))


# ----------------------------------------------------------------------------- row helpers (0002)

TOP_FEATURES = 5  # features listed in an explanation's top_features when none are given


def _missing(v: Any) -> bool:
    if v is None or v is pd.NaT or v is pd.NA:
        return True
    if isinstance(v, float | np.floating):
        return bool(np.isnan(v))
    return False


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lack column(s): {', '.join(missing)}")


def _shown(v: Any) -> Any:
    """A value for an error message: numpy scalars as plain Python (120.0, not np.float64)."""
    return v.item() if isinstance(v, np.generic) else v


def _first(mask: Any) -> int:
    return int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])


def _json_doc(value: Any, default: str, what: str, expect: type) -> tuple[str, Any]:
    """(text, parsed) of a JSON document given as a dict / list or as JSON text. Python objects
    are dumped canonically (sorted keys, NaN -> null); JSON text is kept as given once it
    parses. Missing or blank -> `default`. The document must be a `expect` (dict or list)."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return default, json.loads(default)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"{what} is not valid JSON ({exc}): {value[:80]!r}") from None
        text: str | None = value
    else:
        parsed, text = _jsonable(value), None
    if not isinstance(parsed, expect):
        kind = "an object" if expect is dict else "an array"
        raise ValueError(f"{what} must be {kind} (a JSON {'{...}' if expect is dict else '[...]'}"
                         f"), got {type(parsed).__name__}")
    if text is None:
        text = json.dumps(parsed, sort_keys=True, allow_nan=False)
    return text, parsed


def _json_texts(values: Iterable[Any], default: str, what: Sequence[str], expect: type
                ) -> list[str]:
    return [_json_doc(v, default, w, expect)[0] for v, w in zip(values, what)]


def _parse_json(values: Iterable[Any]) -> pd.Series:
    return pd.Series([None if v is None else json.loads(v) for v in values], dtype=object)


def _version_text(v: Any) -> str | None:
    """A model version as text: MLflow gives int locally and str over HTTP ('3', 3, 3.0 -> '3')."""
    if _missing(v):
        return None
    if isinstance(v, bool | np.bool_):
        raise ValueError(f"not a model version: {v!r}")
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    text = str(v).strip()
    return text or None


def _strict_bools(s: pd.Series, labels: Sequence[str], what: str) -> list[bool]:
    """True/False values; 0/1 and 'true'/'false' are read too, anything else is refused."""
    if s.dtype == bool:
        return s.tolist()
    out: list[bool] = []
    for v, label in zip(s.tolist(), labels):
        if isinstance(v, bool | np.bool_):
            out.append(bool(v))
        elif isinstance(v, int | float | np.integer | np.floating) and not _missing(v) \
                and v in (0, 1):
            out.append(bool(v))
        elif isinstance(v, str) and v.strip().lower() in ("true", "false"):
            out.append(v.strip().lower() == "true")
        else:
            raise ValueError(f"{what} {label!r}: verified must be True or False, got {v!r}")
    return out


def _labels(*cols: Sequence[Any]) -> list[str]:
    return ["/".join(str(v) for v in parts) for parts in zip(*cols)]


def _horizon_order(s: pd.Series) -> pd.Series:
    order = {h: i for i, h in enumerate(HORIZONS)}
    return s.map(order).fillna(len(order))


def _blank_as_empty(df: pd.DataFrame, cols: Iterable[str]) -> None:
    for c in cols:
        df[c] = df[c].astype(object).where(df[c].notna(), "")


def _when(df: pd.DataFrame, col: str, labels: Sequence[str], now: pd.Timestamp) -> pd.Series:
    """The optional time column `col` of df (missing values: now), else now for every row."""
    if col not in df.columns:
        return pd.Series([now] * len(df), dtype="datetime64[ns, UTC]")
    s = _utc_series(df[col].reset_index(drop=True), col, labels)
    return s.fillna(now).dt.as_unit("ns")


# ----------------------------------------------------------------------------- the store

class AuditStore:
    """The audit store on one database URL (SQLite file or PostgreSQL)."""

    def __init__(self, url: str | URL | None = None) -> None:
        self.url = normalize_url(url if url is not None else self.default_url())
        self.engine = _make_engine(self.url)
        self.dialect = self.engine.dialect.name
        # a forked child (multiprocess executors) must not reuse the parent's pooled sockets
        os.register_at_fork(after_in_child=functools.partial(_forget_pool,
                                                             weakref.ref(self.engine)))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url,))

    # -- lifecycle ------------------------------------------------------------------------

    @staticmethod
    def default_url() -> str:
        """AUTOPSY_DATABASE_URL, else `sqlite:///<cwd>/.autopsy/audit.db` (folder created)."""
        env = os.environ.get(DATABASE_URL_ENV, "").strip()
        if env:
            return normalize_url(env)
        folder = Path.cwd().resolve() / ".autopsy"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'audit.db'}"

    def close(self) -> None:
        """Close pooled connections (the store stays usable; it reconnects on demand)."""
        self.engine.dispose()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditStore({make_url(self.url).render_as_string(hide_password=True)!r})"

    @contextmanager
    def _writing(self, lock: str) -> Iterator[sa.Connection]:
        """A write transaction holding the store's writer lock for `lock`."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.execution_options(autopsy_begin="IMMEDIATE")
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"),
                                 {"k": _lock_key(lock)})
                yield conn

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        return cfg

    def migrate(self, revision: str = "head") -> str:
        """Upgrade the schema to `revision` (default head; Alembic, version table
        `autopsy_alembic_version`). Idempotent and safe to call on every run, also from
        concurrent processes. Returns the revision now current."""
        from alembic import command

        cfg = self._alembic_config()
        with self._writing("migrate") as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return self.current_revision() or ""

    def current_revision(self) -> str | None:
        """The applied migration revision, None before `migrate()`."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        return head or ""

    # -- candles --------------------------------------------------------------------------

    @staticmethod
    def _normalize_candles(candles: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in ("symbol", "timeframe", *replay.BLOCK_COLUMNS[:5])
                   if c not in candles.columns]
        if missing:
            raise ValueError(f"candles lack column(s): {', '.join(missing)}")
        if not isinstance(candles["ts"].dtype, pd.DatetimeTZDtype):
            raise ValueError("candles column ts must be tz-aware UTC datetimes "
                             f"(got {candles['ts'].dtype})")
        df = pd.DataFrame({
            "symbol": candles["symbol"].astype(str).to_numpy(dtype=object),
            "timeframe": candles["timeframe"].astype(str).to_numpy(dtype=object),
            "ts": candles["ts"].dt.tz_convert("UTC").dt.as_unit("ns").reset_index(drop=True),
        })
        for c in replay.BLOCK_COLUMNS[1:]:
            df[c] = (pd.to_numeric(candles[c], errors="coerce").to_numpy(dtype=float)
                     if c in candles.columns else np.nan)
        if df.empty:
            return df
        df = df.sort_values(["symbol", "timeframe", "ts"], kind="stable", ignore_index=True)
        key = ["symbol", "timeframe", "ts"]
        dup = df.duplicated(key, keep=False)
        if dup.any():
            df = df.drop_duplicates(keep="first", ignore_index=True)  # exact duplicates: keep one
            conflict = df.duplicated(key, keep=False)
            if conflict.any():
                r = df[conflict].iloc[0]
                raise ValueError(f"conflicting duplicate candles for {r.symbol}|{r.timeframe}|"
                                 f"{r.ts.isoformat()}: {int(conflict.sum())} rows share a key "
                                 "with different prices (quarantine them before storing)")
        return df

    def put_candles(self, candles: pd.DataFrame, *, replace_days: bool = False) -> dict[str, int]:
        """Store candles as content-addressed day blocks.

        A new (symbol, timeframe, day) gets a block; a day whose content changed gets a new block
        and its pointer moves (the old block stays, audits reference it). By default incoming
        candles are merged into a stored day (same ts: the incoming row wins), so appending the
        latest bars of a day is enough; `replace_days=True` makes the incoming candles the day's
        whole content. Returns counts: rows, blocks_new (blocks written), blocks_unchanged (days
        whose content was already stored), days_changed (days whose current block was set or
        moved, new days included), days_new (days stored for the first time).
        """
        df = self._normalize_candles(candles)
        counts = {"rows": int(len(candles)), "blocks_new": 0, "blocks_unchanged": 0,
                  "days_changed": 0, "days_new": 0}
        if df.empty:
            return counts
        blocks = replay.split_blocks(df)
        blocks["day"] = pd.to_datetime(blocks["day"], utc=True).dt.as_unit("ns")
        kb, kd = m.candle_blocks, m.candle_days
        with self._writing("candles") as conn:
            cur = self._current_days(conn, blocks)
            b = blocks.merge(cur, how="left", on=["symbol", "timeframe", "day"])
            has_cur = b["cur_sha"].notna().to_numpy()
            same = (b["cur_sha"] == b["sha256"]).fillna(False).to_numpy(dtype=bool)
            merge_idx = np.flatnonzero(has_cur & ~same) if not replace_days else []
            if len(merge_idx):
                old = self._payloads(conn, b["cur_sha"].iloc[merge_idx].unique().tolist())
                payloads, shas = b["payload"].tolist(), b["sha256"].tolist()
                ns = b["n_rows"].tolist()
                for i in merge_idx:
                    both = pd.concat([replay.decode_block(old[b["cur_sha"].iat[i]]),
                                      replay.decode_block(payloads[i])], ignore_index=True)
                    both = both.drop_duplicates("ts", keep="last").sort_values("ts")
                    ts_ns = both["ts"].dt.as_unit("ns").astype("int64").to_numpy()
                    payload = replay.encode_block(
                        ts_ns, {c: both[c].to_numpy() for c in replay.BLOCK_COLUMNS[1:]})
                    payloads[i], shas[i], ns[i] = payload, replay.sha256_hex(payload), len(both)
                b["payload"], b["sha256"], b["n_rows"] = payloads, shas, ns
                same = (b["cur_sha"] == b["sha256"]).fillna(False).to_numpy(dtype=bool)
            counts["blocks_unchanged"] = int(same.sum())
            todo = b[~same].reset_index(drop=True)
            if todo.empty:
                return counts
            bounds = np.array([np.frombuffer(p, dtype="<i8", count=n)[[0, -1]]
                               for p, n in zip(todo["payload"], todo["n_rows"])], dtype="int64")
            todo["first_ts"] = pd.to_datetime(bounds[:, 0], utc=True).as_unit("ns")
            todo["last_ts"] = pd.to_datetime(bounds[:, 1], utc=True).as_unit("ns")
            now = _now()
            todo["created_at"] = now
            todo["updated_at"] = now
            existing = self._existing(conn, kb, kb.c.sha256, todo["sha256"].unique().tolist())
            new_blocks = todo[~todo["sha256"].isin(existing)].drop_duplicates("sha256")
            block_cols = ["sha256", "symbol", "timeframe", "day", "n_rows", "payload",
                          "created_at"]
            self._bulk_insert(conn, kb, new_blocks, block_cols)
            day_cols = ["symbol", "timeframe", "day", "sha256", "first_ts", "last_ts", "n_rows",
                        "updated_at"]
            self._bulk_insert(conn, kd, todo, day_cols, conflict_key=["symbol", "timeframe", "day"])
            counts["blocks_new"] = int(len(new_blocks))
            counts["days_changed"] = int(len(todo))
            counts["days_new"] = int(todo["cur_sha"].isna().sum())
        return counts

    def _current_days(self, conn: sa.Connection, blocks: pd.DataFrame) -> pd.DataFrame:
        kd = m.candle_days
        stmt = (sa.select(kd.c.symbol, kd.c.timeframe, kd.c.day, kd.c.sha256.label("cur_sha"))
                .where(kd.c.symbol.in_(blocks["symbol"].unique().tolist()),
                       kd.c.timeframe.in_(blocks["timeframe"].unique().tolist()),
                       kd.c.day >= blocks["day"].min(), kd.c.day <= blocks["day"].max()))
        return _frame(conn.execute(stmt), {"day": "time"})

    def _payloads(self, conn: sa.Connection, hashes: Sequence[str]) -> dict[str, bytes]:
        kb = m.candle_blocks
        out: dict[str, bytes] = {}
        for chunk in _chunks(hashes):
            for sha, payload in conn.execute(
                    sa.select(kb.c.sha256, kb.c.payload).where(kb.c.sha256.in_(chunk))):
                out[sha] = bytes(payload)
        return out

    @staticmethod
    def _existing(conn: sa.Connection, table: sa.Table, col: sa.Column,
                  values: Sequence[Any]) -> set[Any]:
        found: set[Any] = set()
        for chunk in _chunks(values):
            found.update(conn.execute(sa.select(col).where(col.in_(chunk))).scalars())
        return found

    def _bulk_insert(self, conn: sa.Connection, table: sa.Table, df: pd.DataFrame,
                     columns: Sequence[str], extra: Mapping[str, Any] | None = None,
                     conflict_key: Sequence[str] | None = None) -> None:
        """INSERT the rows of `df` (columns, then constant `extra` columns) straight through
        the driver, no per-row SQLAlchemy work: sqlite3 executemany; on PostgreSQL COPY (through
        a temporary table for an upsert). With conflict_key: an upsert overwriting the other
        columns."""
        if df.empty:
            return
        q = self.engine.dialect.identifier_preparer.quote
        all_cols = [*columns, *(extra or {})]
        names = ", ".join(q(c) for c in all_cols)
        tail = ""
        if conflict_key:
            sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in all_cols
                             if c not in conflict_key)
            tail = f" ON CONFLICT ({', '.join(q(c) for c in conflict_key)}) DO UPDATE SET {sets}"
        cur = conn.connection.cursor()
        try:
            if self.dialect == "postgresql":
                if any(_kind(table.c[c]) == "bytes" for c in all_cols):  # few, large rows
                    from psycopg2.extras import execute_values

                    execute_values(cur, f"INSERT INTO {q(table.name)} ({names}) VALUES %s{tail}",
                                   _tuples(df, table, columns, self.dialect, extra),
                                   page_size=100)
                elif not conflict_key:
                    _pg_copy(cur, q(table.name), table, df, columns, extra)
                else:
                    tmp = _pg_temp_table(cur, table, all_cols)
                    _pg_copy(cur, tmp, table, df, columns, extra)
                    cur.execute(f"INSERT INTO {q(table.name)} ({names}) SELECT {names} FROM {tmp}"
                                f"{tail}")
            else:
                marks = ", ".join("?" * len(all_cols))
                cur.executemany(f"INSERT INTO {q(table.name)} ({names}) VALUES ({marks}){tail}",
                                _tuples(df, table, columns, self.dialect, extra))
        finally:
            cur.close()

    def _bulk_update(self, conn: sa.Connection, table: sa.Table, key: str, df: pd.DataFrame,
                     columns: Sequence[str], extra: Mapping[str, Any] | None = None) -> None:
        """UPDATE rows by `key` (a column of `df`) to the values of `columns` and `extra`."""
        if df.empty:
            return
        q = self.engine.dialect.identifier_preparer.quote
        set_cols = [*columns, *(extra or {})]
        cur = conn.connection.cursor()
        try:
            if self.dialect == "postgresql":
                tmp = _pg_temp_table(cur, table, [key, *set_cols])
                _pg_copy(cur, tmp, table, df, [key, *columns], extra)
                sets = ", ".join(f"{q(c)} = v.{q(c)}" for c in set_cols)
                cur.execute(f"UPDATE {q(table.name)} AS t SET {sets} FROM {tmp} AS v "
                            f"WHERE t.{q(key)} = v.{q(key)}")
            else:
                sets = ", ".join(f"{q(c)} = ?" for c in set_cols)
                keys = _column_values(df, table, key, self.dialect)
                rows = _tuples(df, table, columns, self.dialect, extra)
                cur.executemany(f"UPDATE {q(table.name)} SET {sets} WHERE {q(key)} = ?",
                                [(*r, k) for r, k in zip(rows, keys)])
        finally:
            cur.close()

    def _assemble(self, meta: pd.DataFrame, payloads: Sequence[bytes]) -> pd.DataFrame:
        """Decode blocks and label their rows with the blocks' symbol and timeframe."""
        if not len(payloads):
            return _empty_candles()
        frames = [replay.decode_block(p) for p in payloads]
        lengths = [len(f) for f in frames]
        out = pd.concat(frames, ignore_index=True)
        out.insert(0, "timeframe", np.repeat(meta["timeframe"].to_numpy(dtype=object), lengths))
        out.insert(0, "symbol", np.repeat(meta["symbol"].to_numpy(dtype=object), lengths))
        out["ts"] = out["ts"].dt.as_unit("ns")
        return out[list(CANDLE_COLUMNS)]

    def read_candles(self, start: Any, end: Any, symbols: Iterable[str] | None = None,
                     timeframes: Iterable[str] | None = None) -> pd.DataFrame:
        """Current candles with start <= ts < end (None: unbounded), sorted by symbol,
        timeframe, ts. Columns: symbol, timeframe, ts, open, high, low, close, volume, spread."""
        start_t, end_t = _boundary(start, "start"), _boundary(end, "end")
        kd, kb = m.candle_days, m.candle_blocks
        stmt = (sa.select(kd.c.symbol, kd.c.timeframe, kd.c.day, kb.c.payload)
                .join(kb, kb.c.sha256 == kd.c.sha256)
                .order_by(kd.c.symbol, kd.c.timeframe, kd.c.day))
        if start_t is not None:
            stmt = stmt.where(kd.c.day >= start_t.floor("D"))
        if end_t is not None:
            stmt = stmt.where(kd.c.day < end_t)
        if symbols is not None:
            stmt = stmt.where(kd.c.symbol.in_(list(symbols)))
        if timeframes is not None:
            stmt = stmt.where(kd.c.timeframe.in_(list(timeframes)))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).fetchall()
        meta = pd.DataFrame({"symbol": [r[0] for r in rows], "timeframe": [r[1] for r in rows]})
        out = self._assemble(meta, [r[3] for r in rows])
        keep = np.ones(len(out), dtype=bool)
        if start_t is not None:
            keep &= (out["ts"] >= start_t).to_numpy()
        if end_t is not None:
            keep &= (out["ts"] < end_t).to_numpy()
        return out[keep].reset_index(drop=True)

    def read_blocks(self, hashes: Sequence[str] | str) -> pd.DataFrame:
        """The candles of exactly these blocks (replay), same columns as `read_candles`, sorted
        by symbol, timeframe, ts. `hashes` may be a list or an audit's comma-joined
        `candle_blocks`. Raises MissingCandleBlocksError naming any hash not stored."""
        if isinstance(hashes, str):
            hashes = [h for h in hashes.split(",")]
        wanted = list(dict.fromkeys(h.strip() for h in hashes if h and h.strip()))
        kb = m.candle_blocks
        found: dict[str, tuple[str, str, bytes]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(wanted):
                for sha, sym, tf, payload in conn.execute(
                        sa.select(kb.c.sha256, kb.c.symbol, kb.c.timeframe, kb.c.payload)
                        .where(kb.c.sha256.in_(chunk))):
                    found[sha] = (sym, tf, bytes(payload))
        missing = [h for h in wanted if h not in found]
        if missing:
            raise MissingCandleBlocksError(
                f"{len(missing)} candle block(s) not in the audit store: {', '.join(missing)}")
        meta = pd.DataFrame({"symbol": [found[h][0] for h in wanted],
                             "timeframe": [found[h][1] for h in wanted]})
        out = self._assemble(meta, [found[h][2] for h in wanted])
        return out.sort_values(["symbol", "timeframe", "ts"], kind="stable", ignore_index=True)

    def candle_coverage(self) -> pd.DataFrame:
        """Per symbol and timeframe: first_ts and last_ts (bar opens), n_days, n_rows."""
        kd = m.candle_days
        stmt = (sa.select(kd.c.symbol, kd.c.timeframe,
                          sa.func.min(kd.c.first_ts).label("first_ts"),
                          sa.func.max(kd.c.last_ts).label("last_ts"),
                          sa.func.count().label("n_days"),
                          sa.func.sum(kd.c.n_rows).label("n_rows"))
                .group_by(kd.c.symbol, kd.c.timeframe).order_by(kd.c.symbol, kd.c.timeframe))
        with self.engine.connect() as conn:
            return _frame(conn.execute(stmt), {"first_ts": "time", "last_ts": "time",
                                               "n_days": "int", "n_rows": "int"})

    # -- insights -------------------------------------------------------------------------

    def put_insights(self, insights: pd.DataFrame) -> int:
        """Upsert insights by insight_id (the last row wins for an id given twice). Returns
        the number of insights written."""
        missing = [c for c in INSIGHT_REQUIRED if c not in insights.columns]
        if missing:
            raise ValueError(f"insights lack column(s): {', '.join(missing)}")
        if insights.empty:
            return 0
        df = insights.drop_duplicates("insight_id", keep="last").reset_index(drop=True).copy()
        ids = df["insight_id"].astype(str).tolist()
        if any(not i.strip() for i in ids):
            raise ValueError("insights: insight_id must not be blank")
        for col, default in INSIGHT_OPTIONAL.items():
            if col not in df.columns:
                df[col] = default
        df["created_at"] = _utc_series(df["created_at"], "created_at", ids)
        if df["created_at"].isna().any():
            bad = ids[int(np.flatnonzero(df["created_at"].isna().to_numpy())[0])]
            raise ValueError(f"insight {bad!r}: created_at is missing")
        df["filled_at"] = _utc_series(df["filled_at"], "filled_at", ids)
        df["patterns"] = [_normalize_patterns(v) for v in df["patterns"].tolist()]
        df["updated_at"] = _now()
        t = m.insights
        cols = [*INSIGHT_COLUMNS, "updated_at"]
        df["timeframe"] = pd.Series(_str_values(df["timeframe"], blank_as_null=True),
                                    index=df.index, dtype=object)
        with self._writing("insights") as conn:
            self._bulk_insert(conn, t, df, cols, conflict_key=["insight_id"])
        return len(df)

    def read_insights(self, start: Any = None, end: Any = None,
                      insight_ids: Iterable[str] | None = None,
                      symbols: Iterable[str] | None = None,
                      strategies: Iterable[str] | None = None) -> pd.DataFrame:
        """Insights with start <= created_at < end, optionally only these ids / symbols /
        strategies, sorted by created_at, insight_id. patterns come back '|' joined."""
        t = m.insights
        stmt = sa.select(*[_raw(t.c[c]) for c in INSIGHT_COLUMNS])
        stmt = self._time_filter(stmt, t.c.created_at, start, end)
        if symbols is not None:
            stmt = stmt.where(t.c.symbol.in_(list(symbols)))
        if strategies is not None:
            stmt = stmt.where(t.c.strategy.in_(list(strategies)))
        df = self._select_chunked(stmt, t.c.insight_id, insight_ids, _kinds(t))
        df = df.sort_values(["created_at", "insight_id"], kind="stable", ignore_index=True)
        df["timeframe"] = df["timeframe"].astype(object).where(df["timeframe"].notna(), None)
        return df

    @staticmethod
    def _time_filter(stmt: sa.Select[Any], col: sa.Column, start: Any, end: Any) -> sa.Select[Any]:
        start_t, end_t = _boundary(start, "start"), _boundary(end, "end")
        if start_t is not None:
            stmt = stmt.where(col >= start_t)
        if end_t is not None:
            stmt = stmt.where(col < end_t)
        return stmt

    def _select_chunked(self, stmt: sa.Select[Any], col: sa.Column, values: Iterable[Any] | None,
                        kinds: Mapping[str, str], conn: sa.Connection | None = None
                        ) -> pd.DataFrame:
        """Run `stmt`, restricted to col IN values (chunked) when values is given."""
        def run(c: sa.Connection) -> pd.DataFrame:
            if values is None:
                return _frame(c.execute(stmt), kinds)
            vals = list(dict.fromkeys(values))
            if not vals:
                return _frame(c.execute(stmt.where(sa.false())), kinds)
            parts = [_frame(c.execute(stmt.where(col.in_(chunk))), kinds)
                     for chunk in _chunks(vals)]
            return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

        if conn is not None:
            return run(conn)
        with self.engine.connect() as c:
            return run(c)

    # -- labeling rules -------------------------------------------------------------------

    @staticmethod
    def _rule_frame(rules: pd.DataFrame) -> pd.DataFrame:
        unknown = [c for c in rules.columns if c not in RULE_COLUMNS]
        if unknown:
            raise ValueError(f"labeling rules: unknown column(s) {', '.join(map(str, unknown))}; "
                             f"known: {', '.join(RULE_COLUMNS)}")
        df = rules.reset_index(drop=True).copy()
        defaults: dict[str, Any] = {**dict.fromkeys(RULE_SCOPE, None),
                                    **dict.fromkeys(RULE_NUMBERS, np.nan),
                                    "is_active": True, "priority": 0, "notes": "",
                                    "created_by": ""}
        for col, default in defaults.items():
            if col not in df.columns:
                df[col] = default
        df["is_active"] = [True if pd.isna(v) else bool(v) for v in df["is_active"].tolist()]
        df["priority"] = [0 if pd.isna(v) else int(v) for v in df["priority"].tolist()]
        return df

    def _rule_rows(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        t = m.labeling_rules
        df = df.copy()
        df["updated_at"] = _now()
        cols = [c for c in RULE_COLUMNS]
        rows = _records(df, t, cols, self.dialect)
        for col in RULE_SCOPE:
            for r, v in zip(rows, _str_values(df[col], blank_as_null=True)):
                r[col] = v
        return rows

    def seed_rules(self, rules: pd.DataFrame) -> int:
        """Insert `rules` only when the table is empty (the YAML seeds it once; afterwards rules
        are edited in the store). Blank scope fields mean any. Returns rows inserted."""
        df = self._rule_frame(rules)
        t = m.labeling_rules
        with self._writing("rules") as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one():
                return 0
            if df.empty:
                return 0
            ids = df["rule_id"] if "rule_id" in df.columns else pd.Series([np.nan] * len(df))
            given = [int(v) for v in ids.tolist() if not pd.isna(v)]
            if len(given) != len(set(given)):
                raise ValueError("labeling rules: duplicate rule_id in the seed")
            nxt = max(given, default=0) + 1
            filled = []
            for v in ids.tolist():
                if pd.isna(v):
                    filled.append(nxt)
                    nxt += 1
                else:
                    filled.append(int(v))
            df["rule_id"] = filled
            conn.execute(t.insert(), self._rule_rows(df))
        return len(df)

    def read_rules(self, active_only: bool = True) -> pd.DataFrame:
        """Labeling rules sorted by rule_id; blank scope fields come back as ''."""
        t = m.labeling_rules
        stmt = sa.select(*[_raw(t.c[c]) for c in RULE_COLUMNS]).order_by(t.c.rule_id)
        if active_only:
            stmt = stmt.where(t.c.is_active == sa.true())
        with self.engine.connect() as conn:
            df = _frame(conn.execute(stmt), _kinds(t))
        for col in RULE_SCOPE:
            df[col] = df[col].astype(object).where(df[col].notna(), "")
        df["rule_id"] = df["rule_id"].astype("int64")
        df["priority"] = df["priority"].astype("int64")
        return df

    def upsert_rule(self, **fields: Any) -> int:
        """Insert a rule, or update the given fields of an existing one (by rule_id). A new rule
        without rule_id gets max(rule_id) + 1. Returns the rule_id."""
        unknown = [k for k in fields if k not in RULE_COLUMNS or k == "updated_at"]
        if unknown:
            raise ValueError(f"labeling rules: unknown field(s) {', '.join(unknown)}")
        t = m.labeling_rules
        with self._writing("rules") as conn:
            rule_id = fields.get("rule_id")
            exists = rule_id is not None and conn.execute(
                sa.select(t.c.rule_id).where(t.c.rule_id == int(rule_id))).first() is not None
            if exists:
                df = pd.DataFrame([fields])
                row = self._rule_rows(self._rule_frame(df))[0]
                values = {k: row[k] for k in fields if k != "rule_id"}
                values["updated_at"] = row["updated_at"]
                conn.execute(t.update().where(t.c.rule_id == int(rule_id)).values(values))
                return int(rule_id)
            if rule_id is None:
                rule_id = (conn.execute(sa.select(sa.func.max(t.c.rule_id))).scalar() or 0) + 1
            df = self._rule_frame(pd.DataFrame([{**fields, "rule_id": int(rule_id)}]))
            conn.execute(t.insert(), self._rule_rows(df))
            return int(rule_id)

    # -- audits ---------------------------------------------------------------------------

    @staticmethod
    def _normalize_audits(audits: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in AUDIT_COLUMNS if c not in audits.columns]
        if missing:
            raise ValueError(f"audits lack column(s): {', '.join(missing)}")
        df = audits[list(AUDIT_COLUMNS)].reset_index(drop=True).copy()
        ids = df["insight_id"].astype(str).tolist()
        for col, kind in AUDIT_COLUMNS.items():
            s = df[col]
            if kind == "str":
                df[col] = pd.Series(_str_values(s), dtype=object)
            elif kind == "bool":
                df[col] = s.fillna(False).astype(bool)
            elif kind == "float":
                df[col] = pd.to_numeric(s, errors="coerce").astype(float)
            elif kind == "int":
                df[col] = pd.to_numeric(s, errors="raise").astype("Int64")
            elif kind == "datetime":
                df[col] = _utc_series(s, col, ids).dt.floor("us")  # the store keeps microseconds
        for col in ("insight_id", "horizon", "rule_hash", "candles_hash", "outcome", "symbol"):
            blank = df[col].to_numpy(dtype=object) == ""
            if blank.any():
                i = int(np.flatnonzero(blank)[0])
                raise ValueError(f"audit {ids[i]!r}/{df['horizon'].iat[i]!r}: {col} is blank")
        if df["created_at"].isna().any():
            i = int(np.flatnonzero(df["created_at"].isna().to_numpy())[0])
            raise ValueError(f"audit {ids[i]!r}/{df['horizon'].iat[i]!r}: created_at is missing")
        dup = df.duplicated(list(AUDIT_KEY), keep=False)
        if dup.any():
            r = df[dup].iloc[0]
            raise ValueError(f"audits: {int(dup.sum())} rows share (insight_id, horizon), e.g. "
                             f"({r.insight_id!r}, {r.horizon!r}); give one row per key")
        return df

    def upsert_audits(self, audits: pd.DataFrame, run_id: str | None = None,
                      evaluated_at: Any = None) -> dict[str, int]:
        """Write audits with history (DESIGN.md 2a); exactly one current row per
        (insight_id, horizon).

        Per incoming row, against the current row of its key:
        - same (rule_hash, candles_hash): "unchanged", nothing written;
        - other hashes but equal outcome and metrics (AUDIT_METRICS; floats exact, NaN == NaN),
          or still pending in both: "refreshed" -- the current row is overwritten in place with
          the incoming values (hashes, candle_blocks, rule_snapshot, evaluated_at, ...), no
          history row; if a history row already holds the incoming unique key it becomes
          current instead (the old current row becomes history and counts as superseded);
        - otherwise: "inserted" as the new current row (or a history row holding the same
          unique key is brought back and overwritten) and the old current row is "superseded".
        """
        inc = self._normalize_audits(audits)
        counts = dict.fromkeys(UPSERT_COUNTS, 0)
        if inc.empty:
            return counts
        when = _boundary(evaluated_at, "evaluated_at") if evaluated_at is not None else _now()
        t = m.audits
        kinds = _kinds(t)
        cmp_cols = ["id", *AUDIT_KEY, "rule_hash", "candles_hash", *AUDIT_METRICS]
        with self._writing("audits") as conn:
            # every stored row of the incoming insights, current and history, in one pass
            stored = self._select_chunked(
                sa.select(*[_raw(t.c[c]) for c in (*cmp_cols, "is_current")]),
                t.c.insight_id, inc["insight_id"].unique().tolist(), kinds, conn)
            is_cur = stored["is_current"].to_numpy(dtype=bool)
            key4 = [*AUDIT_KEY, "rule_hash", "candles_hash"]
            hist = stored.loc[~is_cur, ["id", *key4]].rename(columns={"id": "hist_id"})
            cur = stored.loc[is_cur, cmp_cols].rename(
                columns={c: f"{c}__cur" for c in cmp_cols if c not in AUDIT_KEY})
            mm = inc.merge(cur, how="left", on=list(AUDIT_KEY))
            has_cur = mm["id__cur"].notna().to_numpy()
            same_hash = has_cur & _same(mm["rule_hash"], mm["rule_hash__cur"], "str") \
                & _same(mm["candles_hash"], mm["candles_hash__cur"], "str")
            same_metrics = has_cur.copy()
            for col in AUDIT_METRICS:
                same_metrics &= _same(mm[col], mm[f"{col}__cur"], kinds[col])
            still_pending = (has_cur
                             & _same(mm["outcome"], mm["outcome__cur"], "str")
                             & _same(mm["replay_outcome"], mm["replay_outcome__cur"], "str")
                             & ((mm["outcome"] == "pending")
                                | (mm["replay_outcome"] == "pending")).to_numpy())
            refresh = has_cur & ~same_hash & (same_metrics | still_pending)
            new = ~same_hash & ~refresh
            counts["unchanged"] = int(same_hash.sum())
            counts["refreshed"] = int(refresh.sum())
            counts["inserted"] = int(new.sum())
            if not (refresh | new).any():
                return counts
            # history rows that already hold an incoming unique key
            mm["hist_id"] = pd.array([pd.NA] * len(mm), dtype="Int64")
            cand = mm[refresh | new]
            if len(hist) and len(cand):
                found = mm[key4].merge(hist, how="left", on=key4)["hist_id"]
                mm["hist_id"] = found.astype("Int64").to_numpy()
            has_hist = mm["hist_id"].notna().to_numpy()
            demote = has_cur & ((new) | (refresh & has_hist))
            overwrite_cur = refresh & ~has_hist
            promote = (refresh | new) & has_hist
            insert = new & ~has_hist
            counts["superseded"] = int(demote.sum())
            dialect = self.dialect
            extra = {"evaluated_at": _time_values(pd.Series([when]), dialect)[0],
                     "run_id": run_id, "is_current": True}
            cols = list(AUDIT_COLUMNS)
            # order matters for the one-current-row index: demote first, then promote / insert
            self._bulk_update(conn, t, "id", pd.DataFrame({"id": mm.loc[demote, "id__cur"]}), [],
                              {"is_current": False})
            # rows keep their (insight_id, horizon): leaving those (and is_current of rows that
            # stay current) out of SET spares the index maintenance on them
            same_key = [c for c in cols if c not in AUDIT_KEY]
            stay = {k: v for k, v in extra.items() if k != "is_current"}
            for mask, id_col, values in ((overwrite_cur, "id__cur", stay),
                                         (promote, "hist_id", extra)):
                if mask.any():
                    part = mm[mask].assign(id=mm.loc[mask, id_col].astype("int64"))
                    self._bulk_update(conn, t, "id", part, same_key, values)
            if insert.any():
                self._bulk_insert(conn, t, mm[insert], cols, extra)
        return counts

    def _read_audits(self, stmt: sa.Select[Any], ids: Iterable[str] | None) -> pd.DataFrame:
        t = m.audits
        df = self._select_chunked(stmt, t.c.insight_id, ids, _kinds(t))
        for col, kind in AUDIT_COLUMNS.items():
            if kind == "str":
                df[col] = df[col].astype(object).where(df[col].notna(), "")
        return df

    def current_audits(self, start: Any = None, end: Any = None,
                       symbols: Iterable[str] | None = None,
                       outcomes: Iterable[str] | None = None,
                       insight_ids: Iterable[str] | None = None,
                       horizons: Iterable[str] | None = None) -> pd.DataFrame:
        """Current audit rows (start <= created_at < end), AUDIT_COLUMNS + is_current,
        evaluated_at, run_id; sorted by created_at, insight_id, horizon."""
        t = m.audits
        stmt = sa.select(*[_raw(t.c[c]) for c in (*AUDIT_COLUMNS, *AUDIT_EXTRA)]).where(
            t.c.is_current == sa.true())
        stmt = self._time_filter(stmt, t.c.created_at, start, end)
        if symbols is not None:
            stmt = stmt.where(t.c.symbol.in_(list(symbols)))
        if outcomes is not None:
            stmt = stmt.where(t.c.outcome.in_(list(outcomes)))
        if horizons is not None:
            stmt = stmt.where(t.c.horizon.in_(list(horizons)))
        df = self._read_audits(stmt, insight_ids)
        order = {h: i for i, h in enumerate(HORIZONS)}
        df["_h"] = df["horizon"].map(order).fillna(len(order))
        return (df.sort_values(["created_at", "insight_id", "_h", "horizon"], kind="stable")
                .drop(columns="_h").reset_index(drop=True))

    def audit_history(self, insight_id: str, horizon: str) -> pd.DataFrame:
        """Every row of one (insight_id, horizon), oldest first: id, AUDIT_COLUMNS, is_current,
        evaluated_at, run_id."""
        t = m.audits
        stmt = (sa.select(t.c.id, *[_raw(t.c[c]) for c in (*AUDIT_COLUMNS, *AUDIT_EXTRA)])
                .where(t.c.insight_id == insight_id, t.c.horizon == horizon).order_by(t.c.id))
        return self._read_audits(stmt, None)

    def pending_ready(self) -> pd.DataFrame:
        """Current pending audits that new candles could settle: the symbol's latest candle end
        (max over timeframes of last bar open + bar length) reaches their window_end, or has
        moved past their candles_until (the end of the candles they were labeled with; created_at
        when they had none). Includes filtered insights whose replay_outcome is pending.
        Columns: insight_id, horizon, symbol, created_at, window_end."""
        t, kd = m.audits, m.candle_days
        with self.engine.connect() as conn:
            cov = _frame(conn.execute(
                sa.select(kd.c.symbol, kd.c.timeframe, sa.func.max(kd.c.last_ts).label("last_ts"))
                .group_by(kd.c.symbol, kd.c.timeframe)), {"last_ts": "time"})
            pend = _frame(conn.execute(
                sa.select(t.c.insight_id, t.c.horizon, t.c.symbol, t.c.created_at,
                          t.c.window_end, t.c.candles_until)
                .where(t.c.is_current == sa.true(),
                       sa.or_(t.c.outcome == "pending", t.c.replay_outcome == "pending"))),
                _kinds(t))
        cols = ["insight_id", "horizon", "symbol", "created_at", "window_end"]
        if pend.empty or cov.empty:
            return pend[cols].iloc[0:0].reset_index(drop=True)
        cov["end"] = cov["last_ts"] + pd.to_timedelta(
            [_bar_length(tf) for tf in cov["timeframe"].tolist()])
        latest = cov.groupby("symbol")["end"].max()
        end = pend["symbol"].map(latest)
        end = pd.to_datetime(end, utc=True).dt.as_unit("ns")
        labeled_to = pend["candles_until"].fillna(pend["created_at"])
        ready = ((end >= pend["window_end"]).fillna(False)
                 | (end > labeled_to).fillna(False))
        return (pend.loc[ready.to_numpy(dtype=bool), cols]
                .sort_values(["created_at", "insight_id", "horizon"], kind="stable")
                .reset_index(drop=True))

    def outcome_summary(self, start: Any = None, end: Any = None) -> pd.DataFrame:
        """Counts of current audits (start <= created_at < end) per horizon x outcome, long
        form: horizon, outcome, count; horizons and outcomes in their canonical order."""
        t = m.audits
        stmt = (sa.select(t.c.horizon, t.c.outcome, sa.func.count().label("count"))
                .where(t.c.is_current == sa.true()).group_by(t.c.horizon, t.c.outcome))
        stmt = self._time_filter(stmt, t.c.created_at, start, end)
        with self.engine.connect() as conn:
            df = _frame(conn.execute(stmt), {"count": "int"})
        h_order = {h: i for i, h in enumerate(HORIZONS)}
        o_order = {o: i for i, o in enumerate(OUTCOMES)}
        df["_h"] = df["horizon"].map(h_order).fillna(len(h_order))
        df["_o"] = df["outcome"].map(o_order).fillna(len(o_order))
        df["count"] = df["count"].astype("int64")
        return (df.sort_values(["_h", "horizon", "_o", "outcome"])
                .drop(columns=["_h", "_o"]).reset_index(drop=True))

    # -- quarantine -----------------------------------------------------------------------

    def quarantine(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
                   run_id: str | None = None, partition_key: str | None = None) -> int:
        """Record rejected rows: each a mapping with source, row_id, reason and an optional
        payload (the raw row; without one, any other keys of the mapping form it), stored as
        JSON. Returns the number recorded."""
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        out = []
        for i, r in enumerate(rows):
            missing = [k for k in ("source", "reason") if not r.get(k)]
            if missing:
                raise ValueError(f"quarantine row {i}: {', '.join(missing)} missing ({dict(r)!r})")
            if "payload" in r:
                payload = r["payload"]
            else:
                payload = {k: v for k, v in r.items() if k not in ("source", "row_id", "reason")}
                payload = payload or None
            row_id = r.get("row_id")
            out.append({"source": str(r["source"]),
                        "row_id": "" if row_id is None else str(row_id),
                        "reason": str(r["reason"]),
                        "payload": None if payload is None else json.dumps(
                            _jsonable(payload), sort_keys=True, allow_nan=False),
                        "run_id": run_id, "partition_key": partition_key})
        if not out:
            return 0
        df = pd.DataFrame(out, dtype=object)
        df["quarantined_at"] = _now()
        with self._writing("quarantine") as conn:
            self._bulk_insert(conn, m.quarantine, df, list(df.columns))
        return len(out)

    def read_quarantine(self, source: str | None = None, run_id: str | None = None
                        ) -> pd.DataFrame:
        """Quarantined rows, oldest first: id, source, row_id, reason, payload (parsed JSON),
        run_id, partition_key, quarantined_at."""
        q = m.quarantine
        stmt = sa.select(*[_raw(c) for c in q.columns]).order_by(q.c.id)
        if source is not None:
            stmt = stmt.where(q.c.source == source)
        if run_id is not None:
            stmt = stmt.where(q.c.run_id == run_id)
        with self.engine.connect() as conn:
            df = _frame(conn.execute(stmt), _kinds(q))
        df["payload"] = pd.Series([None if p is None else json.loads(p)
                                   for p in df["payload"].tolist()], dtype=object)
        return df

    # -- news events ----------------------------------------------------------------------

    def put_news(self, news: pd.DataFrame) -> int:
        """Upsert news events by event_id (the last row wins for an id given twice).

        Columns: event_id, ts (tz-aware), currencies (a list of codes, or one string joined by
        '|' or ','; stored upper-case and '|' joined), impact (low | medium | high, any case),
        title; optional source (the feed it came from). Returns the number of events written."""
        _require(news, ("event_id", "ts", "currencies", "impact"), "news")
        if news.empty:
            return 0
        df = news.reset_index(drop=True)
        ids = _str_values(df["event_id"])
        blank = np.array([not i.strip() for i in ids], dtype=bool)
        if blank.any():
            raise ValueError(f"news row {_first(blank)}: event_id is blank")
        df = df.assign(event_id=[i.strip() for i in ids])
        df = df.drop_duplicates("event_id", keep="last").reset_index(drop=True)
        ids = df["event_id"].tolist()
        ts = _utc_series(df["ts"], "ts", ids)
        if ts.isna().any():
            raise ValueError(f"news event {ids[_first(ts.isna())]!r}: ts is missing")
        impact = np.array(["" if _missing(v) else str(v).strip().lower()
                           for v in df["impact"].tolist()], dtype=object)
        bad = ~np.isin(impact, IMPACTS)
        if bad.any():
            i = _first(bad)
            raise ValueError(f"news event {ids[i]!r}: impact {_shown(df['impact'].iat[i])!r} is "
                             f"not one of {', '.join(IMPACTS)}")
        out = pd.DataFrame({
            "event_id": ids, "ts": ts,
            "currencies": ["|".join(parse_currencies(v)) for v in df["currencies"].tolist()],
            "impact": impact,
            "title": _str_values(df["title"]) if "title" in df.columns else "",
            "source": _str_values(df["source"]) if "source" in df.columns else "",
        })
        with self._writing("news") as conn:
            self._bulk_insert(conn, m.news_events, out, list(out.columns),
                              conflict_key=["event_id"])
        return len(out)

    def read_news(self, start: Any = None, end: Any = None) -> pd.DataFrame:
        """News events with start <= ts < end, sorted by ts, event_id: event_id, ts, currencies
        (a list of upper-case codes), impact, title, source."""
        t = m.news_events
        stmt = self._time_filter(sa.select(*[_raw(c) for c in t.columns]), t.c.ts, start, end)
        with self.engine.connect() as conn:
            df = _frame(conn.execute(stmt), _kinds(t))
        df = df.sort_values(["ts", "event_id"], kind="stable", ignore_index=True)
        df["currencies"] = pd.Series([c.split("|") if c else [] for c in df["currencies"]],
                                     dtype=object)
        return df

    # -- market regimes -------------------------------------------------------------------

    def put_regimes(self, regimes: pd.DataFrame) -> int:
        """Upsert market regimes by (symbol, timeframe, ts) (the last row wins for a key given
        twice).

        Columns: symbol, ts (bar open, tz-aware), regime (trending_up | trending_down | ranging
        | volatile); optional timeframe ('' when absent: a feed without timeframes), ts_end (when
        the regime became known, the bar's close), confidence (0-100), source ('derived' when
        absent, or 'feed'). Rows without a regime (the warm-up bars of `derive_regimes`) are not
        stored. Returns the number of rows written."""
        _require(regimes, ("symbol", "ts", "regime"), "regimes")
        df = regimes.reset_index(drop=True)
        regime = pd.Series(_str_values(df["regime"]), dtype=object).str.strip().str.lower()
        keep = (regime != "").to_numpy(dtype=bool)
        df, regime = df[keep].reset_index(drop=True), regime[keep].reset_index(drop=True)
        n = len(df)
        if not n:
            return 0
        symbol = pd.Series(_str_values(df["symbol"]), dtype=object).str.strip()
        tf = (pd.Series(_str_values(df["timeframe"]), dtype=object).str.strip()
              if "timeframe" in df.columns else pd.Series([""] * n, dtype=object))
        pre = symbol.str.cat(tf, sep="|").tolist()  # row names for time errors
        ts = _utc_series(df["ts"], "ts", pre).dt.floor("us")

        def label(i: int) -> str:  # built only for the row an error names
            t = ts.iat[i]
            return f"{pre[i]}|{'' if pd.isna(t) else t.isoformat()}"

        what = "regime row"
        if (symbol == "").any():
            raise ValueError(f"{what} {label(_first(symbol == ''))!r}: symbol is blank")
        if ts.isna().any():
            raise ValueError(f"{what} {label(_first(ts.isna()))!r}: ts is missing")
        bad = ~regime.isin(REGIMES).to_numpy()
        if bad.any():
            i = _first(bad)
            raise ValueError(f"{what} {label(i)!r}: regime {regime.iat[i]!r} is not one of "
                             f"{', '.join(REGIMES)}")
        ts_end = (_utc_series(df["ts_end"], "ts_end", pre) if "ts_end" in df.columns
                  else pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]"))
        if "confidence" in df.columns:
            conf = pd.to_numeric(df["confidence"], errors="coerce").astype(float)
            bad = (conf.isna() & df["confidence"].notna()) | (conf < 0) | (conf > 100)
            if bad.any():
                i = _first(bad)
                raise ValueError(f"{what} {label(i)!r}: confidence "
                                 f"{_shown(df['confidence'].iat[i])!r} is not a number from 0 "
                                 "to 100")
        else:
            conf = pd.Series(np.nan, index=df.index)
        source = (pd.Series(_str_values(df["source"]), dtype=object).str.strip().str.lower()
                  if "source" in df.columns else pd.Series(["derived"] * n, dtype=object))
        bad = ~source.isin(REGIME_SOURCES).to_numpy()
        if bad.any():
            i = _first(bad)
            raise ValueError(f"{what} {label(i)!r}: source {source.iat[i]!r} is not one of "
                             f"{', '.join(REGIME_SOURCES)}")
        out = pd.DataFrame({"symbol": symbol, "timeframe": tf, "ts": ts, "ts_end": ts_end,
                            "regime": regime, "confidence": conf, "source": source})
        out = out.drop_duplicates(["symbol", "timeframe", "ts"], keep="last")
        with self._writing("regimes") as conn:
            self._bulk_insert(conn, m.market_regimes, out, list(out.columns),
                              conflict_key=["symbol", "timeframe", "ts"])
        return len(out)

    def read_regimes(self, start: Any = None, end: Any = None,
                     symbols: Iterable[str] | None = None) -> pd.DataFrame:
        """Market regimes with start <= ts < end, sorted by symbol, timeframe, ts: symbol,
        timeframe, ts, ts_end, regime, confidence, source."""
        t = m.market_regimes
        stmt = self._time_filter(sa.select(*[_raw(c) for c in t.columns]), t.c.ts, start, end)
        if symbols is not None:
            stmt = stmt.where(t.c.symbol.in_(list(symbols)))
        with self.engine.connect() as conn:
            df = _frame(conn.execute(stmt), _kinds(t))
        return df.sort_values(["symbol", "timeframe", "ts"], kind="stable", ignore_index=True)

    # -- pattern checks -------------------------------------------------------------------

    def put_pattern_checks(self, checks: pd.DataFrame, run_id: str | None = None) -> int:
        """Store the re-verification of claimed patterns (`patterns.verify_patterns` output):
        insight_id, pattern (a claimed code), verified, evidence (a dict or JSON text); optional
        checked_at (default now). The rows of an insight are its claims, whole: every stored row
        of each insight present is replaced. Returns the number of rows written."""
        _require(checks, ("insight_id", "pattern", "verified"), "pattern checks")
        if checks.empty:
            return 0
        df = checks.reset_index(drop=True)
        ids = [i.strip() for i in _str_values(df["insight_id"])]
        pattern = [p.strip().upper() for p in _str_values(df["pattern"])]
        labels = _labels(ids, pattern)
        what = "pattern check"
        for col, vals in (("insight_id", ids), ("pattern", pattern)):
            blank = np.array([not v for v in vals], dtype=bool)
            if blank.any():
                raise ValueError(f"{what} {labels[_first(blank)]!r} (row {_first(blank)}): "
                                 f"{col} is blank")
        key = pd.DataFrame({"insight_id": ids, "pattern": pattern})
        dup = key.duplicated(keep="first").to_numpy()
        if dup.any():
            raise ValueError(f"{what} {labels[_first(dup)]!r} is given twice: give one row per "
                             "insight and claimed pattern")
        out = key.assign(
            verified=_strict_bools(df["verified"], labels, what),
            evidence=(_json_texts(df["evidence"].tolist(), "{}",
                                  [f"{what} {x!r}: evidence" for x in labels], dict)
                      if "evidence" in df.columns else "{}"),
            checked_at=_when(df, "checked_at", labels, _now()))
        t = m.pattern_checks
        with self._writing("pattern_checks") as conn:
            for chunk in _chunks(key["insight_id"].unique().tolist()):
                conn.execute(t.delete().where(t.c.insight_id.in_(chunk)))
            self._bulk_insert(conn, t, out, list(out.columns), {"run_id": run_id})
        return len(out)

    def read_pattern_checks(self, insight_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Stored pattern checks sorted by insight_id, pattern: insight_id, pattern, verified,
        evidence (a dict), checked_at, run_id."""
        t = m.pattern_checks
        df = self._select_chunked(sa.select(*[_raw(c) for c in t.columns]), t.c.insight_id,
                                  insight_ids, _kinds(t))
        df = df.sort_values(["insight_id", "pattern"], kind="stable", ignore_index=True)
        df["evidence"] = _parse_json(df["evidence"])
        return df

    def replay_verified(self, insight_ids: Iterable[str] | None = None) -> pd.Series:
        """Per insight with stored checks: True when every claimed pattern was verified, False
        when any was not (as `patterns.replay_verified`). Nullable boolean named replay_verified,
        indexed by insight_id (sorted); with `insight_ids`, exactly those in that order, <NA> for
        an insight without checks (it claims nothing, or was not checked)."""
        t = m.pattern_checks
        ids = None if insight_ids is None else list(dict.fromkeys(insight_ids))
        df = self._select_chunked(sa.select(t.c.insight_id, _raw(t.c.verified)), t.c.insight_id,
                                  ids, {"verified": "bool"})
        out = df.groupby("insight_id", sort=True)["verified"].all().astype("boolean")
        out.index.name = "insight_id"
        if ids is not None:
            out = out.reindex(pd.Index(ids, name="insight_id", dtype=object))
        return out.rename("replay_verified")

    # -- RCA findings ---------------------------------------------------------------------

    def replace_rca(self, findings: pd.DataFrame, run_id: str | None = None) -> int:
        """Store ranked root causes (`rca.analyze_failures` output): insight_id, horizon, cause,
        confidence (0-100), rank (1 = primary), summary, evidence (a dict or JSON text).

        For each (insight_id, horizon) present, its previous findings are deleted and the new
        ones inserted, linked to the current audit row of that key (audit_id, snapshot_hash) --
        a later re-label that supersedes it leaves them pointing at the row they analysed.
        Refused, naming the row, when a key has no current audit, or a rank is given twice.
        Returns the number of findings written."""
        _require(findings, ("insight_id", "horizon", "cause", "confidence", "rank"),
                 "RCA findings")
        if findings.empty:
            return 0
        df = findings.reset_index(drop=True)
        ids = [v.strip() for v in _str_values(df["insight_id"])]
        hz = [v.strip() for v in _str_values(df["horizon"])]
        cause = [v.strip() for v in _str_values(df["cause"])]
        labels = _labels(ids, hz)
        what = "RCA finding"
        for col, vals in (("insight_id", ids), ("horizon", hz), ("cause", cause)):
            blank = np.array([not v for v in vals], dtype=bool)
            if blank.any():
                raise ValueError(f"{what} {labels[_first(blank)]!r} (row {_first(blank)}): "
                                 f"{col} is blank")
        conf = pd.to_numeric(df["confidence"], errors="coerce").astype(float)
        bad = conf.isna() | (conf < 0) | (conf > 100)
        if bad.any():
            i = _first(bad)
            raise ValueError(f"{what} {labels[i]!r} ({cause[i]}): confidence "
                             f"{_shown(df['confidence'].iat[i])!r} is not a number from 0 to 100")
        rank = pd.to_numeric(df["rank"], errors="coerce").astype(float)
        bad = rank.isna() | (rank < 1) | (rank != np.floor(rank))
        if bad.any():
            i = _first(bad)
            raise ValueError(f"{what} {labels[i]!r} ({cause[i]}): rank "
                             f"{_shown(df['rank'].iat[i])!r} is not a whole number >= 1")
        out = pd.DataFrame({"insight_id": ids, "horizon": hz, "cause": cause, "confidence": conf,
                            "rank": rank.astype("int64")})
        dup = out.duplicated(["insight_id", "horizon", "rank"]).to_numpy()
        if dup.any():
            i = _first(dup)
            raise ValueError(f"{what} {labels[i]!r}: rank {out['rank'].iat[i]} is given twice "
                             f"(each finding of an audit has its own rank)")
        out["summary"] = _str_values(df["summary"]) if "summary" in df.columns else ""
        out["evidence"] = (_json_texts(df["evidence"].tolist(), "{}",
                                       [f"{what} {x!r} ({c}): evidence"
                                        for x, c in zip(labels, cause)], dict)
                           if "evidence" in df.columns else "{}")
        keys = out[["insight_id", "horizon"]].drop_duplicates()
        a, t = m.audits, m.audit_rca
        when = _time_values(pd.Series([_now()]), self.dialect)[0]
        with self._writing("rca") as conn:
            cur = self._select_chunked(
                sa.select(a.c.id.label("audit_id"), a.c.insight_id, a.c.horizon,
                          a.c.snapshot_hash).where(a.c.is_current == sa.true()),
                a.c.insight_id, keys["insight_id"].unique().tolist(), {"audit_id": "int"}, conn)
            mm = out.merge(cur, how="left", on=["insight_id", "horizon"])
            lost = mm["audit_id"].isna().to_numpy()
            if lost.any():
                i = _first(lost)
                raise ValueError(f"{what} {labels[i]!r}: insight {ids[i]!r} has no current "
                                 f"audit for horizon {hz[i]!r}; label it (upsert_audits) before "
                                 "storing its findings")
            pairs = list(keys.itertuples(index=False, name=None))
            for chunk in _chunks(pairs, _CHUNK // 2):
                conn.execute(t.delete().where(sa.tuple_(t.c.insight_id, t.c.horizon).in_(chunk)))
            cols = ["audit_id", "insight_id", "horizon", "cause", "confidence", "rank", "summary",
                    "evidence", "snapshot_hash"]
            self._bulk_insert(conn, t, mm, cols, {"analysed_at": when, "run_id": run_id})
        return len(mm)

    def read_rca(self, start: Any = None, end: Any = None,
                 insight_ids: Iterable[str] | None = None, causes: Iterable[str] | None = None,
                 primary_only: bool = False) -> pd.DataFrame:
        """RCA findings of audits with start <= created_at < end, sorted by created_at,
        insight_id, horizon, rank: id, audit_id, insight_id, horizon, cause, confidence, rank,
        summary, evidence (a dict), snapshot_hash, analysed_at, run_id, and from the audit row
        analysed: created_at, symbol, strategy, outcome, is_current (False once a re-label
        superseded it). primary_only: rank 1 only."""
        r, a = m.audit_rca, m.audits
        stmt = (sa.select(*[_raw(c) for c in r.columns], a.c.created_at, a.c.symbol,
                          a.c.strategy, a.c.outcome, _raw(a.c.is_current))
                .select_from(r.join(a, a.c.id == r.c.audit_id)))
        stmt = self._time_filter(stmt, a.c.created_at, start, end)
        if causes is not None:
            stmt = stmt.where(r.c.cause.in_(list(causes)))
        if primary_only:
            stmt = stmt.where(r.c.rank == 1)
        kinds = {**_kinds(r), "created_at": "time", "is_current": "bool"}
        df = self._select_chunked(stmt, r.c.insight_id, insight_ids, kinds)
        _blank_as_empty(df, ("symbol", "strategy", "outcome"))
        df["_h"] = _horizon_order(df["horizon"])
        df = (df.sort_values(["created_at", "insight_id", "_h", "horizon", "rank"], kind="stable")
              .drop(columns="_h").reset_index(drop=True))
        df["evidence"] = _parse_json(df["evidence"])
        return df

    # -- explanations ---------------------------------------------------------------------

    def put_explanations(self, explanations: pd.DataFrame, run_id: str | None = None) -> int:
        """Upsert per-insight SHAP explanations by (insight_id, horizon, model_name,
        model_version) (the last row wins for a key given twice).

        Columns: insight_id, horizon, model_name, model_version (int or text, stored as text),
        contributions ({feature: value}, a dict or JSON text); optional base_value, output (the
        model output the values add up to), top_features (a list; default: the TOP_FEATURES
        features of largest |contribution|), summary, explained_at (default now). Returns the
        number of rows written."""
        key = ["insight_id", "horizon", "model_name", "model_version"]
        _require(explanations, (*key, "contributions"), "explanations")
        if explanations.empty:
            return 0
        df = explanations.reset_index(drop=True)
        out = pd.DataFrame({c: [v.strip() for v in _str_values(df[c])] for c in key[:3]})
        out["model_version"] = [_version_text(v) or "" for v in df["model_version"].tolist()]
        labels = _labels(*(out[c] for c in key))
        what = "explanation"
        for col in key:
            blank = (out[col] == "").to_numpy()
            if blank.any():
                raise ValueError(f"{what} {labels[_first(blank)]!r} (row {_first(blank)}): "
                                 f"{col} is blank")
        docs = [_json_doc(v, "{}", f"{what} {x!r}: contributions", dict)
                for v, x in zip(df["contributions"].tolist(), labels)]
        out["contributions"] = [d[0] for d in docs]
        given = (df["top_features"].tolist() if "top_features" in df.columns
                 else [None] * len(df))
        tops = []
        for v, (_, contrib), x in zip(given, docs, labels):
            listed = isinstance(v, list | tuple | np.ndarray)
            if not listed and (_missing(v) or (isinstance(v, str) and not v.strip())):
                size = {f: abs(c) if isinstance(c, int | float) else 0.0
                        for f, c in contrib.items()}
                ranked = sorted(contrib, key=lambda f: -size[f])  # stable: ties keep order
                tops.append(json.dumps(ranked[:TOP_FEATURES]))
            else:
                tops.append(_json_doc(v, "[]", f"{what} {x!r}: top_features", list)[0])
        out["top_features"] = tops
        for c in ("base_value", "output"):
            out[c] = (pd.to_numeric(df[c], errors="coerce").astype(float) if c in df.columns
                      else np.nan)
        out["summary"] = _str_values(df["summary"]) if "summary" in df.columns else ""
        out["explained_at"] = _when(df, "explained_at", labels, _now())
        out = out.drop_duplicates(key, keep="last")
        with self._writing("explanations") as conn:
            self._bulk_insert(conn, m.explanations, out, list(out.columns), {"run_id": run_id},
                              conflict_key=key)
        return len(out)

    def read_explanations(self, insight_ids: Iterable[str] | None = None,
                          model_name: str | None = None, model_version: Any = None
                          ) -> pd.DataFrame:
        """Stored explanations sorted by insight_id, horizon, model_name, first stored: id,
        insight_id, horizon, model_name, model_version (text), base_value, output, contributions
        (a dict), top_features (a list), summary, explained_at, run_id."""
        t = m.explanations
        stmt = sa.select(*[_raw(c) for c in t.columns])
        if model_name is not None:
            stmt = stmt.where(t.c.model_name == model_name)
        if model_version is not None:
            stmt = stmt.where(t.c.model_version == _version_text(model_version))
        df = self._select_chunked(stmt, t.c.insight_id, insight_ids, _kinds(t))
        df["_h"] = _horizon_order(df["horizon"])
        df = (df.sort_values(["insight_id", "_h", "horizon", "model_name", "id"], kind="stable")
              .drop(columns="_h").reset_index(drop=True))
        df["contributions"] = _parse_json(df["contributions"])
        df["top_features"] = _parse_json(df["top_features"])
        return df

    # -- retrain-request audit trail ------------------------------------------------------

    @staticmethod
    def _latest_status(conn: sa.Connection, request_id: str) -> str | None:
        t = m.audit_trail
        return conn.execute(sa.select(t.c.to_status).where(t.c.request_id == request_id)
                            .order_by(t.c.id.desc()).limit(1)).scalar()

    def record_transition(self, request_id: str, from_status: str, to_status: str, actor: str,
                          reason: str = "") -> None:
        """Append one status transition of a retrain request to `audit_trail`, the authoritative
        log (DESIGN.md 2a "Learning loop"): in one serialised transaction, only when from_status
        is the request's latest to_status ('' for its creation, when it has no rows yet).
        Otherwise -- a step skipped, a decision already taken, another writer first -- raises
        TransitionConflict naming the request, the expected and the actual status, and writes
        nothing. Of two transitions racing out of the same status exactly one is recorded
        (UNIQUE(request_id, from_status) backs the check)."""
        rid = "" if _missing(request_id) else str(request_id).strip()
        if not rid:
            raise ValueError("record_transition: request_id is blank")
        frm = "" if _missing(from_status) else str(from_status).strip()
        to = "" if _missing(to_status) else str(to_status).strip()
        who = "" if _missing(actor) else str(actor).strip()
        if not to:
            raise ValueError(f"retrain request {rid!r}: to_status is blank")
        if to == frm:
            raise ValueError(f"retrain request {rid!r}: {frm!r} -> {to!r} is not a transition")
        if not who:
            raise ValueError(f"retrain request {rid!r}: the transition {frm!r} -> {to!r} names "
                             "no actor")

        def conflict(actual: str | None) -> TransitionConflict:
            shown = repr(actual) if actual is not None else "none (it has no recorded transition)"
            return TransitionConflict(
                f"retrain request {rid!r} cannot move from {frm!r} to {to!r}: expected status "
                f"{frm!r}, actual status {shown}", rid, frm, actual)

        t = m.audit_trail
        try:
            with self._writing(f"audit_trail:{rid}") as conn:
                actual = self._latest_status(conn, rid)
                if (actual or "") != frm:
                    raise conflict(actual)
                conn.execute(t.insert().values(request_id=rid, from_status=frm, to_status=to,
                                               actor=who, reason=str(reason or ""), at=_now()))
        except sa.exc.IntegrityError as exc:  # a writer outside the lock got there first
            raise conflict(self.latest_status(rid)) from exc

    def trail(self, request_id: str | None = None) -> pd.DataFrame:
        """The recorded transitions, oldest first (of one request, or all): id, request_id,
        from_status, to_status, actor, reason, at."""
        t = m.audit_trail
        stmt = sa.select(*[_raw(c) for c in t.columns]).order_by(t.c.id)
        if request_id is not None:
            stmt = stmt.where(t.c.request_id == str(request_id))
        with self.engine.connect() as conn:
            return _frame(conn.execute(stmt), _kinds(t))

    def latest_status(self, request_id: str) -> str | None:
        """The request's current status (its latest to_status), None when it has no rows."""
        with self.engine.connect() as conn:
            return self._latest_status(conn, str(request_id))

    # -- alias moves ----------------------------------------------------------------------

    @staticmethod
    def _last_alias_seq(conn: sa.Connection, model_name: str) -> int:
        t = m.alias_moves
        return int(conn.execute(sa.select(sa.func.max(t.c.seq))
                                .where(t.c.model_name == model_name)).scalar() or 0)

    def record_alias_move(self, model_name: str, alias: str, from_version: Any, to_version: Any,
                          actor: str, reason: str = "", expected_seq: int | None = None) -> int:
        """Append an alias move of a registered model as (model_name, last seq + 1), in one
        serialised transaction, and return that seq (1 for the first move). Versions are stored
        as text (None: the alias was unset / is removed). With `expected_seq` (the seq the
        caller read, 0 for none), raises AliasMoveConflict and writes nothing when another move
        came first: re-read the aliases and decide again."""
        name = "" if _missing(model_name) else str(model_name).strip()
        if not name:
            raise ValueError("record_alias_move: model_name is blank")
        ali = "" if _missing(alias) else str(alias).strip()
        who = "" if _missing(actor) else str(actor).strip()
        if not ali:
            raise ValueError(f"alias move of {name!r}: alias is blank")
        if not who:
            raise ValueError(f"alias move of {name!r} ({ali!r}): actor is blank")
        frm, to = _version_text(from_version), _version_text(to_version)

        def conflict(actual: int) -> AliasMoveConflict:
            return AliasMoveConflict(
                f"alias move of {name!r} ({ali!r} -> {to!r}) refused: expected the last move to "
                f"be #{expected_seq}, but it is #{actual}; someone else moved first: re-read "
                "the aliases and retry", name, expected_seq, actual)

        t = m.alias_moves
        try:
            with self._writing(f"alias_moves:{name}") as conn:
                last = self._last_alias_seq(conn, name)
                if expected_seq is not None and int(expected_seq) != last:
                    raise conflict(last)
                seq = last + 1
                conn.execute(t.insert().values(model_name=name, seq=seq, alias=ali,
                                               from_version=frm, to_version=to, actor=who,
                                               reason=str(reason or ""), at=_now()))
        except sa.exc.IntegrityError as exc:  # a writer outside the lock got there first
            raise conflict(self.last_alias_seq(name)) from exc
        return seq

    def alias_moves(self, model_name: str | None = None) -> pd.DataFrame:
        """Recorded alias moves sorted by model_name, seq: model_name, seq, alias, from_version,
        to_version, actor, reason, at."""
        t = m.alias_moves
        stmt = sa.select(*[_raw(c) for c in t.columns]).order_by(t.c.model_name, t.c.seq)
        if model_name is not None:
            stmt = stmt.where(t.c.model_name == str(model_name))
        with self.engine.connect() as conn:
            return _frame(conn.execute(stmt), _kinds(t))

    def last_alias_seq(self, model_name: str) -> int:
        """The seq of the model's last alias move, 0 when none."""
        with self.engine.connect() as conn:
            return self._last_alias_seq(conn, str(model_name))

    # -- A/B assignments ------------------------------------------------------------------

    REVIEW_DECISIONS = ("confirmed", "relabel", "data_issue")

    def add_review(self, insight_id: str, horizon: str, reviewer: str, notes: str,
                   decision: str = "confirmed") -> int:
        """Record a person's review of the current audit of (insight_id, horizon): decision
        confirmed (the label stands), relabel (the label is wrong; fix the rule or data and
        re-run) or data_issue (the candles are wrong). Returns the review id."""
        decision = str(decision).strip().lower()
        if decision not in self.REVIEW_DECISIONS:
            raise ValueError(f"review of {insight_id}/{horizon}: decision {decision!r} is not one "
                             f"of {', '.join(self.REVIEW_DECISIONS)}")
        reviewer, notes = str(reviewer or "").strip(), str(notes or "").strip()
        if not reviewer:
            raise ValueError(f"review of {insight_id}/{horizon}: a reviewer name is needed")
        t, r = m.audits, m.audit_reviews
        with self._writing("reviews") as conn:
            row = conn.execute(sa.select(t.c.id).where(
                t.c.insight_id == str(insight_id), t.c.horizon == str(horizon).upper(),
                t.c.is_current == sa.true())).first()
            if row is None:
                raise ValueError(f"review of {insight_id}/{horizon}: there is no current audit")
            res = conn.execute(r.insert().values(
                audit_id=row[0], insight_id=str(insight_id), horizon=str(horizon).upper(),
                decision=decision, reviewer=reviewer, notes=notes, reviewed_at=_now()))
            return int(res.inserted_primary_key[0])

    def read_reviews(self, insight_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Reviews, newest first: id, audit_id, insight_id, horizon, decision, reviewer, notes,
        reviewed_at."""
        r = m.audit_reviews
        stmt = sa.select(*r.c).order_by(r.c.reviewed_at.desc(), r.c.id.desc())
        if insight_ids is not None:
            stmt = stmt.where(r.c.insight_id.in_([str(i) for i in insight_ids]))
        with self.engine.connect() as conn:
            return _frame(conn.execute(stmt), _kinds(r))

    def put_ab_assignments(self, assignments: pd.DataFrame) -> int:
        """Upsert A/B arms by (insight_id, model_name) (the last row wins for a key given twice):
        insight_id, model_name, arm (champion | challenger), share (the challenger's share,
        0-1); optional model_version (the version the arm resolved to), assigned_at (default
        now). Returns the number of rows written."""
        _require(assignments, ("insight_id", "model_name", "arm", "share"), "A/B assignments")
        if assignments.empty:
            return 0
        df = assignments.reset_index(drop=True)
        out = pd.DataFrame({c: [v.strip() for v in _str_values(df[c])]
                            for c in ("insight_id", "model_name")})
        labels = _labels(out["insight_id"], out["model_name"])
        what = "A/B assignment"
        for col in ("insight_id", "model_name"):
            blank = (out[col] == "").to_numpy()
            if blank.any():
                raise ValueError(f"{what} {labels[_first(blank)]!r} (row {_first(blank)}): "
                                 f"{col} is blank")
        arm = pd.Series(_str_values(df["arm"]), dtype=object).str.strip().str.lower()
        bad = ~arm.isin(AB_ARMS).to_numpy()
        if bad.any():
            i = _first(bad)
            raise ValueError(f"{what} {labels[i]!r}: arm {_shown(df['arm'].iat[i])!r} is not one "
                             f"of {', '.join(AB_ARMS)}")
        share = pd.to_numeric(df["share"], errors="coerce").astype(float)
        bad = share.isna() | (share < 0) | (share > 1)
        if bad.any():
            i = _first(bad)
            raise ValueError(f"{what} {labels[i]!r}: share {_shown(df['share'].iat[i])!r} is not a "
                             "fraction from 0 to 1")
        out["arm"], out["share"] = arm, share
        out["model_version"] = ([_version_text(v) for v in df["model_version"].tolist()]
                                if "model_version" in df.columns else None)
        out["assigned_at"] = _when(df, "assigned_at", labels, _now())
        out = out.drop_duplicates(["insight_id", "model_name"], keep="last")
        with self._writing("ab_assignments") as conn:
            self._bulk_insert(conn, m.ab_assignments, out, list(out.columns),
                              conflict_key=["insight_id", "model_name"])
        return len(out)

    def read_ab_assignments(self, insight_ids: Iterable[str] | None = None,
                            model_name: str | None = None) -> pd.DataFrame:
        """A/B arms sorted by insight_id, model_name: insight_id, model_name, arm, share,
        model_version (text or None), assigned_at."""
        t = m.ab_assignments
        stmt = sa.select(*[_raw(c) for c in t.columns])
        if model_name is not None:
            stmt = stmt.where(t.c.model_name == str(model_name))
        df = self._select_chunked(stmt, t.c.insight_id, insight_ids, _kinds(t))
        return df.sort_values(["insight_id", "model_name"], kind="stable", ignore_index=True)
