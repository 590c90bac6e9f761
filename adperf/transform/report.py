"""The daily campaign report, and the actions recommended from it (the rule: `decide`).

Pure functions: DataFrames in, DataFrames out; the report day and the rules are arguments.
"""

from __future__ import annotations

import pandas as pd

from adperf.schema import CAMPAIGN_REPORT
from adperf.transform import metrics
from adperf.transform.attribution import require_day
from adperf.transform.decide import Rules, build_actions, build_window_evidence
from adperf.transform.response import BudgetResponse
from adperf.vocabulary import INSTALL_BUCKETS, ORGANIC, UNATTRIBUTED

CAMPAIGN_KEY: list[str] = ["platform", "campaign_id"]
REPORT_COLUMNS: list[str] = CAMPAIGN_REPORT.columns  # declared in adperf.schema
ADSET_KEY: list[str] = ["platform", "campaign_id", "adset_id"]
ADSET_REPORT_COLUMNS: list[str] = [
    "date",
    "platform",
    "campaign_id",
    "adset_id",
    "adset_name",
    "spend_micros",
    "installs",
    "revenue_micros",
    "roas",
    "pltv_micros",
    "proas",
    "proas_low",
    "proas_high",
]
_PLTV_VALUES: list[str] = ["pltv_micros", "pltv_low_micros", "pltv_high_micros"]
_ZERO_IF_ABSENT: list[str] = [
    "spend_micros",
    "impressions",
    "clicks",
    "installs",
    "payers",
    "revenue_micros",
    "assisted_revenue_micros",
]


def build_campaign_report(
    day: str,
    spend: pd.DataFrame,
    installs: pd.DataFrame,
    attribution: pd.DataFrame,
    contribution: pd.DataFrame,
    pltv: pd.DataFrame,
) -> pd.DataFrame:
    """One row per (platform, campaign_id) of `day`: spend, installs, CPI, revenue, ROAS, pROAS."""
    for frame, what in (
        (spend, "spend"),
        (installs, "installs"),
        (attribution, "attribution"),
        (contribution, "contribution"),
        (pltv, "pltv"),
    ):
        require_day(frame, day, what)

    spend_by = spend.groupby(CAMPAIGN_KEY, dropna=False, sort=False).agg(
        spend_micros=("spend_micros", "sum"),
        impressions=("impressions", "sum"),
        clicks=("clicks", "sum"),
        spend_name=("campaign_name", "first"),
    )
    keyed = installs.copy()
    # Organic and restricted installs come without a campaign: each bucket is one 'campaign'
    # named like itself, as in attribution.
    bucket = keyed["platform"].isin(INSTALL_BUCKETS)
    keyed.loc[bucket, "campaign_id"] = keyed.loc[bucket, "platform"]
    keyed.loc[bucket, "campaign_name"] = keyed.loc[bucket, "platform"]
    installs_by = keyed.groupby(CAMPAIGN_KEY, dropna=False, sort=False).agg(
        installs=("date", "size"), installs_name=("campaign_name", "first")
    )
    # 'unattributed' is the revenue of users with no install on record: not a campaign.
    campaigns = attribution.loc[attribution["platform"].ne(UNATTRIBUTED)]
    revenue_by = campaigns.groupby(CAMPAIGN_KEY, dropna=False, sort=False).agg(
        payers=("payers", "sum"),
        revenue_micros=("revenue_micros", "sum"),
        attribution_name=("campaign_name", "first"),
    )

    rows = _nullable_ints(spend_by.reset_index())
    for part in (installs_by, revenue_by):
        # merge, not join: it matches null campaign ids (a paid install without one) as keys.
        rows = rows.merge(_nullable_ints(part.reset_index()), on=CAMPAIGN_KEY, how="outer")
    rows = rows.merge(
        _one_per_campaign(contribution, ["assisted_revenue_micros"], day, "contribution"),
        on=CAMPAIGN_KEY,
        how="left",
    )
    rows = rows.merge(
        _one_per_campaign(_pltv_level(pltv, "campaign"), _PLTV_VALUES, day, "pltv"),
        on=CAMPAIGN_KEY,
        how="left",
    )

    rows[_ZERO_IF_ABSENT] = rows[_ZERO_IF_ABSENT].fillna(0).astype("int64")
    rows[_PLTV_VALUES] = rows[_PLTV_VALUES].astype("Int64")
    rows["campaign_name"] = (
        rows["spend_name"].fillna(rows["installs_name"]).fillna(rows["attribution_name"])
    )
    rows["cpi_micros"] = metrics.cpi_micros(rows["spend_micros"], rows["installs"])
    # Organic installs cost nothing by definition, and restricted ones' cost is in no campaign
    # we can see: a CPI of 0 would read as a free campaign.
    rows.loc[rows["platform"].isin(INSTALL_BUCKETS), "cpi_micros"] = pd.NA
    rows["roas"] = metrics.roas(rows["revenue_micros"], rows["spend_micros"])
    rows["proas"] = metrics.proas(rows["pltv_micros"], rows["spend_micros"])
    rows["proas_low"] = metrics.proas(rows["pltv_low_micros"], rows["spend_micros"])
    rows["proas_high"] = metrics.proas(rows["pltv_high_micros"], rows["spend_micros"])
    rows["date"] = day
    rows = rows.sort_values(CAMPAIGN_KEY, kind="mergesort", na_position="last")
    return rows[REPORT_COLUMNS].reset_index(drop=True)


