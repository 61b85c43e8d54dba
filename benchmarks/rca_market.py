"""A GENERATED 1-minute FX market with failed insights whose root cause is KNOWN, for the RCA
benchmark (`bench_rca.py`) and its tests. Nothing here is real market data.

How it is built (deterministic for a given seed):

- **Market.** Nine FX pairs, 1-minute bid candles for ``weeks`` weeks each, skipping the FX
  closures of the instruments table. Each pair runs over its own period (pair k starts
  k x (weeks + 1) weeks after ``start``): a news event for a currency would move every pair that
  trades it, so pairs never share time and an injected event touches only its own insight.
  Log returns are Student-t (5 df) with a mild intraday activity profile (the generated
  market's, at 30% strength) and a mild stochastic volatility (two AR(1) log-vol components,
  half-lives 30 min and 8 h); spreads ~1 pip (wider in Asia and at the rollover, never above
  2.4 pips); tick volume follows activity and volatility. "sigma" below is the pair's one-minute
  volatility (its daily volatility / sqrt(1440)).
- **Insights.** One per *slot*: every day at 06:00 and 18:00 UTC when the 8 hours before and the
  4 hours after are all open. Timeframe 15m, horizon 4H, entry = the close at created_at, stop
  3-4 ATR(15m) away, target at 2R. Strategies ZenithEdge / MeanRevert / BreakoutPro; each claims
  the pattern it trades (BOS / FVG / BREAKOUT, else another one) only when `verify_patterns` finds
  it on the 15m candles before created_at in the insight's direction (or none).
- **Outcomes and causes.** Each slot gets a plan: succeed (price bridges to the target), or fail
  with one injected cause, shaped on the 4 hours after created_at only (so insights never
  interfere); the 8 hours before carry only a regime change's prior trend:

  ==================  ==========================================================================
  news_shock          price chops near entry (quiet), then a high-impact event for one of the
                      pair's currencies is released and 0-6 min later a jump of D + 6-14 sigma
                      (D = the stop distance) goes through the stop, with a decaying aftershock
  external_shock      the same jump with no high-impact news for the pair within an hour (a
                      flash move)
  volatility_spike    from a quiet start, volatility jumps 2.5-4x for 70-150 min and a bridge at
                      that volatility carries price through the stop within 20-60 min
  liquidity_event     volume collapses to 8-22%; price steps through the stop in gaps (bars
                      opening 0.8-1.6 ATR away from the previous close) with a few missing bars
  regime_drift        a trend with the trade for the 8 h before created_at, then an opposite
                      trend (4.5-6 sigma per 15 min) through the stop and on
  user_psychology     price first runs 50-85% of the risk towards the target; the user fills
                      25-90 min after created_at (late, chasing), then price falls to the stop
  spread_slippage     a plain failure (below) plus one of: a fill 4-12 pips adverse at once; a
                      4-9 pip spread at entry; a 4-9 pip spread around the stop
  detector_misid      a plain failure; the insight claims a pattern that verify_patterns does not
                      find in its direction
  model_error         a plain failure with confidence 86-99 (others have 35-80)
  false_positive      plain failures of a weak setup: on two symbols per seed, every MeanRevert
                      insight (half of their slots, claiming FVG) fails 90% of the time
                      (elsewhere insights fail 40% of the time)
  unknown             a plain failure with nothing else: a normal setup, ordinary confidence
  ==================  ==========================================================================

  A *plain failure* is a Brownian bridge from entry through the stop over 100-220 minutes at the
  ordinary volatility. News events of the rule-built scheduled calendar are loaded too; a slot
  with a scheduled high-impact event for its currencies within an hour of its window is planned
  to succeed, so only injected news shocks meet news.

`generate()` returns the candles, the insights, the news and, separately, ``truth`` (the planned
outcome per insight; ``evaluated`` marks insights created at least ``WARMUP_DAYS`` into their
pair's period, once false_positive has a trailing history to go on). `analyze_failures` never
sees ``truth``. `timing_case()` builds a dense, overlapping set of insights on the same market
for the speed measurement only.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopsy_assets.data.market import HOUR_ACTIVITY, HOUR_SPREAD, SYMBOL_PARAMS, resample
from autopsy_assets.data.news_calendar import scheduled_calendar
from autopsy_assets.domain import instruments
from autopsy_assets.domain.patterns import verify_patterns

SYMBOLS = ("EURUSD", "GBPUSD", "AUDUSD", "NZDUSD", "USDCHF", "USDCAD", "EURGBP", "USDJPY",
           "EURJPY")
CAUSES = ("news_shock", "external_shock", "volatility_spike", "liquidity_event", "regime_drift",
          "user_psychology", "spread_slippage", "detector_misid", "model_error",
          "false_positive", "unknown")
NORMAL_FAIL_CAUSES = tuple(c for c in CAUSES if c != "false_positive")
STRATEGIES = ("ZenithEdge", "MeanRevert", "BreakoutPro")
STRATEGY_P = (0.45, 0.30, 0.25)
PREFERRED = {"ZenithEdge": "BOS", "MeanRevert": "FVG", "BreakoutPro": "BREAKOUT"}
KINDS = ("BOS", "FVG", "OB", "BREAKOUT")
HORIZON = "4H"
TIMEFRAME = "15m"
START = "2019-01-07"
WARMUP_DAYS = 35          # accuracy is reported for insights created after this many days
NORMAL_FAIL_P = 0.40
FP_FAIL_P = 0.90
FP_SHARE = 0.50           # share of an FP symbol's slots that are the weak MeanRevert/FVG setup
PRE_MIN, WIN_MIN = 480, 240
SLOT_HOURS = (6, 18)

_NS_MIN = 60 * 10**9
_NEWS_TITLES = {
    "USD": ("US CPI", "US Non-Farm Payrolls", "FOMC statement", "Fed Chair testimony"),
    "EUR": ("ECB press conference", "Eurozone CPI flash"),
    "GBP": ("BoE rate decision", "UK CPI"),
    "JPY": ("BoJ policy statement", "Japan CPI"),
    "CHF": ("SNB policy assessment",),
    "CAD": ("BoC rate decision", "Canada employment"),
    "AUD": ("RBA rate decision", "Australia employment"),
    "NZD": ("RBNZ rate decision",),
}


@dataclass
class RcaMarket:
    candles: pd.DataFrame
    insights: pd.DataFrame
    news: pd.DataFrame
    truth: pd.DataFrame          # insight_id, planned (succeeded | a cause), symbol, created_at
    seed: int


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed)] + [zlib.crc32(str(k).encode()) for k in keys]))


def _ar1(rng, n: int, half_life: float) -> np.ndarray:
    a = 1.0 - 0.5 ** (1.0 / half_life)
    sd = np.sqrt(a / (2.0 - a))
    x = rng.standard_normal(n)
    x[0] *= sd
    return pd.Series(x).ewm(alpha=a, adjust=False).mean().to_numpy() / sd


def _bridge(e: np.ndarray, end: float) -> np.ndarray:
    """Increments of a path driven by ``e`` pinned to reach ``end`` after len(e) steps."""
    w = np.cumsum(e)
    t = np.arange(1, len(e) + 1) / len(e)
    x = w - t * w[-1] + t * end
    return np.diff(np.concatenate([[0.0], x]))


class _Symbol:
    """Arrays of one symbol's minute grid: base noise, then injections, then candles."""

    def __init__(self, symbol: str, start: pd.Timestamp, weeks: int, seed: int):
        self.symbol = symbol
        inst = instruments.get(symbol)
        self.pip, self.digits = inst.pip_size, inst.digits
        self.params = SYMBOL_PARAMS[symbol]
        rng = _rng(seed, "market", symbol)
        n = weeks * 7 * 1440
        self.t0 = start.value
        self.grid = self.t0 + np.arange(n, dtype=np.int64) * _NS_MIN
        iv = instruments.closure_intervals(inst.closure, start,
                                           pd.Timestamp(int(self.grid[-1]), tz="UTC"))
        k = np.searchsorted(iv[:, 0], self.grid, side="right") - 1
        kk = np.clip(k, 0, None)
        self.closed = (k >= 0) & (self.grid < iv[kk, 1]) if len(iv) else np.zeros(n, bool)
        hour = (self.grid // (3600 * 10**9)) % 24
        act = 1.0 + 0.3 * (HOUR_ACTIVITY[hour] - 1.0)
        act = act / np.sqrt(np.mean(act ** 2))
        sv = np.exp(0.12 * _ar1(rng, n, 30.0) + 0.12 * _ar1(rng, n, 480.0) - 0.0144)
        df = 5.0
        t = rng.standard_t(df, n) / np.sqrt(df / (df - 2.0))
        self.sigma = self.params.daily_vol / np.sqrt(1440.0)        # one-minute log sigma
        self.scale = act * sv                                       # local vol in sigma units
        self.e = self.scale * t                                     # base increments (sigma)
        self.r = self.sigma * self.e                                # intrabar log return
        self.g = np.zeros(n)                                        # opening gap (log)
        reopen = np.zeros(n, dtype=bool)
        reopen[1:] = self.closed[:-1] & ~self.closed[1:]
        self.g[reopen] = rng.standard_normal(int(reopen.sum())) * self.sigma * np.sqrt(60.0)
        self.wick = np.ones(n)                                      # wick (range) multiplier
        self.vol_mult = np.ones(n)
        base_sp = min(self.params.spread_pips, 1.2)
        sp = base_sp * (1 + 0.25 * (HOUR_SPREAD[hour] - 1)) * np.exp(0.1 * rng.standard_normal(n))
        self.spread_pips = np.minimum(sp, 2.4)
        self.volume = self.params.volume * act * sv * np.exp(0.2 * rng.standard_normal(n))
        self.u_wick = np.abs(rng.standard_normal((2, n)))
        self.drop = self.closed.copy()

    def idx(self, ns: int) -> int:
        return int((ns - self.t0) // _NS_MIN)

    def log_close(self) -> np.ndarray:
        return np.log(self.params.level) + np.cumsum(np.where(self.closed, 0.0, self.g + self.r))

    def candles(self) -> pd.DataFrame:
        lc = self.log_close()
        close = np.exp(lc)
        open_ = close * np.exp(-np.where(self.closed, 0.0, self.r))
        w = 0.5 * self.sigma * self.scale * self.wick
        hi = np.maximum(open_, close) * (1 + w * self.u_wick[0])
        lo = np.minimum(open_, close) * (1 - w * self.u_wick[1])
        d = self.digits
        keep = ~self.drop
        o, c = np.round(open_[keep], d), np.round(close[keep], d)
        h = np.maximum(np.round(hi[keep], d), np.maximum(o, c))
        low = np.minimum(np.round(lo[keep], d), np.minimum(o, c))
        n = int(keep.sum())
        return pd.DataFrame({
            "symbol": np.full(n, self.symbol, dtype=object), "timeframe": "1m",
            "ts": pd.DatetimeIndex(self.grid[keep].view("datetime64[ns]")).tz_localize("UTC"),
            "open": o, "high": h, "low": low, "close": c,
            "volume": np.maximum(np.round(self.volume[keep] * self.vol_mult[keep]), 1.0),
            "spread": np.round(self.spread_pips[keep] * self.pip, d + 1),
        })


def _slots(sym: _Symbol, start: pd.Timestamp, weeks: int) -> np.ndarray:
    """Created-at times (ns) of this symbol's slots: open 8h before and 4h(+1h) after, no
    scheduled high-impact news for its currencies within an hour of the window."""
    days = pd.date_range(start + pd.Timedelta(days=3), periods=weeks * 7 - 4, freq="D", tz="UTC")
    out = []
    for d in days:
        for h in SLOT_HOURS:
            c = (d + pd.Timedelta(hours=h)).value
            i = sym.idx(c)
            if i - PRE_MIN < 0 or i + WIN_MIN + 60 > len(sym.grid):
                continue
            if sym.closed[i - PRE_MIN:i + WIN_MIN + 60].any():
                continue
            out.append(c)
    return np.asarray(out, dtype=np.int64)


def generate(seed: int = 1, weeks: int = 26, symbols=SYMBOLS, start: str = START) -> RcaMarket:
    """The benchmark market for ``seed`` (see the module docstring)."""
    t_start = pd.Timestamp(start, tz="UTC")
    # each pair runs over its own period, so one pair's news never lands in another's windows
    starts = {s: t_start + pd.Timedelta(weeks=k * (weeks + 1)) for k, s in enumerate(symbols)}
    t_end = t_start + pd.Timedelta(weeks=len(symbols) * (weeks + 1))
    rng = _rng(seed, "plan")
    sched = scheduled_calendar(t_start - pd.Timedelta(days=1), t_end + pd.Timedelta(days=1))
    sched = sched.drop(columns=["source"])
    fp_symbols = set(rng.choice(list(symbols), size=2, replace=False).tolist())

    syms = {s: _Symbol(s, starts[s], weeks, seed) for s in symbols}
    plans = []
    for s in symbols:
        S = syms[s]
        ccy = instruments.currencies(s)
        mine = sched["currencies"].map(lambda cs, ccy=ccy: any(c in ccy for c in cs))
        hi = sched[(sched["impact"] == "high") & mine]["ts"].astype("int64").to_numpy()
        for c in _slots(S, starts[s], weeks):
            near = np.any((hi >= c - 60 * _NS_MIN) & (hi <= c + (WIN_MIN + 60) * _NS_MIN))
            if s in fp_symbols:   # there, every MeanRevert insight is the weak setup
                fp_setup = bool(rng.random() < FP_SHARE)
                strategy = "MeanRevert" if fp_setup else ("ZenithEdge", "BreakoutPro")[
                    int(rng.random() < 0.4)]
            else:
                fp_setup = False
                strategy = STRATEGIES[rng.choice(3, p=STRATEGY_P)]
            if near:
                plan = "succeeded"
            elif fp_setup:
                plan = "false_positive" if rng.random() < FP_FAIL_P else "succeeded"
            else:
                plan = (NORMAL_FAIL_CAUSES[rng.integers(len(NORMAL_FAIL_CAUSES))]
                        if rng.random() < NORMAL_FAIL_P else "succeeded")
            plans.append({"symbol": s, "c": int(c), "plan": plan, "strategy": strategy,
                          "fp_setup": fp_setup, "period_start": starts[s].value})
    P = pd.DataFrame(plans).sort_values(["c", "symbol"], kind="stable").reset_index(drop=True)
    n = len(P)
    P["insight_id"] = [f"S{seed}-{i:05d}" for i in range(n)]
    P["side_sign"] = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    P["m_stop"] = rng.uniform(3.0, 4.0, n)
    P["D"] = P["m_stop"] * np.sqrt(15.0) * 1.2            # stop distance, one-minute sigmas

    # 1. prior trends of regime changes (the only change before created_at)
    for r in P[P["plan"] == "regime_drift"].itertuples():
        S = syms[r.symbol]
        i = S.idx(r.c)
        d = rng.uniform(2.5, 3.5) / 15.0
        S.r[i - PRE_MIN:i] += r.side_sign * d * S.sigma
        S.e[i - PRE_MIN:i] += r.side_sign * d

    # 2. which patterns exist before created_at, both directions (prices before any window)
    verified = _verified_kinds(P, syms)

    # 3. sides and claims
    sides, claims = [], []
    for k, r in enumerate(P.itertuples()):
        sgn = r.side_sign
        v_long, v_short = verified[k]
        if r.plan == "false_positive" or (r.fp_setup and r.plan == "succeeded"):
            opts = [g for g, v in ((1.0, v_long), (-1.0, v_short)) if "FVG" in v]
            sgn = opts[rng.integers(len(opts))] if opts else sgn
        elif r.plan == "detector_misid":    # a side on which some kind is absent
            opts = [g for g, v in ((1.0, v_long), (-1.0, v_short)) if len(v) < len(KINDS)]
            sgn = opts[rng.integers(len(opts))] if opts else sgn
        have = v_long if sgn > 0 else v_short
        pref = PREFERRED[r.strategy]
        if r.plan == "detector_misid":
            missing = [kd for kd in KINDS if kd not in have]
            claim = (pref if pref in missing else missing[rng.integers(len(missing))]) \
                if missing else ""
            if claim and have and rng.random() < 0.3:
                claim = "|".join(sorted({claim, min(have)}))
        elif r.fp_setup:
            claim = "FVG" if "FVG" in have else ""
        elif pref in have and rng.random() < 0.85:
            claim = pref
        elif have and rng.random() < 0.6:
            hv = sorted(have)
            claim = hv[rng.integers(len(hv))]
        else:
            claim = ""
        sides.append(sgn)
        claims.append(claim)
    P["side_sign"] = sides
    P["patterns"] = claims
    P.loc[(P["plan"] == "detector_misid") & (P["patterns"] == ""), "plan"] = "unknown"

    # 4. the windows
    news_rows = []
    extra = {k: np.full(n, np.nan) for k in ("fill_price", "filled_min", "slip_pips")}
    acted = np.zeros(n, dtype=bool)
    for k, r in enumerate(P.itertuples()):
        S = syms[r.symbol]
        i = S.idx(r.c)
        out = _inject(S, i, r.plan, r.side_sign, r.D, rng)
        if out.get("news_at") is not None:
            cur = instruments.currencies(r.symbol)
            c = cur[rng.integers(len(cur))]
            titles = _NEWS_TITLES.get(c, (f"{c} policy decision",))
            news_rows.append({"event_id": f"INJ{seed}-{k:05d}",
                              "ts": pd.Timestamp(r.c + out["news_at"] * _NS_MIN, tz="UTC"),
                              "currencies": [c], "impact": "high",
                              "title": titles[rng.integers(len(titles))]})
        if "fill_after" in out:
            acted[k] = True
            extra["filled_min"][k] = out["fill_after"]
        if "slip_pips" in out:
            extra["slip_pips"][k] = out["slip_pips"]

    # 5. final candles, entries, fills
    candles = pd.concat([syms[s].candles() for s in sorted(symbols)], ignore_index=True)
    candles["ts"] = candles["ts"].dt.as_unit("ns")
    close_at = {}
    for s in symbols:
        S = syms[s]
        close_at[s] = np.round(np.exp(S.log_close()), S.digits)
    entry = np.empty(n)
    stop = np.empty(n)
    target = np.empty(n)
    conf = rng.uniform(35, 80, n)
    conf[P["plan"].to_numpy() == "model_error"] = rng.uniform(86, 99, int(
        (P["plan"] == "model_error").sum()))
    for k, r in enumerate(P.itertuples()):
        S = syms[r.symbol]
        i = S.idx(r.c)
        e = close_at[r.symbol][i - 1]
        entry[k] = e
        stop[k] = round(e * (1 - r.side_sign * r.D * S.sigma), S.digits)
        target[k] = round(e * (1 + r.side_sign * 2 * r.D * S.sigma), S.digits)
        plan = r.plan
        if plan == "user_psychology":
            j = i + int(extra["filled_min"][k]) - 1
            extra["fill_price"][k] = close_at[r.symbol][j]
        elif plan == "spread_slippage" and not np.isnan(extra["slip_pips"][k]):
            extra["fill_price"][k] = round(e + r.side_sign * extra["slip_pips"][k] * S.pip,
                                           S.digits)
        elif plan not in ("user_psychology", "spread_slippage") and rng.random() < 0.4:
            acted[k] = True
            extra["filled_min"][k] = rng.uniform(0, 12)
            extra["fill_price"][k] = round(e + r.side_sign * rng.uniform(-0.5, 1.5) * S.pip,
                                           S.digits)
    filtered = (rng.random(n) < 0.08) & ~acted
    created = pd.DatetimeIndex(P["c"].to_numpy().view("datetime64[ns]")).tz_localize("UTC")
    filled_at = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    has_fill = ~np.isnan(extra["filled_min"]) & acted
    filled_at[has_fill] = created[has_fill] + pd.to_timedelta(
        np.round(extra["filled_min"][has_fill] * 60), unit="s")
    insights = pd.DataFrame({
        "insight_id": P["insight_id"], "created_at": created, "symbol": P["symbol"],
        "side": np.where(P["side_sign"] > 0, "long", "short"), "timeframe": TIMEFRAME,
        "entry_price": entry, "stop_loss": stop, "take_profit": target,
        "strategy": P["strategy"], "patterns": P["patterns"],
        "ai_score": np.clip(conf + rng.normal(0, 4, n), 0, 100).round(1),
        "confidence": conf.round(1),
        "status": np.where(filtered, "filtered", "published"),
        "user_id": [f"u{u:02d}" for u in rng.integers(1, 21, n)],
        "user_acted": acted, "fill_price": np.where(acted, extra["fill_price"], np.nan),
        "filled_at": filled_at.where(acted, pd.NaT),
    })
    insights["created_at"] = insights["created_at"].dt.as_unit("ns")
    insights["filled_at"] = insights["filled_at"].dt.as_unit("ns")

    # 6. news: the scheduled calendar, injected shocks, and medium/low noise
    span_min = int((t_end - t_start).total_seconds() // 60)
    noise_n = int(span_min / 1440 * 6)
    ccys = sorted({c for s in symbols for c in instruments.currencies(s)})
    noise = pd.DataFrame({
        "event_id": [f"NOISE{seed}-{i:05d}" for i in range(noise_n)],
        "ts": pd.to_datetime(t_start.value + rng.integers(0, span_min, noise_n)
                             * _NS_MIN, utc=True),
        "currencies": [[ccys[i]] for i in rng.integers(0, len(ccys), noise_n)],
        "impact": rng.choice(["medium", "low"], noise_n),
        "title": "Data release (minor)"})
    news = pd.concat([sched, pd.DataFrame(news_rows), noise], ignore_index=True)
    news["ts"] = pd.to_datetime(news["ts"], utc=True).dt.as_unit("ns")
    news = news.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)

    # 7. claims re-checked on the final candles: a plan's claims must hold as planned
    final = _final_claims(insights, candles)
    bad_claim = final["unverified"].to_numpy(dtype=bool)
    misid = P["plan"].to_numpy() == "detector_misid"
    keep_claim = np.where(misid, insights["patterns"], np.where(bad_claim, "",
                                                                insights["patterns"]))
    insights["patterns"] = keep_claim
    planned = P["plan"].to_numpy(dtype=object).copy()
    planned[misid & ~bad_claim] = "unknown"     # the planted claim verified after all
    warm = (P["c"] - P["period_start"]).to_numpy() >= WARMUP_DAYS * 1440 * _NS_MIN
    truth = pd.DataFrame({"insight_id": P["insight_id"], "planned": planned,
                          "symbol": P["symbol"], "created_at": insights["created_at"],
                          "fp_setup": P["fp_setup"], "evaluated": warm})
    return RcaMarket(candles=candles, insights=insights, news=news, truth=truth, seed=seed)


def _verified_kinds(P: pd.DataFrame, syms: dict) -> list[tuple[set, set]]:
    """Per slot: the pattern kinds verified before created_at, long and short."""
    parts = [syms[s].candles() for s in syms]
    c15 = resample(pd.concat(parts, ignore_index=True), TIMEFRAME)
    created = pd.DatetimeIndex(P["c"].to_numpy().view("datetime64[ns]")).tz_localize("UTC")
    out = [(set(), set()) for _ in range(len(P))]
    for side, slot in (("long", 0), ("short", 1)):
        q = pd.DataFrame({"insight_id": np.arange(len(P)), "created_at": created,
                          "symbol": P["symbol"].to_numpy(), "timeframe": TIMEFRAME,
                          "side": side, "patterns": "|".join(KINDS)})
        v = verify_patterns(q, c15)
        for iid, kind in v.loc[v["verified"], ["insight_id", "pattern"]].itertuples(index=False):
            out[int(iid)][slot].add(kind)
    return out


def _final_claims(insights: pd.DataFrame, candles: pd.DataFrame) -> pd.DataFrame:
    c15 = resample(candles, TIMEFRAME)
    q = insights[insights["patterns"] != ""]
    v = verify_patterns(q[["insight_id", "created_at", "symbol", "timeframe", "side",
                           "patterns"]], c15)
    bad = set(v.loc[~v["verified"], "insight_id"])
    return pd.DataFrame({"insight_id": insights["insight_id"],
                         "unverified": insights["insight_id"].isin(bad).to_numpy()})


def _inject(S: _Symbol, i: int, plan: str, sgn: float, D: float, rng) -> dict:
    """Shape minutes [i, i + 240) of ``S`` for ``plan``; returns extra facts (news time, fill)."""
    L = WIN_MIN
    e = S.e[i:i + L].copy()
    dx = np.empty(L)
    out: dict = {}

    def plain(a: int, end_extra: float, start_level: float = 0.0) -> None:
        T = int(rng.integers(100, 221))
        T = min(T, L - a)
        dx[a:a + T] = _bridge(e[a:a + T], -(D + end_extra) - start_level)
        dx[a + T:] = e[a + T:]

    if plan == "succeeded":
        T = int(rng.integers(60, 201))
        dx[:T] = _bridge(0.9 * e[:T], 2.3 * D)
        dx[T:] = e[T:]
    elif plan in ("false_positive", "model_error", "detector_misid", "unknown"):
        plain(0, rng.uniform(1, 3))
    elif plan in ("news_shock", "external_shock"):
        if plan == "news_shock":
            te = 15 * int(rng.integers(2, 10))
            tj = te + int(rng.integers(0, 7))
            out["news_at"] = te
        else:
            tj = int(rng.integers(20, 140))
        J = D + rng.uniform(6, 14)
        dx[:tj] = _bridge(0.7 * e[:tj], 0.0)
        S.wick[i:i + tj] *= 0.7
        dx[tj] = -0.85 * J
        dx[tj + 1] = -0.15 * J + e[tj + 1]
        after = np.arange(L - tj - 2)
        shock = 1 + 0.6 * np.exp(-after / 8.0)
        dx[tj + 2:] = e[tj + 2:] * shock
        S.wick[i + tj + 2:i + L] *= shock
        S.vol_mult[i + tj:i + L] *= 1 + 1.5 * np.exp(-np.arange(L - tj) / 10.0)
    elif plan == "volatility_spike":
        tv = int(rng.integers(10, 81))
        m = rng.uniform(2.5, 4.0)
        Ls = int(min(rng.integers(70, 151), L - tv))
        Td = int(min(rng.integers(20, 61), Ls - 15))
        dx[:tv] = _bridge(0.8 * e[:tv], 0.0)
        S.wick[i:i + tv] *= 0.8
        dx[tv:tv + Td] = _bridge(m * e[tv:tv + Td], -(D + rng.uniform(2, 4)))
        dx[tv + Td:tv + Ls] = m * e[tv + Td:tv + Ls]
        dx[tv + Ls:] = e[tv + Ls:]
        S.wick[i + tv:i + tv + Ls] *= m
        S.vol_mult[i + tv:i + tv + Ls] *= m ** 0.7
        S.spread_pips[i + tv:i + tv + Ls] = np.minimum(S.spread_pips[i + tv:i + tv + Ls] * 1.3,
                                                       2.4)
    elif plan == "liquidity_event":
        tl = int(rng.integers(15, 81))
        Ll = int(min(rng.integers(90, 161), L - tl))
        dx[:tl] = _bridge(0.8 * e[:tl], 0.0)
        dx[tl:tl + Ll] = 0.3 * e[tl:tl + Ll]
        dx[tl + Ll:] = e[tl + Ll:]
        S.wick[i + tl:i + tl + Ll] *= 0.3
        S.vol_mult[i + tl:i + tl + Ll] *= rng.uniform(0.08, 0.22)
        atr = 1.76 * float(np.mean(S.scale[i - 240:i]))
        j = tl + int(rng.integers(1, 4))
        drops = 0
        while j < tl + Ll:
            S.g[i + j] = -sgn * rng.uniform(0.8, 1.6) * atr * S.sigma
            if drops < 3 and rng.random() < 0.35 and j + 1 < tl + Ll:
                S.drop[i + j + 1] = True
                drops += 1
            j += int(rng.integers(3, 7))
    elif plan == "regime_drift":
        d = rng.uniform(4.5, 6.0) / 15.0
        dx[:] = e - d
    elif plan == "user_psychology":
        delay = int(rng.integers(25, 91))
        f = rng.uniform(0.5, 0.85)
        dx[:delay] = _bridge(0.7 * e[:delay], f * D)
        T2 = int(min(rng.integers(60, 141), L - delay))
        dx[delay:delay + T2] = _bridge(e[delay:delay + T2], -(D + rng.uniform(1, 3)) - f * D)
        dx[delay + T2:] = e[delay + T2:]
        out["fill_after"] = float(delay)
    elif plan == "spread_slippage":
        variant = int(rng.integers(3))
        T = int(rng.integers(100, 221))
        extra_ = rng.uniform(1, 3)
        dx[:T] = _bridge(e[:T], -(D + extra_))
        dx[T:] = e[T:]
        if variant == 0:
            out["fill_after"] = float(rng.uniform(0, 12))
            out["slip_pips"] = float(rng.uniform(4, 12))
        elif variant == 1:
            S.spread_pips[i - 1:i + 3] = rng.uniform(4, 9)
        else:   # a spread blow-out from half way to the stop until after it is hit
            x = np.cumsum(dx[:T])
            a = int(np.argmax(x <= -0.5 * D))
            S.spread_pips[i + a:i + min(T + 10, L)] = rng.uniform(4, 9)
    else:
        raise ValueError(f"unknown plan {plan!r}")
    S.r[i:i + L] = sgn * S.sigma * dx
    return out


def timing_case(n_failed: int = 100_000, seed: int = 99, weeks: int = 8, symbols=SYMBOLS,
                horizons=("1H", "4H")):
    """Insights every few minutes on the benchmark market (overlapping, causes unplanned), for
    the speed measurement only: returns (insights, candles, news), with enough insights that
    labeling gives at least ``n_failed`` failed/neutral audits (repeated with new ids if not)."""
    mk = generate(seed=seed, weeks=weeks, symbols=symbols)
    rng = _rng(seed, "timing")
    c = mk.candles
    parts = []
    for s, g in c.groupby("symbol", sort=True):
        ts = g["ts"].to_numpy()
        close = g["close"].to_numpy()
        rng15 = (g["high"].rolling(15).max() - g["low"].rolling(15).min()).to_numpy()
        idx = np.arange(300, len(g) - 300, 3)
        m = len(idx)
        side = np.where(rng.random(m) < 0.5, 1.0, -1.0)
        risk = np.nan_to_num(rng15[idx - 1], nan=0.0) * rng.uniform(1.0, 2.0, m) + 1e-9
        e = close[idx - 1]
        parts.append(pd.DataFrame({
            "insight_id": [f"T{s}-{k}" for k in range(m)],
            "created_at": pd.DatetimeIndex(ts[idx]), "symbol": s, "timeframe": TIMEFRAME,
            "side": np.where(side > 0, "long", "short"), "entry_price": e,
            "stop_loss": e - side * risk, "take_profit": e + side * 2 * risk,
            "strategy": np.asarray(STRATEGIES)[rng.integers(0, 3, m)],
            "patterns": np.asarray(["", "BOS", "FVG", "OB|FVG", "BREAKOUT"])[
                rng.integers(0, 5, m)],
            "confidence": rng.uniform(30, 99, m).round(1),
            "ai_score": rng.uniform(30, 99, m).round(1),
            "user_acted": rng.random(m) < 0.4}))
    ins = pd.concat(parts, ignore_index=True)
    ins["fill_price"] = np.where(ins["user_acted"], ins["entry_price"], np.nan)
    ins["filled_at"] = ins["created_at"].where(ins["user_acted"]) + pd.to_timedelta(
        rng.uniform(0, 60, len(ins)).round(), unit="min")
    ins["created_at"] = pd.to_datetime(ins["created_at"], utc=True).dt.as_unit("ns")
    ins["filled_at"] = pd.to_datetime(ins["filled_at"], utc=True).dt.as_unit("ns")
    return ins, c, mk.news, horizons
