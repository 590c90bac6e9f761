"""The decision rule: each campaign's and adset's pooled window evidence turned into scale,
pause, scale back or hold, with the probability it rests on (docs/model.md, section 3).

Pure functions: DataFrames in, DataFrames out; the report day and the rules are arguments.
The report day's own rows (CampaignReport) are built in `adperf.transform.report`.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Hashable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from adperf.schema import ACTIONS, MICROS
from adperf.transform import metrics
from adperf.transform.attribution import require_day
from adperf.transform.ltv.priors import dersimonian_laird
from adperf.transform.response import BudgetResponse
from adperf.vocabulary import INSTALL_BUCKETS, ORGANIC, UNATTRIBUTED

ACTION_COLUMNS: list[str] = ACTIONS.columns  # declared in adperf.schema
_CURRENCY_SYMBOLS: dict[str, str] = {"USD": "$", "EUR": "€", "GBP": "£"}


@dataclass(frozen=True)
class Rules:
    """Thresholds turning a campaign's pooled evidence into scale, pause or hold ([rules])."""

    target_roas: float = 1.0
    scale_roas: float = 1.3
    pause_roas: float = 0.5
    min_spend_micros: int = 100_000_000
    min_installs: int = 50
    min_age_days: int = 7
    window_days: int = 14
    confidence: float = 0.6  # tuned in the closed-loop bench (bench/README.md)
    cpi_days: int = 3  # the window's value per install is bought at these last days' CPI
    scale_factor: float = 1.2  # [actions]: the budget step whose return a scale is judged on

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise ValueError(f"[rules] window_days = {self.window_days}. Fix: 1 or more days")
        if not 0 <= self.cpi_days < self.window_days:
            raise ValueError(
                f"[rules] cpi_days = {self.cpi_days}. Fix: 0 (the window's own CPI) to "
                f"{self.window_days - 1} (under window_days)"
            )
        if self.target_roas > self.scale_roas:
            # P(ROAS < target) and P(ROAS > scale) could then both reach the confidence.
            raise ValueError(
                f"[rules] target_roas = {self.target_roas} is over scale_roas = "
                f"{self.scale_roas}. Fix: a target at or under scale_roas (1.0: break-even)"
            )
        if not 0.5 < self.confidence <= 1.0:
            # At or under 0.5 both P(above scale) and P(below pause) could reach it.
            raise ValueError(
                f"[rules] confidence = {self.confidence}. Fix: a probability over 0.5, e.g. 0.8"
            )


@dataclass(frozen=True)
class WindowEvidence:
    """One object's install cohorts of the window pooled: spend, installs, pROAS and its draws."""

    window_days: int
    cohort_days: int  # install days of the window with valued users
    spend_micros: int
    installs: int
    proas: float | None
    low: float | None
    high: float | None
    draws: np.ndarray | None  # pROAS bootstrap draws (same model as low/high)
    # The recent days' installs per unit of spend over the window's (None: not applied); the
    # pROAS above is the window's value per install at the recent CPI.
    cpi_change: float | None = None
    cpi_days: int = 0


WindowKey = tuple[str, str, str]  # (level, platform, object_id)


