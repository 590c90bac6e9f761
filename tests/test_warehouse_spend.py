"""ad_spend_daily across re-pulls: each day ends with the latest figure, in any load order."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
import sqlalchemy as sa

from adperf import warehouse
from adperf.schema import SPEND


def spend_rows(*rows: tuple[str, str, str, int]) -> pd.DataFrame:
    """SPEND rows from (date, platform, ad_id, spend_micros)."""
    records = [
        {
            "date": day,
            "platform": platform,
            "account_id": "1",
            "campaign_id": "c1",
            "campaign_name": "C",
            "adset_id": "s1",
            "adset_name": "S",
            "ad_id": ad_id,
            "ad_name": "A",
            "impressions": 10,
            "clicks": 1,
            "installs_reported": 1,
            "purchases_reported": 0,
            "purchase_value_original_micros": 0,
            "spend_original_micros": micros,
            "currency_original": "USD",
            "fx_rate": 1.0,
            "spend_micros": micros,
        }
        for day, platform, ad_id, micros in rows
    ]
    return pd.DataFrame(records, columns=SPEND.columns)


def table(engine: sa.Engine) -> dict[tuple[str, str, str], Decimal]:
    df = warehouse.read_table(engine, "ad_spend_daily")
    return {
        (str(d), p, a): Decimal(str(s))
        for d, p, a, s in zip(df["date"], df["platform"], df["ad_id"], df["spend"], strict=True)
    }


def load(engine: sa.Engine, day: str, first: str, rows: pd.DataFrame) -> None:
    warehouse.load_day(engine, day, {}, spend_pull=(rows, {"facebook": (first, day)}))


@pytest.fixture()
def engine(warehouse_engine: sa.Engine) -> sa.Engine:
    """SQLite, MariaDB and PostgreSQL (tests/conftest.py)."""
    return warehouse_engine


def test_a_later_pull_replaces_restated_days_and_drops_vanished_rows(engine: sa.Engine) -> None:
    load(
        engine,
        "2026-11-19",
        "2026-11-18",
        spend_rows(
            ("2026-11-18", "facebook", "a", 1_000_000),
            ("2026-11-18", "facebook", "b", 2_000_000),
            ("2026-11-19", "facebook", "a", 3_000_000),
        ),
    )
    load(
        engine,
        "2026-11-20",
        "2026-11-19",
        spend_rows(("2026-11-19", "facebook", "a", 3_500_000), ("2026-11-20", "facebook", "a", 1)),
    )

    assert table(engine) == {
        ("2026-11-18", "facebook", "a"): Decimal("1.000000"),  # outside the later window: kept
        ("2026-11-18", "facebook", "b"): Decimal("2.000000"),
        ("2026-11-19", "facebook", "a"): Decimal("3.500000"),  # restated
        ("2026-11-20", "facebook", "a"): Decimal("0.000001"),
    }
    assert warehouse.is_loaded(engine, "2026-11-20") and warehouse.is_loaded(engine, "2026-11-19")


def test_an_earlier_pull_loaded_late_never_overwrites_a_later_one(engine: sa.Engine) -> None:
    later = spend_rows(
        ("2026-11-19", "facebook", "a", 3_500_000), ("2026-11-20", "facebook", "a", 9)
    )
    earlier = spend_rows(
        ("2026-11-19", "facebook", "a", 3_000_000), ("2026-11-19", "facebook", "x", 5)
    )

    load(engine, "2026-11-20", "2026-11-19", later)
    load(engine, "2026-11-19", "2026-11-18", earlier)  # a backfill re-loads the older day

    assert table(engine) == {
        ("2026-11-19", "facebook", "a"): Decimal("3.500000"),
        ("2026-11-20", "facebook", "a"): Decimal("0.000009"),
    }
    with engine.connect() as conn:
        pulled = conn.execute(sa.text("SELECT DISTINCT pulled FROM ad_spend_daily")).scalars()
        assert sorted(str(p) for p in pulled) == ["2026-11-20"]


def test_reloading_the_same_pull_changes_nothing(engine: sa.Engine) -> None:
    rows = spend_rows(
        ("2026-11-19", "facebook", "a", 3_000_000), ("2026-11-20", "facebook", "a", 7)
    )
    load(engine, "2026-11-20", "2026-11-19", rows)
    first = table(engine)
    load(engine, "2026-11-20", "2026-11-19", rows)
    assert table(engine) == first and len(first) == 2


def test_other_platforms_and_rows_outside_the_window(engine: sa.Engine) -> None:
    google = spend_rows(("2026-11-20", "google_ads", "g", 4))
    warehouse.load_day(
        engine, "2026-11-20", {}, spend_pull=(google, {"google_ads": ("2026-11-07", "2026-11-20")})
    )
    load(engine, "2026-11-20", "2026-11-19", spend_rows(("2026-11-20", "facebook", "a", 1)))
    assert set(table(engine)) == {
        ("2026-11-20", "google_ads", "g"),
        ("2026-11-20", "facebook", "a"),
    }
    with pytest.raises(ValueError, match="outside the pull windows"):
        load(engine, "2026-11-20", "2026-11-19", spend_rows(("2026-11-01", "facebook", "a", 1)))
    with pytest.raises(ValueError, match="either as a frame or as spend_pull"):
        warehouse.load_day(
            engine,
            "2026-11-20",
            {"ad_spend_daily": google},
            spend_pull=(google, {"google_ads": ("2026-11-20", "2026-11-20")}),
        )
