"""Did it work? The follow-up of every applied action, and what the follow-ups change in actions.

On report day D, every action applied for report day A = D - `follow_up_days` (action_log,
status `applied`) is followed up: the object's spend, installs, CPI and pROAS over the
`follow_up_days` install days since the change (A+1 … D) against the as many days before it
(…A), and against what the decision of A expected (its pooled pROAS and the threshold it
crossed). One row each (`action_outcomes`), with its one-line verdict for the report.

The days' figures are those of the report of D: spend as D's latest pull has it, each install
cohort's installs and pLTV as its own report day valued them (the `pltv` partitions), so
"before" and "since" are valued the same way. An action the platform applied to several
objects (a Facebook campaign's scale is a change of each of its adsets) is one follow-up, at
the level of the recommendation.

Two things follow from the follow-ups and the log (`with_follow_ups`): a scaled object whose
pROAS since the change fell below `scale_roas` is recommended `unscale` ("scale back": the
budget divided by the scale factor), unless its day's decision is to pause it; and an object
to scale whose budget already went up by as much as `[actions] max_budget_increase` allows in
the week is recommended `expand` (copy the adset) instead of another scale.

Pure: the day, the rules and every frame are arguments.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd

from adperf.schema import ACTION_OUTCOMES, MICROS
from adperf.transform import metrics
from adperf.vocabulary import INSTALL_BUCKETS

APPLIED = "applied"
BUDGET_ACTIONS = ("scale", "unscale")
WEEK_DAYS = 7
OUTCOME_COLUMNS: list[str] = ACTION_OUTCOMES.columns  # declared in adperf.schema
SCALE_BACK = "unscale"  # the action kind of a "scale back" (the actions.action column is 8 wide)
EXPAND = "expand"


@dataclass(frozen=True)
class FollowUpRules:
    """The thresholds a follow-up judges by ([rules]) and the budget caps ([actions])."""

    follow_up_days: int = 7
    scale_roas: float = 1.3
    pause_roas: float = 0.5
    scale_factor: float = 1.2
    max_budget_increase: float = 0.5
    target_roas: float = 1.0  # a scale back is judged against it: does the object pay now?

    def __post_init__(self) -> None:
        if not 1 <= self.follow_up_days <= 15:
            # Before and since must both fit the 31 days of spend a report day holds.
            raise ValueError(f"[rules] follow_up_days = {self.follow_up_days}. Fix: 1 to 15 days")


def due_actions(action_log: pd.DataFrame, day: str, follow_up_days: int) -> pd.DataFrame:
    """The applied action_log rows whose follow-up is due on `day` (report day - N days)."""
    due = (dt.date.fromisoformat(day) - dt.timedelta(days=follow_up_days)).isoformat()
    if not len(action_log):
        return action_log
    dates = action_log["date"].astype("str").str[:10]
    return action_log.loc[(dates == due) & (action_log["status"] == APPLIED)]


def build_action_outcomes(
    day: str,
    rules: FollowUpRules,
    action_log: pd.DataFrame,
    decisions: pd.DataFrame,
    daily: pd.DataFrame,
    currency: str = "USD",
) -> pd.DataFrame:
    """One follow-up per recommendation applied `follow_up_days` before `day`.

    `action_log`: its rows (any days); `decisions`: the `actions` rows of the action's day
    (what the decision expected); `daily`: per (date, level, platform, object_id) the day's
    `spend_micros`, `installs`, `pltv_micros` (nullable) over the before and since days.
    """
    n = rules.follow_up_days
    due = due_actions(action_log, day, n)
    action_day = dt.date.fromisoformat(day) - dt.timedelta(days=n)
    records = []
    for (platform, level, object_id, action), rows in _by_recommendation(due).items():
        decision = _decision(decisions, platform, level, object_id)
        name = _name(decision, rows)
        before = _sum_days(
            daily, level, platform, object_id, action_day - dt.timedelta(n - 1), action_day
        )
        since = _sum_days(
            daily,
            level,
            platform,
            object_id,
            action_day + dt.timedelta(1),
            action_day + dt.timedelta(n),
        )
        record: dict[str, Any] = {
            "date": day,
            "action_date": action_day.isoformat(),
            "platform": platform,
            "level": level,
            "object_id": object_id,
            "object_name": name,
            "action": action,
            "change": _change(action, rows),
            "objects_changed": len(rows),
            "days": n,
            **{f"{k}_before{suffix}": v for k, suffix, v in _figures(before)},
            **{f"{k}_since{suffix}": v for k, suffix, v in _figures(since)},
            "proas_expected": _float(decision.get("proas")) if decision else None,
            "threshold": {"pause": rules.pause_roas, SCALE_BACK: rules.target_roas}.get(
                action, rules.scale_roas
            ),
        }
        record["verdict"] = _verdict(action, record)
        record["line"] = _line(record, currency)
        records.append(record)
    return _typed(pd.DataFrame.from_records(records, columns=OUTCOME_COLUMNS))


DAILY_COLUMNS = [
    "date",
    "level",
    "platform",
    "object_id",
    "spend_micros",
    "installs",
    "pltv_micros",
]
_LEVEL_COLUMN = {"campaign": "campaign_id", "adset": "adset_id"}


def build_object_days(
    spend: pd.DataFrame, installs: pd.DataFrame, pltv: pd.DataFrame
) -> pd.DataFrame:
    """Per (date, level, platform, object_id) of paid campaigns and adsets: the day's spend,
    its install cohort's installs and pLTV (the `daily` of build_action_outcomes).

    `spend`: ad-level spend by day (latest figures); `installs`: the MMP installs of the days;
    `pltv`: the days' `pltv` partitions (each cohort valued on its own report day).
    """
    paid_installs = installs.loc[
        ~installs["platform"].isin(INSTALL_BUCKETS) & installs["campaign_id"].notna()
    ]
    paid_spend = spend.loc[~spend["platform"].isin(INSTALL_BUCKETS)]
    frames = []
    for level, column in _LEVEL_COLUMN.items():
        key = ["date", "platform", column]
        spent = paid_spend.groupby(key, sort=False)["spend_micros"].sum().rename("spend_micros")
        counted = paid_installs.groupby(key, sort=False).size().rename("installs")
        mine = pltv.loc[pltv["level"] == level] if len(pltv) else pltv
        valued = (
            mine.groupby(key, sort=False)["pltv_micros"].sum(min_count=1)
            if len(mine)
            else pd.Series(dtype="float64", name="pltv_micros")
        )
        joined = pd.concat([spent, counted, valued.rename("pltv_micros")], axis=1).reset_index()
        joined.columns = [
            "date",
            "platform",
            "object_id",
            "spend_micros",
            "installs",
            "pltv_micros",
        ]
        joined["level"] = level
        frames.append(joined)
    out = pd.concat(frames, ignore_index=True)
    out["date"] = out["date"].astype("str").str[:10]
    # A day with a `pltv` partition valued every cohort it had: an object without a row there
    # had no installs, a pLTV of 0. A day without one is unknown (NA).
    valued_dates = set(pltv["date"].astype("str").str[:10]) if len(pltv) else set()
    on_valued = out["date"].isin(valued_dates)
    out.loc[on_valued, "pltv_micros"] = out.loc[on_valued, "pltv_micros"].fillna(0)
    out["object_id"] = out["object_id"].astype("str")
    out["spend_micros"] = out["spend_micros"].fillna(0).astype("int64")
    out["installs"] = out["installs"].fillna(0).astype("int64")
    out["pltv_micros"] = out["pltv_micros"].astype("Float64").round().astype("Int64")
    return out[DAILY_COLUMNS]


def _by_recommendation(due: pd.DataFrame) -> dict[tuple[str, str, str, str], list[dict[str, Any]]]:
    """action_log rows grouped by the recommendation they carried out (its level and object)."""
    out: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in due.sort_values("id", kind="stable").to_dict("records"):
        source = row.get("source_id")
        has_source = source is not None and not pd.isna(source) and str(source) != ""
        level = str(row["source_level"]) if has_source else str(row["level"])
        object_id = str(source) if has_source else str(row["object_id"])
        key = (str(row["platform"]), level, object_id, str(row["action"]))
        out.setdefault(key, []).append({str(k): v for k, v in row.items()})
    return out


def _decision(
    decisions: pd.DataFrame, platform: str, level: str, object_id: str
) -> dict[str, Any] | None:
    if not len(decisions):
        return None
    hit = decisions.loc[
        (decisions["platform"] == platform)
        & (decisions["level"] == level)
        & (decisions["object_id"].astype("str") == object_id)
    ]
    return None if not len(hit) else {str(k): v for k, v in hit.iloc[0].to_dict().items()}


def _name(decision: dict[str, Any] | None, rows: list[dict[str, Any]]) -> str | None:
    for value in ([decision.get("object_name")] if decision else []) + [
        r.get("object_name")
        for r in rows
        if r.get("source_id") in (None, "") or pd.isna(r.get("source_id"))
    ]:
        if value is not None and not pd.isna(value) and str(value) not in ("", "None"):
            return str(value)
    return None


@dataclass(frozen=True)
class _Days:
    spend_micros: int
    installs: int
    pltv_micros: int | None  # of the valued days
    valued_spend_micros: int  # spend of the days whose cohorts have a pLTV
    valued_days: int


def _sum_days(
    daily: pd.DataFrame, level: str, platform: str, object_id: str, first: dt.date, last: dt.date
) -> _Days:
    if not len(daily):
        return _Days(0, 0, None, 0, 0)
    dates = daily["date"].astype("str")
    rows = daily.loc[
        (daily["level"] == level)
        & (daily["platform"] == platform)
        & (daily["object_id"].astype("str") == object_id)
        & (dates >= first.isoformat())
        & (dates <= last.isoformat())
    ]
    # pROAS over the days whose cohorts were valued only: a day not yet reported (no `pltv`
    # partition) would otherwise count its spend against no value and sink the ratio.
    valued = rows.loc[rows["pltv_micros"].notna()]
    return _Days(
        spend_micros=int(rows["spend_micros"].sum()),
        installs=int(rows["installs"].sum()),
        pltv_micros=int(valued["pltv_micros"].sum()) if len(valued) else None,
        valued_spend_micros=int(valued["spend_micros"].sum()),
        valued_days=int(valued["date"].nunique()),
    )


def _figures(d: _Days) -> list[tuple[str, str, Any]]:
    return [
        ("spend", "_micros", d.spend_micros),
        ("installs", "", d.installs),
        ("cpi", "_micros", metrics.cpi_micros_of(d.spend_micros, d.installs)),
        ("proas", "", metrics.proas_of(d.pltv_micros, d.valued_spend_micros)),
        ("valued_days", "", d.valued_days),
    ]


def _change(action: str, rows: list[dict[str, Any]]) -> str:
    """What the action changed: the budgets' total change, PAUSED, or the copies made."""
    if action == "pause":
        return "PAUSED"
    if action == EXPAND:
        copies = [str(r["value_after"]) for r in rows if r.get("value_after")]
        return "copy " + ", ".join(copies) if copies else "copy"
    before = sum(_int(r.get("value_before")) for r in rows)
    after = sum(_int(r.get("value_after")) for r in rows)
    if before <= 0:
        return "budget"
    return _pct(after / before - 1.0)


