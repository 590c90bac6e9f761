"""Spend pulls in the real graph: one pull per platform and day, latest figures, restatements.

One module-scoped sandbox run (tiny world, both platforms through their real SDKs and fakes);
the tests run in order.
"""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal
from pathlib import Path

import luigi
import pandas as pd
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf import lake, platforms
from tasks import resources
from tasks.extract import AdSpend
from tasks.load import DailyReport
from tasks.transform import Restatements, SpendLatest

from .conftest import END, configure

CENT = Decimal("0.005")
DAY = END.isoformat()
# The lookbacks adperf ships (the other tests' configure() widens them to save pulls).
SHIPPED = {p.section: {"lookback_days": str(p.lookback_days)} for p in platforms.entries()}


def _build(*tasks: luigi.Task, workers: int = 2) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, workers=workers)


@pytest.fixture(scope="module")
def done(module_root: Path) -> Path:
    configure(module_root, **SHIPPED)
    resources.resources(END)  # the fakes start here, before the workers fork (test_luigid)
    result = _build(SpendLatest(date=END), Restatements(date=END))
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    return module_root


def _pulled(root: Path, platform: str) -> list[str]:
    folder = root / "lake" / "ad_spend_pulls" / f"platform={platform}"
    return sorted(p.name.removeprefix("pulled=") for p in folder.iterdir() if "=" in p.name)


def test_one_pull_per_platform_and_report_day_covering_its_lookback(done: Path) -> None:
    days = [(END - dt.timedelta(days=i)).isoformat() for i in range(18)]
    assert _pulled(done, "facebook") == sorted(days[:4])  # 31-day window, 28-day lookback
    assert _pulled(done, "google_ads") == sorted(days)  # 14-day lookback
    fb = lake.read_partition(done / "lake", "ad_spend_pulls/platform=facebook", "pulled", DAY)
    assert fb["date"].min() == (END - dt.timedelta(days=27)).isoformat()
    assert fb["date"].max() == DAY and not fb.duplicated(["date", "ad_id"]).any()
    meta = lake.read_meta(done / "lake", "ad_spend_pulls/platform=google_ads", "pulled", DAY)
    assert (meta["first_day"], meta["last_day"]) == ((END - dt.timedelta(days=13)).isoformat(), DAY)


def test_latest_spend_per_platform_and_day_equals_truth_to_the_cent(done: Path) -> None:
    latest = lake.read_partition(done / "lake", "spend_latest", "date", DAY)
    truth = pd.read_csv(done / "world" / "truth" / "campaign_daily.csv", dtype=str)
    truth = truth[(truth["platform"] != "organic") & (truth["date"] >= latest["date"].min())]
    assert latest["date"].nunique() == 31 and set(latest["platform"]) == {
        "facebook",
        "google_ads",
        "tiktok",
        "apple_ads",
    }
    got = latest.groupby(["date", "platform"])["spend_micros"].sum()
    for (day, platform), group in truth.groupby(["date", "platform"]):
        expected = sum(Decimal(v) for v in group["spend_report"])
        assert abs(Decimal(int(got.get((day, platform), 0))) / 10**6 - expected) < CENT
    # The App campaign arrives at campaign level; installs_reported from conversions.
    app = latest[latest["ad_id"].str.startswith("campaign-")]
    assert len(app) and set(app["platform"]) == {"google_ads"}
    assert (latest.loc[latest["platform"] == "google_ads", "installs_reported"] > 0).any()


def test_an_unchanged_world_has_no_restatements(done: Path) -> None:
    df = lake.read_partition(done / "lake", "restatements", "date", DAY)
    assert len(df) == 0 and "delta_micros" in df.columns


def test_a_restated_day_is_reported_and_the_later_pull_wins(done: Path) -> None:
    configure(done, **SHIPPED)
    resources.resources(END)  # start the fakes in this process (one worker runs tasks here)
    graph = resources._sandbox["servers"][0]  # the running fake Graph API
    world = pd.read_parquet(done / "world" / "ad_daily.parquet")
    fb = world[world["platform"] == "facebook"].copy()
    restated_day = (END - dt.timedelta(days=2)).isoformat()
    usd_ads = fb[(fb["date"] == restated_day) & fb["spend"].str.contains(r"\.")]
    target = usd_ads.index[0]
    before = Decimal(fb.loc[target, "spend"])
    fb.loc[target, "spend"] = str(before + Decimal("12.40"))
    graph.set_rows(fb)
    # Today's pull is made again (as if it ran after the platform's revision).
    for dataset in ("ad_spend_pulls/platform=facebook", "restatements", "spend_latest"):
        key = "pulled" if dataset.startswith("ad_spend") else "date"
        shutil.rmtree(lake.partition_path(done / "lake", dataset, key, DAY))

    result = _build(SpendLatest(date=END), Restatements(date=END), workers=1)

    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    (row,) = lake.read_partition(done / "lake", "restatements", "date", DAY).to_dict("records")
    assert (row["restated_date"], row["platform"]) == (restated_day, "facebook")
    assert row["delta_micros"] == 12_400_000
    assert row["latest_micros"] - row["previous_micros"] == 12_400_000
    latest = lake.read_partition(done / "lake", "spend_latest", "date", DAY)
    ad_id = fb.loc[target, "ad_id"]
    mine = latest[(latest["date"] == restated_day) & (latest["ad_id"] == ad_id)]
    assert mine["spend_original_micros"].tolist() == [int((before + Decimal("12.40")) * 10**6)]


def test_the_graph_stays_small_and_pulls_are_rate_capped(done: Path) -> None:
    configure(done, **SHIPPED)
    seen: dict[str, luigi.Task] = {}
    stack: list[luigi.Task] = [DailyReport(date=END)]
    while stack:
        task = stack.pop()
        if task.task_id in seen:
            continue
        seen[task.task_id] = task
        stack.extend(luigi.task.flatten(task.requires()))
    pulls = [t for t in seen.values() if isinstance(t, AdSpend)]
    # Facebook 4 (28-day lookback), Google Ads 18 (14), TikTok and Apple Ads 25 each (7): not
    # 31 days x lookback.
    assert len(pulls) == 4 + 18 + 25 + 25
    assert {tuple(t.resources.items()) for t in pulls} == {
        (("api_facebook", 1),),
        (("api_google_ads", 1),),
        (("api_tiktok", 1),),
        (("api_apple_ads", 1),),
    }
    cfg = luigi.configuration.get_config()
    assert cfg.getint("resources", "api_facebook") >= 1
    assert cfg.getint("resources", "api_google_ads") >= 1


@pytest.mark.parametrize(
    ("facebook_ids", "google_ids", "expected"),
    [
        ("1029384756102938", "", ("facebook",)),  # a Facebook-only company pulls no Google
        ("", "123-456-7890", ("google_ads",)),
        ("1029384756102938", "123-456-7890", ("facebook", "google_ads")),
        ("", "", ("facebook",)),  # none: the Facebook pull fails naming ad_account_ids
    ],
)
def test_production_pulls_only_the_platforms_with_accounts(
    done: Path, facebook_ids: str, google_ids: str, expected: tuple[str, ...]
) -> None:
    from tasks.extract import _platforms

    configure(
        done,
        adperf={"sandbox": "false"},
        facebook={"ad_account_ids": facebook_ids},
        google_ads={"customer_ids": google_ids},
    )
    try:
        assert _platforms() == expected
        assert {t.platform for t in Restatements(date=END).requires()} == set(expected)
    finally:
        configure(done, facebook={"ad_account_ids": ""}, google_ads={"customer_ids": ""})
