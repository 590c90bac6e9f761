"""Follow-ups end to end: an applied action of day A is followed up in DailyReport(A + N),
its figures refereed by the world's truth; the line reaches Slack's outbox and the HTML page."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import luigi
import pandas as pd
import pytest
import sqlalchemy as sa
from luigi.execution_summary import LuigiStatusCode

from adperf import warehouse
from tasks.load import DailyReport

from .conftest import END, configure

N = 2  # [rules] follow_up_days here: both windows inside the tiny world
A = END - dt.timedelta(days=N)
CENT = Decimal("0.005")


@pytest.fixture()
def followed(run_root: Path) -> Iterator[Path]:
    configure(run_root, rules={"follow_up_days": str(N)})
    try:
        yield run_root
    finally:
        luigi.configuration.get_config().set("rules", "follow_up_days", "7")


def _build(day: dt.date) -> None:
    result = luigi.build([DailyReport(date=day)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text


def _truth(root: Path, campaign: str, first: dt.date, last: dt.date) -> tuple[Decimal, int]:
    t = pd.read_csv(root / "world" / "truth" / "campaign_daily.csv", dtype=str)
    t = t[(t["campaign_id"] == campaign) & (t["date"] >= first.isoformat())]
    t = t[t["date"] <= last.isoformat()]
    return sum((Decimal(v) for v in t["spend_report"]), Decimal(0)), int(
        t["installs"].astype(int).sum()
    )


def test_an_applied_scale_is_followed_up_against_the_truth(followed: Path) -> None:
    _build(A)
    engine = warehouse.make_engine(f"sqlite:///{followed / 'warehouse.db'}")
    camp = warehouse.read_days(engine, "campaign_daily", A.isoformat(), A.isoformat())
    paid = camp[(camp["platform"] == "google_ads") & (camp["installs"] > 0)]
    campaign = str(paid.sort_values("spend", ascending=False).iloc[0]["campaign_id"])
    name = str(paid.sort_values("spend", ascending=False).iloc[0]["campaign_name"])
    warehouse.create_action_log(engine)
    row = {
        "date": A, "platform": "google_ads", "level": "campaign", "object_id": campaign,
        "object_name": name, "action": "scale", "field": "amount_micros",
        "value_before": "50000000", "value_after": "60000000", "unit": "micros USD",
        "applied_at": dt.datetime(2026, 11, 19, 1, 0), "applied_by": "test", "status": "applied",
        "claim": 1,
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(warehouse.action_log.insert().values(**row))
    _build(END)

    out = warehouse.read_table(engine, "action_outcomes")
    assert len(out) == 1
    got = out.iloc[0]
    assert (str(got["date"]), str(got["action_date"]), got["object_id"], got["change"]) == (
        END.isoformat(), A.isoformat(), campaign, "+20%",
    )  # fmt: skip
    spend_before, installs_before = _truth(followed, campaign, A - dt.timedelta(days=N - 1), A)
    spend_since, installs_since = _truth(followed, campaign, A + dt.timedelta(days=1), END)
    assert abs(Decimal(str(got["spend_before"])) - spend_before) < CENT
    assert abs(Decimal(str(got["spend_since"])) - spend_since) < CENT
    assert (got["installs_before"], got["installs_since"]) == (installs_before, installs_since)
    cpi = (spend_since / installs_since).quantize(Decimal("0.000001"))
    assert abs(Decimal(str(got["cpi_since"])) - cpi) <= Decimal("0.000001")
    # A's cohort was valued (its report ran), A - 1's not: pROAS before rests on 1 of 2 days.
    assert (got["valued_days_before"], got["valued_days_since"]) == (1, 1)
    decided = warehouse.read_days(engine, "actions", A.isoformat(), A.isoformat())
    expected = decided[(decided["object_id"] == campaign) & (decided["level"] == "campaign")]
    assert got["proas_expected"] == pytest.approx(float(expected.iloc[0]["proas"]))
    line = str(got["line"])
    assert line.startswith(f"scaled {name} +20% on {A:%m-%d}: spend ")

    message = json.loads((followed / "outbox" / f"slack-{END}.json").read_text())
    texts = [b["text"]["text"] for b in message["blocks"] if isinstance(b.get("text"), dict)]
    follow = [t for t in texts if t.startswith(":mag: *Did it work?*")]
    assert follow and line.replace("&", "&amp;") in follow[0]
    page = (followed / "lake" / "reports" / f"date={END}" / "report.html").read_text()
    assert "Did it work?" in page

    # Re-loading the day replaces its follow-ups, never adds them twice.
    with engine.begin() as conn:
        conn.execute(sa.delete(warehouse.load_marker).where(warehouse.load_marker.c.date == END))
    _build(END)
    assert len(warehouse.read_table(engine, "action_outcomes")) == 1
    engine.dispose()
