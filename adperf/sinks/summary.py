"""The report's headline numbers of one day and their changes, shared by Slack and HTML.

Amounts are floats in the report currency (display only: the warehouse keeps exact decimals).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from adperf.transform import metrics
from adperf.vocabulary import INSTALL_BUCKETS, ORGANIC, RESTRICTED

# ISO 4217 currencies without minor units: "1,234,567 KRW", not "1,234,567.00 KRW".
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"}
    | {"RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"}
)

# (key, label, kind): kind says how a value is shown and how its change is measured.
TOTALS: tuple[tuple[str, str, str], ...] = (
    ("spend", "Spend", "money"),
    ("installs", "Installs (paid)", "count"),
    ("cpi", "CPI", "money"),
    ("revenue", "Revenue (paid cohorts)", "money"),
    ("roas_d0", "ROAS D0", "ratio"),
    ("roas_d7", "ROAS D7", "ratio"),
    ("proas", "pROAS", "ratio"),
)


@dataclass(frozen=True)
class TotalRow:
    """One headline number: its value and its change vs the day before and a week before."""

    key: str
    label: str
    value: str
    day_change: str
    week_change: str


def build_totals(campaigns: pd.DataFrame, cohorts: pd.DataFrame, day: str) -> dict[str, Any]:
    """Paid-campaign totals of `day` (campaign_daily rows) and its cohort ROAS D0 / D7.

    Organic and restricted installs are no campaign's (no spend of theirs is known): they are
    counted beside the paid totals, never in them.
    """
    paid = campaigns[~campaigns["platform"].isin(INSTALL_BUCKETS)] if len(campaigns) else campaigns
    spend = _sum(paid, "spend")
    installs = _sum(paid, "installs")
    revenue = _sum(paid, "revenue")
    # No LTV prediction at all (e.g. the model did not converge) is n/a, not a pROAS of 0%.
    has_pltv = len(paid) > 0 and bool(pd.to_numeric(paid["pltv"], errors="coerce").notna().any())
    pltv = _sum(paid, "pltv")
    return {
        "spend": spend if len(paid) else None,
        "installs": installs if len(paid) else None,
        "organic_installs": _sum(campaigns[campaigns["platform"] == ORGANIC], "installs")
        if len(campaigns)
        else 0.0,
        "restricted_installs": _sum(campaigns[campaigns["platform"] == RESTRICTED], "installs")
        if len(campaigns)
        else 0.0,
        "all_installs": _sum(campaigns, "installs") if len(campaigns) else 0.0,
        "cpi": metrics.cpi_of(spend, installs),
        "revenue": revenue if len(paid) else None,
        "roas": metrics.roas_of(revenue, spend),
        "roas_d0": _cohort_roas(cohorts, day, 0),
        "roas_d7": _cohort_roas(cohorts, day, 7),
        "proas": metrics.proas_of(pltv, spend) if has_pltv else None,
    }


def restricted_note(
    totals: dict[str, Any], reconciliation: dict[str, Any], currency: str
) -> str | None:
    """One line on the day's installs and revenue no campaign can own because their network
    withholds user-level data; None when there are neither."""
    installs = num(totals.get("restricted_installs")) or 0.0
    revenue = num(reconciliation.get(RESTRICTED)) or 0.0
    if not installs and not revenue:
        return None
    everyone = num(totals.get("all_installs")) or 0.0
    payments = num(reconciliation.get("total_payments")) or 0.0
    install_share = f"{installs / everyone:.1%}" if everyone else "n/a"
    revenue_share = f"{revenue / payments:.1%}" if payments else "n/a"
    return (
        f"{int(installs):,} installs ({install_share}) from networks that withhold user-level "
        f"data (media source '{RESTRICTED}'): their revenue cannot be tied to a campaign "
        f"({money(revenue, currency)}, {revenue_share} of payments)"
    )


def unattributed_note(reconciliation: dict[str, Any], currency: str) -> str:
    """The day's revenue of users with no install on record, as a share of payments."""
    total = num(reconciliation.get("total_payments")) or 0.0
    unattributed = num(reconciliation.get("unattributed")) or 0.0
    share = f"{unattributed / total:.1%}" if total else "n/a"
    return (
        f"Unattributed revenue: {share} of payments ({money(unattributed, currency)} of "
        f"{money(total, currency)})"
    )


def report_notes(
    notes: list[str], campaigns: pd.DataFrame, reconciliation: dict[str, Any], currency: str
) -> list[str]:
    """The data-quality notes a report page shows: `notes` (build_quality_notes), the
    unattributed share and, when there is any, the restricted installs' line."""
    totals = build_totals(campaigns, pd.DataFrame(), "1970-01-01")
    restricted = restricted_note(totals, reconciliation, currency)
    return [
        *notes,
        unattributed_note(reconciliation, currency),
        *([restricted] if restricted else []),
    ]