def build_window_evidence(
    day: str,
    window_days: int,
    spend: pd.DataFrame,
    pltv_window: pd.DataFrame,
    pltv_draws: pd.DataFrame,
    cpi_days: int = 0,
) -> dict[WindowKey, WindowEvidence]:
    """Per paid campaign and adset: the evidence of the `window_days` install days to `day`.

    `spend` is ad-level spend by day (at least the window's days), `pltv_window` and
    `pltv_draws` the window's pooled cohort value (ltv.build_pltv_window). pROAS = the
    window's pLTV / the window's spend, its draws the pLTV draws / that spend.

    With `cpi_days` (> 0), the pROAS is the window's value per install bought at the CPI of
    the last `cpi_days` days: × the installs a unit of spend bought then over what it bought in
    the whole window (the platform's own install counts, so its level cancels out). A budget
    scaled a few days ago buys dearer installs (an audience's best converters come first) while
    most of the window's cohorts were bought before; acting on the window's CPI would scale on
    value the next dollar no longer buys. Each object's change is shrunk toward its level's
    common change by empirical Bayes (_shrunk_cpi_changes): three days of a small adset's
    installs are mostly noise; its remaining uncertainty enters the draws.
    """
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=window_days - 1)).isoformat()
    recent = (dt.date.fromisoformat(day) - dt.timedelta(days=cpi_days - 1)).isoformat()
    dates = spend["date"].astype("str")
    paid = spend.loc[(dates >= first) & (dates <= day) & spend["platform"].ne(ORGANIC)]
    latest = paid.loc[paid["date"].astype("str") >= recent] if cpi_days > 0 else paid.iloc[:0]
    values = pltv_window.loc[~pltv_window["platform"].isin([*INSTALL_BUCKETS, UNATTRIBUTED])]
    out: dict[WindowKey, WindowEvidence] = {}
    for level, column in (("campaign", "campaign_id"), ("adset", "adset_id")):
        spent = paid.groupby(["platform", column], sort=False)["spend_micros"].sum()
        spent_by = {(str(k[0]), str(k[1])): int(v) for k, v in _pairs(spent)}
        changes = _shrunk_cpi_changes(_cpi_changes(paid, latest, column))
        rows = values.loc[values["level"] == level]
        rows_by = {(str(r["platform"]), str(r[column])): r for r in rows.to_dict("records")}
        draws = pltv_draws.loc[pltv_draws["level"] == level].sort_values("draw", kind="stable")
        drawn = {
            (str(k[0]), str(k[1])): g["pltv_micros"].to_numpy(dtype="float64")
            for k, g in draws.groupby(["platform", column], sort=False)
        }
        for key in spent_by.keys() | rows_by.keys():
            micros, row = spent_by.get(key, 0), rows_by.get(key)
            evidence = _window_evidence(window_days, micros, row, drawn.get(key))
            change = changes.get(key)
            if change is not None and evidence.proas is not None:
                evidence = _at_recent_cpi(evidence, change, cpi_days, (day, level, *key))
            out[(level, *key)] = evidence
    return out


def _cpi_changes(
    paid: pd.DataFrame, latest: pd.DataFrame, column: str
) -> dict[tuple[str, str], tuple[float, int, int]]:
    """Per (platform, object): (the recent days' installs per spend over the window's, the
    recent installs, the window's installs); objects without recent spend or installs on
    either side are left out."""
    if latest.empty:
        return {}
    sums = ["spend_micros", "installs_reported"]
    window = paid.groupby(["platform", column], sort=False)[sums].sum()
    recent = latest.groupby(["platform", column], sort=False)[sums].sum()
    out: dict[tuple[str, str], tuple[float, int, int]] = {}
    for key, r in recent.iterrows():
        if not isinstance(key, tuple) or key not in window.index:
            continue
        w = window.loc[key]
        change = metrics.cpi_change(
            int(w["spend_micros"]),
            int(w["installs_reported"]),
            int(r["spend_micros"]),
            int(r["installs_reported"]),
        )
        if change is not None:
            counts = (int(r["installs_reported"]), int(w["installs_reported"]))
            out[(str(key[0]), str(key[1]))] = (change, *counts)
    return out


