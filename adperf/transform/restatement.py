"""Restated spend: the latest figure of each day across re-pulls, and what changed since the last.

Platforms revise recent days (Facebook up to 28 days back), so each report day re-pulls a
window of days. A pull is kept whole, keyed by the day it was made; the figure of a day is the
one of the latest pull whose window covers it (later pull wins, so re-running never adds two
figures up), and a day's restatement is the latest pull's figure minus the one before it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from adperf.fx import FxTable
from adperf.schema import SPEND, empty_frame
from adperf.transform.spend import build_spend_each

RESTATEMENT_COLUMNS = [
    "date",  # the report day whose pull saw the change
    "restated_date",  # the day whose spend changed
    "platform",
    "previous_micros",  # report currency
    "latest_micros",
    "delta_micros",
]


@dataclass(frozen=True)
class Pull:
    """One pull of one platform: its day, the window it covers and its SPEND rows."""

    platform: str
    pulled: str
    first: str
    last: str
    rows: pd.DataFrame

    def covers(self, day: str) -> bool:
        """True when `day` is inside the pull's window (a day without rows had no delivery)."""
        return self.first <= day <= self.last


def window_first(day: dt.date, lookback_days: int) -> dt.date:
    """The first day of the `lookback_days` window that ends on `day`."""
    if lookback_days < 1:
        raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
    return day - dt.timedelta(days=lookback_days - 1)


def pull_days_for(day: dt.date, n_days: int, lookback_days: int) -> list[dt.date]:
    """The pull days whose figures are the latest by `day` for the `n_days` days up to `day`.

    Day d's latest figure is in the pull of min(d + lookback - 1, day); the pull of `day - 1` is
    included too, as the previous figure of the restatements.
    """
    first = day - dt.timedelta(days=n_days - 1)
    wanted = {min(first + dt.timedelta(days=i + lookback_days - 1), day) for i in range(n_days)} | {
        day - dt.timedelta(days=1)
    }
    return sorted(wanted)


def build_latest(pulls: list[Pull], first: str, last: str) -> pd.DataFrame:
    """The rows of the days first..last, each (platform, day) from the latest pull covering it
    (SPEND rows from SPEND pulls; AD_SPEND rows from AD_SPEND pulls, as `build_latest_spend`)."""
    days = list(pd.date_range(first, last, freq="D").strftime("%Y-%m-%d"))
    frames: list[pd.DataFrame] = []
    for platform in sorted({p.platform for p in pulls}):
        mine = sorted((p for p in pulls if p.platform == platform), key=lambda p: p.pulled)
        taken: dict[int, list[str]] = {}  # index in `mine` -> the days it is the latest for
        for day in days:
            i = next((i for i in reversed(range(len(mine))) if mine[i].covers(day)), None)
            if i is not None and len(mine[i].rows):
                taken.setdefault(i, []).append(day)
        # One filter per pull, not per day: a window is ~130 pulls x 31 days. Each day's rows
        # come from one pull, so a stable sort by day gives the rows day after day, each in
        # its pull's order.
        parts = [
            mine[i].rows[mine[i].rows["date"].isin(mine_days)] for i, mine_days in taken.items()
        ]
        if parts:
            rows = pd.concat(parts, ignore_index=True)
            frames.append(rows.sort_values("date", kind="stable"))
    if not frames:
        return empty_frame(SPEND)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["date", "platform", "campaign_id", "adset_id", "ad_id"]).reset_index(
        drop=True
    )


def build_latest_spend(pulls: list[Pull], first: str, last: str, fx: FxTable) -> pd.DataFrame:
    """SPEND rows of the days first..last from AD_SPEND pulls, each (platform, day) from the
    latest pull covering it: `build_latest(convert_pulls(pulls, fx), first, last)`, converting
    only the rows kept (a report day's ~130 pulls overlap: most of their rows are older
    figures of the same days)."""
    latest = build_latest(pulls, first, last)
    if not len(latest):
        return empty_frame(SPEND)
    (converted,) = build_spend_each([latest], fx)
    return converted.sort_values(
        ["date", "platform", "campaign_id", "adset_id", "ad_id"]
    ).reset_index(drop=True)


def build_restatements(as_of: str, previous: Pull | None, latest: Pull) -> pd.DataFrame:
    """Per restated day of one platform: spend in the previous pull, in the latest, the change.

    Both pulls must carry `spend_micros` (report currency, SPEND rows). Only days both windows
    cover, before `as_of`, with a change, are listed; none without a previous pull.
    """
    empty = pd.DataFrame(
        {
            c: pd.Series(dtype="int64" if c.endswith("_micros") else "object")
            for c in RESTATEMENT_COLUMNS
        }
    )
    if previous is None:
        return empty
    first, last = max(previous.first, latest.first), min(previous.last, latest.last)
    rows = []
    for day in pd.date_range(first, last, freq="D").strftime("%Y-%m-%d"):
        if day >= as_of:
            continue
        before = _spend_on(previous.rows, day)
        after = _spend_on(latest.rows, day)
        if before != after:
            rows.append([as_of, day, latest.platform, before, after, after - before])
    if not rows:
        return empty
    out = pd.DataFrame(rows, columns=RESTATEMENT_COLUMNS)
    for col in ("previous_micros", "latest_micros", "delta_micros"):
        out[col] = out[col].astype("int64")
    return out


def _spend_on(rows: pd.DataFrame, day: str) -> int:
    if not len(rows):
        return 0
    return int(rows.loc[rows["date"] == day, "spend_micros"].sum())


def convert_pulls(pulls: list[Pull], fx: FxTable) -> list[Pull]:
    """The pulls with their AD_SPEND rows as SPEND rows (report currency, each row's day's rate)."""
    converted = build_spend_each([p.rows for p in pulls], fx)
    return [
        Pull(p.platform, p.pulled, p.first, p.last, rows)
        for p, rows in zip(pulls, converted, strict=True)
    ]


def build_day_restatements(day: str, pulls: list[Pull]) -> pd.DataFrame:
    """Restatements seen on `day`: per platform, its pull of `day` against its latest earlier
    pull (SPEND rows); empty for a platform without either."""
    changes = []
    for platform in sorted({p.platform for p in pulls}):
        mine = sorted((p for p in pulls if p.platform == platform), key=lambda p: p.pulled)
        today = [p for p in mine if p.pulled == day]
        earlier = [p for p in mine if p.pulled < day]
        if today and earlier:
            changes.append(build_restatements(day, earlier[-1], today[0]))
    if not changes:
        return build_restatements(day, None, Pull("", day, day, day, empty_frame(SPEND)))
    return pd.concat(changes, ignore_index=True)


def rows_in_windows(rows: pd.DataFrame, windows: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """The rows whose (platform, date) fall in that platform's window."""
    keep = pd.Series(False, index=rows.index)
    for platform, (first, last) in windows.items():
        keep |= (rows["platform"] == platform) & rows["date"].between(first, last)
    return rows[keep].reset_index(drop=True)
