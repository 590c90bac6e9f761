"""The watch: what changed beyond normal day-to-day noise, with the figure and its baseline.

Four checks of one report day (issue 19):

- **campaign metrics**: each paid campaign's CPI, ROAS D0 and installs against the same
  weekday's trailing median and spread (MAD) of the last `baseline_weeks` weeks. A robust z
  (distance from the median in spreads) flags a change; the spread is never taken below the
  sampling noise of the counts behind the figure (Poisson), so a quiet run of weeks does not
  make an ordinary day look extreme; and the change must also be material (`min_change`), on
  a campaign with volume (`min_installs`, `min_spend`).
- **budget pacing**: month-to-date spend per platform or campaign against a monthly plan
  ([budgets]), expected pro rata by days; ahead or behind by more than `pace_tolerance`.
- **cross-source installs**: installs the platform reports against those the MMP attributes, per
  campaign (`source_discrepancy`, every campaign every day; flagged beyond `max_install_gap`).
- **unowned shares**: the share of restricted installs (of paid installs), and of restricted and
  unattributed revenue (of all payments), rising above their trailing median.

Pure: frames and settings in, frames out; amounts in report-currency units (floats: the watch
compares, it does not account).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from adperf.schema import SOURCE_DISCREPANCY
from adperf.transform import metrics
from adperf.vocabulary import INSTALL_BUCKETS, ORGANIC, RESTRICTED

# The checks in the order the report lists them.
CHECKS: tuple[str, ...] = (
    "cpi",
    "roas_d0",
    "installs",
    "source_gap",
    "pacing",
    "restricted_install_share",
    "restricted_revenue_share",
    "unattributed_revenue_share",
)
# 1.4826 * MAD estimates a normal distribution's standard deviation.
MAD_TO_SD = 1.4826

WATCH_COLUMNS: list[str] = [
    "date",
    "check",
    "platform",
    "campaign_id",
    "campaign_name",
    "value",
    "baseline",
    "spread",
    "z",
    "change",
    "message",
]
DISCREPANCY_COLUMNS: list[str] = SOURCE_DISCREPANCY.columns  # declared in adperf.schema
# The columns `campaigns` (the day and its history) holds for the metric checks.
HISTORY_COLUMNS: list[str] = [
    "date",
    "platform",
    "campaign_id",
    "campaign_name",
    "spend",
    "installs",
    "revenue_d0",
    "payers_d0",
]
_ZERO_DECIMALS = frozenset({"KRW", "JPY", "VND", "CLP", "ISK", "TWD", "HUF"})


@dataclass(frozen=True)
class WatchSettings:
    """[watch] thresholds (tasks.config.watch documents each)."""

    baseline_weeks: int = 8
    min_baseline_weeks: int = 4
    z: float = 3.5
    min_change: float = 0.4
    min_installs: int = 20
    min_spend: float = 50.0
    min_payers: float = 5.0
    overdispersion: float = 0.15
    max_install_gap: float = 0.6
    min_gap_installs: int = 50
    pace_tolerance: float = 0.2
    pace_min_days: int = 5
    share_days: int = 28
    share_rise: float = 0.05


@dataclass(frozen=True)
class BudgetPlan:
    """[budgets]: monthly budgets in report currency per platform and per (platform, campaign)."""

    platforms: dict[str, float] = field(default_factory=dict)
    campaigns: dict[tuple[str, str], float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.platforms or self.campaigns)


# ---------------------------------------------------------------- the report day's watch


def build_watch(
    day: str,
    *,
    campaigns: pd.DataFrame,
    reconciliation: pd.DataFrame,
    discrepancy: pd.DataFrame,
    pacing: pd.DataFrame,
    settings: WatchSettings,
    currency: str,
) -> pd.DataFrame:
    """Every watch finding of `day`, most severe first within each check (WATCH_COLUMNS).

    `campaigns`: HISTORY_COLUMNS rows of the day and the days before (paid campaigns and the
    install buckets); `reconciliation`: revenue_reconciliation rows of the day and before;
    `discrepancy`: `build_source_discrepancy` of the day; `pacing`: `build_pacing` of the day.
    """
    found = pd.DataFrame(
        [
            *_metric_findings(day, campaigns, settings, currency),
            *_pacing_findings(day, pacing, settings, currency),
            *_gap_findings(discrepancy),
            *_share_findings(day, campaigns, reconciliation, settings),
        ],
        columns=WATCH_COLUMNS,
    )
    severity = pd.to_numeric(found["change"], errors="coerce").abs().fillna(0.0)
    rank = found["check"].map({c: i for i, c in enumerate(CHECKS)})
    order = pd.DataFrame({"rank": rank, "severity": -severity}).sort_values(
        ["rank", "severity"], kind="stable"
    )
    return found.loc[order.index].reset_index(drop=True)


# ---------------------------------------------------------------- campaign metrics


def _metric_findings(
    day: str, campaigns: pd.DataFrame, s: WatchSettings, currency: str
) -> Iterable[dict[str, Any]]:
    if not len(campaigns):
        return []
    rows = campaigns[~campaigns["platform"].isin(INSTALL_BUCKETS)].copy()
    rows["date"] = rows["date"].astype(str)
    baseline_days = _same_weekdays(day, s.baseline_weeks)
    today = rows[rows["date"] == day]
    past = rows[rows["date"].isin(baseline_days)]
    out: list[dict[str, Any]] = []
    weekday = dt.date.fromisoformat(day).strftime("%A")
    for (platform, campaign_id), now in today.groupby(["platform", "campaign_id"], sort=True):
        r = now.iloc[0]
        before = past[(past["platform"] == platform) & (past["campaign_id"] == campaign_id)]
        # Days without delivery (paused) are not the campaign's normal: left out of the baseline.
        before = before[before["spend"].astype(float) > 0]
        if float(r["spend"]) <= 0 or len(before) < s.min_baseline_weeks:
            continue
        if float(before["installs"].astype(float).median()) < s.min_installs:
            continue
        where = dict(
            day=day,
            platform=str(platform),
            campaign_id=str(campaign_id),
            name=_name(r["campaign_name"], campaign_id),
            weekday=weekday,
            n=len(before),
        )
        out += _installs_finding(r, before, s, where)
        out += _cpi_finding(r, before, s, where, currency)
        out += _roas_d0_finding(r, before, s, where)
    return out


def _installs_finding(
    r: pd.Series, before: pd.DataFrame, s: WatchSettings, where: dict[str, Any]
) -> list[dict[str, Any]]:
    b_installs = before["installs"].astype(float)
    # Installs vary with spend beyond Poisson: sd at least sqrt(m + (overdispersion m)^2).
    m = float(b_installs.median())
    floor = math.sqrt(m + (s.overdispersion * m) ** 2)
    return _check("installs", float(r["installs"]), b_installs, floor, s, where)


def _cpi_finding(
    r: pd.Series, before: pd.DataFrame, s: WatchSettings, where: dict[str, Any], currency: str
) -> list[dict[str, Any]]:
    spend, installs = float(r["spend"]), float(r["installs"])
    b_installs = before["installs"].astype(float)
    cpi_before = metrics.ratio(before["spend"], b_installs).dropna().astype(float)
    if spend < s.min_spend or installs <= 0 or not len(cpi_before):
        return []
    # Given the day's spend, its installs at the usual CPI are Poisson(spend / CPI): the CPI's
    # z is taken no further than that count's (a CPI over few installs is heavy-tailed).
    expected = spend / float(cpi_before.median())
    count_z = (expected - installs) / math.sqrt(expected)
    cpi = metrics.cpi_of(spend, installs) or 0.0  # installs > 0 here
    return _check("cpi", cpi, cpi_before, 0.0, s, where, currency, count_z)


def _roas_d0_finding(
    r: pd.Series, before: pd.DataFrame, s: WatchSettings, where: dict[str, Any]
) -> list[dict[str, Any]]:
    spend = float(r["spend"])
    if spend < s.min_spend or "revenue_d0" not in before.columns or pd.isna(r.get("revenue_d0")):
        return []
    payers = float(pd.to_numeric(before["payers_d0"], errors="coerce").median())
    # ROAS D0 over a few payers moves by a whole purchase: there is no normal to be beyond.
    if not payers >= s.min_payers:
        return []
    roas_before = metrics.roas(before["revenue_d0"], before["spend"]).dropna().astype(float)
    # A sum of Poisson(payers) purchases of similar size: relative sd about sqrt(2 / payers).
    floor = abs(float(roas_before.median())) * math.sqrt(2.0 / max(payers, 1.0))
    roas_d0 = metrics.roas_of(float(r["revenue_d0"]), spend) or 0.0  # spend >= min_spend > 0
    return _check("roas_d0", roas_d0, roas_before, floor, s, where)


def _check(
    check: str,
    value: float,
    baseline: pd.Series,
    noise_floor: float,
    s: WatchSettings,
    where: dict[str, Any],
    currency: str = "",
    count_z: float | None = None,
) -> list[dict[str, Any]]:
    """A finding when `value` is beyond noise of `baseline` (robust z and a material change);
    `count_z`: the same change's z in the count behind it, which caps z."""
    if len(baseline) < s.min_baseline_weeks:
        return []
    med = float(baseline.median())
    spread = max(MAD_TO_SD * float((baseline - med).abs().median()), noise_floor)
    if med <= 0 or (spread <= 0 and count_z is None):
        return []
    change = value / med - 1.0
    z = (value - med) / spread if spread > 0 else math.copysign(math.inf, change)
    if count_z is not None:
        z = math.copysign(min(abs(z), abs(count_z)), z)
    if abs(z) < s.z or abs(change) < s.min_change:
        return []
    label = {"installs": "installs", "cpi": "CPI", "roas_d0": "ROAS D0"}[check]

    def show(v: float) -> str:
        if check == "cpi":
            return _money(v, currency)
        return f"{v:.0%}" if check == "roas_d0" else f"{v:,.0f}"

    plus_minus = f"{spread * 100:.0f}pp" if check == "roas_d0" else show(spread)
    message = (
        f"{where['name']} ({where['platform']}): {label} {show(value)} vs {show(med)} usual "
        f"(median of the last {where['n']} {where['weekday']}s, ±{plus_minus}): "
        f"{_pct(change)}, z " + f"{z:+.1f}".replace("-", "−")
    )
    return [
        {
            "date": where["day"],
            "check": check,
            "platform": where["platform"],
            "campaign_id": where["campaign_id"],
            "campaign_name": where["name"],
            "value": value,
            "baseline": med,
            "spread": spread,
            "z": z,
            "change": change,
            "message": message,
        }
    ]