def _shrunk_cpi_changes(
    changes: dict[tuple[str, str], tuple[float, int, int]],
) -> dict[tuple[str, str], tuple[float, float]]:
    """Per object: (posterior mean, sd) of its log CPI change, a normal random-effects model
    over the level's objects: log change ~ N(theta, v) with v = 1/recent - 1/window installs
    (Poisson counts; the recent days are part of the window), theta ~ N(mu, tau^2), tau^2
    DerSimonian and Laird's moment estimate (as the LTV segment priors). An object keeps the
    share tau^2 / (tau^2 + v) of its own deviation from the common change mu: a budget scaled
    on a campaign with thousands of installs keeps its dearer CPI, three days of a small
    adset's installs move it little. With under 3 objects tau^2 is not estimable: each keeps
    its own change and noise. An object whose installs all fall in the recent days has a
    change of exactly 1."""
    logs = {k: np.log(c) for k, (c, _, _) in changes.items()}
    noise = {k: 1.0 / r - 1.0 / w for k, (_, r, w) in changes.items()}
    varied = [k for k in changes if noise[k] > 0]
    out = {k: (float(logs[k]), 0.0) for k in changes if noise[k] <= 0}
    if len(varied) < 3:
        out.update({k: (float(logs[k]), float(np.sqrt(noise[k]))) for k in varied})
        return out
    y = np.array([logs[k] for k in varied])
    v = np.array([noise[k] for k in varied])
    mu = float((y / v).sum() / (1.0 / v).sum())
    tau2 = dersimonian_laird(y - mu, v)
    keep = tau2 / (tau2 + v)
    mean, sd = mu + keep * (y - mu), np.sqrt(keep * v)
    out.update({k: (float(m), float(d)) for k, m, d in zip(varied, mean, sd, strict=True)})
    return out


def _at_recent_cpi(
    evidence: WindowEvidence,
    change: tuple[float, float],
    cpi_days: int,
    seed_key: tuple[str, ...],
) -> WindowEvidence:
    """`evidence` with its pROAS at the recent CPI: × exp(the shrunk log change); the draws
    also carry what is left of its noise (log-normal, seeded by the day and the object: a
    rerun decides the same)."""
    log_change, sd = change
    factor = float(np.exp(log_change))
    draws = evidence.draws
    if draws is not None and len(draws):
        rng = np.random.default_rng(zlib.crc32("|".join(seed_key).encode()))
        draws = draws * np.exp(log_change + sd * rng.standard_normal(len(draws)))
    return replace(
        evidence,
        proas=None if evidence.proas is None else evidence.proas * factor,
        low=None if evidence.low is None else evidence.low * factor,
        high=None if evidence.high is None else evidence.high * factor,
        draws=draws,
        cpi_change=factor,
        cpi_days=cpi_days,
    )


def _pairs(series: pd.Series) -> list[tuple[tuple[Any, Any], Any]]:
    """A two-level-indexed Series' ((first, second), value) items."""
    return [((key[0], key[1]), value) for key, value in series.items() if isinstance(key, tuple)]


def _window_evidence(
    window_days: int,
    spend_micros: int,
    row: dict[Hashable, Any] | None,
    draws: np.ndarray | None,
) -> WindowEvidence:
    """One object's WindowEvidence from its window spend, pltv_window row and pLTV draws."""
    if row is None or spend_micros <= 0:
        return WindowEvidence(
            window_days=window_days,
            cohort_days=0 if row is None else int(row["cohorts"]),
            spend_micros=spend_micros,
            installs=0 if row is None else int(row["installs"]),
            proas=None,
            low=None,
            high=None,
            draws=None,
        )
    return WindowEvidence(
        window_days=window_days,
        cohort_days=int(row["cohorts"]),
        spend_micros=spend_micros,
        installs=int(row["installs"]),
        proas=metrics.proas_of(row["pltv_micros"], spend_micros),
        low=metrics.proas_of(row["pltv_low_micros"], spend_micros),
        high=metrics.proas_of(row["pltv_high_micros"], spend_micros),
        draws=metrics.proas_draws(draws, spend_micros),
    )


