"""One policy's closed loop, day by day (a child of `python -m bench.decisions`).

Runs in a process whose LUIGI_CONFIG_PATH is the policy's luigi.cfg. Writes `decisions.csv`
(date, campaign_id, action: what the policy decided per campaign and day) and `done.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from adperf.actions import ZERO_DECIMAL_CURRENCIES, Settings, scaled_budget, unscaled_budget
from adperf.platforms import APPLE_ADS, TIKTOK
from adperf.sandbox import fake_apple_ads, fake_tiktok
from adperf.sandbox.ad_objects import JsonState, objects_path, sandbox_objects
from adperf.sandbox.entities import CURRENCY_DIGITS
from adperf.transform.outcomes import WEEK_DAYS

PIPELINE_POLICIES = ("old", "naive", "adperf")


def run(folder: Path, spec: dict[str, Any], loop_start: dt.date) -> int:
    import luigi

    from tasks import actions as actions_cli
    from tasks import config, resources
    from tasks.pipeline import DailyReport

    policy, days = str(spec["policy"]), int(spec["days"])
    rules = config.rules()
    settings = Settings(
        scale_factor=config.actions().scale_factor,
        max_budget_increase=config.actions().max_budget_increase,
    )
    meta = resources.ensure_sandbox_world(loop_start - dt.timedelta(days=1))
    root = resources.world_dir()
    rows: list[dict[str, Any]] = []
    times: list[float] = []
    t_all = time.perf_counter()
    for k in range(days):
        day = loop_start + dt.timedelta(days=k)
        iso = day.isoformat()
        t0 = time.perf_counter()
        if policy in PIPELINE_POLICIES:
            result = luigi.build(
                [DailyReport(date=day)], local_scheduler=True, detailed_summary=True, workers=1
            )
            if not result.scheduling_succeeded or "FAILED" in str(result.status):
                print(f"{iso}: DailyReport {result.status}", file=sys.stderr)
                return 1
            decided = _warehouse_actions(folder, iso)
            if policy == "naive":
                decided = _week_capped(_naive(folder, iso, decided, rules), rows, day, settings)
                _apply(root, meta, decided, settings)
            else:
                code = actions_cli.main(day, yes=True, by=f"bench-{policy}")
                if code != 0:
                    print(f"{iso}: actions apply exited {code}", file=sys.stderr)
        else:
            meta = resources.ensure_sandbox_world(day)
            decided = _oracle(root, iso, rules) if policy == "oracle" else {}
            decided = _week_capped(decided, rows, day, settings)
            _apply(root, meta, decided, settings)
        rows.extend({"date": iso, "campaign_id": c, "action": a} for c, a in decided.items())
        times.append(time.perf_counter() - t0)
        print(f"{iso} {policy}: {times[-1]:.1f}s, "
              f"{sum(a == 'scale' for a in decided.values())} scale, "
              f"{sum(a == 'pause' for a in decided.values())} pause", flush=True)  # fmt: skip
    pd.DataFrame(rows, columns=["date", "campaign_id", "action"]).to_csv(
        folder / "decisions.csv", index=False
    )
    total = time.perf_counter() - t_all
    done = {
        "first_day": loop_start.isoformat(),
        "last_day": (loop_start + dt.timedelta(days=days - 1)).isoformat(),
        "seconds": round(total, 1),
        "seconds_per_day": round(total / max(days, 1), 2),
        "first_day_seconds": round(times[0], 1) if times else None,
    }
    (folder / "done.json").write_text(json.dumps(done) + "\n")
    return 0


def _week_capped(
    decided: dict[str, str], rows: list[dict[str, Any]], day: dt.date, settings: Settings
) -> dict[str, str]:
    """The bench's policies under adperf's weekly cap (outcomes.with_follow_ups): a scale that
    would take a campaign's budget past 1 + max_budget_increase over the WEEK_DAYS days before
    `day` is an `expand` instead, which changes nothing in the sandbox (copies are opt-in and do
    not deliver). `rows`: the loop's decisions so far. Without it the oracle and naive rules
    could raise a budget 20% every day (4.3x in 8 days) while adperf stops at 1.44x a week."""
    first = (day - dt.timedelta(days=WEEK_DAYS)).isoformat()
    scales: dict[str, int] = {}
    for r in rows:
        if first <= r["date"] < day.isoformat() and r["action"] == "scale":
            scales[r["campaign_id"]] = scales.get(r["campaign_id"], 0) + 1
    cap = 1.0 + settings.max_budget_increase
    return {
        c: "expand"
        if a == "scale" and settings.scale_factor ** (scales.get(c, 0) + 1) > cap + 1e-9
        else a
        for c, a in decided.items()
    }


def _warehouse_actions(folder: Path, iso: str) -> dict[str, str]:
    """Campaign-level actions the pipeline recommended for the day."""
    with sqlite3.connect(folder / "warehouse.db") as conn:
        got = conn.execute(
            "SELECT object_id, action FROM actions WHERE level = 'campaign' AND date LIKE ?",
            (iso + "%",),
        ).fetchall()
    return {str(o): str(a) for o, a in got}


def _naive(folder: Path, iso: str, pooled: dict[str, str], rules: Any) -> dict[str, str]:
    """D7 ROAS of the window's cohorts that reached D7, x the app-wide pLTV / D7 ratio."""
    day = dt.date.fromisoformat(iso)
    lo = (day - dt.timedelta(days=rules.window_days + 6)).isoformat()
    hi = (day - dt.timedelta(days=7)).isoformat()
    with sqlite3.connect(folder / "warehouse.db") as conn:
        d7 = pd.read_sql(
            "SELECT campaign_id, revenue, spend, installs FROM cohort_roas "
            "WHERE age_days = 7 AND cohort_date BETWEEN ? AND ? AND platform NOT IN "
            "('organic', 'restricted', 'unattributed')",
            conn,
            params=(lo, hi + " 99"),
        )
        window = pd.read_sql(
            "SELECT object_id AS campaign_id, proas, spend FROM actions "
            "WHERE level = 'campaign' AND date LIKE ?",
            conn,
            params=(iso + "%",),
        )
    if d7.empty:
        return {c: "hold" for c in pooled}
    for col in ("revenue", "spend"):
        d7[col] = pd.to_numeric(d7[col]).astype(float)
    by = d7.groupby("campaign_id").sum(numeric_only=True)
    window = window.dropna(subset=["proas"])
    spent = pd.to_numeric(window["spend"]).astype(float).to_numpy()
    # The window's pooled pLTV itself (the lake's pltv_window), not actions.proas x spend: the
    # rule's pROAS is at the recent CPI ([rules] cpi_days), which is adperf's, not naive's.
    value = _window_pltv(iso, window["campaign_id"].astype(str).tolist())
    d7_roas = (by["revenue"] / by["spend"].where(by["spend"] > 0)).reindex(window["campaign_id"])
    ratio_den = float((d7_roas.fillna(0).to_numpy() * spent).sum())
    ratio = value / ratio_den if ratio_den > 0 else None
    out: dict[str, str] = {}
    for cid in pooled:
        if ratio is None or cid not in by.index:
            out[cid] = "hold"
            continue
        r = by.loc[cid]
        if r["spend"] < rules.min_spend or r["installs"] < rules.min_installs:
            out[cid] = "hold"
            continue
        out[cid] = _verdict(r["revenue"] / r["spend"] * ratio, rules)
    return out