def _same_weekdays(day: str, weeks: int) -> list[str]:
    d = dt.date.fromisoformat(day)
    return [(d - dt.timedelta(days=7 * k)).isoformat() for k in range(1, weeks + 1)]


# ---------------------------------------------------------------- budget pacing


PACING_COLUMNS: list[str] = [
    "date",
    "platform",
    "campaign_id",
    "campaign_name",
    "plan",
    "spend_mtd",
    "expected_mtd",
    "pace",
    "projected",
    "days_elapsed",
    "days_in_month",
]


def build_pacing(
    day: str, spend_mtd: pd.DataFrame, plan: BudgetPlan, since: str | None = None
) -> pd.DataFrame:
    """Month-to-date spend against each monthly budget of `plan`, as of the end of `day`.

    `spend_mtd`: spend rows (platform, campaign_id, campaign_name, spend) of the month's days to
    `day`, which cover the days from `since` on (None: the whole month; a lake or world that
    starts mid-month covers fewer). Expected = plan x days covered / days in month;
    pace = spend / expected - 1; projected = spend / days covered x days in month.
    """
    d = dt.date.fromisoformat(day)
    first_next = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    n_days = (first_next - d.replace(day=1)).days
    covered_from = max(d.replace(day=1), dt.date.fromisoformat(since or day[:8] + "01"))
    elapsed = (d - covered_from).days + 1
    rows = []
    scopes: list[tuple[str, str | None, float]] = [
        (p, None, v) for p, v in sorted(plan.platforms.items())
    ] + [(p, c, v) for (p, c), v in sorted(plan.campaigns.items())]
    for platform, campaign_id, budget in scopes:
        sel = spend_mtd["platform"] == platform if len(spend_mtd) else pd.Series(dtype=bool)
        if campaign_id is not None and len(spend_mtd):
            sel &= spend_mtd["campaign_id"].astype(str) == campaign_id
        chosen = spend_mtd[sel] if len(spend_mtd) else spend_mtd
        spent = float(chosen["spend"].astype(float).sum()) if len(chosen) else 0.0
        names = chosen["campaign_name"].dropna() if len(chosen) else pd.Series(dtype=object)
        expected = budget * elapsed / n_days
        rows.append(
            {
                "date": day,
                "platform": platform,
                "campaign_id": campaign_id,
                "campaign_name": str(names.iloc[-1]) if campaign_id and len(names) else None,
                "plan": budget,
                "spend_mtd": spent,
                "expected_mtd": expected,
                "pace": spent / expected - 1.0 if expected > 0 else None,
                "projected": spent / elapsed * n_days,
                "days_elapsed": elapsed,
                "days_in_month": n_days,
            }
        )
    return pd.DataFrame(rows, columns=PACING_COLUMNS)


