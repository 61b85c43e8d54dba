"""Small array helpers for the vectorised core, where numpy's obvious call is slow.

Both exist because a labeling call builds many arrays of the size of its batch: the obvious
spelling costs milliseconds per array there (measured in benchmarks/bench_labeling.py).
"""

from __future__ import annotations

import numba
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


def take_text(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``values[codes]`` for an object array of a few distinct values: references to the one
    value when every code picks the same (`filled`, about twice as fast as the gather)."""
    if len(values) == 1 or (len(codes) and len(set(values.tolist())) == 1):
        return filled(len(codes), values[0])
    return values[codes]


def values_at(series: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``series.take(rows)`` as an object array, taken from the Series' array: the Series
    itself would build an index for the result (~10x slower for the few rows of run and block
    starts)."""
    return np.asarray(series.array.take(rows), dtype=object)


def factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize (missing values get -1), done on one integer per row for short arrow text
    (`short_text_factorize`), else on runs of equal neighbours when they are few
    (`text_runs`): candles arrive grouped by symbol and timeframe, and factorizing a handful of
    run values instead of 265,000 rows is several times faster."""
    if len(series) >= 4096:
        short = short_text_factorize(series)
        if short is not None:
            return short
    runs = text_runs(series)
    if runs is None:
        return pd.factorize(series, use_na_sentinel=True)
    starts, values = runs
    run_codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return np.repeat(run_codes, np.diff(starts, append=len(series))), uniques


def short_text_factorize(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """pd.factorize of arrow text of a few distinct values (at most 16), each at most 7 bytes
    long, none missing (symbols, sides, timeframes): each value's length and bytes are packed
    into one int64 (exact: two keys are equal exactly when the texts are) and looked up in a
    table of the keys met so far, in one compiled pass, ~2x faster than hashing the text. The
    same codes and uniques, in order of first appearance; None for other text."""
    if not isinstance(series.array, pd.arrays.ArrowExtensionArray):
        return None
    codes = np.empty(len(series), dtype=np.int64)
    table = np.empty(_SHORT_TEXT_VALUES, dtype=np.int64)
    found, at = 0, 0
    for chunk in series.array.__arrow_array__().chunks:
        n = len(chunk)
        if n == 0:  # (pd.concat with an empty frame leaves an empty chunk)
            continue
        buffers = _string_buffers(chunk)
        if chunk.null_count or buffers is None:
            return None
        offsets, data = buffers
        found = _short_text_codes(offsets, _words(data), codes[at : at + n], table, found)
        if found < 0:  # a longer value, or more distinct values than the table holds
            return None
        at += n
    uniques = np.empty(found, dtype=object)
    for k, key in enumerate(table[:found].tolist()):
        uniques[k] = bytes((key >> (8 * (b + 1))) & 0xFF for b in range(key & 0xFF)).decode()
    return codes, uniques


_SHORT_TEXT_VALUES = 16
_NO_BYTES = np.zeros(0, dtype=np.uint8)


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """(offsets, data bytes) of a non-empty arrow string or large_string array, as views of its
    buffers (the offsets index the data from its start); None for other types."""
    large = pa.types.is_large_string(arr.type)
    if not (large or pa.types.is_string(arr.type)):
        return None
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(
        offsets_buf, dtype=np.int64 if large else np.int32, count=len(arr) + 1,
        offset=arr.offset * (8 if large else 4),
    )
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else _NO_BYTES
    return offsets, data


@numba.njit(cache=True, nogil=True)
def _short_text_codes(offsets, words, codes, table, found):  # pragma: no cover - compiled
    """codes[i] = the position in ``table`` of value i's key (its length, then its bytes,
    packed from the low byte up: one read of `_word_at`), appended when new; returns how many
    keys the table holds, or -1 for a value longer than 7 bytes or a key that does not fit."""
    for i in range(len(codes)):
        start, end = offsets[i], offsets[i + 1]
        if end - start > 7:
            return -1
        key = np.int64((_word_at(words, start, end) << np.uint64(8)) | np.uint64(end - start))
        code = -1
        for k in range(found):
            if table[k] == key:
                code = k
                break
        if code < 0:
            if found == len(table):
                return -1
            table[found] = key
            code = found
            found += 1
        codes[i] = code
    return found


def _words(data: np.ndarray) -> np.ndarray:
    """Text bytes as little-endian words, padded by a zero word, for `_word_at`."""
    words = np.zeros(len(data) // 8 + 2, dtype=np.uint64)
    words.view(np.uint8)[: len(data)] = data
    return words


@numba.njit(cache=True, nogil=True, inline="always")
def _word_at(words, j, end):  # pragma: no cover - compiled
    """The up to 8 bytes data[j:end] of `_words` (data) as one little-endian word (zero above
    them), from two aligned words without a branch (shifting by 1 then by 63 - r never shifts
    by 64, which is undefined)."""
    q, r = j >> 3, np.uint64((j & 7) * 8)
    w = (words[q] >> r) | ((words[q + 1] << np.uint64(1)) << (np.uint64(63) - r))
    if end - j < 8:
        w &= (np.uint64(1) << np.uint64(8 * (end - j))) - np.uint64(1)
    return w


def text_runs(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """(where each run of equal neighbours starts, each run's value as an object array) of a
    column of at least 4,096 rows holding at most one run per 8 rows; None otherwise (ids,
    sides, short or unsorted columns, and arrow dictionary or string-view text, which pyarrow
    cannot run-length encode: the caller works per row).

    Arrow text whose values all have one byte length (symbols, timeframes) is compared as raw
    bytes, a whole-buffer comparison; other arrow text is run-length encoded by pyarrow (~4x
    slower); object arrays compare neighbours in one numpy pass, categoricals their codes.
    """
    n = len(series)
    if n < 4096 or not _few_runs(series.iloc[:1024]):
        return None
    limit = n // 8
    if isinstance(series.array, pd.arrays.ArrowExtensionArray):
        return _arrow_runs(series.array.__arrow_array__(), limit)
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        starts = _change_starts(codes, limit)
        if starts is None:
            return None
        return starts, values_at(series, starts)
    if series.dtype == object:
        values = series.to_numpy()
        starts = _change_starts(values, limit)
        return None if starts is None else (starts, values[starts])
    return None


def _arrow_runs(chunked: pa.ChunkedArray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`text_runs` of arrow text, chunk by chunk (joining the chunks would copy them)."""
    parts, value_parts, at = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=object)], 0
    for chunk in chunked.chunks:
        if not len(chunk):  # (pd.concat with an empty frame leaves an empty chunk)
            continue
        if chunk.null_count:
            return None
        starts = _fixed_width_run_starts(chunk, limit)
        if starts is None:
            try:
                ends = pc.run_end_encode(chunk).run_ends.to_numpy().astype(np.int64)
            except pa.ArrowNotImplementedError:  # (dictionary or string_view text: per row)
                return None
            starts = np.concatenate([[0], ends[:-1]])
        if len(starts) > limit:
            return None
        parts.append(starts + at)
        value_parts.append(chunk.take(starts).to_numpy(zero_copy_only=False).astype(object))
        at += len(chunk)
    starts, values = np.concatenate(parts), np.concatenate(value_parts)
    # a chunk starts a run only where its first value differs from the one before it
    change = np.ones(len(starts), dtype=bool)
    change[1:] = values[1:] != values[:-1]
    return (starts[change], values[change]) if len(starts) <= limit else None


