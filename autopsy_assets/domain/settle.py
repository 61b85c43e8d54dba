"""Settling each insight x horizon row on its candle set, compiled: window, first touch, exit,
holes and outcome in one pass per row.

Why compiled: written with numpy, each of these steps is a whole-array operation over every row
(about eighty of them, each 0.3-2 ms on 50,000 rows), plus gathers and scatters between row
orders. Fused into one loop per row, beside the first-touch walk, they add a few milliseconds
to it. The rules are those of DESIGN.md section 2 and labeling.py's docstring; labeling.py
prepares the arrays and turns the codes below back into text.

Codes (index into the tables that labeling.py keeps beside them):
- outcome: OUTCOMES[code] (pending, succeeded, failed, neutral, needs_review);
- exit_reason: EXIT_REASONS[code] ('' where not resolved);
- review: REVIEWS[code] (none, an empty window, or a hole before the first bar, between two
  bars or after the last one); for holes, review_from / review_to are the missing time's ends.
"""

from __future__ import annotations

import os

import numba
import numpy as np

from autopsy_assets.domain import walk
from autopsy_assets.domain.walk import _first_touch

OUTCOMES = ("pending", "succeeded", "failed", "neutral", "needs_review")
PENDING, SUCCEEDED, FAILED, NEUTRAL, NEEDS_REVIEW = range(len(OUTCOMES))
EXIT_REASONS = ("", "stop", "target", "horizon", "gap_stop", "gap_target")
NO_EXIT, AT_STOP, AT_TARGET, AT_HORIZON, GAP_STOP, GAP_TARGET = range(len(EXIT_REASONS))
REVIEWS = ("", "empty", "lead_hole", "inner_hole", "tail_hole")
NO_REVIEW, EMPTY, LEAD_HOLE, INNER_HOLE, TAIL_HOLE = range(len(REVIEWS))
NAT = np.iinfo(np.int64).min


