"""The install counts per segment of a cohort's valuation (adperf.transform.ltv.value)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from adperf.transform.ltv.value import _install_counts


def test_install_counts_match_each_segment_and_count_zero_for_a_segment_without_installs() -> None:
    ids = pd.DataFrame(
        {
            "platform": ["facebook", "facebook", "facebook", "organic", "google_ads"],
            "campaign_id": ["1", "1", "2", "organic", "1"],
            "adset_id": ["a", "b", "c", "organic", "g"],
        }
    )
    keys = pd.DataFrame(
        {
            "platform": ["facebook", "google_ads", "facebook", "organic", "tiktok"],
            "campaign_id": ["1", "1", "2", "organic", "1"],
            "adset_id": ["b", "g", "c", "organic", "t"],
        }
    )

    campaigns = _install_counts(ids, keys, ["platform", "campaign_id"])
    adsets = _install_counts(ids, keys, ["platform", "campaign_id", "adset_id"])

    # The same campaign id on two platforms is two segments; tiktok's campaign has none.
    np.testing.assert_array_equal(campaigns, [2.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(adsets, [1.0, 1.0, 1.0, 1.0, 0.0])
    assert campaigns.dtype == np.float64
