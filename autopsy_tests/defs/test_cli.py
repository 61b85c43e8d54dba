"""The `autopsy` command as a user runs it: real Dagster runs on a real (temporary) instance."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from autopsy_assets import cli
from autopsy_assets.store import AuditStore

pytestmark = pytest.mark.dagster


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPSY_HOME", str(tmp_path / ".autopsy"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("AUTOPSY_DATABASE_URL", raising=False)
    return tmp_path


def test_run_dry_run_and_insight_id(home, capsys):
    assert (
        cli.main(
            [
                "run",
                "--from-date",
                "2018-03-06",
                "--to-date",
                "2018-03-06",
                "--skip-rca",
                "--horizons",
                "4H,24H",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "SUCCESS" in out and "Quarantined rows in this run: 0" in out
    store = AuditStore(f"sqlite:///{home}/.autopsy/audit.db")
    day = pd.Timestamp("2018-03-06", tz="UTC")
    audits = store.current_audits(day, day + pd.Timedelta(days=1))
    assert set(audits["horizon"]) == {"4H", "24H"}
    with dg.DagsterInstance.get() as instance:
        (run,) = instance.get_runs()
        assert run.job_name == "label_job" and run.tags["autopsy/trigger"] == "cli"
        assert run.tags["autopsy/horizons"] == "4H,24H"

    assert cli.main(["run", "--from-date", "2018-03-06", "--dry-run", "--symbol", "EURUSD"]) == 0
    out = capsys.readouterr().out
    n_eur = (store.read_insights(day, day + pd.Timedelta(days=1))["symbol"] == "EURUSD").sum()
    assert f"{n_eur} insight(s) in the store" in out and "nothing launched" in out

    settled = audits[~audits["outcome"].isin(["pending", "needs_review"])]
    some = settled.groupby("insight_id").size()
    iid = some[some == 2].index[0]
    assert cli.main(["run", "--insight-id", iid, "--horizons", "4H,24H"]) == 0
    assert "already audited (use --force" in capsys.readouterr().out
    assert (
        cli.main(["run", "--insight-id", iid, "--horizons", "4H,24H", "--force", "--skip-rca"]) == 0
    )
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 2


def test_bad_arguments_are_refused_with_a_reason(home, capsys):
    assert cli.main(["run", "--from-date", "2018-03-06", "--horizons", "2H"]) == 2
    assert "unknown horizon(s) 2H" in capsys.readouterr().err
    assert cli.main(["run", "--insight-id", "NOPE"]) == 2
    assert "unknown insight id(s): NOPE" in capsys.readouterr().err
    assert cli.main(["run"]) == 2


def test_retrain_lifecycle_commands(home, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/.autopsy/mlflow.db")
    assert (
        cli.main(
            ["run", "--from-date", "2018-03-05", "--to-date", "2018-03-16", "--horizons", "24H"]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        cli.main(
            [
                "retrain",
                "request",
                "--strategy",
                "ZenithEdge",
                "--by",
                "alice",
                "--reason",
                "first model",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rid = out.splitlines()[0].strip()
    assert len(rid) == 32 and "status pending_approval" in out and "gate:" in out
    assert "requested by alice: first model" in out

    assert cli.main(["approve", rid, "--reviewer", "alice"]) == 1
    assert "cannot also approve it" in capsys.readouterr().err
    assert cli.main(["reject", rid, "--reviewer", "bob", "--notes", "too few audits"]) == 0
    assert f"request {rid} rejected by bob" in capsys.readouterr().out
    assert cli.main(["approve", rid, "--reviewer", "bob"]) == 1  # already decided
    assert "refused:" in capsys.readouterr().err
    assert cli.main(["retrain", "show", rid]) == 0
    out = capsys.readouterr().out
    assert "status rejected" in out and "pending_approval -> rejected" in out and "by bob" in out
    assert cli.main(["retrain", "list", "--status", "rejected"]) == 0
    assert rid in capsys.readouterr().out
    assert cli.main(["rollback", "--strategy", "ZenithEdge", "--by", "bob", "--reason", "x"]) == 1
    assert "refused:" in capsys.readouterr().err
    assert cli.main(["report"]) == 0
    assert "ZenithEdge" in capsys.readouterr().out


def test_review_lists_and_records(home, capsys):
    # a day of the real hourly sample where some audits need a person
    assert cli.main(["run", "--from-date", "2017-09-20", "--to-date", "2017-09-20",
                     "--skip-rca"]) == 0
    capsys.readouterr()
    store = AuditStore(f"sqlite:///{home}/.autopsy/audit.db")
    audits = store.current_audits()
    todo = audits[(audits["outcome"] == "needs_review") | audits["ambiguous"]]
    assert len(todo) >= 2
    assert cli.main(["review"]) == 0
    out = capsys.readouterr().out
    first = todo.iloc[0]
    assert f"{len(todo)} audit(s) to review" in out and first["insight_id"] in out
    assert cli.main(["review", "--insight-id", first["insight_id"], "--horizon", first["horizon"],
                     "--reviewer", "carol", "--decision", "confirmed", "--notes", "ok"]) == 0
    assert "confirmed by carol" in capsys.readouterr().out
    assert cli.main(["review"]) == 0
    assert f"{len(todo) - 1} audit(s) to review" in capsys.readouterr().out
    assert cli.main(["review", "--insight-id", "NOPE", "--reviewer", "carol"]) == 1
    assert "no current audit" in capsys.readouterr().err