def _verdict(action: str, r: Mapping[str, Any]) -> str:
    if action == "pause":
        return "stopped" if r["spend_since_micros"] == 0 else "still spending"
    proas = r["proas_since"]
    if proas is None:
        return "no data"
    return "above" if proas >= r["threshold"] else "below"


def _line(r: Mapping[str, Any], currency: str) -> str:
    """'scaled JP_Android +20% on 11-20: CPI +6%, pROAS 2.60 → 2.41, still above 1.30'."""
    name = r["object_name"] or r["object_id"]
    on = dt.date.fromisoformat(r["action_date"]).strftime("%m-%d")
    verb = {
        "scale": "scaled",
        "pause": "paused",
        SCALE_BACK: "scaled back",
        EXPAND: "expanded",
    }.get(r["action"], r["action"])
    change = "" if r["action"] == "pause" else f" {r['change']}"
    head = f"{verb} {name}{change} on {on}"
    if r["verdict"] == "no data":
        return f"{head}: no spend or pROAS since the change in the {r['days']} days to it"
    n = r["days"]
    per_day_before = r["spend_before_micros"] / n
    per_day_since = r["spend_since_micros"] / n
    if r["action"] == "pause":
        was = _ratio(r["proas_before"])
        if r["verdict"] == "stopped":
            return (
                f"{head}: spend {_money(per_day_before, currency)}/day → 0, "
                f"pROAS was {was} (< {r['threshold']:.2f} pause)"
            )
        return (
            f"{head}: still spending {_money(per_day_since, currency)}/day since "
            f"(was {_money(per_day_before, currency)}/day): check the object on {r['platform']}"
        )
    parts = [f"spend {_delta(r['spend_since_micros'], r['spend_before_micros'])}"]
    cpi_since, cpi_before = r["cpi_since_micros"], r["cpi_before_micros"]
    if cpi_since is not None and cpi_before is not None:
        parts.append(f"CPI {_delta(cpi_since, cpi_before)}")
    expected = r["proas_expected"]
    then = f"{_ratio(expected)} expected" if expected is not None else _ratio(r["proas_before"])
    side = "still above" if r["verdict"] == "above" else "now below"
    if r["action"] == SCALE_BACK:
        side = "above" if r["verdict"] == "above" else "still below"
    since = _ratio(r["proas_since"])
    if r["valued_days_since"] < n:
        since += f" ({r['valued_days_since']} of {n} days valued)"
    tail = f"pROAS {then} → {since}, {side} {r['threshold']:.2f}"
    if r["action"] == "scale" and r["verdict"] == "below":
        tail += ": scale back"
    return f"{head}: {', '.join([*parts, tail])}"


