"""Pattern detection and re-verification (autopsy_assets.domain.patterns).

Hand-built candles first, each with the answer worked out in the comments; then properties on the
real EURUSD hourly sample and on random walks: no look-ahead (detections at bar t never change
when candles are appended), mirror symmetry, and agreement with a plain loop-per-candle reference.
"""
from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopsy_assets.domain.patterns import (
    detect_patterns,
    replay_verified,
    swing_points,
    verify_patterns,
)

T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")
IDENTITY = ["kind", "direction", "ts", "origin_ts", "top", "bottom"]


def H(i: int) -> pd.Timestamp:
    """The open of hourly bar i."""
    return T0 + pd.Timedelta(hours=i)


def make_candles(rows, volume=None, freq="1h") -> pd.DataFrame:
    a = np.asarray(rows, dtype=float)
    out = pd.DataFrame({"ts": pd.date_range(T0, periods=len(a), freq=freq),
                        "open": a[:, 0], "high": a[:, 1], "low": a[:, 2], "close": a[:, 3]})
    if volume is not None:
        out["volume"] = np.asarray(volume, dtype=float)
    return out


def as_rows(patterns: pd.DataFrame) -> list[tuple]:
    """(kind, direction, ts bar, origin bar, top, bottom, filled bar or None) for hourly bars."""
    def bar(t):
        return None if pd.isna(t) else int((t - T0) / pd.Timedelta(hours=1))
    return [(r.kind, r.direction, bar(r.ts), bar(r.origin_ts), round(r.top, 10),
             round(r.bottom, 10), bar(r.filled_ts)) for r in patterns.itertuples()]


def eurusd() -> pd.DataFrame:
    try:
        dist = importlib.metadata.distribution("backtesting")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - test extra missing
        pytest.skip("the EURUSD sample comes with the optional `backtesting` test extra")
    raw = pd.read_csv(dist.locate_file("backtesting/test/EURUSD.csv"), index_col=0,
                      parse_dates=True)
    raw.index = raw.index.tz_localize("UTC")          # the sample's timestamps are naive UTC
    return raw.rename(columns=str.lower).rename_axis("ts").reset_index()


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return eurusd()


# ------------------------------------------------------------------------------------------
# FVG
# ------------------------------------------------------------------------------------------

def test_bullish_fvg_levels_and_fill():
    c = make_candles([
        # open  high  low   close
        (1.00, 1.02, 0.99, 1.01),   # 0: high 1.02 = the gap's bottom
        (1.01, 1.08, 1.01, 1.07),   # 1: the impulse candle -> origin_ts
        (1.07, 1.09, 1.05, 1.08),   # 2: low 1.05 > 1.02 -> bullish FVG [1.02, 1.05], ts = bar 2
        (1.08, 1.08, 1.03, 1.04),   # 3: low 1.03 enters the gap but not through it: not filled
        (1.04, 1.05, 1.01, 1.02),   # 4: low 1.01 <= 1.02: the whole gap traded -> filled at 4
    ])
    # No other 3-candle gap: high[1]=1.08 > low[3]; high[2]=1.09 > low[4]; no bearish one either
    # (low[2]=1.05 is not > high[4]=1.05). Too few bars for swings or breakouts.
    assert as_rows(detect_patterns(c)) == [("FVG", "bullish", 2, 1, 1.05, 1.02, 4)]
    # Before bar 4 the gap is still open: same detection, no fill yet.
    assert as_rows(detect_patterns(c.iloc[:4])) == [("FVG", "bullish", 2, 1, 1.05, 1.02, None)]


