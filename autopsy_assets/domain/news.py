"""News events: parsing, validation and the vectorised "high-impact news near this time?" query.

A news event is one row: event_id, ts (tz-aware UTC), currencies (a list of upper-case codes),
impact (low | medium | high), title. In CSV/SQL ``currencies`` is one string joined by ``|`` or
``,`` (DESIGN 2a); a single code is a one-item list. An event matches a symbol when it names
either of the symbol's currencies (instruments.currencies: EURUSD -> EUR, USD).
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime

import numpy as np
import pandas as pd

from . import instruments

IMPACTS = ("low", "medium", "high")
NEWS_COLUMNS = ("event_id", "ts", "currencies", "impact", "title")
NEWS_REQUIRED = ("ts", "currencies", "impact")
NEAREST_COLUMNS = ("symbol", "ts", "minutes_to_next", "minutes_since_last", "within_window",
                   "n_in_window", "nearest_minutes", "nearest_event_id", "nearest_title",
                   "next_event_id", "next_title", "last_event_id", "last_title",
                   "window_event_ids")

_SPLIT = re.compile(r"[|,;/\s]+")
_CODE = re.compile(r"^[A-Z]{3,4}$")
_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?|\s*(?:UTC|GMT))$", re.IGNORECASE)
_IMPACT_ALIASES = {"med": "medium", "moderate": "medium"}
_NS_PER_MIN = 60 * 10**9


# --- parsing -------------------------------------------------------------------------------------

def _is_missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists and arrays
        return False


def parse_currencies(value) -> list[str]:
    """Currency codes from any of the accepted encodings, upper-case, in order, without repeats.

    'USD' -> ['USD']; 'EUR|USD', 'EUR,USD', 'eur, usd' -> ['EUR', 'USD']; a list/tuple/array of
    codes (each may itself be joined) -> the same; None, NaN or '' -> []. ';', '/' and blanks are
    read as separators too. Codes are not validated here (see `normalise_news`).
    """
    if _is_missing(value):
        return []
    if isinstance(value, str):
        parts = _SPLIT.split(value)
    elif isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series)):
        parts = []
        for v in (sorted(value) if isinstance(value, (set, frozenset)) else value):
            parts.extend(parse_currencies(v))
    else:
        parts = _SPLIT.split(str(value))
    out: list[str] = []
    for p in parts:
        code = str(p).strip().upper()
        if code and code not in out:
            out.append(code)
    return out


def parse_times(values, name: str = "ts") -> tuple[pd.Series, pd.Series]:
    """Times to tz-aware UTC (ns), with a reason per row that cannot be used.

    Accepts a tz-aware datetime column, or objects/strings where each value carries its own
    timezone (Timestamp/datetime with tzinfo, or ISO text ending in Z, +hh:mm or UTC). A value
    without a timezone is never guessed to be UTC: its reason says so. Returns (ts, reason),
    positionally indexed; reason is '' for good rows and ts is NaT for bad ones.
    """
    s = pd.Series(values).reset_index(drop=True)
    n = len(s)
    reason = np.full(n, "", dtype=object)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        ts = s.dt.tz_convert("UTC").dt.as_unit("ns")
        reason[ts.isna().to_numpy()] = f"{name} is missing"
        return ts, pd.Series(reason, dtype=object)
    out_ns = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    if pd.api.types.is_datetime64_dtype(s.dtype):
        nat = s.isna().to_numpy()
        reason[nat] = f"{name} is missing"
        reason[~nat] = [f"{name} {str(v)!r} has no timezone: give it in UTC (e.g. with Z or "
                        f"+00:00); it is never assumed to be UTC" for v in s[~nat]]
    else:
        text_pos: list[int] = []
        text_val: list[str] = []
        for i, v in enumerate(s.to_numpy(dtype=object)):
            if isinstance(v, str):
                t = v.strip()
                if not t:
                    reason[i] = f"{name} is missing"
                elif _TZ_SUFFIX.search(t):
                    text_pos.append(i)
                    text_val.append(re.sub(r"\s*(?:UTC|GMT)$", "+00:00", t, flags=re.I))
                else:
                    reason[i] = (f"{name} {v!r} has no timezone: give it in UTC (e.g. with Z or "
                                 f"+00:00); it is never assumed to be UTC")
            elif _is_missing(v):
                reason[i] = f"{name} is missing"
            elif isinstance(v, (pd.Timestamp, datetime)):
                if v.tzinfo is None:
                    reason[i] = (f"{name} {str(v)!r} has no timezone: give it in UTC; it is never "
                                 f"assumed to be UTC")
                else:
                    out_ns[i] = pd.Timestamp(v).tz_convert("UTC").as_unit("ns").value
            elif isinstance(v, np.datetime64):
                reason[i] = f"{name} {str(v)!r} has no timezone: give it in UTC"
            else:
                reason[i] = f"{name} {v!r} is not a time"
        if text_pos:
            parsed = pd.to_datetime(pd.Series(text_val, dtype=object), utc=True,
                                    format="ISO8601", errors="coerce")
            if parsed.isna().any():
                retry = pd.to_datetime(pd.Series(text_val, dtype=object)[parsed.isna()],
                                       utc=True, format="mixed", errors="coerce")
                parsed = parsed.copy()
                parsed[retry.index] = retry
            parsed = parsed.dt.as_unit("ns")
            pos = np.asarray(text_pos)
            ok = parsed.notna().to_numpy()
            out_ns[pos[ok]] = parsed[ok].astype("int64").to_numpy()
            for i, v in zip(pos[~ok], np.asarray(text_val, dtype=object)[~ok]):
                reason[i] = f"{name} {v!r} is not a time"
    ts = pd.Series(pd.to_datetime(out_ns.view("datetime64[ns]")).tz_localize("UTC"))
    return ts.dt.as_unit("ns"), pd.Series(reason, dtype=object)


def _event_id(ts: pd.Timestamp, currencies: list[str], title: str) -> str:
    text = f"{ts.isoformat()}|{'|'.join(currencies)}|{title}"
    return "EV-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def normalise_news(df: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Validate news rows; return (clean, quarantine).

    Required columns ts, currencies, impact (a missing one raises ValueError naming it); title
    (default '') and event_id (default: a stable 'EV-' + sha256 prefix of ts, currencies and
    title) are optional; other columns are carried through.

    A row is quarantined, with every reason that applies joined by '; ', when: its ts is missing,
    unparseable or has no timezone; its impact is not low/medium/high (case-insensitive, 'med'
    accepted); it names no currency; a code is not 3-4 letters (e.g. 'EURUSD', a symbol, not a
    currency); or its event_id appears again with different content (all copies). Exact repeats
    keep one row. Quarantine rows: source='news', row_id=event_id (else the raw ts), reason.

    clean: event_id, ts (UTC ns), currencies (list of str), impact, title, extras; sorted by
    ts then event_id, with a fresh RangeIndex.
    """
    missing = [c for c in NEWS_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"news lacks required column(s): {', '.join(missing)}")
    n = len(df)
    raw = df.reset_index(drop=True)
    ts, ts_reason = parse_times(raw["ts"], "ts")
    currs = [parse_currencies(v) for v in raw["currencies"].to_numpy(dtype=object)]
    impact_raw = raw["impact"].to_numpy(dtype=object)
    impact = [None if _is_missing(v) else _IMPACT_ALIASES.get(str(v).strip().lower(),
                                                              str(v).strip().lower())
              for v in impact_raw]
    title = (["" if _is_missing(v) else str(v) for v in raw["title"].to_numpy(dtype=object)]
             if "title" in raw.columns else [""] * n)
    given_id = (["" if _is_missing(v) else str(v).strip()
                 for v in raw["event_id"].to_numpy(dtype=object)]
                if "event_id" in raw.columns else [""] * n)

    reasons: list[list[str]] = [[] for _ in range(n)]
    for i in range(n):
        if ts_reason.iat[i]:
            reasons[i].append(ts_reason.iat[i])
        if impact[i] is None:
            reasons[i].append("impact is missing")
        elif impact[i] not in IMPACTS:
            reasons[i].append(f"impact {impact_raw[i]!r} is not one of low, medium, high")
        if not currs[i]:
            reasons[i].append("no currency given: the event cannot be matched to any symbol")
        else:
            bad = [c for c in currs[i] if not _CODE.match(c)]
            if bad:
                reasons[i].append(f"currency code(s) {', '.join(map(repr, bad))} are not "
                                  f"3-4 letter currency codes")

    event_id = [given_id[i] if given_id[i] or reasons[i]
                else _event_id(ts.iat[i], currs[i], title[i]) for i in range(n)]

    # duplicate event ids: exact repeats keep one; different content holds all copies back
    content = [(event_id[i], ts.iat[i].value if not reasons[i] else None, tuple(currs[i]),
                impact[i], title[i]) for i in range(n)]
    by_id: dict[str, set] = {}
    for i in range(n):
        if event_id[i] and not reasons[i]:
            by_id.setdefault(event_id[i], set()).add(content[i])
    conflicted = {k for k, v in by_id.items() if len(v) > 1}
    for i in range(n):
        if not reasons[i] and event_id[i] in conflicted:
            reasons[i].append(f"event_id {event_id[i]!r} appears more than once with different "
                              f"content; all copies are held back")

    quarantine = []
    for i in range(n):
        if reasons[i]:
            rid = event_id[i] or (str(raw["ts"].iat[i]) if not _is_missing(raw["ts"].iat[i])
                                  else f"row {i}")
            quarantine.append({"source": "news", "row_id": rid, "reason": "; ".join(reasons[i])})

    keep = np.array([not r for r in reasons], dtype=bool)
    extras = [c for c in raw.columns if c not in NEWS_COLUMNS]
    clean = pd.DataFrame({
        "event_id": pd.Series(event_id, dtype=object),
        "ts": ts,
        "currencies": pd.Series(currs, dtype=object),
        "impact": pd.Series(impact, dtype=object),
        "title": pd.Series(title, dtype=object),
    })
    for c in extras:
        clean[c] = raw[c]
    clean = clean[keep]
    first = ~pd.Series([content[i] for i in np.flatnonzero(keep)]).duplicated().to_numpy()
    clean = clean[first]
    clean = clean.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)
    for c in ("event_id", "impact", "title"):
        clean[c] = clean[c].astype(str)
    return clean, quarantine