def _pacing_findings(
    day: str, pacing: pd.DataFrame, s: WatchSettings, currency: str
) -> list[dict[str, Any]]:
    out = []
    for r in _records(pacing):
        # The first days of a month are a day or two of spend: noise, not pace.
        if r["pace"] is None or pd.isna(r["pace"]) or r["days_elapsed"] < s.pace_min_days:
            continue
        if abs(float(r["pace"])) <= s.pace_tolerance:
            continue
        scope = str(r["platform"]).replace("_", " ").title()
        if r["campaign_id"] is not None and pd.notna(r["campaign_id"]):
            scope = f"{_name(r['campaign_name'], r['campaign_id'])} ({r['platform']})"
        way = "ahead of" if r["pace"] > 0 else "behind"
        month = dt.date.fromisoformat(day).strftime("%B")
        out.append(
            {
                "date": day,
                "check": "pacing",
                "platform": str(r["platform"]),
                "campaign_id": None if pd.isna(r["campaign_id"]) else r["campaign_id"],
                "campaign_name": None if pd.isna(r["campaign_name"]) else r["campaign_name"],
                "value": float(r["spend_mtd"]),
                "baseline": float(r["expected_mtd"]),
                "spread": None,
                "z": None,
                "change": float(r["pace"]),
                "message": (
                    f"{scope}: spent {_money(r['spend_mtd'], currency)} of {month}'s "
                    f"{_money(r['plan'], currency)} budget by day {r['days_elapsed']} of "
                    f"{r['days_in_month']}, {abs(float(r['pace'])):.0%} {way} plan "
                    f"({_money(r['expected_mtd'], currency)}); on pace for "
                    f"{_money(r['projected'], currency)}"
                ),
            }
        )
    return out


