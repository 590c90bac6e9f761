"""Cohort ROAS: the whole triangle as of a report day, per campaign and per country and OS.

As of report day D, every install cohort of the window (cohort_date from D - window_days to D)
is given at every age of `ages` it has reached (age_days <= D - cohort_date): users, installs,
payers, revenue of the cohort's users from the install day to cohort_date + age, the cohort
day's spend, and ROAS = revenue / spend. One day's triangle is enough to draw every curve.

Revenue is net of refunds, like campaign_daily's and the reconciliation's: a refund is negative
revenue on its own day (the payments table books it so), in the cell of every age that day is
in. So a cohort's revenue never falls with age unless a refund fell between the two ages, and
then by exactly the refunds less the purchases between them; its gross revenue (purchases
alone) never falls with age (tests/properties).

`build_cohort_roas_segments` is the same triangle sliced by the MMP's country and device OS
(`cohort_roas_segments`). Ad platforms report spend per campaign, not per country or OS, so a
campaign cohort's spend is shared among its segments in proportion to their installs (integer
micros, largest remainder): the segments of one cell add up exactly to the cell.

Pure functions: DataFrames in, DataFrames out; the report day, the window and the ages are
arguments.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from adperf.transform import metrics
from adperf.transform.attribution import build_user_map
from adperf.vocabulary import INSTALL_BUCKETS

AGES: tuple[int, ...] = (0, 3, 7, 14, 30)
# A segment the MMP did not fill in (no country code, no OS) is keyed by this value.
UNKNOWN = "unknown"

CAMPAIGN_KEY: list[str] = ["platform", "campaign_id"]
SEGMENT_COLUMNS: list[str] = ["country", "device_os"]
_COUNTS: list[str] = ["users", "installs", "payers", "revenue_micros", "spend_micros"]
COHORT_COLUMNS: list[str] = [
    "cohort_date",
    "platform",
    "campaign_id",
    "campaign_name",
    "age_days",
    *_COUNTS,
    "roas",
    "as_of",
]
SEGMENT_COHORT_COLUMNS: list[str] = [
    "cohort_date",
    "platform",
    "campaign_id",
    *SEGMENT_COLUMNS,
    "age_days",
    *_COUNTS,
    "roas",
    "as_of",
]


def build_cohort_roas(
    day: str,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    spend: pd.DataFrame,
    ages: tuple[int, ...] = AGES,
    window_days: int | None = None,
) -> pd.DataFrame:
    """The triangle as of `day`: per (cohort_date, platform, campaign_id, age reached) row.

    `window_days` (default: the oldest age) bounds the cohorts: day - window_days .. day.
    """
    cells = _triangle(day, installs, payments, spend, ages, window_days, [])
    if cells.empty:
        return _empty(COHORT_COLUMNS)
    return cells[COHORT_COLUMNS].reset_index(drop=True)


def build_cohort_roas_segments(
    day: str,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    spend: pd.DataFrame,
    ages: tuple[int, ...] = AGES,
    window_days: int | None = None,
) -> pd.DataFrame:
    """The triangle as of `day` per (cohort_date, platform, campaign_id, country, device_os,
    age reached) row; spend shared among a campaign cohort's segments by installs."""
    cells = _triangle(day, installs, payments, spend, ages, window_days, SEGMENT_COLUMNS)
    if cells.empty:
        return _empty(SEGMENT_COHORT_COLUMNS)
    return cells[SEGMENT_COHORT_COLUMNS].reset_index(drop=True)


