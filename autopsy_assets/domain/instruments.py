"""Symbol specifications: pip size, price digits, currencies and market closures.

Every price distance that a person states in pips goes through `pip_size()`; nothing else in
autopsy hard-codes 0.0001. The table lives in ``config/instruments.yaml`` and can be replaced by
passing another file to `load_instruments()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

CLOSURE_KINDS = ("fx_weekend", "none")


@dataclass(frozen=True)
class Instrument:
    symbol: str
    instrument_class: str
    pip_size: float
    digits: int
    currencies: tuple[str, ...]
    closure: str


class UnknownSymbolError(KeyError):
    """A symbol that the instruments table does not list."""

    def __str__(self) -> str:  # KeyError quotes its message; a person wants plain text
        return str(self.args[0])


def _parse(raw: dict, source: str) -> dict[str, Instrument]:
    classes = raw.get("classes") or {}
    out: dict[str, Instrument] = {}
    for symbol, spec in (raw.get("symbols") or {}).items():
        cls = spec.get("class")
        if cls not in classes:
            raise ValueError(f"{source}: symbol {symbol} has unknown class {cls!r}")
        closure = spec.get("closure", classes[cls].get("closure", "none"))
        if closure not in CLOSURE_KINDS:
            raise ValueError(f"{source}: symbol {symbol} has unknown closure {closure!r}")
        pip = float(spec["pip_size"])
        if not pip > 0:
            raise ValueError(f"{source}: symbol {symbol} needs a positive pip_size")
        out[str(symbol).upper()] = Instrument(
            symbol=str(symbol).upper(),
            instrument_class=cls,
            pip_size=pip,
            digits=int(spec.get("digits", 5)),
            currencies=tuple(str(c).upper() for c in spec.get("currencies", [])),
            closure=closure,
        )
    return out


@lru_cache(maxsize=8)
def load_instruments(path: str | None = None) -> dict[str, Instrument]:
    """The instruments table, from ``path`` or the packaged YAML."""
    if path is None:
        text = resources.files("autopsy_assets.config").joinpath("instruments.yaml").read_text()
        source = "instruments.yaml (packaged)"
    else:
        text = Path(path).read_text()
        source = str(path)
    return _parse(yaml.safe_load(text) or {}, source)


def get(symbol: str, path: str | None = None) -> Instrument:
    table = load_instruments(path)
    try:
        return table[str(symbol).upper()]
    except KeyError:
        raise UnknownSymbolError(
            f"unknown symbol {symbol!r}: it is not in the instruments table"
        ) from None


def pip_size(symbol: str, path: str | None = None) -> float:
    """One pip of ``symbol`` in price units (EURUSD 0.0001, USDJPY 0.01, XAUUSD 0.1, BTCUSD 1)."""
    return get(symbol, path).pip_size


def currencies(symbol: str, path: str | None = None) -> tuple[str, ...]:
    """The currencies whose news can move ``symbol`` (EURUSD -> EUR, USD)."""
    return get(symbol, path).currencies


def _per_symbol(symbols, values: dict, default) -> np.ndarray:
    """Look ``values`` up per element of ``symbols``, once per distinct symbol (vectorised);
    a few symbols (a table of distinct ones) are looked up one by one, without pandas."""
    if len(symbols) <= 64:
        found = [default if pd.isna(s) else values.get(str(s).upper(), default) for s in symbols]
        return np.array(found + [default])[:-1]  # (the default joins the dtype, as below)
    codes, uniques = pd.factorize(pd.Series(symbols, dtype=object), use_na_sentinel=True)
    table = np.array([values.get(str(u).upper(), default) for u in uniques] + [default])
    return table[np.where(codes < 0, len(uniques), codes)]


def known(symbols: pd.Series | np.ndarray, path: str | None = None) -> np.ndarray:
    """Boolean mask: which of ``symbols`` the instruments table lists (vectorised)."""
    table = load_instruments(path)
    return _per_symbol(symbols, {s: True for s in table}, False).astype(bool)


def pip_sizes(symbols: pd.Series | np.ndarray, path: str | None = None) -> np.ndarray:
    """Pip size per element of ``symbols``; NaN for unknown symbols (vectorised)."""
    table = load_instruments(path)
    return _per_symbol(symbols, {s: i.pip_size for s, i in table.items()}, np.nan).astype(float)


# --- market closures ---------------------------------------------------------------------------

_NS_PER_DAY = 86_400 * 10**9


def closure_intervals(closure: str, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    """Merged closure intervals [open_ns, close_ns) overlapping [start, end], as int64 ns pairs.

    fx_weekend: every Friday 20:00 to Monday 00:00 UTC, 24 Dec 00:00 to 27 Dec 00:00 and
    31 Dec 00:00 to 3 Jan 00:00; overlapping or touching intervals are merged, so a holiday next to
    a weekend is one closure. "none" (crypto) has no closures. The result is read-only (cached
    per UTC day span: every labeling call asks again for the same spans).
    """
    start = pd.Timestamp(start).tz_convert("UTC").normalize()
    end = pd.Timestamp(end).tz_convert("UTC").normalize()
    return _closure_intervals(closure, start.value, end.value)


@lru_cache(maxsize=256)
def _closure_intervals(closure: str, start_ns: int, end_ns: int) -> np.ndarray:
    if closure == "none":
        return _read_only(np.empty((0, 2), dtype=np.int64))
    if closure != "fx_weekend":
        raise ValueError(f"unknown closure kind {closure!r}")
    start = pd.Timestamp(start_ns, tz="UTC") - pd.Timedelta(days=8)
    end = pd.Timestamp(end_ns, tz="UTC") + pd.Timedelta(days=8)
    days = pd.date_range(start, end, freq="D", tz="UTC")
    fridays = days[days.day_of_week == 4]
    spans = [(f + pd.Timedelta(hours=20), f + pd.Timedelta(days=3)) for f in fridays]
    for year in range(start.year - 1, end.year + 1):
        spans.append((pd.Timestamp(year, 12, 24, tz="UTC"), pd.Timestamp(year, 12, 27, tz="UTC")))
        spans.append((pd.Timestamp(year, 12, 31, tz="UTC"), pd.Timestamp(year + 1, 1, 3, tz="UTC")))
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        a_ns, b_ns = a.value, b.value
        if merged and a_ns <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b_ns)
        else:
            merged.append([a_ns, b_ns])
    return _read_only(np.asarray(merged, dtype=np.int64).reshape(-1, 2))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def inside_closure(
    gap_start_ns: np.ndarray, gap_end_ns: np.ndarray, intervals: np.ndarray
) -> np.ndarray:
    """True where the gap [start, end] lies wholly inside one closure interval (vectorised)."""
    gap_start_ns = np.asarray(gap_start_ns, dtype=np.int64)
    gap_end_ns = np.asarray(gap_end_ns, dtype=np.int64)
    if len(intervals) == 0:
        return np.zeros(gap_start_ns.shape, dtype=bool)
    k = np.searchsorted(intervals[:, 0], gap_start_ns, side="right") - 1
    ok = k >= 0
    kk = np.clip(k, 0, None)
    return ok & (gap_start_ns >= intervals[kk, 0]) & (gap_end_ns <= intervals[kk, 1])
