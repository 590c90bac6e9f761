"""build_cohort_roas(_segments) on a hand-checked world: the whole triangle of ages 0, 3, 7."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from adperf.schema import INSTALLS, PAYMENTS, SPEND
from adperf.transform.cohort import build_cohort_roas, build_cohort_roas_segments

DAY = "2026-11-27"


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with every missing value as None, so expectations are plain literals."""
    return [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in df.astype(object).to_dict("records")
    ]


def installs(*rows: tuple[str | None, str, str, str | None]) -> pd.DataFrame:
    """INSTALLS rows from (user_pid, install_time, platform, campaign_id)."""
    data = [
        {
            "date": ts[:10],
            "install_time": pd.Timestamp(ts, tz="UTC"),
            "user_pid": user,
            "device_pid": None,
            "app_id": "app",
            "media_source": platform,
            "platform": platform,
            "campaign_id": campaign,
            # the MMP's name differs from the platform's: spend's name must win when present
            "campaign_name": None if campaign is None else f"mmp-{campaign}",
            "adset_id": None,
            "adset_name": None,
            "ad_id": None,
            "ad_name": None,
            "country": None,
            "device_os": None,
        }
        for user, ts, platform, campaign in rows
    ]
    return pd.DataFrame(data, columns=INSTALLS.columns)


def payments(*rows: tuple[str, str, int]) -> pd.DataFrame:
    """PAYMENTS rows from (user_pid, date, amount_micros), refunds negative."""
    data = [
        {
            "date": date,
            "payment_id": f"p{i}",
            "user_pid": user,
            "created_at": pd.Timestamp(f"{date} 12:00", tz="UTC"),
            "kind": "purchase" if amount > 0 else "refund",
            "amount_original_micros": amount,
            "currency_original": "USD",
            "fx_rate": 1.0,
            "amount_micros": amount,
        }
        for i, (user, date, amount) in enumerate(rows)
    ]
    return pd.DataFrame(data, columns=PAYMENTS.columns)


def spend(*rows: tuple[str, str, str, str, int]) -> pd.DataFrame:
    """SPEND rows from (date, platform, campaign_id, ad_id, spend_micros)."""
    data = [
        {
            "date": date,
            "platform": platform,
            "account_id": "acc",
            "campaign_id": campaign,
            "campaign_name": f"name-{campaign}",
            "adset_id": "s",
            "adset_name": None,
            "ad_id": ad,
            "ad_name": None,
            "impressions": 0,
            "clicks": 0,
            "installs_reported": 0,
            "purchases_reported": 0,
            "purchase_value_original_micros": 0,
            "spend_original_micros": micros,
            "currency_original": "USD",
            "fx_rate": 1.0,
            "spend_micros": micros,
        }
        for date, platform, campaign, ad, micros in rows
    ]
    return pd.DataFrame(data, columns=SPEND.columns)


INSTALLS_WINDOW = installs(
    # cohort 2026-11-20 (age 7)
    ("u1", "2026-11-20 01:00", "facebook", "c1"),
    ("u2", "2026-11-20 02:00", "facebook", "c1"),
    (None, "2026-11-20 03:00", "facebook", "c1"),  # unmatched: an install, not a user
    ("u3", "2026-11-20 04:00", "organic", None),
    # 2026-11-22 is no cohort of this report day (no age 5)
    ("u6", "2026-11-22 01:00", "facebook", "c1"),
    # cohort 2026-11-24 (age 3)
    ("u4", "2026-11-24 01:00", "google_ads", "g1"),
    # cohort 2026-11-27 (age 0); u5 installs twice that day and counts once, first install
    ("u5", "2026-11-27 01:00", "facebook", "c1"),
    ("u5", "2026-11-27 05:00", "facebook", "c1"),
)
PAYMENTS_WINDOW = payments(
    ("u1", "2026-11-19", 9_000_000),  # before u1's install day: excluded
    ("u1", "2026-11-20", 5_000_000),
    ("u1", "2026-11-27", 1_000_000),
    ("u2", "2026-11-25", -500_000),  # a refund still counts (negative)
    ("u2", "2026-11-28", 7_000_000),  # after the report day: excluded
    ("u3", "2026-11-21", 2_000_000),
    ("u4", "2026-11-23", 800_000),  # before u4's install day: excluded
    ("u4", "2026-11-24", 1_500_000),
    ("u5", "2026-11-27", 300_000),
    ("u6", "2026-11-25", 4_000_000),  # u6 is in no cohort of this day
)
SPEND_WINDOW = spend(
    ("2026-11-20", "facebook", "c1", "a1", 3_000_000),
    ("2026-11-20", "facebook", "c1", "a2", 1_000_000),
    ("2026-11-20", "google_ads", "g1", "b1", 2_000_000),  # spend, no installs that day
    ("2026-11-22", "facebook", "c1", "a1", 9_000_000),  # no cohort of this day
    ("2026-11-27", "facebook", "c1", "a1", 1_000_000),
    # 2026-11-24: google_ads g1 has an install but no spend -> roas None
)


