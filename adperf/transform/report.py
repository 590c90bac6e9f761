"""The daily campaign report and the actions recommended from it.

Pure functions: DataFrames in, DataFrames out; the report day and the rules are arguments.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import pandas as pd

from adperf.schema import MICROS
from adperf.transform.attribution import ORGANIC, UNATTRIBUTED, require_day

CAMPAIGN_KEY: list[str] = ["platform", "campaign_id"]
REPORT_COLUMNS: list[str] = [
    "date",
    "platform",
    "campaign_id",
    "campaign_name",
    "spend_micros",
    "impressions",
    "clicks",
    "installs",
    "cpi_micros",
    "payers",
    "revenue_micros",
    "roas",
    "assisted_revenue_micros",
    "pltv_micros",
    "proas",
]
ACTION_COLUMNS: list[str] = [
    "date",
    "platform",
    "level",
    "object_id",
    "object_name",
    "action",
    "reason",
    "roas",
    "proas",
    "spend_micros",
]
_ZERO_IF_ABSENT: list[str] = [
    "spend_micros",
    "impressions",
    "clicks",
    "installs",
    "payers",
    "revenue_micros",
    "assisted_revenue_micros",
]
_CURRENCY_SYMBOLS: dict[str, str] = {"USD": "$", "EUR": "€", "GBP": "£"}


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
    # Organic installs come without a campaign: they are the 'organic' campaign, as in attribution.
    organic = keyed["platform"].eq(ORGANIC)
    keyed.loc[organic, ["campaign_id", "campaign_name"]] = ORGANIC
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
        _one_per_campaign(pltv, ["pltv_micros"], day, "pltv"), on=CAMPAIGN_KEY, how="left"
    )

    rows[_ZERO_IF_ABSENT] = rows[_ZERO_IF_ABSENT].fillna(0).astype("int64")
    rows["pltv_micros"] = rows["pltv_micros"].astype("Int64")
    rows["campaign_name"] = (
        rows["spend_name"].fillna(rows["installs_name"]).fillna(rows["attribution_name"])
    )
    rows["cpi_micros"] = _rounded_div(rows["spend_micros"], rows["installs"])
    # Organic installs cost nothing by definition: a CPI of 0 would read as a free campaign.
    rows.loc[rows["platform"] == ORGANIC, "cpi_micros"] = pd.NA
    rows["roas"] = _ratio(rows["revenue_micros"], rows["spend_micros"])
    rows["proas"] = _ratio(rows["pltv_micros"], rows["spend_micros"])
    rows["date"] = day
    rows = rows.sort_values(CAMPAIGN_KEY, kind="mergesort", na_position="last")
    return rows[REPORT_COLUMNS].reset_index(drop=True)


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


def _rounded_div(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator rounded half up, exactly in integers; <NA> where it is 0."""
    num = numerator.astype("int64")
    den = denominator.astype("int64")
    safe = den.where(den != 0, 1)
    # Integer arithmetic: floats would round some half-micro CPIs the wrong way.
    rounded = (2 * num + safe) // (2 * safe)
    return rounded.astype("Int64").where(den != 0, pd.NA)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator as nullable Float64, <NA> where either is absent or den is 0."""
    num = numerator.astype("Float64")
    den = denominator.astype("Float64")
    return (num / den).where(den != 0, pd.NA)


@dataclass(frozen=True)
class Rules:
    """Thresholds turning a campaign's ROAS/pROAS into scale, pause or hold ([rules] section)."""

    target_roas: float = 1.0
    scale_roas: float = 1.3
    pause_roas: float = 0.5
    min_spend_micros: int = 100_000_000
    min_installs: int = 50
    min_age_days: int = 7


