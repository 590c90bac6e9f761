"""pLTV against the sandbox world's truth: per-campaign 180-day revenue on a medium world.

Slow (~1-2 minutes: a 210-day medium world is built once per run): marked `slow`, still run in CI.
The world is long enough for the naive baseline's D180/D7 ratio to come from cohorts that
really reached 180 days.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from adperf.fx import load_rates
from adperf.pseudonym import pseudonymize
from adperf.sandbox.world import build_world
from adperf.sources.payments import fetch_payments
from adperf.transform.ltv import build_cohort_pltv, build_rfm, fit_ltv

pytestmark = pytest.mark.slow

TZ = "Asia/Seoul"
KEY = b"truth-test-key"
END = dt.date(2026, 11, 27)
WORLD_DAYS = 210  # 30 days of cohorts 180+ days old for the baseline's ratio
HORIZON = 180  # the truth's horizon (truth/params.json: horizon_days)
AGES = range(7, 35)  # evaluated cohorts: 4 weeks of installs, each with its D7 revenue known
MIN_INSTALLS = 500
MAX_ERROR = 0.20  # per campaign; see the test for how many must meet it


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("truth") / "world"
    start = END - dt.timedelta(days=WORLD_DAYS - 1)
    meta = build_world(root, seed=7, start=start, end=END, profile="medium", report_timezone=TZ)
    engine = sa.create_engine(f"sqlite:///{root / 'payments.sqlite'}")
    try:
        payments, _ = fetch_payments(
            engine,
            first=start - dt.timedelta(days=800),  # legacy users paid before the world began
            last=END,
            timezone=TZ,
            hmac_key=KEY,
            fx=load_rates(root / "fx.csv", "USD"),
        )
    finally:
        engine.dispose()
    raw = pd.read_parquet(root / "installs.parquet")
    installs = pd.DataFrame(
        {
            "date": raw["install_time"].dt.tz_convert(TZ).dt.strftime("%Y-%m-%d"),
            "install_time": raw["install_time"],
            "user_pid": pseudonymize(pa.array(raw["customer_user_id"]), KEY).to_pandas(),
            "platform": raw["media_source"].map(meta["media_source_map"]).fillna("organic"),
            "campaign_id": raw["campaign_id"],
            "adset_id": raw["adset_id"],
        }
    )
    truth = json.loads((root / "truth" / "params.json").read_text())
    return {"payments": payments, "installs": installs, "truth": truth}


def revenue_by_age(payments: pd.DataFrame, installs: pd.DataFrame) -> pd.DataFrame:
    """Net revenue per (user's first install day, campaign, age in days)."""
    users = installs[installs["user_pid"].notna()].sort_values("install_time")
    users = users.drop_duplicates("user_pid")[["user_pid", "date", "platform", "campaign_id"]]
    users["campaign_id"] = users["campaign_id"].where(users["platform"] != "organic", "organic")
    daily = payments.groupby(["user_pid", "date"], as_index=False)["amount_micros"].sum()
    m = daily.merge(users, on="user_pid", suffixes=("", "_install"))
    m["age"] = (pd.to_datetime(m["date"]) - pd.to_datetime(m["date_install"])).dt.days
    return m[m["age"] >= 0]


def test_predicted_180_day_revenue_per_campaign_is_within_20_percent_and_beats_baseline(
    world: dict[str, Any],
) -> None:
    payments, installs, truth = world["payments"], world["installs"], world["truth"]
    day = END.isoformat()
    rfm = build_rfm(payments, day)
    model = fit_ltv(rfm)
    cohorts = [(END - dt.timedelta(days=a)).isoformat() for a in AGES]
    pltv = build_cohort_pltv(
        day, model, installs, payments, horizon_days=HORIZON, cohort_dates=cohorts
    )
    per_campaign = (
        pltv[pltv["level"] == "campaign"]
        .groupby("campaign_id")[["installs", "users", "pltv_micros"]]
        .sum()
    )

    # Naive baseline: D7 revenue x the campaign's D180/D7 ratio over cohorts 180+ days old.
    by_age = revenue_by_age(payments, installs)
    installed = pd.to_datetime(by_age["date_install"])
    old = by_age[installed <= pd.Timestamp(END - dt.timedelta(days=HORIZON))]
    d7 = old[old["age"] <= 7].groupby("campaign_id")["amount_micros"].sum()
    d180 = old[old["age"] < HORIZON].groupby("campaign_id")["amount_micros"].sum()
    ratio = d180 / d7
    pooled_ratio = float(d180.sum() / d7.sum())
    evaluated = by_age[by_age["date_install"].isin(cohorts) & (by_age["age"] <= 7)]
    d7_now = evaluated.groupby("campaign_id")["amount_micros"].sum()

    rows = []
    for campaign_id, r in per_campaign.iterrows():
        if campaign_id not in truth or r["installs"] < MIN_INSTALLS:
            continue
        true_value = truth[campaign_id]["expected_net_revenue_per_install_usd"]
        d7_per_user = d7_now.get(campaign_id, 0) / 1e6 / r["users"]
        rows.append(
            {
                "campaign": truth[campaign_id].get("campaign_name", campaign_id),
                "installs": int(r["installs"]),
                "true_180d": true_value,
                "predicted": r["pltv_micros"] / 1e6 / r["installs"],
                "baseline": d7_per_user * ratio.get(campaign_id, np.nan),
                "pooled_baseline": d7_per_user * pooled_ratio,
            }
        )
    table = pd.DataFrame(rows)
    for col in ("predicted", "baseline", "pooled_baseline"):
        table[f"{col}_err"] = table[col] / table["true_180d"] - 1
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\n180-day revenue per install (USD), cohorts aged 7-34 days on", day)
        print(table.round(3).to_string(index=False))
    mean_abs = table[["predicted_err", "baseline_err", "pooled_baseline_err"]].abs().mean()
    print("mean |error|:", mean_abs.round(3).to_dict())

    within = table["predicted_err"].abs() <= MAX_ERROR
    print(f"within {MAX_ERROR:.0%}: {int(within.sum())} of {len(table)} campaigns")
    assert len(table) >= 10  # every campaign of the medium world has 500+ installs here
    # A cohort of 2-4k installs has ~100 payers with heavy-tailed spend: its realized revenue
    # alone is ~15% (1 sd) off its campaign's expectation, and any predictor using the cohort
    # inherits that -- the baseline, on the same cohorts, is off by up to a third. So: nearly
    # all campaigns within 20%, none far off, and clearly better than both baselines.
    assert within.mean() >= 0.85, table.loc[~within].to_dict("records")
    assert table["predicted_err"].abs().max() <= 0.35
    assert mean_abs["predicted_err"] < mean_abs["baseline_err"]
    assert mean_abs["predicted_err"] < mean_abs["pooled_baseline_err"]
    assert abs(table["predicted_err"].mean()) < 0.05  # no overall bias
    # Campaigns are told apart: the prediction ranks them as the truth does.
    assert table["predicted"].corr(table["true_180d"], method="spearman") > 0.9
