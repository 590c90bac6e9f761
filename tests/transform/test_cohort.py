"""build_cohort_roas on a hand-checked world of three cohorts (ages 0, 3 and 7)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from adperf.schema import INSTALLS, PAYMENTS, SPEND
from adperf.transform.cohort import build_cohort_roas

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


def test_cohort_roas_by_hand() -> None:
    got = build_cohort_roas(DAY, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW, ages=(0, 3, 7))
    common = {"as_of": DAY}
    assert records(got) == [
        {
            "cohort_date": "2026-11-27",
            "platform": "facebook",
            "campaign_id": "c1",
            "campaign_name": "name-c1",
            "age_days": 0,
            "users": 1,
            "installs": 2,
            "payers": 1,
            "revenue_micros": 300_000,
            "spend_micros": 1_000_000,
            "roas": 0.3,
            **common,
        },
        {
            "cohort_date": "2026-11-24",
            "platform": "google_ads",
            "campaign_id": "g1",
            "campaign_name": "mmp-g1",
            "age_days": 3,
            "users": 1,
            "installs": 1,
            "payers": 1,
            "revenue_micros": 1_500_000,
            "spend_micros": 0,
            "roas": None,
            **common,
        },
        {
            "cohort_date": "2026-11-20",
            "platform": "facebook",
            "campaign_id": "c1",
            "campaign_name": "name-c1",
            "age_days": 7,
            "users": 2,
            "installs": 3,
            "payers": 2,
            "revenue_micros": 5_500_000,
            "spend_micros": 4_000_000,
            "roas": 1.375,
            **common,
        },
        {
            "cohort_date": "2026-11-20",
            "platform": "google_ads",
            "campaign_id": "g1",
            "campaign_name": "name-g1",
            "age_days": 7,
            "users": 0,
            "installs": 0,
            "payers": 0,
            "revenue_micros": 0,
            "spend_micros": 2_000_000,
            "roas": 0.0,
            **common,
        },
        {
            "cohort_date": "2026-11-20",
            "platform": "organic",
            "campaign_id": "organic",
            "campaign_name": "organic",
            "age_days": 7,
            "users": 1,
            "installs": 1,
            "payers": 1,
            "revenue_micros": 2_000_000,
            "spend_micros": 0,
            "roas": None,
            **common,
        },
    ]
    assert {c: str(got[c].dtype) for c in ("users", "revenue_micros", "spend_micros", "roas")} == {
        "users": "int64",
        "revenue_micros": "int64",
        "spend_micros": "int64",
        "roas": "Float64",
    }


def test_cohort_key_is_built_by_exactly_one_report_day() -> None:
    days = ["2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28"]
    loaded = pd.concat(
        [build_cohort_roas(d, INSTALLS_WINDOW, PAYMENTS_WINDOW, SPEND_WINDOW) for d in days]
    )
    key = ["cohort_date", "platform", "campaign_id", "age_days"]
    assert not loaded.duplicated(key).any()
    # cohort 2026-11-24 at age 3 comes from report day 2026-11-27 and nowhere else
    row = loaded.loc[(loaded["cohort_date"] == "2026-11-24") & (loaded["age_days"] == 3)]
    assert row["as_of"].tolist() == ["2026-11-27"]


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
