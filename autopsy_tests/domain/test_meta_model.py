"""The meta-model (autopsy_assets.domain.meta_model): split, gate metric and its bootstrap against
slow obvious references, SHAP additivity for both model kinds, the promotion gate's refusals,
A/B arms, scoring by URI, and the metadata round trip."""
from __future__ import annotations

import hashlib
import json
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autopsy_assets.domain import meta_model as M

T0 = pd.Timestamp("2018-03-05 00:00", tz="UTC")
FEATURES = ["confidence", "ai_score", "session_asia", "minutes_to_next_news", "noise"]


def make_dataset(n=2400, seed=0, signal=True, symbols=("EURUSD", "GBPUSD", "XAUUSD")):
    """Rows over 60 days; success depends on confidence (and Asia) when ``signal``."""
    rng = np.random.default_rng(seed)
    created = T0 + pd.to_timedelta(np.sort(rng.uniform(0, 60 * 1440, n)).round(), unit="min")
    conf = rng.uniform(20, 95, n)
    asia = (rng.random(n) < 0.3).astype(float)
    news = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 3000, n))
    logit = (1.4 * (conf - 57) / 15 - 1.0 * asia) if signal else np.zeros(n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    ds = pd.DataFrame({
        "insight_id": [f"I{i:05d}" for i in range(n)],
        "created_at": pd.Series(created).dt.as_unit("ns"),
        "symbol": np.asarray(symbols, dtype=object)[rng.integers(0, len(symbols), n)],
        "strategy": "S", "timeframe": "1h",
        "confidence": conf, "ai_score": conf + rng.normal(0, 8, n), "session_asia": asia,
        "minutes_to_next_news": news, "noise": rng.normal(size=n),
        "label": y,
        "exit_time": pd.Series(created + pd.to_timedelta(rng.integers(10, 2000, n), unit="min")
                               ).dt.as_unit("ns"),
        "user_id": [f"u{u}" for u in rng.integers(0, 50, n)],
        "pnl_pct": np.where(y == 1, 0.4, -0.2),
    })
    ds.attrs["feature_names"] = list(FEATURES)
    return ds


@pytest.fixture(scope="module")
def ds():
    return make_dataset()


@pytest.fixture(scope="module")
def hgb(ds):
    return M.train_meta_model(ds)


@pytest.fixture(scope="module")
def rf(ds):
    return M.train_meta_model(ds, kind="rf", n_boot=100)


# --- gate metric vs slow references --------------------------------------------------------------

def slow_fp_cut(scores, labels, keep=0.95):
    """Try every distinct score as the threshold; take the highest that keeps >= 95% of the
    succeeded rows; report the share of failed rows below it."""
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    if y.sum() == 0 or (~y).sum() == 0:
        return np.nan
    best = None
    for t in sorted(set(s.tolist())):
        if (s[y] >= t).sum() * 100 >= keep * 100 * y.sum() - 1e-6:
            best = t
    return float((s[~y] < best).sum() / (~y).sum())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.booleans()), min_size=1, max_size=80))
def test_fp_cut_matches_slow_reference(rows):
    scores = np.array([r[0] for r in rows], float) / 12     # many ties
    labels = np.array([r[1] for r in rows])
    cut, t = M.fp_cut(scores, labels)
    want = slow_fp_cut(scores, labels)
    if np.isnan(want):
        assert np.isnan(cut)
    else:
        assert cut == pytest.approx(want, abs=1e-12)
        assert (scores[labels] >= t).mean() >= 0.95 - 1e-12


def test_fp_cut_hand_example():
    # 20 succeeded at 0.50..0.69, one may go (5% of 20 = 1): threshold 0.51
    s_ok = 0.50 + np.arange(20) / 100
    s_bad = np.array([0.10, 0.30, 0.505, 0.51, 0.60])
    cut, t = M.fp_cut(np.r_[s_ok, s_bad], np.r_[np.ones(20), np.zeros(5)])
    assert t == pytest.approx(0.51)
    assert cut == pytest.approx(3 / 5)                        # 0.10, 0.30, 0.505 removed