def build_actions(
    day: str,
    campaign_report: pd.DataFrame,
    first_spend_dates: dict[tuple[str, str], str],
    rules: Rules,
    currency: str = "USD",
    *,
    adset_report: pd.DataFrame | None = None,
    adset_first_spend_dates: dict[tuple[str, str], str] | None = None,
    window: dict[WindowKey, WindowEvidence] | None = None,
    response: BudgetResponse | None = None,
) -> pd.DataFrame:
    """One recommended action (scale, pause, unscale, hold) with its reason per paid campaign and
    adset.

    First spend dates are keyed (platform, campaign_id) and (platform, adset_id). With
    `window` (build_window_evidence) an object's decision rests on its window's pooled
    evidence; without it (or for an object not in it) on the report day's row alone, the rule
    before issue 18 (kept for comparison). `response`: how CPI answers a budget change
    (adperf.transform.response); None: CPI flat with spend, the next dollar returns what the
    average one does.
    """
    require_day(campaign_report, day, "campaign report")
    objects: list[tuple[str, dict[Hashable, Any], str, str | None]] = []
    paid = campaign_report.loc[~campaign_report["platform"].isin(INSTALL_BUCKETS)]
    for row in paid.to_dict("records"):
        name = None if pd.isna(row["campaign_name"]) else str(row["campaign_name"])
        objects.append(("campaign", row, str(row["campaign_id"]), name))
    if adset_report is not None:
        require_day(adset_report, day, "adset report")
        for row in adset_report.to_dict("records"):
            name = None if pd.isna(row["adset_name"]) else str(row["adset_name"])
            objects.append(("adset", row, str(row["adset_id"]), name))
    report_day = dt.date.fromisoformat(day)
    records: list[dict[str, object]] = []
    for level, row, object_id, name in objects:
        platform = str(row["platform"])
        dates = first_spend_dates if level == "campaign" else (adset_first_spend_dates or {})
        first = dates.get((platform, object_id))
        # No first spend date on record means no history: as new as it gets.
        age = (report_day - dt.date.fromisoformat(first)).days if first is not None else 0
        evidence = _Evidence(
            roas=_optional_float(row.get("roas")),
            proas=_optional_float(row.get("proas")),
            low=_optional_float(row.get("proas_low")),
            high=_optional_float(row.get("proas_high")),
        )
        spend_micros = int(row["spend_micros"])
        pooled = None if window is None else window.get((level, platform, object_id))
        p_above = p_below = None
        if pooled is not None:
            action, reason, p_above, p_below = _decide_pooled(
                age, evidence.roas, pooled, rules, currency, response or BudgetResponse()
            )
            spend_micros = pooled.spend_micros
            evidence = _Evidence(evidence.roas, pooled.proas, pooled.low, pooled.high)
        else:
            action, reason = _decide(
                spend_micros, int(row["installs"]), age, evidence, rules, currency
            )
        campaign_id = row.get("campaign_id")
        records.append(
            {
                "date": day,
                "platform": platform,
                "level": level,
                "object_id": object_id,
                "object_name": name,
                "action": action,
                "reason": reason,
                "roas": evidence.roas,
                "proas": evidence.proas,
                "spend_micros": spend_micros,
                "parent_id": None if pd.isna(campaign_id) else str(campaign_id),
                "proas_low": evidence.low,
                "proas_high": evidence.high,
                "p_above": p_above,
                "p_below": p_below,
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
            "parent_id": "str",
            "proas_low": "Float64",
            "proas_high": "Float64",
            "p_above": "Float64",
            "p_below": "Float64",
        }
    )
    # Campaigns first, then adsets; each by platform and id.
    out = out.sort_values(
        ["level", "platform", "object_id"],
        key=lambda col: col.map({"campaign": 0, "adset": 1}) if col.name == "level" else col,
        kind="mergesort",
    )
    return out.reset_index(drop=True)


@dataclass(frozen=True)
class _Evidence:
    """One object's ROAS so far and its pROAS with the interval's ends."""

    roas: float | None
    proas: float | None
    low: float | None
    high: float | None


