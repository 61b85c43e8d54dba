"""The context sources from a CSV file and a SQL table, and a regime feed, through the assets."""
from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from autopsy_assets.defs.context import market_regimes, news_events
from autopsy_assets.resources import AuditStoreResource, NewsSource, RegimeSource

pytestmark = pytest.mark.dagster
DAY = "2018-03-09"
NEWS = pd.DataFrame({
    "event_id": ["NFP-2018-03-09", "BAD-1", "BAD-2"],
    "ts": ["2018-03-09T13:30:00+00:00", "2018-03-09T14:00:00", "2018-03-09T15:00:00+00:00"],
    "currencies": ["USD", "EUR", "EUR|USD"],
    "impact": ["high", "high", "enormous"],
    "title": ["US Non-Farm Payrolls", "no timezone", "unknown impact"]})


def _materialize(asset, resources, tmp_path):
    with dg.instance_for_test() as instance:
        return dg.materialize([asset], partition_key=DAY, instance=instance,
                              resources={"audit_store": AuditStoreResource(
                                  database_url=f"sqlite:///{tmp_path}/audit.db"), **resources})


@pytest.mark.parametrize("kind", ["csv", "sql"])
def test_news_from_a_file_or_a_table_with_bad_rows_quarantined(kind, tmp_path):
    if kind == "csv":
        NEWS.to_csv(tmp_path / "news.csv", index=False)
        source = NewsSource(kind="csv", path=str(tmp_path / "news.csv"))
    else:
        url = f"sqlite:///{tmp_path}/calendar.db"
        NEWS.to_sql("calendar", sa.create_engine(url), index=False)
        source = NewsSource(kind="sql", url=url, table="calendar")
    result = _materialize(news_events, {"news_source": source}, tmp_path)
    meta = result.asset_materializations_for_node("news_events")[0].metadata
    assert meta["events"].value == 1 and meta["quarantined"].value == 2
    store = AuditStoreResource(database_url=f"sqlite:///{tmp_path}/audit.db").get()
    news = store.read_news()
    assert news["event_id"].tolist() == ["NFP-2018-03-09"] and news["currencies"].iloc[0] == ["USD"]
    reasons = store.read_quarantine(source="news").set_index("row_id")["reason"]
    assert "timezone" in reasons["BAD-1"] and "impact" in reasons["BAD-2"]


def test_regimes_from_a_feed(tmp_path):
    feed = pd.DataFrame({"symbol": ["EURUSD", "EURUSD", "GBPUSD"],
                         "ts": ["2018-03-09T10:00:00+00:00", "2018-03-09T11:00:00+00:00",
                                "2018-03-09T10:00:00+00:00"],
                         "regime": ["trending_up", "Ranging", "sideways"],
                         "confidence": [80, 55, 70]})
    feed.to_csv(tmp_path / "regimes.csv", index=False)
    result = _materialize(market_regimes, {"regime_source": RegimeSource(
        kind="csv", path=str(tmp_path / "regimes.csv"))}, tmp_path)
    assert result.asset_materializations_for_node("market_regimes")[0].metadata["rows"].value == 2
    store = AuditStoreResource(database_url=f"sqlite:///{tmp_path}/audit.db").get()
    got = store.read_regimes()
    assert got["regime"].tolist() == ["trending_up", "ranging"] and set(got["source"]) == {"feed"}
    assert len(store.read_quarantine(source="regimes")) == 1
