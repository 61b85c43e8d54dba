"""Unit tests of the labeling rules, one branch at a time, on hand-built candles.

Prices are EURUSD (pip 0.0001) unless said otherwise; every expected number is worked out here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopsy_assets.api import InputError, label_outcomes
from autopsy_assets.domain import instruments
from autopsy_assets.domain.rules import RuleError, load_rules_yaml, normalise_rules, resolve

T0 = pd.Timestamp("2018-03-06 10:00", tz="UTC")  # a Tuesday
RULE = {"rule_id": 1, "success_rr_ratio": 2.0, "neutral_band_pips": 5, "fail_adverse_pct": 1.0}


def bars(rows, start=T0, tf="1h", symbol="EURUSD", step=None):
    """rows: (open, high, low, close[, spread]) per bar, consecutive from start."""
    step = step or pd.Timedelta(tf.replace("m", "min"))
    out = []
    for i, r in enumerate(rows):
        o, h, lo, c = r[:4]
        out.append(
            {
                "symbol": symbol,
                "timeframe": tf,
                "ts": start + i * step,
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "spread": r[4] if len(r) > 4 else 0.0,
            }
        )
    return pd.DataFrame(out)


def insight(**kw):
    base = {
        "insight_id": "I1",
        "created_at": T0,
        "symbol": "EURUSD",
        "side": "long",
        "entry_price": 1.2000,
        "stop_loss": 1.1980,
        "take_profit": 1.2040,
        "timeframe": "1h",
    }
    return pd.DataFrame([base | kw])


def one(ins, candles, horizon="4H", rules=(RULE,), **kw):
    out = label_outcomes(ins, candles, horizons=(horizon,), rules=list(rules), **kw)
    assert len(out) == 1
    return out.iloc[0]


FLAT = (1.2000, 1.2005, 1.1995, 1.2000)


def test_target_first_succeeds_at_the_target():
    c = bars([FLAT, (1.2000, 1.2045, 1.1990, 1.2030), FLAT, FLAT, FLAT])
    r = one(insight(), c)
    assert (r.outcome, r.exit_reason, r.exit_price) == ("succeeded", "target", 1.2040)
    assert r.exit_time == T0 + pd.Timedelta(hours=2)  # end of the deciding bar
    assert r.duration_minutes == 120
    assert r.pnl_pct == pytest.approx(0.0040 / 1.2 * 100)
    assert r.risk_reward_actual == pytest.approx(2.0)
    # excursions: bar 0 lived in full (low 1.1995), the exit bar counts only at the exit price
    assert r.max_drawdown == pytest.approx(0.0005 / 1.2 * 100)
    assert r.low_price == 1.1995 and r.high_price == 1.2040
    assert not r.ambiguous


def test_stop_first_fails_at_the_stop():
    c = bars([FLAT, (1.2000, 1.2010, 1.1975, 1.1985), FLAT, FLAT])
    r = one(insight(), c)
    assert (r.outcome, r.exit_reason, r.exit_price) == ("failed", "stop", 1.1980)
    assert r.risk_reward_actual == pytest.approx(-1.0)


def test_both_levels_in_one_bar_is_stop_first_and_ambiguous():
    c = bars([(1.2000, 1.2050, 1.1970, 1.2000), FLAT, FLAT, FLAT])
    r = one(insight(), c)
    assert (r.outcome, r.exit_reason, r.ambiguous) == ("failed", "stop", True)


def test_finer_candles_settle_what_a_coarse_bar_leaves_open():
    hourly = bars([(1.2000, 1.2050, 1.1970, 1.2000), FLAT, FLAT, FLAT])
    # the same first hour in minutes: up to the target at minute 10, down to the stop at minute 40
    minutes = [(1.2000, 1.2005, 1.1995, 1.2000)] * 60
    minutes[10] = (1.2000, 1.2050, 1.1999, 1.2045)
    minutes[40] = (1.2000, 1.2001, 1.1970, 1.1990)
    mins = bars(minutes + [(1.2, 1.2005, 1.1995, 1.2)] * 200, tf="1m")
    r = one(insight(), pd.concat([hourly, mins]))
    assert (r.outcome, r.exit_reason, r.ambiguous, r.candle_timeframe) == (
        "succeeded",
        "target",
        False,
        "1m",
    )
    assert r.exit_time == T0 + pd.Timedelta(minutes=11)


def test_gap_through_the_stop_exits_at_the_open():
    c = bars([FLAT, (1.1960, 1.1970, 1.1950, 1.1965), FLAT, FLAT])
    r = one(insight(), c)
    assert (r.outcome, r.exit_reason, r.exit_price) == ("failed", "gap_stop", 1.1960)
    assert r.gap_pips == pytest.approx(20.0)


def test_gap_through_the_target_exits_at_the_open():
    c = bars([FLAT, (1.2060, 1.2070, 1.2055, 1.2065), FLAT, FLAT])
    r = one(insight(), c)
    assert (r.outcome, r.exit_reason, r.exit_price) == ("succeeded", "gap_target", 1.2060)


def test_short_fills_on_the_ask_with_a_spread():
    # short at 1.2000, stop 1.2020: bid high 1.2015 + spread 0.0006 = ask 1.2021 touches it
    c = bars([FLAT + (0.0002,), (1.2000, 1.2015, 1.1990, 1.2010, 0.0006), FLAT, FLAT])
    r = one(insight(side="short", stop_loss=1.2020, take_profit=1.1960), c)
    assert (r.outcome, r.exit_reason, r.exit_price) == ("failed", "stop", 1.2020)
    # without the spread the same bid candles never touch the stop
    c0 = c.assign(spread=0.0)
    assert (
        one(insight(side="short", stop_loss=1.2020, take_profit=1.1960), c0).exit_reason
        == "horizon"
    )


def test_horizon_exit_neutral_within_the_band():
    c = bars([FLAT, FLAT, FLAT, (1.2000, 1.2005, 1.1995, 1.2003), FLAT])
    r = one(insight(), c)
    assert (r.outcome, r.exit_reason, r.exit_price) == ("neutral", "horizon", 1.2003)
    assert r.exit_time == T0 + pd.Timedelta(hours=4)


def test_horizon_exit_by_sign_of_pnl_outside_the_band():
    c = bars([FLAT, FLAT, FLAT, (1.2000, 1.2015, 1.1995, 1.2012), FLAT])
    assert one(insight(), c).outcome == "succeeded"
    c = bars([FLAT, FLAT, FLAT, (1.2000, 1.2005, 1.1985, 1.1988), FLAT])
    assert one(insight(), c).outcome == "failed"


def test_horizon_exit_fails_on_adverse_excursion_beyond_the_limit():
    # no stop; the price dips 0.5% then closes up 7 pips: adverse 0.5% > limit 0.25% -> failed
    c = bars([(1.2000, 1.2005, 1.1940, 1.1960), FLAT, FLAT, (1.2000, 1.2010, 1.1995, 1.2007), FLAT])
    rule = RULE | {"fail_adverse_pct": 0.25}
    r = one(insight(stop_loss=math.nan, take_profit=1.2100), c, rules=[rule])
    assert r.exit_reason == "horizon" and r.outcome == "failed"
    assert r.max_drawdown == pytest.approx(0.0060 / 1.2 * 100)
    r2 = one(insight(stop_loss=math.nan, take_profit=1.2100), c, rules=[RULE])
    assert r2.outcome == "succeeded"


def test_levels_from_the_rule_when_the_insight_has_none():
    rule = RULE | {"fail_sl_pips": 10}
    c = bars([FLAT, (1.2000, 1.2021, 1.1995, 1.2020), FLAT, FLAT])
    r = one(insight(stop_loss=math.nan, take_profit=math.nan), c, rules=[rule])
    # stop 1.1990, target 2 x 10 pips = 1.2020
    assert r.stop_price == pytest.approx(1.1990) and r.target_price == pytest.approx(1.2020)
    assert (r.outcome, r.exit_reason) == ("succeeded", "target")
    rule_tp = rule | {"success_tp_pips": 30}
    r = one(insight(stop_loss=math.nan, take_profit=math.nan), c, rules=[rule_tp])
    assert r.target_price == pytest.approx(1.2030) and r.exit_reason == "horizon"


def test_pending_until_candles_cover_the_horizon_then_settled():
    c = bars([FLAT, FLAT])  # two hours of a 4H window
    assert one(insight(), c).outcome == "pending"
    c = bars([FLAT, FLAT, FLAT, FLAT, FLAT])
    assert one(insight(), c).outcome == "neutral"
    # an explicit `now` inside the window keeps it pending even with later candles present
    assert one(insight(), c, now=T0 + pd.Timedelta(hours=2)).outcome == "pending"


def test_first_touch_is_final_even_while_pending():
    c = bars([(1.2000, 1.2045, 1.1990, 1.2030)])
    assert one(insight(), c, horizon="7D").outcome == "succeeded"


def test_hole_inside_the_window_needs_review():
    c = bars([FLAT] * 30)
    c = c.drop(index=range(3, 8))  # five hours missing on a Tuesday
    r = one(insight(), c, horizon="24H")
    assert r.outcome == "needs_review" and r.needs_review_reason.startswith("hole")
    assert "300 minutes" in r.needs_review_reason


def test_weekend_closure_is_not_a_hole():
    fri = pd.Timestamp("2018-03-09 15:00", tz="UTC")
    week = bars([FLAT] * 5, start=fri)  # 15:00 .. 19:00 Friday
    mon = bars([FLAT] * 30, start=pd.Timestamp("2018-03-12 00:00", tz="UTC"))
    r = one(insight(created_at=fri), pd.concat([week, mon]), horizon="24H")
    assert r.outcome == "neutral" and r.needs_review_reason == ""
    # the same gap on a crypto symbol (24/7) is a hole
    crypto = pd.concat([week, mon]).assign(
        symbol="BTCUSD", open=9000.0, high=9001.0, low=8999.0, close=9000.0
    )
    r = one(
        insight(
            created_at=fri,
            symbol="BTCUSD",
            entry_price=9000.0,
            stop_loss=8900.0,
            take_profit=9200.0,
        ),
        crypto,
        horizon="24H",
    )
    assert r.outcome == "needs_review" and r.needs_review_reason.startswith("hole")


def test_horizon_ending_inside_a_closure_settles_on_the_last_close():
    fri = pd.Timestamp("2018-03-09 15:00", tz="UTC")
    week = bars([FLAT] * 4 + [(1.2, 1.2015, 1.1995, 1.2012)], start=fri)
    r = one(
        insight(created_at=fri), week, horizon="24H", now=pd.Timestamp("2018-03-10 18:00", tz="UTC")
    )
    assert (r.outcome, r.exit_reason, r.exit_price) == ("succeeded", "horizon", 1.2012)


def test_empty_window_needs_review():
    # a 1H window opened mid-bar on hourly candles holds no complete bar
    c = bars([FLAT] * 5)
    r = one(insight(created_at=T0 + pd.Timedelta(minutes=30)), c, horizon="1H")
    assert r.outcome == "needs_review" and r.needs_review_reason.startswith("empty_window")


def test_filtered_insight_is_filtered_out_but_replayed():
    c = bars([FLAT, (1.2000, 1.2045, 1.1990, 1.2030), FLAT, FLAT])
    r = one(insight(status="filtered"), c)
    assert (r.outcome, r.replay_outcome) == ("filtered_out", "succeeded")


def test_slippage_is_fill_versus_entry_in_pips():
    c = bars([FLAT] * 5)
    assert one(insight(fill_price=1.2003), c).slippage_pips == pytest.approx(3.0)
    assert one(
        insight(side="short", stop_loss=1.2020, take_profit=1.1960, fill_price=1.2003), c
    ).slippage_pips == pytest.approx(-3.0)
    assert math.isnan(one(insight(), c).slippage_pips)


def test_jpy_pip_size_scales_rule_pips():
    assert instruments.pip_size("USDJPY") == 0.01
    assert instruments.pip_size("EURUSD") == 0.0001
    assert instruments.pip_size("XAUUSD") == 0.1
    assert instruments.pip_size("XAGUSD") == 0.01
    assert instruments.pip_size("BTCUSD") == 1.0 and instruments.pip_size("US30") == 1.0
    assert instruments.currencies("XAUUSD") == ("XAU", "USD")
    c = bars([(106.0, 106.05, 105.95, 106.0)] * 5, symbol="USDJPY")
    r = one(
        insight(symbol="USDJPY", entry_price=106.0, stop_loss=math.nan, take_profit=math.nan),
        c,
        rules=[RULE | {"fail_sl_pips": 20}],
    )
    assert r.stop_price == pytest.approx(105.80) and r.target_price == pytest.approx(106.40)


def test_same_input_gives_identical_audits_and_hashes():
    c = bars([FLAT, (1.2000, 1.2045, 1.1990, 1.2030), FLAT, FLAT])
    a = label_outcomes(insight(), c, rules=[RULE])
    b = label_outcomes(insight(), c.sample(frac=1, random_state=1), rules=[RULE])
    pd.testing.assert_frame_equal(a, b)
    assert a["snapshot_hash"].str.len().eq(64).all()
    changed = label_outcomes(insight(), c, rules=[RULE | {"neutral_band_pips": 6}])
    assert (changed["rule_hash"] != a["rule_hash"]).all()


# --- rules ---------------------------------------------------------------------------------


def test_most_specific_then_priority_then_lowest_id_wins():
    rules = normalise_rules(
        [
            {"rule_id": 1, "success_rr_ratio": 2},
            {"rule_id": 2, "symbol": "EURUSD", "success_rr_ratio": 2, "priority": 0},
            {"rule_id": 3, "symbol": "EURUSD", "success_rr_ratio": 2, "priority": 5},
            {
                "rule_id": 4,
                "symbol": "EURUSD",
                "timeframe": "1h",
                "success_rr_ratio": 2,
                "priority": -9,
            },
            {"rule_id": 5, "symbol": "GBPUSD", "success_rr_ratio": 2},
            {"rule_id": 6, "symbol": "GBPUSD", "success_rr_ratio": 2},
            {
                "rule_id": 7,
                "symbol": "EURUSD",
                "timeframe": "1h",
                "horizon": "4H",
                "success_rr_ratio": 2,
                "is_active": False,
            },
        ]
    )
    win = resolve(
        rules,
        np.array(["", "", "", "x"]),
        np.array(["EURUSD", "EURUSD", "GBPUSD", "USDJPY"]),
        np.array(["1h", "5m", "1h", "1h"]),
        np.array(["4H", "4H", "4H", "4H"]),
    )
    assert rules["rule_id"].to_numpy()[win].tolist() == [4, 3, 5, 1]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({
            "strategy": st.sampled_from(["", "A"]), "symbol": st.sampled_from(["", "EURUSD"]),
            "timeframe": st.sampled_from(["", "1h", "5m"]), "horizon": st.sampled_from(["", "4H"]),
            "priority": st.integers(-2, 2), "is_active": st.booleans(),
        }),
        min_size=1, max_size=8,
    ),
    st.lists(
        st.tuples(st.sampled_from(["", "A", "B"]), st.sampled_from(["EURUSD", "GBPUSD"]),
                  st.sampled_from(["1h", "5m"]), st.sampled_from(["4H", "7D"])),
        min_size=1, max_size=20,
    ),
)
def test_rule_resolution_equals_a_rule_by_rule_search(scopes, rows):
    # the most specific active rule wins, then the highest priority, then the lowest id;
    # columns of one value (a single horizon, say) are resolved like any other
    rules = normalise_rules(
        [{"rule_id": k + 1, "success_rr_ratio": 2, **sc} for k, sc in enumerate(scopes)]
    )
    fields = ("strategy", "symbol", "timeframe", "horizon")
    want = []
    for row in rows:
        fits = [
            (sum(sc[f] != "" for f in fields), sc["priority"], -(k + 1), k)
            for k, sc in enumerate(scopes)
            if sc["is_active"] and all(sc[f] in ("", v) for f, v in zip(fields, row))
        ]
        want.append(max(fits)[3] + 1 if fits else -1)
    got = resolve(rules, *(np.array([row[i] for row in rows]) for i in range(4)))
    ids = rules["rule_id"].to_numpy()
    assert [int(ids[g]) if g >= 0 else -1 for g in got] == want


def test_packaged_rules_have_a_catch_all_and_per_symbol_stops():
    rules = load_rules_yaml()
    catch_all = rules[(rules[["strategy", "symbol", "timeframe", "horizon"]] == "").all(axis=1)]
    assert len(catch_all) == 1 and catch_all["success_rr_ratio"].iloc[0] == 2.0
    assert (
        catch_all["neutral_band_pips"].iloc[0] == 5 and catch_all["fail_adverse_pct"].iloc[0] == 1.0
    )
    assert set(instruments.load_instruments()) <= set(rules["symbol"]) | {""}


def test_bad_rules_are_refused_naming_the_rule():
    with pytest.raises(RuleError, match="rule 7: fail_sl_pips"):
        normalise_rules([{"rule_id": 7, "fail_sl_pips": -3}])
    with pytest.raises(RuleError, match="used twice"):
        normalise_rules([{"rule_id": 1}, {"rule_id": 1}])


def test_rules_normalised_again_come_out_the_same_and_each_caller_edits_its_own_copy():
    given = [{"rule_id": 3, "success_rr_ratio": 2, "fail_sl_pips": float("nan"), "notes": 1},
             {"rule_id": 4, "symbol": " eurusd ", "success_tp_pips": 10, "notes": True}]
    first = normalise_rules(given)
    first.loc[0, "success_rr_ratio"] = 99.0  # the caller's own copy
    again = normalise_rules([dict(r) for r in given])
    assert again["success_rr_ratio"].tolist()[0] == 2.0 and again["symbol"].tolist()[1] == "EURUSD"
    # values that compare equal but normalise differently are told apart by their type
    assert again["notes"].tolist() == ["1", "True"]
    assert normalise_rules([{**given[0], "notes": True}, given[1]])["notes"].tolist()[0] == "True"
    # a bad rule is refused every time, not only the first
    for _ in range(2):
        with pytest.raises(RuleError, match="rule 7: fail_sl_pips"):
            normalise_rules([{"rule_id": 7, "fail_sl_pips": -3}])


@pytest.mark.parametrize("id_dtype", [object, "str"])
def test_editing_the_audits_changes_neither_another_column_nor_the_callers_insights(id_dtype):
    """The audit frame is built from the engine's arrays as they are: no two columns share
    one, and none is the caller's (arrow-backed ids are kept, but in a wrapper of their own)."""
    ins = pd.concat([insight(), insight(insight_id="I2", side="short", stop_loss=1.2020,
                                        take_profit=1.1960)], ignore_index=True)
    ins["insight_id"] = ins["insight_id"].astype(id_dtype)
    given = ins.copy(deep=True)
    out = label_outcomes(ins, bars([FLAT] * 30), horizons=("4H",), rules=[RULE])
    before = out.copy(deep=True)
    edits = {"insight_id": "X", "outcome": "edited", "created_at": T0 - pd.Timedelta(days=9),
             "entry_price": 9.0, "needs_review_reason": "edited", "rule_hash": "edited"}
    for column, value in edits.items():
        out.loc[0, column] = value
    for column in out.columns:
        want = before[column].copy()
        if column in edits:
            want.iloc[0] = value = edits[column]
        pd.testing.assert_series_equal(out[column], want, check_dtype=False, obj=column)
    pd.testing.assert_frame_equal(ins, given)


