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
    assert cli.main(["run", "--from-date", "2018-03-06", "--to-date", "2018-03-06",
                     "--skip-rca", "--horizons", "4H,24H"]) == 0
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
    assert cli.main(["run", "--insight-id", iid, "--horizons", "4H,24H", "--force", "--skip-rca"]) == 0
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == 2


def test_bad_arguments_are_refused_with_a_reason(home, capsys):
    assert cli.main(["run", "--from-date", "2018-03-06", "--horizons", "2H"]) == 2
    assert "unknown horizon(s) 2H" in capsys.readouterr().err
    assert cli.main(["run", "--insight-id", "NOPE"]) == 2
    assert "unknown insight id(s): NOPE" in capsys.readouterr().err
    assert cli.main(["run"]) == 2