def with_follow_ups(
    actions: pd.DataFrame,
    outcomes: pd.DataFrame,
    action_log: pd.DataFrame,
    day: str,
    rules: FollowUpRules,
) -> pd.DataFrame:
    """The day's actions with the follow-ups' consequences: `unscale` and `expand`.

    - a scale whose follow-up says its pROAS since fell below scale_roas: `unscale` (scale
      back), unless the day's own decision for the object is to pause it;
    - a scale of an object whose budget went up in the `WEEK_DAYS` report days before `day` by
      so much that another scale would pass 1 + max_budget_increase: `expand` instead.
    """
    out = actions.copy()
    if not len(out):
        return out
    key = list(zip(out["platform"], out["level"], out["object_id"].astype("str"), strict=True))
    below = {
        (str(r["platform"]), str(r["level"]), str(r["object_id"])): r
        for r in outcomes.to_dict("records")
        if r["action"] == "scale" and r["verdict"] == "below"
    }
    grown = week_budget_growth(action_log, day)
    cap = 1.0 + rules.max_budget_increase
    for i, k in enumerate(key):
        idx = out.index[i]
        action, reason = str(out.at[idx, "action"]), str(out.at[idx, "reason"])
        if k in below and action != "pause":
            o = below[k]
            out.at[idx, "action"] = SCALE_BACK
            out.at[idx, "reason"] = _cut(
                f"scale back: scaled {o['change']} on {o['action_date']}, pROAS since "
                f"{_ratio(o['proas_since'])} < {rules.scale_roas:.2f} over {o['days']} days "
                f"of cohorts (today's window: {reason})"
            )
        elif action == "scale":
            factor = grown.get((k[0], k[2]), 1.0)
            if factor * rules.scale_factor > cap + 1e-9:
                out.at[idx, "action"] = EXPAND
                out.at[idx, "reason"] = _cut(
                    f"{reason}; budget already {_pct(factor - 1.0)} in "
                    f"{WEEK_DAYS} days (cap +{rules.max_budget_increase:.0%}): expand (copy "
                    "the adset) instead"
                )
    return out