# --- bad input -----------------------------------------------------------------------------


def test_bad_insights_are_quarantined_and_the_rest_labeled():
    c = bars([FLAT] * 6)
    good = insight(insight_id="ok").iloc[0].to_dict()
    rows = [
        good,
        good | {"insight_id": "b1", "symbol": "FOOBAR"},
        good | {"insight_id": "b2", "side": "sideways"},
        good | {"insight_id": "b3", "entry_price": "n/a"},
        good | {"insight_id": "b4", "stop_loss": 1.2010},
        good | {"insight_id": "b5", "entry_price": None},
        good | {"insight_id": "b6", "created_at": "2018-03-06 10:00"},
        good | {"insight_id": "b7", "timeframe": "2h"},
    ]
    df = pd.DataFrame(rows)
    df["created_at"] = [str(v) if not isinstance(v, str) else v for v in df["created_at"]]
    out = label_outcomes(df, c, horizons=("4H",), rules=[RULE])
    assert out["insight_id"].tolist() == ["ok"]
    q = {r["row_id"]: r["reason"] for r in out.attrs["quarantine"]}
    assert set(q) == {"b1", "b2", "b3", "b4", "b5", "b6", "b7"}
    assert "unknown symbol 'FOOBAR'" in q["b1"]
    assert "unknown side 'sideways'" in q["b2"]
    assert "'n/a' is not a number" in q["b3"]
    assert "stop_loss 1.201 at or above entry 1.2" in q["b4"]
    assert "entry_price is missing" in q["b5"]
    assert "has no timezone" in q["b6"]
    assert "unknown timeframe '2h'" in q["b7"]


