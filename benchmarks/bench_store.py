"""Audit store throughput: the audit upsert and the candle blocks against a plain pandas
`DataFrame.to_sql` of the same rows, measured in the same run on the same database.

    python benchmarks/bench_store.py [--audits 50000] [--candles 300000] [--repeat 3]
                                     [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432/]

Store: a migrated AuditStore on a SQLite file in a temporary directory (the embedded default);
with --postgres URL also on PostgreSQL, in databases created on that server for the run and
dropped afterwards. Every timed repetition starts from a freshly migrated, empty database.

Steps, each timed best of --repeat and printed in rows/s:
- audits: upsert_audits of n audits (n/4 insights x 1H, 4H, 24H, 7D) into an empty store
  (insert), the same frame again (unchanged re-run), then the frame with every candles_hash
  changed and the outcome of the first quarter changed (n/4 superseded + new history rows, the
  rest refreshed in place);
- candles: put_candles of the 1-minute candles of two symbols into an empty store (put), the
  same frame again (unchanged put), read_candles of all of them (read).

Reference: the same frame written with `DataFrame.to_sql(..., if_exists="append", index=False)`
into a bare table (no keys, no indexes, created beforehand) through the store's own SQLAlchemy
engine, and read back with `pandas.read_sql_query` (SELECT *). That is a plain row insert and a
plain row read: no validation, deduplication, hashing or history, so the ratio says what the
store's bookkeeping costs (or saves) against the naive way of putting the same rows there.
The write steps are compared with the reference insert, the read with the reference read.
On PostgreSQL to_sql runs batched INSERT ... VALUES through psycopg2 while the store writes
audits with COPY, so the reference is weaker there and the ratios larger than on SQLite.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from autopsy_assets.domain.schemas import AUDIT_COLUMNS, HORIZONS
from autopsy_assets.store import AuditStore

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")  # a Monday
HORIZON_SET = ("1H", "4H", "24H", "7D")
AUDIT_DEFAULTS: dict[str, Any] = {
    "symbol": "EURUSD", "side": "long", "strategy": "smc", "timeframe": "1h",
    "candle_timeframe": "1m", "status": "published", "user_id": "u1", "user_acted": False,
    "outcome": "succeeded", "replay_outcome": "succeeded", "exit_reason": "target",
    "entry_price": 1.1, "stop_price": 1.099, "target_price": 1.102, "exit_price": 1.102,
    "high_price": 1.1021, "low_price": 1.0995, "pnl_pct": 0.18181818181818182,
    "max_drawdown": 0.045454545454545456, "max_favorable": 0.18181818181818182,
    "duration_minutes": 30.0, "risk_reward_actual": 2.0, "slippage_pips": np.nan,
    "gap_pips": np.nan, "ambiguous": False, "needs_review": False, "needs_review_reason": "",
    "rule_id": 1, "rule_snapshot": '{"rule_id": 1, "success_rr_ratio": 2.0}',
    "rule_hash": "a" * 64, "candles_hash": "b" * 64, "candle_blocks": "c" * 64,
    "snapshot_hash": "d" * 64,
}


def make_audits(n_insights: int) -> pd.DataFrame:
    """n_insights x 4 horizons audit rows, one insight a minute from T0, every AUDIT_COLUMNS
    column."""
    k = np.repeat(np.arange(n_insights), len(HORIZON_SET))
    hz = np.tile(np.array(HORIZON_SET, dtype=object), n_insights)
    created = T0 + pd.to_timedelta(k, unit="min")
    df = pd.DataFrame({c: [AUDIT_DEFAULTS.get(c)] * len(k) for c in AUDIT_COLUMNS})
    df["insight_id"] = [f"ins{i:07d}" for i in k]
    df["horizon"] = hz
    df["created_at"] = pd.Series(created).dt.as_unit("ns")
    df["window_start"] = df["created_at"]
    df["window_end"] = (created + pd.to_timedelta([HORIZONS[h] for h in hz], unit="min")
                        ).as_unit("ns")
    df["exit_time"] = (created + pd.Timedelta(minutes=30)).as_unit("ns")
    df["candles_until"] = df["exit_time"]
    return df[list(AUDIT_COLUMNS)]


def make_candles(symbol: str, periods: int, seed: int) -> pd.DataFrame:
    """Random-walk 1-minute candles from T0 at full float64 precision."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(T0, periods=periods, freq="1min").as_unit("ns")
    close = 1.1 + np.cumsum(rng.normal(0, 1e-4, periods))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(0, 5e-5, (2, periods)))
    return pd.DataFrame({"symbol": symbol, "timeframe": "1m", "ts": ts, "open": open_,
                         "high": np.maximum(open_, close) + wick[0],
                         "low": np.minimum(open_, close) - wick[1], "close": close,
                         "volume": rng.integers(1, 500, periods).astype(float)})


class Backend:
    """Fresh, migrated, empty stores on one backend: SQLite files in a temporary directory, or
    databases created on a PostgreSQL server (all dropped by close())."""

    def __init__(self, postgres: str | None, folder: Path) -> None:
        self.folder, self.created, self.admin = folder, [], None
        self.name = "postgresql" if postgres else "sqlite"
        if postgres:
            self.server = make_url(postgres)
            self.admin = sa.create_engine(self.server.set(database="postgres"),
                                          isolation_level="AUTOCOMMIT")

    def _new_url(self) -> str:
        name = f"autopsy_bench_{uuid.uuid4().hex[:16]}"
        if self.admin is None:
            return f"sqlite:///{self.folder / (name + '.db')}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.server.set(database=name).render_as_string(hide_password=False)

    @contextmanager
    def fresh(self) -> Iterator[AuditStore]:
        store = AuditStore(self._new_url())
        store.migrate()
        try:
            yield store
        finally:
            store.close()

    def close(self) -> None:
        if self.admin is None:
            return
        with self.admin.connect() as conn:
            for name in self.created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.dispose()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def reference_insert(store: AuditStore, df: pd.DataFrame, table: str) -> float:
    """Seconds for DataFrame.to_sql of df into a bare table made beforehand (not timed)."""
    df.head(0).to_sql(table, store.engine, if_exists="replace", index=False)
    return timed(lambda: df.to_sql(table, store.engine, if_exists="append", index=False))[0]