# ---------------------------------------------------------------- cross-source installs


def build_source_discrepancy(
    day: str, spend_day: pd.DataFrame, campaigns_day: pd.DataFrame, settings: WatchSettings
) -> pd.DataFrame:
    """Per paid campaign of `day`: installs the platform reports (ad-level `installs_reported`
    summed) and installs the MMP attributes (`campaign_daily.installs`); DISCREPANCY_COLUMNS.

    `gap` = platform / MMP - 1 (null without MMP installs); `flagged` when |gap| exceeds
    `max_install_gap` on at least `min_gap_installs` installs (the larger of the two counts).
    """
    # Trap: with [adperf] account_days = account, an account in another zone reports its own
    # calendar day, while the MMP's day is the report zone's: the two counts then cover windows
    # hours apart, and the gap of such a campaign carries that shift's noise too (the
    # max_install_gap margin absorbs it on ordinary days; account_days = report removes it).
    key = ["platform", "campaign_id"]
    platform = (
        spend_day.groupby(key, as_index=False).agg(
            installs_platform=("installs_reported", "sum"), name_p=("campaign_name", "last")
        )
        if len(spend_day)
        else pd.DataFrame(columns=[*key, "installs_platform", "name_p"])
    )
    paid = campaigns_day[~campaigns_day["platform"].isin(INSTALL_BUCKETS)]
    mmp = paid[[*key, "campaign_name", "installs"]].rename(columns={"installs": "installs_mmp"})
    df = platform.merge(mmp, on=key, how="outer")
    df["campaign_name"] = df["campaign_name"].where(df["campaign_name"].notna(), df["name_p"])
    for col in ("installs_platform", "installs_mmp"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    df["difference"] = df["installs_platform"] - df["installs_mmp"]
    mmp_n = df["installs_mmp"].astype("float64")
    df["gap"] = (df["installs_platform"] / mmp_n.where(mmp_n > 0) - 1.0).astype("float64")
    volume = np.maximum(df["installs_platform"], df["installs_mmp"])
    beyond = df["gap"].abs().gt(settings.max_install_gap) | (
        df["installs_mmp"].eq(0) & df["installs_platform"].gt(0)
    )
    df["flagged"] = (beyond & (volume >= settings.min_gap_installs)).astype(bool)
    df["date"] = day
    df = df[(df["installs_platform"] > 0) | (df["installs_mmp"] > 0)]
    return df.sort_values(key, kind="stable")[DISCREPANCY_COLUMNS].reset_index(drop=True)


def _gap_findings(discrepancy: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    flagged = discrepancy[discrepancy["flagged"]] if len(discrepancy) else discrepancy
    for r in _records(flagged):
        gap = None if pd.isna(r["gap"]) else float(r["gap"])
        name = _name(r["campaign_name"], r["campaign_id"])
        out.append(
            {
                "date": r["date"],
                "check": "source_gap",
                "platform": r["platform"],
                "campaign_id": r["campaign_id"],
                "campaign_name": name,
                "value": float(r["installs_platform"]),
                "baseline": float(r["installs_mmp"]),
                "spread": None,
                "z": None,
                "change": gap,
                "message": (
                    f"{name} ({r['platform']}): the platform reports {r['installs_platform']:,} "
                    f"installs, the MMP attributed {r['installs_mmp']:,}"
                    + (f" ({_pct(gap)})" if gap is not None else "")
                ),
            }
        )
    return out


# ---------------------------------------------------------------- unowned shares


def _share_findings(
    day: str, campaigns: pd.DataFrame, reconciliation: pd.DataFrame, s: WatchSettings
) -> list[dict[str, Any]]:
    """Restricted installs of paid installs (the day against the median of the `share_days`
    before, spread at least binomial); restricted and unattributed revenue of all payments
    (the last 7 days pooled against the `share_days` before them pooled: one purchase is a large
    share of a day's revenue, so days are too lumpy to compare one by one)."""
    d = dt.date.fromisoformat(day)
    out = []
    if len(campaigns):
        c = campaigns.assign(date=campaigns["date"].astype(str))
        c = c.assign(installs=c["installs"].astype(float))
        paid = c[c["platform"] != ORGANIC].groupby("date")["installs"].sum()
        restricted = c[c["platform"] == RESTRICTED].groupby("date")["installs"].sum()
        share = (restricted.reindex(paid.index, fill_value=0.0) / paid.where(paid > 0)).dropna()
        before = share[share.index.isin(_days_before(d, 0, s.share_days))]
        if day in share.index and len(before) >= s.min_baseline_weeks:
            value, med = float(share[day]), float(before.median())
            binomial = math.sqrt(max(med * (1 - med), 0.0) / float(paid[day]))
            spread = max(MAD_TO_SD * float((before - med).abs().median()), binomial)
            z = (value - med) / spread if spread > 0 else math.inf
            if value - med >= s.share_rise and z >= s.z:
                text = (
                    f"Restricted installs: {value:.1%} of paid installs vs {med:.1%} usual "
                    f"(median of the last {len(before)} days, ±{spread * 100:.1f}pp): "
                    f"+{(value - med) * 100:.1f}pp"
                )
                out.append(_share_row(day, "restricted_install_share", value, med, spread, z, text))
    if not len(reconciliation):
        return out
    r = reconciliation.assign(date=reconciliation["date"].astype(str)).set_index("date")
    recent, earlier = _days_before(d, -1, 7), _days_before(d, 6, s.share_days)
    if day not in r.index or r.index.isin(earlier).sum() < s.share_days // 2:
        return out
    total = r["total_payments"].astype(float)
    for col, label in (("restricted", "Restricted"), ("unattributed", "Unattributed")):
        if col not in r.columns:
            continue
        part = pd.to_numeric(r[col], errors="coerce").astype(float)
        now, then = (part[r.index.isin(x)].sum() for x in (recent, earlier))
        whole_now, whole_then = (total[r.index.isin(x)].sum() for x in (recent, earlier))
        if whole_now <= 0 or whole_then <= 0:
            continue
        value, base = now / whole_now, then / whole_then
        if value - base < s.share_rise:
            continue
        text = (
            f"{label} revenue: {value:.1%} of payments over the last 7 days vs {base:.1%} over "
            f"the {s.share_days} days before: +{(value - base) * 100:.1f}pp"
        )
        out.append(_share_row(day, f"{col}_revenue_share", value, base, None, None, text))
    return out


def _days_before(d: dt.date, skip: int, n: int) -> set[str]:
    """The `n` days before `d` after skipping `skip` (skip -1: `d` and the n - 1 before)."""
    return {(d - dt.timedelta(days=k)).isoformat() for k in range(skip + 1, skip + 1 + n)}


def _share_row(
    day: str,
    check: str,
    value: float,
    base: float,
    spread: float | None,
    z: float | None,
    text: str,
) -> dict[str, Any]:
    return {
        "date": day,
        "check": check,
        "platform": None,
        "campaign_id": None,
        "campaign_name": None,
        "value": value,
        "baseline": base,
        "spread": spread,
        "z": z if z is None or math.isfinite(z) else None,
        "change": value - base,
        "message": text,
    }


# ---------------------------------------------------------------- formatting


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in row.items()} for row in df.to_dict("records")]


