"""build_window_evidence and build_actions on a window of cohorts: decisions on pooled evidence
with a stated risk (issue 18, points 1 and 2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from adperf.transform.decide import (
    Rules,
    WindowEvidence,
    _shrunk_cpi_changes,
    build_actions,
    build_window_evidence,
)
from adperf.transform.ltv import DRAW_COLUMNS, INTERVAL, WINDOW_COLUMNS
from tests.transform.test_report import OLD, records, report

DAY = "2026-11-27"
M = 1_000_000
REPLICATES = 200


def window_days(n: int) -> list[str]:
    end = dt.date.fromisoformat(DAY)
    return [(end - dt.timedelta(days=i)).isoformat() for i in range(n)][::-1]


def spend_rows(campaign: str, per_day_micros: int, days: list[str]) -> pd.DataFrame:
    """Ad-level spend of one campaign (one adset 's-<campaign>') on each of `days`."""
    return pd.DataFrame(
        [
            {
                "date": d,
                "platform": "facebook",
                "campaign_id": campaign,
                "adset_id": f"s-{campaign}",
                "spend_micros": per_day_micros,
            }
            for d in days
        ]
    )


def draws_around(mean: float, sd: float) -> np.ndarray:
    """REPLICATES pROAS draws of a normal distribution, by its quantiles (no randomness)."""
    from scipy.stats import norm

    return np.asarray(mean + sd * norm.ppf((np.arange(REPLICATES) + 0.5) / REPLICATES))


def ltv_frames(
    campaign: str, cohorts: int, installs: int, spend_micros: int, proas_draws: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """pltv_window and pltv_draws rows of a campaign and its one adset whose window pLTV draws
    are `proas_draws` x the window's spend (as ltv.build_pltv_window writes them)."""
    value = proas_draws * spend_micros
    low, high = np.quantile(value, INTERVAL)
    windows, draws = [], []
    for level, adset in (("campaign", None), ("adset", f"s-{campaign}")):
        keys = {"date": DAY, "level": level, "platform": "facebook", "campaign_id": campaign}
        keys["adset_id"] = adset
        windows.append(
            {
                **keys,
                "window_days": 14,
                "cohorts": cohorts,
                "installs": installs,
                "users": installs,
                "payers": installs // 10,
                "realized_micros": 0,
                "pltv_micros": round(float(np.mean(value))),
                "pltv_low_micros": round(float(low)),
                "pltv_high_micros": round(float(high)),
            }
        )
        draws += [{**keys, "draw": i, "pltv_micros": round(v)} for i, v in enumerate(value)]
    return pd.DataFrame(windows, columns=WINDOW_COLUMNS), pd.DataFrame(draws, columns=DRAW_COLUMNS)


