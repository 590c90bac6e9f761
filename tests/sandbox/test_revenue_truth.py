"""The revenue side refereed by the sandbox truth, on every day of a tiny world.

The world's files go through the real sources (the payments SQLite through SQLAlchemy, the MMP
reports through requests against the fake AppsFlyer endpoint) and the real transforms; the
truth is the world's own bookkeeping (truth/*.csv) or is recomputed here from the raw rows with
exact decimals, never from adperf's code.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf.fx import load_rates
from adperf.pseudonym import pseudonymize_one
from adperf.sandbox.fake_mmp import FakeMmp
from adperf.sandbox.world import ensure_world
from adperf.sources.mmp import fetch_installs
from adperf.sources.payments import fetch_payments
from adperf.timeutil import days
from adperf.transform.attribution import (
    PAID_PLATFORMS,
    build_attribution,
    build_reconciliation,
    build_user_map,
)
from adperf.transform.cohort import AGES, build_cohort_roas

END = dt.date(2026, 11, 20)
TZ = "Asia/Seoul"
KEY = b"truth-test-key"
TOKEN = "truth-test-token"
MICRO = Decimal("0.000001")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny world and everything read from it through the real sources."""
    root = tmp_path_factory.mktemp("truth") / "world"
    meta = ensure_world(root, end=END, profile="tiny", seed=7, report_timezone=TZ)
    first, last = dt.date.fromisoformat(meta["start"]), dt.date.fromisoformat(meta["end"])
    fx = load_rates(root / "fx.csv", "USD")
    engine = sa.create_engine(f"sqlite:///{root / 'payments.sqlite'}")
    try:
        payments, read = fetch_payments(
            engine, first=first, last=last, timezone=TZ, hmac_key=KEY, fx=fx
        )
    finally:
        engine.dispose()
    fake = FakeMmp(installs=pd.read_parquet(root / "installs.parquet"), api_token=TOKEN)
    url = fake.start()
    try:
        installs = fetch_installs(
            base_url=url,
            app_ids=list(meta["apps"]),
            api_token=TOKEN,
            day=first,
            last_day=last,
            timezone=TZ,
            hmac_key=KEY,
            media_source_map=meta["media_source_map"],
        )
    finally:
        fake.stop()
    return {
        "root": root,
        "days": [d.isoformat() for d in days(first, last)],
        "payments": payments,
        "read": read,
        "installs": installs,
        "truth": pd.read_csv(
            root / "truth" / "campaign_daily.csv", dtype=str, keep_default_na=False
        ),
        "totals": pd.read_csv(root / "truth" / "daily_totals.csv", dtype=str),
    }


def _micros(value: str) -> Decimal:
    return Decimal(value) / MICRO


def _close(got_micros: int, truth: Decimal, rows: int) -> bool:
    """Equal up to the half micro each converted payment may be rounded by."""
    return abs(Decimal(got_micros) - truth) <= Decimal(rows) / 2


def test_every_payment_row_is_read(world: dict[str, Any]) -> None:
    read = world["read"]
    engine = sa.create_engine(f"sqlite:///{world['root'] / 'payments.sqlite'}")
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT COUNT(*) FROM payments")).scalar_one()
    engine.dispose()
    assert read["quarantined"] == 0 and read["accepted"] == len(world["payments"]) == total


def test_attributed_installs_per_campaign_equal_the_truth_every_day(world: dict[str, Any]) -> None:
    inst = world["installs"].copy()
    # Organic and restricted installs are a bucket each, keyed by its name, in the truth too.
    inst["key"] = inst["campaign_id"].where(inst["platform"].isin(PAID_PLATFORMS), inst["platform"])
    got = inst.groupby(["date", "key"]).size().to_dict()
    truth = world["truth"]
    assert len(truth) > 0
    for row in truth.itertuples():
        assert got.get((row.date, row.campaign_id), 0) == int(row.installs), row
    assert sum(got.values()) == truth["installs"].astype(int).sum()