def test_bad_candles_are_quarantined_sorted_and_deduplicated():
    c = bars([FLAT] * 6)
    bad = pd.concat(
        [
            c,
            c.iloc[[2]],  # exact duplicate: keep one
            c.iloc[[4]].assign(close=1.2001),  # conflicting duplicate: quarantine both
            c.iloc[[5]].assign(ts=T0 + pd.Timedelta(hours=6), high=1.1, low=1.3),  # high < low
            c.iloc[[5]].assign(ts=T0 + pd.Timedelta(hours=7), close=np.nan),
            c.iloc[[5]].assign(ts=T0 + pd.Timedelta(hours=8), symbol="NOPE"),
        ]
    ).iloc[::-1]
    out = label_outcomes(insight(), bad, horizons=("1H",), rules=[RULE])
    q = out.attrs["quarantine"]
    reasons = " / ".join(r["reason"] for r in q)
    assert sum(r["source"] == "candles" for r in q) == 5
    assert "conflicting duplicate" in reasons and "high 1.1 is below low 1.3" in reasons
    assert "missing or not a number" in reasons and "unknown symbol 'NOPE'" in reasons
    assert any("exact duplicate" in n for n in out.attrs["notes"])
    assert any("not sorted" in n for n in out.attrs["notes"])
    assert out["outcome"].iloc[0] == "neutral"