def _money(amount: Any, currency: str) -> str:
    decimals = 0 if currency.upper() in _ZERO_DECIMALS else 2
    return f"{float(amount):,.{decimals}f} {currency}".rstrip()


def _pct(change: float) -> str:
    return f"{change:+.0%}".replace("-", "−")


def _name(name: Any, fallback: Any) -> str:
    for candidate in (name, fallback):
        if candidate is not None and not (isinstance(candidate, float) and math.isnan(candidate)):
            if str(candidate):
                return str(candidate)
    return "?"


def with_d0(campaigns: pd.DataFrame, cohorts: pd.DataFrame) -> pd.DataFrame:
    """Campaign rows with the D0 revenue and payers of their cohort of the same day (`cohorts`:
    cohort_roas rows, lake (micros) or warehouse (amounts))."""
    d0 = cohorts[cohorts["age_days"] == 0].rename(columns={"cohort_date": "date"})
    if "revenue_micros" in d0.columns:
        d0 = d0.assign(revenue=d0["revenue_micros"].astype("float64") / 1_000_000)
    d0 = d0.assign(date=d0["date"].astype(str), revenue_d0=d0["revenue"].astype("float64"))
    d0 = d0.rename(columns={"payers": "payers_d0"})[
        ["date", "platform", "campaign_id", "revenue_d0", "payers_d0"]
    ]
    out = campaigns.assign(date=campaigns["date"].astype(str))
    return out.merge(d0, on=["date", "platform", "campaign_id"], how="left")