# --- the query -----------------------------------------------------------------------------------

def _query_times(times) -> tuple[np.ndarray, pd.Index, np.ndarray]:
    if isinstance(times, pd.Series):
        index = times.index
        values = times
    else:
        if isinstance(times, (pd.Timestamp, datetime, np.datetime64, str)):
            times = [times]
        values = pd.Series(pd.DatetimeIndex(pd.to_datetime(times)))
        index = pd.RangeIndex(len(values))
    values = pd.Series(values).reset_index(drop=True)
    if len(values) == 0:
        return np.empty(0, dtype=np.int64), index, np.empty(0, dtype=bool)
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.to_datetime(values)
        if not isinstance(values.dtype, pd.DatetimeTZDtype):
            raise ValueError("times have no timezone (naive): give them in UTC")
    values = values.dt.tz_convert("UTC").dt.as_unit("ns")
    nat = values.isna().to_numpy()
    return values.astype("int64").to_numpy(), index, nat


def symbol_currencies(symbol: str, currency_map: dict | None = None) -> tuple[str, ...]:
    """Currencies whose news moves ``symbol``: ``currency_map`` first, else instruments; an
    unknown symbol has none (so no news matches it)."""
    if currency_map and symbol in currency_map:
        return tuple(parse_currencies(currency_map[symbol]))
    try:
        return instruments.currencies(symbol)
    except instruments.UnknownSymbolError:
        return ()