def test_each_candle_price_check_names_its_row_and_the_first_reason_wins():
    from autopsy_assets.domain.validation import validate_candle_runs, validate_candles

    c = bars([FLAT] * 8)
    c.loc[1, "open"] = -1.2  # not positive (and outside the range: the first reason wins)
    c.loc[2, "open"] = 1.3  # open above the high
    c.loc[3, "close"] = 1.1  # close below the low
    c.loc[4, "spread"] = -0.0001
    c.loc[5, ["high", "spread"]] = [np.nan, -1.0]  # missing price before negative spread
    c.loc[6, ["high", "low"]] = [1.1, 1.3]  # high below low before open/close outside it
    clean, quarantine, notes = validate_candles(c)
    by_hour = {r["row_id"].split("|")[2][11:13]: r["reason"] for r in quarantine}
    assert by_hour == {
        "11": "prices must be positive",
        "12": "open 1.3 / close 1.2 outside the bar's range [1.1995, 1.2005]",
        "13": "open 1.2 / close 1.1 outside the bar's range [1.1995, 1.2005]",
        "14": "spread -0.0001 is negative",
        "15": "a price (open/high/low/close) is missing or not a number",
        "16": "high 1.1 is below low 1.3",
    }
    assert [r["row"] for r in quarantine] == [1, 2, 3, 4, 5, 6]
    assert list(clean["ts"]) == [T0, T0 + pd.Timedelta(hours=7)] and notes == ()
    # the public frame keeps text columns; the engine's has categoricals of the same values
    assert clean["symbol"].dtype == object and clean["timeframe"].dtype == object
    internal, _, _, runs = validate_candle_runs(c.assign(symbol=" eurusd "))
    assert isinstance(internal["symbol"].dtype, pd.CategoricalDtype)
    assert list(internal["symbol"].cat.categories) == ["EURUSD"] and list(runs) == [0]


