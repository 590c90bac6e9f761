"""pLTV against the sandbox world's truth: per-campaign 180-day revenue on a medium world.

Slow (~1-2 minutes: a 210-day medium world is built once per run): marked `slow`, still run in CI.
The world is long enough for the naive baseline's D180/D7 ratio to come from cohorts that
really reached 180 days.

Two windows of install cohorts, valued as of the world's last day:
- every cohort that is 7..179 days old (all installs of the last half year whose 180 days are
  not complete yet, each with its D7 revenue known), pooled per campaign: the issue's criterion,
  literally -- each campaign with 500+ installs within 20% of its true expected revenue per
  install, and a smaller error than the naive baseline;
- the youngest four weeks (7..34 days old), where the forecast carries most of the value: a
  statistical criterion (nearly all within 20%, none far off, better than the baselines).
The world also records what each user really brought in 180 days (its purchase timelines run
past its end): the "oracle" column, whose distance to the truth is the sampling noise of the
users a campaign happened to acquire -- no forecast can know it in advance. Part of that noise
is visible on the world's last day (who has paid, how much, how often), the rest comes later:
the "informed" column is the forecast of the world's true process given what each user did so
far, the most any forecast can know of the oracle on that day.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from lifetimes import BetaGeoFitter

from adperf.fx import load_rates
from adperf.pseudonym import pseudonymize
from adperf.sandbox.world import build_world
from adperf.sources.payments import fetch_payments
from adperf.transform.ltv import build_cohort_pltv, build_rfm, fit_ltv
from tests.conftest import background_result

# The 210-day medium world takes ~1 min to build on a quiet machine, 4+ min on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

TZ = "Asia/Seoul"
KEY = b"truth-test-key"
END = dt.date(2026, 11, 27)
WORLD_DAYS = 210  # 30 days of cohorts 180+ days old for the baseline's ratio
HORIZON = 180  # the truth's horizon (truth/params.json: horizon_days)
ALL_AGES = range(7, HORIZON)  # every cohort with its D7 known and its 180 days not over
YOUNG_AGES = range(7, 35)  # the youngest four weeks of those
MIN_INSTALLS = 500
MAX_ERROR = 0.20  # per campaign


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Built in the background by tests/conftest.py when the whole suite runs; else here.
    started = background_result("ltv-truth-world", timeout=1200)
    if started is None:
        root = tmp_path_factory.mktemp("truth") / "world"
        build(root)
    else:
        returncode, out, _, stderr = started
        assert returncode == 0, stderr[-3000:]
        root = out / "world"
    return load_world(root)


def build(root: Path) -> None:
    """The test's world: 210 days of the medium profile ending on END."""
    start = END - dt.timedelta(days=WORLD_DAYS - 1)
    build_world(root, seed=7, start=start, end=END, profile="medium", report_timezone=TZ)


def load_world(root: Path) -> dict[str, Any]:
    """Payments (pseudonymized, as the pipeline extracts them), installs and truth of a world."""
    meta = json.loads((root / "world.json").read_text())
    start = dt.date.fromisoformat(meta["start"])
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
            # As the MMP extract maps them: a restricted network's installs are their own bucket.
            "platform": raw["media_source"]
            .map({**meta["media_source_map"], "restricted": "restricted"})
            .fillna("organic"),
            "campaign_id": raw["campaign_id"],
            "adset_id": raw["adset_id"],
        }
    )
    truth = json.loads((root / "truth" / "params.json").read_text())
    value = pd.read_parquet(root / "truth" / "user_value.parquet")
    return {"payments": payments, "installs": installs, "truth": truth, "user_value": value}


def revenue_by_age(payments: pd.DataFrame, installs: pd.DataFrame) -> pd.DataFrame:
    """Net revenue per (user's first install day, campaign, age in days)."""
    users = installs[installs["user_pid"].notna()].sort_values("install_time")
    users = users.drop_duplicates("user_pid")[["user_pid", "date", "platform", "campaign_id"]]
    bucket = users["platform"].isin(["organic", "restricted"])
    users["campaign_id"] = users["campaign_id"].where(~bucket, users["platform"])
    daily = payments.groupby(["user_pid", "date"], as_index=False)["amount_micros"].sum()
    m = daily.merge(users, on="user_pid", suffixes=("", "_install"))
    m["age"] = (pd.to_datetime(m["date"]) - pd.to_datetime(m["date_install"])).dt.days
    return m[m["age"] >= 0]


