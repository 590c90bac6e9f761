"""build_user_map, build_attribution and build_reconciliation on hand-checked tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from adperf.errors import ReconciliationError
from adperf.schema import INSTALLS, PAYMENTS
from adperf.transform.attribution import (
    build_attribution,
    build_reconciliation,
    build_user_map,
)

DAY = "2026-11-27"


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with every missing value as None, so expectations are plain literals."""
    return [
        {str(k): (None if pd.isna(v) else v) for k, v in row.items()}
        for row in df.astype(object).to_dict("records")
    ]


def installs(
    *rows: tuple[str | None, str, str, str | None, str | None, str | None],
) -> pd.DataFrame:
    """INSTALLS rows from (user_pid, install_time, platform, campaign_id, adset_id, ad_id)."""
    data = []
    for user, ts, platform, campaign, adset, ad in rows:
        data.append(
            {
                "date": ts[:10],
                "install_time": pd.Timestamp(ts, tz="UTC"),
                "user_pid": user,
                "device_pid": f"dev-{user}",
                "app_id": "app",
                "media_source": platform,
                "platform": platform,
                "campaign_id": campaign,
                "campaign_name": None if campaign is None else f"name-{campaign}",
                "adset_id": adset,
                "adset_name": None,
                "ad_id": ad,
                "ad_name": None,
                "country": "US",
                "device_os": "ios",
            }
        )
    return pd.DataFrame(data, columns=INSTALLS.columns)


def payments(*rows: tuple[str, str, int]) -> pd.DataFrame:
    """PAYMENTS rows of DAY from (user_pid, kind, amount_micros), refunds given negative."""
    data = [
        {
            "date": DAY,
            "payment_id": f"p{i}",
            "user_pid": user,
            "created_at": pd.Timestamp(f"{DAY} 12:00", tz="UTC"),
            "kind": kind,
            "amount_original_micros": amount,
            "currency_original": "USD",
            "fx_rate": 1.0,
            "amount_micros": amount,
        }
        for i, (user, kind, amount) in enumerate(rows)
    ]
    return pd.DataFrame(data, columns=PAYMENTS.columns)


def user_map(
    *rows: tuple[str, str, str, str | None, str | None, str | None, str | None],
) -> pd.DataFrame:
    """A user map from (user_pid, install_date, platform, campaign_id, name, adset_id, ad_id)."""
    cols = [
        "user_pid",
        "install_date",
        "platform",
        "campaign_id",
        "campaign_name",
        "adset_id",
        "ad_id",
    ]
    return pd.DataFrame(list(rows), columns=cols)


def test_user_map_keeps_each_users_first_install() -> None:
    got = build_user_map(
        installs(
            # u1: the later day's earlier-listed row loses to the earlier install_time
            ("u1", "2026-11-21 07:00", "facebook", "f1", "fs1", "fa1"),
            ("u1", "2026-11-20 08:00", "google_ads", "g1", "gs1", "ga1"),
            # u2: same instant, organic and paid -> the paid install wins
            ("u2", "2026-11-20 09:00", "organic", None, None, None),
            ("u2", "2026-11-20 09:00", "facebook", "f2", "fs2", "fa2"),
            # u3: same instant, two paid -> the lower campaign_id wins
            ("u3", "2026-11-22 10:00", "facebook", "f9", "fs9", "fa9"),
            ("u3", "2026-11-22 10:00", "facebook", "f3", "fs3", "fa3"),
            # u4: organic only
            ("u4", "2026-11-23 11:00", "organic", None, None, None),
            # u5: same instant, organic listed first and a paid source without any ids -> paid
            ("u5", "2026-11-24 12:00", "organic", None, None, None),
            ("u5", "2026-11-24 12:00", "other", None, None, None),
            # unmatched install: not in the map
            (None, "2026-11-20 06:00", "facebook", "f1", "fs1", "fa1"),
        )
    )
    assert records(got) == [
        {
            "user_pid": "u1",
            "install_date": "2026-11-20",
            "platform": "google_ads",
            "campaign_id": "g1",
            "campaign_name": "name-g1",
            "adset_id": "gs1",
            "ad_id": "ga1",
        },
        {
            "user_pid": "u2",
            "install_date": "2026-11-20",
            "platform": "facebook",
            "campaign_id": "f2",
            "campaign_name": "name-f2",
            "adset_id": "fs2",
            "ad_id": "fa2",
        },
        {
            "user_pid": "u3",
            "install_date": "2026-11-22",
            "platform": "facebook",
            "campaign_id": "f3",
            "campaign_name": "name-f3",
            "adset_id": "fs3",
            "ad_id": "fa3",
        },
        {
            "user_pid": "u4",
            "install_date": "2026-11-23",
            "platform": "organic",
            "campaign_id": None,
            "campaign_name": None,
            "adset_id": None,
            "ad_id": None,
        },
        {
            "user_pid": "u5",
            "install_date": "2026-11-24",
            "platform": "other",
            "campaign_id": None,
            "campaign_name": None,
            "adset_id": None,
            "ad_id": None,
        },
    ]


