"""DailyReport end to end on a tiny sandbox world, refereed by the world's truth."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import luigi
import pandas as pd
import pyarrow.parquet as pq
import pytest
from luigi.execution_summary import LuigiStatusCode

from adperf import warehouse
from tasks.load import DailyReport

from .conftest import END

CENT = Decimal("0.005")


def _build(day=END, workers: int = 1) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(
        [DailyReport(date=day)], local_scheduler=True, detailed_summary=True, workers=workers
    )


def _truth(root: Path) -> pd.DataFrame:
    return pd.read_csv(
        root / "world" / "truth" / "campaign_daily.csv", dtype=str, keep_default_na=False
    )


@pytest.fixture(scope="module")
def done(module_root: Path) -> Path:
    from .conftest import configure

    configure(module_root)
    result = _build()
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    return module_root


def test_spend_per_platform_equals_truth_to_the_cent(done: Path) -> None:
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    ads = warehouse.read_table(engine, "ad_spend_daily")
    ads = ads[ads["date"].astype(str) == END.isoformat()]
    truth = _truth(done)
    truth = truth[(truth["date"] == END.isoformat()) & (truth["platform"] != "organic")]
    assert len(truth) > 0
    for platform, group in truth.groupby("platform"):
        expected = sum(Decimal(v) for v in group["spend_report"])
        got = sum(Decimal(str(v)) for v in ads.loc[ads["platform"] == platform, "spend"])
        assert abs(got - expected) < CENT, (platform, got, expected)
    # KRW is converted, the original is kept
    assert {"USD", "KRW"} <= set(ads["currency_original"])


def test_four_platforms_each_reconcile_with_the_world(done: Path) -> None:
    """Every registered platform, through its own API fake and the MMP: spend after FX to the
    cent, and MMP installs per campaign over the cohort window, equal the world's truth."""
    from adperf import platforms

    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    ads = warehouse.read_table(engine, "ad_spend_daily")
    ads = ads[ads["date"].astype(str) == END.isoformat()]
    truth = _truth(done)
    day = truth[truth["date"] == END.isoformat()]
    assert (
        set(ads["platform"])
        == set(platforms.NAMES)
        == set(day["platform"])
        - {
            "organic",
            "restricted",
        }
    )
    for name in platforms.NAMES:
        expected = sum(Decimal(v) for v in day.loc[day["platform"] == name, "spend_report"])
        got = sum(Decimal(str(v)) for v in ads.loc[ads["platform"] == name, "spend"])
        assert expected > 0 and abs(got - expected) < CENT, (name, got, expected)
    # MMP installs per campaign and day over the install days in the lake, each platform's
    # media source mapped through the registry.
    from adperf import lake

    folder = done / "lake" / "installs"
    days = sorted(p.name.removeprefix("date=") for p in folder.glob("date=*"))
    installs = lake.read_partitions(done / "lake", "installs", "date", days)
    counted = installs.groupby(["date", "campaign_id"]).size().to_dict()
    window = truth[truth["date"].isin(days)]
    for name in ("tiktok", "apple_ads"):
        mine = window[window["platform"] == name]
        assert mine["installs"].astype(int).sum() > 20, name
        assert set(installs.loc[installs["platform"] == name, "campaign_id"]) == set(
            mine["campaign_id"]
        )
        for row in mine.itertuples():
            assert counted.get((row.date, row.campaign_id), 0) == int(row.installs), row


def test_installs_per_campaign_equal_truth(done: Path) -> None:
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    camp = warehouse.read_table(engine, "campaign_daily")
    camp = camp[camp["date"].astype(str) == END.isoformat()]
    truth = _truth(done)
    truth = truth[truth["date"] == END.isoformat()]
    got = dict(zip(camp["campaign_id"], camp["installs"], strict=True))
    for _, row in truth.iterrows():
        assert got.get(row["campaign_id"], 0) == int(row["installs"]), row["campaign_id"]