def _verdict(roas: float, rules: Any) -> str:
    """adperf's actions on a point ROAS (naive's estimate, the oracle's truth): scale over
    scale_roas, pause under pause_roas, scale back under target_roas, else hold."""
    if roas > rules.scale_roas:
        return "scale"
    if roas < rules.pause_roas:
        return "pause"
    return "unscale" if roas < rules.target_roas else "hold"


def _window_pltv(iso: str, campaigns: list[str]) -> float:
    """The day's pooled window pLTV of `campaigns` (report currency units)."""
    from adperf import lake
    from adperf.schema import MICROS
    from tasks import config

    frame = lake.read_partition(config.data_root(), "pltv_window", "date", iso)
    rows = frame[frame["level"] == "campaign"]
    by = dict(zip(rows["campaign_id"].astype(str), rows["pltv_micros"].astype(int), strict=True))
    return sum(by.get(c, 0) for c in campaigns) / MICROS


def _oracle(root: Path, iso: str, rules: Any) -> dict[str, str]:
    """The truth's verdict per campaign on the day: its true 365-day ROAS against the rules."""
    truth = pd.read_csv(
        root / "truth" / "campaign_value_daily.csv", dtype={"campaign_id": str, "date": str}
    )
    day = truth[(truth["date"] == iso) & (truth["budget_factor"] > 0)]
    return {
        str(c): _verdict(r, rules)
        for c, r in zip(day["campaign_id"], day["true_roas_365d"], strict=True)
    }