def _triangle(
    day: str,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    spend: pd.DataFrame,
    ages: tuple[int, ...],
    window_days: int | None,
    segments: list[str],
) -> pd.DataFrame:
    """Every (cohort, key, age reached) cell of the window as of `day`, keyed by campaign and
    `segments`."""
    if not ages or any(a < 0 for a in ages) or len(set(ages)) != len(ages):
        raise ValueError(f"cohort ages must be distinct and >= 0, got {ages}")
    window = max(ages) if window_days is None else window_days
    if window < 0:
        raise ValueError(f"the cohort window must be >= 0 days, got {window_days}")
    report = dt.date.fromisoformat(day)
    cohorts = [(report - dt.timedelta(days=n)).isoformat() for n in range(window, -1, -1)]
    frames = [_cohort_rows(day, c, installs, payments, spend, ages, segments) for c in cohorts]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _cohort_rows(
    day: str,
    cohort: str,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    spend: pd.DataFrame,
    ages: tuple[int, ...],
    segments: list[str],
) -> pd.DataFrame:
    """The cells of one cohort as of `day`: one per key with installs or spend, per age reached."""
    reached = sorted(a for a in ages if a <= (dt.date.fromisoformat(day) - _date(cohort)).days)
    if not reached:
        return pd.DataFrame()
    key = [*CAMPAIGN_KEY, *segments]
    day_installs = _with_segment_keys(_with_organic_key(installs.loc[installs["date"].eq(cohort)]))
    # The first-install rule is applied within the cohort day only: a user installing twice that
    # day counts once, and every age of this cohort sees the same users whatever the window.
    users = build_user_map(day_installs, tuple(segments))[["user_pid", *key]]

    # ISO dates compare as strings; payments before the install (a reinstall) don't count.
    window = payments.loc[payments["date"].between(cohort, day)]
    paid = window[["user_pid", "date", "amount_micros"]].merge(users, on="user_pid", how="inner")

    installs_by = day_installs.groupby(key, dropna=False).agg(
        installs=("date", "size"), installs_name=("campaign_name", "first")
    )
    users_by = users.groupby(key, dropna=False).agg(users=("user_pid", "nunique"))
    day_spend = spend.loc[spend["date"].eq(cohort)]
    spend_by = day_spend.groupby(CAMPAIGN_KEY, dropna=False).agg(
        spend_micros=("spend_micros", "sum"), spend_name=("campaign_name", "first")
    )
    base = _nullable_ints(installs_by.reset_index())
    base = base.merge(_nullable_ints(users_by.reset_index()), on=key, how="outer")
    if segments:
        base = _share_spend(base, _nullable_ints(spend_by.reset_index()), segments)
    else:
        # merge, not join: it matches null campaign ids (a paid install without one) as keys.
        base = base.merge(_nullable_ints(spend_by.reset_index()), on=key, how="outer")
    if base.empty:
        return pd.DataFrame()
    # Spend's name is the platform's current one; the MMP's is what it was at install.
    # object first: with no spend row the name column is all-NaN float64, which pandas refuses
    # to fill with strings.
    base["campaign_name"] = base["spend_name"].astype("object").fillna(base["installs_name"])
    base = base.drop(columns=["installs_name", "spend_name"])

    cells = []
    for age in reached:
        last = (_date(cohort) + dt.timedelta(days=age)).isoformat()
        paid_by = (
            paid.loc[paid["date"] <= last]
            .groupby(key, dropna=False)
            .agg(payers=("user_pid", "nunique"), revenue_micros=("amount_micros", "sum"))
        )
        rows = base.merge(_nullable_ints(paid_by.reset_index()), on=key, how="left")
        cells.append(rows.assign(age_days=age))
    out = pd.concat(cells, ignore_index=True)
    out[_COUNTS] = out[_COUNTS].fillna(0).astype("int64")
    out["roas"] = metrics.roas(out["revenue_micros"], out["spend_micros"])
    out["cohort_date"] = cohort
    out["as_of"] = day
    # Oldest cohort first (the caller's order), then by key, each key's ages in order.
    return out.sort_values([*key, "age_days"], kind="mergesort", na_position="last")


def _share_spend(base: pd.DataFrame, spend_by: pd.DataFrame, segments: list[str]) -> pd.DataFrame:
    """`base` (installs and users per campaign and segment) with each campaign's spend shared
    among its segments by installs, exactly (largest remainder); a campaign with spend but no
    installs keeps it in the unknown segment."""
    rows = base.merge(spend_by, on=CAMPAIGN_KEY, how="outer")
    for col in segments:
        rows[col] = rows[col].astype("object").fillna(UNKNOWN)
    rows["installs"] = rows["installs"].fillna(0).astype("int64")
    total_spend = rows["spend_micros"].fillna(0).astype("int64")
    campaign_installs = rows.groupby(CAMPAIGN_KEY, dropna=False)["installs"].transform("sum")
    # Every segment of a campaign without installs (there is one, unknown) takes it all.
    weight = rows["installs"].where(campaign_installs > 0, 1)
    weights = weight.groupby([rows[c] for c in CAMPAIGN_KEY], dropna=False).transform("sum")
    product = total_spend * weight
    share, remainder = product // weights, product % weights
    left = total_spend - share.groupby([rows[c] for c in CAMPAIGN_KEY], dropna=False).transform(
        "sum"
    )
    order = rows.assign(_rem=remainder).sort_values(
        [*CAMPAIGN_KEY, "_rem", *segments],
        ascending=[True, True, False, True, True],
        kind="mergesort",
        na_position="last",
    )
    rank = order.groupby(CAMPAIGN_KEY, dropna=False).cumcount().reindex(rows.index)
    rows["spend_micros"] = share + (rank < left).astype("int64")
    return rows


def _date(iso: str) -> dt.date:
    return dt.date.fromisoformat(iso)


def _nullable_ints(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its integer columns as nullable Int64."""
    # An outer merge turns int64 into float64 where a side is missing, and float64 is not exact
    # beyond 2**53 micros; Int64 stays exact and fills with <NA>.
    ints = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c])]
    return df.astype({c: "Int64" for c in ints})


def _with_organic_key(installs: pd.DataFrame) -> pd.DataFrame:
    """Installs with organic and restricted rows keyed and named like their bucket (the MMP
    gives them no campaign)."""
    out = installs.copy()
    bucket = out["platform"].isin(INSTALL_BUCKETS)
    out.loc[bucket, "campaign_id"] = out.loc[bucket, "platform"]
    out.loc[bucket, "campaign_name"] = out.loc[bucket, "platform"]
    return out


def _with_segment_keys(installs: pd.DataFrame) -> pd.DataFrame:
    """Installs with the segment columns filled: a missing country or OS is `UNKNOWN`."""
    out = installs.copy()
    for col in SEGMENT_COLUMNS:
        out[col] = out[col].astype("object").fillna(UNKNOWN)
    return out


def _empty(columns: list[str]) -> pd.DataFrame:
    """No cohort rows, with the output `columns` and dtypes."""
    ints = {"age_days", *_COUNTS}
    return pd.DataFrame(
        {
            c: pd.Series(dtype="int64" if c in ints else "Float64" if c == "roas" else "str")
            for c in columns
        }
    )[columns]