def informed_forecast(world: dict[str, Any], cohorts: list[str]) -> pd.Series:
    """Per campaign: the 180-day net revenue per user of `cohorts` that a forecast knowing the
    world's TRUE process (truth/params.json) expects, given each user's own purchases up to END.

    It sees what the pipeline sees (users with an id, their payments), so its distance to the
    oracle is the part of the users' outcome that no forecast can know on END: the purchases
    still to come. A payer: purchases so far + BG/NBD's conditional expected purchases until
    day 180 (lifetimes, not adperf's code) x Gamma-Gamma's conditional mean spend; a user who
    has not paid: P(payer | no purchase by its age) x the value of a first purchase between
    that age and the 60-day cut of the first-purchase delay. Net of refunds at the true rate.
    """
    payments, installs, truth = world["payments"], world["installs"], world["truth"]
    users = installs[installs["user_pid"].notna()].sort_values("install_time")
    users = users.drop_duplicates("user_pid")
    users = users[users["date"].isin(cohorts)].copy()
    bucket = users["platform"].isin(["organic", "restricted"])
    users["campaign_id"] = users["campaign_id"].where(~bucket, users["platform"])
    users = users[users["campaign_id"].isin(list(truth))]
    end = pd.Timestamp(END + dt.timedelta(days=1), tz=TZ)
    users["age"] = (end - users["install_time"]).dt.total_seconds() / 86400.0
    bought = payments[
        (payments["kind"] == "purchase") & payments["user_pid"].isin(users["user_pid"])
    ]
    installed = users.set_index("user_pid")["install_time"]
    t = (bought["created_at"] - bought["user_pid"].map(installed)).dt.total_seconds() / 86400.0
    seen = (
        bought.assign(t=t, usd=bought["amount_micros"] / 1e6)
        .groupby("user_pid")
        .agg(n=("t", "size"), first=("t", "min"), last=("t", "max"), usd=("usd", "sum"))
    )
    users = users.join(seen, on="user_pid")
    out = {}
    for campaign_id, u in users.groupby("campaign_id"):
        p = truth[campaign_id]
        bg = BetaGeoFitter()
        bg.params_ = pd.Series(p["bgnbd"])[["r", "alpha", "a", "b"]]
        gg, delay = p["gammagamma"], p["first_purchase_delay"]
        # Mean spend per purchase as the world draws it (store prices clamp the Gamma draws).
        per_purchase = p["expected_revenue_per_install_usd"] / p["payer_rate"]
        per_purchase /= p["expected_purchases_per_payer"]
        clamp = per_purchase / (gg["p"] * gg["v"] / (gg["q"] - 1.0))
        horizon, cut = p["horizon_days"], delay["max_days"]
        value = np.zeros(len(u))
        paid = u["n"].notna().to_numpy()
        age = u["age"].to_numpy()
        if paid.any():
            n, first = u["n"].to_numpy()[paid], u["first"].to_numpy()[paid]
            x, span = n - 1, age[paid] - first
            more = bg.conditional_expected_number_of_purchases_up_to_time(
                horizon - age[paid], x, u["last"].to_numpy()[paid] - first, span
            )
            usd = u["usd"].to_numpy()[paid]
            spend = clamp * gg["p"] * (gg["v"] + usd) / (gg["p"] * n + gg["q"] - 1.0)
            value[paid] = usd + np.nan_to_num(np.asarray(more, dtype="float64")) * spend

        # First purchase delay: fast and slow exponentials, each truncated at `cut` days.
        days = np.linspace(0.0, cut, 6001)
        f = delay["fast_share"] * _truncated_exponential(days, delay["fast_mean_days"], cut)
        f += (1 - delay["fast_share"]) * _truncated_exponential(days, delay["slow_mean_days"], cut)
        worth = per_purchase * (1.0 + bg.expected_number_of_purchases_up_to_time(horizon - days))
        step = days[1] - days[0]
        later_value = np.cumsum((f * worth)[::-1])[::-1] * step  # first purchase after each day
        later = np.cumsum(f[::-1])[::-1] * step  # P(first purchase after each day | payer)
        rate = p["payer_rate"]
        unpaid = age[~paid]
        value[~paid] = (
            rate
            * np.interp(unpaid, days, later_value, right=0.0)
            / (1.0 - rate + rate * np.interp(unpaid, days, later, right=0.0))
        )
        out[campaign_id] = float(value.mean()) * (1.0 - p["refund_rate"])
    return pd.Series(out, dtype="float64")


def _truncated_exponential(days: np.ndarray, mean: float, cut: float) -> np.ndarray:
    """Density at `days` of an exponential with mean `mean` truncated at `cut`."""
    return np.exp(-days / mean) / mean / -np.expm1(-cut / mean)