def _apply(root: Path, meta: dict[str, Any], decided: dict[str, str], settings: Settings) -> None:
    """The campaign decisions on the fakes' object state, as `actions apply` would make them:
    Facebook and TikTok on each adset (ad group) of the campaign, Google Ads on the campaign
    and its budget, Apple Ads on the campaign; budgets in the currency's minor units."""
    acting = {c: a for c, a in decided.items() if a in ("scale", "unscale", "pause")}
    if not acting:
        return
    base_fb, base_google = sandbox_objects(meta)

    currency = {str(a["advertiser_id"]): str(a["currency"]) for a in meta["tiktok_advertisers"]}
    currency.update({str(o["orgId"]): str(o["currency"]) for o in meta["apple_ads_orgs"]})

    def resized(minor: int, action: str, step: int = 1) -> int:
        change = unscaled_budget if action == "unscale" else scaled_budget
        return change(minor, settings, step)

    def scaled(amount: str, account: str, action: str) -> str:
        unit = 1 if currency[account] in ZERO_DECIMAL_CURRENCIES else 100
        minor = int((Decimal(amount) * unit).to_integral_value())
        return str(Decimal(resized(minor, action)) / unit)

    def fb(doc: dict[str, Any]) -> None:
        def scale(adset: dict[str, Any], action: str) -> None:
            adset["daily_budget"] = resized(int(adset["daily_budget"]), action)

        adsets = ((a["campaign_id"], a) for a in doc["adsets"].values())
        _act(acting, adsets, ("status", "ACTIVE", "PAUSED"), scale)

    def google(doc: dict[str, Any]) -> None:
        def scale(camp: dict[str, Any], action: str) -> None:
            budget = doc["budgets"][camp["budget_id"]]
            step = 10 ** (6 - CURRENCY_DIGITS["USD"])
            budget["amount_micros"] = resized(int(budget["amount_micros"]), action, step)

        _act(acting, doc["campaigns"].items(), ("status", "ENABLED", "PAUSED"), scale)

    def tiktok(doc: dict[str, Any]) -> None:
        def scale(group: dict[str, Any], action: str) -> None:
            group["budget"] = scaled(str(group["budget"]), str(group["advertiser_id"]), action)

        groups = ((g["campaign_id"], g) for g in doc["adgroups"].values())
        _act(acting, groups, ("operation_status", "ENABLE", "DISABLE"), scale)

    def apple(doc: dict[str, Any]) -> None:
        def scale(camp: dict[str, Any], action: str) -> None:
            budget = camp["dailyBudgetAmount"]
            budget["amount"] = scaled(str(budget["amount"]), str(camp["orgId"]), action)

        _act(acting, doc["campaigns"].items(), ("status", "ENABLED", "PAUSED"), scale)

    seed, profile = int(meta["seed"]), str(meta["profile"])
    _update(objects_path(root, meta, "facebook"), base_fb, fb)
    _update(objects_path(root, meta, "google_ads"), base_google, google)
    _update(objects_path(root, meta, TIKTOK), fake_tiktok.sandbox_objects(seed, profile), tiktok)
    base_apple = fake_apple_ads.sandbox_objects(seed, profile)
    _update(objects_path(root, meta, APPLE_ADS), base_apple, apple)


def _act(
    acting: dict[str, str],
    objects: Iterable[tuple[str, dict[str, Any]]],
    status: tuple[str, str, str],
    scale: Callable[[dict[str, Any], str], None],
) -> None:
    """Pause, scale or scale back each live object of `objects` ((campaign id, object) pairs)
    whose campaign is in `acting`; `status` is (its status field, the live value, the paused
    value); `scale(object, action)` changes its budget."""
    field, live, paused = status
    for campaign_id, obj in objects:
        action = acting.get(campaign_id)
        if action is None or obj[field] != live:
            continue
        if action == "pause":
            obj[field] = paused
        else:
            scale(obj, action)


def _update(path: Path, base: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    JsonState(base, path).update(change)