CELL = ["cohort_date", "platform", "campaign_id", "age_days", "users", "installs", "payers",
        "revenue_micros", "spend_micros", "roas"]  # fmt: skip

# The whole triangle as of DAY with ages 0, 3, 7 (window: 7 days): every cohort at every age it
# has reached; 2026-11-21, -23, -25 and -26 have neither installs nor spend, so no rows.
TRIANGLE = [
    # cohort 2026-11-20 reached 7: u1 pays 5.0 on day 0 and 1.0 on day 7, u2's refund (day 5)
    # lowers D7 only; google_ads spent without installs; u3 (organic) pays on day 1.
    ("2026-11-20", "facebook", "c1", 0, 2, 3, 1, 5_000_000, 4_000_000, 1.25),
    ("2026-11-20", "facebook", "c1", 3, 2, 3, 1, 5_000_000, 4_000_000, 1.25),
    ("2026-11-20", "facebook", "c1", 7, 2, 3, 2, 5_500_000, 4_000_000, 1.375),
    ("2026-11-20", "google_ads", "g1", 0, 0, 0, 0, 0, 2_000_000, 0.0),
    ("2026-11-20", "google_ads", "g1", 3, 0, 0, 0, 0, 2_000_000, 0.0),
    ("2026-11-20", "google_ads", "g1", 7, 0, 0, 0, 0, 2_000_000, 0.0),
    ("2026-11-20", "organic", "organic", 0, 1, 1, 0, 0, 0, None),
    ("2026-11-20", "organic", "organic", 3, 1, 1, 1, 2_000_000, 0, None),
    ("2026-11-20", "organic", "organic", 7, 1, 1, 1, 2_000_000, 0, None),
    # cohort 2026-11-22 reached 5 (D0, D3): u6 pays 4.0 on day 3
    ("2026-11-22", "facebook", "c1", 0, 1, 1, 0, 0, 9_000_000, 0.0),
    ("2026-11-22", "facebook", "c1", 3, 1, 1, 1, 4_000_000, 9_000_000, 4 / 9),
    # cohort 2026-11-24 reached 3: u4's payment before the install does not count; no spend
    ("2026-11-24", "google_ads", "g1", 0, 1, 1, 1, 1_500_000, 0, None),
    ("2026-11-24", "google_ads", "g1", 3, 1, 1, 1, 1_500_000, 0, None),
    # cohort 2026-11-27 reached 0: u5 installs twice and counts once
    ("2026-11-27", "facebook", "c1", 0, 1, 2, 1, 300_000, 1_000_000, 0.3),
]


def test_cohort_roas_is_the_whole_triangle() -> None:
    got = build_cohort_roas(DAY, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW, ages=(0, 3, 7))
    cells = [tuple(r[c] for c in CELL) for r in records(got)]
    assert len(cells) == len(TRIANGLE)
    for cell, want in zip(cells, TRIANGLE, strict=True):
        assert cell[:-1] == want[:-1]
        assert cell[-1] == (None if want[-1] is None else pytest.approx(want[-1]))
    assert set(got["as_of"]) == {DAY}
    # Spend's name is the platform's; without spend that day, the MMP's.
    names = got.set_index(["cohort_date", "campaign_id"])["campaign_name"].to_dict()
    assert names[("2026-11-20", "g1")] == "name-g1"
    assert names[("2026-11-24", "g1")] == "mmp-g1"
    assert {c: str(got[c].dtype) for c in ("users", "revenue_micros", "spend_micros", "roas")} == {
        "users": "int64",
        "revenue_micros": "int64",
        "spend_micros": "int64",
        "roas": "Float64",
    }


@pytest.mark.parametrize(
    ("window_days", "cohorts"),
    [
        (0, ["2026-11-27"]),
        (3, ["2026-11-24", "2026-11-27"]),
        (6, ["2026-11-22", "2026-11-24", "2026-11-27"]),
        (None, ["2026-11-20", "2026-11-22", "2026-11-24", "2026-11-27"]),  # the oldest age
    ],
)
def test_the_window_bounds_the_cohorts(window_days: int | None, cohorts: list[str]) -> None:
    got = build_cohort_roas(
        DAY, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW, ages=(0, 3, 7), window_days=window_days
    )
    assert sorted(set(got["cohort_date"])) == cohorts


def test_a_cell_is_the_same_from_every_day_that_computes_it() -> None:
    # Cohort 2026-11-20 at D3 is reached on 11-23 and computed by every later day: its revenue is
    # complete from then on (the loads keep the latest; it must not drift).
    key = ["cohort_date", "platform", "campaign_id", "age_days"]
    seen = [
        build_cohort_roas(d, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW, ages=(0, 3, 7))
        .set_index(key)
        .loc[("2026-11-20", "facebook", "c1", 3), ["users", "payers", "revenue_micros"]]
        .tolist()
        for d in ("2026-11-23", "2026-11-25", "2026-11-27")
    ]
    assert seen == [[2, 1, 5_000_000]] * 3