def test_quarantine_survives_pandas_derivations():
    c = bars([FLAT] * 6)
    df = insight()
    out = label_outcomes(pd.concat([df, df.assign(insight_id="x", side="up")]), c, rules=[RULE])
    q = out.attrs["quarantine"]
    import copy

    assert copy.deepcopy(q) is q
    derived = pd.concat([out, out]).astype({"pnl_pct": float})
    assert derived.attrs["quarantine"] == q


def test_structural_problems_raise_naming_the_column():
    c = bars([FLAT] * 6)
    with pytest.raises(InputError, match="entry_price"):
        label_outcomes(insight().drop(columns="entry_price"), c)
    with pytest.raises(InputError, match="`ts`"):
        label_outcomes(insight(), c.assign(ts=c["ts"].dt.tz_localize(None)))
    with pytest.raises(InputError, match="no valid insight left"):
        label_outcomes(insight(side="up"), c)


def test_block_hashes_equal_the_hash_of_the_stored_payloads():
    from autopsy_assets.data import generate_market
    from autopsy_assets.domain.replay import block_hashes, decode_block, split_blocks

    c = generate_market(symbols=("EURUSD", "BTCUSD"), weeks=1)
    full = split_blocks(c)
    fast = block_hashes(c)
    assert len(full) == 12 and full["sha256"].tolist() == fast["sha256"].tolist()  # 5 FX days + 7
    back = decode_block(full["payload"].iloc[0])
    first = c[(c["symbol"] == full["symbol"].iloc[0])].head(len(back))
    np.testing.assert_array_equal(back["close"].to_numpy(), first["close"].to_numpy())


