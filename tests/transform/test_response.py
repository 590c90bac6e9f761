"""build_budget_response and decisions on the return of the next budget step: CPI's elasticity to
spend learned from follow-ups (issue 18, decisions that pay)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from adperf.transform.response import MAX_ELASTICITY, BudgetResponse, build_budget_response
from tests.transform.test_report_window import M, _evidence, decide_on, draws_around


def follow_up(
    action: str, spend_ratio: float, elasticity: float, installs_before: int, rng: Any
) -> dict[str, Any]:
    """An action_outcomes row of a budget change by `spend_ratio` on an object whose CPI grows
    as spend ** `elasticity`, its installs drawn Poisson on both sides."""
    before_spend = 7 * 200 * M
    since_spend = round(before_spend * spend_ratio)
    expected_since = installs_before * spend_ratio ** (1.0 - elasticity)
    before, since = int(rng.poisson(installs_before)), int(rng.poisson(expected_since))
    return {
        "action": action,
        "spend_before_micros": before_spend,
        "spend_since_micros": since_spend,
        "installs_before": before,
        "installs_since": since,
        "cpi_before_micros": round(before_spend / before) if before else None,
        "cpi_since_micros": round(since_spend / since) if since else None,
    }


def outcomes(elasticity: float, n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        up = i % 3 != 2  # two scales to a scale back, as in the loop
        ratio = float(rng.choice([1.2, 1.44])) if up else 1 / 1.2
        rows.append(follow_up("scale" if up else "unscale", ratio, elasticity, 400, rng))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("elasticity", [0.0, 0.35, 0.6])
def test_the_elasticity_is_recovered_from_follow_ups(elasticity: float) -> None:
    for seed in (1, 2, 3):
        got = build_budget_response(outcomes(elasticity, 60, seed))
        assert got.follow_ups == 60
        # The prior pulls towards 0 by 4 / (4 + ~60 x 3.5): about 2%.
        assert got.elasticity == pytest.approx(elasticity, abs=0.12)
        assert got.sd < 0.1


def test_more_follow_ups_narrow_the_estimate() -> None:
    few, many = build_budget_response(outcomes(0.35, 6)), build_budget_response(outcomes(0.35, 90))
    assert many.sd < few.sd < 0.5
    assert (few.follow_ups, many.follow_ups) == (6, 90)


def test_without_follow_ups_the_next_dollar_returns_what_the_average_does() -> None:
    for response in (build_budget_response(pd.DataFrame()), BudgetResponse()):
        assert response == BudgetResponse(0.0, 0.5, 0)
        assert response.step_up(1.2) == pytest.approx(1.0)
        assert response.step_down(1.2) == pytest.approx(1.0)
        assert response.describe() == "CPI flat with spend until follow-ups show otherwise"


def test_pauses_copies_and_one_sided_follow_ups_carry_no_slope() -> None:
    rng = np.random.default_rng(5)
    rows = [follow_up("scale", 1.2, 0.35, 400, rng) for _ in range(3)]
    paused = {**rows[0], "action": "pause", "spend_since_micros": 0, "cpi_since_micros": None}
    copied = {**rows[1], "action": "expand"}
    silent = {**rows[2], "installs_since": 0, "cpi_since_micros": None}
    unchanged = {**rows[2], "spend_since_micros": rows[2]["spend_before_micros"]}
    got = build_budget_response(pd.DataFrame([paused, copied, silent, unchanged, rows[2]]))
    assert got.follow_ups == 1


@pytest.mark.parametrize(("slope", "expected"), [(-0.5, 0.0), (3.0, MAX_ELASTICITY)])
def test_the_elasticity_stays_between_0_and_the_cap(slope: float, expected: float) -> None:
    rows = pd.DataFrame([follow_up("scale", 1.44, slope, 100_000, np.random.default_rng(0))] * 30)
    assert build_budget_response(rows).elasticity == pytest.approx(expected)


def test_a_step_returns_the_average_times_its_share() -> None:
    r = BudgetResponse(elasticity=0.35, sd=0.05, follow_ups=40)
    # Value ∝ spend ** 0.65: +20% of budget adds 1.2 ** 0.65 - 1 = 12.6% of value.
    assert r.step_up(1.2) == pytest.approx((math.exp(0.65 * math.log(1.2)) - 1) / 0.2)
    assert r.step_up(1.2) == pytest.approx(0.629, abs=1e-3)
    # The last sixth of a budget cut back by 1.2 returns 0.67 of the average dollar.
    assert r.step_down(1.2) == pytest.approx(0.670, abs=1e-3)
    assert r.describe() == "CPI ∝ spend^0.35 from 40 follow-ups"


def decide(proas: float, sd: float, response: BudgetResponse | None) -> dict[str, Any]:
    evidence = _evidence(
        proas=proas, low=proas - sd, high=proas + sd, draws=draws_around(proas, sd)
    )
    row = ("facebook", "c1", 500 * M, 500, 0.2, proas, (proas - sd, proas + sd))
    return decide_on(evidence, row, response=response)


LEARNED = BudgetResponse(elasticity=0.35, sd=0.05, follow_ups=40)


def test_a_winner_whose_next_step_does_not_pay_holds_and_says_why() -> None:
    # 1.56 clears scale_roas 1.3 on average, but its next +20% returns 1.56 x 0.63 = 0.98; the
    # last sixth of its budget returns 1.56 x 0.67 = 1.05: at its best budget, hold.
    assert decide(1.56, 0.05, None)["action"] == "scale"
    held = decide(1.56, 0.05, LEARNED)
    assert held["action"] == "hold"
    assert held["p_above"] == pytest.approx(1.0)
    assert held["reason"].endswith(
        ": P(ROAS > 1.30) = 1.00, but the next +20% of budget returns 0.98 per dollar "
        "(CPI ∝ spend^0.35 from 40 follow-ups): P(> 1.00) = 0.28 < 0.60"
    )
    # At 1.45 even the last step returns 0.97: scale back what the rule on the average scales.
    assert decide(1.45, 0.05, None)["action"] == "scale"
    assert decide(1.45, 0.05, LEARNED)["action"] == "unscale"


def test_a_winner_whose_next_step_pays_is_scaled_and_the_reason_says_both() -> None:
    got = decide(2.0, 0.1, LEARNED)
    assert got["action"] == "scale"
    assert got["reason"].endswith(
        ": P(ROAS > 1.30) = 1.00, the next +20% of budget returns 1.26 per dollar "
        "(CPI ∝ spend^0.35 from 40 follow-ups): P(> 1.00) = 1.00, both ≥ 0.60"
    )
    # Without follow-ups the reason is the average's alone.
    assert decide(2.0, 0.1, None)["reason"].endswith(": P(ROAS > 1.30) = 1.00 ≥ 0.60")


def test_a_budget_past_its_best_is_scaled_back_on_the_last_step_s_return() -> None:
    # 1.2 on average pays; the last sixth of its budget returns 1.2 x 0.67 = 0.80.
    assert decide(1.2, 0.05, None)["action"] == "hold"
    got = decide(1.2, 0.05, LEARNED)
    assert got["action"] == "unscale"
    assert "the last +20% of budget returns 0.80 per dollar" in got["reason"]
    # Near the best budget (average 1 / 0.65 = 1.54) neither step pays: hold.
    assert decide(1.54, 0.02, LEARNED)["action"] == "hold"