def nearest_high_impact(news: pd.DataFrame | None, symbols, times, window_minutes: float = 30,
                        *, impacts=("high",), currency_map: dict | None = None) -> pd.DataFrame:
    """For each query (symbol, time): the nearest high-impact events of the symbol's currencies.

    news: normalised news (`normalise_news`): ts tz-aware, currencies (lists or joined strings),
    impact, and optionally event_id and title. Only events whose impact is in ``impacts`` count.
    symbols: one symbol for all queries, or one per query. times: tz-aware times (a Series keeps
    its index in the result). An event matches when it names either currency of the symbol
    (EURUSD: EUR or USD, never JPY); an unknown symbol matches nothing.

    Per query: minutes_to_next (the next event with ts >= time), minutes_since_last (the last
    with ts <= time), both >= 0 and NaN when there is none; within_window (an event with
    |ts - time| <= window_minutes, boundary included); n_in_window and window_event_ids ('|'
    joined, time order) of all such events; nearest_minutes (signed, event ts - time, positive =
    after; the past one wins a tie) with nearest_event_id/title; next_/last_ event_id and title.
    Events at the same time are ordered by event_id. Vectorised: one searchsorted pass per
    currency, no loop over queries.
    """
    q_ns, index, nat = _query_times(times)
    n = len(q_ns)
    if isinstance(symbols, str):
        sym = np.full(n, symbols, dtype=object)
    else:
        sym = pd.Series(symbols).astype(str).to_numpy(dtype=object)
        if len(sym) != n:
            raise ValueError(f"{len(sym)} symbols for {n} times: give one symbol or one per time")
    w_ns = int(round(float(window_minutes) * _NS_PER_MIN))

    # events, in a global order g by (ts, event_id)
    if news is None or len(news) == 0:
        ev = pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "currencies": [],
                           "event_id": [], "title": []})
    else:
        for c in ("ts", "currencies"):
            if c not in news.columns:
                raise ValueError(f"news lacks required column {c}")
        if not isinstance(news["ts"].dtype, pd.DatetimeTZDtype):
            raise ValueError("news ts must be tz-aware datetimes: run normalise_news first")
        ev = news
        if impacts is not None:
            if "impact" not in news.columns:
                raise ValueError("news lacks required column impact")
            want = {str(i).lower() for i in impacts}
            ev = ev[ev["impact"].astype(str).str.lower().isin(want)]
        ev = pd.DataFrame({
            "ts": ev["ts"].dt.tz_convert("UTC").dt.as_unit("ns").reset_index(drop=True),
            "currencies": ev["currencies"].to_numpy(dtype=object),
            "event_id": (ev["event_id"].astype(str).to_numpy(dtype=object) if "event_id" in ev
                         else np.full(len(ev), "", dtype=object)),
            "title": (ev["title"].astype(str).to_numpy(dtype=object) if "title" in ev
                      else np.full(len(ev), "", dtype=object)),
        })
        ev = ev[ev["ts"].notna()].sort_values(["ts", "event_id"], kind="stable")
        ev = ev.reset_index(drop=True)
    ev_ns = ev["ts"].astype("int64").to_numpy() if len(ev) else np.empty(0, dtype=np.int64)
    ev_id = ev["event_id"].to_numpy(dtype=object)
    ev_title = ev["title"].to_numpy(dtype=object)
    n_ev = len(ev)

    per_ccy: dict[str, list[int]] = {}
    for g, cur in enumerate(ev["currencies"].to_numpy(dtype=object)):
        for c in parse_currencies(cur):
            per_ccy.setdefault(c, []).append(g)

    codes, uniq = pd.factorize(pd.Series(sym, dtype=object))
    sym_ccy = [symbol_currencies(str(s), currency_map) for s in uniq]

    best_next = np.full(n, n_ev, dtype=np.int64)   # n_ev = none
    best_last = np.full(n, -1, dtype=np.int64)     # -1 = none
    pair_q: list[np.ndarray] = []
    pair_g: list[np.ndarray] = []
    live = ~nat
    for c, glist in per_ccy.items():
        has = np.array([c in cc for cc in sym_ccy], dtype=bool)
        if not has.any():
            continue
        qi = np.flatnonzero(has[codes] & live) if n else np.empty(0, dtype=np.int64)
        if len(qi) == 0:
            continue
        G = np.asarray(glist, dtype=np.int64)      # ascending g, so ascending ts
        E = ev_ns[G]
        qt = q_ns[qi]
        j = np.searchsorted(E, qt, side="left")
        ok = j < len(E)
        best_next[qi[ok]] = np.minimum(best_next[qi[ok]], G[j[ok]])
        k = np.searchsorted(E, qt, side="right") - 1
        ok = k >= 0
        best_last[qi[ok]] = np.maximum(best_last[qi[ok]], G[k[ok]])
        lo = np.searchsorted(E, qt - w_ns, side="left")
        hi = np.searchsorted(E, qt + w_ns, side="right")
        cnt = hi - lo
        if cnt.sum():
            rq = np.repeat(qi, cnt)
            starts = np.repeat(lo, cnt)
            offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            pair_q.append(rq)
            pair_g.append(G[starts + offs])

    has_next = best_next < n_ev
    has_last = best_last >= 0
    nxt = np.where(has_next, best_next, 0)
    lst = np.where(has_last, best_last, 0)
    d_next = np.where(has_next, ev_ns[nxt] - q_ns if n_ev else 0, 0)
    d_last = np.where(has_last, q_ns - ev_ns[lst] if n_ev else 0, 0)
    min_to_next = np.where(has_next, d_next / _NS_PER_MIN, np.nan)
    min_since_last = np.where(has_last, d_last / _NS_PER_MIN, np.nan)

    use_last = has_last & (~has_next | (d_last <= d_next))
    use_next = has_next & ~use_last
    nearest_minutes = np.where(use_last, -d_last / _NS_PER_MIN,
                               np.where(use_next, d_next / _NS_PER_MIN, np.nan))

    def pick(arr: np.ndarray, idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.full(n, None, dtype=object)
        if mask.any():
            out[mask] = arr[idx[mask]]
        return out

    near_idx = np.where(use_last, lst, nxt)
    near_mask = use_last | use_next

    n_in = np.zeros(n, dtype=np.int64)
    window_ids = np.full(n, "", dtype=object)
    if pair_q:
        q_all = np.concatenate(pair_q)
        g_all = np.concatenate(pair_g)
        key = np.unique(q_all * max(n_ev, 1) + g_all)   # one pair per (query, event), sorted
        uq = key // max(n_ev, 1)
        ug = key % max(n_ev, 1)
        n_in = np.bincount(uq, minlength=n).astype(np.int64)
        joined = pd.Series(ev_id[ug]).groupby(uq, sort=True).agg("|".join)
        window_ids[joined.index.to_numpy()] = joined.to_numpy()

    def obj(arr: np.ndarray) -> pd.Series:   # None, not NaN, for "no event": JSON-friendly evidence
        return pd.Series(arr, dtype=object, index=index)

    return pd.DataFrame({
        "symbol": sym,
        "ts": pd.to_datetime(np.where(nat, np.iinfo(np.int64).min, q_ns).view("datetime64[ns]"))
              .tz_localize("UTC"),
        "minutes_to_next": min_to_next,
        "minutes_since_last": min_since_last,
        "within_window": n_in > 0,
        "n_in_window": n_in,
        "nearest_minutes": nearest_minutes,
        "nearest_event_id": obj(pick(ev_id, near_idx, near_mask)),
        "nearest_title": obj(pick(ev_title, near_idx, near_mask)),
        "next_event_id": obj(pick(ev_id, nxt, has_next)),
        "next_title": obj(pick(ev_title, nxt, has_next)),
        "last_event_id": obj(pick(ev_id, lst, has_last)),
        "last_title": obj(pick(ev_title, lst, has_last)),
        "window_event_ids": window_ids,
    }, index=index)
