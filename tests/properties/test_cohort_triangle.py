"""Hypothesis properties of the cohort triangle: its shape, revenue by age, segments that add up.

Revenue is net of refunds (adperf.transform.cohort): a cohort's gross revenue never falls with
age, and its net revenue is the gross less the refunds, so it falls only by a refund.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adperf.schema import INSTALLS, PAYMENTS
from adperf.transform.cohort import build_cohort_roas, build_cohort_roas_segments

DAY = "2026-11-20"
AGES = (0, 2, 5)
WINDOW = 6
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = ["cohort_date", "platform", "campaign_id"]
COUNTS = ["users", "installs", "payers", "revenue_micros", "spend_micros"]

users = st.sampled_from([f"u{i}" for i in range(6)])
days = st.integers(0, WINDOW + 1).map(
    lambda back: (dt.date.fromisoformat(DAY) - dt.timedelta(days=back)).isoformat()
)


@st.composite
def world(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Installs, payments (refunds negative) and spend over the window and a day before it."""
    installs = []
    for k in range(draw(st.integers(0, 10))):
        platform = draw(st.sampled_from(["facebook", "google_ads", "organic"]))
        day = draw(days)
        installs.append(
            {
                "date": day,
                "install_time": pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=k),
                "user_pid": draw(st.one_of(st.none(), users)),
                "platform": platform,
                "campaign_id": None if platform == "organic" else f"c{k % 2}",
                "campaign_name": None,
                "country": draw(st.sampled_from([None, "KR", "US"])),
                "device_os": draw(st.sampled_from([None, "ios", "android"])),
            }
        )
    payments = []
    for k in range(draw(st.integers(0, 14))):
        amount = draw(st.integers(1, 10**9))
        refund = draw(st.booleans())
        payments.append(
            {
                "date": draw(days),
                "payment_id": f"p{k}",
                "user_pid": draw(users),
                "kind": "refund" if refund else "purchase",
                "amount_micros": -amount if refund else amount,
            }
        )
    spend = [
        {
            "date": draw(days),
            "platform": draw(st.sampled_from(["facebook", "google_ads"])),
            "campaign_id": f"c{k % 2}",
            "campaign_name": f"name{k}",
            "spend_micros": draw(st.integers(0, 10**9)),
        }
        for k in range(draw(st.integers(0, 6)))
    ]
    return lake_frames(installs, payments, spend)


def triangle(installs: pd.DataFrame, payments: pd.DataFrame, spend: pd.DataFrame) -> pd.DataFrame:
    return build_cohort_roas(DAY, installs, payments, spend, ages=AGES, window_days=WINDOW)


@FAST
@given(world())
def test_every_cohort_of_the_window_at_every_age_it_reached(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    got = triangle(*data)
    assert not got.duplicated([*KEY, "age_days"]).any()
    report = dt.date.fromisoformat(DAY)
    for (cohort, *_), rows in got.groupby(KEY, dropna=False):
        reached = (report - dt.date.fromisoformat(cohort)).days
        assert 0 <= reached <= WINDOW
        assert sorted(rows["age_days"]) == [a for a in AGES if a <= reached]
        # who the cohort is and what it cost do not change with age
        assert rows[["users", "installs", "spend_micros"]].nunique().max() == 1


@FAST
@given(world())
def test_gross_revenue_never_falls_with_age_and_net_is_gross_less_refunds(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    installs, payments, spend = data
    net = triangle(installs, payments, spend).set_index([*KEY, "age_days"]).sort_index()
    parts = {
        kind: triangle(installs, payments[payments["kind"] == kind], spend)
        .set_index([*KEY, "age_days"])
        .reindex(net.index)
        for kind in ("purchase", "refund")
    }
    gross, refunds = parts["purchase"]["revenue_micros"], parts["refund"]["revenue_micros"]
    assert (net["revenue_micros"] == gross + refunds).all()
    for _, by_age in gross.groupby(level=[0, 1, 2], dropna=False):
        assert by_age.is_monotonic_increasing  # ordered by age: purchases only add up
    for _, by_age in refunds.groupby(level=[0, 1, 2], dropna=False):
        assert by_age.is_monotonic_decreasing
    for _, by_age in net["payers"].groupby(level=[0, 1, 2], dropna=False):
        assert by_age.is_monotonic_increasing


@FAST
@given(world())
def test_segments_add_up_to_the_triangle(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    whole = triangle(*data)
    segments = build_cohort_roas_segments(DAY, *data, ages=AGES, window_days=WINDOW)
    key = [*KEY, "age_days"]
    summed = segments.groupby(key, dropna=False)[COUNTS].sum().sort_index()
    pd.testing.assert_frame_equal(summed, whole.set_index(key)[COUNTS].sort_index())
    assert (segments["spend_micros"] >= 0).all()


def lake_frames(
    installs: list[dict[str, Any]], payments: list[dict[str, Any]], spend: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Drawn rows as the lake reads them back: text columns as object and money as int64, even
    when empty (also for test_cohort_reference)."""
    installs_df = pd.DataFrame(installs).reindex(columns=INSTALLS.columns)
    installs_df = installs_df.astype({c: "object" for c in INSTALLS.columns if c != "install_time"})
    payments_df = pd.DataFrame(payments).reindex(columns=PAYMENTS.columns)
    payments_df = payments_df.astype(
        {"date": "object", "user_pid": "object", "kind": "object", "amount_micros": "int64"}
    )
    columns = ["date", "platform", "campaign_id", "campaign_name", "spend_micros"]
    spend_df = pd.DataFrame(spend, columns=columns).astype(
        {**{c: "object" for c in columns[:-1]}, "spend_micros": "int64"}
    )
    return installs_df, payments_df, spend_df