def test_bootstrap_matches_slow_loop():
    rng = np.random.default_rng(3)
    n = 180
    y = rng.random(n) < 0.4
    s = np.round(rng.random(n) * 0.5 + 0.3 * y, 2)           # ties on purpose
    got = M.bootstrap_fp_cut(s, y, n_boot=120, seed=7)
    cuts, ups = [], []
    for batch in M.bootstrap_batches(n, 120, 7):
        for idx in batch:
            c, t = M.fp_cut(s[idx], y[idx])
            cuts.append(c)
            ups.append(c - (s[idx][y[idx]] < t).mean())
    assert got["lower"] == pytest.approx(np.nanpercentile(cuts, 2.5), abs=1e-12)
    assert got["upper"] == pytest.approx(np.nanpercentile(cuts, 97.5), abs=1e-12)
    assert got["mean"] == pytest.approx(np.nanmean(cuts), abs=1e-12)
    assert got["uplift_lower"] == pytest.approx(np.nanpercentile(ups, 2.5), abs=1e-12)
    assert got["uplift_upper"] == pytest.approx(np.nanpercentile(ups, 97.5), abs=1e-12)
    # seeded: the same call gives the same numbers
    assert M.bootstrap_fp_cut(s, y, n_boot=120, seed=7) == got


def test_bootstrap_of_a_useless_score_has_no_uplift():
    rng = np.random.default_rng(1)
    y = rng.random(3000) < 0.4
    b = M.bootstrap_fp_cut(rng.random(3000), y, n_boot=300)
    assert 0.02 < b["lower"] < 0.06                             # ~5%: chance, not 0
    assert b["uplift_lower"] < 0 < b["uplift_upper"]


# --- training and metrics ------------------------------------------------------------------------

def test_split_and_metrics(ds, hgb):
    created, exit_ = ds["created_at"], ds["exit_time"]
    vf = created.min() + (created.max() - created.min()) * 0.7
    assert pd.Timestamp(hgb.validation_from) == vf
    assert hgb.metrics["n_train"] == int(((created < vf) & (exit_ < vf)).sum())
    assert hgb.metrics["n_validation"] == int((created >= vf).sum())
    assert hgb.metrics["n_train"] < int((created < vf).sum())  # rows exiting later left out
    assert hgb.feature_names == FEATURES and hgb.kind == "hgb"
    assert hgb.trained_on == M.dataset_hash(ds)

    val = ds[created >= vf]
    p = hgb.score(val)
    y = val["label"].to_numpy().astype(bool)
    o = hgb.metrics["overall"]
    kept = p >= hgb.threshold
    assert o["recall"] == pytest.approx(kept[y].mean()) and o["recall"] >= 0.95
    assert o["precision"] == pytest.approx(y[kept].mean())
    assert o["fpr"] == pytest.approx(1 - y[kept].mean())
    assert o["fpr_baseline"] == pytest.approx(1 - y.mean())
    assert o["expectancy"] == pytest.approx(val["pnl_pct"].to_numpy()[kept].mean())
    assert o["fp_cut"] == pytest.approx(M.fp_cut(p, y)[0])
    assert o["fp_cut"] > 0.30                                  # the planted signal is found
    assert o["fp_cut_lower"] < o["fp_cut"] < o["fp_cut_upper"]
    assert o["fp_uplift_lower"] > 0.15
    assert o["expectancy"] > o["expectancy_baseline"]
    per = hgb.metrics["per_symbol"]
    assert sorted(per) == ["EURUSD", "GBPUSD", "XAUUSD"]
    assert sum(d["n"] for d in per.values()) == len(val)
    m = val["symbol"].to_numpy() == "GBPUSD"
    assert per["GBPUSD"]["fp_cut"] == pytest.approx(M.fp_cut(p[m], y[m])[0])
    assert per["GBPUSD"]["precision"] == pytest.approx(y[m & kept].mean())
    json.dumps(M.flat_metrics(hgb.metrics))                    # MLflow-ready
    assert M.flat_metrics(hgb.metrics)["symbol.GBPUSD.fp_cut"] == per["GBPUSD"]["fp_cut"]


