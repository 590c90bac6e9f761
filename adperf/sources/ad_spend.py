"""AD_SPEND records of a platform's pull as the one frame every spend fetch returns."""

from __future__ import annotations

from typing import Any

import pandas as pd

from adperf.schema import AD_SPEND, I64, empty_frame


def ad_spend_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records in AD_SPEND's columns and types, sorted by day, campaign, adset and ad."""
    if not records:
        return empty_frame(AD_SPEND)
    frame = pd.DataFrame.from_records(records, columns=AD_SPEND.columns)
    for name in AD_SPEND.columns:
        if AD_SPEND.schema.field(name).type == I64:
            frame[name] = frame[name].astype("int64")
    return frame.sort_values(["date", "campaign_id", "adset_id", "ad_id"]).reset_index(drop=True)