MAP = user_map(
    ("u1", "2026-11-20", "facebook", "c1", "Camp One", "as1", "ad1"),
    ("u2", "2026-11-21", "organic", None, None, None, None),
    ("u3", "2026-11-22", "facebook", "c1", "Camp One", "as1", "ad1"),
    ("u4", "2026-11-23", "google_ads", "g1", "G One", "ag1", "gad1"),
    ("u5", "2026-11-23", "google_ads", "g1", "G One", "ag1", "gad1"),  # does not pay today
)
PAYMENTS_OF_DAY = payments(
    ("u1", "purchase", 5_000_000),  # attributed payer with two payments
    ("u1", "purchase", 2_500_000),
    ("u2", "purchase", 1_000_000),  # organic payer
    ("u9", "purchase", 3_000_000),  # not in the map: unattributed
    ("u3", "refund", -4_000_000),  # refund of an attributed user, negative revenue
    ("u4", "purchase", 990_000),
)


def test_attribution_credits_each_payment_to_the_users_first_install() -> None:
    got = build_attribution(DAY, PAYMENTS_OF_DAY, MAP)
    assert records(got) == [
        {
            "date": DAY,
            "platform": "facebook",
            "campaign_id": "c1",
            "campaign_name": "Camp One",
            "adset_id": "as1",
            "ad_id": "ad1",
            "payers": 2,
            "purchases": 2,
            "revenue_micros": 3_500_000,
        },
        {
            "date": DAY,
            "platform": "google_ads",
            "campaign_id": "g1",
            "campaign_name": "G One",
            "adset_id": "ag1",
            "ad_id": "gad1",
            "payers": 1,
            "purchases": 1,
            "revenue_micros": 990_000,
        },
        {
            "date": DAY,
            "platform": "organic",
            "campaign_id": "organic",
            "campaign_name": "organic",
            "adset_id": None,
            "ad_id": None,
            "payers": 1,
            "purchases": 1,
            "revenue_micros": 1_000_000,
        },
        {
            "date": DAY,
            "platform": "unattributed",
            "campaign_id": "unattributed",
            "campaign_name": "unattributed",
            "adset_id": None,
            "ad_id": None,
            "payers": 1,
            "purchases": 1,
            "revenue_micros": 3_000_000,
        },
    ]
    assert got["revenue_micros"].dtype == "int64"


def test_attribution_names_a_renamed_campaign_once_by_its_latest_install() -> None:
    renamed = user_map(
        ("u1", "2026-11-20", "facebook", "c1", "Old name", "as1", "ad1"),
        ("u3", "2026-11-25", "facebook", "c1", "New name", "as1", "ad1"),
    )
    got = build_attribution(
        DAY, payments(("u1", "purchase", 1_000_000), ("u3", "purchase", 2_000_000)), renamed
    )
    assert records(got[["campaign_name", "payers", "revenue_micros"]]) == [
        {"campaign_name": "New name", "payers": 2, "revenue_micros": 3_000_000}
    ]


def test_attribution_of_no_payments_is_empty_with_the_columns() -> None:
    got = build_attribution(DAY, payments(), MAP)
    assert list(got.columns) == [
        "date",
        "platform",
        "campaign_id",
        "campaign_name",
        "adset_id",
        "ad_id",
        "payers",
        "purchases",
        "revenue_micros",
    ]
    assert len(got) == 0


