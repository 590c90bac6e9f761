"""What one day's report is made of, as stored: its lake inputs' hash, its data-quality notes,
its accounts line and the warehouse history before it. Plain reads; the report is rendered
from them by adperf.sinks.render."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pandas as pd
import sqlalchemy as sa

from adperf import lake, warehouse
from adperf.lake import Root

#: Days of history the report shows (the oldest cohort age reported, D30).
HISTORY_DAYS = 30

# The lake files a rendered report is made of (besides the warehouse history).
REPORT_INPUTS = (
    "campaign_report",
    "actions",
    "reconciliation",
    "cohort_roas",
    "ltv_model",
    "watch",
    "action_outcomes",
)
# Read if present: their notes (quarantined rows, restated days) are part of the report.
_NOTED_INPUTS = ("payments", "events", "restatements")
_MONEY = ("spend", "cpi", "revenue", "assisted_revenue", "pltv")


def as_money(df: pd.DataFrame) -> pd.DataFrame:
    """`x_micros` columns → `x` floats in currency units (for display only)."""
    micros = [c for c in df.columns if c.endswith("_micros")]
    out = df.drop(columns=micros)  # one copy of the frame, not one per column dropped
    for col in micros:
        out[col[: -len("_micros")]] = df[col].astype("float64") / 1_000_000
    return out


def first_row(df: pd.DataFrame) -> dict[str, Any]:
    """The first row of `df` as a dict with string keys."""
    return {str(k): v for k, v in df.iloc[0].items()}


def inputs_hash(root: Root, day: str) -> str | None:
    """A hash of the day's report inputs as they are now; None while one is missing."""
    digest = hashlib.sha256()
    for dataset in REPORT_INPUTS:
        data = lake.read_file(root, dataset, "date", day, lake.DATA_FILE)
        if data is None:
            return None
        digest.update(dataset.encode() + b"\0" + data)
    for dataset in _NOTED_INPUTS:
        for name in (lake.META_FILE, lake.DATA_FILE if dataset == "restatements" else ""):
            found = lake.read_file(root, dataset, "date", day, name) if name else None
            if found is not None:
                digest.update(f"{dataset}/{name}".encode() + b"\0" + found)
    return digest.hexdigest()


def quality_notes(root: Root, day: str, currency: str) -> list[str]:
    """Restated spend, quarantined rows and the LTV model's state, from the day's lake files."""
    from adperf.sinks.render import build_quality_notes

    def optional(dataset: str) -> pd.DataFrame | None:
        # Written by other tasks when they have something to say (restatements: issue 4).
        if not lake.partition_exists(root, dataset, "date", day):
            return None
        return as_money(lake.read_partition(root, dataset, "date", day))

    def meta(dataset: str) -> dict[str, Any]:
        version = lake.current_version(root, dataset, "date", day)
        return dict(version.meta) if version and version.meta else {}

    return build_quality_notes(
        currency=currency,
        payments_meta=meta("payments"),
        events_meta=meta("events"),
        restatements=optional("restatements"),
        ltv_model=optional("ltv_model"),
    )


def accounts_line(root: Root, day: dt.date, report_timezone: str, account_days: str) -> str | None:
    """Which ad accounts of the day's spend keep days of another zone (adperf.account_days)."""
    from adperf.account_days import accounts_line as line

    iso = day.isoformat()
    if not lake.partition_exists(root, "spend", "date", iso):
        return None
    # Spend of pulls made before the zone was recorded has no account_timezone: nothing to say.
    spend = lake.read_partition(root, "spend", "date", iso).reindex(
        columns=["platform", "account_id", "account_timezone"]
    )
    rows = spend.itertuples(index=False)
    return line([(str(p), str(a), z) for p, a, z in rows], report_timezone, day, account_days)


def history(engine: sa.Engine, day: dt.date) -> dict[str, pd.DataFrame]:
    """campaign_daily and cohort_roas of the 30 days before `day`, ad_spend_daily of the 30
    days to `day`, as loaded in the warehouse."""
    first = (day - dt.timedelta(days=HISTORY_DAYS)).isoformat()
    last = (day - dt.timedelta(days=1)).isoformat()
    frames = {
        name: warehouse.read_days(engine, name, first, last)
        for name in ("campaign_daily", "cohort_roas")
    }
    chart_first = (day - dt.timedelta(days=HISTORY_DAYS - 1)).isoformat()
    spend = warehouse.read_days(engine, "ad_spend_daily", chart_first, day.isoformat())
    frames["ad_spend_daily"] = spend[["date", "platform", "spend"]]
    for df in frames.values():
        # DECIMAL columns come back as Decimal objects; the report shows floats.
        for col in [c for c in _MONEY if c in df.columns]:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return frames
