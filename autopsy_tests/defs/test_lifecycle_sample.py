"""The learning loop on the real EURUSD sample, through the CLI as people use it: a first champion
learned from 2017-04..10, then a request on the later months judged against it on insights the
champion never saw; approval by someone else, or a refusal that changes nothing; rollback."""
from __future__ import annotations

import pytest
from mlflow import MlflowClient

from autopsy_assets import cli, registry
from autopsy_assets.store import AuditStore

pytestmark = pytest.mark.dagster
S = "ZenithEdge"


def _request(capsys, reason: str) -> tuple[str, str]:
    assert cli.main(["retrain", "request", "--strategy", S, "--by", "alice", "--reason", reason]) == 0
    out = capsys.readouterr().out
    return out.splitlines()[0].strip(), out


def test_loop_on_the_sample_data(tmp_path, monkeypatch, capsys):
    home = tmp_path / ".autopsy"
    monkeypatch.setenv("AUTOPSY_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow.db")
    monkeypatch.delenv("AUTOPSY_DATABASE_URL", raising=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")

    assert cli.main(["run", "--from-date", "2017-04-19", "--to-date", "2017-10-31",
                     "--skip-rca", "--horizons", "24H"]) == 0
    capsys.readouterr()
    rid1, out = _request(capsys, "first model")
    assert "gate: PASSES" in out and "metrics_before (champion): fp_cut 0," in out  # baseline
    assert cli.main(["approve", rid1, "--reviewer", "alice"]) == 1             # self-approval
    assert "cannot also approve it" in capsys.readouterr().err
    assert cli.main(["approve", rid1, "--reviewer", "bob", "--notes", "ok"]) == 0
    assert registry.aliases(S, client=client) == {"champion": "1"}

    assert cli.main(["run", "--from-date", "2017-11-01", "--to-date", "2018-02-07",
                     "--skip-rca", "--horizons", "24H"]) == 0
    capsys.readouterr()
    rid2, out = _request(capsys, "four more months")
    store = AuditStore(f"sqlite:///{home}/audit.db")
    info = registry.show_request(rid2, client=client, store=store)
    champion = registry.load_meta_model(f"models:/autopsy-meta-{S}/1", client=client)
    # judged only on insights the champion never learned
    assert info["tags"]["validation_from"] > champion.trained_until
    trail_before = store.trail(rid2)
    if not info["gate"]["passed"]:
        assert cli.main(["approve", rid2, "--reviewer", "bob"]) == 1
        assert "failed the promotion gate" in capsys.readouterr().err
        assert registry.aliases(S, client=client) == {"champion": "1"}
        assert store.trail(rid2).equals(trail_before)
        assert cli.main(["rollback", "--strategy", S, "--by", "bob", "--reason", "x"]) == 1
        assert "no previous version" in capsys.readouterr().err
    else:
        assert cli.main(["approve", rid2, "--reviewer", "bob"]) == 0
        assert registry.aliases(S, client=client) == {"champion": "2", "previous": "1"}
        assert cli.main(["rollback", "--strategy", S, "--by", "bob", "--reason", "worse live"]) == 0
        assert registry.aliases(S, client=client)["champion"] == "1"
        assert store.latest_status(rid2) == "rolled_back"
