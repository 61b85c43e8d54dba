"""The Dagster shell, for real: materialise the graph in-process on a temporary instance and
read the audits back from the store (no mocks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from autopsy_assets.definitions import defs
from autopsy_assets.resources import AuditStoreResource, CandleSource, InsightSource, RegimeSource

pytestmark = pytest.mark.dagster
RANGE = ("2018-03-06", "2018-03-07")


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def store_resource(tmp_path):
    return AuditStoreResource(database_url=f"sqlite:///{tmp_path}/audit.db")


def run_range(job: str, first: str, last: str, instance, resources, run_config=None):
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        resources=resources,
        run_config=run_config or {},
        raise_on_error=False,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
    )
    assert result.success, result.get_failed_step_keys()
    return result


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert {a.key.to_user_string() for a in defs.resolve_all_asset_specs()} >= {
        "candles",
        "insights",
        "labeled_audits",
    }


def test_materialize_labels_every_insight_and_a_rerun_adds_no_rows(instance, store_resource):
    # two days of history: regimes on 15-minute bars have enough warm-up (1h would need a week)
    resources = {
        "audit_store": store_resource,
        "candle_source": CandleSource(),
        "insight_source": InsightSource(),
        "regime_source": RegimeSource(timeframe="15m"),
    }
    first = run_range("autopsy_job", *RANGE, instance, resources)
    store = store_resource.get()
    start, end = (
        pd.Timestamp(RANGE[0], tz="UTC"),
        pd.Timestamp(RANGE[1], tz="UTC") + pd.Timedelta(days=1),
    )
    ins = store.read_insights(start, end)
    audits = store.current_audits(start, end)
    assert len(ins) > 20
    assert len(audits) == 4 * len(ins)
    assert set(audits["outcome"]) <= {
        "succeeded",
        "failed",
        "neutral",
        "filtered_out",
        "pending",
        "needs_review",
    }
    assert (audits["outcome"] == "succeeded").sum() > 0 and (
        audits["outcome"] == "failed"
    ).sum() > 0
    # the candles of D..D+7 arrived in the same run only for D..D+1: the longer horizons may wait
    mat = first.asset_materializations_for_node("labeled_audits")
    assert {m.partition for m in mat} == {"2018-03-06", "2018-03-07"}
    assert mat[0].metadata["audits"].value == len(audits)
    assert "| horizon |" in mat[0].metadata["outcomes"].value
    (check,) = first.get_asset_check_evaluations()
    assert check.passed and check.metadata["replayed"].value == 25
    # the context and RCA assets ran in the same job and wrote to the store
    # failed or neutral, including filtered insights whose replay failed (was the filter right?)
    failed = audits[audits["replay_outcome"].isin(["failed", "neutral"])]
    rca = store.read_rca(start, end, primary_only=True)
    assert set(zip(rca["insight_id"], rca["horizon"])) == set(
        zip(failed["insight_id"], failed["horizon"])
    )
    assert rca["confidence"].between(0, 100).all() and rca["summary"].str.len().gt(10).all()
    assert len(store.read_news(start, end)) > 0

    assert len(store.read_regimes(start, end)) > 0
    claims = ins[ins["patterns"].fillna("").astype(str).str.len() > 0]
    checks = store.read_pattern_checks(ins["insight_id"])
    assert set(checks["insight_id"]) == set(claims["insight_id"])

    second = run_range("autopsy_job", *RANGE, instance, resources)
    mat2 = second.asset_materializations_for_node("labeled_audits")[0].metadata
    assert mat2["inserted"].value == 0 and mat2["superseded"].value == 0
    again = store.current_audits(start, end)
    assert len(again) == len(audits)
    pd.testing.assert_series_equal(
        again.sort_values(["insight_id", "horizon"])["snapshot_hash"].reset_index(drop=True),
        audits.sort_values(["insight_id", "horizon"])["snapshot_hash"].reset_index(drop=True),
    )
    assert len(store.read_rca(start, end, primary_only=True)) == len(rca)  # replaced, not added


def test_sensor_relabels_pending_audits_once_candles_arrive(instance, store_resource, tmp_path):
    from autopsy_assets.data import demo_candles

    day = "2018-03-07"
    full = demo_candles()
    csv = tmp_path / "candles.csv"
    # only the candles of day D exist at first
    cut = pd.Timestamp("2018-03-08", tz="UTC")
    full[full["ts"] < cut].to_csv(csv, index=False)
    resources = {
        "audit_store": store_resource,
        "candle_source": CandleSource(kind="csv", path=str(csv)),
        "insight_source": InsightSource(),
    }
    run_range("label_job", day, day, instance, resources)
    store = store_resource.get()
    d0, d1 = pd.Timestamp(day, tz="UTC"), pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    pending = store.current_audits(d0, d1, outcomes=["pending"])
    assert len(pending) > 0

    sensor = defs.resolve_sensor_def("pending_audits_sensor")

    def tick():
        ctx = dg.build_sensor_context(
            instance=instance, resources={"audit_store": store_resource}, definitions=defs
        )
        return sensor.evaluate_tick(ctx)

    nothing = tick()
    assert not nothing.run_requests and nothing.skip_message
    # the rest of the week arrives
    full[full["ts"] < pd.Timestamp("2018-03-17", tz="UTC")].to_csv(csv, index=False)
    run_range(
        "label_job",
        "2018-03-08",
        "2018-03-16",
        instance,
        {**resources, "insight_source": InsightSource(include_bad_rows=False)},
        run_config={"ops": {"labeled_audits": {"config": {"insight_ids": ["none"]}}}},
    )
    ready = tick()
    keys = [r.partition_key for r in ready.run_requests]
    assert day in keys
    rr = next(r for r in ready.run_requests if r.partition_key == day)
    # the run key names the newest candle: another arrival of candles gives another run
    assert rr.run_key.startswith(f"relabel:{day}:2018-03-16T")
    defs.resolve_job_def("relabel_job").execute_in_process(
        instance=instance,
        partition_key=day,
        resources={"audit_store": store_resource},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        tags={**rr.tags, "dagster/run_key": rr.run_key},
    )
    after = store.current_audits(d0, d1)
    settled = after[after["insight_id"].isin(pending["insight_id"])]
    assert (settled["outcome"] != "pending").all()
    assert day not in [r.partition_key for r in (tick().run_requests or [])]


def test_schedule_targets_the_day_that_just_closed(instance):
    schedule = defs.resolve_schedule_def("autopsy_daily_schedule")
    assert schedule.cron_schedule == "15 1 * * *"
    ctx = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=pd.Timestamp("2018-03-10 01:15", tz="UTC").to_pydatetime(),
    )
    assert [r.partition_key for r in schedule.evaluate_tick(ctx).run_requests] == ["2018-03-09"]


def test_runs_persist_on_the_repo_instance_config(tmp_path, monkeypatch, store_resource):
    shutil.copy(Path(__file__).resolve().parents[2] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as inst:
        assert inst.telemetry_enabled is False
        run_range(
            "autopsy_job",
            "2018-03-06",
            "2018-03-06",
            inst,
            {
                "audit_store": store_resource,
                "candle_source": CandleSource(),
                "insight_source": InsightSource(),
            },
        )
    with dg.DagsterInstance.get() as inst:
        (run,) = inst.get_runs()
        assert run.tags["autopsy/db"] == "audit"
        assert inst.get_materialized_partitions(dg.AssetKey("labeled_audits")) == {"2018-03-06"}


@pytest.mark.integration
def test_labeling_run_on_postgresql(instance, pg_url):
    """The same graph with the audit store on the real PostgreSQL server."""
    store_resource = AuditStoreResource(database_url=pg_url)
    resources = {
        "audit_store": store_resource,
        "candle_source": CandleSource(),
        "insight_source": InsightSource(),
    }
    run_range("label_job", "2018-03-06", "2018-03-06", instance, resources)
    store = store_resource.get()
    day = pd.Timestamp("2018-03-06", tz="UTC")
    audits = store.current_audits(day, day + pd.Timedelta(days=1))
    assert len(audits) == 4 * len(store.read_insights(day, day + pd.Timedelta(days=1))) > 0
    again = run_range("label_job", "2018-03-06", "2018-03-06", instance, resources)
    assert (
        again.asset_materializations_for_node("labeled_audits")[0].metadata["inserted"].value == 0
    )
    store.close()


def test_replay_window_reads_the_audit_back_from_its_blocks(instance, store_resource):
    from autopsy_assets.api import replay_window

    run_range(
        "label_job",
        "2018-03-06",
        "2018-03-06",
        instance,
        {
            "audit_store": store_resource,
            "candle_source": CandleSource(),
            "insight_source": InsightSource(),
        },
    )
    store = store_resource.get()
    day = pd.Timestamp("2018-03-06", tz="UTC")
    audits = store.current_audits(day, day + pd.Timedelta(days=1), horizons=["4H"])
    a = audits[audits["exit_reason"] == "horizon"].iloc[0]
    rep = replay_window(a, store.read_blocks)
    agg, window = rep["aggregate"], rep["candles"]
    # a Tuesday 4H window on one-minute candles: 240 bars, the last ending at the window's end
    assert a["candle_timeframe"] == "1m" and agg["bars"] == 240
    assert window["ts"].iloc[-1] + pd.Timedelta(minutes=1) == a["exit_time"]
    # the horizon exit is the last bar's close (bid for a long, ask = bid + spread for a short)
    last = window.iloc[-1]
    assert a["exit_price"] == last["close"] + (0.0 if a["side"] == "long" else last["spread"])
    assert agg["high"] == window["high"].max() and agg["low"] == window["low"].min()
    assert len(rep["path"]) <= 502 and rep["path"]["ts"].is_monotonic_increasing


def test_quarantined_rows_keep_their_raw_content(instance, store_resource):
    from autopsy_assets.defs.assets import insights as insights_asset
    from autopsy_assets.resources import _demo_insights

    demo = _demo_insights(True)
    bad = demo[demo["insight_id"] == "BAD-ENTRY-NOT-NUMBER"].iloc[0]
    day = str(pd.Timestamp(bad["created_at"]).date())
    result = dg.materialize([insights_asset], partition_key=day, instance=instance,
                            resources={"audit_store": store_resource,
                                       "insight_source": InsightSource()})
    assert result.asset_materializations_for_node("insights")[0].metadata["quarantined"].value >= 1
    q = store_resource.get().read_quarantine(source="insights").set_index("row_id")
    row = q.loc["BAD-ENTRY-NOT-NUMBER"]
    assert row["reason"] == "entry_price 'n/a' is not a number"
    assert row["payload"]["entry_price"] == "n/a" and row["payload"]["symbol"] == bad["symbol"]