def _decide_pooled(
    age_days: int,
    roas: float | None,
    pooled: WindowEvidence,
    rules: Rules,
    currency: str,
    response: BudgetResponse,
) -> tuple[str, str, float | None, float | None]:
    """(action, reason, P(ROAS > scale_roas), P(ROAS < pause_roas)) on a window's evidence.

    Scale when P(true ROAS > scale_roas) >= confidence and the next budget step (× scale_factor)
    likely pays: P(its return per dollar added > target_roas) >= confidence, that return the
    average's × `response.step_up`. Pause when P(true ROAS < pause_roas) >= confidence. Scale
    back (`unscale`: the budget divided by the scale factor) when P(the last step's return per
    dollar < target_roas) >= confidence (× `response.step_down`) -- those dollars likely return
    less than the target, but not so little that the object should stop. Each probability is the
    share of the pROAS draws beyond the threshold; and only once the window's spend and installs
    and the object's age meet the minimums. Without follow-ups (`response` flat) a step returns
    what the average dollar does: scale on P(ROAS > scale_roas), scale back on P(ROAS <
    target_roas).
    """
    days = pooled.window_days
    shortfalls = []
    if pooled.spend_micros < rules.min_spend_micros:
        shortfalls.append(
            f"only {_money(pooled.spend_micros, currency)} spend in {days} days "
            f"(< {_money(rules.min_spend_micros, currency)} minimum)"
        )
    if pooled.installs < rules.min_installs:
        shortfalls.append(
            f"only {pooled.installs:,} installs in {days} days of cohorts "
            f"(< {rules.min_installs:,} minimum)"
        )
    if age_days < rules.min_age_days:
        shortfalls.append(
            f"only {age_days} days since first spend (< {rules.min_age_days} minimum)"
        )
    if shortfalls:
        return "hold", "; ".join(shortfalls), None, None
    cohorts = f"{pooled.cohort_days} day{'s' if pooled.cohort_days != 1 else ''} of cohorts"
    volume = f"on {cohorts}, {pooled.installs:,} installs, {_money(pooled.spend_micros, currency)}"
    if pooled.cpi_change is not None:
        dearer = 1.0 / pooled.cpi_change - 1.0
        volume += f", at the last {pooled.cpi_days} days' CPI ({dearer:+.0%} on the window's)"
    scale, pause, confidence = rules.scale_roas, rules.pause_roas, rules.confidence
    if pooled.proas is None or pooled.draws is None or len(pooled.draws) == 0:
        if roas is not None and roas >= scale:
            return (
                "scale",
                f"ROAS so far {roas:.2f} already over scale threshold {scale:.2f}",
                None,
                None,
            )
        shown = "no ROAS" if roas is None else f"ROAS so far {roas:.2f}"
        return "hold", f"{shown} and no pROAS (LTV model unavailable) {volume}", None, None
    p_above = float(np.mean(pooled.draws > scale))
    p_below = float(np.mean(pooled.draws < pause))
    low = pooled.proas if pooled.low is None else min(pooled.low, pooled.proas)
    high = pooled.proas if pooled.high is None else max(pooled.high, pooled.proas)
    shown = f"pROAS {pooled.proas:.2f} [{low:.2f}–{high:.2f}] {volume}"
    above = f"P(ROAS > {scale:.2f}) = {p_above:.2f}"
    below = f"P(ROAS < {pause:.2f}) = {p_below:.2f}"
    target, step = rules.target_roas, rules.scale_factor
    learned = response.follow_ups > 0
    if p_above >= confidence:
        up = response.step_up(step)
        p_pays = float(np.mean(pooled.draws * up > target))
        if p_pays >= confidence:
            reason = f"{shown}: {above} ≥ {confidence:.2f}"
            if learned:
                reason = (
                    f"{shown}: {above}, the next {step - 1:+.0%} of budget returns "
                    f"{pooled.proas * up:.2f} per dollar ({response.describe()}): "
                    f"P(> {target:.2f}) = {p_pays:.2f}, both ≥ {confidence:.2f}"
                )
            return "scale", reason, p_above, p_below
        held = (
            f"{shown}: {above}, but the next {step - 1:+.0%} of budget returns "
            f"{pooled.proas * up:.2f} per dollar ({response.describe()}): "
            f"P(> {target:.2f}) = {p_pays:.2f} < {confidence:.2f}"
        )
    else:
        held = f"{shown}: {above}, {below}, neither ≥ {confidence:.2f}"
    if p_below >= confidence:
        return "pause", f"{shown}: {below} ≥ {confidence:.2f}", p_above, p_below
    if target > pause:
        # Without this step a campaign scaled while it paid and then faded (creative fatigue,
        # a dearer CPI at its new budget) kept its budget for as long as its pROAS stayed
        # between pause_roas and scale_roas: small world seed 7, 90 days, one scaled to 8.9x
        # held 45 days at a true ROAS of 0.58-0.84 (bench/README.md, session 10).
        down = response.step_down(step)
        p_under = float(np.mean(pooled.draws * down < target))
        if p_under >= confidence:
            if learned:
                under = (
                    f"the last {step - 1:+.0%} of budget returns {pooled.proas * down:.2f} per "
                    f"dollar ({response.describe()}): P(< {target:.2f}) = {p_under:.2f} ≥ "
                    f"{confidence:.2f}"
                )
            else:
                under = f"P(ROAS < {target:.2f}) = {p_under:.2f} ≥ {confidence:.2f}"
            # "unscale": the action kind of a scale back (the actions.action column is 8 wide).
            return "unscale", f"{shown}: {under}, under the target: scale back", p_above, p_below
    return "hold", held, p_above, p_below


