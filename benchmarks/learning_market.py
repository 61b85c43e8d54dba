"""A GENERATED market for the learning-loop benchmark, where the insights' fate has known causes.

Nothing here is real. Candles come from `autopsy_assets.data.generate_market` (1-minute bars)
and news from the rule-built `scheduled_calendar`; the insights and their outcomes are drawn
here, from a known success probability, so that the meta-model can be compared with an oracle
that knows that probability:

    logit p = B0 + SLOPE * (confidence - 57.5) / 15      (low confidence -> fails)
              - PENALTY * bad_detector                    (claims FVG on GBPUSD in the Asia session)
              - PENALTY * pre_news                        (created 0-30 min before high-impact news
                                                           of either currency of the symbol)

and each outcome is a Bernoulli draw from p (the noise). ``structured=False`` gives a market
with no structure at all: p is the same constant for every insight.

Audits are built directly from those outcomes (horizon 24H, exit 15 min to 24 h after creation,
pnl_pct +rr x risk or -risk), with the columns the learning loop reads. Everything is seeded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from autopsy_assets.data import generate_market
from autopsy_assets.data.news_calendar import scheduled_calendar
from autopsy_assets.domain.news import nearest_high_impact

SYMBOLS = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "BTCUSD")
STRATEGIES = ("ZenithEdge", "MeanRevert", "BreakoutPro")
TIMEFRAMES = ("5m", "15m", "1h")
PATTERNS = ("BOS", "FVG", "OB", "BREAKOUT")
BAD_DETECTOR = ("GBPUSD", "FVG", (0, 8))          # symbol, pattern, session hours [a, b) UTC
PRE_NEWS_MINUTES = 30
B0, SLOPE, PENALTY = -0.35, 1.1, 2.5
PRE_NEWS_SHARE = 0.08                              # insights deliberately placed before news
START = "2018-03-05"
_NS_MIN = 60 * 10**9


@dataclass
class LearningMarket:
    candles: pd.DataFrame | None
    news: pd.DataFrame
    insights: pd.DataFrame
    audits: pd.DataFrame
    truth: pd.DataFrame        # insight_id, p (true success probability), cause flags


def _minutes(candles: pd.DataFrame | None, weeks: int, rng) -> dict[str, np.ndarray]:
    """Candidate creation times (bar closes, int64 ns) per symbol."""
    out = {}
    if candles is not None:
        for sym, g in candles.groupby("symbol", sort=True):
            out[str(sym)] = g["ts"].dt.as_unit("ns").astype("int64").to_numpy() + _NS_MIN
        return out
    start = pd.Timestamp(START, tz="UTC").value
    t = start + np.arange(weeks * 7 * 1440, dtype=np.int64) * _NS_MIN
    dow = pd.DatetimeIndex(t.view("datetime64[ns]")).day_of_week.to_numpy()
    hour = (t // (3600 * 10**9)) % 24
    open_fx = ~((dow == 5) | (dow == 6) | ((dow == 4) & (hour >= 20)))
    for sym in SYMBOLS:
        out[sym] = t if sym == "BTCUSD" else t[open_fx]
    return out


def make_market(n_insights: int = 20000, weeks: int = 12, seed: int = 11,
                structured: bool = True, with_candles: bool = True) -> LearningMarket:
    rng = np.random.default_rng(seed)
    candles = generate_market(SYMBOLS, start=START, weeks=weeks, seed=seed) if with_candles \
        else None
    start = pd.Timestamp(START, tz="UTC")
    end = start + pd.Timedelta(weeks=weeks)
    news = scheduled_calendar(start, end + pd.Timedelta(days=3))
    high = news[news["impact"] == "high"]
    times = _minutes(candles, weeks, rng)
    # leave a day of history before any insight (ATR, patterns, trailing rates)
    first_ok = start.value + 1440 * _NS_MIN
    last_ok = end.value - 1440 * _NS_MIN

    sym = np.asarray(SYMBOLS, dtype=object)[rng.integers(0, len(SYMBOLS), n_insights)]
    created = np.empty(n_insights, dtype=np.int64)
    pre = rng.random(n_insights) < (PRE_NEWS_SHARE if structured else 0.0)
    ev_ns = high["ts"].dt.as_unit("ns").astype("int64").to_numpy()
    ev_ccy = high["currencies"].to_numpy(dtype=object)
    from autopsy_assets.domain.news import parse_currencies, symbol_currencies
    for s in SYMBOLS:
        rows = np.flatnonzero(sym == s)
        cand = times[s]
        cand = cand[(cand >= first_ok) & (cand <= last_ok)]
        created[rows] = rng.choice(cand, size=len(rows))
        # some of them deliberately just before a high-impact event of the symbol's currencies
        ccy = set(symbol_currencies(s))
        mine = np.array([bool(ccy & set(parse_currencies(c))) for c in ev_ccy], dtype=bool)
        ev = ev_ns[mine & (ev_ns > first_ok) & (ev_ns < last_ok)]
        pr = rows[pre[rows]]
        if len(ev) and len(pr):
            t = rng.choice(ev, size=len(pr)) - rng.integers(1, PRE_NEWS_MINUTES + 1,
                                                             len(pr)) * _NS_MIN
            ok = np.isin(t, cand)           # a minute the market is open
            created[pr[ok]] = t[ok]
    order = np.argsort(created, kind="stable")
    sym, created = sym[order], created[order]
    n = n_insights
    created_at = pd.Series(pd.DatetimeIndex(created.view("datetime64[ns]")).tz_localize("UTC"))

    conf = np.round(rng.uniform(20.0, 95.0, n), 1)
    ai = np.round(np.clip(conf + rng.normal(0.0, 10.0, n), 0, 100), 1)
    truth_index = np.round(rng.uniform(0.0, 1.0, n), 3)
    claims = rng.random((n, len(PATTERNS))) < 0.35
    patterns = np.array(["|".join(p for p, c in zip(PATTERNS, row) if c) for row in claims],
                        dtype=object)
    side = np.where(rng.random(n) < 0.5, "long", "short")
    tf = np.asarray(TIMEFRAMES, dtype=object)[rng.integers(0, len(TIMEFRAMES), n)]
    strategy = np.asarray(STRATEGIES, dtype=object)[rng.integers(0, len(STRATEGIES), n)]
    if candles is not None:
        entry = np.empty(n)
        for s, g in candles.groupby("symbol", sort=False):
            rows = np.flatnonzero(sym == s)
            ends = g["ts"].dt.as_unit("ns").astype("int64").to_numpy() + _NS_MIN
            k = np.clip(np.searchsorted(ends, created[rows], side="right") - 1, 0, None)
            entry[rows] = g["close"].to_numpy()[k]
    else:
        entry = np.ones(n)
    risk_pct = rng.uniform(0.15, 0.5, n)
    rr = rng.uniform(1.5, 2.5, n)
    sgn = np.where(side == "long", 1.0, -1.0)
    stop = entry * (1 - sgn * risk_pct / 100)
    target = entry * (1 + sgn * rr * risk_pct / 100)

    hour = created_at.dt.hour.to_numpy()
    b_sym, b_pat, (h0, h1) = BAD_DETECTOR
    bad = (sym == b_sym) & claims[:, PATTERNS.index(b_pat)] & (hour >= h0) & (hour < h1)
    near = nearest_high_impact(news, pd.Series(sym), created_at)
    to_next = near["minutes_to_next"].to_numpy(dtype=float)
    pre_news = (to_next >= 0) & (to_next <= PRE_NEWS_MINUTES)
    low_conf = conf < 45
    if structured:
        logit = B0 + SLOPE * (conf - 57.5) / 15.0 - PENALTY * bad - PENALTY * pre_news
        p = 1.0 / (1.0 + np.exp(-logit))
    else:
        p = np.full(n, 0.4)
    success = rng.random(n) < p

    ids = np.array([f"LM-{i:07d}" for i in range(1, n + 1)], dtype=object)
    users = np.array([f"u{u:03d}" for u in rng.integers(1, 101, n)], dtype=object)
    insights = pd.DataFrame({
        "insight_id": ids, "created_at": created_at, "symbol": sym, "side": side,
        "entry_price": entry, "timeframe": tf, "stop_loss": stop, "take_profit": target,
        "strategy": strategy, "patterns": patterns, "ai_score": ai, "confidence": conf,
        "truth_index": truth_index, "status": "published", "user_id": users,
    })
    exit_ns = created + rng.integers(15, 1441, n) * _NS_MIN
    outcome = np.where(success, "succeeded", "failed")
    audits = pd.DataFrame({
        "insight_id": ids, "horizon": "24H", "symbol": sym, "strategy": strategy,
        "created_at": created_at, "outcome": outcome, "replay_outcome": outcome,
        "exit_time": pd.Series(pd.DatetimeIndex(exit_ns.view("datetime64[ns]"))
                               .tz_localize("UTC")),
        "pnl_pct": np.where(success, rr * risk_pct, -risk_pct), "user_id": users,
    })
    truth = pd.DataFrame({"insight_id": ids, "p": p, "low_confidence": low_conf,
                          "bad_detector": bad, "pre_news": pre_news})
    return LearningMarket(candles, news, insights, audits, truth)