def decide(
    per_day_micros: int, installs_per_day: int, proas_draws: np.ndarray, rules: Rules | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(actions on the 14-day window, actions on the report day alone) of campaign c1."""
    days = window_days(14)
    spend = spend_rows("c1", per_day_micros, days)
    window, draws = ltv_frames("c1", 14, 14 * installs_per_day, 14 * per_day_micros, proas_draws)
    evidence = build_window_evidence(DAY, 14, spend, window, draws)
    mean = float(np.mean(proas_draws))
    day_row = ("facebook", "c1", per_day_micros, installs_per_day, 0.1, mean, (mean, mean))
    dates = {("facebook", "c1"): OLD}
    rules = rules or Rules()
    pooled = build_actions(DAY, report(day_row), dates, rules, window=evidence)
    alone = build_actions(DAY, report(day_row), dates, rules)
    return pooled, alone


@pytest.mark.parametrize(
    ("mean", "action", "p_above", "p_below"),
    [
        # each day $30 and 20 installs, under min_spend and min_installs; the window clears both
        (0.20, "pause", 0.0, 1.0),  # clearly a loser
        (2.40, "scale", 1.0, 0.0),  # clearly a winner
    ],
)
def test_fourteen_small_cohorts_together_decide_what_one_could_not(
    mean: float, action: str, p_above: float, p_below: float
) -> None:
    pooled, alone = decide(30 * M, 20, draws_around(mean, 0.1))
    got = records(pooled)[0]
    assert (got["action"], got["p_above"], got["p_below"]) == (action, p_above, p_below)
    assert got["spend_micros"] == 14 * 30 * M
    assert got["proas"] == pytest.approx(mean, abs=1e-6)
    # The report day's cohort alone is under both minimums: hold, whatever it shows.
    assert records(alone)[0]["action"] == "hold"
    assert records(alone)[0]["reason"] == (
        "only $30.00 spend (< $100.00 minimum); only 20 installs (< 50 minimum)"
    )


def test_the_reason_line_says_what_the_decision_rests_on() -> None:
    pooled, _ = decide(300 * M, 223, draws_around(1.82, 0.18))
    got = records(pooled)[0]
    low, high = got["proas_low"], got["proas_high"]
    assert (round(low, 2), round(high, 2)) == (1.53, 2.11)
    assert got["reason"] == (
        "pROAS 1.82 [1.53–2.11] on 14 days of cohorts, 3,122 installs, $4,200.00: "
        "P(ROAS > 1.30) = 1.00 ≥ 0.60"
    )


@pytest.mark.parametrize(
    ("mean", "sd", "action", "reason_end"),
    [
        # centred on scale_roas: half the draws each side, far from the confidence
        (1.3, 0.2, "hold", "P(ROAS > 1.30) = 0.50, P(ROAS < 0.50) = 0.00, neither ≥ 0.60"),
        # centred on pause_roas: not a pause, but surely under target_roas (1.0): scale back
        (0.5, 0.2, "unscale", "P(ROAS < 1.00) = 0.99 ≥ 0.60, under the target: scale back"),
        # centred on target_roas: hold
        (1.0, 0.2, "hold", "P(ROAS > 1.30) = 0.07, P(ROAS < 0.50) = 0.01, neither ≥ 0.60"),
        (0.8, 0.2, "unscale", "P(ROAS < 1.00) = 0.84 ≥ 0.60, under the target: scale back"),
        # over the threshold, but too uncertain: P 0.58 < 0.60 (the default confidence)
        (1.4, 0.5, "hold", "P(ROAS > 1.30) = 0.58, P(ROAS < 0.50) = 0.04, neither ≥ 0.60"),
        # the same point with a narrower posterior: P 0.69 >= 0.60
        (1.4, 0.2, "scale", "P(ROAS > 1.30) = 0.69 ≥ 0.60"),
        (0.3, 0.2, "pause", "P(ROAS < 0.50) = 0.84 ≥ 0.60"),
    ],
)
def test_the_rule_acts_at_the_stated_confidence(
    mean: float, sd: float, action: str, reason_end: str
) -> None:
    pooled, _ = decide(300 * M, 100, draws_around(mean, sd))
    got = records(pooled)[0]
    assert got["action"] == action
    assert got["reason"].endswith(f": {reason_end}")


def test_a_scale_back_needs_a_target_between_the_thresholds() -> None:
    draws = draws_around(0.8, 0.2)  # P(ROAS < 1.0) = 0.84, P(ROAS < 0.5) = 0.07
    at_pause, _ = decide(300 * M, 100, draws, Rules(target_roas=0.5))
    assert records(at_pause)[0]["action"] == "hold"
    higher, _ = decide(300 * M, 100, draws, Rules(target_roas=1.2))
    assert records(higher)[0]["reason"].endswith(
        ": P(ROAS < 1.20) = 0.97 ≥ 0.60, under the target: scale back"
    )
    with pytest.raises(ValueError, match="target_roas"):
        Rules(target_roas=1.5)


def test_confidence_is_a_setting() -> None:
    draws = draws_around(1.5, 0.2)  # P(ROAS > 1.3) = 0.84
    strict, _ = decide(300 * M, 100, draws, Rules(confidence=0.9))
    assert records(strict)[0]["action"] == "hold"
    lax, _ = decide(300 * M, 100, draws, Rules(confidence=0.8))
    assert records(lax)[0]["action"] == "scale"
    with pytest.raises(ValueError, match="confidence"):
        Rules(confidence=0.5)


@pytest.mark.parametrize("seed", range(12))
def test_probabilities_agree_with_the_interval(seed: int) -> None:
    """The probabilities come from the draws the 90% interval is made of: a low end at or
    over scale_roas means at least 95% of the draws are over it, a high end under pause_roas
    at least 95% under it; p_above + p_below never exceeds 1."""
    rng = np.random.default_rng(seed)
    draws = np.exp(rng.normal(np.log(rng.uniform(0.2, 3.0)), rng.uniform(0.05, 0.8), REPLICATES))
    pooled, _ = decide(300 * M, 100, draws)
    got = records(pooled)[0]
    assert 0.0 <= got["p_above"] <= 1.0 and 0.0 <= got["p_below"] <= 1.0
    assert got["p_above"] + got["p_below"] <= 1.0
    assert got["p_above"] == pytest.approx(float(np.mean(draws > 1.3)), abs=0.006)
    if got["proas_low"] >= 1.3:
        assert got["p_above"] >= 0.95
    if got["proas_high"] < 0.5:
        assert got["p_below"] >= 0.95
    if got["proas_high"] <= 1.3:
        assert got["p_above"] <= 0.05 + 1 / REPLICATES


def test_adsets_use_their_own_window() -> None:
    days = window_days(14)
    spend = spend_rows("c1", 30 * M, days)
    window, draws = ltv_frames("c1", 14, 280, 14 * 30 * M, draws_around(0.2, 0.1))
    evidence = build_window_evidence(DAY, 14, spend, window, draws)
    adset = evidence[("adset", "facebook", "s-c1")]
    assert (adset.spend_micros, adset.installs, adset.cohort_days) == (420 * M, 280, 14)
    assert adset.draws is not None and len(adset.draws) == REPLICATES


def test_window_evidence_counts_only_the_window_days_of_spend() -> None:
    # 20 days of spend: the 6 before the 14-day window do not count.
    spend = spend_rows("c1", 10 * M, window_days(20))
    window, draws = ltv_frames("c1", 14, 140, 140 * M, draws_around(1.0, 0.1))
    got = build_window_evidence(DAY, 14, spend, window, draws)[("campaign", "facebook", "c1")]
    assert got.spend_micros == 140 * M
    assert got.proas == pytest.approx(1.0, abs=1e-6)


def test_an_object_without_pltv_in_the_window_holds_on_its_roas_so_far() -> None:
    spend = spend_rows("c1", 30 * M, window_days(14))
    empty_window = pd.DataFrame(columns=WINDOW_COLUMNS)
    empty_draws = pd.DataFrame(columns=DRAW_COLUMNS)
    evidence = build_window_evidence(DAY, 14, spend, empty_window, empty_draws)
    row = ("facebook", "c1", 30 * M, 60, 0.2, None, None)
    got = build_actions(DAY, report(row), {("facebook", "c1"): OLD}, Rules(min_installs=0),
                        window=evidence)  # fmt: skip
    assert records(got)[0]["action"] == "hold"
    assert records(got)[0]["reason"] == (
        "ROAS so far 0.20 and no pROAS (LTV model unavailable) on 0 days of cohorts, 0 installs, "
        "$420.00"
    )


def _evidence(**kw: Any) -> WindowEvidence:
    base: dict[str, Any] = {
        "window_days": 14,
        "cohort_days": 14,
        "spend_micros": 500 * M,
        "installs": 100,
        "proas": 1.0,
        "low": 0.9,
        "high": 1.1,
        "draws": draws_around(1.0, 0.06),
    }
    return WindowEvidence(**{**base, **kw})


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (
            _evidence(spend_micros=80 * M),
            "only $80.00 spend in 14 days (< $100.00 minimum)",
        ),
        (
            _evidence(installs=49),
            "only 49 installs in 14 days of cohorts (< 50 minimum)",
        ),
    ],
)
def test_minimums_apply_to_the_window(evidence: WindowEvidence, reason: str) -> None:
    got = decide_on(evidence, ("facebook", "c1", 500 * M, 500, 0.2, 0.2, (0.1, 0.3)))
    assert (got["action"], got["reason"]) == ("hold", reason)


def decide_on(evidence: WindowEvidence, row: Any, **kw: Any) -> dict[str, Any]:
    """The decision of campaign c1 (an old one, report `row`) on window `evidence` under the
    default rules; `kw` goes to build_actions (e.g. `response`)."""
    got = build_actions(
        DAY,
        report(row),
        {("facebook", "c1"): OLD},
        Rules(),
        window={("campaign", "facebook", "c1"): evidence},
        **kw,
    )
    return records(got)[0]


def _spend_with_installs(budget_rise: float, cpi_rise: float) -> pd.DataFrame:
    """c1's 14 days: $100 and 50 platform installs a day, then the last 3 days at
    `budget_rise` x the spend and `cpi_rise` x the CPI."""
    rows = spend_rows("c1", 100 * M, window_days(14))
    rows["installs_reported"] = 50
    last = rows["date"] >= window_days(3)[0]
    rows.loc[last, "spend_micros"] = round(100 * M * budget_rise)
    rows.loc[last, "installs_reported"] = round(50 * budget_rise / cpi_rise)
    return rows


def test_the_window_value_is_bought_at_the_last_days_cpi() -> None:
    spend = _spend_with_installs(budget_rise=1.44, cpi_rise=1.2)
    window, draws = ltv_frames(
        "c1", 14, 700, int(spend["spend_micros"].sum()), draws_around(1.5, 0.1)
    )
    plain = build_window_evidence(DAY, 14, spend, window, draws)[("campaign", "facebook", "c1")]
    now = build_window_evidence(DAY, 14, spend, window, draws, cpi_days=3)
    got = now[("campaign", "facebook", "c1")]
    assert plain.proas is not None and got.proas is not None and got.draws is not None
    assert plain.cpi_change is None
    # 3 x 60 installs for 3 x $144 against 11 x 50 + 3 x 60 for 11 x $100 + 3 x $144.
    expected = (180 / 432) / (730 / 1532)
    assert got.cpi_change == pytest.approx(expected)
    assert got.proas == pytest.approx(plain.proas * expected)
    assert np.median(got.draws) == pytest.approx(plain.proas * expected, rel=0.03)
    # The recent count's noise widens the draws; the same day and object always draw the same.
    assert np.std(got.draws) > np.std(plain.draws) * expected  # type: ignore[arg-type]
    again = build_window_evidence(DAY, 14, spend, window, draws, cpi_days=3)
    assert np.array_equal(again[("campaign", "facebook", "c1")].draws, got.draws)  # type: ignore[arg-type]
    # The adset has the same spend: the same change.
    assert now[("adset", "facebook", "s-c1")].cpi_change == pytest.approx(expected)


def test_a_scaled_winner_at_its_new_cpi_is_no_longer_scaled_and_the_reason_says_why() -> None:
    spend = _spend_with_installs(budget_rise=1.44, cpi_rise=1.2)
    window, draws = ltv_frames(
        "c1", 14, 700, int(spend["spend_micros"].sum()), draws_around(1.45, 0.1)
    )
    rules = Rules()
    dates = {("facebook", "c1"): OLD}
    row = ("facebook", "c1", 144 * M, 40, 0.1, 1.45, (1.45, 1.45))
    before = build_window_evidence(DAY, 14, spend, window, draws)
    after = build_window_evidence(DAY, 14, spend, window, draws, cpi_days=3)
    scaled = records(build_actions(DAY, report(row), dates, rules, window=before))
    held = records(build_actions(DAY, report(row), dates, rules, window=after))
    assert scaled[0]["action"] == "scale"
    assert held[0]["action"] == "hold"
    assert "at the last 3 days' CPI (+14% on the window's)" in str(held[0]["reason"])


def test_without_recent_installs_or_spend_the_window_cpi_stands() -> None:
    spend = _spend_with_installs(budget_rise=1.0, cpi_rise=1.0)
    spend.loc[spend["date"] >= window_days(3)[0], "installs_reported"] = 0
    window, draws = ltv_frames(
        "c1", 14, 700, int(spend["spend_micros"].sum()), draws_around(1.5, 0.1)
    )
    plain = build_window_evidence(DAY, 14, spend, window, draws)
    got = build_window_evidence(DAY, 14, spend, window, draws, cpi_days=3)
    assert got.keys() == plain.keys()
    for key, g in got.items():
        assert g.cpi_change is None and g.proas == plain[key].proas


def test_a_small_adsets_cpi_change_is_shrunk_toward_its_levels() -> None:
    """Three days of ~30 installs say little: an adset whose CPI reads +39% among adsets of
    stable CPI is valued near their common change; with its own change kept it was scaled back
    in the planted closed loop (campaign at scale_roas, pROAS 0.61 at '+39%')."""
    stable = [0.98, 1.0, 1.02, 0.99, 1.01, 1.0, 0.97, 1.03]
    changes = {("facebook", f"s{i}"): (c, 600, 2800) for i, c in enumerate(stable)}
    changes[("facebook", "small")] = (1 / 1.39, 30, 140)
    changes[("facebook", "new")] = (1.0, 40, 40)  # all of its installs are recent
    got = _shrunk_cpi_changes(changes)
    mean, sd = got[("facebook", "small")]
    assert np.exp(mean) == pytest.approx(1.0, abs=0.03) and sd < 0.05
    assert got[("facebook", "new")] == (0.0, 0.0)
    # Half the campaigns scaled (CPI +20%), thousands of installs each: they keep most of it.
    scaled = {("google_ads", f"c{i}"): (1 / 1.2 if i % 2 else 1.0, 900, 4200) for i in range(8)}
    kept = _shrunk_cpi_changes(scaled)
    for i in range(1, 8, 2):
        assert 1 / np.exp(kept[("google_ads", f"c{i}")][0]) > 1.15
    # Under 3 objects the spread between them cannot be estimated: each keeps its own.
    two = {k: changes[k] for k in list(changes)[:1]} | {
        ("facebook", "small"): changes[("facebook", "small")]
    }
    alone = _shrunk_cpi_changes(two)
    assert alone[("facebook", "small")][0] == pytest.approx(np.log(1 / 1.39))
    assert alone[("facebook", "small")][1] == pytest.approx(np.sqrt(1 / 30 - 1 / 140))


def test_cpi_days_must_be_under_the_window() -> None:
    Rules(cpi_days=0)
    Rules(window_days=14, cpi_days=13)
    with pytest.raises(ValueError, match="cpi_days = 14"):
        Rules(window_days=14, cpi_days=14)
