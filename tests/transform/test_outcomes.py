"""adperf.transform.outcomes: follow-ups of applied actions, scale back and expand (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from adperf.transform.outcomes import (
    FollowUpRules,
    build_action_outcomes,
    build_object_days,
    week_budget_growth,
    with_follow_ups,
)

DAY = "2026-11-27"  # follow-up day of actions applied for 2026-11-20 (7 days)
A = "2026-11-20"
RULES = FollowUpRules(follow_up_days=7)


def log_row(i: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": i,
        "date": dt.date.fromisoformat(A),
        "platform": "facebook",
        "level": "adset",
        "object_id": "S1",
        "object_name": "adset one",
        "action": "scale",
        "field": "daily_budget",
        "value_before": "10000",
        "value_after": "12000",
        "status": "applied",
        "source_level": None,
        "source_id": None,
    }
    return {**row, **kw}


def days(first: str, n: int, **kw: Any) -> list[dict[str, Any]]:
    start = dt.date.fromisoformat(first)
    base = {"level": "campaign", "platform": "facebook", "object_id": "C1"}
    return [{**base, "date": (start + dt.timedelta(i)).isoformat(), **kw} for i in range(n)]


def daily(before: dict[str, int | None], since: dict[str, int | None]) -> pd.DataFrame:
    rows = days("2026-11-14", 7, **before) + days("2026-11-21", 7, **since)
    out = pd.DataFrame(rows)
    out["pltv_micros"] = out["pltv_micros"].astype("Int64")
    return out


DECISION = pd.DataFrame(
    [{"platform": "facebook", "level": "campaign", "object_id": "C1", "object_name": "JP_AEO",
      "proas": 2.6}]
)  # fmt: skip
CAMPAIGN_SCALE = pd.DataFrame(
    [
        log_row(1, object_id="S1", source_level="campaign", source_id="C1"),
        log_row(2, object_id="S2", value_before="5000", value_after="6000", source_level="campaign",
                source_id="C1"),
    ]
)  # fmt: skip


def test_a_campaign_scale_is_one_follow_up_with_before_and_since() -> None:
    # before: 7 x $100 for 10 installs a day with pLTV $250/day; since: 7 x $120, 11 installs,
    # pLTV $290/day.
    frame = daily(
        {"spend_micros": 100_000_000, "installs": 10, "pltv_micros": 250_000_000},
        {"spend_micros": 120_000_000, "installs": 11, "pltv_micros": 290_000_000},
    )
    out = build_action_outcomes(DAY, RULES, CAMPAIGN_SCALE, DECISION, frame)
    assert len(out) == 1
    row = out.iloc[0]
    assert (row["level"], row["object_id"], row["action"], row["change"]) == (
        "campaign", "C1", "scale", "+20%",
    )  # fmt: skip
    assert row["objects_changed"] == 2
    assert row["spend_before_micros"] == 700_000_000 and row["spend_since_micros"] == 840_000_000
    assert row["installs_before"] == 70 and row["installs_since"] == 77
    assert row["cpi_before_micros"] == 10_000_000
    assert row["cpi_since_micros"] == 10_909_091  # 840 / 77 rounded half up to the micro
    assert row["proas_before"] == pytest.approx(2.5)
    assert row["proas_since"] == pytest.approx(2030 / 840)
    assert row["proas_expected"] == pytest.approx(2.6)
    assert row["verdict"] == "above"
    assert row["line"] == (
        "scaled JP_AEO +20% on 11-20: spend +20%, CPI +9%, pROAS 2.60 expected → 2.42, "
        "still above 1.30"
    )


def test_a_scale_back_is_judged_against_target_roas() -> None:
    """After a budget cut the question is whether each dollar now returns the target."""
    unscale = pd.DataFrame(
        [
            log_row(1, action="unscale", value_before="12000", value_after="10000",
                    source_level="campaign", source_id="C1"),
        ]
    )  # fmt: skip
    frame = daily(
        {"spend_micros": 120_000_000, "installs": 10, "pltv_micros": 96_000_000},
        {"spend_micros": 100_000_000, "installs": 10, "pltv_micros": 110_000_000},
    )
    decision = DECISION.assign(proas=0.8)
    out = build_action_outcomes(DAY, RULES, unscale, decision, frame)
    row = out.iloc[0]
    assert (row["action"], row["threshold"], row["verdict"]) == ("unscale", 1.0, "above")
    assert row["line"] == (
        "scaled back JP_AEO -17% on 11-20: spend -17%, CPI -17%, pROAS 0.80 expected → 1.10, "
        "above 1.00"
    )


def test_a_scale_whose_proas_fell_below_scale_roas_is_scaled_back() -> None:
    frame = daily(
        {"spend_micros": 100_000_000, "installs": 10, "pltv_micros": 250_000_000},
        {"spend_micros": 150_000_000, "installs": 10, "pltv_micros": 150_000_000},
    )
    outcomes = build_action_outcomes(DAY, RULES, CAMPAIGN_SCALE, DECISION, frame)
    assert outcomes.iloc[0]["verdict"] == "below"
    assert outcomes.iloc[0]["line"].endswith("now below 1.30: scale back")
    actions = pd.DataFrame(
        [
            {"platform": "facebook", "level": "campaign", "object_id": "C1", "action": "hold",
             "reason": "pROAS 1.10 …"},
            {"platform": "facebook", "level": "campaign", "object_id": "C2", "action": "hold",
             "reason": "x"},
        ]
    )  # fmt: skip
    out = with_follow_ups(actions, outcomes, CAMPAIGN_SCALE, DAY, RULES)
    assert out["action"].tolist() == ["unscale", "hold"]
    assert out.iloc[0]["reason"].startswith(
        "scale back: scaled +20% on 2026-11-20, pROAS since 1.00"
    )
    paused = with_follow_ups(actions.assign(action="pause"), outcomes, CAMPAIGN_SCALE, DAY, RULES)
    assert paused["action"].tolist() == ["pause", "pause"]  # a pause is the stronger answer


def test_proas_counts_only_the_days_whose_cohorts_were_valued() -> None:
    frame = daily(
        {"spend_micros": 100_000_000, "installs": 10, "pltv_micros": 250_000_000},
        {"spend_micros": 100_000_000, "installs": 10, "pltv_micros": 200_000_000},
    )
    unvalued = frame["date"].isin(["2026-11-22", "2026-11-23"])
    frame.loc[unvalued, "pltv_micros"] = pd.NA  # reports not run yet
    row = build_action_outcomes(DAY, RULES, CAMPAIGN_SCALE, DECISION, frame).iloc[0]
    assert row["proas_since"] == pytest.approx(2.0)  # not 1000 / 700
    assert row["valued_days_since"] == 5 and row["valued_days_before"] == 7
    assert "pROAS 2.60 expected → 2.00 (5 of 7 days valued), still above 1.30" in row["line"]


def test_a_pause_follow_up_says_the_spend_stopped() -> None:
    log = pd.DataFrame(
        [log_row(1, level="campaign", object_id="C1", action="pause", field="status",
                 value_before="ACTIVE", value_after="PAUSED", platform="facebook")]
    )  # fmt: skip
    frame = daily(
        {"spend_micros": 50_000_000, "installs": 10, "pltv_micros": 10_000_000},
        {"spend_micros": 0, "installs": 0, "pltv_micros": None},
    )
    row = build_action_outcomes(DAY, RULES, log, DECISION, frame).iloc[0]
    assert row["verdict"] == "stopped"
    assert (
        row["line"] == "paused JP_AEO on 11-20: spend $50.00/day → 0, pROAS was 0.20 (< 0.50 pause)"
    )


def test_only_applied_actions_of_the_due_day_are_followed_up() -> None:
    log = pd.DataFrame(
        [
            log_row(1, status="failed"),
            log_row(2, date=dt.date(2026, 11, 21)),
            log_row(3, status="pending"),
        ]
    )
    frame = daily({"spend_micros": 1, "installs": 1, "pltv_micros": 1}, {"spend_micros": 1,
                  "installs": 1, "pltv_micros": 1})  # fmt: skip
    assert build_action_outcomes(DAY, RULES, log, DECISION, frame).empty


def test_a_winner_at_the_week_cap_is_expanded_instead_of_scaled() -> None:
    # Two applied +20% scales in the week: 1.44; a third would make 1.728 > 1.5.
    log = pd.DataFrame(
        [
            log_row(1, date=dt.date(2026, 11, 24), value_before="10000", value_after="12000"),
            log_row(2, date=dt.date(2026, 11, 26), value_before="12000", value_after="14400"),
            log_row(3, date=dt.date(2026, 11, 19), value_before="100", value_after="1000"),  # old
        ]
    )
    assert week_budget_growth(log, DAY)[("facebook", "S1")] == pytest.approx(1.44)
    actions = pd.DataFrame(
        [
            {"platform": "facebook", "level": "adset", "object_id": "S1", "action": "scale",
             "reason": "pROAS 2.00"},
            {"platform": "facebook", "level": "adset", "object_id": "S9", "action": "scale",
             "reason": "pROAS 2.00"},
        ]
    )  # fmt: skip
    out = with_follow_ups(actions, build_action_outcomes(DAY, RULES, log.iloc[:0], DECISION,
                          pd.DataFrame()), log, DAY, RULES)  # fmt: skip
    assert out["action"].tolist() == ["expand", "scale"]
    assert "budget already +44% in 7 days (cap +50%)" in out.iloc[0]["reason"]
    once = log.iloc[[0]]  # one scale: 1.2 x 1.2 = 1.44 <= 1.5, another scale is fine
    assert with_follow_ups(actions, pd.DataFrame(columns=["action"]), once, DAY, RULES)[
        "action"
    ].tolist() == ["scale", "scale"]


def test_object_days_count_spend_installs_and_pltv_per_level() -> None:
    spend = pd.DataFrame(
        [
            {"date": A, "platform": "facebook", "campaign_id": "C1", "adset_id": "S1",
             "spend_micros": 7},
            {"date": A, "platform": "facebook", "campaign_id": "C1", "adset_id": "S2",
             "spend_micros": 5},
            {"date": "2026-11-21", "platform": "facebook", "campaign_id": "C1", "adset_id": "S2",
             "spend_micros": 3},
        ]
    )  # fmt: skip
    installs = pd.DataFrame(
        [
            {"date": A, "platform": "facebook", "campaign_id": "C1", "adset_id": "S1"},
            {"date": A, "platform": "organic", "campaign_id": None, "adset_id": None},
        ]
    )
    pltv = pd.DataFrame(
        [
            {"date": A, "level": "campaign", "platform": "facebook", "campaign_id": "C1",
             "adset_id": None, "pltv_micros": 30},
            {"date": A, "level": "adset", "platform": "facebook", "campaign_id": "C1",
             "adset_id": "S1", "pltv_micros": 20},
        ]
    )  # fmt: skip
    out = build_object_days(spend, installs, pltv).set_index(["level", "object_id", "date"])
    cols = ["spend_micros", "installs", "pltv_micros"]
    assert out.loc[("campaign", "C1", A), cols].tolist() == [12, 1, 30]
    assert out.loc[("adset", "S1", A), cols].tolist() == [7, 1, 20]
    # A's cohorts were valued (a pltv partition): no row means no installs, a pLTV of 0; the
    # 21st was never valued: unknown.
    assert out.loc[("adset", "S2", A), cols].tolist() == [5, 0, 0]
    assert pd.isna(out.loc[("adset", "S2", "2026-11-21"), "pltv_micros"])


def test_follow_up_days_must_fit_the_spend_window() -> None:
    with pytest.raises(ValueError, match="follow_up_days"):
        FollowUpRules(follow_up_days=16)