def test_block_hashing_in_pieces_by_openssl_and_by_hashlib_equals_the_payload_hashes(monkeypatch):
    # the blocks are hashed in pieces that two threads share, by OpenSSL's sha256 called from
    # compiled code (no GIL) where it is reachable, else by hashlib: every way gives the hashes
    # of the stored payloads, block for block
    from concurrent.futures import ThreadPoolExecutor

    from autopsy_assets.data import generate_market
    from autopsy_assets.domain import replay

    c = generate_market(symbols=("EURUSD", "USDJPY", "BTCUSD"), weeks=2)
    want = replay.split_blocks(c)["sha256"].tolist()
    assert replay._SHA256_FUNCTIONS is not None  # (this machine's Python links OpenSSL 3)
    monkeypatch.setattr(replay.BlockHashing, "PIECE_BYTES", 40_000)  # ~ a block per piece
    for functions in (replay._SHA256_FUNCTIONS, None):
        monkeypatch.setattr(replay, "_SHA256_FUNCTIONS", functions)
        hashing = replay.BlockHashing(c)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(hashing.work)
            got = hashing.result()["sha256"].tolist()
        assert got == want and len(set(got)) == len(want) == 2 * 10 + 14  # (FX: weekdays)


def test_audits_satisfy_the_pandera_contract_and_a_broken_frame_does_not():
    import pandera.errors
    from autopsy_assets.domain.schemas import audits_schema

    c = bars([FLAT, (1.2000, 1.2045, 1.1990, 1.2030), FLAT, FLAT, FLAT])
    out = label_outcomes(
        pd.concat(
            [
                insight(),
                insight(insight_id="I2", side="short", stop_loss=1.2050, take_profit=1.1900),
            ]
        ),
        c,
        rules=[RULE],
    )
    audits_schema().validate(out, lazy=True)
    broken = out.assign(max_drawdown=-1.0)
    with pytest.raises(pandera.errors.SchemaErrors, match="max_drawdown"):
        audits_schema().validate(broken, lazy=True)