def change_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal neighbours starts: row 0 and every row that differs from the
    row before it (none for no rows)."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1]).astype(np.int64)


def _change_starts(values: np.ndarray, limit: int) -> np.ndarray | None:
    """`change_starts`; None past ``limit`` runs."""
    starts = change_starts(values)
    return starts if len(starts) <= limit else None


def _fixed_width_run_starts(arr: pa.Array, limit: int) -> np.ndarray | None:
    """`text_runs`' starts of a null-free arrow string array whose values all have the same
    byte length, from the raw buffers: row i starts a run where its bytes differ from row
    i - 1's, so one comparison of the data against itself shifted by one value finds every
    run; None for values of several lengths or past ``limit`` runs."""
    buffers = _string_buffers(arr)
    if buffers is None:
        return None
    offsets, data = buffers
    n = len(arr)
    first, last = int(offsets[0]), int(offsets[-1])
    width = (last - first) // n
    if width * n != last - first or (np.diff(offsets) != width).any():
        return None
    if width == 0:
        return np.zeros(1, dtype=np.int64)
    data = data[first:last]
    differs = np.flatnonzero(data[width:] != data[:-width])
    if len(differs) >= limit * width:  # a changed row differs in at most `width` bytes
        return None
    return np.concatenate([[0], np.unique(differs // width) + 1]).astype(np.int64)


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

    Keys that span a small range (rule and scope combinations, day offsets, hole thresholds)
    are coded in one compiled pass through a table indexed by value; others by hashing
    (pd.factorize), still a few times faster than np.unique's sort for 50,000 keys. Codes are
    numbered in order of first appearance; callers use them only to group equal values.
    """
    values = np.asarray(values)
    if not len(values):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 4 * len(values) + 4096:
        return _distinct_small(values.astype(np.int64, copy=False), lo, hi - lo + 1)
    codes, _ = pd.factorize(values)
    seen_max = np.maximum.accumulate(np.concatenate([[-1], codes[:-1]]))
    return codes, np.flatnonzero(codes > seen_max)


@numba.njit(cache=True, nogil=True)
def _distinct_small(values, lo, span):  # pragma: no cover - compiled
    """`distinct` of values in [lo, lo + span): each value's code kept in a table of span
    slots (one pass; in numpy it took five passes over the values)."""
    slot = np.full(span, -1, dtype=np.int64)
    codes = np.empty(len(values), dtype=np.int64)
    first = np.empty(len(values), dtype=np.int64)
    k = 0
    for i in range(len(values)):
        v = values[i] - lo
        c = slot[v]
        if c < 0:
            c = slot[v] = k
            first[k] = i
            k += 1
        codes[i] = c
    return codes, first[:k].copy()


def text_all_distinct(arr: pa.Array) -> tuple[bool, np.ndarray] | None:
    """(whether no two values are equal, which values are empty) of a null-free arrow string
    array, in one compiled pass over its buffers: each value is hashed 8 bytes at a time into
    an open-addressing table, and only values with equal hashes are compared byte by byte
    (several times faster than pyarrow's unique, which builds the distinct values). None for
    other arrays, and for hashes that collide so often that the pass would degrade to comparing
    most pairs (the caller then falls back to pyarrow)."""
    fits = 0 < len(arr) < 2**32 - 1  # (a slot keeps the row + 1 in 32 bits)
    buffers = _string_buffers(arr) if fits and not arr.null_count else None
    if buffers is None:
        return None
    offsets, data = buffers
    empty = np.empty(len(arr), dtype=np.bool_)
    verdict = _text_all_distinct(offsets, _words(data), empty)
    return None if verdict < 0 else (bool(verdict), empty)


@numba.njit(cache=True, nogil=True)
def _text_all_distinct(offsets, words, empty):  # pragma: no cover - compiled
    """1 when the values (bytes offsets[i]:offsets[i + 1] of ``words``) are all different, 0
    at the first repeat, -1 when the probes exceed 16 per value (pathological hashes); fills
    ``empty``. A value's hash folds its words in FNV-style, then its length, then murmur3's
    finaliser (so that the low bits, which pick the slot, depend on every byte); a slot keeps
    the hash's high 32 bits and the row + 1 (0: free). All hashes first, then the table: two
    simple loops run faster than one that does both."""
    n = len(offsets) - 1
    hashes = np.empty(n, dtype=np.uint64)
    for i in range(n):
        a, b = offsets[i], offsets[i + 1]
        empty[i] = a == b
        h = np.uint64(14695981039346656037)
        j = a
        while j < b:  # (a while loop: numba's stepped range costs 3x here)
            h = (h ^ _word_at(words, j, b)) * np.uint64(1099511628211)
            j += 8
        h ^= np.uint64(b - a)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xC4CEB9FE1A85EC53)
        hashes[i] = h ^ (h >> np.uint64(33))
    size = 1
    while size < 2 * n:  # at most half full: short probe sequences
        size *= 2
    mask = np.uint64(size - 1)
    slots = np.zeros(size, dtype=np.uint64)
    probes, budget = 0, 16 * n + 1024
    for i in range(n):
        h = hashes[i]
        tag, s = h >> np.uint64(32), h & mask
        while True:
            slot = slots[s]
            if slot == 0:
                slots[s] = (tag << np.uint64(32)) | np.uint64(i + 1)
                break
            if slot >> np.uint64(32) == tag:  # the same hash: compare the bytes
                r = np.int64(slot & np.uint64(0xFFFFFFFF)) - 1
                a, b, c, d = offsets[i], offsets[i + 1], offsets[r], offsets[r + 1]
                same, k = d - c == b - a, 0
                while same and k < b - a:
                    same = _word_at(words, c + k, d) == _word_at(words, a + k, b)
                    k += 8
                if same:
                    return 0
            probes += 1
            if probes > budget:
                return -1
            s = (s + np.uint64(1)) & mask
    return 1
