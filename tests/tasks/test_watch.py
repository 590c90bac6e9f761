"""The watch through the real graph: a CPI spike planted in a tiny world reaches the Slack
message and the HTML page, and source_discrepancy is loaded (replaced on a re-load)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode
from luigi.task_register import Register

from adperf import lake, warehouse
from adperf.sandbox.anomalies import Anomaly
from adperf.sandbox.entities import build_entities
from adperf.sandbox.profiles import get_profile
from adperf.sandbox.world import build_world
from tasks.load import DailyReport

from .conftest import END, configure

# The tiny world's campaigns have a few installs a day: the thresholds are opened up here, so
# the test is about the wiring (sandbox/test_anomalies.py holds the real thresholds).
WATCH = {"z": "1.0", "min_installs": "1", "min_spend": "1", "min_baseline_weeks": "3"}


def _campaign() -> str:
    ent = build_entities(7, get_profile("tiny"))
    usd = [c for c in ent.campaigns if c.currency == "USD" and c.platform == "facebook"]
    return usd[0].campaign_id


def _seed_history(root: Path) -> None:
    """campaign_daily of the world's earlier days, as if those days had been reported."""
    truth = pd.read_csv(root / "world" / "truth" / "campaign_daily.csv", dtype=str)
    engine = warehouse.make_engine(f"sqlite:///{root / 'warehouse.db'}")
    try:
        for day, rows in truth[truth["date"] < END.isoformat()].groupby("date"):
            frame = pd.DataFrame(
                {
                    "date": day,
                    "platform": rows["platform"],
                    "campaign_id": rows["campaign_id"],
                    "campaign_name": rows["campaign_id"],
                    "spend": rows["spend_report"].astype(float),
                    "impressions": 0,
                    "clicks": 0,
                    "installs": rows["installs"].astype(int),
                    "payers": rows["payers"].astype(int),
                    "revenue": rows["revenue_report"].astype(float),
                    "assisted_revenue": 0.0,
                }
            )
            warehouse.load_day(engine, str(day), {"campaign_daily": frame}, marker="history")
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("watch")
    spike = Anomaly("cpi_spike", END - dt.timedelta(days=1), 4.0, campaign_id=_campaign())
    start = END - dt.timedelta(days=get_profile("tiny").days - 1)
    build_world(root / "world", seed=7, start=start, end=END, profile="tiny", anomalies=[spike])
    configure(root, watch=WATCH)
    _seed_history(root)
    result = luigi.build([DailyReport(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    yield root
    cfg = luigi.configuration.get_config()
    for key in WATCH:
        cfg.remove_option("watch", key)
    Register.clear_instance_cache()


def test_the_planted_cpi_spike_is_in_the_slack_message_and_the_page(done: Path) -> None:
    found = lake.read_partition(done / "lake", "watch", "date", END.isoformat())
    line = found[(found["check"] == "cpi") & (found["campaign_id"] == _campaign())]
    assert len(line) == 1 and float(line["change"].iloc[0]) > 1.0
    message = str(line["message"].iloc[0])
    report = done / "lake" / "reports" / f"date={END.isoformat()}"
    blocks = json.loads((report / "message.json").read_text(encoding="utf-8"))["blocks"]
    watch = [b for b in blocks if "*Watch*" in b.get("text", {}).get("text", "")]
    assert len(watch) == 1 and message in watch[0]["text"]["text"]
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "<h2>Watch</h2>" in page and 'data-check="cpi"' in page


def test_source_discrepancy_is_loaded_for_the_day(done: Path) -> None:
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    try:
        table = warehouse.read_table(engine, "source_discrepancy")
    finally:
        engine.dispose()
    assert set(table["date"].astype(str)) == {END.isoformat()}
    spend = lake.read_partition(done / "lake", "spend", "date", END.isoformat())
    reported = spend.groupby("campaign_id")["installs_reported"].sum()
    got = table.set_index("campaign_id")["installs_platform"]
    assert got.to_dict() == {k: v for k, v in reported.to_dict().items() if v > 0 or k in got}
    assert (table["difference"] == table["installs_platform"] - table["installs_mmp"]).all()