def test_revenue_reconciles_to_the_cent_and_matches_truth(done: Path) -> None:
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    rec = warehouse.read_table(engine, "revenue_reconciliation").iloc[0]
    parts = (
        Decimal(str(rec["attributed"]))
        + Decimal(str(rec["organic"]))
        + Decimal(str(rec["unattributed"]))
        + Decimal(str(rec["restricted"]))
    )
    assert abs(Decimal(str(rec["total_payments"])) - parts) < CENT
    totals = pd.read_csv(done / "world" / "truth" / "daily_totals.csv", dtype=str)
    t = totals[totals["date"] == END.isoformat()].iloc[0]
    for col in ("total_payments", "attributed", "organic", "unattributed", "restricted"):
        assert abs(Decimal(str(rec[col])) - Decimal(t[f"{col}_report"])) < CENT, col
    assert Decimal(str(rec["unattributed"])) != 0


def test_every_report_table_has_the_day(done: Path) -> None:
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    for name in warehouse.REPORT_TABLES:
        df = warehouse.read_table(engine, name)
        # No action was applied before this day, so nothing is followed up (tests/tasks/
        # test_outcomes_cli.py applies some and follows them up).
        assert len(df) > 0 or name == "action_outcomes", name
    model = warehouse.read_table(engine, "ltv_model").iloc[0]
    params = json.loads(model["params"])
    assert params  # a real fit: parameters recorded
    outbox = json.loads((done / "outbox" / f"slack-{END}.json").read_text())
    assert outbox["blocks"]


def test_no_raw_user_id_anywhere(done: Path) -> None:
    users = pd.read_parquet(done / "world" / "truth" / "users.parquet")
    raw = set(users["user_id"].dropna()) | set(users["appsflyer_id"].dropna())
    assert len(raw) > 100
    seen: set[str] = set()
    for f in (done / "lake").rglob("*.parquet"):
        table = pq.read_table(f)
        for col in table.columns:
            seen.update(str(v) for v in col.to_pylist())
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    for name in warehouse.REPORT_TABLES:
        seen.update(str(v) for v in warehouse.read_table(engine, name).to_numpy().ravel())
    assert not raw & seen
    text = (done / "outbox" / f"slack-{END}.json").read_text()
    text += "".join(p.read_text() for p in (done / "lake").rglob("_meta.json"))
    assert not [r for r in raw if r in text]


def test_rerun_of_a_complete_day_runs_nothing(done: Path) -> None:
    from .conftest import configure

    configure(done)
    marker = (done / "lake" / "spend" / f"date={END}" / "part-0.parquet").stat().st_mtime_ns
    result = _build()
    assert result.status == LuigiStatusCode.SUCCESS
    assert "ran successfully" not in result.summary_text
    assert (done / "lake" / "spend" / f"date={END}" / "part-0.parquet").stat().st_mtime_ns == marker


def test_range_daily_catch_up_skips_complete_days(done: Path) -> None:
    """What cron runs: RangeDaily over days that are complete schedules nothing new."""
    import datetime as dt

    from luigi.tools.range import RangeDaily

    from .conftest import configure

    configure(done)
    result = luigi.build(
        [RangeDaily(of=DailyReport, start=END, stop=END + dt.timedelta(days=1))],
        local_scheduler=True,
        detailed_summary=True,
    )
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    ran = (
        result.summary_text.split("ran successfully")[-1]
        if "ran successfully" in (result.summary_text)
        else ""
    )
    assert "DailyReport(" not in ran and "LoadReport" not in ran


def test_the_demo_shows_the_restricted_installs_line(done: Path) -> None:
    """The sandbox world has a few installs from networks that withhold user-level data: the
    day's report books them apart and says so, in Slack and in the HTML page."""
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    camp = warehouse.read_table(engine, "campaign_daily")
    rec = warehouse.read_table(engine, "revenue_reconciliation").iloc[0]
    day = camp[camp["date"].astype(str) == END.isoformat()]
    restricted = day[day["platform"] == "restricted"]
    truth = _truth(done)
    truth = truth[(truth["date"] == END.isoformat()) & (truth["platform"] == "restricted")]
    installs = int(truth["installs"].iloc[0])
    assert installs == (int(restricted["installs"].iloc[0]) if len(restricted) else 0)
    assert "other" not in set(day["platform"])
    # The tiny world of seed 7 has restricted installs or revenue on END: the line is due.
    assert installs or Decimal(str(rec["restricted"])) != 0
    line = "from networks that withhold user-level data (media source 'restricted')"
    message = (done / "outbox" / f"slack-{END}.json").read_text()
    assert f"{installs:,} installs (" in message and line in message
    page = (done / "lake" / "reports" / f"date={END}" / "report.html").read_text()
    assert line.replace("'", "&#x27;") in page


