"""AD_SPEND records of a platform's pull as the one frame every spend fetch returns."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

import pandas as pd

from adperf.errors import ConfigError
from adperf.schema import AD_SPEND, I64, empty_frame


def account_ids(ids: Iterable[str], setting: str, what: str, purpose: str = "read") -> list[str]:
    """The distinct account ids of the luigi.cfg list `setting` (e.g. "[tiktok] advertiser_ids"),
    in order; ConfigError naming the setting when it lists none."""
    found = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    if not found:
        raise ConfigError(f"{setting} is empty: list the {what} to {purpose}")
    return found


def check_window(source: str, first_day: datetime.date, day: datetime.date) -> None:
    """ConfigError when a pull's window is reversed (its first day after its last)."""
    if first_day > day:
        raise ConfigError(f"{source}: first day {first_day} is after the last day {day}")


def ad_spend_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records in AD_SPEND's columns and types, sorted by day, campaign, adset and ad."""
    if not records:
        return empty_frame(AD_SPEND)
    frame = pd.DataFrame.from_records(records, columns=AD_SPEND.columns)
    for name in AD_SPEND.columns:
        if AD_SPEND.schema.field(name).type == I64:
            frame[name] = frame[name].astype("int64")
    return frame.sort_values(["date", "campaign_id", "adset_id", "ad_id"]).reset_index(drop=True)
