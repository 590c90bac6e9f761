"""The cohort triangle equals a straightforward reference, cell by cell, on random worlds.

adperf.transform.cohort computes every cohort of the window at once (one join of payments to the
cohorts' users, cumulated over the ages). The reference here walks each cohort, key and age in
plain Python, as the contract reads: users of the cohort day (first install of the day), their
payments from the install day to cohort_date + age (refunds negative), the cohort day's spend,
shared among a campaign's country/OS segments by installs (largest remainder).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adperf.transform.cohort import UNKNOWN, build_cohort_roas, build_cohort_roas_segments

from .test_cohort_triangle import lake_frames

DAY = "2026-11-20"
SPAN = 10  # installs, payments and spend fall on DAY - SPAN .. DAY + 1
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUCKETS = ("organic", "restricted")
COUNTS = ["users", "installs", "payers", "revenue_micros", "spend_micros"]

Cells = dict[tuple[Any, ...], tuple[Any, ...]]


def _day(back: int) -> str:
    return (dt.date.fromisoformat(DAY) - dt.timedelta(days=back)).isoformat()


days = st.integers(-1, SPAN).map(_day)
maybe = st.one_of(st.none(), st.sampled_from(["KR", "US"]))


@st.composite
def world(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Installs (users installing on several days, or twice a day; no user id; no campaign id),
    payments (refunds; before the install; after the report day) and spend."""
    users = st.sampled_from([f"u{i}" for i in range(8)])
    installs = []
    for k in range(draw(st.integers(0, 25))):
        platform = draw(st.sampled_from(["facebook", "google_ads", *BUCKETS]))
        day = draw(days)
        installs.append(
            {
                "date": day,
                # distinct times: the first install of a day is the earliest
                "install_time": pd.Timestamp(day, tz="UTC") + pd.Timedelta(seconds=k),
                "user_pid": draw(st.one_of(st.none(), users)),
                "platform": platform,
                "campaign_id": None
                if platform in BUCKETS
                else draw(st.sampled_from([None, "c0", "c1"])),
                "campaign_name": draw(st.sampled_from([None, "old", f"n{k}"])),
                "country": draw(maybe),
                "device_os": draw(st.sampled_from([None, "ios", "android"])),
            }
        )
    payments = []
    for k in range(draw(st.integers(0, 30))):
        amount = draw(st.integers(1, 10**12))
        refund = draw(st.booleans())
        payments.append(
            {
                "date": draw(days),
                "payment_id": f"p{k}",
                "user_pid": draw(st.one_of(st.none(), users)),
                "kind": "refund" if refund else "purchase",
                "amount_micros": -amount if refund else amount,
            }
        )
    spend = [
        {
            "date": draw(days),
            "platform": draw(st.sampled_from(["facebook", "google_ads"])),
            "campaign_id": draw(st.sampled_from(["c0", "c1", "c2"])),
            "campaign_name": draw(st.sampled_from([None, f"spend{k}"])),
            "spend_micros": draw(st.integers(0, 10**12)),
        }
        for k in range(draw(st.integers(0, 10)))
    ]
    return lake_frames(installs, payments, spend)


def _none(value: Any) -> Any:
    return None if value is None or value is pd.NA or value != value else value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _none(v) for k, v in row.items()} for row in df.to_dict("records")]


