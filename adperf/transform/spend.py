"""Unified ad-level spend of one day, converted to the report currency."""

from __future__ import annotations

import pandas as pd

from adperf.fx import FxTable, convert_micros
from adperf.schema import AD_SPEND, SPEND


def build_spend(ad_spend: list[pd.DataFrame], fx: FxTable) -> pd.DataFrame:
    """SPEND rows: every platform's AD_SPEND rows of a day plus fx_rate and spend_micros."""
    # Pulls stored before `account_timezone` was recorded read as null there (nullable).
    frames = [f.reindex(columns=AD_SPEND.columns) for f in ad_spend if len(f)]
    if not frames:
        empty: pd.DataFrame = SPEND.schema.empty_table().to_pandas()
        return empty
    df = pd.concat(frames, ignore_index=True)
    duplicated = df.duplicated(["date", "platform", "ad_id"], keep=False)
    if duplicated.any():
        first = df[duplicated].iloc[0]
        raise ValueError(
            f"spend: ad {first['ad_id']} of {first['platform']} appears twice on {first['date']}"
        )
    rates, converted = convert_micros(
        df["spend_original_micros"], df["currency_original"], df["date"], fx
    )
    df["fx_rate"] = rates
    df["spend_micros"] = converted
    ordered: pd.DataFrame = df.sort_values(["platform", "campaign_id", "adset_id", "ad_id"])
    return ordered.reset_index(drop=True)[SPEND.columns]


def first_spend_dates(
    spend: pd.DataFrame, column: str = "campaign_id"
) -> dict[tuple[str, str], str]:
    """(platform, `column` id) -> the first day with spend in `spend` (a window of days)."""
    paid = spend[spend["spend_micros"] > 0]
    firsts = paid.groupby(["platform", column])["date"].min()
    return {(str(p), str(c)): str(d) for p, c, d in firsts.reset_index().itertuples(index=False)}
