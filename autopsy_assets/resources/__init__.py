"""Dagster resources: where candles and insights come from, and the audit store they go to.

Each is a ConfigurableResource with a small, typed configuration; tests build them directly with
a temporary database URL or file path. The demo sources generate their data deterministically
in-process (nothing is downloaded).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import dagster as dg
import pandas as pd

from autopsy_assets.store import AuditStore


def autopsy_home() -> Path:
    """The local folder that holds the embedded default (.autopsy/ in the working directory)."""
    return Path(os.environ.get("AUTOPSY_HOME") or Path.cwd() / ".autopsy").resolve()


@lru_cache(maxsize=16)
def _store(url: str) -> AuditStore:
    store = AuditStore(url)
    store.migrate()  # idempotent; once per process and URL
    return store


class AuditStoreResource(dg.ConfigurableResource):
    """The audit store (SQLAlchemy): SQLite under .autopsy/ by default, PostgreSQL by URL.

    database_url: empty means AUTOPSY_DATABASE_URL, else sqlite:///<AUTOPSY_HOME>/audit.db.
    """

    database_url: str = ""

    def url(self) -> str:
        if self.database_url:
            return self.database_url
        env = os.environ.get("AUTOPSY_DATABASE_URL")
        if env:
            return env
        home = autopsy_home()
        home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{home / 'audit.db'}"

    def get(self) -> AuditStore:
        return _store(self.url())


def _read_table(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"source file {p} does not exist")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    return pd.read_csv(p, dtype=str, keep_default_na=False)


def _between(
    frame: pd.DataFrame, column: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Rows whose ``column`` falls in [start, end). Routing only: a value that is unparseable or
    timezone-naive is routed as if UTC so the row reaches validation (and its quarantine) in the
    partition it claims, instead of vanishing here."""
    when = pd.to_datetime(frame[column].astype(str), errors="coerce", utc=True, format="ISO8601")
    return frame[(when >= start) & (when < end)]


class CandleSource(dg.ConfigurableResource):
    """Where candles come from: `demo` (the real EURUSD hourly sample plus the generated 1-minute
    market) or `csv` (a CSV/Parquet file with symbol, ts, open, high, low, close, optional
    timeframe, volume, spread; ts with an explicit UTC offset)."""

    kind: str = "demo"
    path: str = ""

    def load(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if self.kind == "demo":
            from autopsy_assets.data import demo_candles

            frame = demo_candles()
            return frame[(frame["ts"] >= start) & (frame["ts"] < end)].reset_index(drop=True)
        if self.kind == "csv":
            return _between(_read_table(self.path), "ts", start, end).reset_index(drop=True)
        raise ValueError(f"unknown candle source kind {self.kind!r}: expected demo or csv")

    def span(self) -> tuple[pd.Timestamp, pd.Timestamp] | None:
        """First and last candle timestamps the source holds (for `make run`'s range)."""
        if self.kind == "demo":
            from autopsy_assets.data import demo_candles

            ts = demo_candles()["ts"]
        else:
            ts = pd.to_datetime(_read_table(self.path)["ts"], utc=True, errors="coerce").dropna()
        return (ts.min(), ts.max()) if len(ts) else None


class InsightSource(dg.ConfigurableResource):
    """Where insights come from: `demo` (generated over the demo candles, with a handful of
    deliberately bad rows so the quarantine is visible) or `csv` (a CSV/Parquet export of the
    platform's insights; patterns joined by '|' or ',')."""

    kind: str = "demo"
    path: str = ""
    include_bad_rows: bool = True

    def load(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if self.kind == "demo":
            frame = _demo_insights(self.include_bad_rows)
        elif self.kind == "csv":
            frame = _read_table(self.path)
        else:
            raise ValueError(f"unknown insight source kind {self.kind!r}: expected demo or csv")
        return _between(frame, "created_at", start, end).reset_index(drop=True)


@lru_cache(maxsize=2)
def _demo_insights(include_bad_rows: bool) -> pd.DataFrame:
    from autopsy_assets.data import demo_candles, generate_insights

    return generate_insights(demo_candles(), include_bad_rows=include_bad_rows)


class NewsSource(dg.ConfigurableResource):
    """Economic calendar events (ts, currencies, impact, title[, event_id]).

    kind: `demo` (a deterministic calendar of recurring scheduled releases built by rule: US
    payrolls on the first Friday, CPI, central-bank decisions... It is NOT real news), `csv` (a
    CSV/Parquet file at `path`) or `sql` (table `table` read through SQLAlchemy URL `url`).
    """

    kind: str = "demo"
    path: str = ""
    url: str = ""
    table: str = "news_events"

    def load(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if self.kind == "demo":
            from autopsy_assets.data.news_calendar import scheduled_calendar

            return scheduled_calendar(start, end)
        if self.kind == "csv":
            frame = _read_table(self.path)
        elif self.kind == "sql":
            import sqlalchemy as sa
            from autopsy_assets.store import normalize_url

            engine = sa.create_engine(normalize_url(self.url))
            try:
                frame = pd.read_sql_table(self.table, engine)
            finally:
                engine.dispose()
            frame["ts"] = frame["ts"].astype(str)
        else:
            raise ValueError(f"unknown news source kind {self.kind!r}: expected demo, csv or sql")
        return _between(frame, "ts", start, end).reset_index(drop=True)


class RegimeSource(dg.ConfigurableResource):
    """Market regimes: `derived` from the stored candles (trend strength and realised-volatility
    percentiles, on `timeframe` bars resampled from finer candles) or read from an optional
    `csv` feed (symbol, ts, regime, confidence)."""

    kind: str = "derived"
    path: str = ""
    timeframe: str = "1h"

    def load_feed(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
        if self.kind != "csv":
            raise ValueError("load_feed needs kind='csv'")
        return _between(_read_table(self.path), "ts", start, end).reset_index(drop=True)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + registry. tracking_uri: empty means MLFLOW_TRACKING_URI, else the local
    SQLite store .autopsy/mlflow.db with artifacts under .autopsy/mlartifacts. A small resource
    around MlflowClient (dagster-mlflow's old-style resource ends runs at process exit)."""

    tracking_uri: str = ""

    def client(self):
        from autopsy_assets.registry import get_client

        return get_client(self.tracking_uri or None)


def default_resources() -> dict[str, object]:
    return {
        "audit_store": AuditStoreResource(),
        "candle_source": CandleSource(),
        "insight_source": InsightSource(),
        "news_source": NewsSource(),
        "regime_source": RegimeSource(),
        "mlflow": MlflowResource(),
    }
