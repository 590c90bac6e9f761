"""Unified ad-level spend of one day, converted to the report currency."""

from __future__ import annotations

import numpy as np
import pandas as pd

from adperf.fx import FxTable, convert_micros
from adperf.schema import AD_SPEND, SPEND


def build_spend(ad_spend: list[pd.DataFrame], fx: FxTable) -> pd.DataFrame:
    """SPEND rows: every platform's AD_SPEND rows of a day plus fx_rate and spend_micros."""
    frames = [f.reindex(columns=AD_SPEND.columns) for f in ad_spend if len(f)]
    if not frames:
        empty: pd.DataFrame = SPEND.schema.empty_table().to_pandas()
        return empty
    return build_spend_each([pd.concat(frames, ignore_index=True)], fx)[0]


def build_spend_each(ad_spend: list[pd.DataFrame], fx: FxTable) -> list[pd.DataFrame]:
    """`build_spend([f], fx)` of each frame, converted in one pass: a report day converts every
    pull of its cohort window (~130), and pandas' fixed cost per call was most of that."""
    out: list[pd.DataFrame] = [SPEND.schema.empty_table().to_pandas() for _ in ad_spend]
    # Pulls stored before `account_timezone` was recorded read as null there (nullable).
    frames = [f.reindex(columns=AD_SPEND.columns).assign(_part=i) for i, f in enumerate(ad_spend)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return out
    df = pd.concat(frames, ignore_index=True)
    duplicated = df.duplicated(["_part", "date", "platform", "ad_id"], keep=False)
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
    # A stable sort (lexsort): rows that tie keep their order within their frame.
    ordered = df.sort_values(["_part", "platform", "campaign_id", "adset_id", "ad_id"])
    parts = ordered["_part"].to_numpy(dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, parts[1:] != parts[:-1]])
    for a, b in zip(starts, [*starts[1:], len(parts)], strict=True):
        out[int(parts[a])] = ordered.iloc[a:b].reset_index(drop=True)[SPEND.columns]
    return out


def first_spend_dates(
    spend: pd.DataFrame, column: str = "campaign_id"
) -> dict[tuple[str, str], str]:
    """(platform, `column` id) -> the first day with spend in `spend` (a window of days)."""
    paid = spend[spend["spend_micros"] > 0]
    firsts = paid.groupby(["platform", column])["date"].min()
    return {(str(p), str(c)): str(d) for p, c, d in firsts.reset_index().itertuples(index=False)}