def build_actions(
    day: str,
    campaign_report: pd.DataFrame,
    first_spend_dates: dict[tuple[str, str], str],
    rules: Rules,
    currency: str = "USD",
) -> pd.DataFrame:
    """One recommended action (scale, pause, hold) with its reason per paid campaign of `day`."""
    require_day(campaign_report, day, "campaign report")
    paid = campaign_report.loc[campaign_report["platform"].ne(ORGANIC)]
    report_day = dt.date.fromisoformat(day)
    records: list[dict[str, object]] = []
    for row in paid.to_dict("records"):
        platform = str(row["platform"])
        campaign_id = str(row["campaign_id"])
        first = first_spend_dates.get((platform, campaign_id))
        # No first spend date on record means no history: as new as it gets.
        age = (report_day - dt.date.fromisoformat(first)).days if first is not None else 0
        roas = _optional_float(row["roas"])
        proas = _optional_float(row["proas"])
        spend_micros = int(row["spend_micros"])
        action, reason = _decide(
            spend_micros, int(row["installs"]), age, roas, proas, rules, currency
        )
        records.append(
            {
                "date": day,
                "platform": platform,
                "level": "campaign",
                "object_id": campaign_id,
                "object_name": None if pd.isna(row["campaign_name"]) else str(row["campaign_name"]),
                "action": action,
                "reason": reason,
                "roas": roas,
                "proas": proas,
                "spend_micros": spend_micros,
            }
        )
    out = pd.DataFrame.from_records(records, columns=ACTION_COLUMNS)
    out = out.astype(
        {
            "date": "str",
            "platform": "str",
            "level": "str",
            "object_id": "str",
            "object_name": "str",
            "action": "str",
            "reason": "str",
            "roas": "Float64",
            "proas": "Float64",
            "spend_micros": "int64",
        }
    )
    out = out.sort_values(["platform", "object_id"], kind="mergesort")
    return out.reset_index(drop=True)


def _decide(
    spend_micros: int,
    installs: int,
    age_days: int,
    roas: float | None,
    proas: float | None,
    rules: Rules,
    currency: str,
) -> tuple[str, str]:
    """(action, one-line reason) for one campaign's numbers under `rules`."""
    shortfalls = []
    if spend_micros < rules.min_spend_micros:
        shortfalls.append(
            f"only {_money(spend_micros, currency)} spend "
            f"(< {_money(rules.min_spend_micros, currency)} minimum)"
        )
    if installs < rules.min_installs:
        shortfalls.append(f"only {installs:,} installs (< {rules.min_installs:,} minimum)")
    if age_days < rules.min_age_days:
        shortfalls.append(
            f"only {age_days} days since first spend (< {rules.min_age_days} minimum)"
        )
    if shortfalls:
        return "hold", "; ".join(shortfalls)

    # pROAS sees the cohort's whole predicted life; today's ROAS only its first days.
    label, evidence = ("pROAS", proas) if proas is not None else ("ROAS", roas)
    volume = f"on {_money(spend_micros, currency)} spend, {installs:,} installs"
    if evidence is None:
        return "hold", f"no ROAS or pROAS to judge {volume}"
    if evidence >= rules.scale_roas:
        return (
            "scale",
            f"{label} {evidence:.2f} over scale threshold {rules.scale_roas:.2f} {volume}",
        )
    if evidence < rules.pause_roas:
        return (
            "pause",
            f"{label} {evidence:.2f} under pause threshold {rules.pause_roas:.2f} {volume}",
        )
    side = "at or over" if evidence >= rules.target_roas else "under"
    return "hold", (
        f"{label} {evidence:.2f} {side} target {rules.target_roas:.2f}, between pause "
        f"{rules.pause_roas:.2f} and scale {rules.scale_roas:.2f} thresholds {volume}"
    )


def _optional_float(value: float | None) -> float | None:
    """A report ratio as float, or None where it is <NA> (or NaN from a float column)."""
    if value is None or pd.isna(value):
        return None
    return float(value)


def _money(micros: int, currency: str) -> str:
    """Micros as '$4,200.00' (or '4,200.00 SEK' for currencies without a symbol here)."""
    # Decimal, not float: the display must not round a half cent the float way.
    amount = f"{Decimal(micros) / Decimal(MICROS):,.2f}"
    symbol = _CURRENCY_SYMBOLS.get(currency)
    if symbol is None:
        return f"{amount} {currency}"
    return f"-{symbol}{amount[1:]}" if amount.startswith("-") else f"{symbol}{amount}"
