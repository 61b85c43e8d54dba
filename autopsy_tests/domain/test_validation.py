"""Insight and candle validation against slow, obvious per-row references (hypothesis): each row
gets the reason of the first check it fails, in the documented order, whatever the compiled
passes do to find it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopsy_assets.domain.validation import (
    InputError,
    validate_candle_runs,
    validate_candles,
    validate_insights,
)

T0 = pd.Timestamp("2018-03-06 10:00", tz="UTC")
NUMBERS = [1.2, 1.19, 1.21, 0.0, -1.0, math.nan, 50.0, 101.0]


def flat_candles(ts, symbol="EURUSD", timeframe="1m", **columns) -> pd.DataFrame:
    """Valid candles at ``ts`` that all open and close at 1.2 inside [1.19, 1.21]."""
    return pd.DataFrame({"symbol": symbol, "timeframe": timeframe, "ts": ts, "open": 1.2,
                         "high": 1.21, "low": 1.19, "close": 1.2, **columns})


def insight_reason(row: dict) -> str | None:
    """The first failing check of one insight's side and numbers, bar by bar of the rules."""
    side, entry = row["side"], row["entry_price"]
    sl, tp, ai, conf = row["stop_loss"], row["take_profit"], row["ai_score"], row["confidence"]
    if side not in ("long", "short"):
        return f"unknown side {side!r}: expected long or short"
    if math.isnan(entry):
        return "entry_price is missing"
    if not entry > 0:
        return f"entry_price {entry} must be positive"
    if side == "long" and sl >= entry:
        return f"long with stop_loss {sl} at or above entry {entry}"
    if side == "short" and sl <= entry:
        return f"short with stop_loss {sl} at or below entry {entry}"
    if side == "long" and tp <= entry:
        return f"long with take_profit {tp} at or below entry {entry}"
    if side == "short" and tp >= entry:
        return f"short with take_profit {tp} at or above entry {entry}"
    if sl <= 0 or tp <= 0:
        return "stop_loss and take_profit must be positive prices"
    if ai < 0 or ai > 100:
        return f"ai_score {ai} is outside 0-100"
    if conf < 0 or conf > 100:
        return f"confidence {conf} is outside 0-100"
    return None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "side": st.sampled_from(["long", "short", "up"]),
                "entry_price": st.sampled_from(NUMBERS),
                "stop_loss": st.sampled_from(NUMBERS),
                "take_profit": st.sampled_from(NUMBERS),
                "ai_score": st.sampled_from(NUMBERS),
                "confidence": st.sampled_from(NUMBERS),
            }
        ),
        min_size=1,
        max_size=40,
    )
)
def test_each_insight_gets_the_first_reason_it_fails(rows):
    frame = pd.DataFrame(rows).assign(
        insight_id=[f"I{i}" for i in range(len(rows))], created_at=T0, symbol="EURUSD"
    )
    clean, quarantine = validate_insights(frame)
    got = {q["row_id"]: q["reason"] for q in quarantine}
    want = {f"I{i}": insight_reason(r) for i, r in enumerate(rows)}
    assert got == {k: v for k, v in want.items() if v is not None}
    assert list(clean["insight_id"]) == [k for k, v in want.items() if v is None]


def candle_reason(o, h, lo, c, spread) -> str | None:
    if any(math.isnan(x) for x in (o, h, lo, c)):
        return "a price (open/high/low/close) is missing or not a number"
    if min(o, h, lo, c) <= 0:
        return "prices must be positive"
    if h < lo:
        return f"high {h} is below low {lo}"
    if o > h or o < lo or c > h or c < lo:
        return f"open {o} / close {c} outside the bar's range [{lo}, {h}]"
    if spread < 0:
        return f"spread {spread} is negative"
    return None


PRICES = [1.2, 1.2005, 1.1995, 1.3, 1.1, 0.0, -1.0, math.nan]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(*(st.sampled_from(PRICES) for _ in range(4)), st.sampled_from([0.0, -0.1])),
        min_size=1,
        max_size=40,
    ),
    st.booleans(),
)
def test_each_candle_gets_the_first_reason_it_fails_sorted_or_not(rows, reverse):
    ts = pd.date_range(T0, periods=len(rows), freq="1min")
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close", "spread"]).assign(
        symbol="EURUSD", timeframe="1m", ts=ts
    )
    clean, quarantine, notes = validate_candles(frame.iloc[::-1] if reverse else frame)
    got = {q["row_id"].split("|")[2]: q["reason"] for q in quarantine}
    want = {t.isoformat(): candle_reason(*r) for t, r in zip(ts, rows)}
    assert got == {k: v for k, v in want.items() if v is not None}
    assert [t.isoformat() for t in clean["ts"]] == [k for k, v in want.items() if v is None]
    assert ("candles were not sorted; sorted by symbol, timeframe, ts" in notes) == (
        reverse and len(clean) > 1
    )
    assert clean["symbol"].dtype == object and np.all(clean["symbol"] == "EURUSD")