def reference_read(store: AuditStore, table: str) -> tuple[float, int]:
    s, got = timed(lambda: pd.read_sql_query(f"SELECT * FROM {table}", store.engine,
                                             parse_dates={"ts": {"utc": True}}))
    return s, len(got)


def bench_audits(backend: Backend, n: int, repeat: int) -> None:
    n_ins = n // len(HORIZON_SET)
    a = make_audits(n_ins)
    total, changed = len(a), n_ins
    b = a.assign(candles_hash="1" * 64)
    b.loc[:changed - 1, "outcome"] = "failed"
    runs: dict[str, list[float]] = {"insert": [], "rerun": [], "supersede": [], "ref": []}
    for _ in range(repeat):
        with backend.fresh() as store:
            s, c = timed(lambda: store.upsert_audits(a))
            assert c["inserted"] == total, c
            runs["insert"].append(s)
            s, c = timed(lambda: store.upsert_audits(a))
            assert c["unchanged"] == total, c
            runs["rerun"].append(s)
            s, c = timed(lambda: store.upsert_audits(b))
            assert c == {"inserted": changed, "refreshed": total - changed, "unchanged": 0,
                         "superseded": changed}, c
            runs["supersede"].append(s)
            runs["ref"].append(reference_insert(store, a, "bench_ref_audits"))
    ref = total / min(runs["ref"])
    print(f"  audits: {total:,} rows ({n_ins:,} insights x {len(HORIZON_SET)} horizons), "
          f"best of {repeat}")
    for step, what in (("insert", "insert into empty store"),
                       ("rerun", "unchanged re-run"),
                       ("supersede", f"supersede {changed:,} + refresh {total - changed:,}")):
        best = min(runs[step])
        rate = total / best
        print(f"    {what:<38} {best:7.3f} s  {rate:>11,.0f} rows/s  "
              f"{rate / ref:5.2f}x reference")
    print(f"    {'reference: DataFrame.to_sql insert':<38} {min(runs['ref']):7.3f} s  "
          f"{ref:>11,.0f} rows/s")


def bench_candles(backend: Backend, n: int, repeat: int) -> None:
    half = n // 2
    c = pd.concat([make_candles("EURUSD", half, seed=4),
                   make_candles("XAUUSD", n - half, seed=5)], ignore_index=True)
    end = T0 + pd.Timedelta(minutes=max(half, n - half) + 1)
    runs: dict[str, list[float]] = {"put": [], "again": [], "read": [], "ref_put": [],
                                    "ref_read": []}
    for _ in range(repeat):
        with backend.fresh() as store:
            s, counts = timed(lambda: store.put_candles(c))
            assert counts["rows"] == n and counts["blocks_unchanged"] == 0, counts
            runs["put"].append(s)
            s, counts = timed(lambda: store.put_candles(c))
            assert counts["blocks_new"] == 0 and counts["days_changed"] == 0, counts
            runs["again"].append(s)
            s, got = timed(lambda: store.read_candles(T0, end))
            assert len(got) == n, len(got)
            runs["read"].append(s)
            runs["ref_put"].append(reference_insert(store, c, "bench_ref_candles"))
            s, rows = reference_read(store, "bench_ref_candles")
            assert rows == n, rows
            runs["ref_read"].append(s)
    ref_put, ref_read = n / min(runs["ref_put"]), n / min(runs["ref_read"])
    print(f"  candles: {n:,} one-minute rows over 2 symbols, best of {repeat}")
    for step, what, ref in (("put", "put into empty store", ref_put),
                            ("again", "unchanged put", ref_put),
                            ("read", "read all", ref_read)):
        best = min(runs[step])
        rate = n / best
        print(f"    {what:<38} {best:7.3f} s  {rate:>11,.0f} rows/s  "
              f"{rate / ref:5.2f}x reference")
    print(f"    {'reference: DataFrame.to_sql insert':<38} {min(runs['ref_put']):7.3f} s  "
          f"{ref_put:>11,.0f} rows/s")
    print(f"    {'reference: read_sql_query SELECT *':<38} {min(runs['ref_read']):7.3f} s  "
          f"{ref_read:>11,.0f} rows/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--audits", type=int, default=50_000)
    ap.add_argument("--candles", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--postgres", metavar="URL", default=None,
                    help="also measure on this PostgreSQL server (a database is created and "
                         "dropped per repetition), e.g. postgresql+psycopg2://postgres@host:5432/")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        for url in (None, args.postgres) if args.postgres else (None,):
            backend = Backend(url, Path(tmp))
            try:
                with backend.fresh() as store:  # warm-up: imports (pandera, alembic), pools
                    store.upsert_audits(make_audits(10))
                    store.put_candles(make_candles("EURUSD", 100, seed=0))
                print(f"{backend.name}:")
                bench_audits(backend, args.audits, args.repeat)
                bench_candles(backend, args.candles, args.repeat)
            finally:
                backend.close()


if __name__ == "__main__":
    main()
