"""A deterministic calendar of recurring scheduled economic releases, built by rule.

THIS IS NOT REAL NEWS. It is a demo/test stand-in generated from rules of thumb about when
recurring releases usually happen, so that autopsy's news heuristics have something plausible to
work with when no real calendar (CSV file or SQL table) is configured. Real release dates move
(holidays, shutdowns, meeting calendars set a year ahead) and real events also include the
unscheduled ones, which no rule can produce.

Simplifications, stated once:
- Times are fixed in UTC all year: US releases at 13:30 UTC and the FOMC at 19:00 UTC although in
  US summer time they are at 12:30 / 18:00 UTC; the ECB at 12:45 UTC (11:45 in EU summer time);
  likewise for the others. In summer that puts an event an hour from its real time, more than
  the +-30 min window RCA asks about: load a real calendar when that matters.
- Public holidays are ignored.
- Central-bank meeting dates follow fixed rules of thumb (below), not the published calendars.

Rules (all dates in the month named, times UTC):

=============================  =============================================  ======  ======
event (id prefix)              rule                                           time    impact
=============================  =============================================  ======  ======
US Non-Farm Payrolls (NFP)     first Friday of every month                    13:30   high
Canada Employment (CAEMP)      first Friday of every month                    13:30   medium
US CPI (USCPI)                 the 13th; Saturday -> Friday 12th, Sunday ->   13:30   high
                               Monday 14th
US Retail Sales (USRS)         the 15th, moved forward to Monday if weekend   13:30   medium
US GDP advance (USGDP)         last Thursday of January, April, July, October 13:30   high
US ISM Manufacturing (ISM)     first weekday of every month                   15:00   medium
US Jobless Claims (USJC)       every Thursday                                 13:30   low
FOMC decision (FOMC)           8 a year: last Wed of Jan, 3rd Wed of Mar,     19:00   high
                               1st Wed of May, 2nd Wed of Jun, last Wed of
                               Jul, 3rd Wed of Sep, 1st Wed of Nov, 2nd Wed
                               of Dec
ECB decision (ECB)             every 6 weeks on Thursdays, anchored on        12:45   high
                               2017-01-19 (in both directions)
BoE decision (BOE)             2nd Thursday of Feb, May, Aug, Nov; 3rd        12:00   high
                               Thursday of Mar, Jun, Sep, Dec
BoJ decision (BOJ)             the 20th (weekend -> next Monday) of Jan, Mar, 03:00   high
                               Apr, Jun, Jul, Sep, Oct, Dec
RBA decision (RBA)             first Tuesday of every month except January    03:30   high
SNB assessment (SNB)           3rd Thursday of Mar, Jun, Sep, Dec             08:30   high
UK CPI (UKCPI)                 3rd Tuesday of every month                     09:30   high
Eurozone CPI flash (EZCPI)     last weekday of every month                    10:00   medium
=============================  =============================================  ======  ======

event_id is '<prefix>-<YYYY-MM-DD>' (e.g. 'NFP-2018-03-02'): stable across runs and ranges.
"""
from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

CALENDAR_COLUMNS = ("event_id", "ts", "currencies", "impact", "title", "source")
SOURCE = "scheduled-rule"
_ECB_ANCHOR = date(2017, 1, 19)   # a Thursday; every 42 days either side


def _first_weekday(year: int, month: int, weekday: int) -> date:
    d = date(year, month, 1)
    return d + timedelta(days=(weekday - d.weekday()) % 7)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    return _first_weekday(year, month, weekday) + timedelta(weeks=n - 1)


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    d = nxt - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - weekday) % 7)