def test_bearish_fvg_levels_and_fill():
    c = make_candles([
        (1.10, 1.11, 1.08, 1.09),   # 0: low 1.08 = the gap's top
        (1.09, 1.09, 1.02, 1.03),   # 1: the impulse down -> origin_ts
        (1.03, 1.05, 1.01, 1.02),   # 2: high 1.05 < 1.08 -> bearish FVG [1.05, 1.08], ts = bar 2
        (1.02, 1.07, 1.02, 1.06),   # 3: high 1.07 < 1.08: not filled
        (1.06, 1.09, 1.05, 1.08),   # 4: high 1.09 >= 1.08 -> filled at 4
    ])
    assert as_rows(detect_patterns(c)) == [("FVG", "bearish", 2, 1, 1.08, 1.05, 4)]


def test_touching_candles_are_not_a_gap():
    c = make_candles([
        (1.00, 1.02, 0.99, 1.01),
        (1.01, 1.04, 1.00, 1.03),
        (1.03, 1.05, 1.02, 1.04),   # low 1.02 == high[0] 1.02: touching, no gap
    ])
    assert detect_patterns(c).empty


# ------------------------------------------------------------------------------------------
# Swings, BOS, CHOCH, order blocks (swing_length = 2)
# ------------------------------------------------------------------------------------------

STRUCTURE = [
    # open   high   low    close
    (1.00, 1.01, 0.99, 1.00),    # 0
    (1.00, 1.03, 0.995, 1.02),   # 1
    (1.02, 1.05, 1.01, 1.03),    # 2  swing high 1.05: > highs of 0,1 and >= highs of 3,4
    (1.03, 1.04, 1.00, 1.01),    # 3  bearish
    (1.01, 1.02, 0.98, 0.99),    # 4  bearish; swing low 0.98 (confirmed at 6); the bullish OB
    (0.99, 1.03, 0.985, 1.02),   # 5
    (1.02, 1.07, 1.01, 1.06),    # 6  close 1.06 > 1.05 -> bullish break of swing 2: BOS (first)
    (1.06, 1.08, 1.04, 1.07),    # 7  closes above 1.05 again: no second break of the same level
    (1.07, 1.09, 1.05, 1.08),    # 8  swing high 1.09 (confirmed at 10); bullish: the bearish OB
    (1.08, 1.085, 1.03, 1.04),   # 9  low 1.03 fills the FVG of bar 7
    (1.04, 1.05, 0.97, 0.975),   # 10 close 0.975 < 0.98 -> bearish break of swing 4: CHOCH
    (0.975, 1.00, 0.96, 0.99),   # 11 high 1.00 < low[9] 1.03 -> bearish FVG [1.00, 1.03]
    (0.99, 1.06, 0.98, 1.05),    # 12 high 1.06 >= 1.05: mitigates the bearish OB, fills the FVG
]


def test_swing_points_are_stamped_where_confirmed():
    sw = swing_points(make_candles(STRUCTURE), swing_length=2)
    got = [(r.side, int((r.ts - T0) / pd.Timedelta(hours=1)),
            int((r.origin_ts - T0) / pd.Timedelta(hours=1)), r.level) for r in sw.itertuples()]
    # Swing high at 2 is known 2 bars later (bar 4), the low at 4 at bar 6, the high at 8 at 10.
    # Bar 10's low 0.97 is not a swing: bar 11's low 0.96 is lower.
    assert got == [("high", 4, 2, 1.05), ("low", 6, 4, 0.98), ("high", 10, 8, 1.09)]