def _pltv_level(pltv: pd.DataFrame, level: str) -> pd.DataFrame:
    """The pLTV rows of one level, with the interval columns (absent in older partitions)."""
    out = pltv if "level" not in pltv.columns else pltv.loc[pltv["level"] == level]
    out = out.copy()
    for col in _PLTV_VALUES:
        if col not in out.columns:
            out[col] = pd.Series(pd.NA, index=out.index, dtype="Int64")
    if "adset_id" not in out.columns:
        out["adset_id"] = None
    return out


def build_adset_report(
    day: str,
    spend: pd.DataFrame,
    installs: pd.DataFrame,
    attribution: pd.DataFrame,
    pltv: pd.DataFrame,
) -> pd.DataFrame:
    """One row per paid (platform, campaign_id, adset_id) of `day`: spend, installs, ROAS, pROAS.

    The adset's pROAS comes from its own installs' pLTV (shrunk toward its campaign's).
    """
    for frame, what in ((spend, "spend"), (installs, "installs"), (attribution, "attribution")):
        require_day(frame, day, what)
    paid = spend.loc[spend["platform"].ne(ORGANIC)]
    spend_by = paid.groupby(ADSET_KEY, dropna=False, sort=False).agg(
        spend_micros=("spend_micros", "sum"), spend_name=("adset_name", "first")
    )
    mmp = installs.loc[
        ~installs["platform"].isin(INSTALL_BUCKETS) & installs["campaign_id"].notna()
    ]
    installs_by = mmp.groupby(ADSET_KEY, dropna=False, sort=False).agg(
        installs=("date", "size"), installs_name=("adset_name", "first")
    )
    attributed = attribution.loc[~attribution["platform"].isin([*INSTALL_BUCKETS, UNATTRIBUTED])]
    revenue_by = attributed.groupby(ADSET_KEY, dropna=False, sort=False).agg(
        revenue_micros=("revenue_micros", "sum")
    )
    rows = _nullable_ints(spend_by.reset_index())
    for part in (installs_by, revenue_by):
        rows = rows.merge(_nullable_ints(part.reset_index()), on=ADSET_KEY, how="outer")
    values = _pltv_level(pltv, "adset")
    rows = rows.merge(_nullable_ints(values[[*ADSET_KEY, *_PLTV_VALUES]]), on=ADSET_KEY, how="left")
    rows = rows.loc[rows["adset_id"].notna()]
    zero = ["spend_micros", "installs", "revenue_micros"]
    rows[zero] = rows[zero].fillna(0).astype("int64")
    rows[_PLTV_VALUES] = rows[_PLTV_VALUES].astype("Int64")
    rows["adset_name"] = rows["spend_name"].fillna(rows["installs_name"])
    rows["roas"] = metrics.roas(rows["revenue_micros"], rows["spend_micros"])
    rows["proas"] = metrics.proas(rows["pltv_micros"], rows["spend_micros"])
    rows["proas_low"] = metrics.proas(rows["pltv_low_micros"], rows["spend_micros"])
    rows["proas_high"] = metrics.proas(rows["pltv_high_micros"], rows["spend_micros"])
    rows["date"] = day
    rows = rows.sort_values(ADSET_KEY, kind="mergesort", na_position="last")
    return rows[ADSET_REPORT_COLUMNS].reset_index(drop=True)


def _one_per_campaign(df: pd.DataFrame, values: list[str], day: str, what: str) -> pd.DataFrame:
    """`df`'s key and value columns, checked to hold at most one row per campaign."""
    if df.duplicated(CAMPAIGN_KEY).any():
        raise ValueError(
            f"{what} for {day}: more than one row per (platform, campaign_id). "
            f"Fix: aggregate {what} to campaign level before the report"
        )
    return _nullable_ints(df[[*CAMPAIGN_KEY, *values]])


def _nullable_ints(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with its integer columns as nullable Int64."""
    # An outer/left merge turns int64 into float64 where a side is missing, and float64 is not
    # exact beyond 2**53 micros; Int64 stays exact and fills with <NA>.
    ints = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c])]
    return df.astype({c: "Int64" for c in ints})


def build_report_day(
    day: str,
    *,
    spend_window: pd.DataFrame,
    installs: pd.DataFrame,
    attribution: pd.DataFrame,
    contribution: pd.DataFrame,
    pltv: pd.DataFrame,
    pltv_window: pd.DataFrame,
    pltv_draws: pd.DataFrame,
    rules: Rules,
    currency: str,
    pooled: bool = True,
    response: BudgetResponse | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The report day's campaign rows and its recommended actions (CampaignReport).

    `spend_window` is ad-level spend of the days to `day` (SpendLatest: at least the
    `rules.window_days`); the day's own rows make the report. `pooled`: decide on the window's
    pooled evidence ([rules] pooled; False: the report day's row alone, the rule before issue 18).
    `response`: how CPI answers a budget change, from the follow-ups (build_budget_response).
    """
    from adperf.transform.spend import first_spend_dates

    spend_day = spend_window[spend_window["date"] == day]
    report = build_campaign_report(day, spend_day, installs, attribution, contribution, pltv)
    window = build_window_evidence(
        day, rules.window_days, spend_window, pltv_window, pltv_draws, rules.cpi_days
    )
    actions = build_actions(
        day,
        report,
        first_spend_dates(spend_window),
        rules,
        currency=currency,
        adset_report=build_adset_report(day, spend_day, installs, attribution, pltv),
        adset_first_spend_dates=first_spend_dates(spend_window, "adset_id"),
        window=window if pooled else None,
        response=response,
    )
    return report, actions
