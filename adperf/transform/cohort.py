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

import numpy as np
import pandas as pd

from adperf.schema import COHORT_ROAS, COHORT_ROAS_SEGMENTS
from adperf.transform import metrics
from adperf.transform.attribution import build_user_map
from adperf.vocabulary import INSTALL_BUCKETS

AGES: tuple[int, ...] = (0, 3, 7, 14, 30)
# A segment the MMP did not fill in (no country code, no OS) is keyed by this value.
UNKNOWN = "unknown"

COHORT = "cohort_date"
CAMPAIGN_KEY: list[str] = ["platform", "campaign_id"]
SEGMENT_COLUMNS: list[str] = ["country", "device_os"]
_COUNTS: list[str] = ["users", "installs", "payers", "revenue_micros", "spend_micros"]
# The output columns, as declared once in adperf.schema (and checked when written).
COHORT_COLUMNS: list[str] = COHORT_ROAS.columns
SEGMENT_COHORT_COLUMNS: list[str] = COHORT_ROAS_SEGMENTS.columns


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
    `segments`, oldest cohort first, then by key, each key's ages in order.

    All cohorts at once: one user map, one join of payments to the cohorts' users with the age
    of each payment, and one pass adding them up per (cell, age bucket) then cumulating over
    the ages. (It was one pass of merges and groupbys per cohort and per age: 31 cohorts x 5
    ages, most of a warm day's 2 minutes in pandas' per-call overhead on a small world.)
    """
    if not ages or any(a < 0 for a in ages) or len(set(ages)) != len(ages):
        raise ValueError(f"cohort ages must be distinct and >= 0, got {ages}")
    window = max(ages) if window_days is None else window_days
    if window < 0:
        raise ValueError(f"the cohort window must be >= 0 days, got {window_days}")
    report = dt.date.fromisoformat(day)
    cohorts = [(report - dt.timedelta(days=n)).isoformat() for n in range(window, -1, -1)]
    # A cohort younger than the youngest age has no cell (and so no row at all).
    cohorts = [c for c in cohorts if (report - _date(c)).days >= min(ages)]
    if not cohorts:
        return pd.DataFrame()
    key = [COHORT, *CAMPAIGN_KEY, *segments]

    day_installs = installs.loc[installs["date"].isin(cohorts)]
    day_installs = _with_segment_keys(_with_organic_key(day_installs))
    day_installs[COHORT] = day_installs["date"]
    users = _cohort_users(day_installs, segments)

    installs_by = day_installs.groupby(key, dropna=False).agg(
        installs=(COHORT, "size"), installs_name=("campaign_name", "first")
    )
    users_by = users.groupby(key, dropna=False).agg(users=("_pid", "size"))
    cohort_spend = spend.loc[spend["date"].isin(cohorts)].rename(columns={"date": COHORT})
    spend_by = cohort_spend.groupby([COHORT, *CAMPAIGN_KEY], dropna=False).agg(
        spend_micros=("spend_micros", "sum"), spend_name=("campaign_name", "first")
    )
    base = _nullable_ints(_text_keys(installs_by.reset_index()))
    base = base.merge(_nullable_ints(_text_keys(users_by.reset_index())), on=key, how="outer")
    spend_by = _nullable_ints(_text_keys(spend_by.reset_index()))
    if segments:
        base = _share_spend(base, spend_by, segments)
    else:
        # merge, not join: it matches null campaign ids (a paid install without one) as keys.
        base = base.merge(spend_by, on=key, how="outer")
    if base.empty:
        return pd.DataFrame()
    # Spend's name is the platform's current one; the MMP's is what it was at install.
    # object first: with no spend row the name column is all-NaN float64, which pandas refuses
    # to fill with strings.
    base["campaign_name"] = base["spend_name"].astype("object").fillna(base["installs_name"])
    base = base.drop(columns=["installs_name", "spend_name"])
    base = base.reset_index(drop=True)
    base["_cell"] = np.arange(len(base))

    # Each user's cell. Keys as object on both sides: a key column that is all null (a paid
    # install without campaign id, alone in the window) is float64 after a groupby, and pandas
    # refuses to merge float64 with text; as object, null matches null.
    cells = base[[*key, "_cell"]].astype({c: "object" for c in key})
    users = users.astype({c: "object" for c in key}).merge(cells, on=key, validate="many_to_one")
    reached = sorted(ages)
    revenue, payers = _paid_by_age(day, payments, users, reached, len(base))
    # Each cell at every age its cohort has reached (ages sorted, so the first n of them).
    cohort_age = base[COHORT].map({c: (report - _date(c)).days for c in cohorts})
    n = np.searchsorted(reached, cohort_age.to_numpy(dtype="int64"), side="right")
    cell = np.repeat(base["_cell"].to_numpy(), n)
    age_i = np.arange(len(cell)) - np.repeat(np.cumsum(n) - n, n)
    out = base.iloc[cell].reset_index(drop=True)
    out["age_days"] = np.asarray(reached, dtype="int64")[age_i]
    out["payers"] = payers[cell, age_i]
    out["revenue_micros"] = revenue[cell, age_i]
    out[_COUNTS] = out[_COUNTS].fillna(0).astype("int64")
    out["roas"] = metrics.roas(out["revenue_micros"], out["spend_micros"])
    out["as_of"] = day
    # Oldest cohort first, then by key, each key's ages in order.
    return out.sort_values([*key, "age_days"], kind="mergesort", na_position="last")


def _cohort_users(day_installs: pd.DataFrame, segments: list[str]) -> pd.DataFrame:
    """Each cohort's users: one row per (cohort_date, user) with the key of the user's first
    install of that day, `_pid` their user_pid and `cohort_date` the day."""
    # The first-install rule is applied within the cohort day only: a user installing twice that
    # day counts once, and every age of this cohort sees the same users whatever the window. A
    # user who installed on two days of the window is in both cohorts: the user map is built on
    # (day, user) pairs, its tie-breaks unchanged.
    pid = day_installs["user_pid"]
    known = pid.notna().to_numpy()
    pair = pd.Series(None, index=day_installs.index, dtype="object")
    pair[known] = (
        day_installs.loc[known, "date"].astype(str) + "\x1f" + pid[known].astype(str)
    ).to_numpy(dtype="object")
    keyed = day_installs.assign(_pid=pid, user_pid=pair)
    users = build_user_map(keyed, ("_pid", *segments))
    return users.rename(columns={"install_date": COHORT})[
        [COHORT, "_pid", *CAMPAIGN_KEY, *segments]
    ]


def _paid_by_age(
    day: str, payments: pd.DataFrame, users: pd.DataFrame, ages: list[int], cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Revenue and payers of each cell (`users`' `_cell`) at each of the sorted `ages`, as
    (cells x ages) int64 arrays: cumulative from the install day to cohort_date + age."""
    revenue = np.zeros((cells, len(ages)), dtype="int64")
    payers = np.zeros((cells, len(ages)), dtype="int64")
    who = users[["_pid", COHORT, "_cell"]].rename(columns={"_pid": "user_pid"})
    paid = payments[["user_pid", "date", "amount_micros"]].merge(who, on="user_pid", how="inner")
    # ISO dates compare as strings; payments before the install (a reinstall) don't count.
    paid = paid.loc[paid["date"].ge(paid[COHORT]) & paid["date"].le(day)]
    if paid.empty:
        return revenue, payers
    age = (_days(paid["date"]) - _days(paid[COHORT])).to_numpy()
    # The first reported age each payment counts in; later than the oldest age: in none.
    bucket = np.searchsorted(np.asarray(ages, dtype="int64"), age, side="left")
    inside = bucket < len(ages)
    cell = paid["_cell"].to_numpy(dtype="int64")[inside]
    bucket = bucket[inside]
    np.add.at(revenue, (cell, bucket), paid["amount_micros"].to_numpy(dtype="int64")[inside])
    # A payer from the first age any row of theirs (a refund too) counts in.
    first = (
        pd.DataFrame({"cell": cell, "user": paid["user_pid"].to_numpy()[inside], "b": bucket})
        .groupby(["cell", "user"], sort=False)["b"]
        .min()
        .reset_index()
    )
    np.add.at(payers, (first["cell"].to_numpy(), first["b"].to_numpy()), 1)
    return np.cumsum(revenue, axis=1), np.cumsum(payers, axis=1)