def test_bos_then_choch_with_order_blocks():
    got = as_rows(detect_patterns(make_candles(STRUCTURE), swing_length=2))
    assert got == [
        # Bar 6 closes 1.06 above the swing high of bar 2 (1.05, confirmed at 4): bullish BOS
        # (no earlier break, so no trend to change).
        ("BOS", "bullish", 6, 2, 1.05, 1.05, None),
        # Its order block: the lowest low between swing (2) and break (6) is bar 4 (0.98), a
        # bearish candle -> zone [0.98, 1.02]. First later low <= 1.02: bar 10 (0.97).
        ("OB", "bullish", 6, 4, 1.02, 0.98, 10),
        # high[5] 1.03 < low[7] 1.04: bullish FVG [1.03, 1.04]; bar 9's low 1.03 fills it.
        ("FVG", "bullish", 7, 6, 1.04, 1.03, 9),
        # Bar 10 closes 0.975 below the swing low of bar 4 (0.98, confirmed at 6). The previous
        # break was bullish, so this one is against the trend: CHOCH.
        ("CHOCH", "bearish", 10, 4, 0.98, 0.98, None),
        # Its order block: the highest high between swing (4) and break (10) is bar 8 (1.09),
        # a bullish candle -> zone [1.05, 1.09]; bar 12's high 1.06 >= 1.05 mitigates it.
        ("OB", "bearish", 10, 8, 1.09, 1.05, 12),
        # low[9] 1.03 > high[11] 1.00: bearish FVG [1.00, 1.03]; bar 12's high 1.06 fills it.
        ("FVG", "bearish", 11, 10, 1.03, 1.0, 12),
    ]


def test_bos_continuation_is_bos_and_a_wick_is_no_break():
    # Same as STRUCTURE up to bar 5, then bar 6 only wicks above 1.05 and closes at 1.04.
    wick = STRUCTURE[:6] + [(1.02, 1.07, 1.01, 1.04), (1.04, 1.045, 1.02, 1.03)]
    p = detect_patterns(make_candles(wick), swing_length=2)
    assert p[p["kind"].isin(["BOS", "CHOCH", "OB"])].empty
    # Two bullish breaks in a row: the second continues the trend, so it is a BOS as well.
    up = [
        (1.00, 1.01, 0.99, 1.00), (1.00, 1.03, 0.99, 1.02),
        (1.02, 1.05, 1.01, 1.03),    # 2  swing high 1.05
        (1.03, 1.04, 1.00, 1.01), (1.01, 1.02, 1.00, 1.01),
        (1.01, 1.06, 1.01, 1.055),   # 5  close 1.055 > 1.05: BOS (first break), origin 2
        (1.055, 1.10, 1.05, 1.09),   # 6  close above 1.05 again: level already broken
        (1.09, 1.09, 1.06, 1.07),    # 7
        (1.07, 1.08, 1.06, 1.07),    # 8  -> swing high 1.10 at bar 6 confirmed here
        (1.07, 1.12, 1.07, 1.11),    # 9  close 1.11 > 1.10: a second bullish break -> BOS
    ]
    p = detect_patterns(make_candles(up), swing_length=2)
    breaks = as_rows(p[p["kind"].isin(["BOS", "CHOCH"])])
    assert breaks == [("BOS", "bullish", 5, 2, 1.05, 1.05, None),
                      ("BOS", "bullish", 9, 6, 1.1, 1.1, None)]


def test_break_without_an_opposite_candle_has_no_order_block():
    c = make_candles([
        (1.00, 1.01, 0.99, 1.00),    # 0 doji
        (1.00, 1.03, 0.995, 1.02),   # 1
        (1.02, 1.05, 1.01, 1.03),    # 2 swing high 1.05
        (1.03, 1.04, 1.00, 1.03),    # 3 doji (open == close): neither bullish nor bearish
        (1.01, 1.02, 0.98, 1.01),    # 4 doji at the lowest low 0.98
        (1.01, 1.03, 0.985, 1.02),   # 5
        (1.02, 1.07, 1.01, 1.06),    # 6 close 1.06 > 1.05: BOS
    ])
    # Between the swing (2) and the lowest low (4) there is no bearish candle: no order block.
    assert as_rows(detect_patterns(c, swing_length=2)) == [
        ("BOS", "bullish", 6, 2, 1.05, 1.05, None)]


# ------------------------------------------------------------------------------------------
# Breakout (lookback 5)
# ------------------------------------------------------------------------------------------

QUIET = [(1.00, 1.02, 0.99, 1.01)] * 5          # range 1.02-0.99 = 0.03 each, volume 100 each
BREAK_UP = (1.01, 1.06, 1.00, 1.05)             # close 1.05 > 1.02, range 0.06 >= 0.03