@pytest.fixture(scope="module")
def tables(world: dict[str, Any]) -> dict[str, pd.DataFrame]:
    return build_tables(world)


def build_tables(world: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Per campaign with 500+ installs, for each window: truth, prediction, baselines, oracle
    and the informed forecast."""
    payments, installs, truth = world["payments"], world["installs"], world["truth"]
    day = END.isoformat()
    model = fit_ltv(build_rfm(payments, day))
    dates = {a: (END - dt.timedelta(days=a)).isoformat() for a in ALL_AGES}
    cohorts = list(dates.values())
    # replicates=0: the point value is what is checked here, not the interval.
    pltv = build_cohort_pltv(
        day, model, installs, payments, horizon_days=HORIZON, cohort_dates=cohorts, replicates=0
    )
    pltv = pltv[pltv["level"] == "campaign"]

    # Naive baseline: D7 revenue x the campaign's D180/D7 ratio over cohorts 180+ days old.
    by_age = revenue_by_age(payments, installs)
    installed = pd.to_datetime(by_age["date_install"])
    old = by_age[installed <= pd.Timestamp(END - dt.timedelta(days=HORIZON))]
    d7 = old[old["age"] <= 7].groupby("campaign_id")["amount_micros"].sum()
    d180 = old[old["age"] < HORIZON].groupby("campaign_id")["amount_micros"].sum()
    ratio = d180 / d7
    pooled_ratio = float(d180.sum() / d7.sum())
    value = world["user_value"]

    out = {}
    for name, ages in (("all", ALL_AGES), ("young", YOUNG_AGES)):
        cohorts = [dates[a] for a in ages]
        per_campaign = (
            pltv[pltv["date"].isin(cohorts)]
            .groupby("campaign_id")[["installs", "users", "pltv_micros"]]
            .sum()
        )
        evaluated = by_age[by_age["date_install"].isin(cohorts) & (by_age["age"] <= 7)]
        d7_now = evaluated.groupby("campaign_id")["amount_micros"].sum()
        users = value[value["install_date"].isin(cohorts)]
        oracle = users.groupby("campaign_id")["net_revenue_180d_usd"].agg(["sum", "size"])
        informed = informed_forecast(world, cohorts)
        rows = []
        for campaign_id, r in per_campaign.iterrows():
            if campaign_id not in truth or r["installs"] < MIN_INSTALLS:
                continue
            d7_per_user = d7_now.get(campaign_id, 0) / 1e6 / r["users"]
            rows.append(
                {
                    "campaign": truth[campaign_id].get("campaign_name", campaign_id),
                    "installs": int(r["installs"]),
                    "true_180d": truth[campaign_id]["expected_net_revenue_per_install_usd"],
                    "predicted": r["pltv_micros"] / 1e6 / r["installs"],
                    "baseline": d7_per_user * ratio.get(campaign_id, np.nan),
                    "pooled_baseline": d7_per_user * pooled_ratio,
                    "oracle": oracle.loc[campaign_id, "sum"] / oracle.loc[campaign_id, "size"],
                    "informed": informed[campaign_id],
                }
            )
        table = pd.DataFrame(rows)
        for col in ("predicted", "baseline", "pooled_baseline", "oracle", "informed"):
            table[f"{col}_err"] = table[col] / table["true_180d"] - 1
        # The forecast against what these very users brought (truth known to the world only).
        table["predicted_vs_oracle"] = table["predicted"] / table["oracle"] - 1
        with pd.option_context("display.width", 250, "display.max_columns", 30):
            print(f"\n180-day revenue per install (USD), cohorts aged {ages.start}-{ages.stop - 1}")
            print(table.round(3).to_string(index=False))
        errors = table.filter(like="_err").abs()
        print("mean |error|:", errors.mean().round(3).to_dict())
        print("max |error|:", errors.max().round(3).to_dict())
        out[name] = table
    return out


def test_every_campaign_within_20_percent_over_all_cohorts_and_better_than_baseline(
    tables: dict[str, pd.DataFrame],
) -> None:
    """The issue's criterion, literally, on each campaign's cohorts aged 7-179 days pooled."""
    table = tables["all"]
    assert len(table) >= 10  # every campaign of the medium world has 500+ installs here
    within = table["predicted_err"].abs() <= MAX_ERROR
    assert within.all(), table.loc[~within].to_dict("records")
    mean_abs = table.filter(like="_err").abs().mean()
    assert mean_abs["predicted_err"] < mean_abs["baseline_err"]
    assert mean_abs["predicted_err"] < mean_abs["pooled_baseline_err"]
    assert abs(table["predicted_err"].mean()) < 0.05  # no overall bias


def test_youngest_cohorts_nearly_all_within_20_percent_and_better_than_baseline(
    tables: dict[str, pd.DataFrame],
) -> None:
    """Cohorts aged 7-34 days: most of their value is still forecast."""
    table = tables["young"]
    assert len(table) >= 10
    within = table["predicted_err"].abs() <= MAX_ERROR
    print(f"within {MAX_ERROR:.0%}: {int(within.sum())} of {len(table)} campaigns")
    # Pooled over four weeks a campaign has only a few hundred payers with heavy-tailed spend:
    # what its users really bring in 180 days (the oracle) is itself more than 20% off the
    # campaign's expectation for several campaigns (3 of 35 on this world, up to +34%), and a
    # forecast from these users inherits that. "Every campaign within 20%" is out of reach of
    # any forecast here, so: nearly all within 20%, none far off, better than both baselines,
    # no farther from the truth than the users' own outcome, and the errors follow what these
    # users did so far (sampling) rather than a bias of the model.
    assert within.mean() >= 0.85, table.loc[~within].to_dict("records")
    assert table["predicted_err"].abs().max() <= 0.35
    mean_abs = table.filter(like="_err").abs().mean()
    assert mean_abs["predicted_err"] < mean_abs["baseline_err"]
    assert mean_abs["predicted_err"] < mean_abs["pooled_baseline_err"]
    assert mean_abs["predicted_err"] <= 1.1 * mean_abs["oracle_err"]
    # Followed against the informed forecast, not the oracle: two thirds of these users'
    # 180-day revenue comes after the world's last day, and so does much of the oracle's
    # distance to the truth (a few heavy payers' purchases still to come). How much of it is
    # visible by then is luck of the draw: the informed forecast, which knows the true process,
    # correlates with the oracle only 0.40 on this world (0.76, 0.88, 0.76 with seeds 1-3), so
    # a bound on the forecast's correlation with the oracle measured the sample more than the
    # forecast (0.21 here; 0.59, 0.77, 0.66). Against the informed forecast: 0.79 here (0.82,
    # 0.93, 0.86); a forecast as accurate but blind to these users scores about 0.
    assert table["predicted_err"].corr(table["informed_err"]) > 0.5
    assert abs(table["predicted_err"].mean()) < 0.05  # no overall bias
    # Campaigns are told apart: the prediction ranks them as the truth does.
    assert table["predicted"].corr(table["true_180d"], method="spearman") > 0.9


def test_the_oracle_is_what_the_payments_show_where_both_are_known(world: dict[str, Any]) -> None:
    """user_value.parquet (the oracle) against the payments of cohorts whose 180 days are over."""
    payments, installs, value = world["payments"], world["installs"], world["user_value"]
    last = (END - dt.timedelta(days=HORIZON)).isoformat()
    by_age = revenue_by_age(payments, installs)
    seen = by_age[(by_age["date_install"] <= last) & (by_age["age"] < HORIZON)]
    seen = seen.groupby("campaign_id")["amount_micros"].sum() / 1e6
    value = value[value["install_date"] <= last].copy()
    value["user_pid"] = pseudonymize(pa.array(value["user_id"]), KEY).to_pandas()
    with_id = value[value["user_pid"].isin(installs["user_pid"].dropna())]
    oracle = with_id.groupby("campaign_id")["net_revenue_180d_usd"].sum()
    both = pd.concat({"payments": seen, "oracle": oracle}, axis=1).dropna()
    assert len(both) >= 10
    # Not to the cent: a purchase refunded after its user's day 180 is net zero in the oracle
    # but still revenue in the payments, and KRW payments are rounded to whole won.
    rel = both["payments"] / both["oracle"] - 1
    assert rel.abs().max() < 0.03, rel.round(4).to_dict()
    assert abs(both["payments"].sum() / both["oracle"].sum() - 1) < 0.01
    # The 365-day truth of the same world: more than the 180-day one, less than twice it.
    for p in world["truth"].values():
        ratio = (
            p["expected_net_revenue_per_install_usd_365d"]
            / p["expected_net_revenue_per_install_usd"]
        )
        assert 1.0 < ratio < 2.0


if __name__ == "__main__":  # python -m tests.transform.test_ltv_truth ROOT (tests/conftest.py)
    import sys

    build(Path(sys.argv[1]))