def _days(iso: pd.Series) -> pd.Series:
    """ISO dates as whole days since the epoch."""
    return pd.to_datetime(iso, format="%Y-%m-%d").astype("datetime64[s]").astype("int64") // 86400


def _share_spend(base: pd.DataFrame, spend_by: pd.DataFrame, segments: list[str]) -> pd.DataFrame:
    """`base` (installs and users per campaign and segment) with each campaign's spend shared
    among its segments by installs, exactly (largest remainder); a campaign with spend but no
    installs keeps it in the unknown segment."""
    group = [COHORT, *CAMPAIGN_KEY]
    rows = base.merge(spend_by, on=group, how="outer")
    for col in segments:
        rows[col] = rows[col].astype("object").fillna(UNKNOWN)
    rows["installs"] = rows["installs"].fillna(0).astype("int64")
    total_spend = rows["spend_micros"].fillna(0).astype("int64")
    campaign_installs = rows.groupby(group, dropna=False)["installs"].transform("sum")
    # Every segment of a campaign without installs (there is one, unknown) takes it all.
    weight = rows["installs"].where(campaign_installs > 0, 1)
    weights = weight.groupby([rows[c] for c in group], dropna=False).transform("sum")
    product = total_spend * weight
    share, remainder = product // weights, product % weights
    left = total_spend - share.groupby([rows[c] for c in group], dropna=False).transform("sum")
    order = rows.assign(_rem=remainder).sort_values(
        [*group, "_rem", *segments],
        ascending=[True, True, True, False, True, True],
        kind="mergesort",
        na_position="last",
    )
    rank = order.groupby(group, dropna=False).cumcount().reindex(rows.index)
    rows["spend_micros"] = share + (rank < left).astype("int64")
    return rows


def _date(iso: str) -> dt.date:
    return dt.date.fromisoformat(iso)


def _text_keys(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its all-null float64 columns as object."""
    # A group key that is null in every row (a cohort day's paid installs all without campaign
    # id) comes out of a groupby as float64, and pandas refuses to merge float64 with text keys
    # (the spend's campaign ids): "You are trying to merge on float64 and str columns".
    nulls = [c for c in df.columns if df[c].dtype == "float64" and df[c].isna().all()]
    return df.astype({c: "object" for c in nulls})


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