def test_replay_from_blocks_is_byte_identical_and_catches_a_tampered_audit():
    from autopsy_assets.api import replay_audits
    from autopsy_assets.domain.replay import decode_block, split_blocks

    c = pd.concat(
        [
            bars([FLAT] * 3 + [(1.2000, 1.2045, 1.1990, 1.2030)] + [FLAT] * 40),
            bars([FLAT] * 30, start=T0 + pd.Timedelta(days=2)),
        ]
    )
    ins = pd.concat(
        [insight(), insight(insight_id="I2", side="short", stop_loss=1.2050, take_profit=1.1900)]
    )
    audits = label_outcomes(ins, c, rules=[RULE])
    blocks = split_blocks(c)
    store = {
        r.sha256: decode_block(r.payload).assign(symbol=r.symbol, timeframe=r.timeframe)
        for r in blocks.itertuples()
    }

    def read_blocks(hashes):
        return pd.concat([store[h] for h in hashes], ignore_index=True)

    resolved = audits[audits["outcome"] != "pending"]
    replay = replay_audits(resolved, ins, read_blocks)
    assert replay["match"].all() and len(replay) == len(resolved) >= 6
    tampered = resolved.assign(exit_price=resolved["exit_price"] + 1e-9)
    again = replay_audits(tampered.head(1), ins, read_blocks)
    assert not again["match"].iloc[0] and again["differing"].iloc[0] == "exit_price"


