"""The first-touch outcome engine: what happened to an insight after it was published.

For one insight and one horizon (1H, 4H, 24H, 7D) the window is every candle whose bar lies
inside [created_at, created_at + horizon]; no price before created_at is used. Walking forward,
the first candle that touches the stop or the target decides (stop first when one candle touches
both and nothing finer can tell: the conservative assumption backtesting.py also makes). A candle
that opens beyond a level exits at its open: the gap is real slippage. If neither is touched the
trade is closed at the window's last close and judged by the neutral band, the adverse excursion
limit and the sign of the P&L.

Candles are bid prices. A long is bought at the entry and sold on the bid; a short is sold at the
entry and bought back on the ask (bid + spread, when candles carry a spread), so a short's stop
and target are touched by ask prices.

Everything is vectorised over all insight x horizon rows at once; the one loop per row is
compiled (settle.py): window bounds, the first-touch walk (walk.py, which skips whole blocks of
bars that touch neither level), exit, holes and outcome. No Python loop per insight or per
candle.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

from autopsy_assets.domain import heap, instruments, replay, settle
from autopsy_assets.domain.arrays import distinct, filled, take_text, utc_index, values_at
from autopsy_assets.domain.rules import resolve_coded, rule_snapshot, rules_as_records
from autopsy_assets.domain.schemas import AUDIT_COLUMNS, HORIZONS, TIMEFRAMES
from autopsy_assets.domain.walk import BlockTables, walk_sides

_MIN_NS = 60 * 10**9
_DAY_NS = 86_400 * 10**9
HOLE_BARS = 3  # missing time longer than this many bars (outside closures) is a hole
# the text of settle's codes, as object arrays (indexed by code arrays)
_OUTCOMES = np.asarray(settle.OUTCOMES, dtype=object)
_EXIT_REASONS = np.asarray(settle.EXIT_REASONS, dtype=object)


# --- helpers -----------------------------------------------------------------------------------

_sha = replay.sha256_hex  # (text -> its sha256, hex)


def _fmt_ts(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def _describe_review(kind: str, start_ns: int, end_ns: int) -> str:
    """needs_review_reason for a settle.REVIEWS kind; a hole spans [start_ns, end_ns]."""
    if kind == "empty":
        return "empty_window: no complete candle lies inside the window"
    where = "between created_at" if kind == "lead_hole" else "between"
    minutes = (end_ns - start_ns) / _MIN_NS
    return (
        f"hole: {minutes:.0f} minutes of candles missing {where} {_fmt_ts(start_ns)} and "
        f"{_fmt_ts(end_ns)}, outside any market closure"
    )


class _CandleSet:
    """The clean candles of one (symbol, timeframe), as arrays, with their block tables."""

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        symbol: str,
        timeframe: str,
        closure: str,
        tables: tuple[BlockTables, BlockTables],
        offset: int,
    ):
        """``columns``: this set's slices (views) of ts (int64 ns), open, high, low, close and
        spread; ``tables``: the bid and ask block tables of all the candles, in which this set
        starts at row ``offset``."""
        self.tables, self.offset = tables, offset
        self.symbol, self.timeframe = symbol, timeframe
        self.bar_ns = TIMEFRAMES[timeframe] * _MIN_NS
        self.ts = columns["ts"]
        self.open, self.high = columns["open"], columns["high"]
        self.low, self.close, self.spread = columns["low"], columns["close"], columns["spread"]
        self.first_ts = int(self.ts[0])
        self.last_end = int(self.ts[-1]) + self.bar_ns
        self.closures = instruments.closure_intervals(
            closure,
            pd.Timestamp(self.first_ts, tz="UTC"),
            pd.Timestamp(self.last_end, tz="UTC") + pd.Timedelta(days=8),
        )
        # bars preceded by missing time that no closure excuses (index j: the time between bar
        # j-1's end and bar j), kept sparse: gaps are rare
        gap = np.diff(self.ts) - self.bar_ns
        at = np.flatnonzero(gap > 0)
        excused = instruments.inside_closure(
            self.ts[at] + self.bar_ns, self.ts[at + 1], self.closures
        )
        self.gap_bar, self.gap_ns = at[~excused] + 1, gap[at[~excused]]

    def walk(self, s, e, lg, stop, target) -> tuple[np.ndarray, ...]:
        """Per row, the first bar in [s, e) touching the stop or the target (``e`` where none),
        whether that bar touches the stop and the target, and the lowest and highest
        closing-side price over the bars before it (+inf / -inf when there are none).

        A long is stopped by the bid low and reaches its target on the bid high; a short on the
        ask (bid + spread), mirrored. A blank (NaN) level is never touched.
        """
        o = self.offset
        j, stop_hit, tgt_hit, lo, hi = walk_sides(*self.tables, s + o, e + o, lg, stop, target)
        return j - o, stop_hit, tgt_hit, lo, hi


class CandleBook:
    """Clean candles as the engine reads them: the columns as arrays and the candle sets of
    each (symbol, timeframe), with their block tables, closures and gaps.

    It depends on the candles alone; building it can start the block hashing (``hash_now``),
    which then runs in a worker while api.label_outcomes prepares the insights' rows.
    """

    def __init__(
        self,
        candles: pd.DataFrame,
        candle_runs: np.ndarray | None = None,
        instruments_path: str | None = None,
        hash_now: bool = False,
    ):
        """``candle_runs``: where each (symbol, timeframe) run of the clean, sorted ``candles``
        starts (validate_candle_runs gives them; found by comparing neighbours when None).
        ``hash_now``: start hashing the candle blocks in a worker at once (else `label` starts
        it)."""
        self.candles = candles
        self.runs = replay.candle_runs(candles) if candle_runs is None else candle_runs
        self.hashes = self.start_hashing() if hash_now else None
        self.bounds = np.append(self.runs, len(candles)).astype(np.int64)
        self.sets: list[_CandleSet] = []
        self.by_symbol: dict[str, list[int]] = {}  # a symbol's sets, finest first
        self.whole: dict[str, np.ndarray] = {}
        self.tables: tuple[BlockTables, BlockTables] | None = None
        if len(candles):
            # validated candles are sorted by (symbol, timeframe, ts): sets are contiguous runs;
            # the columns once as arrays, each set takes views of its rows
            whole = {"ts": candles["ts"].to_numpy(dtype="datetime64[ns]").view("int64")}
            for col in ("open", "high", "low", "close", "spread"):
                whole[col] = candles[col].to_numpy(dtype=float)
            # the symbol and timeframe of each run (read at its first row; may be categorical)
            run_sym = values_at(candles["symbol"], self.runs)
            run_tf = values_at(candles["timeframe"], self.runs)
            # block tables over all sets end to end: a block that straddles two sets never lies
            # inside one row's window, so it is never skipped wrongly
            bid = BlockTables(whole["low"], whole["high"])
            has_spread = bool(np.any(whole["spread"] != 0))
            ask = (
                BlockTables(whole["low"] + whole["spread"], whole["high"] + whole["spread"])
                if has_spread
                else bid
            )
            self.whole, self.tables = whole, (bid, ask)
            bounds = self.bounds.tolist()
            for a, b, sym, tf in zip(bounds[:-1], bounds[1:], run_sym, run_tf):
                inst = instruments.get(sym, instruments_path)
                self.by_symbol.setdefault(sym, []).append(len(self.sets))
                columns = {col: values[a:b] for col, values in whole.items()}
                self.sets.append(_CandleSet(columns, sym, tf, inst.closure, self.tables, a))
        for gids in self.by_symbol.values():
            gids.sort(key=lambda g: self.sets[g].bar_ns)
        self.set_bar = np.array([cs.bar_ns for cs in self.sets], dtype=np.int64)
        self.closure_at = np.cumsum([0] + [len(cs.closures) for cs in self.sets])
        self.closures = (
            np.concatenate([cs.closures for cs in self.sets]).reshape(-1, 2)
            if self.sets
            else np.zeros((0, 2), dtype=np.int64)
        )

    def start_hashing(self) -> replay.BlockHashing:
        """The sha256 of every candle block (the audits' identity), computed in a worker
        beside the rest of the call (without the GIL); `result` gives them."""
        hashing = replay.BlockHashing(self.candles, self.runs)
        worker_pool().submit(hashing.work)
        return hashing


# --- the engine --------------------------------------------------------------------------------


def label(
    insights: pd.DataFrame,
    candles: pd.DataFrame,
    horizons,
    rules: pd.DataFrame,
    now: pd.Timestamp | None = None,
    instruments_path: str | None = None,
    book: CandleBook | None = None,
    codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    rows: InsightRows | None = None,
) -> pd.DataFrame:
    """Label clean insights (validation.validate_insights, or the columns and codes of
    validate_insights_coded(frame=False)) on clean candles (validate_candles).

    One row per insight x horizon with the columns of schemas.AUDIT_COLUMNS. ``rules`` is a
    normalised rules frame (rules.normalise_rules). ``now`` cuts the candles used (bars ending
    after it are ignored); None means the latest candle end of each symbol. ``book``: the
    CandleBook of ``candles`` (built here when None). ``codes``: the text codes that
    validation.validate_insights_coded found (factorized here when None). ``rows``: the
    InsightRows of these insights, horizons and rules (built here when None; its columns
    become the result's, so one serves one call).
    """
    if book is None:
        book = CandleBook(candles, None, instruments_path, hash_now=True)
    hashes = book.hashes or book.start_hashing()
    if rows is None:
        rows = InsightRows(insights, horizons, rules, instruments_path, codes)
    return _label(rows, now, book, hashes)


_pool: tuple[int, ThreadPoolExecutor] | None = None
# a large batch is settled by a worker and the main thread in pieces of _PIECE rows (~0.5 ms of
# settling each), taken in turn
_PIECE = 2048


def worker_pool() -> ThreadPoolExecutor:
    """Two worker threads for the parts of a labeling call that run beside the main thread
    (block hashing and part of the compiled settling: both hold no GIL), made once per process
    (a forked child cannot use its parent's). Their tasks never wait on each other. The checks
    and the pandas glue stay on the calling thread (see api.label_outcomes)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        heap.keep_freed_memory()  # a labeling process: keep the arrays' pages between calls
        _pool = (os.getpid(), ThreadPoolExecutor(2, thread_name_prefix="autopsy-labeling"))
    return _pool[1]


class InsightRows:
    """The insight x horizon rows of a labeling call as the engine reads them: everything that
    does not depend on the candles (the rows' times, sides and scope codes, the levels of the
    winning rules, and the audit columns the walk does not change).

    api.label_outcomes builds them while a worker hashes the candle blocks. A missing rule is
    reported by `label`, after the candles' errors.
    """

    def __init__(
        self,
        insights: pd.DataFrame | dict,
        horizons,
        rules: pd.DataFrame,
        instruments_path: str | None = None,
        codes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ):
        """``insights``, ``rules`` and ``codes`` as `label` takes them."""
        codes = codes or {}
        horizons = [str(h).upper() for h in horizons]
        unknown = [h for h in horizons if h not in HORIZONS]
        if unknown:
            raise ValueError(f"unknown horizon(s) {unknown}: expected {', '.join(HORIZONS)}")
        n_ins, n_h = len(insights["created_at"]), len(horizons)
        self.n = N = n_ins * n_h

        def rep(col):  # one row per insight x horizon
            values = insights[col]  # (validation's dict holds arrays, a frame Series)
            values = values.to_numpy() if isinstance(values, pd.Series) else values
            return values if n_h == 1 else np.repeat(values, n_h)

        def coded(col):
            """(code per row, distinct values) of a text column: text is compared and looked
            up once per distinct value, never per row."""
            if col in codes:
                by_row, uniques = codes[col]
            else:
                by_row, uniques = pd.factorize(np.asarray(insights[col], dtype=object))
            by_row = by_row if n_h == 1 else np.repeat(by_row, n_h)
            return by_row, np.asarray(uniques, dtype=object)

        def text(col):
            """A text column, one value per row, as an array of its own: built from the codes
            validation found (one value: references to it), else validation's objects."""
            if col not in codes:
                return rep(col).astype(object, copy=False)
            by_row, uniques = coded(col)
            return take_text(uniques, by_row)

        def ids():  # the insight ids as validation left them: arrow-backed ids stay arrow
            column = insights["insight_id"]
            if not isinstance(column.array, pd.arrays.ArrowExtensionArray):
                return text("insight_id")
            if n_h == 1:  # a new wrapper of the immutable arrow data (edits stay in the output)
                return column.array.copy()
            return column.array.take(np.repeat(np.arange(n_ins), n_h))

        self.sym_codes, self.sym_uniq = sym_codes, sym_uniq = coded("symbol")
        self.symbol = take_text(sym_uniq, sym_codes)
        side_codes, side_uniq = coded("side")
        self.side_long = side_long = (side_uniq == "long")[side_codes]
        horizon_coded = (np.tile(np.arange(n_h), n_ins), np.asarray(horizons, dtype=object))
        self.horizon = take_text(horizon_coded[1], horizon_coded[0])
        self.created = created = np.repeat(
            insights["created_at"].to_numpy(dtype="datetime64[ns]").view("int64"), n_h
        )
        self.win_end = win_end = created + np.tile(
            np.array([HORIZONS[h] for h in horizons], dtype=np.int64) * _MIN_NS, n_ins
        )
        self.entry = entry = rep("entry_price").astype(float)
        self.fill_price = rep("fill_price").astype(float)
        self.pip = pip = instruments.pip_sizes(sym_uniq, instruments_path)[sym_codes]
        self.tf_codes, self.tf_uniq = tf_codes, tf_uniq = coded("timeframe")
        self.ins_tf = take_text(tf_uniq, tf_codes)
        # the insight's bar length (0 when it has none): holes are measured in its bars
        bar_minutes = np.array([TIMEFRAMES.get(t, 0) for t in tf_uniq], dtype=np.int64)
        self.ins_bar_ns = bar_minutes[tf_codes] * _MIN_NS

        # rules: resolved per row, used whole
        scope = {
            "strategy": coded("strategy"),
            "symbol": (sym_codes, sym_uniq),
            "timeframe": (tf_codes, tf_uniq),
            "horizon": horizon_coded,
        }
        rule_records = rules_as_records(rules)  # (the snapshots below read them too)
        rule_idx = resolve_coded(rules, scope, rule_records)
        self.unruled = bool((rule_idx < 0).any())
        self.stop, self.target, self.band, self.adverse_limit = levels = tuple(
            np.empty(N) for _ in range(4)
        )
        if self.unruled:  # (label refuses these rows; nothing to compute)
            return
        settle.levels(
            side_long, entry, rep("stop_loss").astype(float), rep("take_profit").astype(float),
            pip, rule_idx, *(rules[c].to_numpy(dtype=float) for c in (
                "fail_sl_pips", "success_tp_pips", "success_rr_ratio", "neutral_band_pips",
                "fail_adverse_pct",
            )),
            *levels,
        )  # fmt: skip

        # the audit columns the walk does not change (the timeframe of rows without one is
        # the walked one: label adds it), which rows are filtered, each row's rule code
        status_codes, status_uniq = coded("status")
        self.filtered = (status_uniq == "filtered")[status_codes]
        # identity: one rule hash per rule used, broadcast
        self.inv_rules, first_of_rule = distinct(rule_idx)
        snapshots = [rule_snapshot(rule_records[rule_idx[i]]) for i in first_of_rule]
        created_at = utc_index(created)
        self.known = {
            "insight_id": ids(),
            "side": text("side"),
            "strategy": text("strategy"),
            "status": text("status"),
            "user_id": text("user_id"),
            "user_acted": rep("user_acted").astype(bool, copy=False),
            "created_at": created_at,
            "window_start": created_at,
            "window_end": utc_index(win_end),
            "rule_id": rules["rule_id"].to_numpy()[rule_idx].astype(np.int64),
            "rule_snapshot": np.asarray(snapshots, dtype=object)[self.inv_rules],
            "rule_hash": np.asarray([_sha(sn) for sn in snapshots], dtype=object)[
                self.inv_rules
            ],
        }


def _label(prepared: InsightRows, now, book, hashes):
    if prepared.unruled:
        raise ValueError(
            "no active labeling rule applies to some insights: add a catch-all rule "
            "(blank strategy, symbol, timeframe and horizon)"
        )
    N = prepared.n
    sym_codes, sym_uniq, symbol = prepared.sym_codes, prepared.sym_uniq, prepared.symbol
    side_long, created, win_end = prepared.side_long, prepared.created, prepared.win_end
    entry, pip, ins_bar_ns = prepared.entry, prepared.pip, prepared.ins_bar_ns
    stop, target = prepared.stop, prepared.target
    band, adverse_limit = prepared.band, prepared.adverse_limit
    known, filtered, inv_rules = dict(prepared.known), prepared.filtered, prepared.inv_rules

    # outputs
    exit_price, high_price, low_price, gap_pips = (np.full(N, np.nan) for _ in range(4))
    exit_time = np.full(N, settle.NAT, dtype=np.int64)
    review_reason = filled(N, "")
    hash_first_day = created - created % _DAY_NS
    hash_last_ns = np.full(N, -1, dtype=np.int64)  # last bar read (hash covers blocks up to it)
    bar_of_row = np.zeros(N, dtype=np.int64)
    lived_lo, lived_hi = np.full(N, np.inf), np.full(N, -np.inf)

    sets, by_symbol = book.sets, book.by_symbol

    now_ns = None if now is None else pd.Timestamp(now).tz_convert("UTC").value
    # per candle set, its symbol's latest candle end; per symbol, when it has one candle set,
    # the set every row walks (rows of a symbol with several timeframes choose per window)
    set_latest = np.zeros(len(sets), dtype=np.int64)
    set_of = np.full(len(sym_uniq), -1, dtype=np.int64)
    several = []
    sym_position = {sym: k for k, sym in enumerate(sym_uniq.tolist())}
    for sym, gids in by_symbol.items():
        set_latest[gids] = max(sets[g].last_end for g in gids)
        if sym not in sym_position:  # candles of a symbol no insight is about
            continue
        if len(gids) == 1:
            set_of[sym_position[sym]] = gids[0]
        else:
            several.append((sym_position[sym], gids))
    group_id = set_of[sym_codes]
    for k, gids in several:
        rows = sym_codes == k
        latest = int(set_latest[gids[0]])
        row_now = np.full(int(rows.sum()), latest if now_ns is None else now_ns, dtype=np.int64)
        cutoff = np.minimum(win_end[rows], row_now)
        chosen = np.full(int(rows.sum()), -1, dtype=np.int64)
        c_rows = created[rows]
        for g in gids:  # finest timeframe that covers the window wins
            cs = sets[g]
            covers = (cs.first_ts <= c_rows + cs.bar_ns) & (cs.last_end >= cutoff) & (chosen < 0)
            chosen[covers] = g
        # otherwise the one that covers most of the window (finest on ties): its holes are real
        best, best_overlap = np.full(len(chosen), gids[0]), np.full(len(chosen), -np.inf)
        for g in gids:
            cs = sets[g]
            overlap = (np.minimum(cs.last_end, cutoff) - np.maximum(cs.first_ts, c_rows)).astype(
                float
            )
            better = overlap > best_overlap
            best[better], best_overlap[better] = g, overlap[better]
        chosen[chosen < 0] = best[chosen < 0]
        group_id[rows] = chosen

    # per candle set: now (its symbol's latest candle end when not given) and how far its
    # symbol's candles reach (they can only show what has arrived)
    set_now = set_latest if now_ns is None else np.full(len(sets), now_ns, dtype=np.int64)
    set_until = np.minimum(set_now, set_latest)
    # the timeframe each row walks ('' without candles: group -1 picks the last entry)
    no_set = [""] if len(group_id) and group_id.min() < 0 else []
    walked_tf = take_text(np.array([cs.timeframe for cs in sets] + no_set, dtype=object), group_id)

    # --- every row at once: windows, first touches, exits, holes, outcomes -------------------
    # The sets lie end to end in the candle arrays, so a row's window is a range of global bar
    # indices inside its own set; settle.settle does the rest per row, compiled.
    rows = np.flatnonzero(group_id >= 0)
    outcome_code = np.zeros(N, dtype=np.int8)  # pending
    reason_code = np.zeros(N, dtype=np.int8)
    review_code = np.zeros(N, dtype=np.int8)
    review_from = np.full(N, settle.NAT, dtype=np.int64)
    review_to = np.full(N, settle.NAT, dtype=np.int64)
    ambiguous = np.zeros(N, dtype=bool)  # both levels inside the deciding bar
    if len(rows):
        g = group_id[rows]
        rows = rows[_read_order(g, created[rows])]
        g = group_id[rows]
        set_bar = book.set_bar
        bar_of_row[rows] = set_bar[g]
        # holes are measured in bars of the insight's timeframe (the walked one's when it has
        # none); each set keeps, per distinct threshold, the bars preceded by a longer gap
        hole_ns = np.where(ins_bar_ns[rows] == 0, set_bar[g], ins_bar_ns[rows]) * HOLE_BARS
        thr_code, thr_first = distinct(hole_ns // _MIN_NS)  # (whole minutes: a small range)
        thresholds = hole_ns[thr_first].tolist()
        gap_lists = [
            cs.gap_bar[cs.gap_ns > t] + book.bounds[k]
            for k, cs in enumerate(sets)
            for t in thresholds
        ]
        whole, tables = book.whole, book.tables
        candle_args = (
            whole["ts"], whole["open"], whole["close"], whole["spread"],
            *tables[0].arrays, *tables[1].arrays,
            book.bounds[:-1], book.bounds[1:], set_bar, set_now, set_until, book.closure_at,
            book.closures,
            np.cumsum([0] + [len(x) for x in gap_lists]),
            np.concatenate(gap_lists).astype(np.int64),
        )
        row_args = (
            created, win_end, side_long, stop, target, entry,
            band, adverse_limit, pip,
            outcome_code, reason_code, review_code, review_from, review_to, exit_price,
            exit_time, low_price, high_price, gap_pips, ambiguous, lived_lo, lived_hi,
            hash_last_ns,
        )
        gap_list = g * len(thresholds) + thr_code

        def settle_rows(a: int, b: int) -> None:
            settle.settle(*candle_args, rows[a:b], g[a:b], hole_ns[a:b], gap_list[a:b], *row_args)

        # rows are independent and the kernel releases the GIL: a worker and this thread take
        # pieces in turn until none is left, so neither waits long for the other (how fast each
        # goes depends on what else the machine runs); both write disjoint rows of the same
        # outputs. A small batch stays on this thread.
        n_rows = len(rows)
        pieces = iter([(a, min(a + _PIECE, n_rows)) for a in range(0, n_rows, _PIECE)])

        def settle_pieces() -> None:
            for a, b in pieces:  # (a list iterator hands each piece to one thread only)
                settle_rows(a, b)

        other = worker_pool().submit(settle_pieces) if n_rows >= 2 * _PIECE else None
        if other is not None:  # then that worker hashes the candle blocks still left, if any
            worker_pool().submit(hashes.work)
        settle_pieces()
        if other is not None:
            other.result()
    # the timeframe of rows whose insight has none is the one they walked
    tf_codes, tf_uniq, ins_tf = prepared.tf_codes, prepared.tf_uniq, prepared.ins_tf
    known["timeframe"] = (
        np.where((tf_uniq == "")[tf_codes], walked_tf, ins_tf) if (tf_uniq == "").any() else ins_tf
    )
    for i in np.flatnonzero(review_code).tolist():  # only flagged rows are described
        review_reason[i] = _describe_review(
            settle.REVIEWS[review_code[i]], int(review_from[i]), int(review_to[i])
        )

    # a coarse bar that touched both levels: finer candles covering that bar settle it
    fine_group = np.full(N, -1, dtype=np.int64)
    if ambiguous.any():
        _refine_ambiguous(
            sets,
            by_symbol,
            symbol,
            side_long,
            stop,
            target,
            pip,
            bar_of_row,
            ambiguous,
            outcome_code,
            exit_price,
            exit_time,
            reason_code,
            gap_pips,
            low_price,
            high_price,
            lived_lo,
            lived_hi,
            fine_group,
        )

    # rows whose symbol has no candles: pending until they arrive (or empty once now passed)
    no_data = group_id < 0
    if no_data.any() and now_ns is not None:
        late = no_data & (now_ns >= win_end)
        outcome_code[late] = settle.NEEDS_REVIEW
        review_reason[late] = "empty_window: no candles for this symbol"
    # metrics: compiled and without the GIL, so a large batch has them computed by a worker
    # while the text columns are built here
    pnl_pct, max_dd, max_fav, duration, rr_actual, slippage = (np.empty(N) for _ in range(6))
    metrics_args = (
        side_long, entry, stop, prepared.fill_price, pip, created, exit_price,
        exit_time, low_price, high_price,
        pnl_pct, max_dd, max_fav, duration, rr_actual, slippage,
    )  # fmt: skip
    metrics = worker_pool().submit(settle.metrics, *metrics_args) if N >= 2 * _PIECE else None
    if metrics is None:
        settle.metrics(*metrics_args)
    outcome, exit_reason = _OUTCOMES[outcome_code], _EXIT_REASONS[reason_code]

    replay_outcome = outcome  # (the audit's outcome differs only for filtered insights)
    if filtered.any():
        outcome = outcome.copy()
        outcome[filtered] = "filtered_out"

    # the columns that do not need the block hashes first: a worker may still be hashing
    computed = {
        "horizon": prepared.horizon,
        "symbol": symbol,
        "candle_timeframe": walked_tf,
        "outcome": outcome,
        "replay_outcome": replay_outcome,
        "exit_reason": exit_reason,
        "entry_price": entry,
        "stop_price": stop,
        "target_price": target,
        "exit_price": exit_price,
        "exit_time": utc_index(exit_time),
        "high_price": high_price,
        "low_price": low_price,
        "pnl_pct": pnl_pct,
        "max_drawdown": max_dd,
        "max_favorable": max_fav,
        "duration_minutes": duration,
        "risk_reward_actual": rr_actual,
        "slippage_pips": slippage,
        "gap_pips": gap_pips,
        "ambiguous": ambiguous,
        "needs_review": outcome_code == settle.NEEDS_REVIEW,
        "needs_review_reason": review_reason,
        "candles_until": utc_index(
            np.where(hash_last_ns >= 0, hash_last_ns + bar_of_row, np.iinfo(np.int64).min)
        ),
    }

    # identity: candle blocks per (set, first day, last day), broadcast
    rule_hash_col = known["rule_hash"]
    blocks_col, candles_hash_col, candles_ident = _block_identity(
        hashes, book.bounds, group_id, hash_first_day, hash_last_ns
    )
    refined = fine_group >= 0
    if refined.any():  # the finer blocks of the settling day are read too: they join the identity
        fine_day = exit_time - exit_time % _DAY_NS
        fine_blocks, _, _ = _block_identity(hashes, book.bounds, fine_group, fine_day, fine_day)
        blocks_col[refined] = [
            a + "," + b for a, b in zip(blocks_col[refined], fine_blocks[refined])
        ]
        candles_hash_col[refined] = [_sha(b) for b in blocks_col[refined]]
        codes = pd.factorize(pd.Series(candles_hash_col, dtype=object))[0]
        candles_ident = np.where(group_id >= 0, codes, -1).astype(np.int64)
    # snapshot_hash = sha256(rule_hash + candles_hash), once per distinct pair
    pair_key = inv_rules.astype(np.int64) * (int(candles_ident.max()) + 2) + (candles_ident + 1)
    pair_codes, first_row = distinct(pair_key)
    snap_hash = np.array(
        [_sha(rule_hash_col[i] + candles_hash_col[i]) for i in first_row], dtype=object
    )[pair_codes]

    computed.update(
        candles_hash=candles_hash_col, candle_blocks=blocks_col, snapshot_hash=snap_hash
    )
    if metrics is not None:
        metrics.result()
    out = _frame({c: known[c] if c in known else computed[c] for c in AUDIT_COLUMNS})
    assert list(out.columns) == list(AUDIT_COLUMNS)
    return out


def _read_order(group: np.ndarray, created: np.ndarray) -> np.ndarray:
    """An order of rows by (candle set, created_at), so each set's candles are read front to
    back; the order among rows created within the same ~69 s does not matter (rows are
    independent, only the memory reads follow it).

    The set, the time and the row's position are packed in one int64 and sorted by value:
    ~1.3x faster than argsort on a (set, time) key and ~5x faster than lexsort, which remains
    for keys that do not fit.
    """
    n = len(group)
    # units of 2**36 ns (~69 s) since the first row; the difference taken unsigned, exact even
    # where it exceeds the int64 range (created_at spans up to 585 years)
    since = ((created - created.min()).view(np.uint64) >> np.uint64(36)).astype(np.int64)
    row_bits, time_bits = max(n - 1, 1).bit_length(), int(since.max()).bit_length()
    set_bits = max(int(group.max()), 1).bit_length()
    if row_bits + time_bits + set_bits > 63:
        return np.lexsort((created, group))
    packed = (group << (time_bits + row_bits)) | (since << row_bits) | np.arange(n)
    packed.sort()
    return packed & ((1 << row_bits) - 1)


def _refine_ambiguous(
    sets,
    by_symbol,
    symbol,
    side_long,
    stop,
    target,
    pip,
    bar_of_row,
    ambiguous,
    outcome_code,
    exit_price,
    exit_time,
    reason_code,
    gap_pips,
    low_price,
    high_price,
    lived_lo,
    lived_hi,
    fine_group,
) -> None:
    """Re-walk the deciding bar of ambiguous rows on finer candles that cover it bar for bar.

    The walked timeframe is the finest covering the whole window; finer candles that cover
    only part of it (say, recent minutes under a long hourly history) still settle a coarse bar
    they cover completely. Outcome and exit reason codes, exits and extremes are updated in
    place; ``fine_group`` records which finer set settled each row (its blocks join the audit's
    identity).
    """
    for sym, gids in by_symbol.items():
        todo = np.flatnonzero(ambiguous & (symbol == sym))
        for g in gids:  # finest first
            if not len(todo):
                break
            cs = sets[g]
            todo_g = todo[bar_of_row[todo] > cs.bar_ns]
            if not len(todo_g):
                continue
            bar_end = exit_time[todo_g]
            bar_start = bar_end - bar_of_row[todo_g]
            s = np.searchsorted(cs.ts, bar_start, side="left")
            e = np.searchsorted(cs.ts, bar_end - cs.bar_ns, side="right")
            full = (e - s) == bar_of_row[todo_g] // cs.bar_ns  # every finer bar is there
            rows, s, e = todo_g[full], s[full], e[full]
            if not len(rows):
                continue
            lg = side_long[rows]
            st, tg = stop[rows], target[rows]
            j, stop_hit, tgt_hit, lo, hi = cs.walk(s, e, lg, st, tg)
            ok = j < e  # finer candles that do not touch what the coarse bar did: keep it
            rows, j, lg, st, tg, lo, hi = rows[ok], j[ok], lg[ok], st[ok], tg[ok], lo[ok], hi[ok]
            price, reason, gap, out, both = settle.exits(
                cs.open, cs.spread, j, stop_hit[ok], tgt_hit[ok], lg, st, tg
            )
            exit_price[rows], reason_code[rows] = price, reason
            exit_time[rows] = cs.ts[j] + cs.bar_ns
            outcome_code[rows] = out
            gap_pips[rows] = gap / pip[rows]
            ambiguous[rows] = both  # still both levels inside one finer bar
            low_price[rows] = np.fmin(np.fmin(lived_lo[rows], lo), price)
            high_price[rows] = np.fmax(np.fmax(lived_hi[rows], hi), price)
            fine_group[rows] = g
            todo = np.setdiff1d(todo, rows)


def _frame(columns: dict) -> pd.DataFrame:
    """A DataFrame of the given columns, each in a block of its own, taken as it is.

    The arrays are the labeling call's own (copied here only where two columns would share one
    or one is a read-only view), so pandas' checks and inference are skipped: through the
    normal constructor the text columns would have to be wrapped to stay object arrays of
    shared Python strings (pandas 3 infers its arrow-backed `str` dtype and copies every long,
    repeated string, rule snapshots and block lists, per row), and the frame costs ~10x more.
    """
    blocks, seen = [], set()
    for i, values in enumerate(columns.values()):
        if isinstance(values, pd.Index):
            values = values.array
        # a copy where two columns would share one array (window_start is created_at: an edit
        # of one must not show in the other) or where the array is a read-only view of the
        # clean insights (the caller could not edit the column)
        shared = id(values) in seen
        seen.add(id(values))
        if shared or (isinstance(values, np.ndarray) and not values.flags.writeable):
            values = values.copy()
        blocks.append(
            (values.reshape(1, -1) if isinstance(values, np.ndarray) else values, np.array([i]))
        )
    n = len(next(iter(columns.values())))
    return create_dataframe_from_blocks(blocks, pd.RangeIndex(n), pd.Index(list(columns)))


def _block_identity(
    hashing: replay.BlockHashing,
    set_bounds: np.ndarray,
    group_id: np.ndarray,
    first_day: np.ndarray,
    last_ns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the comma-joined sha256 of the blocks its window read, and their combined hash.

    ``hashing``: the hashing of the candle blocks (waited for only once the rows' keys are
    coded); ``set_bounds``: where each candle set's rows start, and the end of the last.
    Computed once per distinct (candle set, first day, last day) and broadcast to the rows.
    """
    N = len(group_id)
    use = (group_id >= 0) & (last_ns >= 0)
    if not use.any():
        return filled(N, ""), filled(N, _sha("")), np.full(N, -1, dtype=np.int64)
    everyone = bool(use.all())
    if everyone:  # the common case: views, no masked copies
        use = slice(None)
    # one int64 key per (set, first day, last day), days counted from the first of them: the
    # keys span a small range, which distinct() codes without hashing
    first_d, last_d = first_day[use] // _DAY_NS, last_ns[use] // _DAY_NS
    base = min(int(first_d.min()), int(last_d.min()))
    span = max(int(first_d.max()), int(last_d.max())) - base + 1
    key = (group_id[use] * span + (first_d - base)) * span + (last_d - base)
    codes, first = distinct(key)
    g_of, days_of = np.divmod(key[first], span * span)
    first_of, last_of = np.divmod(days_of, span)
    a_of, b_of = (first_of + base) * _DAY_NS, (last_of + base) * _DAY_NS
    block_row, day_ns, sha = hashing.blocks()
    # blocks never straddle two sets: set g's blocks are a range of them
    set_block = np.searchsorted(block_row, set_bounds).tolist()
    joined = filled(len(first), "")
    for g in np.unique(g_of).tolist():  # per candle set: its blocks, found by day for all keys
        b0, b1 = set_block[g], set_block[g + 1]
        days = day_ns[b0:b1]
        sel = np.flatnonzero(g_of == g)
        lo = (b0 + np.searchsorted(days, a_of[sel], side="left")).tolist()
        hi = (b0 + np.searchsorted(days, b_of[sel], side="right")).tolist()
        joined[sel] = [",".join(sha[i:j]) for i, j in zip(lo, hi)]
    hashed = np.asarray([_sha(text) for text in joined], dtype=object)
    if everyone:
        return joined[codes], hashed[codes], codes.astype(np.int64, copy=False)
    blocks_col, hash_col = filled(N, ""), filled(N, _sha(""))
    blocks_col[use], hash_col[use] = joined[codes], hashed[codes]
    ident = np.full(N, -1, dtype=np.int64)
    ident[use] = codes
    return blocks_col, hash_col, ident