def week_budget_growth(action_log: pd.DataFrame, day: str) -> dict[tuple[str, str], float]:
    """Per (platform, object id): the applied budget changes of the WEEK_DAYS report days
    before `day`, multiplied. A campaign's is its most grown adset's (the rows it was the
    source of)."""
    if not len(action_log):
        return {}
    end = dt.date.fromisoformat(day)
    first = (end - dt.timedelta(days=WEEK_DAYS)).isoformat()
    dates = action_log["date"].astype("str").str[:10]
    rows = action_log.loc[
        (dates >= first)
        & (dates < day)
        & (action_log["status"] == APPLIED)
        & action_log["action"].isin(BUDGET_ACTIONS)
    ]
    per_object: dict[tuple[str, str], float] = {}
    sources: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for r in rows.sort_values("id", kind="stable").to_dict("records"):
        before, after = _int(r.get("value_before")), _int(r.get("value_after"))
        if before <= 0:
            continue
        k = (str(r["platform"]), str(r["object_id"]))
        per_object[k] = per_object.get(k, 1.0) * after / before
        source = r.get("source_id")
        if source is not None and not pd.isna(source) and str(source):
            sources.setdefault((k[0], str(source)), set()).add(k)
    out = dict(per_object)
    for k, members in sources.items():
        out[k] = max(out.get(k, 1.0), *(per_object[m] for m in members))
    return out


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """The outcome columns' dtypes (also for an empty frame): nullable where undefined."""
    ints = {c for c in OUTCOME_COLUMNS if c.endswith(("_micros", "days", "changed"))}
    ints |= {"installs_before", "installs_since", "valued_days_before", "valued_days_since"}
    nullable = {"cpi_before_micros": "Int64", "cpi_since_micros": "Int64", "object_name": "object"}
    nullable |= {c: "Float64" for c in ("proas_before", "proas_since", "proas_expected")}
    types = {c: nullable.get(c, "int64" if c in ints else "str") for c in OUTCOME_COLUMNS}
    return df.astype({**types, "threshold": "float64"})


def _int(value: Any) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    try:
        return int(str(value))
    except ValueError:
        return 0


def _float(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def _pct(share: float) -> str:
    return f"{share:+.0%}"


def _delta(now: float, then: float) -> str:
    if then <= 0:
        return "n/a"
    return _pct(now / then - 1.0)


def _ratio(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.2f}"


def _money(micros: float, currency: str) -> str:
    amount = Decimal(round(micros)) / Decimal(MICROS)
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency)
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


def _cut(text: str, limit: int = 512) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
