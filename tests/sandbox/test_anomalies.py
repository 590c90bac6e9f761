"""Anomalies planted in the sandbox world are what the watch reports, and the demo world's
ordinary days report nothing (issue 19: no false alarms)."""

from __future__ import annotations

import configparser
import json
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from adperf.sandbox.anomalies import Anomaly
from adperf.sandbox.entities import build_entities
from adperf.sandbox.profiles import get_profile
from adperf.sandbox.world import build_world
from adperf.transform.watch import (
    BudgetPlan,
    WatchSettings,
    build_pacing,
    build_source_discrepancy,
    build_watch,
)

REPO = Path(__file__).resolve().parents[2]
TZ = "Asia/Seoul"
# The default demo world: luigi.cfg's [sandbox] profile and seed, the profile's days.
PROFILE, SEED = "small", 7
END = date(2026, 11, 20)
START = END - timedelta(days=get_profile(PROFILE).days - 1)
PLANT = END - timedelta(days=2)  # anomalies start here; the watch looks at END
SETTINGS = WatchSettings()


def _cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "luigi.cfg")
    return cfg


def _plan() -> BudgetPlan:
    """The demo's budget plan, as luigi.cfg ships it."""
    budgets = _cfg()["budgets"]
    return BudgetPlan(platforms={k: float(v) for k, v in json.loads(budgets["platforms"]).items()})


def _settings() -> WatchSettings:
    """luigi.cfg's [watch] thresholds (the test checks what the demo runs with)."""
    section = _cfg()["watch"]
    fields = WatchSettings.__dataclass_fields__
    return WatchSettings(
        **{k: type(getattr(SETTINGS, k))(v) for k, v in section.items() if k in fields}
    )


def _frames(root: Path) -> dict[str, pd.DataFrame]:
    """The watch's inputs for every day of the world, from its files (as the pipeline loads
    them: MMP-attributed installs, the platform's reported installs, D0 cohort revenue)."""
    truth = pd.read_csv(root / "truth" / "campaign_daily.csv", dtype={"campaign_id": str})
    ads = pd.read_csv(root / "ads.csv", dtype=str)
    names = ads.drop_duplicates("campaign_id").set_index("campaign_id")["campaign_name"]
    daily = pd.read_parquet(root / "ad_daily.parquet")
    reported = (
        daily.groupby(["date", "platform", "campaign_id"], as_index=False)["installs_reported"]
        .sum()
        .merge(names.reset_index(), on="campaign_id")
    )
    users = pd.read_parquet(root / "truth" / "users.parquet")
    users = users[~users["legacy"] & users["has_cuid"]]
    with sqlite3.connect(root / "payments.sqlite") as con:
        pay = pd.read_sql("SELECT user_id, amount, currency, kind, created_at FROM payments", con)
    fx = pd.read_csv(root / "fx.csv")
    local = pd.to_datetime(pay["created_at"], utc=True).dt.tz_convert(ZoneInfo(TZ))
    pay["day"] = local.dt.date.astype(str)
    pay = pay.merge(fx, left_on=["day", "currency"], right_on=["date", "currency"])
    sign = pay["kind"].map({"purchase": 1.0, "refund": -1.0})
    pay["revenue"] = pay["amount"].astype(float) * pay["rate"] * sign
    d0 = pay.merge(users, on="user_id")
    d0 = d0[d0["day"] == d0["install_date"]]
    rev = d0.groupby(["day", "campaign_id"]).agg(
        revenue_d0=("revenue", "sum"), payers_d0=("user_id", "nunique")
    )
    campaigns = truth.rename(columns={"spend_report": "spend"}).assign(
        campaign_name=lambda t: t["campaign_id"].map(names).fillna(t["campaign_id"])
    )
    campaigns = campaigns.merge(
        rev.reset_index().rename(columns={"day": "date"}), on=["date", "campaign_id"], how="left"
    ).fillna({"revenue_d0": 0.0, "payers_d0": 0})
    totals = pd.read_csv(root / "truth" / "daily_totals.csv").rename(
        columns=lambda c: c.removesuffix("_report")
    )
    return {"campaigns": campaigns, "reported": reported, "reconciliation": totals}


