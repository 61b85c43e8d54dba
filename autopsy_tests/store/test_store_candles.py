"""Audit store: candles as content-addressed day blocks, coverage, replay by block hash."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
import sqlalchemy as sa

from autopsy_assets.domain import replay
from autopsy_assets.store import CANDLE_COLUMNS, AuditStore, MissingCandleBlocksError

T0 = pd.Timestamp("2024-03-04 00:00", tz="UTC")


def _count(store: AuditStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()


def _day_hash(store: AuditStore, symbol: str, timeframe: str, day: pd.Timestamp) -> str:
    cov = store.read_candles(day, day + pd.Timedelta(days=1), [symbol], [timeframe])
    ts_ns = cov["ts"].dt.as_unit("ns").astype("int64").to_numpy()
    return replay.sha256_hex(replay.encode_block(
        ts_ns, {c: cov[c].to_numpy() for c in replay.BLOCK_COLUMNS[1:]}))


def _expected(c: pd.DataFrame) -> pd.DataFrame:
    out = c.copy()
    for col in ("volume", "spread"):
        if col not in out:
            out[col] = np.nan
    return out[list(CANDLE_COLUMNS)].reset_index(drop=True)


def _assert_candles_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pdt.assert_frame_equal(got.reset_index(drop=True), _expected(want), check_dtype=False,
                           check_exact=True)
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]"


def test_put_candles_twice_stores_each_block_once(store, make_candles) -> None:
    c = make_candles(periods=3 * 1440)  # three whole UTC days of 1-minute bars
    first = store.put_candles(c)
    assert first == {"rows": 4320, "blocks_new": 3, "blocks_unchanged": 0, "days_changed": 3,
                     "days_new": 3}
    again = store.put_candles(c)
    assert again == {"rows": 4320, "blocks_new": 0, "blocks_unchanged": 3, "days_changed": 0,
                     "days_new": 0}
    assert _count(store, "candle_blocks") == 3
    assert _count(store, "candle_days") == 3
    _assert_candles_equal(store.read_candles(T0, T0 + pd.Timedelta(days=3)), c)


def test_appending_to_a_day_makes_a_new_block_and_keeps_the_old(store, make_candles) -> None:
    day = make_candles(periods=1440)
    morning, rest = day.iloc[:600], day.iloc[600:]
    store.put_candles(morning)
    with store.engine.connect() as conn:
        old_hash = conn.exec_driver_sql("SELECT sha256 FROM candle_days").scalar_one()
    # only the new bars are given: they are merged into the stored day
    counts = store.put_candles(rest)
    assert counts == {"rows": 840, "blocks_new": 1, "blocks_unchanged": 0, "days_changed": 1,
                      "days_new": 0}
    with store.engine.connect() as conn:
        new_hash, n_rows = conn.exec_driver_sql("SELECT sha256, n_rows FROM candle_days").one()
    assert new_hash != old_hash and n_rows == 1440
    assert _count(store, "candle_blocks") == 2
    _assert_candles_equal(store.read_candles(T0, T0 + pd.Timedelta(days=1)), day)
    _assert_candles_equal(store.read_blocks([old_hash]), morning)      # what old audits saw
    _assert_candles_equal(store.read_blocks(new_hash), day)
    # the merged day hashes exactly like the whole day split at once
    assert new_hash == replay.split_blocks(day)["sha256"].iat[0]
    # giving the whole day again changes nothing; a corrected bar moves the day once more
    assert store.put_candles(day)["blocks_unchanged"] == 1
    fixed = day.copy()
    fixed.loc[700, "close"] += 1e-5
    assert store.put_candles(fixed.iloc[[700]])["blocks_new"] == 1
    assert store.read_candles(T0, T0 + pd.Timedelta(days=1))["close"].iat[700] == \
        fixed["close"].iat[700]
    # replace_days: the incoming candles become the day's whole content
    assert store.put_candles(morning, replace_days=True) == {
        "rows": 600, "blocks_new": 0, "blocks_unchanged": 0, "days_changed": 1, "days_new": 0}
    _assert_candles_equal(store.read_candles(T0, T0 + pd.Timedelta(days=1)), morning)
    assert _count(store, "candle_blocks") == 3


def test_read_blocks_round_trips_bytes_exactly(store, make_candles) -> None:
    c = make_candles(periods=2 * 1440, spread=True, seed=7)
    # awkward floats: shortest-repr extremes, negative zero, subnormal, huge
    c.loc[0, ["open", "high", "low", "close"]] = [0.1 + 0.2, 1 / 3, -0.0, 5e-324]
    c.loc[1, "volume"] = 1.7976931348623157e308
    store.put_candles(c)
    blocks = replay.split_blocks(c)
    got = store.read_blocks(",".join(blocks["sha256"]))  # an audit's comma-joined candle_blocks
    assert len(got) == len(c)
    for col in replay.BLOCK_COLUMNS[1:]:
        assert np.array_equal(got[col].to_numpy().view("<i8"), c[col].to_numpy().view("<i8"))
    assert np.array_equal(got["ts"].dt.as_unit("ns").astype("int64").to_numpy(),
                          c["ts"].dt.as_unit("ns").astype("int64").to_numpy())
    for (_, b), day in zip(blocks.iterrows(), got.groupby(got["ts"].dt.floor("D"))):
        part = day[1]
        again = replay.encode_block(part["ts"].dt.as_unit("ns").astype("int64").to_numpy(),
                                    {k: part[k].to_numpy() for k in replay.BLOCK_COLUMNS[1:]})
        assert again == b["payload"] and replay.sha256_hex(again) == b["sha256"]
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT payload FROM candle_blocks WHERE sha256 = :h"),
                              {"h": blocks["sha256"].iat[0]}).scalar_one()
    assert bytes(stored) == blocks["payload"].iat[0]
    missing = "f" * 64
    with pytest.raises(MissingCandleBlocksError, match=missing):
        store.read_blocks([blocks["sha256"].iat[0], missing])


def test_read_candles_trims_filters_and_reports_coverage(store, make_candles) -> None:
    eur = make_candles("EURUSD", "1m", periods=2 * 1440, seed=1)
    gbp = make_candles("GBPUSD", "1m", periods=1440, seed=2)
    hourly = make_candles("EURUSD", "1h", periods=72, seed=3)
    store.put_candles(pd.concat([hourly, gbp, eur]).sample(frac=1, random_state=0))  # unsorted
    start, end = T0 + pd.Timedelta(hours=22, minutes=30), T0 + pd.Timedelta(hours=25)
    got = store.read_candles(start, end)
    want = pd.concat([eur, hourly, gbp])
    want = want[(want.ts >= start) & (want.ts < end)].sort_values(["symbol", "timeframe", "ts"])
    _assert_candles_equal(got, want)
    assert len(got) == 150 + 2 + 90
    only = store.read_candles(start, end, symbols=["EURUSD"], timeframes=["1h"])
    assert only["ts"].tolist() == [T0 + pd.Timedelta(hours=h) for h in (23, 24)]
    assert store.read_candles(T0 + pd.Timedelta(days=9), T0 + pd.Timedelta(days=10)).empty
    with pytest.raises(ValueError, match="start"):
        store.read_candles(pd.Timestamp("2024-03-04"), end)
    cov = store.candle_coverage()
    assert cov[["symbol", "timeframe"]].values.tolist() == [
        ["EURUSD", "1h"], ["EURUSD", "1m"], ["GBPUSD", "1m"]]
    assert cov["first_ts"].tolist() == [T0] * 3
    assert cov["last_ts"].tolist() == [T0 + pd.Timedelta(hours=71),
                                       T0 + pd.Timedelta(minutes=2 * 1440 - 1),
                                       T0 + pd.Timedelta(minutes=1439)]
    assert cov["n_rows"].tolist() == [72, 2880, 1440]
    assert str(cov["last_ts"].dtype) == "datetime64[ns, UTC]"


def test_put_candles_refuses_naive_and_conflicting_rows(store, make_candles) -> None:
    c = make_candles(periods=10)
    naive = c.assign(ts=c["ts"].dt.tz_localize(None))
    with pytest.raises(ValueError, match="ts"):
        store.put_candles(naive)
    dup = pd.concat([c, c.iloc[[3]]])  # an exact duplicate: one is kept
    assert store.put_candles(dup)["blocks_new"] == 1
    assert len(store.read_candles(T0, T0 + pd.Timedelta(days=1))) == 10
    bad = pd.concat([c, c.iloc[[3]].assign(close=9.0)])
    with pytest.raises(ValueError, match=r"EURUSD\|1m\|2024-03-04T00:03:00"):
        store.put_candles(bad)


def test_300k_candles_put_reput_unchanged_and_read_back(store, make_candles) -> None:
    # timings: benchmarks/bench_store.py
    c = pd.concat([make_candles("EURUSD", periods=150_000, seed=4),
                   make_candles("XAUUSD", periods=150_000, seed=5)], ignore_index=True)
    counts = store.put_candles(c)
    assert counts["rows"] == 300_000 and counts["blocks_new"] == 2 * 105
    assert store.put_candles(c)["blocks_unchanged"] == 210
    got = store.read_candles(T0, T0 + pd.Timedelta(days=200))
    assert len(got) == 300_000