def test_breakout_with_volume_confirmation():
    c = make_candles(QUIET + [BREAK_UP], volume=[100] * 5 + [150])   # 150 >= mean 100
    # top/bottom: the broken 5-bar range [0.99, 1.02]; origin: bar 0, the first to set 1.02.
    assert as_rows(detect_patterns(c, breakout_lookback=5)) == [
        ("BREAKOUT", "bullish", 5, 0, 1.02, 0.99, None)]


def test_breakout_without_volume_confirmation_is_rejected():
    c = make_candles(QUIET + [BREAK_UP], volume=[100] * 5 + [50])    # 50 < mean 100
    assert detect_patterns(c, breakout_lookback=5).empty
    # The same bars without a volume column: range alone confirms it.
    assert len(detect_patterns(c.drop(columns="volume"), breakout_lookback=5)) == 1
    # A stricter range multiplier rejects it: 0.06 < 2.5 x 0.03.
    assert detect_patterns(c.drop(columns="volume"), breakout_lookback=5,
                           breakout_range_mult=2.5).empty


def test_small_bar_over_the_range_is_not_a_breakout():
    drift = (1.01, 1.035, 1.01, 1.03)               # close 1.03 > 1.02 but range 0.025 < 0.03
    assert detect_patterns(make_candles(QUIET + [drift]), breakout_lookback=5).empty


def test_bearish_breakout():
    down = (1.00, 1.00, 0.95, 0.96)                 # close 0.96 < 0.99, range 0.05 >= 0.03
    c = make_candles(QUIET + [down], volume=[100] * 5 + [300])
    assert as_rows(detect_patterns(c, breakout_lookback=5)) == [
        ("BREAKOUT", "bearish", 5, 0, 1.02, 0.99, None)]


# ------------------------------------------------------------------------------------------
# Input handling
# ------------------------------------------------------------------------------------------

def test_naive_ts_is_refused_and_missing_columns_named():
    c = make_candles(STRUCTURE)
    with pytest.raises(ValueError, match="`ts`"):
        detect_patterns(c.assign(ts=c["ts"].dt.tz_localize(None)))
    with pytest.raises(ValueError, match="close"):
        detect_patterns(c.drop(columns="close"))


def test_unsorted_and_multi_symbol_frames(sample):
    part = sample.iloc[:600]
    one = detect_patterns(part)
    shuffled = part.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(detect_patterns(shuffled), one)
    # Two symbols in one frame: each group detected on its own; the mirror image (prices
    # negated, high<->low) turns every bullish pattern into the same bearish one.
    mirror = part.assign(open=-part["open"], high=-part["low"], low=-part["high"],
                         close=-part["close"])
    both = pd.concat([part.assign(symbol="EURUSD", timeframe="1h"),
                      mirror.assign(symbol="MIRROR", timeframe="1h")])
    got = detect_patterns(both)
    assert list(got.columns[:2]) == ["symbol", "timeframe"]
    eur = got[got["symbol"] == "EURUSD"].drop(columns=["symbol", "timeframe"])
    pd.testing.assert_frame_equal(eur.reset_index(drop=True), one)
    mir = got[got["symbol"] == "MIRROR"]
    flipped = one.assign(direction=one["direction"].map({"bullish": "bearish",
                                                         "bearish": "bullish"}),
                         top=-one["bottom"], bottom=-one["top"])
    key = ["ts", "kind", "direction", "origin_ts"]
    pd.testing.assert_frame_equal(
        mir.drop(columns=["symbol", "timeframe"]).sort_values(key).reset_index(drop=True),
        flipped.sort_values(key).reset_index(drop=True))


# ------------------------------------------------------------------------------------------
# No look-ahead
# ------------------------------------------------------------------------------------------

