"""Content-addressed candle blocks: how an audit's candles are stored once and re-read exactly.

Candles are cut into blocks of one (symbol, timeframe, UTC day). A block's bytes are its columns,
little-endian, in a fixed order (ts as int64 ns, then open, high, low, close, volume, spread as
float64; an absent volume or spread is NaN), and its hash is the sha256 of those bytes. An audit
keeps the hashes of the blocks its window read; replay fetches the blocks by hash and re-labels.
Raw bytes, never JSON: hashing JSON is about 60x slower and float formatting is not canonical.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading

import numba
import numpy as np
import pandas as pd
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from autopsy_assets.domain.arrays import utc_index, values_at

BLOCK_COLUMNS = ("ts", "open", "high", "low", "close", "volume", "spread")
_PRICE_COLUMNS = BLOCK_COLUMNS[1:]
_NS_PER_DAY = 86_400 * 10**9


# a fresh sha256 state that each hash starts as a copy of: with OpenSSL 3, hashlib.sha256() looks
# the algorithm up on every call, which costs twice the hashing of a short text (a labeling
# call hashes ~1,300 short texts: rule snapshots, block lists, snapshot pairs)
_SHA256 = hashlib.sha256()


def sha256():
    """A new sha256 hash object (a copy of a fresh state, without the lookup)."""
    return _SHA256.copy()


def sha256_hex(data: bytes | str) -> str:
    h = sha256()
    h.update(data.encode() if isinstance(data, str) else data)
    return h.hexdigest()


def encode_block(ts_ns: np.ndarray, cols: dict[str, np.ndarray]) -> bytes:
    """The canonical bytes of one block: ts (<i8) then each price column (<f8), column-major."""
    n = len(ts_ns)
    parts = [np.ascontiguousarray(ts_ns, dtype="<i8").tobytes()]
    for name in _PRICE_COLUMNS:
        arr = cols.get(name)
        if arr is None:
            arr = np.full(n, np.nan)
        parts.append(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    return b"".join(parts)


def decode_block(payload: bytes) -> pd.DataFrame:
    """Inverse of `encode_block`: a DataFrame with BLOCK_COLUMNS, ts tz-aware UTC (ns)."""
    n = len(payload) // (8 * len(BLOCK_COLUMNS))
    if n * 8 * len(BLOCK_COLUMNS) != len(payload):
        raise ValueError(
            f"corrupt candle block: {len(payload)} bytes is not a whole number of rows"
        )
    ts = np.frombuffer(payload, dtype="<i8", count=n, offset=0)
    data: dict[str, object] = {"ts": utc_index(ts)}
    for i, name in enumerate(_PRICE_COLUMNS, start=1):
        data[name] = np.frombuffer(payload, dtype="<f8", count=n, offset=8 * n * i).copy()
    return pd.DataFrame(data)


def candle_runs(candles: pd.DataFrame) -> np.ndarray:
    """Where each (symbol, timeframe) run of sorted candles starts, by comparing neighbours
    (validation.validate_candle_runs returns them without comparing text)."""
    if candles.empty:
        return np.empty(0, dtype=np.int64)
    sym = candles["symbol"].to_numpy(dtype=object)
    tf = candles["timeframe"].to_numpy(dtype=object)
    change = np.flatnonzero((sym[1:] != sym[:-1]) | (tf[1:] != tf[:-1])) + 1
    return np.concatenate([[0], change]).astype(np.int64)


def _block_bounds(candles: pd.DataFrame, run_starts: np.ndarray | None = None):
    """(ts_ns, starts, ends, symbols, timeframes, days) of the day blocks of sorted candles:
    where each block starts and ends, its symbol, timeframe and UTC day (int64 ns).

    ``run_starts``: where each (symbol, timeframe) run begins (`candle_runs` when None).
    """
    ts_ns = candles["ts"].to_numpy(dtype="datetime64[ns]").view("int64")
    run_starts = candle_runs(candles) if run_starts is None else run_starts
    starts, days = _day_blocks(ts_ns, np.sort(np.asarray(run_starts, dtype=np.int64)))
    ends = np.append(starts[1:], len(candles))
    # read at each block's first row only (a full object copy of 265,000 rows costs ~3 ms)
    sym = values_at(candles["symbol"], starts)
    tf = values_at(candles["timeframe"], starts)
    return ts_ns, starts, ends, sym, tf, days


@numba.njit(cache=True, nogil=True)
def _day_blocks(ts_ns, run_starts):  # pragma: no cover - compiled
    """(first row, UTC day) of each block: a block starts at row 0, at each run start and
    where the UTC day changes; one pass (in numpy: five passes over the rows). The day's
    length is a compile-time constant: a division by it is a multiplication."""
    starts, days = np.empty(len(ts_ns), np.int64), np.empty(len(ts_ns), np.int64)
    m, r, previous = 0, 0, 0
    for i in range(len(ts_ns)):
        d = ts_ns[i] - ts_ns[i] % _NS_PER_DAY  # (floored, as numpy's is, before 1970 too)
        new = i == 0 or d != previous
        while r < len(run_starts) and run_starts[r] <= i:
            new = new or run_starts[r] == i
            r += 1
        if new:
            starts[m], days[m] = i, d
            m += 1
        previous = d
    return starts[:m].copy(), days[:m].copy()


def _columns(candles: pd.DataFrame, n: int) -> list[np.ndarray]:
    return [
        np.ascontiguousarray(candles[c].to_numpy(dtype=float), dtype="<f8")
        if c in candles
        else np.full(n, np.nan, dtype="<f8")
        for c in _PRICE_COLUMNS
    ]


def split_blocks(candles: pd.DataFrame) -> pd.DataFrame:
    """Cut clean candles (symbol, timeframe, ts, prices) into blocks of one UTC day.

    Returns one row per block: symbol, timeframe, day (UTC midnight Timestamp), n_rows, sha256,
    payload. Candles must be sorted by (symbol, timeframe, ts) and free of duplicates.
    """
    cols_out = ["symbol", "timeframe", "day", "n_rows", "sha256", "payload"]
    if candles.empty:
        return pd.DataFrame(columns=cols_out)
    ts_ns, starts, ends, sym, tf, days = _block_bounds(candles)
    cols = _columns(candles, len(candles))
    rows = []
    for k, (a, b) in enumerate(zip(starts, ends)):  # one iteration per block (a day)
        payload = encode_block(ts_ns[a:b], dict(zip(_PRICE_COLUMNS, (c[a:b] for c in cols))))
        rows.append(
            (
                sym[k],
                tf[k],
                pd.Timestamp(int(days[k]), tz="UTC"),
                int(b - a),
                sha256_hex(payload),
                payload,
            )
        )
    return pd.DataFrame(rows, columns=cols_out)


# --- sha256 of the blocks without the GIL ------------------------------------------------------
# hashlib releases the GIL only inside one update: hashing a block's seven column slices takes
# seven updates, and before each the hashing thread must win the GIL back from the thread that
# prepares the insights (~1,300 handoffs per call; measured: 14 ms alone, 140+ ms beside a
# thread that holds the GIL). The same OpenSSL functions hashlib calls (libcrypto's SHA256_Init,
# _Update and _Final, reached through the _hashlib module's own link to it, so the digests are
# OpenSSL's) are called instead from a compiled loop that holds no GIL for a whole piece of
# blocks. Where they cannot be found, hashlib does the work as before.


def _openssl_sha256() -> np.ndarray | None:
    """The addresses of SHA256_Init, SHA256_Update and SHA256_Final in the libcrypto that
    hashlib uses, as int64 (what the compiled loop takes); None where they are not exported
    (then hashlib hashes)."""
    if ctypes.sizeof(ctypes.c_void_p) != 8:  # (the compiled calls pass 64-bit addresses)
        return None
    try:
        import _hashlib

        lib = ctypes.CDLL(_hashlib.__file__)  # (its symbols and those of what it links to)
        names = ("SHA256_Init", "SHA256_Update", "SHA256_Final")
        addresses = [ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in names]
        return np.array(addresses, dtype=np.int64)
    except (ImportError, OSError, AttributeError):
        return None


_SHA256_FUNCTIONS = _openssl_sha256()
_SHA256_CTX_BYTES = 256  # (OpenSSL's SHA256_CTX is 112 bytes: room to spare)


def _c_codegen(n_pointers: int, sized: bool):
    """LLVM for ``int f(void *, ..., [size_t])`` called at an address (int64), the pointers
    given as int64 addresses: the address is an argument, not a constant, so the functions that
    call it can be cached."""

    def codegen(context, builder, signature, args):  # pragma: no cover - compiled
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [i8p] * n_pointers + [ir.IntType(64)] * sized)
        target = builder.inttoptr(args[0], fnty.as_pointer())
        pointers = [builder.inttoptr(v, i8p) for v in args[1 : 1 + n_pointers]]
        return builder.call(target, pointers + list(args[1 + n_pointers :]))

    return codegen


@intrinsic
def _sha_init(typingctx, fn, ctx):  # pragma: no cover - compiled
    return types.int32(fn, ctx), _c_codegen(1, False)


@intrinsic
def _sha_update(typingctx, fn, ctx, data, size):  # pragma: no cover - compiled
    return types.int32(fn, ctx, data, size), _c_codegen(2, True)


@intrinsic
def _sha_final(typingctx, fn, digest, ctx):  # pragma: no cover - compiled
    return types.int32(fn, digest, ctx), _c_codegen(2, False)


@numba.njit(cache=True, nogil=True)
def _sha256_blocks(functions, columns, starts, ends, digests):  # pragma: no cover - compiled
    """digests[k] = sha256 of rows starts[k]:ends[k] of each column in turn (``columns``: the
    addresses of 8-byte columns; ``functions``: SHA256_Init, _Update, _Final)."""
    ctx = np.zeros(_SHA256_CTX_BYTES, dtype=np.uint8)
    at = ctx.ctypes.data
    for k in range(len(starts)):
        a, b = starts[k], ends[k]
        ok = _sha_init(functions[0], at)
        for c in range(len(columns)):
            ok &= _sha_update(functions[1], at, columns[c] + 8 * a, np.int64(8 * (b - a)))
        ok &= _sha_final(functions[2], digests[k].ctypes.data, at)
        if ok != 1:  # (OpenSSL returns 1 on success)
            return k
    return -1


def block_hashes(candles: pd.DataFrame, run_starts: np.ndarray | None = None) -> pd.DataFrame:
    """The sha256 of each day block, as `split_blocks` would compute it, without building the
    payloads (see `BlockHashing`): one row per block with symbol, timeframe, day, sha256."""
    return BlockHashing(candles, run_starts).result()


class BlockHashing:
    """`block_hashes`, computed in pieces of about a megabyte that any thread can take.

    A labeling call starts `work` in a worker; the thread that needs the hashes calls `result`,
    which takes the pieces still left instead of waiting for the worker to reach them and then
    waits for the pieces in progress. A piece is hashed in one compiled call that holds no GIL
    (`_sha256_blocks`), or by hashlib where OpenSSL's functions are not reachable; either way
    the column slices are read where they lie (no copies).
    """

    PIECE_BYTES = 1 << 20

    def __init__(self, candles: pd.DataFrame, run_starts: np.ndarray | None = None):
        self._candles, self._run_starts = candles, run_starts
        self._lock = threading.Lock()  # the first thread to work lays out the blocks
        self._done = threading.Condition()
        self._pieces = None
        self._left = 0
        self._error: BaseException | None = None
        self._frame: pd.DataFrame | None = None
        self._hashes: list[str] | None = None

    def _lay_out(self) -> None:
        candles = self._candles
        ts_ns, starts, ends, sym, tf, days = _block_bounds(candles, self._run_starts)
        # the columns in block byte order, each contiguous little-endian 8-byte values
        self._arrays = [np.ascontiguousarray(ts_ns, dtype="<i8")]
        self._arrays += _columns(candles, len(candles))
        self._addresses = np.array([c.ctypes.data for c in self._arrays], dtype=np.int64)
        self._starts, self._ends = starts, ends
        self._digests = np.zeros((len(starts), 32), dtype=np.uint8)
        self._blocks = (sym, tf, days)
        # consecutive blocks of about PIECE_BYTES of candles each
        row_bytes = 8 * len(self._arrays)
        edge = np.searchsorted(
            starts, np.arange(0, len(candles), max(1, self.PIECE_BYTES // row_bytes))
        ).tolist()
        edges = sorted(set(edge[1:]) | {len(starts)})
        self._left = len(edges)
        self._pieces = iter(list(zip([0] + edges[:-1], edges)))

    def _hash_piece(self, i: int, j: int) -> None:
        """The digests of blocks i..j-1."""
        if _SHA256_FUNCTIONS is not None:
            failed = _sha256_blocks(
                _SHA256_FUNCTIONS, self._addresses,
                self._starts[i:j], self._ends[i:j], self._digests[i:j],
            )  # fmt: skip
            if failed >= 0:
                raise RuntimeError(f"OpenSSL's sha256 failed on candle block {i + failed}")
            return
        views = [memoryview(c).cast("B") for c in self._arrays]
        for k in range(i, j):
            a, b = 8 * int(self._starts[k]), 8 * int(self._ends[k])
            h = sha256()
            for v in views:
                h.update(v[a:b])
            self._digests[k] = np.frombuffer(h.digest(), dtype=np.uint8)

    def work(self) -> None:
        """Hash pieces until none is left to take."""
        with self._lock:
            if self._pieces is None and not self._candles.empty:
                self._lay_out()
        for i, j in self._pieces or ():  # (a list iterator hands each piece to one thread)
            try:
                self._hash_piece(i, j)
            except BaseException as error:  # (reported by result, never a hang)
                self._error = error
            finally:
                with self._done:
                    self._left -= 1
                    if not self._left:
                        self._done.notify_all()

    def _finish(self) -> None:
        """Take the pieces left, wait for those in progress, report a failed one."""
        self.work()
        with self._done:
            self._done.wait_for(lambda: self._left == 0)
        if self._error is not None:
            raise self._error
        if self._hashes is None:
            text = self._digests.tobytes().hex()
            self._hashes = [text[k : k + 64] for k in range(0, len(text), 64)]

    def result(self) -> pd.DataFrame:
        """One row per block: symbol, timeframe, day and sha256, in candle order."""
        if self._candles.empty:
            return pd.DataFrame(columns=["symbol", "timeframe", "day", "sha256"])
        if self._frame is None:
            self._finish()
            sym, tf, days = self._blocks
            self._frame = pd.DataFrame(
                {"symbol": sym, "timeframe": tf, "day": utc_index(days), "sha256": self._hashes}
            )
        return self._frame

    def blocks(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(first row, UTC day as int64 ns, sha256) of each block, in candle order: what the
        labeling engine reads of `result`, without building the frame."""
        if self._candles.empty:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
        self._finish()
        return self._starts, self._blocks[2], self._hashes