def test_reconciliation_holds_and_matches_the_truth_on_every_day(world: dict[str, Any]) -> None:
    payments, installs = world["payments"], world["installs"]
    totals = world["totals"].set_index("date")
    truth = world["truth"]
    checked = 0
    for day in world["days"]:
        day_pay = payments[payments["date"] == day]
        attribution = build_attribution(
            day, day_pay, build_user_map(installs[installs["date"] <= day])
        )
        recon = build_reconciliation(day, day_pay, attribution)  # raises if it does not hold
        n = len(day_pay)
        for ours, theirs in (
            ("total_payments_micros", "total_payments_report"),
            ("attributed_micros", "attributed_report"),
            ("organic_micros", "organic_report"),
            ("unattributed_micros", "unattributed_report"),
            ("restricted_micros", "restricted_report"),
        ):
            assert _close(recon[ours], _micros(totals.loc[day, theirs]), n), (day, ours)
        # Revenue per campaign of the day equals the truth's, campaign by campaign.
        by_campaign = attribution.groupby("campaign_id")["revenue_micros"].sum().to_dict()
        for row in truth[truth["date"] == day].itertuples():
            assert _close(by_campaign.get(row.campaign_id, 0), _micros(row.revenue_report), n)
        checked += n > 0
    assert checked > len(world["days"]) / 2  # most days have payments: the loop checked them


def _truth_cohort_revenue(root: Path, day: str) -> dict[tuple[str, str, int], Decimal]:
    """(cohort_date, campaign, age) → exact revenue (net of refunds) of the whole triangle as
    of `day` (cohorts of the 30 days to it at every age reached), from the raw world rows."""
    users = pd.read_parquet(root / "truth" / "users.parquet")
    users = users[~users["legacy"] & users["has_cuid"]]
    engine = sa.create_engine(f"sqlite:///{root / 'payments.sqlite'}")
    raw = pd.read_sql("SELECT user_id, amount, currency, kind, created_at FROM payments", engine)
    engine.dispose()
    rates = pd.read_csv(root / "fx.csv", dtype=str).set_index(["date", "currency"])["rate"]
    local = pd.to_datetime(raw["created_at"], utc=True).dt.tz_convert(TZ)
    raw["date"] = local.dt.strftime("%Y-%m-%d")
    paid = raw.merge(users[["user_id", "install_date", "campaign_id"]], on="user_id")
    out: dict[tuple[str, str, int], Decimal] = {}
    report_day = dt.date.fromisoformat(day)
    for age, back in ((a, b) for b in range(max(AGES) + 1) for a in AGES if a <= b):
        cohort = (report_day - dt.timedelta(days=back)).isoformat()
        last = (report_day - dt.timedelta(days=back - age)).isoformat()
        rows = paid[(paid["install_date"] == cohort) & paid["date"].between(cohort, last)]
        for r in rows.itertuples():
            sign = -1 if r.kind == "refund" else 1
            value = sign * Decimal(str(r.amount)) * Decimal(rates[(r.date, r.currency)])
            key = (cohort, str(r.campaign_id), age)
            out[key] = out.get(key, Decimal(0)) + value / MICRO
    return out


@pytest.mark.parametrize("offset", [0, 9])
def test_cohort_revenue_per_campaign_equals_the_truth(world: dict[str, Any], offset: int) -> None:
    day = (END - dt.timedelta(days=offset)).isoformat()
    empty_spend = pd.DataFrame(
        {"date": [], "platform": [], "campaign_id": [], "campaign_name": [], "spend_micros": []}
    )
    cohorts = build_cohort_roas(day, world["installs"], world["payments"], empty_spend)
    truth = _truth_cohort_revenue(world["root"], day)
    got = {
        (r.cohort_date, r.campaign_id, r.age_days): int(r.revenue_micros)
        for r in cohorts.itertuples()
    }
    assert sum(1 for v in truth.values() if v) >= 3  # real cohorts with revenue are compared
    # ... off the diagonal too: cohorts at ages younger than they are (the whole triangle).
    off = [
        (c, a)
        for (c, _, a), v in truth.items()
        if v and c < (END - dt.timedelta(days=a)).isoformat()
    ]
    assert len(off) >= 3
    for key in set(truth) | {k for k, v in got.items() if v}:
        assert _close(got.get(key, 0), truth.get(key, Decimal(0)), 50), key
    # No spend on record: ROAS is NULL, never inf or 0.
    assert cohorts["roas"].isna().all()


def test_no_raw_user_id_reaches_the_extracts(world: dict[str, Any]) -> None:
    users = pd.read_parquet(world["root"] / "truth" / "users.parquet")
    raw = set(users["user_id"])
    for frame in (world["payments"], world["installs"]):
        values = {str(v) for v in frame.to_numpy().ravel()}
        assert not raw & values
    sample_user = users.loc[users["has_cuid"] & ~users["legacy"], "user_id"].iloc[0]
    assert pseudonymize_one(sample_user, KEY) in set(world["installs"]["user_pid"])