def build_total_rows(
    current: dict[str, Any],
    day_before: dict[str, Any] | None,
    week_before: dict[str, Any] | None,
    currency: str,
) -> list[TotalRow]:
    """The headline rows, each with its change; a missing comparison day shows 'n/a'."""
    rows = []
    for key, label, kind in TOTALS:
        value = current.get(key)
        shown = (
            money(value, currency)
            if kind == "money"
            else ratio(value)
            if kind == "ratio"
            else count(value)
        )
        rows.append(
            TotalRow(
                key=key,
                label=label,
                value=shown,
                day_change=change(value, None if day_before is None else day_before.get(key), kind),
                week_change=change(
                    value, None if week_before is None else week_before.get(key), kind
                ),
            )
        )
    return rows


def change(value: Any, before: Any, kind: str) -> str:
    """'+12%' for amounts and counts, '+5 pp' for ratios; 'n/a' when either side is missing."""
    now, then = num(value), num(before)
    if now is None or then is None:
        return "n/a"
    if kind == "ratio":
        # A ratio's relative change (ROAS 10% → 20% is "+100%") misleads: points say it plainly.
        points = (now - then) * 100
        return f"{_signed(points, 0)} pp"
    if then == 0:
        return "new" if now else "±0%"
    return f"{_signed((now - then) / abs(then) * 100, 0)}%"


# The report's d/d and w/w columns: the day before and the same weekday a week before.
COMPARISON_LAGS = (1, 7)


def comparison_days(day: str) -> tuple[str, str]:
    """The day before and the same weekday a week before."""
    d = dt.date.fromisoformat(day)
    day_before, week_before = (d - dt.timedelta(days=n) for n in COMPARISON_LAGS)
    return day_before.isoformat(), week_before.isoformat()


def num(value: Any) -> float | None:
    """A number, or None when missing/NaN (an undefined ratio, not zero)."""
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def money(amount: Any, currency: str) -> str:
    """'1,234.50 USD' ('1,234 KRW' for currencies without minor units); 'n/a' when missing."""
    number = num(amount)
    if number is None:
        return "n/a"
    decimals = 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2
    return f"{number:,.{decimals}f} {currency}"


def ratio(value: Any) -> str:
    """A ROAS-style ratio as a percentage (1.52 -> 152%)."""
    number = num(value)
    return "n/a" if number is None else f"{number:.0%}"


def odds(p_above: Any, p_below: Any) -> str:
    """An action's risk: 'P(> scale) 93% · P(< pause) 1%'; '' without probabilities."""
    above, below = num(p_above), num(p_below)
    if above is None or below is None:
        return ""
    return f"P(> scale) {above:.0%} · P(< pause) {below:.0%}"


def count(value: Any) -> str:
    number = num(value)
    return "n/a" if number is None else f"{int(number):,}"


def _signed(x: float, decimals: int) -> str:
    text = f"{x:+,.{decimals}f}"
    # "-0" and "+0" read as a change; a rounded zero is none.
    return "±0" if text.lstrip("+-").strip("0.,") == "" else text.replace("-", "−")


def _sum(df: pd.DataFrame, column: str) -> float:
    if not len(df) or column not in df.columns:
        return 0.0
    return float(pd.to_numeric(df[column], errors="coerce").sum(skipna=True))


def cohort_cells(cohorts: pd.DataFrame) -> pd.DataFrame:
    """cohort_roas rows (a day's triangle, warehouse history, or both) with each cell (cohort,
    campaign, age) once, from the latest report day that computed it.

    A cell's revenue is complete from the day its cohort reaches the age on, so a later day's
    row differs only by restated spend: the latest is the best known.
    """
    key = ["cohort_date", "platform", "campaign_id", "age_days"]
    if not len(cohorts):
        # An empty frame may lack columns (no rows read): give it the ones callers filter on.
        return cohorts.reindex(columns=list(dict.fromkeys([*cohorts.columns, *key, "as_of"])))
    known = cohorts.assign(
        cohort_date=cohorts["cohort_date"].astype(str),
        as_of=cohorts["as_of"].astype(str),
        age_days=cohorts["age_days"].astype("int64"),
    )
    known = known.sort_values("as_of", kind="mergesort")
    return known.drop_duplicates(key, keep="last").reset_index(drop=True)


def _cohort_roas(cohorts: pd.DataFrame, day: str, age: int) -> float | None:
    """Paid ROAS at `age` of the cohort installed `age` days before `day` (all paid campaigns
    pooled)."""
    cells = cohort_cells(cohorts)
    if not len(cells):
        return None
    cohort = (dt.date.fromisoformat(day) - dt.timedelta(days=age)).isoformat()
    rows = cells[
        (cells["cohort_date"] == cohort)
        & (cells["age_days"] == age)
        & ~cells["platform"].isin(INSTALL_BUCKETS)
    ]
    spend = _sum(rows, "spend")
    return metrics.roas_of(_sum(rows, "revenue"), spend)