def test_training_needs_both_outcomes_and_validation_rows(ds):
    with pytest.raises(ValueError, match="need at least 20 rows"):
        M.train_meta_model(ds.assign(label=1))
    with pytest.raises(ValueError, match="no validation rows"):
        M.train_meta_model(ds, validation_from=ds["created_at"].max() + pd.Timedelta(days=1))
    with pytest.raises(ValueError, match="naive"):
        M.train_meta_model(ds, validation_from="2018-04-20")
    with pytest.raises(ValueError, match="bounded max_depth"):
        M.make_estimator("rf", params={"max_depth": None})


def test_all_nan_feature_is_left_out(ds):
    m = M.train_meta_model(ds.assign(noise=np.nan), n_boot=50)
    assert "noise" not in m.feature_names
    assert m.metrics["dropped_features"] == ["noise"]


def test_fit_final_keeps_threshold(ds, hgb):
    final = hgb.fit_final(ds)
    assert final.threshold == hgb.threshold and final.final
    assert final.metrics == hgb.metrics
    assert final.estimator is not hgb.estimator
    assert final.estimator.n_features_in_ == len(FEATURES)
    assert not np.allclose(final.score(ds), hgb.score(ds))    # refit on more rows


def test_decision_output_spaces(ds, hgb, rf):
    X = ds[FEATURES].to_numpy(float)
    np.testing.assert_allclose(hgb.decision_output(ds), hgb.estimator.decision_function(X))
    np.testing.assert_allclose(1 / (1 + np.exp(-hgb.decision_output(ds))), hgb.score(ds),
                               atol=1e-12)
    np.testing.assert_allclose(rf.decision_output(ds), rf.estimator.predict_proba(X)[:, 1])
    assert rf.estimator.max_depth == 6


def test_metadata_round_trip(ds, hgb):
    meta = json.loads(json.dumps(hgb.to_metadata()))
    back = M.MetaModel.from_metadata(hgb.estimator, meta)
    assert back.feature_names == hgb.feature_names and back.threshold == hgb.threshold
    np.testing.assert_array_equal(back.score(ds), hgb.score(ds))


def test_dataset_hash_is_content_based(ds):
    h = M.dataset_hash(ds)
    assert h == M.dataset_hash(ds.copy()) and len(h) == 64
    changed = ds.copy()
    changed.loc[5, "confidence"] += 1e-9
    assert M.dataset_hash(changed) != h


# --- scoring -------------------------------------------------------------------------------------

def test_score_insights_aligned_and_by_uri(ds, hgb, monkeypatch):
    sub = ds.iloc[[30, 10, 20]].set_axis(["x", "y", "z"])
    s = M.score_insights(sub, hgb)
    assert list(s.index) == ["x", "y", "z"] and s.name == "success_probability"
    np.testing.assert_allclose(s, hgb.estimator.predict_proba(sub[FEATURES].to_numpy(float))[:, 1])

    calls = []
    fake = types.ModuleType("autopsy_assets.registry")
    fake.load_meta_model = lambda uri: calls.append(uri) or hgb
    import autopsy_assets
    monkeypatch.setitem(sys.modules, "autopsy_assets.registry", fake)
    monkeypatch.setattr(autopsy_assets, "registry", fake, raising=False)
    by_uri = M.score_insights(sub, "models:/autopsy-meta-S@champion")
    assert calls == ["models:/autopsy-meta-S@champion"]
    pd.testing.assert_series_equal(by_uri, s)
    with pytest.raises(ValueError, match="models:/"):
        M.score_insights(sub, "runs:/abc/model")
    with pytest.raises(ValueError, match="lack feature column"):
        M.score_insights(sub.drop(columns="confidence"), hgb)