def build_watch_day(
    day: str,
    *,
    campaigns: pd.DataFrame,
    cohorts: pd.DataFrame,
    reconciliation: pd.DataFrame,
    spend: pd.DataFrame,
    history: dict[str, pd.DataFrame],
    plan: BudgetPlan,
    settings: WatchSettings,
    currency: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(source_discrepancy, watch findings) of `day` (the Watch task).

    `campaigns`, `cohorts`, `reconciliation`: the day's campaign report, cohort triangle and
    reconciliation (amounts in the report currency); `spend`: ad-level spend of the days to
    `day` (SpendLatest's window); `history`: the warehouse's `campaigns`, `cohorts` and
    `reconciliation` rows of the baseline days before `day`.
    """
    today = with_d0(campaigns, cohorts)
    discrepancy = build_source_discrepancy(day, spend[spend["date"] == day], today, settings)
    # Pacing pro rata over the days the window holds: a lake (or a sandbox world) that starts
    # in the middle of the month would otherwise be 'behind plan' by the days before it.
    since = str(spend["date"].min()) if len(spend) else None
    month = spend[spend["date"] >= day[:8] + "01"]
    found = build_watch(
        day,
        campaigns=pd.concat(
            [with_d0(history["campaigns"], history["cohorts"]), today], ignore_index=True
        ),
        reconciliation=pd.concat([history["reconciliation"], reconciliation], ignore_index=True),
        discrepancy=discrepancy,
        pacing=build_pacing(day, month, plan, since=since),
        settings=settings,
        currency=currency,
    )
    return discrepancy, found
