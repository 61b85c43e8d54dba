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
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from autopsy_assets.store import AuditStore

# the rows and the databases the store tests make (autopsy_tests is not installed: found from
# the repo root)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autopsy_tests.conftest import _create_database, _drop_database
from autopsy_tests.store.frames import T0, audit_frame, candles_frame

HORIZON_SET = ("1H", "4H", "24H", "7D")


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
        if self.admin is None:
            return f"sqlite:///{self.folder / f'autopsy_bench_{uuid.uuid4().hex[:16]}.db'}"
        name = _create_database(self.admin)
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
        for name in self.created:
            _drop_database(self.admin, name)
        self.admin.dispose()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def print_steps(rows: int, runs: dict[str, list[float]], steps) -> None:
    """One line per (step, what, reference step): best seconds, rows/s and the ratio to the
    reference step's best rows/s."""
    for step, what, ref_step in steps:
        best = min(runs[step])
        print(f"    {what:<38} {best:7.3f} s  {rows / best:>11,.0f} rows/s  "
              f"{min(runs[ref_step]) / best:5.2f}x reference")


def print_reference(rows: int, seconds: list[float], what: str) -> None:
    print(f"    {'reference: ' + what:<38} {min(seconds):7.3f} s  "
          f"{rows / min(seconds):>11,.0f} rows/s")


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
    a = audit_frame(n_ins, horizons=HORIZON_SET)
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
    print(f"  audits: {total:,} rows ({n_ins:,} insights x {len(HORIZON_SET)} horizons), "
          f"best of {repeat}")
    print_steps(total, runs, (("insert", "insert into empty store", "ref"),
                              ("rerun", "unchanged re-run", "ref"),
                              ("supersede", f"supersede {changed:,} + refresh {total - changed:,}",
                               "ref")))
    print_reference(total, runs["ref"], "DataFrame.to_sql insert")


def bench_candles(backend: Backend, n: int, repeat: int) -> None:
    half = n // 2
    c = pd.concat([candles_frame("EURUSD", periods=half, seed=4),
                   candles_frame("XAUUSD", periods=n - half, seed=5)], ignore_index=True)
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
    print(f"  candles: {n:,} one-minute rows over 2 symbols, best of {repeat}")
    print_steps(n, runs, (("put", "put into empty store", "ref_put"),
                          ("again", "unchanged put", "ref_put"),
                          ("read", "read all", "ref_read")))
    print_reference(n, runs["ref_put"], "DataFrame.to_sql insert")
    print_reference(n, runs["ref_read"], "read_sql_query SELECT *")


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
                    store.upsert_audits(audit_frame(10))
                    store.put_candles(candles_frame(periods=100))
                print(f"{backend.name}:")
                bench_audits(backend, args.audits, args.repeat)
                bench_candles(backend, args.candles, args.repeat)
            finally:
                backend.close()


if __name__ == "__main__":
    main()
