"""[adperf] account_days through the luigi graph on the tiny world, refereed by its delivery.

The tiny world's USD Facebook account keeps America/Los_Angeles days (its DST ends on
2026-11-01: a 25-hour day), the Google customer Australia/Sydney days; the report is in
Asia/Seoul. `account` (the default) keeps each account's days; `report` re-cuts their hours.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf import lake, warehouse
from adperf.sandbox import hourly
from adperf.sandbox.world import load_meta
from tasks.load import DailyReport
from tasks.transform import Spend

from .conftest import END, configure

REPORT = "Asia/Seoul"
# Around LA's DST end, and a day before the world's end (its last day has no next local day
# for an account ahead of the report zone).
DAYS = (dt.date(2026, 11, 1), dt.date(2026, 11, 2), END - dt.timedelta(days=1))


def adperf_section(root: Path, account_days: str) -> dict[str, str]:
    return {
        "sandbox": "true",
        "data_root": str(root / "lake"),
        "warehouse_url": f"sqlite:///{root / 'warehouse.db'}",
        "report_timezone": REPORT,
        "report_currency": "USD",
        "account_days": account_days,
    }


def truth(world: Path) -> dict[tuple[str, str], int]:
    """Spend micros (account currency) per (report day, ad): the world's delivery of each
    account day, its hours put on the report days they fall on."""
    meta = load_meta(world)
    zones = {a["account_id"]: a["timezone_name"] for a in meta["facebook_accounts"]}
    zones |= {c["customer_id"]: c["time_zone"] for c in meta["google_ads_customers"]}
    zones |= {a["advertiser_id"]: a["timezone"] for a in meta["tiktok_advertisers"]}
    zones |= {str(o["orgId"]): o["timeZone"] for o in meta["apple_ads_orgs"]}
    # Google reports App campaigns at campaign level only: one row per campaign and day.
    app = set(meta["google_app_campaign_ids"])
    out: dict[tuple[str, str], int] = defaultdict(int)
    for r in pd.read_parquet(world / "ad_daily.parquet").itertuples():
        units, digits = hourly.minor_units(r.spend)
        ad = f"campaign-{r.campaign_id}" if r.campaign_id in app else r.ad_id
        for t, _, c in hourly.by_instant(r.date, zones[r.account_id], {"spend": units}):
            day = t.astimezone(ZoneInfo(REPORT)).date().isoformat()
            out[(day, ad)] += c["spend"] * 10 ** (6 - digits)
    return out


def spend_of(root: Path, day: dt.date) -> pd.DataFrame:
    return lake.read_partition(root / "lake", "spend", "date", day.isoformat())


def test_report_days_recut_the_offset_accounts_exactly(run_root: Path) -> None:
    configure(run_root, adperf=adperf_section(run_root, "report"))

    result = luigi.build([Spend(date=d) for d in DAYS], local_scheduler=True, detailed_summary=True)

    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    want = truth(run_root / "world")
    for day in DAYS:
        spend = spend_of(run_root, day)
        got = dict(zip(spend["ad_id"], spend["spend_original_micros"], strict=True))
        expected = {ad: v for (d, ad), v in want.items() if d == day.isoformat() and v}
        assert {ad: v for ad, v in got.items() if v} == expected, day
        zones = set(spend["account_timezone"])
        assert {"America/Los_Angeles", "Australia/Sydney", REPORT} <= zones
    # The world's own (account) days differ: the re-cut really moved spend.
    daily = pd.read_parquet(run_root / "world" / "ad_daily.parquet")
    la = {a["account_id"] for a in load_meta(run_root / "world")["facebook_accounts"]}
    la_ads = set(daily.loc[daily["account_id"].isin(la), "ad_id"])
    same_day = daily[(daily["date"] == DAYS[1].isoformat()) & daily["ad_id"].isin(la_ads)]
    recut = spend_of(run_root, DAYS[1])
    assert sum(recut.loc[recut["ad_id"].isin(la_ads), "spend_original_micros"]) != sum(
        hourly.minor_units(v)[0] * 10**4 for v in same_day["spend"]
    )


BEFORE = END - dt.timedelta(days=1)


@pytest.fixture(scope="module")
def account_then_report(module_root: Path) -> Path:
    """DailyReport of the day before END in account days; after switching to report days,
    DailyReport of END (a setting applies to the days run after it changed)."""
    configure(module_root, adperf=adperf_section(module_root, "account"))
    first = luigi.build([DailyReport(date=BEFORE)], local_scheduler=True, detailed_summary=True)
    assert first.status == LuigiStatusCode.SUCCESS, first.summary_text
    engine = warehouse.make_engine(f"sqlite:///{module_root / 'warehouse.db'}")
    warehouse.read_table(engine, "ad_spend_daily").to_parquet(module_root / "account.parquet")
    engine.dispose()
    configure(module_root, adperf=adperf_section(module_root, "report"))
    second = luigi.build([DailyReport(date=END)], local_scheduler=True, detailed_summary=True)
    assert second.status == LuigiStatusCode.SUCCESS, second.summary_text
    return module_root


def test_account_days_are_stored_and_said(account_then_report: Path) -> None:
    root = account_then_report
    ads = pd.read_parquet(root / "account.parquet")
    day = ads[ads["date"].astype(str) == BEFORE.isoformat()]
    zones = set(zip(day["platform"], day["account_timezone"], strict=True))
    assert zones == {
        ("facebook", "America/Los_Angeles"),
        ("facebook", REPORT),
        ("google_ads", "Australia/Sydney"),
        ("tiktok", REPORT),
        ("apple_ads", REPORT),
    }
    message = json.loads((root / "outbox" / f"slack-{BEFORE}.json").read_text())
    context = [
        e["text"]
        for b in message["blocks"]
        if b["type"] == "context"
        for e in b["elements"]
        if "own days" in e["text"]
    ]
    assert len(context) == 1
    # Seoul is UTC+9; LA UTC-8 after its DST end; Sydney UTC+11 in its summer.
    assert "America/Los_Angeles, 17 h behind" in context[0]
    assert "Australia/Sydney, 2 h ahead" in context[0]
    assert "account_days = report" in context[0]


def test_switching_to_report_days_pulls_again_and_says_so(account_then_report: Path) -> None:
    root = account_then_report
    # The pulls END's spend window reads, made in account days the run before, are made again.
    for platform in ("facebook", "google_ads"):
        for day in (BEFORE, END):
            meta = lake.read_meta(
                root / "lake", f"ad_spend_pulls/platform={platform}", "pulled", day.isoformat()
            )
            assert meta["account_days"] == "report", (platform, day)
    message = json.loads((root / "outbox" / f"slack-{END}.json").read_text())
    text = json.dumps(message)
    assert "Re-cut into Asia/Seoul days from hourly rows" in text
    html = (root / "lake" / "reports" / f"date={END}" / "report.html").read_text()
    assert 'id="account-days"' in html and "Re-cut into Asia/Seoul" in html
    # END's pulls restate the days of their window in ad_spend_daily, now in report days.
    engine = warehouse.make_engine(f"sqlite:///{root / 'warehouse.db'}")
    now = warehouse.read_table(engine, "ad_spend_daily")
    engine.dispose()
    before = pd.read_parquet(root / "account.parquet")

    def on(df: pd.DataFrame, day: dt.date) -> pd.Series:
        mine = df[df["date"].astype(str) == day.isoformat()]
        return mine.set_index("ad_id")["spend"].astype(float).sort_index()

    assert not on(now, BEFORE).equals(on(before, BEFORE))
    want = truth(root / "world")
    got = now[now["date"].astype(str) == BEFORE.isoformat()]
    assert {r.ad_id: float(r.spend_original) for r in got.itertuples() if r.spend_original} == {
        ad: v / 1e6 for (d, ad), v in want.items() if d == BEFORE.isoformat() and v
    }