def assert_prefix_stable(candles: pd.DataFrame, ks, **kw) -> None:
    full = detect_patterns(candles, **kw)
    assert (full["ts"] >= full["origin_ts"]).all()
    for k in ks:
        head = detect_patterns(candles.iloc[:k], **kw)
        cutoff = candles["ts"].iloc[k] if k < len(candles) else full["ts"].max() + pd.Timedelta(1)
        expected = full.loc[full["ts"] < cutoff, IDENTITY].reset_index(drop=True)
        pd.testing.assert_frame_equal(head[IDENTITY].reset_index(drop=True), expected)
        # A fill known on the shorter history is the same fill on the longer one.
        known = head["filled_ts"].notna().to_numpy()
        assert (head["filled_ts"][known].to_numpy()
                == full.loc[full["ts"] < cutoff, "filled_ts"].to_numpy()[known]).all()


def test_no_lookahead_on_eurusd(sample):
    p = detect_patterns(sample)
    assert set(p["kind"]) == {"BOS", "CHOCH", "FVG", "OB", "BREAKOUT"}
    assert (p["ts"] >= p["origin_ts"]).all()
    assert (p["filled_ts"].isna() | (p["filled_ts"] > p["ts"])).all()
    assert_prefix_stable(sample, [7, 60, 333, 1000, 2417, 4000, len(sample) - 1])
    assert_prefix_stable(sample, [150, 1500, 3100], swing_length=3, breakout_lookback=10)


@st.composite
def random_walks(draw):
    """Integer-valued random walks: ties on highs, lows and closes are frequent on purpose."""
    n = draw(st.integers(12, 160))
    steps = np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=float)
    wicks = np.array(draw(st.lists(st.integers(0, 2), min_size=2 * n, max_size=2 * n)),
                     dtype=float)
    close = 100.0 + np.cumsum(steps)
    open_ = np.concatenate([[100.0], close[:-1]])
    c = pd.DataFrame({"ts": pd.date_range(T0, periods=n, freq="5min"), "open": open_,
                      "high": np.maximum(open_, close) + wicks[:n],
                      "low": np.minimum(open_, close) - wicks[n:], "close": close})
    if draw(st.booleans()):
        c["volume"] = np.array(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), float)
    return c


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=random_walks(), swing=st.integers(1, 4), lookback=st.integers(1, 8),
       k=st.integers(1, 160))
def test_no_lookahead_on_random_walks(c, swing, lookback, k):
    assert_prefix_stable(c, [min(k, len(c))], swing_length=swing, breakout_lookback=lookback)


# ------------------------------------------------------------------------------------------
# Agreement with a loop-per-candle reference that follows the definitions literally
# ------------------------------------------------------------------------------------------