def _decide(
    spend_micros: int,
    installs: int,
    age_days: int,
    evidence: _Evidence,
    rules: Rules,
    currency: str,
) -> tuple[str, str]:
    """(action, one-line reason) for one campaign's or adset's numbers of the report day alone.

    The rule before issue 18, for objects without window evidence: scale only when the pROAS
    interval's low end is at or over scale_roas, pause only when its high end is under
    pause_roas, and only once the minimums are met. Without pROAS, ROAS so far is a lower bound
    of the lifetime value: it can justify a scale, never a pause.
    """
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

    volume = f"on {_money(spend_micros, currency)} spend, {installs:,} installs"
    scale, pause, target = rules.scale_roas, rules.pause_roas, rules.target_roas
    if evidence.proas is None:
        roas = evidence.roas
        if roas is None:
            return "hold", f"no ROAS or pROAS to judge {volume}"
        if roas >= scale:
            return (
                "scale",
                f"ROAS so far {roas:.2f} already over scale threshold {scale:.2f} {volume}",
            )
        return "hold", (
            f"ROAS so far {roas:.2f}, no pROAS (LTV model unavailable): revenue so far alone "
            f"is no reason to pause {volume}"
        )
    proas = evidence.proas
    low = proas if evidence.low is None else min(evidence.low, proas)
    high = proas if evidence.high is None else max(evidence.high, proas)
    shown = f"pROAS {proas:.2f} [{low:.2f}–{high:.2f}]"
    if low >= scale:
        return "scale", f"{shown} over scale threshold {scale:.2f} {volume}"
    if high < pause:
        return "pause", f"{shown} under pause threshold {pause:.2f} {volume}"
    side = "at or over" if proas >= target else "under"
    if proas >= scale:
        why = f"interval reaches below scale threshold {scale:.2f}"
    elif proas < pause:
        why = f"interval reaches above pause threshold {pause:.2f}"
    else:
        why = f"between pause {pause:.2f} and scale {scale:.2f} thresholds"
    return "hold", f"{shown} {side} target {target:.2f}, {why} {volume}"


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