@pytest.mark.parametrize("dtype", [object, "str", pd.StringDtype("python")])
def test_repeated_missing_and_empty_ids_are_named_whatever_the_text_dtype(dtype):
    ids = pd.Series(["a", "b", "b", "", None, "c"], dtype=dtype)
    frame = pd.DataFrame(
        {"insight_id": ids, "created_at": T0, "symbol": "EURUSD", "side": "long",
         "entry_price": 1.2, "stop_loss": 1.19, "take_profit": 1.21}
    )
    clean, quarantine = validate_insights(frame)
    assert [(q["row"], q["reason"]) for q in quarantine] == [
        (1, "insight_id b appears 2 times; none of them is labeled"),
        (2, "insight_id b appears 2 times; none of them is labeled"),
        (3, "row 3: insight_id is missing"),
        (4, "row 4: insight_id is missing"),
    ]
    assert list(clean["insight_id"]) == ["a", "c"]


@pytest.mark.parametrize("dtype", [object, "str"])
def test_unique_ids_are_checked_without_a_python_string_per_arrow_id(dtype):
    frame = pd.DataFrame(
        {"insight_id": pd.Series(["x", "", "z"], dtype=dtype), "created_at": T0,
         "symbol": "EURUSD", "side": "short", "entry_price": 1.2}
    )
    clean, quarantine = validate_insights(frame)
    assert [(q["row_id"], q["reason"]) for q in quarantine] == [
        ("row 1", "row 1: insight_id is missing")
    ]
    assert list(clean["insight_id"]) == ["x", "z"]
    # arrow-backed ids stay arrow-backed (no object copy); object ids stay objects
    assert (clean["insight_id"].dtype == object) == (dtype is object)


@pytest.mark.parametrize("column, value", [("open", 9.0), ("spread", 0.5),
                                           ("ts", pd.Timestamp("2001-01-01", tz="UTC"))])
def test_clean_candles_and_the_callers_frame_are_edited_apart(column, value):
    """Clean input is kept without a copy, yet an edit of either frame stays in that frame."""
    given = flat_candles(pd.date_range(T0, periods=4, freq="1min").as_unit("ns"), spread=0.0)
    clean, quarantine, _ = validate_candles(given)
    assert not quarantine
    kept = clean.copy(deep=True)
    given.loc[0, column] = value  # the caller edits its frame: the clean one does not move
    pd.testing.assert_frame_equal(clean, kept)
    mine = validate_candles(kept)[0]
    mine.loc[1, column] = value  # and the clean frame can be edited without touching the input
    assert mine[column].iloc[1] == value and kept[column].iloc[1] != value


def test_clean_insights_and_the_callers_frame_are_edited_apart():
    given = pd.DataFrame({"insight_id": ["a", "b"], "created_at": T0, "symbol": "EURUSD",
                          "side": "long", "entry_price": 1.2, "stop_loss": 1.19,
                          "take_profit": 1.21})
    clean, quarantine = validate_insights(given)
    assert not quarantine
    kept = clean.copy(deep=True)
    given.loc[0, ["entry_price", "stop_loss"]] = [9.0, 8.0]
    pd.testing.assert_frame_equal(clean, kept)
    clean.loc[1, "take_profit"] = 7.0
    assert given["take_profit"].tolist() == [1.21, 1.21]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["EURUSD", "eurusd", " GBPUSD", "USDJPY", "NOPE"]),
            st.sampled_from(["1m", "1M", "5m", "", "7m"]),
            st.integers(200, 1500),
        ),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(0, 10**6), max_size=5),
    st.sampled_from(["str", object, "category"]),
)
def test_grouped_candles_are_judged_as_the_same_rows_shuffled(groups, bad_at, dtype):
    """Grouped candles (>= 4,096 rows: checked per run of rows sharing symbol and timeframe)
    give the clean frame, runs and quarantine of the same rows shuffled (checked row by row)."""
    parts = []
    for k, (sym, tf, n) in enumerate(groups):
        minutes = {"1m": 1, "1M": 1, "5m": 5, "": 1, "7m": 7}[tf]
        ts = T0 + pd.to_timedelta(np.arange(n) * minutes + k * 10**5, unit="min")
        parts.append(flat_candles(ts, sym, tf, spread=0.0))
    grouped = pd.concat(parts, ignore_index=True)
    for at in bad_at:  # a few bad prices inside the runs
        grouped.loc[at % len(grouped), "high"] = 1.0
    grouped["symbol"] = grouped["symbol"].astype(dtype)
    grouped["timeframe"] = grouped["timeframe"].astype(dtype)
    shuffled = grouped.sample(frac=1.0, random_state=1)
    (clean, q, _, runs), (want, want_q, _, want_runs) = (
        validate_candle_runs(frame) for frame in (grouped, shuffled)
    )
    pd.testing.assert_frame_equal(clean, want)
    assert np.array_equal(runs, want_runs)
    assert sorted((x["row_id"], x["reason"]) for x in q) == sorted(
        (x["row_id"], x["reason"]) for x in want_q
    )