def test_attribution_rejects_payments_of_another_day() -> None:
    other = payments(("u1", "purchase", 1)).assign(date="2026-11-26")
    with pytest.raises(ValueError, match="2026-11-26"):
        build_attribution(DAY, other, MAP)


def test_reconciliation_is_exact() -> None:
    attribution = build_attribution(DAY, PAYMENTS_OF_DAY, MAP)
    assert build_reconciliation(DAY, PAYMENTS_OF_DAY, attribution) == {
        "total_payments_micros": 8_490_000,
        "attributed_micros": 4_490_000,
        "organic_micros": 1_000_000,
        "unattributed_micros": 3_000_000,
        "restricted_micros": 0,
    }


# u6 and u7 came through networks that withhold user-level data: the MMP says 'restricted'.
RESTRICTED_MAP = pd.concat(
    [
        MAP,
        user_map(
            ("u6", "2026-11-24", "restricted", None, None, None, None),
            ("u7", "2026-11-25", "restricted", None, None, None, None),
        ),
    ],
    ignore_index=True,
)
RESTRICTED_PAYMENTS = pd.concat(
    [
        PAYMENTS_OF_DAY,
        payments(
            ("u6", "purchase", 4_990_000),
            ("u7", "purchase", 1_230_000),
            ("u7", "refund", -230_000),
        ).assign(payment_id=["r1", "r2", "r3"]),
    ],
    ignore_index=True,
)


def test_restricted_installs_are_their_own_bucket_never_other_nor_dropped() -> None:
    got = build_attribution(DAY, RESTRICTED_PAYMENTS, RESTRICTED_MAP)
    restricted = records(got[got["platform"] == "restricted"])
    assert restricted == [
        {
            "date": DAY,
            "platform": "restricted",
            "campaign_id": "restricted",
            "campaign_name": "restricted",
            "adset_id": None,
            "ad_id": None,
            "payers": 2,
            "purchases": 2,
            "revenue_micros": 5_990_000,
        }
    ]
    assert set(got["platform"]) == {
        "facebook",
        "google_ads",
        "organic",
        "restricted",
        "unattributed",
    }
    # The other rows are what they were without the restricted users.
    before = build_attribution(DAY, PAYMENTS_OF_DAY, MAP)
    pd.testing.assert_frame_equal(
        got[got["platform"] != "restricted"].reset_index(drop=True), before
    )


def test_reconciliation_adds_up_with_restricted_revenue_to_the_micro() -> None:
    attribution = build_attribution(DAY, RESTRICTED_PAYMENTS, RESTRICTED_MAP)
    got = build_reconciliation(DAY, RESTRICTED_PAYMENTS, attribution)
    assert got == {
        "total_payments_micros": 14_480_000,
        "attributed_micros": 4_490_000,
        "organic_micros": 1_000_000,
        "unattributed_micros": 3_000_000,
        "restricted_micros": 5_990_000,
    }
    lossy = attribution.loc[attribution["platform"] != "restricted"]
    with pytest.raises(ReconciliationError, match=r"restricted 0 .*difference 5990000 micros"):
        build_reconciliation(DAY, RESTRICTED_PAYMENTS, lossy)


@pytest.mark.parametrize(
    ("drop_platform", "difference"),
    [("organic", "1000000"), ("google_ads", "990000"), ("unattributed", "3000000")],
)
def test_reconciliation_fails_naming_day_and_difference(
    drop_platform: str, difference: str
) -> None:
    attribution = build_attribution(DAY, PAYMENTS_OF_DAY, MAP)
    lossy = attribution.loc[attribution["platform"] != drop_platform]
    with pytest.raises(ReconciliationError, match=rf"{DAY}.*difference {difference} micros"):
        build_reconciliation(DAY, PAYMENTS_OF_DAY, lossy)


def test_reconciliation_fails_off_by_one_micro() -> None:
    attribution = build_attribution(DAY, PAYMENTS_OF_DAY, MAP)
    off = attribution.copy()
    off.loc[off["platform"] == "organic", "revenue_micros"] += 1
    with pytest.raises(ReconciliationError, match="difference -1 micros"):
        build_reconciliation(DAY, PAYMENTS_OF_DAY, off)
