"""News parsing, validation, the nearest-high-impact query, and the rule-built calendar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autopsy_assets.data.news_calendar import scheduled_calendar
from autopsy_assets.domain import news as N

T0 = pd.Timestamp("2018-03-02 13:30", tz="UTC")
MIN = pd.Timedelta(minutes=1)


# --- parse_currencies ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("USD", ["USD"]),
    ("EUR|USD", ["EUR", "USD"]),
    ("EUR,USD", ["EUR", "USD"]),
    (" eur , usd ", ["EUR", "USD"]),
    ("EUR|USD|EUR", ["EUR", "USD"]),
    (["EUR", "usd"], ["EUR", "USD"]),
    (("JPY",), ["JPY"]),
    (np.array(["GBP", "CHF|CAD"], dtype=object), ["GBP", "CHF", "CAD"]),
    ("", []),
    (None, []),
    (float("nan"), []),
    ([], []),
])
def test_parse_currencies(value, expected):
    assert N.parse_currencies(value) == expected


# --- normalise_news ------------------------------------------------------------------------------

def raw_news() -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": ["NFP-1", "CPI-1", "BAD-TS", "BAD-IMPACT", "NO-CCY", "PAIR", "DUP", "DUP",
                     "SAME", "SAME", None],
        "ts": ["2018-03-02T13:30:00Z", "2018-03-13T13:30:00+00:00", "2018-03-13 13:30",
               "2018-03-14T12:00:00Z", "2018-03-15T12:00:00Z", "2018-03-15T12:00:00Z",
               "2018-03-16T12:00:00Z", "2018-03-16T12:05:00Z", "2018-03-20T09:30:00Z",
               "2018-03-20T09:30:00Z", "2018-03-21T18:00:00-01:00"],
        "currencies": ["USD", "USD", "USD", "EUR", "", "EURUSD", "GBP", "GBP", "GBP|EUR",
                       "GBP|EUR", ["usd"]],
        "impact": ["High", "high", "high", "huge", "low", "medium", "low", "low", "medium",
                   "medium", "high"],
        "title": ["US Non-Farm Payrolls", "US CPI", "x", "y", "z", "w", "a", "a", "s", "s", "FOMC"],
    })


def test_normalise_news_quarantine_reasons():
    clean, q = N.normalise_news(raw_news())
    reasons = {d["row_id"]: d["reason"] for d in q}
    assert all(d["source"] == "news" for d in q)
    assert "has no timezone" in reasons["BAD-TS"]
    assert "impact 'huge' is not one of low, medium, high" in reasons["BAD-IMPACT"]
    assert "no currency given" in reasons["NO-CCY"]
    assert "'EURUSD' are not 3-4 letter currency codes" in reasons["PAIR"]
    dups = [d for d in q if d["row_id"] == "DUP"]
    assert len(dups) == 2 and all("different content" in d["reason"] for d in dups)
    assert len(q) == 6

    assert list(clean.columns) == ["event_id", "ts", "currencies", "impact", "title"]
    assert str(clean["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(clean["event_id"][:3]) == ["NFP-1", "CPI-1", "SAME"]         # SAME kept once
    assert clean["currencies"].tolist()[:3] == [["USD"], ["USD"], ["GBP", "EUR"]]
    assert clean["impact"].tolist() == ["high", "high", "medium", "high"]
    last = clean.iloc[-1]      # no event_id given: a stable generated one; -01:00 -> 19:00 UTC
    assert last["ts"] == pd.Timestamp("2018-03-21 19:00", tz="UTC")
    assert last["event_id"].startswith("EV-") and len(last["event_id"]) == 15
    again, _ = N.normalise_news(raw_news())
    assert again["event_id"].iat[-1] == last["event_id"]


def test_normalise_news_row_id_falls_back_to_ts_and_naive_column_is_quarantined():
    df = pd.DataFrame({"ts": pd.to_datetime(["2018-01-05 13:30"]), "currencies": ["USD"],
                       "impact": ["high"]})
    clean, q = N.normalise_news(df)
    assert clean.empty
    assert q[0]["row_id"] == "2018-01-05 13:30:00"
    assert "no timezone" in q[0]["reason"] and "never assumed to be UTC" in q[0]["reason"]


def test_normalise_news_several_reasons_and_missing_values():
    df = pd.DataFrame({"event_id": ["E1", "E2"], "ts": [None, "not a time Z"],
                       "currencies": [None, "USD"], "impact": [None, "high"]})
    clean, q = N.normalise_news(df)
    assert clean.empty
    assert q[0]["reason"] == ("ts is missing; impact is missing; no currency given: the event "
                              "cannot be matched to any symbol")
    assert q[1]["reason"] == "ts 'not a time Z' is not a time"


def test_normalise_news_missing_column_raises_naming_it():
    with pytest.raises(ValueError, match="impact"):
        N.normalise_news(pd.DataFrame({"ts": [], "currencies": []}))


def test_normalise_news_accepts_a_tz_aware_column_in_another_zone():
    df = pd.DataFrame({"ts": pd.to_datetime(["2018-01-05 08:30"]).tz_localize("America/New_York"),
                       "currencies": ["USD"], "impact": ["high"], "event_id": ["NFP"]})
    clean, q = N.normalise_news(df)
    assert q == []
    assert clean["ts"].iat[0] == pd.Timestamp("2018-01-05 13:30", tz="UTC")


# --- nearest_high_impact: hand cases -------------------------------------------------------------

def small_news() -> pd.DataFrame:
    clean, q = N.normalise_news(pd.DataFrame({
        "event_id": ["NFP", "BOJ", "ECB", "ISM"],
        "ts": [T0, T0 + 10 * MIN, T0 + 120 * MIN, T0 + 60 * MIN],
        "currencies": ["USD", "JPY", "EUR", "USD"],
        "impact": ["high", "high", "high", "medium"],
        "title": ["US Non-Farm Payrolls", "BoJ", "ECB", "ISM"],
    }))
    assert q == []
    return clean


def test_currency_matching_eurusd_sees_eur_and_usd_not_jpy():
    news = small_news()
    t = T0 + 15 * MIN
    out = N.nearest_high_impact(news, ["EURUSD", "USDJPY", "EURGBP", "ABCXYZ"], [t] * 4)
    # EURUSD: last USD event NFP 15 min ago, next ECB in 105 min; BOJ (JPY) ignored
    assert out["last_event_id"].tolist() == ["NFP", "BOJ", None, None]
    assert out["minutes_since_last"].tolist()[:2] == [15.0, 5.0]
    assert out["next_event_id"].tolist() == ["ECB", None, "ECB", None]
    assert out["minutes_to_next"].iat[0] == 105.0
    assert out["within_window"].tolist() == [True, True, False, False]
    assert out["window_event_ids"].tolist() == ["NFP", "NFP|BOJ", "", ""]
    assert out["nearest_event_id"].tolist() == ["NFP", "BOJ", "ECB", None]
    assert out["nearest_minutes"].tolist()[:3] == [-15.0, -5.0, 105.0]
    assert out["nearest_title"].iat[0] == "US Non-Farm Payrolls"
    assert np.isnan(out["minutes_to_next"].iat[3]) and np.isnan(out["minutes_since_last"].iat[3])


def test_thirty_minute_boundary_is_inclusive():
    news = small_news()
    ns = pd.Timedelta(nanoseconds=1)
    times = pd.Series([T0 - 30 * MIN - ns, T0 - 30 * MIN, T0, T0 + 30 * MIN, T0 + 30 * MIN + ns],
                      index=list("abcde"))
    out = N.nearest_high_impact(news, "EURUSD", times)
    assert list(out.index) == list("abcde")
    assert out["within_window"].tolist() == [False, True, True, True, False]
    assert out.loc["b", "minutes_to_next"] == 30.0
    assert out.loc["c", "minutes_to_next"] == 0.0 and out.loc["c", "minutes_since_last"] == 0.0
    assert out.loc["d", "minutes_since_last"] == 30.0
    wide = N.nearest_high_impact(news, "EURUSD", times, window_minutes=31)
    assert wide["within_window"].all()


def test_medium_impact_counts_only_when_asked():
    news = small_news()
    t = [T0 + 61 * MIN]
    assert not N.nearest_high_impact(news, "EURUSD", t)["within_window"].iat[0]
    out = N.nearest_high_impact(news, "EURUSD", t, impacts=("high", "medium"))
    assert out["within_window"].iat[0] and out["last_event_id"].iat[0] == "ISM"


def test_no_news_and_naive_times():
    out = N.nearest_high_impact(None, "EURUSD", [T0])
    assert not out["within_window"].iat[0] and np.isnan(out["minutes_to_next"].iat[0])
    with pytest.raises(ValueError, match="timezone"):
        N.nearest_high_impact(small_news(), "EURUSD", [pd.Timestamp("2018-01-01")])


def test_scalar_time_and_empty_queries():
    out = N.nearest_high_impact(small_news(), "EURUSD", T0 + 5 * MIN)
    assert len(out) == 1 and out["minutes_since_last"].iat[0] == 5.0
    assert list(N.nearest_high_impact(small_news(), [], []).columns) == list(N.NEAREST_COLUMNS)


def test_currency_map_override():
    out = N.nearest_high_impact(small_news(), "MYINDEX", [T0], currency_map={"MYINDEX": "USD"})
    assert out["last_event_id"].iat[0] == "NFP"


# --- nearest_high_impact against a slow reference (hypothesis) -----------------------------------

SYMBOLS = ["EURUSD", "USDJPY", "XAUUSD", "GBPJPY", "US30", "NOPE"]
CCY = {"EURUSD": {"EUR", "USD"}, "USDJPY": {"USD", "JPY"}, "XAUUSD": {"XAU", "USD"},
       "GBPJPY": {"GBP", "JPY"}, "US30": {"USD"}, "NOPE": set()}


def slow_nearest(news: pd.DataFrame, symbols, times, window_minutes):
    ev = news[news["impact"] == "high"].sort_values(["ts", "event_id"], kind="stable")
    events = list(zip(ev["ts"], ev["event_id"], ev["title"], ev["currencies"]))
    w = pd.Timedelta(minutes=window_minutes)
    rows = []
    for sym, t in zip(symbols, times):
        mine = [e for e in events if CCY[sym] & set(e[3])]
        nxt = next((e for e in mine if e[0] >= t), None)
        lst = next((e for e in reversed(mine) if e[0] <= t), None)
        win = [e[1] for e in mine if abs(e[0] - t) <= w]
        if lst is not None and (nxt is None or (t - lst[0]) <= (nxt[0] - t)):
            near, near_min = lst, -(t - lst[0]) / MIN
        elif nxt is not None:
            near, near_min = nxt, (nxt[0] - t) / MIN
        else:
            near, near_min = None, np.nan
        rows.append({
            "minutes_to_next": (nxt[0] - t) / MIN if nxt else np.nan,
            "minutes_since_last": (t - lst[0]) / MIN if lst else np.nan,
            "within_window": bool(win), "n_in_window": len(win),
            "nearest_minutes": near_min,
            "nearest_event_id": near[1] if near else None,
            "next_event_id": nxt[1] if nxt else None, "next_title": nxt[2] if nxt else None,
            "last_event_id": lst[1] if lst else None, "last_title": lst[2] if lst else None,
            "window_event_ids": "|".join(win),
        })
    return pd.DataFrame(rows)


event = st.tuples(st.integers(0, 300),                                     # minute offset
                  st.lists(st.sampled_from(["EUR", "USD", "JPY", "GBP", "XAU", "CHF"]),
                           min_size=1, max_size=3),
                  st.sampled_from(["high", "high", "medium", "low"]))
query = st.tuples(st.sampled_from(SYMBOLS), st.integers(-40, 340),
                  st.sampled_from([0, 1, 30]))                            # + seconds jitter


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, max_size=25), queries=st.lists(query, min_size=1, max_size=40),
       window=st.sampled_from([0, 15, 30, 45.5]))
def test_nearest_matches_slow_reference(events, queries, window):
    news, q = N.normalise_news(pd.DataFrame({
        "event_id": [f"E{i}" for i in range(len(events))],
        "ts": [T0 + m * MIN for m, _, _ in events],
        "currencies": ["|".join(c) for _, c, _ in events],
        "impact": [imp for _, _, imp in events],
        "title": [f"title {i}" for i in range(len(events))],
    }, columns=["event_id", "ts", "currencies", "impact", "title"]))
    assert q == []
    if news.empty:
        news = pd.DataFrame({"event_id": [], "ts": pd.Series(dtype="datetime64[ns, UTC]"),
                             "currencies": [], "impact": [], "title": []})
    syms = [s for s, _, _ in queries]
    times = [T0 + m * MIN + pd.Timedelta(seconds=s) for _, m, s in queries]
    got = N.nearest_high_impact(news, syms, times, window_minutes=window)
    want = slow_nearest(news, syms, times, window)
    for col in want.columns:
        g, w = got[col].to_numpy(), want[col].to_numpy()
        if col in ("minutes_to_next", "minutes_since_last", "nearest_minutes"):
            np.testing.assert_allclose(g.astype(float), w.astype(float), rtol=0, atol=1e-9,
                                       err_msg=col)
        else:
            assert list(g) == [None if isinstance(v, float) and np.isnan(v) else v for v in w], col


def test_100k_queries_each_find_events_around_them():
    # timings: benchmarks/bench_data.py
    news = scheduled_calendar("2017-04-01", "2018-06-30")
    rng = np.random.default_rng(0)
    n = 100_000
    start, end = pd.Timestamp("2017-04-19", tz="UTC"), pd.Timestamp("2018-04-01", tz="UTC")
    times = pd.Series(pd.to_datetime(rng.integers(start.value, end.value, n), utc=True))
    syms = rng.choice(["EURUSD", "USDJPY", "GBPUSD", "XAUUSD", "AUDUSD"], n)
    out = N.nearest_high_impact(news, syms, times)
    assert len(out) == n
    # every query in the demo span has some USD event before and after it
    assert out["minutes_to_next"].notna().all() and out["minutes_since_last"].notna().all()
    share = out["within_window"].mean()
    assert 0.002 < share < 0.05


# --- the rule-built calendar ---------------------------------------------------------------------

def test_nfp_2018_is_the_first_friday_1330_utc():
    cal = scheduled_calendar("2018-01-01", "2018-06-30")
    nfp = cal[cal["event_id"].str.startswith("NFP-")]
    assert nfp["event_id"].tolist() == ["NFP-2018-01-05", "NFP-2018-02-02", "NFP-2018-03-02",
                                        "NFP-2018-04-06", "NFP-2018-05-04", "NFP-2018-06-01"]
    assert (nfp["ts"].dt.strftime("%H:%M") == "13:30").all()
    assert (nfp["ts"].dt.day_of_week == 4).all() and (nfp["ts"].dt.day <= 7).all()
    assert (nfp["impact"] == "high").all()
    assert nfp["currencies"].tolist() == [["USD"]] * 6


def test_calendar_rules():
    cal = scheduled_calendar("2017-01-01", "2018-12-31 23:59")
    kind = cal["event_id"].str.split("-").str[0]
    fomc = cal[kind == "FOMC"]
    assert fomc.groupby(fomc["ts"].dt.year).size().tolist() == [8, 8]
    assert fomc["event_id"].tolist()[:4] == ["FOMC-2017-01-25", "FOMC-2017-03-15",
                                             "FOMC-2017-05-03", "FOMC-2017-06-14"]
    assert (fomc["ts"].dt.strftime("%H:%M") == "19:00").all()
    ecb = cal[kind == "ECB"]
    assert (ecb["ts"].diff().dropna() == pd.Timedelta(weeks=6)).all()
    assert (ecb["ts"].dt.day_of_week == 3).all()
    assert (ecb["ts"].dt.strftime("%H:%M") == "12:45").all()
    cpi = cal[kind == "USCPI"]
    assert cpi["ts"].dt.day.between(12, 14).all() and (cpi["ts"].dt.day_of_week < 5).all()
    assert len(cpi) == 24
    assert (cal["ts"].dt.day_of_week < 5).all()                  # nothing on a weekend
    assert cal["event_id"].is_unique
    assert set(cal["impact"]) == {"high", "medium", "low"}
    assert set(cal["source"]) == {"scheduled-rule"}
    for k in ("BOE", "BOJ"):
        assert len(cal[kind == k]) == 16
    clean, q = N.normalise_news(cal)
    assert q == [] and len(clean) == len(cal)


def test_calendar_is_deterministic_and_ranges_nest():
    a = scheduled_calendar("2017-04-01", "2018-06-30")
    b = scheduled_calendar(pd.Timestamp("2017-04-01", tz="UTC"), "2018-06-30T00:00:00Z")
    pd.testing.assert_frame_equal(a, b)
    assert a["ts"].min() >= pd.Timestamp("2017-04-01", tz="UTC")
    assert a["ts"].max() <= pd.Timestamp("2018-06-30", tz="UTC")
    inner = scheduled_calendar("2017-10-03 13:30", "2017-11-20")
    wide = a[(a["ts"] >= pd.Timestamp("2017-10-03 13:30", tz="UTC"))
             & (a["ts"] <= pd.Timestamp("2017-11-20", tz="UTC"))].reset_index(drop=True)
    pd.testing.assert_frame_equal(inner, wide)
    demo = scheduled_calendar("2017-04-19", "2018-04-01")   # ends on a Sunday at 00:00
    assert demo["ts"].dt.strftime("%Y-%m").nunique() == 12   # April 2017 .. March 2018
    assert (demo["event_id"].str.startswith("NFP-")).sum() == 11   # May 2017 .. March 2018
    assert scheduled_calendar("2030-01-05 14:00", "2030-01-05 15:00").empty
    with pytest.raises(ValueError, match="before"):
        scheduled_calendar("2018-02-01", "2018-01-01")