def _forward_to_weekday(d: date) -> date:
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def _last_business_day(year: int, month: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    d = nxt - timedelta(days=1)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


MON, TUE, WED, THU, FRI = 0, 1, 2, 3, 4
_FOMC = {1: ("last", WED), 3: (3, WED), 5: (1, WED), 6: (2, WED), 7: ("last", WED),
         9: (3, WED), 11: (1, WED), 12: (2, WED)}
_BOE = {2: 2, 5: 2, 8: 2, 11: 2, 3: 3, 6: 3, 9: 3, 12: 3}
_BOJ_MONTHS = (1, 3, 4, 6, 7, 9, 10, 12)


def _month_events(year: int, month: int) -> list[tuple]:
    """(prefix, date, 'HH:MM', currencies, impact, title) for the monthly rules."""
    ev: list[tuple] = []
    first_fri = _first_weekday(year, month, FRI)
    ev.append(("NFP", first_fri, "13:30", ["USD"], "high", "US Non-Farm Payrolls"))
    ev.append(("CAEMP", first_fri, "13:30", ["CAD"], "medium", "Canada Employment Change"))
    cpi = date(year, month, 13)
    cpi = cpi - timedelta(days=1) if cpi.weekday() == 5 else (
        cpi + timedelta(days=1) if cpi.weekday() == 6 else cpi)
    ev.append(("USCPI", cpi, "13:30", ["USD"], "high", "US CPI"))
    ev.append(("USRS", _forward_to_weekday(date(year, month, 15)), "13:30", ["USD"], "medium",
               "US Retail Sales"))
    if month in (1, 4, 7, 10):
        ev.append(("USGDP", _last_weekday(year, month, THU), "13:30", ["USD"], "high",
                   "US GDP (advance)"))
    ev.append(("ISM", _forward_to_weekday(date(year, month, 1)), "15:00", ["USD"], "medium",
               "US ISM Manufacturing PMI"))
    if month in _FOMC:
        which, wd = _FOMC[month]
        d = (_last_weekday(year, month, wd) if which == "last"
             else _nth_weekday(year, month, wd, which))
        ev.append(("FOMC", d, "19:00", ["USD"], "high", "FOMC rate decision"))
    if month in _BOE:
        ev.append(("BOE", _nth_weekday(year, month, THU, _BOE[month]), "12:00", ["GBP"], "high",
                   "BoE rate decision"))
    if month in _BOJ_MONTHS:
        ev.append(("BOJ", _forward_to_weekday(date(year, month, 20)), "03:00", ["JPY"], "high",
                   "BoJ policy decision"))
    if month != 1:
        ev.append(("RBA", _first_weekday(year, month, TUE), "03:30", ["AUD"], "high",
                   "RBA rate decision"))
    if month in (3, 6, 9, 12):
        ev.append(("SNB", _nth_weekday(year, month, THU, 3), "08:30", ["CHF"], "high",
                   "SNB monetary policy assessment"))
    ev.append(("UKCPI", _nth_weekday(year, month, TUE, 3), "09:30", ["GBP"], "high", "UK CPI"))
    ev.append(("EZCPI", _last_business_day(year, month), "10:00", ["EUR"], "medium",
               "Eurozone CPI flash estimate"))
    return ev


def _bound(value, name: str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ValueError(f"{name} is not a time")
    # range bounds, not data: a bare date such as '2018-01-01' is read as UTC midnight
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def scheduled_calendar(start, end) -> pd.DataFrame:
    """Every rule-built scheduled release with start <= ts <= end (see the module docstring).

    NOT REAL NEWS: a deterministic calendar from rules of thumb, for demos and tests. ``start``
    and ``end`` are times or dates; a bound without a timezone is read as UTC (a bare date means
    its UTC midnight). Columns: event_id ('NFP-2018-03-02'), ts (UTC ns), currencies (list),
    impact (high|medium|low), title, source ('scheduled-rule'); sorted by ts then event_id. The
    same range always gives the same frame, and a range's rows are exactly the rows of any
    wider range that fall inside it.
    """
    lo, hi = _bound(start, "start"), _bound(end, "end")
    if hi < lo:
        raise ValueError(f"end {hi} is before start {lo}")
    rows: list[tuple] = []
    y, m = lo.year, lo.month
    while (y, m) <= (hi.year, hi.month):
        rows.extend(_month_events(y, m))
        m += 1
        if m == 13:
            y, m = y + 1, 1
    # weekly and 6-weekly rules
    day = lo.date() - timedelta(days=1)
    last = hi.date() + timedelta(days=1)
    d = day + timedelta(days=(THU - day.weekday()) % 7)
    while d <= last:
        rows.append(("USJC", d, "13:30", ["USD"], "low", "US Initial Jobless Claims"))
        d += timedelta(days=7)
    d = _ECB_ANCHOR + timedelta(days=42 * ((day - _ECB_ANCHOR).days // 42))  # floor: d <= day
    while d < day:
        d += timedelta(days=42)
    while d <= last:
        rows.append(("ECB", d, "12:45", ["EUR"], "high", "ECB rate decision"))
        d += timedelta(days=42)

    if not rows:
        return _empty()
    out = pd.DataFrame({
        "event_id": [f"{p}-{d.isoformat()}" for p, d, *_ in rows],
        "ts": pd.to_datetime([f"{d.isoformat()}T{t}:00" for _, d, t, *_ in rows], utc=True),
        "currencies": [list(c) for *_, c, _i, _t in rows],
        "impact": [i for *_, i, _t in rows],
        "title": [t for *_, t in rows],
        "source": SOURCE,
    })
    out["ts"] = out["ts"].dt.as_unit("ns")
    out = out.drop_duplicates("event_id")
    out = out[(out["ts"] >= lo) & (out["ts"] <= hi)]
    return out.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": pd.Series(dtype=object), "ts": pd.Series(dtype="datetime64[ns, UTC]"),
        "currencies": pd.Series(dtype=object), "impact": pd.Series(dtype=object),
        "title": pd.Series(dtype=object), "source": pd.Series(dtype=object)})