# --- SHAP ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["hgb", "rf"])
def test_shap_adds_up(ds, hgb, rf, which):
    model = hgb if which == "hgb" else rf
    sub = ds.iloc[::4]
    e = M.explain_insights(sub, model, top_n=3)
    contrib = e[[M.SHAP_PREFIX + f for f in FEATURES]].to_numpy()
    err = np.abs(e["base_value"].to_numpy() + contrib.sum(axis=1) - model.decision_output(sub))
    assert err.max() < 1e-6
    assert list(e.index) == list(sub.index)
    np.testing.assert_allclose(e["model_output"], model.decision_output(sub))
    np.testing.assert_allclose(e["probability"], model.score(sub))
    row = e.iloc[0]
    assert len(row["top_features"]) == 3
    mags = [abs(c) for _, c in row["top_features"]]
    assert mags == sorted(mags, reverse=True)
    assert abs(row["top_features"][0][1]) == pytest.approx(np.abs(contrib[0]).max())
    assert re.match(r"^score \d\.\d\d: .+ \([+-]\d+\.\d\d\), .+ \([+-]\d+\.\d\d\), .+$",
                    row["summary"])
    imp = M.global_importance(e)
    assert imp["feature"].iloc[0] == "confidence"
    assert imp["mean_abs_shap"].iloc[0] == pytest.approx(
        np.abs(e[M.SHAP_PREFIX + "confidence"]).mean())
    noise_rank = imp["feature"].tolist().index("noise")
    assert noise_rank >= 2


def test_summary_words():
    assert M.describe_feature("confidence", 30.0, 55.0) == "low confidence"
    assert M.describe_feature("session_asia", 1.0) == "Asia session"
    assert M.describe_feature("verified_FVG", 0.0) == "FVG not re-verified"
    assert M.describe_feature("minutes_to_next_news", 12.0) == "high-impact news in 12 min"
    assert M.describe_feature("symbol_code", 1.0, symbol="EURUSD") == "symbol EURUSD"
    assert M.describe_feature("regime_code", np.nan) == "regime unknown"


def test_broken_additivity_raises(ds):
    m = M.train_meta_model(ds, n_boot=20)
    true_output = m.decision_output
    m.decision_output = lambda X: true_output(X) + 1e-3
    with pytest.raises(M.AdditivityError, match="do not add up"):
        M.explain_insights(ds.iloc[:50], m)


# --- promotion gate ------------------------------------------------------------------------------

def _metrics(cut, lower, per=None, uplift_lower=0.1, n=600):
    return {"overall": {"fp_cut": cut, "fp_cut_lower": lower, "n": n, "fp_cut_chance": 0.05,
                        "fp_uplift_lower": uplift_lower},
            "per_symbol": {s: {"n": rows, "fp_cut": c} for s, (rows, c) in (per or {}).items()}}


def test_gate_refuses_a_model_without_uplift():
    noise = make_dataset(signal=False, seed=4)
    m = M.train_meta_model(noise)
    passed, reasons = M.promotion_gate(m.metrics)
    assert not passed
    assert any("no better than chance" in r for r in reasons)
    o = m.metrics["overall"]
    assert o["fp_uplift_lower"] <= 0


def test_gate_refusal_sentences_carry_the_numbers():
    passed, reasons = M.promotion_gate(_metrics(0.04, -0.01, uplift_lower=-0.02))
    assert not passed
    assert reasons[0] == ("The candidate's false-positive cut is 4.0% on 600 validation insights, "
                          "but its bootstrap 95% lower bound is -1.0%, not above 0 (the no-filter "
                          "baseline).")
    assert "lower bound of the difference is -2.0 points" in reasons[1]
    champion = _metrics(0.35, 0.30)
    passed, reasons = M.promotion_gate(_metrics(0.40, 0.33), champion)
    assert not passed
    assert reasons == [("The candidate's false-positive cut lower bound 33.0% (cut 40.0%) is not "
                        "above the champion's cut of 35.0% on the same validation insights.")]