def reference(c: pd.DataFrame, n: int, N: int, km: float = 1.0, kv: float = 1.0) -> list[tuple]:
    o, h, l, cl = (c[x].to_numpy() for x in ("open", "high", "low", "close"))
    v = c["volume"].to_numpy() if "volume" in c else None
    L, out = len(c), []

    def first(cond, start):
        return next((j for j in range(start, L) if cond(j)), None)

    for i in range(2, L):
        if h[i - 2] < l[i]:
            out.append(("FVG", "bullish", i, i - 1, l[i], h[i - 2],
                        first(lambda j: l[j] <= h[i - 2], i + 1)))
        if l[i - 2] > h[i]:
            out.append(("FVG", "bearish", i, i - 1, l[i - 2], h[i],
                        first(lambda j: h[j] >= l[i - 2], i + 1)))
    sh = {j + n: j for j in range(n, L - n)
          if h[j] > max(h[j - n:j]) and h[j] >= max(h[j + 1:j + n + 1])}
    sl = {j + n: j for j in range(n, L - n)
          if l[j] < min(l[j - n:j]) and l[j] <= min(l[j + 1:j + n + 1])}
    last_hi = last_lo = prev = None
    for t in range(L):
        if t - 1 in sh:                      # confirmed on the previous bar: usable from t
            last_hi = sh[t - 1]
        if t - 1 in sl:
            last_lo = sl[t - 1]
        for d, j in (("bullish", last_hi), ("bearish", last_lo)):
            if j is None or not (cl[t] > h[j] if d == "bullish" else cl[t] < l[j]):
                continue
            level = h[j] if d == "bullish" else l[j]
            out.append(("CHOCH" if prev not in (None, d) else "BOS", d, t, j, level, level, None))
            prev = d
            seg = range(j + 1, t)
            if d == "bullish":
                last_hi = None
                m = min(seg, key=lambda k: (l[k], k))
                ob = max((k for k in range(j + 1, m + 1) if cl[k] < o[k]), default=None)
                if ob is not None:
                    out.append(("OB", d, t, ob, h[ob], l[ob],
                                first(lambda x: l[x] <= h[ob], t + 1)))
            else:
                last_lo = None
                m = min(seg, key=lambda k: (-h[k], k))
                ob = max((k for k in range(j + 1, m + 1) if cl[k] > o[k]), default=None)
                if ob is not None:
                    out.append(("OB", d, t, ob, h[ob], l[ob],
                                first(lambda x: h[x] >= l[ob], t + 1)))
    r = h - l
    for i in range(N, L):
        w = slice(i - N, i)
        ok = r[i] >= km * np.mean(r[w]) and (v is None or v[i] >= kv * np.mean(v[w]))
        if ok and cl[i] > max(h[w]):
            out.append(("BREAKOUT", "bullish", i, i - N + int(np.argmax(h[w])), max(h[w]),
                        min(l[w]), None))
        if ok and cl[i] < min(l[w]):
            out.append(("BREAKOUT", "bearish", i, i - N + int(np.argmin(l[w])), max(h[w]),
                        min(l[w]), None))
    return sorted(out, key=lambda x: (x[2], x[0], x[1], x[3]))


def as_bar_rows(p: pd.DataFrame, c: pd.DataFrame) -> list[tuple]:
    pos = {t: i for i, t in enumerate(c["ts"])}
    return [(r.kind, r.direction, pos[r.ts], pos[r.origin_ts], r.top, r.bottom,
             None if pd.isna(r.filled_ts) else pos[r.filled_ts]) for r in p.itertuples()]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=random_walks(), swing=st.integers(1, 4), lookback=st.integers(1, 8))
def test_vectorised_matches_loop_reference(c, swing, lookback):
    got = as_bar_rows(detect_patterns(c, swing_length=swing, breakout_lookback=lookback), c)
    assert sorted(got, key=lambda x: (x[2], x[0], x[1], x[3])) == reference(c, swing, lookback)


def test_vectorised_matches_loop_reference_on_eurusd(sample):
    part = sample.iloc[:1200]
    got = as_bar_rows(detect_patterns(part), part)
    want = reference(part, 5, 20)
    assert len(want) > 300
    assert sorted(got, key=lambda x: (x[2], x[0], x[1], x[3])) == want


# ------------------------------------------------------------------------------------------
# verify_patterns
# ------------------------------------------------------------------------------------------

def insights(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["insight_id", "created_at", "side", "patterns"])


def test_pattern_confirmed_after_created_at_never_verifies():
    c = make_candles(STRUCTURE)
    # The bullish BOS is confirmed on bar 6 (06:00-07:00): it exists once that bar has closed.
    ins = insights(("at_close", H(7), "long", "BOS"),
                   ("mid_bar", H(6) + pd.Timedelta(minutes=59), "long", "BOS"),
                   ("before", H(5), "long", ["BOS"]))
    v = verify_patterns(ins, c, swing_length=2)
    assert v["verified"].tolist() == [True, False, False]
    assert v["evidence"][0]["ts"] == "2024-01-01T06:00:00+00:00"
    assert v["evidence"][0]["origin_ts"] == "2024-01-01T02:00:00+00:00"
    assert v["evidence"][0]["top"] == 1.05
    assert v["evidence"][0]["filled_ts"] is None              # BOS have no fill
    # At 06:59 the last closed bar is bar 5; the window is bars 0..5.
    assert v["evidence"][1]["window_end"] == "2024-01-01T05:00:00+00:00"
    assert v["evidence"][1]["reason"].startswith("no bullish BOS")