def test_symbols_that_differ_only_in_case_or_spaces_are_one_run():
    ts = pd.date_range(T0, periods=6000, freq="1min")
    frame = flat_candles(ts, np.where(np.arange(6000) % 2, "eurusd", " EURUSD"))
    clean, quarantine, notes, runs = validate_candle_runs(frame)
    assert not quarantine and notes == () and runs.tolist() == [0]
    assert list(clean["symbol"].cat.categories) == ["EURUSD"] and len(clean) == 6000


@pytest.mark.parametrize(
    "dtype",
    [pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())), pd.ArrowDtype(pa.string_view())],
    ids=["arrow-dictionary", "arrow-string_view"],
)
def test_candles_with_arrow_text_pyarrow_cannot_run_length_encode(dtype):
    """Dictionary-encoded text (parquet read with the pyarrow backend) and string views: checked
    row by row, as the same candles with plain text are checked per run."""
    ts = pd.date_range(T0, periods=3000, freq="1min")
    frame = pd.concat([flat_candles(ts, sym) for sym in ("EURUSD", "GBPUSD")], ignore_index=True)
    want, _, _, want_runs = validate_candle_runs(frame)
    given = frame.astype({"symbol": dtype, "timeframe": dtype})
    clean, quarantine, notes, runs = validate_candle_runs(given)
    pd.testing.assert_frame_equal(clean, want)
    assert runs.tolist() == want_runs.tolist() == [0, 3000]
    assert not quarantine and notes == ()


@pytest.mark.parametrize("unit", ["ns", "us"])
@pytest.mark.parametrize("tz", ["UTC", "America/New_York", None])
def test_candle_times_as_arrow_timestamps_are_read_with_their_zone(tz, unit):
    ts = pd.date_range(T0, periods=3, freq="1min")
    frame = flat_candles(ts)
    arrow_ts = (ts.tz_convert(tz) if tz else ts.tz_localize(None)).astype(
        pd.ArrowDtype(pa.timestamp(unit, tz=tz))
    )
    given = frame.assign(ts=arrow_ts)
    if tz is None:  # naive times are refused, never taken as UTC
        with pytest.raises(InputError, match="timezone-naive"):
            validate_candles(given)
        return
    clean, quarantine, _ = validate_candles(given)
    assert not quarantine
    assert clean["ts"].dt.tz is not None and list(clean["ts"]) == list(ts)


@pytest.mark.parametrize("tz,unit", [("UTC", "ns"), ("UTC", "us"), ("Europe/Paris", "ns")])
def test_a_missing_created_at_is_named_whatever_the_zone_and_unit(tz, unit):
    created = pd.Series([T0, pd.NaT, T0 + pd.Timedelta(minutes=1)]).dt.tz_convert(tz)
    frame = pd.DataFrame({"insight_id": ["a", "b", "c"], "created_at": created.dt.as_unit(unit),
                          "symbol": "EURUSD", "side": "long", "entry_price": 1.2})
    clean, quarantine = validate_insights(frame)
    assert [(q["row_id"], q["reason"]) for q in quarantine] == [("b", "created_at is missing")]
    assert list(clean["created_at"]) == [T0, T0 + pd.Timedelta(minutes=1)]
    assert str(clean["created_at"].dtype) == "datetime64[ns, UTC]"
