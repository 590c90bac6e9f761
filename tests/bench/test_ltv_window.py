"""bench.ltv_window's comparison of a window's pROAS with the truth (no pipeline run)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.ltv_window import compare, summary, true_window


def test_window_pROAS_against_the_true_window_roas() -> None:
    truth = pd.DataFrame(
        [
            # date, campaign, installs, true value per install, spend
            ("2026-09-01", "a", 10, 2.0, 10.0),  # before a 2-day window ending 09-03
            ("2026-09-02", "a", 10, 3.0, 10.0),
            ("2026-09-03", "a", 20, 3.0, 20.0),
            ("2026-09-02", "b", 5, 1.0, 50.0),
            ("2026-09-03", "b", 5, 1.0, 40.0),
            ("2026-09-03", "tiny", 1, 1.0, 5.0),  # under min_spend: not compared
        ],
        columns=["date", "campaign_id", "installs", "value_per_install_365d_usd", "spend_report"],
    )
    true = true_window(truth, "2026-09-03", 2)
    assert true.loc["a", "value"] == 90.0 and true.loc["a", "spend"] == 30.0
    assert true.loc["b", "value"] == 10.0 and true.loc["b", "spend"] == 90.0
    window = pd.DataFrame(
        {
            "level": ["campaign", "campaign", "adset", "campaign"],
            "campaign_id": ["a", "b", "a", "tiny"],
            "pltv_micros": [60_000_000, 20_000_000, 1, 1_000_000],
        }
    )
    table = compare(window, true, {"a": "Alpha"}, min_spend=20.0)
    assert list(table["campaign"]) == ["b", "Alpha"]  # by true ROAS, the lowest first
    assert table.loc["a", "true_roas"] == 3.0 and table.loc["a", "proas"] == 2.0
    assert table.loc["b", "ratio"] == pytest.approx((20 / 90) / (10 / 90))
    s = summary(table)
    assert s["campaigns"] == 2
    assert s["mean_log_ratio"] == pytest.approx((math.log(2 / 3) + math.log(2.0)) / 2)
