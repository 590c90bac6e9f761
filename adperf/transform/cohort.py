"""Cohort ROAS: revenue of each install day's users at ages D0..D30 over that day's spend.

Pure functions: DataFrames in, DataFrames out; the report day and the ages are arguments.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from adperf.transform.attribution import build_user_map
from adperf.vocabulary import INSTALL_BUCKETS

AGES: tuple[int, ...] = (0, 3, 7, 14, 30)

CAMPAIGN_KEY: list[str] = ["platform", "campaign_id"]
COHORT_COLUMNS: list[str] = [
    "cohort_date",
    "platform",
    "campaign_id",
    "campaign_name",
    "age_days",
    "users",
    "installs",
    "payers",
    "revenue_micros",
    "spend_micros",
    "roas",
    "as_of",
]
_COUNTS: list[str] = ["users", "installs", "payers", "revenue_micros", "spend_micros"]


def build_cohort_roas(
    day: str,
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    spend: pd.DataFrame,
    ages: tuple[int, ...] = AGES,
) -> pd.DataFrame:
    """Per (cohort_date = day - age, platform, campaign_id, age): users, revenue to `day`, ROAS."""
    if any(a < 0 for a in ages) or len(set(ages)) != len(ages):
        raise ValueError(f"cohort ages must be distinct and >= 0, got {ages}")
    # Each age is a different cohort day, so each output key is built by exactly one report day
    # (day = cohort_date + age_days): loading report days one after another never duplicates.
    frames = [_cohort_at_age(day, age, installs, payments, spend) for age in sorted(ages)]
    out = pd.concat(frames, ignore_index=True) if frames else _empty()
    return out[COHORT_COLUMNS].reset_index(drop=True)


def _cohort_at_age(
    day: str, age: int, installs: pd.DataFrame, payments: pd.DataFrame, spend: pd.DataFrame
) -> pd.DataFrame:
    """The rows of cohort `day - age` as of `day`, one per campaign with installs or spend."""
    cohort = (dt.date.fromisoformat(day) - dt.timedelta(days=age)).isoformat()

    day_installs = _with_organic_key(installs.loc[installs["date"].eq(cohort)])
    # The first-install rule is applied within the cohort day only: a user installing twice that
    # day counts once, and every age of this cohort sees the same users whatever the window.
    users = build_user_map(day_installs)[["user_pid", *CAMPAIGN_KEY]]

    # ISO dates compare as strings; payments before the install (a reinstall) don't count.
    window = payments.loc[payments["date"].between(cohort, day)]
    paid = window[["user_pid", "amount_micros"]].merge(users, on="user_pid", how="inner")

    installs_by = day_installs.groupby(CAMPAIGN_KEY, dropna=False).agg(
        installs=("date", "size"), installs_name=("campaign_name", "first")
    )
    users_by = users.groupby(CAMPAIGN_KEY, dropna=False).agg(users=("user_pid", "nunique"))
    paid_by = paid.groupby(CAMPAIGN_KEY, dropna=False).agg(
        payers=("user_pid", "nunique"), revenue_micros=("amount_micros", "sum")
    )
    day_spend = spend.loc[spend["date"].eq(cohort)]
    spend_by = day_spend.groupby(CAMPAIGN_KEY, dropna=False).agg(
        spend_micros=("spend_micros", "sum"), spend_name=("campaign_name", "first")
    )

    rows = _nullable_ints(installs_by.reset_index())
    for part in (users_by, paid_by, spend_by):
        # merge, not join: it matches null campaign ids (a paid install without one) as keys.
        rows = rows.merge(_nullable_ints(part.reset_index()), on=CAMPAIGN_KEY, how="outer")
    if rows.empty:
        return _empty()
    rows[_COUNTS] = rows[_COUNTS].fillna(0).astype("int64")
    # Spend's name is the platform's current one; the MMP's is what it was at install.
    # object first: with no spend row the name column is all-NaN float64, which pandas refuses
    # to fill with strings.
    rows["campaign_name"] = rows["spend_name"].astype("object").fillna(rows["installs_name"])
    rows["roas"] = _ratio(rows["revenue_micros"], rows["spend_micros"])
    rows["cohort_date"] = cohort
    rows["age_days"] = age
    rows["as_of"] = day
    rows = rows.sort_values(CAMPAIGN_KEY, kind="mergesort", na_position="last")
    return rows[COHORT_COLUMNS]


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


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator as nullable Float64, <NA> where the denominator is 0."""
    num = numerator.astype("Float64")
    den = denominator.astype("Float64")
    return (num / den).where(den != 0, pd.NA)


def _empty() -> pd.DataFrame:
    """No cohort rows, with the output columns and dtypes."""
    return pd.DataFrame(
        {
            "cohort_date": pd.Series(dtype="str"),
            "platform": pd.Series(dtype="str"),
            "campaign_id": pd.Series(dtype="str"),
            "campaign_name": pd.Series(dtype="str"),
            "age_days": pd.Series(dtype="int64"),
            **{c: pd.Series(dtype="int64") for c in _COUNTS},
            "roas": pd.Series(dtype="Float64"),
            "as_of": pd.Series(dtype="str"),
        }
    )[COHORT_COLUMNS]