def test_finer_candles_covering_only_the_ambiguous_bar_settle_it_and_replay_reads_them():
    from autopsy_assets.api import replay_audits
    from autopsy_assets.domain.replay import decode_block, split_blocks

    # 30 hourly bars; bar 5 (15:00) touches both the stop 1.1980 and the target 1.2040
    hours = [FLAT] * 30
    hours[5] = (1.2000, 1.2050, 1.1970, 1.2000)
    hourly = bars(hours)
    # minutes exist for that hour only: down to the stop at minute 12, up to the target at 40
    minutes = [(1.2000, 1.2005, 1.1995, 1.2000)] * 60
    minutes[12] = (1.2000, 1.2001, 1.1970, 1.1985)
    minutes[40] = (1.2000, 1.2050, 1.1999, 1.2045)
    mins = bars(minutes, start=T0 + pd.Timedelta(hours=5), tf="1m")
    c = pd.concat([hourly, mins])
    r = one(insight(), c, horizon="24H")
    # the minutes cover only that hour, so the hours are walked; the minutes settle the bar
    assert (r.candle_timeframe, r.outcome, r.exit_reason, r.ambiguous) == (
        "1h",
        "failed",
        "stop",
        False,
    )
    assert r.exit_time == T0 + pd.Timedelta(hours=5, minutes=13)
    assert (
        r.low_price == 1.1980 and r.high_price == 1.2005
    )  # the 1h bars before, the minutes up to the stop
    assert one(insight(), hourly, horizon="24H").ambiguous  # without them: stop first, flagged

    audits = label_outcomes(insight(), c, horizons=("24H",), rules=[RULE])
    blocks = split_blocks(c.sort_values(["symbol", "timeframe", "ts"]))
    assert audits["candle_blocks"].iloc[0].count(",") == 1  # the hour's day + the minutes' day
    store = {
        b.sha256: decode_block(b.payload).assign(symbol=b.symbol, timeframe=b.timeframe)
        for b in blocks.itertuples()
    }
    replay = replay_audits(
        audits, insight(), lambda hs: pd.concat([store[h] for h in hs], ignore_index=True)
    )
    assert replay["match"].all(), replay["differing"].tolist()



def test_a_sets_closures_are_its_own():
    """settle looks closures up in one array for all candle sets, each set in its own range: a
    set with no closures (crypto) never borrows the last closure of the set before it."""
    from autopsy_assets.domain.settle import _inside_closure

    closures = np.array([[0, 100], [200, 300], [400, 500]], dtype=np.int64)
    assert _inside_closure(10, 20, closures, 0, 1)  # the first set's only closure
    assert not _inside_closure(10, 20, closures, 1, 1)  # the second set has none
    assert not _inside_closure(250, 260, closures, 2, 3)  # the third set's begins later
    assert _inside_closure(250, 260, closures, 1, 3)
    assert not _inside_closure(250, 350, closures, 1, 3)  # (it outlasts the closure)