def test_wrong_direction_does_not_verify_and_choch_backs_bos():
    c = make_candles(STRUCTURE)
    ins = insights(
        ("short_at_7", H(7), "short", "BOS"),      # only a bullish break exists by 07:00
        ("short_at_11", H(11), "short", "BOS"),    # bearish CHOCH on bar 10 closed at 11:00
        ("long_at_11", H(11), "long", "BOS|OB"),   # bullish BOS and OB of bar 6, in 20 bars
        ("short_ob", H(11), "short", "OB,FVG"),    # bearish OB at 10: yes; bearish FVG at 11: no
    )
    v = verify_patterns(ins, c, swing_length=2)
    assert v[["insight_id", "pattern", "verified"]].values.tolist() == [
        ["short_at_7", "BOS", False], ["short_at_11", "BOS", True], ["long_at_11", "BOS", True],
        ["long_at_11", "OB", True], ["short_ob", "OB", True], ["short_ob", "FVG", False]]
    assert v["evidence"][0]["opposite_direction_ts"] == "2024-01-01T06:00:00+00:00"
    assert v["evidence"][1]["matched_kind"] == "CHOCH"
    assert (v["evidence"][1]["top"], v["evidence"][1]["origin_ts"]) == (
        0.98, "2024-01-01T04:00:00+00:00")
    # The bullish OB was mitigated on bar 10 (ends 11:00): known at created_at, so reported.
    assert v["evidence"][3]["filled_ts"] == "2024-01-01T10:00:00+00:00"
    # The bearish FVG is confirmed on bar 11, which closes at 12:00, after created_at.
    assert v["evidence"][5]["reason"].startswith("no bearish FVG")
    rv = replay_verified(v, ins["insight_id"])
    assert rv.to_dict() == {"short_at_7": False, "short_at_11": True, "long_at_11": True,
                            "short_ob": False}


def test_lookback_window_counts_bars_and_hides_later_fills():
    c = make_candles(STRUCTURE)
    ins = insights(("late", H(13), "long", "BOS"), ("fvg", H(8), "long", "FVG"))
    # Created 13:00: closed bars 0..12. With 3 bars (10, 11, 12) the BOS of bar 6 is too old.
    v3 = verify_patterns(ins, c, lookback_bars=3, swing_length=2)
    assert v3["verified"].tolist() == [False, True]
    assert v3["evidence"][0]["window_start"] == "2024-01-01T10:00:00+00:00"
    assert v3["evidence"][0]["latest_before_window"]["ts"] == "2024-01-01T06:00:00+00:00"
    # The FVG of bar 7 is filled on bar 9, after the insight (08:00): not in its evidence.
    assert v3["evidence"][1]["filled_ts"] is None
    # With 7 bars (6..12) it is in.
    assert verify_patterns(ins, c, lookback_bars=7, swing_length=2)["verified"].tolist() == [
        True, True]


def test_patterns_frame_gives_the_same_answer_as_candles():
    c = make_candles(STRUCTURE)
    ins = insights(("a", H(7), "long", "BOS"), ("b", H(11), "short", "BOS|OB|FVG"),
                   ("c", H(13), "long", "FVG"))
    from_candles = verify_patterns(ins, c, swing_length=2)
    from_patterns = verify_patterns(ins, detect_patterns(c, swing_length=2), bar_length="1h")
    # Same verdicts and matches; only the window differs where the candles start (the calendar
    # window of a patterns frame reaches back before bar 0, the candles' window cannot).
    assert from_candles["verified"].tolist() == from_patterns["verified"].tolist() == [
        True, True, True, False, True]
    assert [e.get("ts") for e in from_candles["evidence"]] == [
        e.get("ts") for e in from_patterns["evidence"]]
    assert from_patterns["evidence"][1]["window_start"] == "2023-12-31T14:00:00+00:00"