def _watch(frames: dict[str, pd.DataFrame], day: str, settings: WatchSettings) -> pd.DataFrame:
    campaigns = frames["campaigns"]
    today = campaigns[campaigns["date"] == day]
    month = campaigns[(campaigns["date"] >= day[:8] + "01") & (campaigns["date"] <= day)]
    reported = frames["reported"]
    first = str(campaigns["date"].min())  # the world's first day
    return build_watch(
        day,
        campaigns=campaigns[campaigns["date"] <= day],
        reconciliation=frames["reconciliation"][frames["reconciliation"]["date"] <= day],
        discrepancy=build_source_discrepancy(
            day, reported[reported["date"] == day], today, settings
        ),
        pacing=build_pacing(
            day, month[~month["platform"].isin(["organic", "restricted"])], _plan(), since=first
        ),
        settings=settings,
        currency="USD",
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("demo") / "world"
    build_world(root, seed=SEED, start=START, end=END, profile=PROFILE, report_timezone=TZ)
    return _frames(root)


def _planted(tmp: Path, *anomalies: Anomaly) -> dict[str, pd.DataFrame]:
    root = tmp / "world"
    build_world(
        root,
        seed=SEED,
        start=START,
        end=END,
        profile=PROFILE,
        report_timezone=TZ,
        anomalies=anomalies,
    )
    return _frames(root)


def _biggest(platform: str | None = None) -> str:
    """The campaign with the most installs a day (on `platform`): volume enough to be watched."""
    ent = build_entities(SEED, get_profile(PROFILE))
    installs: dict[str, float] = {}
    for ad in ent.ads:
        c = ent.campaigns[ad.campaign_index]
        if platform in (None, c.platform):
            installs[c.campaign_id] = (
                installs.get(c.campaign_id, 0.0) + ad.daily_budget / c.true_cpi
            )
    return max(installs, key=lambda k: installs[k])


def test_the_demo_world_has_no_alarm_on_any_day(demo: dict[str, pd.DataFrame]) -> None:
    settings = _settings()
    days = sorted(demo["campaigns"]["date"].unique())
    found = pd.concat([_watch(demo, d, settings) for d in days], ignore_index=True)
    assert len(days) == get_profile(PROFILE).days
    assert found["message"].tolist() == []
    # Not vacuous: the checks ran (campaigns with a full baseline, a budget plan, the gaps).
    # (ROAS D0 only without its payer minimum: the demo's campaigns have about one D0 payer.)
    everything = WatchSettings(z=0.0, min_change=0.0, share_rise=-1.0, min_payers=0.0)
    checked = _watch(demo, days[-1], everything)
    assert {"cpi", "installs", "roas_d0"} <= set(checked["check"])


def test_a_cpi_spike_is_reported(tmp_path: Path) -> None:
    cid = _biggest()
    frames = _planted(tmp_path, Anomaly("cpi_spike", PLANT, 2.0, campaign_id=cid))
    found = _watch(frames, END.isoformat(), _settings())
    row = found[(found["check"] == "cpi") & (found["campaign_id"] == cid)]
    assert len(row) == 1
    assert row["change"].iloc[0] == pytest.approx(1.0, abs=0.4)
    print(row["message"].iloc[0])


def test_an_install_drop_is_reported(tmp_path: Path) -> None:
    cid = _biggest()
    frames = _planted(tmp_path, Anomaly("install_drop", PLANT, 0.1, campaign_id=cid))
    found = _watch(frames, END.isoformat(), _settings())
    row = found[(found["check"] == "installs") & (found["campaign_id"] == cid)]
    assert len(row) == 1 and row["change"].iloc[0] < -0.7
    # Spend fell with the installs: the CPI held, and says nothing.
    assert not ((found["check"] == "cpi") & (found["campaign_id"] == cid)).any()
    print(row["message"].iloc[0])


def test_a_platform_mmp_gap_is_reported(tmp_path: Path) -> None:
    cid = _biggest()
    frames = _planted(tmp_path, Anomaly("install_gap", PLANT, 2.0, campaign_id=cid))
    found = _watch(frames, END.isoformat(), _settings())
    row = found[(found["check"] == "source_gap") & (found["campaign_id"] == cid)]
    assert len(row) == 1 and row["change"].iloc[0] > 0.8
    assert set(found["check"]) == {"source_gap"}  # the MMP's numbers did not move
    print(row["message"].iloc[0])


def test_a_restricted_share_jump_is_reported(tmp_path: Path) -> None:
    frames = _planted(tmp_path, Anomaly("restricted_jump", PLANT, 0.2))
    found = _watch(frames, END.isoformat(), _settings())
    row = found[found["check"] == "restricted_install_share"]
    assert len(row) == 1 and row["value"].iloc[0] > 0.15
    print("\n".join(found["message"]))


def test_overspending_is_reported_as_pacing_ahead(tmp_path: Path) -> None:
    frames = _planted(tmp_path, Anomaly("overspend", END.replace(day=1), 1.6, platform="facebook"))
    found = _watch(frames, END.isoformat(), _settings())
    row = found[(found["check"] == "pacing") & (found["platform"] == "facebook")]
    assert len(row) == 1 and row["change"].iloc[0] > 0.3
    assert "ahead of plan" in row["message"].iloc[0]
    print(row["message"].iloc[0])


def test_an_anomaly_changes_nothing_before_its_start(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    end = START + timedelta(days=9)
    cid = build_entities(SEED, get_profile("tiny")).campaigns[0].campaign_id
    late = [
        Anomaly("cpi_spike", end + timedelta(days=1), 3.0, campaign_id=cid),
        Anomaly("restricted_jump", end + timedelta(days=1), 0.5),
        Anomaly("overspend", end + timedelta(days=1), 2.0, platform="facebook"),
    ]
    build_world(a, seed=SEED, start=START, end=end, profile="tiny")
    build_world(b, seed=SEED, start=START, end=end, profile="tiny", anomalies=late)
    for name in ("ad_daily.parquet", "installs.parquet", "truth/campaign_daily.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert json.loads((b / "world.json").read_text())["anomalies"][0]["kind"] == "cpi_spike"
