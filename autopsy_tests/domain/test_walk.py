"""The compiled first-touch walk against a per-bar loop, on series long enough that whole fine
(16-bar) and coarse (256-bar) blocks are skipped; and the array helpers against pandas."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from autopsy_assets.api import label_outcomes
from autopsy_assets.domain import settle
from autopsy_assets.domain.arrays import (
    distinct,
    factorize,
    filled,
    short_text_factorize,
    take_text,
    text_all_distinct,
    text_runs,
)
from autopsy_assets.domain.walk import COARSE, FINE, BlockTables


def slow_walk(low, high, start, end, lower, upper):
    """Obvious reference: bar by bar from start, stop at the first touch."""
    lo, hi = np.inf, -np.inf
    for j in range(start, end):
        if low[j] <= lower or high[j] >= upper:
            return j, low[j] <= lower, high[j] >= upper, lo, hi
        lo, hi = min(lo, low[j]), max(hi, high[j])
    return end, False, False, lo, hi


@st.composite
def walks(draw):
    n = draw(st.integers(1, 3 * COARSE + 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mid = 100 + np.cumsum(rng.normal(0, draw(st.sampled_from([0.05, 0.3, 1.0])), n))
    half = np.abs(rng.normal(0, 0.2, n)) + draw(st.sampled_from([0.0, 0.01]))
    low, high = mid - half, mid + half
    k = draw(st.integers(1, 40))
    start = rng.integers(0, n + 1, k)
    end = np.minimum(start + rng.integers(0, n + 1, k), n)
    ref = mid[np.minimum(start, n - 1)]
    lower = ref - rng.uniform(0, draw(st.sampled_from([0.5, 3.0, 30.0])), k)
    upper = ref + rng.uniform(0, draw(st.sampled_from([0.5, 3.0, 30.0])), k)
    blank = rng.random(k)
    lower[blank < 0.1] = -np.inf  # a blank level is never touched
    upper[blank > 0.9] = np.inf
    return low, high, start, end, lower, upper


@settings(max_examples=200, deadline=None)
@given(walks())
def test_walk_matches_a_per_bar_loop(case):
    low, high, start, end, lower, upper = case
    got = BlockTables(low, high).walk(start, end, lower, upper)
    for r in range(len(start)):
        want = slow_walk(low, high, int(start[r]), int(end[r]), lower[r], upper[r])
        assert tuple(g[r] for g in got) == want, (r, start[r], end[r])


def test_walk_skips_blocks_and_still_finds_the_one_touching_bar():
    n = 5 * COARSE
    low, high = np.full(n, 99.0), np.full(n, 101.0)
    low[3 * COARSE + FINE + 3] = 90.0  # deep inside the fourth coarse block
    high[: COARSE] = np.linspace(101, 102, COARSE)  # extremes before the touch are tracked
    j, lower_hit, upper_hit, lo, hi = BlockTables(low, high).walk(
        np.array([1, 3 * COARSE + FINE + 4, 0]),
        np.array([n, n, 3 * COARSE]),
        np.array([95.0, 95.0, 95.0]),
        np.array([105.0, 105.0, 105.0]),
    )
    assert j.tolist() == [3 * COARSE + FINE + 3, n, 3 * COARSE]
    assert lower_hit.tolist() == [True, False, False] and not upper_hit.any()
    assert lo.tolist() == [99.0, 99.0, 99.0]
    assert hi[0] == 102.0 and hi[1] == 101.0 and hi[2] == 102.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["EURUSD", "GBPUSD", "", None, "x"]), min_size=1, max_size=30),
    st.integers(1, 600),
    st.booleans(),
)
def test_run_factorize_equals_pandas(values, repeat, arrow):
    # runs of equal neighbours (sorted candles) take the run-length path past 4,096 rows
    series = pd.Series(np.repeat(np.asarray(values, dtype=object), repeat), dtype=object)
    if arrow:
        series = series.astype("str")
    codes, uniques = factorize(series)
    want_codes, want_uniques = pd.factorize(series, use_na_sentinel=True)
    assert np.array_equal(codes, want_codes)
    assert list(np.asarray(uniques, dtype=object)) == list(np.asarray(want_uniques, dtype=object))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.text(max_size=9), min_size=1, max_size=20, unique=True),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.integers(1, 3),
)
@example(list("abcdefghijklmnopq"), 0, False, 1)  # 17 values: one more than the table holds
@example(["a", "a\x00", "", "\x00"], 1, False, 2)  # equal bytes, other lengths
def test_short_text_factorize_equals_pandas(values, seed, with_missing, chunks):
    # short text (up to 7 bytes, up to 16 values: multibyte characters too) is factorized on
    # packed integer keys; anything else is left to pandas (None)
    picks = np.random.default_rng(seed).integers(0, len(values), 4096 + seed % 100)
    rows = [values[i] for i in picks.tolist()]
    if with_missing:
        rows[len(rows) // 2] = None
    # (an empty chunk first, as pd.concat with an empty frame leaves)
    parts = [np.asarray([], dtype=object), *np.array_split(np.asarray(rows, dtype=object), chunks)]
    series = pd.concat([pd.Series(part, dtype="str") for part in parts], ignore_index=True)
    want_codes, want_uniques = pd.factorize(series, use_na_sentinel=True)
    short = short_text_factorize(series)
    used = set(rows)
    takes_it = not with_missing and len(used) <= 16 and all(len(v.encode()) <= 7 for v in used)
    assert (short is not None) == takes_it
    codes, uniques = factorize(series)
    assert np.array_equal(codes, want_codes)
    assert list(np.asarray(uniques, dtype=object)) == list(np.asarray(want_uniques, dtype=object))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(max_size=20), min_size=1, max_size=60),
    st.sampled_from(["string", "large_string"]),
    st.integers(0, 3),
)
@example(["abcdefgh", "abcdefghi", "abcdefgh\x00"], "string", 0)  # a word's worth, then more
@example(["", "x", ""], "large_string", 0)  # two empty values are a repeat
@example(["same-prefix-1", "same-prefix-2", "same-prefix-1"], "string", 1)
def test_text_all_distinct_equals_a_set(values, kind, skip):
    # values are hashed a word at a time from any byte offset (a sliced array starts mid-buffer)
    # and compared byte by byte on equal hashes: the verdict is the set's, whatever the lengths
    arr = pa.array(["padding"] * skip + values, type=getattr(pa, kind)()).slice(skip)
    distinct_, empty = text_all_distinct(arr)
    assert distinct_ == (len(set(values)) == len(values))
    assert empty.tolist() == [v == "" for v in values]
    assert text_all_distinct(pa.array(values + [None], type=pa.string())) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-5, 40), min_size=1, max_size=60),
    st.sampled_from([1, 10**12]),  # a small range (coded by value) and a huge one (hashed)
)
def test_distinct_groups_equal_values_and_names_one_row_of_each(values, scale):
    values = np.array(values, dtype=np.int64) * scale
    codes, first = distinct(values)
    # one code per distinct value, numbered 0..k-1, and a representative row of each
    assert sorted(set(codes.tolist())) == list(range(len(set(values.tolist()))))
    assert len(first) == len(set(values.tolist()))
    assert np.array_equal(values[first][codes], values)
    for a in range(len(values)):  # equal values, equal codes; different values, different ones
        assert ((values == values[a]) == (codes == codes[a])).all()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(-1000, 1000)), min_size=1, max_size=60),
    # hours, decades, up to 585 years apart (beyond the int64 range of differences)
    st.sampled_from([10**10, 10**15, 9 * 10**15]),
)
def test_rows_are_read_by_candle_set_then_time_then_position(rows, scale):
    from autopsy_assets.domain.labeling import _read_order

    group = np.array([g for g, _ in rows], dtype=np.int64)
    created = np.array([t for _, t in rows], dtype=np.int64) * scale
    since = np.array([(t - min(t for _, t in rows)) * scale >> 36 for _, t in rows])
    want = np.lexsort((np.arange(len(rows)), since, group))
    assert _read_order(group, created).tolist() == want.tolist()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(-4 * 86_400, 4 * 86_400), min_size=1, max_size=50),
    st.lists(st.integers(0, 49), max_size=4),
)
def test_day_blocks_start_at_each_run_and_each_new_utc_day(seconds, runs):
    from autopsy_assets.domain.replay import _day_blocks

    ts_ns = np.sort(np.array(seconds, dtype=np.int64)) * 10**9  # (days before 1970 too)
    run_starts = np.array(sorted({0, *(r for r in runs if r < len(ts_ns))}), dtype=np.int64)
    day = 86_400 * 10**9
    days = [t // day * day for t in ts_ns.tolist()]  # (Python's floor, as UTC midnight is)
    want = [i for i in range(len(days))
            if i == 0 or days[i] != days[i - 1] or i in set(run_starts.tolist())]
    starts, block_days = _day_blocks(ts_ns, run_starts)
    assert starts.tolist() == want
    assert block_days.tolist() == [days[i] for i in want]


def test_distinct_of_nothing():
    codes, first = distinct(np.array([], dtype=np.int64))
    assert len(codes) == 0 and len(first) == 0


def test_filled_shares_one_object():
    a = filled(5, "pending")
    assert a.dtype == object and a.tolist() == ["pending"] * 5
    assert all(x is a[0] for x in a)


def test_take_text_gathers_and_fills_one_value():
    codes = np.array([1, 0, 1, 2])
    many = take_text(np.array(["a", "b", "c"], dtype=object), codes)
    assert many.tolist() == ["b", "a", "b", "c"]
    one = take_text(np.array(["m1", "m1", "m1"], dtype=object), codes)
    assert one.tolist() == ["m1"] * 4 and all(x is one[0] for x in one)
    one[0] = "edited"  # (an array of its own)
    assert take_text(np.array(["m1"], dtype=object), codes[:2]).tolist() == ["m1", "m1"]


# --- one pass over many candle sets ------------------------------------------------------------


@st.composite
def mixed_batches(draw):
    """Several symbols, each with 1-minute candles and, over a later span, hourly ones; insights
    of every symbol interleaved in time, some created before or after the candles."""
    from autopsy_assets.data.insights_gen import generate_insights
    from autopsy_assets.data.market import generate_market, resample

    seed = draw(st.integers(0, 10_000))
    symbols = draw(st.sets(st.sampled_from(["EURUSD", "USDJPY", "XAUUSD", "BTCUSD"]),
                           min_size=2, max_size=4))
    minute = generate_market(sorted(symbols), weeks=1, seed=seed)
    later = generate_market(sorted(symbols), start="2018-03-12", weeks=1, seed=seed + 1)
    hourly = resample(later, "1h")
    candles = pd.concat([minute, hourly], ignore_index=True)
    insights = generate_insights(pd.concat([minute, later], ignore_index=True),
                                 per_symbol_per_day=draw(st.sampled_from([1, 3])), seed=seed,
                                 include_bad_rows=False)
    horizons = draw(st.sampled_from([("1H",), ("4H", "24H"), ("1H", "4H", "24H", "7D")]))
    return candles, insights, horizons


@settings(max_examples=12, deadline=None)
@given(mixed_batches())
def test_a_mixed_batch_labels_each_symbol_as_it_would_alone(case):
    from autopsy_assets.api import label_outcomes

    candles, insights, horizons = case
    together = label_outcomes(insights, candles, horizons=horizons)
    alone = pd.concat(
        [
            label_outcomes(insights[insights["symbol"] == sym], candles[candles["symbol"] == sym],
                           horizons=horizons)
            for sym in sorted(insights["symbol"].unique())
        ],
        ignore_index=True,
    )
    key = ["insight_id", "horizon"]
    together = together.sort_values(key).reset_index(drop=True)
    alone = alone.sort_values(key).reset_index(drop=True)
    assert len(together) == len(insights) * len(horizons)
    assert set(together["candle_timeframe"]) >= {"1m"}
    pd.testing.assert_frame_equal(together, alone)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 30), max_size=40),
    st.data(),
)
def test_gallop_search_equals_searchsorted_from_any_hint(values, data):
    from autopsy_assets.domain.settle import _bisect, _gallop

    a = np.sort(np.asarray(values, dtype=np.int64))
    lo = data.draw(st.integers(0, len(a)))
    hi = data.draw(st.integers(lo, len(a)))
    v = data.draw(st.integers(-2, 32))
    hint = data.draw(st.integers(-3, len(a) + 3))
    for right in (False, True):
        want = lo + np.searchsorted(a[lo:hi], v, side="right" if right else "left")
        assert _bisect(a, lo, hi, v, right) == want
        assert _gallop(a, lo, hi, hint, v, right) == want, (a, lo, hi, hint, v, right)


def test_a_batch_settled_on_two_threads_equals_its_rows_settled_alone():
    """Batches of 4,096 rows and more are settled in two halves on two threads; labeling the
    same insights in small single-threaded batches gives the same audits, row for row."""
    from autopsy_assets.api import label_outcomes
    from autopsy_assets.data import generate_insights, generate_market

    candles = generate_market(weeks=2, symbols=("EURUSD", "USDJPY"))
    insights = generate_insights(candles, per_symbol_per_day=150, include_bad_rows=False)
    assert len(insights) * 2 >= 4096
    whole = label_outcomes(insights, candles, horizons=("1H", "24H"))
    parts = pd.concat(
        [
            label_outcomes(insights.iloc[k : k + 500], candles, horizons=("1H", "24H"))
            for k in range(0, len(insights), 500)
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(whole, parts, check_exact=True)
    assert set(whole["outcome"]) >= {"succeeded", "failed"}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["EURUSD", "GBPUSD", "AB", "", "XAUUSD"]), min_size=1, max_size=12),
    st.integers(1, 1500),
    st.sampled_from(["str", "str-chunked", object, "category"]),
    st.integers(0, 40),
)
def test_text_runs_are_the_changes_between_neighbours(values, repeat, kind, skip):
    values = np.repeat(np.asarray(values, dtype=object), repeat)[skip:]
    if kind == "str-chunked":  # (arrow text in several chunks, runs across their edges, and
        # an empty chunk, as pd.concat with an empty frame leaves)
        parts = [values[:0], *np.array_split(values, 3)]
        series = pd.concat([pd.Series(part, dtype="str") for part in parts], ignore_index=True)
    else:
        series = pd.Series(values, dtype=kind)
    changes = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
    runs = text_runs(series)
    if len(values) < 4096 or len(changes) > len(values) // 8:
        assert runs is None
    elif runs is not None:  # (None only where a sample of the head shows no long runs)
        starts, run_values = runs
        assert starts.tolist() == changes.tolist()
        assert run_values.tolist() == values[changes].tolist()
    else:
        head = values[:1024]
        assert np.count_nonzero(head[1:] != head[:-1]) > len(head) // 16


def test_settles_compiled_code_older_than_the_walk_is_dropped(tmp_path):
    """settle compiles the walk into itself: its cache must not outlive a change of walk.py."""
    ts = pd.date_range("2018-03-06 10:00", periods=120, freq="1min", tz="UTC")
    candles = pd.DataFrame({"symbol": "EURUSD", "timeframe": "1m", "ts": ts, "open": 1.2,
                            "high": 1.201, "low": 1.199, "close": 1.2})
    insight = pd.DataFrame({"insight_id": ["a"], "created_at": [ts[0]], "symbol": "EURUSD",
                            "side": "long", "entry_price": 1.2})
    label_outcomes(insight, candles, horizons=("1H",))  # settle is compiled (or loaded) and cached
    index = Path(settle.settle._cache._cache_file._index_path)
    saved, stat = index.read_bytes(), index.stat()
    older, newer = tmp_path / "older.py", tmp_path / "newer.py"
    for path, shift in ((older, -10), (newer, 10)):
        path.write_text("")
        os.utime(path, (stat.st_mtime + shift, stat.st_mtime + shift))
    try:
        assert settle.drop_cache_older_than(str(older), settle.settle) == []
        assert index.read_bytes() == saved
        assert settle.drop_cache_older_than(str(newer), settle.settle) == [str(index)]
        assert len(index.read_bytes()) < len(saved)  # an empty index: the next process compiles
    finally:  # (the real cache stays for the rest of the suite)
        index.write_bytes(saved)
        os.utime(index, (stat.st_atime, stat.st_mtime))