def _segmented_installs() -> pd.DataFrame:
    out = INSTALLS_WINDOW.copy()
    out["country"] = ["KR", "US", None, "KR", "KR", "JP", "KR", "KR"]
    out["device_os"] = ["ios", "android", "ios", None, "ios", "android", "ios", "ios"]
    return out


SEGMENT_CELL = ["cohort_date", "platform", "campaign_id", "country", "device_os", "age_days",
                "users", "installs", "payers", "revenue_micros", "spend_micros"]  # fmt: skip
SEGMENTS = [
    # c1's 4.0 of 2026-11-20 shared by installs 1:1:1, the odd micro to the first segment
    ("2026-11-20", "facebook", "c1", "KR", "ios", 0, 1, 1, 1, 5_000_000, 1_333_334),
    ("2026-11-20", "facebook", "c1", "KR", "ios", 3, 1, 1, 1, 5_000_000, 1_333_334),
    ("2026-11-20", "facebook", "c1", "KR", "ios", 7, 1, 1, 1, 6_000_000, 1_333_334),
    ("2026-11-20", "facebook", "c1", "US", "android", 0, 1, 1, 0, 0, 1_333_333),
    ("2026-11-20", "facebook", "c1", "US", "android", 3, 1, 1, 0, 0, 1_333_333),
    ("2026-11-20", "facebook", "c1", "US", "android", 7, 1, 1, 1, -500_000, 1_333_333),
    # the unmatched install: no user, a share of the spend; no country from the MMP
    ("2026-11-20", "facebook", "c1", "unknown", "ios", 0, 0, 1, 0, 0, 1_333_333),
    ("2026-11-20", "facebook", "c1", "unknown", "ios", 3, 0, 1, 0, 0, 1_333_333),
    ("2026-11-20", "facebook", "c1", "unknown", "ios", 7, 0, 1, 0, 0, 1_333_333),
    # spend without installs: all of it in the unknown segment
    ("2026-11-20", "google_ads", "g1", "unknown", "unknown", 0, 0, 0, 0, 0, 2_000_000),
    ("2026-11-20", "google_ads", "g1", "unknown", "unknown", 3, 0, 0, 0, 0, 2_000_000),
    ("2026-11-20", "google_ads", "g1", "unknown", "unknown", 7, 0, 0, 0, 0, 2_000_000),
    ("2026-11-20", "organic", "organic", "KR", "unknown", 0, 1, 1, 0, 0, 0),
    ("2026-11-20", "organic", "organic", "KR", "unknown", 3, 1, 1, 1, 2_000_000, 0),
    ("2026-11-20", "organic", "organic", "KR", "unknown", 7, 1, 1, 1, 2_000_000, 0),
    ("2026-11-22", "facebook", "c1", "KR", "ios", 0, 1, 1, 0, 0, 9_000_000),
    ("2026-11-22", "facebook", "c1", "KR", "ios", 3, 1, 1, 1, 4_000_000, 9_000_000),
    ("2026-11-24", "google_ads", "g1", "JP", "android", 0, 1, 1, 1, 1_500_000, 0),
    ("2026-11-24", "google_ads", "g1", "JP", "android", 3, 1, 1, 1, 1_500_000, 0),
    ("2026-11-27", "facebook", "c1", "KR", "ios", 0, 1, 2, 1, 300_000, 1_000_000),
]


def test_segments_by_country_and_os() -> None:
    got = build_cohort_roas_segments(
        DAY, _segmented_installs(), PAYMENTS_WINDOW, SPEND_WINDOW, ages=(0, 3, 7)
    )
    assert [tuple(r[c] for c in SEGMENT_CELL) for r in records(got)] == SEGMENTS
    # The segments of each cell add up to the cell.
    whole = build_cohort_roas(DAY, _segmented_installs(), PAYMENTS_WINDOW, SPEND_WINDOW, (0, 3, 7))
    key = ["cohort_date", "platform", "campaign_id", "age_days"]
    counts = ["users", "installs", "payers", "revenue_micros", "spend_micros"]
    summed = got.groupby(key)[counts].sum().sort_index()
    pd.testing.assert_frame_equal(summed, whole.set_index(key)[counts].sort_index())


def test_cohort_of_an_empty_window_is_empty_with_the_columns() -> None:
    got = build_cohort_roas(DAY, installs(), payments(), spend())
    assert len(got) == 0
    assert list(got.columns) == [
        "cohort_date",
        "platform",
        "campaign_id",
        "campaign_name",
        "age_days",
        "users",
        "installs",
        "payers",
        "revenue_micros",
        "spend_micros",
        "roas",
        "as_of",
    ]


def test_segments_of_an_empty_window_are_empty_with_the_columns() -> None:
    got = build_cohort_roas_segments(DAY, installs(), payments(), spend())
    assert len(got) == 0
    assert list(got.columns)[:6] == [
        "cohort_date", "platform", "campaign_id", "country", "device_os", "age_days"
    ]  # fmt: skip