def test_gate_refuses_a_symbol_more_than_3_points_worse():
    champion = _metrics(0.30, 0.25, {"EURUSD": (80, 0.40), "GBPUSD": (40, 0.50),
                                     "XAUUSD": (60, 0.30)})
    cand = _metrics(0.45, 0.38, {"EURUSD": (80, 0.365), "GBPUSD": (40, 0.10),
                                 "XAUUSD": (60, 0.28)})
    passed, reasons = M.promotion_gate(cand, champion)
    assert not passed
    assert reasons == [("EURUSD: the candidate cuts 36.5% of false positives on 80 validation "
                        "insights, 3.5 points below the champion's 40.0% (at most 3 points worse "
                        "is allowed).")]                  # GBPUSD has < 50 rows; XAUUSD -2 pts
    better = _metrics(0.45, 0.38, {"EURUSD": (80, 0.38), "GBPUSD": (40, 0.10),
                                   "XAUUSD": (60, 0.31)})
    assert M.promotion_gate(better, champion) == (True, [])


def test_gate_passes_a_real_model_and_vs_the_champion_on_the_same_rows(ds, hgb):
    assert M.promotion_gate(hgb.metrics) == (True, [])
    base = M.baseline_metrics(ds)
    assert base["overall"]["fp_cut"] == 0.0
    assert M.promotion_gate(hgb.metrics, base)[0]
    # a weak champion (trained on the noise feature only) re-evaluated on the same rows
    weak_ds = ds.copy()
    weak_ds.attrs["feature_names"] = ["noise"]
    weak = M.train_meta_model(weak_ds, n_boot=50)
    champ = M.evaluate_model(weak, ds)
    assert champ["n_validation"] == hgb.metrics["n_validation"]
    assert champ["overall"]["fp_cut"] < 0.15
    assert M.promotion_gate(hgb.metrics, champ) == (True, [])
    passed, reasons = M.promotion_gate(champ, M.evaluate_model(hgb, ds))
    assert not passed and len(reasons) >= 2


# --- A/B -----------------------------------------------------------------------------------------

def test_arm_for_is_the_documented_hash():
    for user in ("u01", "alice", "", "u42"):
        v = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16) / 2 ** 32
        assert M.arm_for(user, 0.3) == ("challenger" if v < 0.3 else "champion")
        assert M.arm_for(user, 0.0) == "champion" and M.arm_for(user, 1.0) == "challenger"


def test_arms_are_stable_and_share_proportional():
    users = [f"user-{i}" for i in range(20000)]
    a = M.arms_for(users, 0.2)
    assert list(a[:50]) == [M.arm_for(u, 0.2) for u in users[:50]]
    assert (a == "challenger").mean() == pytest.approx(0.2, abs=0.01)
    b = M.arms_for(users, 0.5)
    assert (b == "challenger").mean() == pytest.approx(0.5, abs=0.015)
    assert ((a == "challenger") <= (b == "challenger")).all()   # growing the share only adds
    np.testing.assert_array_equal(M.arms_for(users, 0.2), a)


def test_score_ab_uses_each_arms_model(ds, hgb, rf):
    out = M.score_ab(ds, hgb, rf, share=0.5)
    arm = M.arms_for(ds["user_id"], 0.5)
    np.testing.assert_array_equal(out["arm"], arm)
    ch = arm == "challenger"
    assert 0.2 < ch.mean() < 0.8
    np.testing.assert_allclose(out.loc[ch, "success_probability"], rf.score(ds[ch]))
    np.testing.assert_allclose(out.loc[~ch, "success_probability"], hgb.score(ds[~ch]))
    assert (M.score_ab(ds, hgb)["arm"] == "champion").all()