def _cohort_rows(done: Path, name: str = "cohort_roas") -> pd.DataFrame:
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    try:
        df = warehouse.read_table(engine, name)
    finally:
        engine.dispose()
    return df.assign(cohort_date=df["cohort_date"].astype(str), as_of=df["as_of"].astype(str))


def test_cohort_roas_is_the_whole_triangle_and_matches_the_truth(done: Path) -> None:
    import datetime as dt

    from adperf.transform.cohort import AGES
    from tests.sandbox.test_revenue_truth import _truth_cohort_revenue

    rows = _cohort_rows(done)
    assert set(rows["as_of"]) == {END.isoformat()}  # a first run: the day's triangle alone
    key = ["cohort_date", "platform", "campaign_id"]
    assert not rows.duplicated([*key, "age_days"]).any()
    assert rows["cohort_date"].nunique() == 31  # every cohort of the window ...
    for (cohort, *_), cells in rows.groupby(key):
        reached = (END - dt.date.fromisoformat(cohort)).days
        # ... at every age it has reached
        assert sorted(cells["age_days"]) == [a for a in AGES if a <= reached], cohort
    assert len(rows) > 10 * rows["cohort_date"].nunique()  # far more than the diagonal

    truth = _truth_cohort_revenue(done / "world", END.isoformat())
    got = {
        (r.cohort_date, r.campaign_id, r.age_days): Decimal(str(r.revenue))
        for r in rows.itertuples()
    }
    compared = [k for k, v in truth.items() if v]
    assert len({a for _, _, a in compared}) == len(AGES)  # every age has revenue to compare
    for k in compared:
        assert abs(got[k] - truth[k] * Decimal("0.000001")) < CENT, k

    segments = _cohort_rows(done, "cohort_roas_segments")
    summed = segments.groupby([*key, "age_days"])["users"].sum()
    assert summed.to_dict() == rows.set_index([*key, "age_days"])["users"].to_dict()
    assert segments["country"].nunique() > 1 and segments["device_os"].nunique() > 1


def test_reloading_the_day_replaces_its_cohort_rows(done: Path) -> None:
    import sqlalchemy as sa

    from tasks.load import LoadReport

    from .conftest import configure

    configure(done)
    before = _cohort_rows(done).sort_values(["cohort_date", "campaign_id", "age_days"])
    engine = warehouse.make_engine(f"sqlite:///{done / 'warehouse.db'}")
    with engine.begin() as conn:  # the day looks unloaded: LoadReport runs again
        conn.execute(warehouse.load_marker.delete().where(warehouse.load_marker.c.date == END))
        assert conn.execute(sa.select(sa.func.count()).select_from(warehouse.cohort_roas)).scalar()
    engine.dispose()
    result = luigi.build([LoadReport(date=END)], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert "LoadReport" in result.summary_text and "ran successfully" in result.summary_text
    after = _cohort_rows(done).sort_values(["cohort_date", "campaign_id", "age_days"])
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))


def test_comparison_days_are_loaded_first_only_when_asked() -> None:
    """[adperf] load_comparison_days: RenderReport then needs the warehouse tables of the day
    before and the week before (its d/d and w/w); by default it reads whatever is loaded."""
    import datetime as dt

    from tasks.pipeline import LoadReport, RenderReport

    day = dt.date(2026, 12, 6)
    assert "comparison" not in RenderReport(date=day).requires()
    cfg = luigi.configuration.get_config()
    cfg.set("adperf", "load_comparison_days", "true")
    try:
        required = RenderReport(date=day).requires()["comparison"]
    finally:
        cfg.set("adperf", "load_comparison_days", "false")
    assert required == [
        LoadReport(date=dt.date(2026, 12, 5)),
        LoadReport(date=dt.date(2026, 11, 29)),
    ]