def reference(
    installs: pd.DataFrame,
    payments: pd.DataFrame,
    spend: pd.DataFrame,
    ages: tuple[int, ...],
    window: int,
    segments: bool,
) -> Cells:
    """(cohort, *key, age) -> (campaign_name, users, installs, payers, revenue, spend, roas)."""
    report = dt.date.fromisoformat(DAY)
    inst, pays, spent = _records(installs), _records(payments), _records(spend)
    out: Cells = {}
    for back in range(window, -1, -1):
        cohort = _day(back)
        reached = sorted(a for a in ages if a <= back)

        def key(row: dict[str, Any]) -> tuple[Any, ...]:
            campaign = row["platform"] if row["platform"] in BUCKETS else row["campaign_id"]
            seg = (row["country"] or UNKNOWN, row["device_os"] or UNKNOWN) if segments else ()
            return (row["platform"], campaign, *seg)

        rows = [r for r in inst if r["date"] == cohort]
        installs_n: dict[tuple[Any, ...], int] = defaultdict(int)
        names: dict[tuple[Any, ...], Any] = {}
        for r in rows:
            k = key(r)
            installs_n[k] += 1
            name = r["platform"] if r["platform"] in BUCKETS else r["campaign_name"]
            if names.get(k) is None:
                names[k] = name
        first: dict[str, dict[str, Any]] = {}
        for r in sorted(rows, key=lambda r: r["install_time"]):
            if r["user_pid"] is not None and r["user_pid"] not in first:
                first[r["user_pid"]] = r
        members: dict[tuple[Any, ...], set[str]] = defaultdict(set)
        for pid, r in first.items():
            members[key(r)].add(pid)
        spend_n: dict[tuple[Any, ...], int] = defaultdict(int)
        spend_names: dict[tuple[Any, ...], Any] = {}
        for s in spent:
            if s["date"] == cohort:
                k = (s["platform"], s["campaign_id"])
                spend_n[k] += s["spend_micros"]
                if spend_names.get(k) is None:
                    spend_names[k] = s["campaign_name"]
        cells = set(installs_n)
        share: dict[tuple[Any, ...], int] = {}
        if segments:
            for campaign, total in spend_n.items():
                segs = sorted(k for k in installs_n if k[:2] == campaign)
                if not segs:
                    segs = [(*campaign, UNKNOWN, UNKNOWN)]
                    cells.add(segs[0])
                weights = {k: installs_n.get(k, 1) for k in segs}
                whole = sum(weights.values())
                parts = {k: total * w // whole for k, w in weights.items()}
                left = total - sum(parts.values())
                by_remainder = sorted(segs, key=lambda k: (-(total * weights[k] % whole), k[2:]))
                for i, k in enumerate(by_remainder):
                    share[k] = parts[k] + (1 if i < left else 0)
        else:
            cells |= set(spend_n)
            share = dict(spend_n)
        for k in cells:
            name = spend_names.get(k[:2])
            name = names.get(k) if name is None else name
            cost = share.get(k, 0)
            for age in reached:
                last = (dt.date.fromisoformat(cohort) + dt.timedelta(days=age)).isoformat()
                paid = [
                    p
                    for p in pays
                    if p["user_pid"] in members[k] and cohort <= p["date"] <= min(last, DAY)
                ]
                revenue = sum(p["amount_micros"] for p in paid)
                roas = revenue / cost if cost else None
                counts = (len(members[k]), installs_n.get(k, 0), len({p["user_pid"] for p in paid}))
                named = () if segments else (name,)  # segments have no name column
                out[(cohort, *k, age)] = (*named, *counts, revenue, cost, roas)
    assert report >= dt.date.fromisoformat(_day(window))
    return out


def cells(df: pd.DataFrame, key: list[str]) -> Cells:
    return {
        tuple(r[c] for c in [*key, "age_days"]): tuple(
            r[c] for c in ["campaign_name", *COUNTS, "roas"] if c in r
        )
        for r in _records(df)
    }


ages = st.lists(st.integers(0, 9), min_size=1, max_size=5, unique=True).map(tuple)
windows = st.integers(0, SPAN)


@SETTINGS
@given(world(), ages, windows)
def test_the_triangle_is_the_reference(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], ages: tuple[int, ...], window: int
) -> None:
    got = build_cohort_roas(DAY, *data, ages=ages, window_days=window)
    key = ["cohort_date", "platform", "campaign_id"]
    assert cells(got, key) == reference(*data, ages, window, segments=False)
    assert len(cells(got, key)) == len(got)
    assert (got["as_of"] == DAY).all()
    for col in [*COUNTS, "age_days"]:
        assert got[col].dtype == "int64"


@SETTINGS
@given(world(), ages, windows)
def test_the_segments_are_the_reference(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], ages: tuple[int, ...], window: int
) -> None:
    got = build_cohort_roas_segments(DAY, *data, ages=ages, window_days=window)
    key = ["cohort_date", "platform", "campaign_id", "country", "device_os"]
    assert cells(got, key) == reference(*data, ages, window, segments=True)
    assert len(cells(got, key)) == len(got)


@SETTINGS
@given(world(), ages, windows)
def test_rows_are_oldest_cohort_first_then_by_key_and_age(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame], ages: tuple[int, ...], window: int
) -> None:
    got = build_cohort_roas(DAY, *data, ages=ages, window_days=window)
    order = ["cohort_date", "platform", "campaign_id", "age_days"]
    again = got.sort_values(order, kind="mergesort", na_position="last")
    assert list(again.index) == list(got.index) == list(range(len(got)))
