"""Small array helpers for the vectorised core, where numpy's obvious call is slow.

Both exist because a labeling call builds many arrays of the size of its batch: the obvious
spelling costs milliseconds per array there (measured in benchmarks/bench_labeling.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


UTC_NS = pd.DatetimeTZDtype("ns", "UTC")  # the one dtype autopsy keeps times in


def utc_index(ns: np.ndarray) -> pd.DatetimeIndex:
    """int64 ns since the epoch (NaT = int64 min) as a tz-aware UTC DatetimeIndex in ns."""
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), dtype=UTC_NS)


def filled(n: int, value) -> np.ndarray:
    """An object array of ``n`` references to one ``value``.

    ``np.full(n, "text", dtype=object)`` goes through a fixed-width string array and creates
    ``n`` separate string objects (~5 ms for 50,000); this fills references (~0.2 ms).
    """
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize (missing values get -1), done on runs of equal neighbours when they are few.

    Candles arrive grouped by symbol and timeframe: 265,000 rows are a handful of runs, and
    factorizing the run values instead of every row is several times faster. Arrow-backed text
    is run-length encoded by pyarrow; object arrays compare neighbours in one numpy pass.
    """
    n = len(series)
    if n < 4096 or not _few_runs(series.iloc[:1024]):  # (unsorted ids or sides: no runs)
        return pd.factorize(series, use_na_sentinel=True)
    run_values, run_lengths = None, None
    whole = arrow_array(series)
    if whole is not None:
        if len(whole) == n and whole.null_count == 0:
            encoded = pc.run_end_encode(whole)
            ends = encoded.run_ends.to_numpy().astype(np.int64)
            if len(ends) <= n // 8:
                run_values = encoded.values.to_numpy(zero_copy_only=False).astype(object)
                run_lengths = np.diff(ends, prepend=0)
    elif series.dtype == object:
        values = series.to_numpy()
        change = np.ones(n, dtype=bool)
        change[1:] = values[1:] != values[:-1]
        starts = np.flatnonzero(change)
        if len(starts) <= n // 8:
            run_values = values[starts]
            run_lengths = np.diff(starts, append=n)
    if run_values is None:
        return pd.factorize(series, use_na_sentinel=True)
    run_codes, uniques = pd.factorize(run_values, use_na_sentinel=True)
    return np.repeat(run_codes, run_lengths), uniques


def arrow_array(series: pd.Series) -> pa.Array | None:
    """The pyarrow array behind an arrow-backed Series, in one chunk; None for other data
    (numpy or Python objects, which arrow would have to copy)."""
    if not isinstance(series.array, pd.arrays.ArrowExtensionArray):
        return None
    chunked = series.array.__arrow_array__()
    if not isinstance(chunked, pa.ChunkedArray):
        return chunked
    # (combine_chunks copies even a single chunk: 265,000 symbols cost a millisecond)
    return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()


def _few_runs(head: pd.Series) -> bool:
    """Whether a sample holds long runs of equal neighbours (at most one change in 16)."""
    values = head.to_numpy(dtype=object)
    return int(np.count_nonzero(values[1:] != values[:-1])) <= len(values) // 16


def distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code per element, the index of one element of each code) of an int64 array.

    Keys that span a small range (rule and scope combinations, day offsets) are coded by
    value in a few array passes; others by hashing (pd.factorize), still a few times faster
    than np.unique's sort for 50,000 keys. Callers use the codes only to group equal values.
    """
    values = np.asarray(values)
    if not len(values):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 4 * len(values) + 4096:
        offset = values - lo
        present = np.zeros(hi - lo + 1, dtype=np.bool_)
        present[offset] = True
        codes = (np.cumsum(present) - 1)[offset]
        first = np.empty(int(codes.max()) + 1, dtype=np.int64)
        first[codes] = np.arange(len(values))  # any element of a code represents it
        return codes, first
    codes, _ = pd.factorize(values)
    seen_max = np.maximum.accumulate(np.concatenate([[-1], codes[:-1]]))
    return codes, np.flatnonzero(codes > seen_max)