@numba.njit(cache=True, nogil=True)
def _bisect(a, lo, hi, v, right):  # pragma: no cover - compiled
    """The first index in [lo, hi) of sorted ``a`` whose value is > v (right) or >= v (left):
    np.searchsorted on a[lo:hi], offset by lo."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v or (right and a[mid] == v):
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True)
def _gallop(a, lo, hi, hint, v, right):  # pragma: no cover - compiled
    """_bisect, searching outwards from ``hint`` (the answer for a nearby v): rows come
    sorted by time, so the answer is usually a few bars away and a plain bisection's cache
    misses and mispredicted branches would cost more than the walk."""
    hint = min(max(hint, lo), hi)
    step = 1
    if hint > lo and (a[hint - 1] > v or (not right and a[hint - 1] == v)):  # before hint
        top, bot = hint - 1, hint - 2
        while bot > lo and (a[bot] > v or (not right and a[bot] == v)):
            top = bot
            bot -= step
            step <<= 1
        return _bisect(a, max(bot, lo), top, v, right)
    bot, top = hint, hint + 1
    while top < hi and (a[top - 1] < v or (right and a[top - 1] == v)):
        bot = top
        top += step
        step <<= 1
    return _bisect(a, bot, min(top, hi), v, right)


@numba.njit(cache=True, nogil=True)
def _inside_closure(start, end, closures, lo, hi):  # pragma: no cover - compiled
    """Whether [start, end] lies wholly inside one of the closure intervals closures[lo:hi]
    (instruments.inside_closure for one gap; rows, not a slice: a slice per row would cost
    the kernel a reference count update)."""
    first = lo
    while lo < hi:  # the last interval opening at or before start
        mid = (lo + hi) >> 1
        if closures[mid, 0] <= start:
            lo = mid + 1
        else:
            hi = mid
    k = lo - 1  # (below first: none of these intervals opens by then)
    return k >= first and start >= closures[k, 0] and end <= closures[k, 1]


@numba.njit(cache=True, nogil=True)
def _exit_on_bar(op, stop_hit, target_hit, sign, stop, target):  # pragma: no cover - compiled
    """(price, reason, gap, outcome, ambiguous) of a position leaving on a bar that opens at
    ``op`` (its closing side) and touches the stop and/or the target: a bar opening beyond a
    level exits at its open (the gap, price units), else at the level; both levels inside
    the bar is the stop, flagged ambiguous."""
    if stop_hit and sign * (op - stop) <= 0:
        return op, GAP_STOP, abs(op - stop), FAILED, False
    if target_hit and sign * (op - target) >= 0:
        return op, GAP_TARGET, abs(op - target), SUCCEEDED, False
    if stop_hit:
        return stop, AT_STOP, np.nan, FAILED, target_hit
    return target, AT_TARGET, np.nan, SUCCEEDED, False


@numba.njit(cache=True, nogil=True)
def exits(open_, spread, bar, stop_hit, target_hit, is_long, stop, target):  # pragma: no cover
    """_exit_on_bar for rows whose deciding bar is ``bar`` (indices into open_ and spread):
    arrays of price, reason code, gap, outcome code and ambiguous."""
    n = len(bar)
    price, gap = np.empty(n), np.empty(n)
    reason, outcome = np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int8)
    ambiguous = np.empty(n, dtype=np.bool_)
    for i in range(n):
        lg = is_long[i]
        op = open_[bar[i]] + (0.0 if lg else spread[bar[i]])
        price[i], reason[i], gap[i], outcome[i], ambiguous[i] = _exit_on_bar(
            op, stop_hit[i], target_hit[i], 1.0 if lg else -1.0, stop[i], target[i]
        )
    return price, reason, gap, outcome, ambiguous


@numba.njit(cache=True, nogil=True)
def settle(
    ts, open_, close, spread,
    b_low, b_high, b_min, b_max, a_low, a_high, a_min, a_max,
    set_start, set_end, set_bar, set_now, set_until, closure_at, closures, gap_at, gap_bars,
    rows, set_of, hole_ns, gap_list, created, win_end, is_long, stop, target,
    entry, band, adverse_limit, pip,
    outcome, exit_reason, review, review_from, review_to, exit_price, exit_time, low_price,
    high_price, gap_pips, both, lived_lo, lived_hi, last_bar,
):  # pragma: no cover - compiled (tested against a per-candle reference through labeling)
    """Settle rows ``rows`` (indices into every per-row array) in that order.

    Candles: ts (int64 ns), open, close, spread over all candle sets end to end, and the bid and
    ask block tables (walk.BlockTables.arrays). Set k: bars [set_start[k], set_end[k]) of
    length set_bar[k] ns, closure intervals closures[closure_at[k]:closure_at[k + 1]]; its rows
    are judged at set_now[k] (ns) on candles that reach set_until[k].
    Row i (in the order of ``rows``) lies in set set_of[i]; missing time longer than hole_ns[i]
    outside closures is a hole, and gap_bars[gap_at[m]:gap_at[m + 1]] with m = gap_list[i] are
    the bars of its set (global indices, sorted) preceded by such missing time.

    Writes, per row: the outcome, exit_reason and review codes (see the module docstring), the
    exit price and time (ns; NAT where unresolved), the extremes lived up to and including the
    exit (low_price, high_price) and before the exit bar (lived_lo, lived_hi: what the
    finer-candle refinement starts from), the gap in pips, whether both levels lay inside the
    deciding bar, and the last bar read (last_bar, ns; -1 when none).

    The outputs most rows leave at a default are written only where they differ from it, so
    the caller passes them filled with it: review 0 (none), review_from / review_to NAT,
    gap_pips NaN, both False, and lived_lo / lived_hi +inf / -inf (read only where both levels
    lay in the deciding bar). Rows are settled in the order their candles are read, not the
    order of the row arrays: each write skipped is a cache miss saved.
    """
    s, e = 0, 0  # the previous row's window: the hint for this row's
    for i in range(len(rows)):
        r = rows[i]
        k = set_of[i]
        a0, a1, bar = set_start[k], set_end[k], set_bar[k]
        c0, c1 = closure_at[k], closure_at[k + 1]
        c, we, nw, du = created[r], win_end[r], set_now[k], set_until[k]
        lg = is_long[r]
        st, tg, en = stop[r], target[r], entry[r]
        sg = 1.0 if lg else -1.0

        # the window: bars opening at or after created_at whose end is inside the horizon and
        # not after now. It has elapsed once now is beyond it and candles reach it, or the
        # candles stop inside a market closure that lasts until after it (nothing more can come)
        s = _gallop(ts, a0, a1, s, c, False)
        e = _gallop(ts, a0, a1, e, min(we, nw) - bar, True)
        e = max(e, s)
        elapsed = nw >= we and (du >= we or _inside_closure(du, we, closures, c0, c1))

        # first touch: longs on the bid (stop below), shorts on the ask (target below)
        if lg:
            j, st_hit, tg_hit, lo, hi = _first_touch(b_low, b_high, b_min, b_max, s, e, st, tg)
        else:
            j, tg_hit, st_hit, lo, hi = _first_touch(a_low, a_high, a_min, a_max, s, e, tg, st)
        before_lo, before_hi = lo, hi
        touched = j < e
        jj = min(j, a1 - 1)
        last = max(e - 1, a0)

        # the exit: a bar opening beyond a level exits at its open (the gap), else at the level;
        # both levels inside one bar is the stop, flagged; untouched, the horizon's last close
        price, reason, gap, out, two = np.nan, NO_EXIT, np.nan, PENDING, False
        t_exit = NAT
        horizon_exit = not touched and elapsed and e > s
        if touched:
            op = open_[jj] + (0.0 if lg else spread[jj])  # the closing side, at the open
            price, reason, gap, out, two = _exit_on_bar(op, st_hit, tg_hit, sg, st, tg)
            t_exit = ts[jj] + bar
        elif horizon_exit:
            price = close[last] + (0.0 if lg else spread[last])
            reason, t_exit = AT_HORIZON, ts[last] + bar
        if not np.isnan(price):  # the extremes lived include the exit
            lo, hi = min(lo, price), max(hi, price)
        lo = np.nan if np.isinf(lo) else lo
        hi = np.nan if np.isinf(hi) else hi

        if horizon_exit:  # judged by the neutral band, the adverse limit, the sign of the P&L
            adverse = ((en - lo) if lg else (hi - en)) / en * 100
            adverse = 0.0 if np.isnan(adverse) else max(adverse, 0.0)
            if abs(price - en) <= band[r]:
                out = NEUTRAL
            elif adverse > adverse_limit[r]:
                out = FAILED
            else:
                out = SUCCEEDED if sg * (price - en) > 0 else FAILED

        # holes: missing time longer than the row's threshold, outside closures, between
        # created_at and the last bar the outcome depends on
        thr = hole_ns[i]
        why, h_from, h_to = NO_REVIEW, NAT, NAT
        if not touched and elapsed and e <= s:
            why = EMPTY
        else:
            first_ts = ts[min(s, a1 - 1)]  # the first bar's open when s < e (then s < a1)
            tail_start = ts[last] + bar if e > s else c
            last_read = j if touched else e - 1
            g1 = gap_at[gap_list[i] + 1]
            inner = _bisect(gap_bars, gap_at[gap_list[i]], g1, s + 1, False)
            if s < e and first_ts - c > thr and not _inside_closure(c, first_ts, closures, c0, c1):
                why, h_from, h_to = LEAD_HOLE, c, first_ts
            elif inner < g1 and gap_bars[inner] < last_read + 1:
                b = gap_bars[inner]
                why, h_from, h_to = INNER_HOLE, ts[b - 1] + bar, ts[b]
            elif horizon_exit and we - tail_start > thr and not _inside_closure(
                tail_start, we, closures, c0, c1
            ):
                why, h_from, h_to = TAIL_HOLE, tail_start, we

        last_bar[r] = ts[jj] if touched else (ts[last] if e > s else -1)
        if why != NO_REVIEW:
            out, price, reason, t_exit, gap, two = NEEDS_REVIEW, np.nan, NO_EXIT, NAT, np.nan, False
        outcome[r], exit_reason[r] = out, reason
        exit_price[r], exit_time[r], low_price[r], high_price[r] = price, t_exit, lo, hi
        if why != NO_REVIEW:
            review[r], review_from[r], review_to[r] = why, h_from, h_to
        if not np.isnan(gap):
            gap_pips[r] = gap / pip[r]
        if two:
            both[r], lived_lo[r], lived_hi[r] = True, before_lo, before_hi


@numba.njit(cache=True, nogil=True)
def levels(
    is_long, entry, stop_given, target_given, pip, rule,
    fail_sl_pips, success_tp_pips, success_rr_ratio, neutral_band_pips, fail_adverse_pct,
    stop, target, band, adverse_limit,
):  # pragma: no cover - compiled (tested through labeling)
    """Per row, the levels its winning rule (index ``rule`` into the rule columns) gives: the
    stop (the insight's, else entry -/+ fail_sl_pips), the target (the insight's, else
    success_tp_pips, else success_rr_ratio x risk; NaN where still blank), the neutral band in
    price units and the adverse limit in percent."""
    for i in range(len(entry)):
        k = rule[i]
        sg = 1.0 if is_long[i] else -1.0
        st = stop_given[i]
        if np.isnan(st):
            st = entry[i] - sg * fail_sl_pips[k] * pip[i]
        tg = target_given[i]
        if np.isnan(tg):
            tg = entry[i] + sg * success_tp_pips[k] * pip[i]
            if np.isnan(tg):
                tg = entry[i] + sg * success_rr_ratio[k] * abs(entry[i] - st)
        stop[i], target[i] = st, tg
        b = neutral_band_pips[k]
        band[i] = (0.0 if np.isnan(b) else b) * pip[i]
        adverse_limit[i] = fail_adverse_pct[k]


@numba.njit(cache=True, nogil=True)
def metrics(
    is_long, entry, stop, fill, pip, created, exit_price, exit_time, low_price, high_price,
    pnl_pct, max_drawdown, max_favorable, duration_minutes, risk_reward, slippage_pips,
):  # pragma: no cover - compiled (tested through labeling)
    """Per row: P&L, drawdown and favourable excursion in percent of entry (>= 0), minutes to
    the exit, the risk multiple reached and the fill's slippage in pips (NaN where unknown)."""
    for i in range(len(entry)):
        sg = 1.0 if is_long[i] else -1.0
        en, x = entry[i], exit_price[i]
        pnl_pct[i] = sg * (x - en) / en * 100
        adverse = (en - low_price[i]) if is_long[i] else (high_price[i] - en)
        favour = (high_price[i] - en) if is_long[i] else (en - low_price[i])
        dd, fav = adverse / en * 100, favour / en * 100
        max_drawdown[i] = dd if np.isnan(dd) else max(dd, 0.0)
        max_favorable[i] = fav if np.isnan(fav) else max(fav, 0.0)
        duration_minutes[i] = np.nan if np.isnan(x) else (exit_time[i] - created[i]) / 60e9
        risk = abs(en - stop[i])
        risk_reward[i] = sg * (x - en) / risk if risk > 0 else np.nan
        slippage_pips[i] = sg * (fill[i] - en) / pip[i]


def drop_cache_older_than(path: str, *kernels) -> list[str]:
    """Empty the on-disk cache index of each of ``kernels`` that is older than the file
    ``path``, so the next process compiles them again; returns the index files emptied.

    numba keys a kernel's cache on the kernel's own source file, yet `settle` compiles
    walk._first_touch into itself: after walk.py changes (its block widths, say), a warm cache
    would run the old walk against the new block tables. Anything but numba 0.68's cache layout
    (or no cache at all) leaves the cache as it is.
    """
    removed = []
    for kernel in kernels:
        try:
            index = kernel._cache._cache_file._index_path
            if os.path.exists(index) and os.stat(index).st_mtime < os.stat(path).st_mtime:
                kernel._cache.flush()
                removed.append(index)
        except (AttributeError, OSError, TypeError):  # (TypeError: a frozen walk has no file)
            pass
    return removed


drop_cache_older_than(walk.__file__, settle)