def test_claims_parsing_and_bad_rows():
    c = make_candles(STRUCTURE)
    ins = insights(("lists", H(11), "long", ["BOS", "ob"]), ("joined", H(11), "long", "fvg, bos"),
                   ("none", H(11), "long", None), ("empty", H(11), "long", ""),
                   ("odd", H(11), "sideways", "BOS"), ("code", H(11), "long", "XYZ"),
                   ("early", H(0), "long", "BOS"))
    v = verify_patterns(ins, c, swing_length=2)
    assert v[["insight_id", "pattern", "verified"]].values.tolist() == [
        ["lists", "BOS", True], ["lists", "OB", True], ["joined", "FVG", True],
        ["joined", "BOS", True], ["odd", "BOS", False], ["code", "XYZ", False],
        ["early", "BOS", False]]
    assert "neither long nor short" in v["evidence"][4]["reason"]
    assert "unknown pattern code" in v["evidence"][5]["reason"]
    assert v["evidence"][6]["reason"] == "no candle had closed before created_at"
    rv = replay_verified(v, ins["insight_id"])
    assert rv.dtype == "boolean"
    assert rv.isna().tolist() == [False, False, True, True, False, False, False]
    assert rv[["lists", "joined", "odd"]].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="created_at"):
        verify_patterns(ins.assign(created_at=ins["created_at"].dt.tz_localize(None)), c)


def test_multi_symbol_insights(sample):
    part = sample.iloc[:800]
    mirror = part.assign(open=-part["open"], high=-part["low"], low=-part["high"],
                         close=-part["close"])
    candles = pd.concat([part.assign(symbol="EURUSD"), mirror.assign(symbol="MIRROR")])
    p = detect_patterns(part)
    bos = p[p["kind"] == "BOS"].iloc[3]
    created = bos["ts"] + pd.Timedelta(hours=1)
    side = "long" if bos["direction"] == "bullish" else "short"
    other = "short" if side == "long" else "long"
    ins = pd.DataFrame({"insight_id": ["eur", "mir_same_side", "mir_mirrored"],
                        "created_at": [created] * 3, "symbol": ["EURUSD", "MIRROR", "MIRROR"],
                        "side": [side, side, other], "patterns": ["BOS"] * 3})
    v = verify_patterns(ins, candles)
    assert v["verified"].tolist()[0] and v["verified"].tolist()[2]
    assert v["evidence"][0]["ts"] == v["evidence"][2]["ts"] == bos["ts"].isoformat()
    with pytest.raises(ValueError, match="symbol"):
        verify_patterns(ins.drop(columns="symbol"), candles)


def test_verification_never_uses_candles_after_created_at(sample):
    # Verifying with the full history equals verifying each insight with only the candles that
    # had closed by its created_at.
    rng = np.random.default_rng(7)
    at = np.sort(rng.choice(np.arange(30, len(sample)), size=14, replace=False))
    created = sample["ts"].iloc[at].reset_index(drop=True) + pd.to_timedelta(
        rng.integers(0, 120, size=14), unit="min")
    ins = pd.DataFrame({"insight_id": [f"i{i}" for i in range(14)], "created_at": created,
                        "side": rng.choice(["long", "short"], size=14),
                        "patterns": ["BOS|FVG|OB|BREAKOUT"] * 14})
    full = verify_patterns(ins, sample)
    assert full["verified"].any() and not full["verified"].all()
    for i in range(len(ins)):
        existed = sample[sample["ts"] + pd.Timedelta(hours=1) <= ins["created_at"][i]]
        alone = verify_patterns(ins.iloc[[i]], existed)
        pd.testing.assert_frame_equal(
            alone.reset_index(drop=True),
            full[full["insight_id"] == f"i{i}"].reset_index(drop=True))
