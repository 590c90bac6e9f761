"""The watch's checks on hand-made days: what is flagged, what is noise, what is not watched."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from adperf.transform.watch import (
    WATCH_COLUMNS,
    BudgetPlan,
    WatchSettings,
    build_pacing,
    build_source_discrepancy,
    build_watch,
)

DAY = "2026-11-20"  # a Friday
S = WatchSettings()


def _history(
    today: dict[str, float],
    *,
    weeks: int = 8,
    usual: dict[str, float] | None = None,
    wobble: float = 0.05,
) -> pd.DataFrame:
    """One campaign on DAY and the same weekday of `weeks` weeks before (+-wobble around usual)."""
    usual = usual or {"spend": 400.0, "installs": 100.0, "revenue_d0": 80.0, "payers_d0": 50.0}
    d = dt.date.fromisoformat(DAY)
    rows = []
    for k in range(1, weeks + 1):
        f = 1.0 + (wobble if k % 2 else -wobble)
        day = (d - dt.timedelta(days=7 * k)).isoformat()
        rows.append({"date": day, **{c: v * f for c, v in usual.items()}})
    rows.append({"date": DAY, **usual, **today})
    df = pd.DataFrame(rows)
    return df.assign(platform="facebook", campaign_id="111", campaign_name="KR_iOS")


def _watch(
    campaigns: pd.DataFrame, settings: WatchSettings = S, **kw: pd.DataFrame
) -> pd.DataFrame:
    return build_watch(
        DAY,
        campaigns=campaigns,
        reconciliation=kw.get("reconciliation", pd.DataFrame()),
        discrepancy=kw.get("discrepancy", pd.DataFrame(columns=["flagged"])),
        pacing=kw.get("pacing", pd.DataFrame(columns=["pace"])),
        settings=settings,
        currency="USD",
    )


@pytest.mark.parametrize(
    ("today", "check", "change"),
    [
        ({"spend": 800.0}, "cpi", 1.0),  # twice the spend for the same installs
        ({"spend": 120.0, "installs": 30.0, "revenue_d0": 24.0}, "installs", -0.7),
        ({"revenue_d0": 20.0}, "roas_d0", -0.75),
        ({"revenue_d0": 240.0, "payers_d0": 150.0}, "roas_d0", 2.0),
    ],
)
def test_a_change_beyond_noise_is_flagged_with_its_baseline(
    today: dict[str, float], check: str, change: float
) -> None:
    found = _watch(_history(today))
    assert found["check"].tolist() == [check]
    row = found.iloc[0]
    assert row["change"] == pytest.approx(change, rel=0.01)
    assert "median of the last 8 Fridays" in row["message"]
    assert list(found.columns) == WATCH_COLUMNS


@pytest.mark.parametrize(
    ("today", "settings"),
    [
        ({"spend": 480.0}, S),  # +20%: within min_change
        ({"spend": 800.0}, WatchSettings(min_installs=101)),  # a small campaign
        ({"spend": 800.0}, WatchSettings(min_baseline_weeks=9)),  # not enough weeks yet
        ({"revenue_d0": 20.0}, WatchSettings(min_payers=51)),  # too few payers for ROAS D0
        ({"spend": 0.0, "installs": 0.0, "revenue_d0": 0.0}, S),  # paused today
    ],
)
def test_noise_small_campaigns_and_short_histories_are_not_flagged(
    today: dict[str, float], settings: WatchSettings
) -> None:
    assert _watch(_history(today), settings).empty


def test_a_few_installs_do_not_make_a_cpi_alarm_however_high_it_looks() -> None:
    # 7 installs where 22 were expected: CPI +214%, but as a count that is z -3.2 (Poisson).
    usual = {"spend": 104.0, "installs": 22.0, "revenue_d0": 0.0, "payers_d0": 0.0}
    found = _watch(_history({"installs": 7.0}, usual=usual, wobble=0.01))
    assert "cpi" not in set(found["check"])


def test_paused_days_are_left_out_of_the_baseline() -> None:
    df = _history({"spend": 800.0})
    paused = df["date"] < "2026-10-20"  # 4 of the 8 weeks without delivery
    df.loc[paused, ["spend", "installs", "revenue_d0", "payers_d0"]] = 0.0
    found = _watch(df)
    assert found["check"].tolist() == ["cpi"]
    assert "median of the last 4 Fridays" in found["message"].iloc[0]


def test_pacing_ahead_behind_and_per_campaign() -> None:
    spend = pd.DataFrame(
        {
            "date": [f"2026-11-{d:02d}" for d in range(1, 21)] * 2,
            "platform": ["facebook"] * 20 + ["google_ads"] * 20,
            "campaign_id": ["1"] * 20 + ["2"] * 20,
            "campaign_name": ["FB one"] * 20 + ["G two"] * 20,
            "spend": [150.0] * 20 + [50.0] * 20,
        }
    )
    plan = BudgetPlan(
        platforms={"facebook": 3000.0, "google_ads": 3000.0},
        campaigns={("facebook", "1"): 4500.0},
    )
    pacing = build_pacing(DAY, spend, plan)
    assert pacing["expected_mtd"].tolist() == pytest.approx([2000.0, 2000.0, 3000.0])
    found = _watch(_history({}), pacing=pacing)
    assert found["check"].tolist() == ["pacing", "pacing"]
    ahead = found[found["platform"] == "facebook"].iloc[0]
    assert ahead["change"] == pytest.approx(0.5)
    assert ahead["message"] == (
        "Facebook: spent 3,000.00 USD of November's 3,000.00 USD budget by day 20 of 30, 50% "
        "ahead of plan (2,000.00 USD); on pace for 4,500.00 USD"
    )
    behind = found[found["platform"] == "google_ads"].iloc[0]
    assert behind["change"] == pytest.approx(-0.5) and "50% behind plan" in behind["message"]
    # The campaign's own budget is on pace: not flagged.
    assert pacing.loc[2, "pace"] == pytest.approx(0.0)


def test_pacing_counts_only_the_days_the_data_covers_and_waits_for_a_few_days() -> None:
    spend = pd.DataFrame(
        {"date": ["2026-11-19", "2026-11-20"], "platform": "facebook", "campaign_id": "1",
         "campaign_name": "x", "spend": [100.0, 100.0]}
    )  # fmt: skip
    plan = BudgetPlan(platforms={"facebook": 3000.0})
    assert build_pacing(DAY, spend, plan, since="2026-11-19")["pace"].iloc[0] == pytest.approx(0.0)
    assert build_pacing(DAY, spend, plan)["pace"].iloc[0] == pytest.approx(-0.9)
    early = build_pacing("2026-11-03", spend.assign(date="2026-11-03"), plan)
    assert _watch(_history({}), pacing=early).empty  # day 3 < pace_min_days


def test_source_discrepancy_per_campaign() -> None:
    spend = pd.DataFrame(
        {
            "platform": ["facebook", "facebook", "facebook", "google_ads", "google_ads"],
            "campaign_id": ["1", "1", "2", "3", "4"],
            "campaign_name": ["One", "One", "Two", "Three", "Four"],
            "installs_reported": [60, 60, 112, 9, 80],
        }
    )
    campaigns = pd.DataFrame(
        {
            "platform": ["facebook", "facebook", "google_ads", "organic"],
            "campaign_id": ["1", "2", "3", "organic"],
            "campaign_name": ["One", "Two", "Three", "organic"],
            "installs": [50, 100, 3, 500],
        }
    )
    df = build_source_discrepancy(DAY, spend, campaigns, S)
    got = df.set_index("campaign_id")
    assert got["installs_platform"].to_dict() == {"1": 120, "2": 112, "3": 9, "4": 80}
    assert got["installs_mmp"].to_dict() == {"1": 50, "2": 100, "3": 3, "4": 0}
    assert got["gap"]["1"] == pytest.approx(1.4) and pd.isna(got["gap"]["4"])
    # "2" is a usual over-report, "3" too small to say: flagged are "1" and "4" (no MMP installs)
    assert got["flagged"].to_dict() == {"1": True, "2": False, "3": False, "4": True}
    found = _watch(_history({}), discrepancy=df)
    assert found["message"].tolist() == [
        "One (facebook): the platform reports 120 installs, the MMP attributed 50 (+140%)",
        "Four (google_ads): the platform reports 80 installs, the MMP attributed 0",
    ]


def _recon(unattributed: list[float]) -> pd.DataFrame:
    d = dt.date.fromisoformat(DAY)
    days = [(d - dt.timedelta(days=k)).isoformat() for k in range(len(unattributed) - 1, -1, -1)]
    return pd.DataFrame(
        {"date": days, "total_payments": 1000.0, "unattributed": unattributed, "restricted": 10.0}
    )


def test_unattributed_revenue_rising_over_a_week_is_flagged_one_whale_is_not() -> None:
    usual = [100.0] * 28
    found = _watch(_history({}), reconciliation=_recon(usual + [100.0] * 4 + [250.0] * 3))
    assert found["check"].tolist() == ["unattributed_revenue_share"]
    assert found["message"].iloc[0] == (
        "Unattributed revenue: 16.4% of payments over the last 7 days vs 10.0% over the 28 "
        "days before: +6.4pp"
    )
    assert _watch(_history({}), reconciliation=_recon(usual + [100.0] * 6 + [400.0])).empty


def test_restricted_installs_share_rising_is_flagged() -> None:
    d = dt.date.fromisoformat(DAY)
    rows = []
    for k in range(0, 29):
        day = (d - dt.timedelta(days=k)).isoformat()
        share = 0.15 if k == 0 else 0.04
        rows += [
            {"date": day, "platform": "facebook", "campaign_id": "1",
             "installs": 1000 * (1 - share), "spend": 1.0},
            {"date": day, "platform": "restricted", "campaign_id": "restricted",
             "installs": 1000 * share, "spend": 0.0},
        ]  # fmt: skip
    found = _watch(pd.DataFrame(rows).assign(campaign_name="x"))
    assert found["check"].tolist() == ["restricted_install_share"]
    assert (
        found["message"].iloc[0].startswith("Restricted installs: 15.0% of paid installs vs 4.0%")
    )
