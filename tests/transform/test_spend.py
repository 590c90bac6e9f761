"""Unified spend, FX conversion and restatement across re-pulls: pure, table-driven."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from adperf.errors import MissingFxRate
from adperf.fx import FxTable
from adperf.schema import AD_SPEND, SPEND, to_table
from adperf.transform.restatement import (
    Pull,
    build_day_restatements,
    build_latest,
    build_latest_spend,
    convert_pulls,
    pull_days_for,
    rows_in_windows,
    window_first,
)
from adperf.transform.spend import build_spend, build_spend_each

FX = FxTable(
    "USD",
    {("2026-11-19", "KRW"): Decimal("0.0007"), ("2026-11-20", "KRW"): Decimal("0.00072463768")},
)


def ad(day: str, platform: str, ad_id: str, spend_micros: int, currency: str = "USD") -> dict:
    return {
        "date": day,
        "platform": platform,
        "account_id": "1",
        "campaign_id": f"c-{ad_id}",
        "campaign_name": "C",
        "adset_id": f"s-{ad_id}",
        "adset_name": "S",
        "ad_id": ad_id,
        "ad_name": "A",
        "impressions": 10,
        "clicks": 1,
        "installs_reported": 1,
        "purchases_reported": 0,
        "purchase_value_original_micros": 0,
        "spend_original_micros": spend_micros,
        "currency_original": currency,
    }


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=AD_SPEND.columns)


def pull(platform: str, pulled: str, first: str, *rows: dict) -> Pull:
    return Pull(platform, pulled, first, pulled, frame(*rows))


# -- one vocabulary, FX ---------------------------------------------------------------------------


def test_both_platforms_map_to_one_schema_and_convert_exactly() -> None:
    fb = frame(ad("2026-11-20", "facebook", "1", 150_000_000_000, "KRW"))
    google = frame(ad("2026-11-20", "google_ads", "2", 1_990_000))

    df = build_spend([fb, google], FX)

    to_table(df, SPEND)
    got = df.set_index("ad_id")
    # 150,000 won x 0.00072463768 = 108.695652 USD, exactly; the original is kept.
    assert got.loc["1", "spend_micros"] == 108_695_652
    assert got.loc["1", "spend_original_micros"] == 150_000_000_000
    assert got.loc["1", "currency_original"] == "KRW"
    assert got.loc["2", "spend_micros"] == 1_990_000 and got.loc["2", "fx_rate"] == 1.0
    assert list(df["platform"]) == ["facebook", "google_ads"]


def test_converting_frames_together_equals_one_by_one() -> None:
    frames = [
        # One ad on two days (a tie on the sort key: the frame's order stays), two currencies.
        frame(
            ad("2026-11-20", "facebook", "9", 150_000_000_000, "KRW"),
            ad("2026-11-19", "facebook", "9", 3_000_000_000, "KRW"),
            ad("2026-11-20", "facebook", "1", 2_500_000),
        ),
        frame(),
        frame(ad("2026-11-20", "google_ads", "2", 1_990_000), ad("2026-11-19", "facebook", "1", 7)),
        # The same ad and day as in the first frame: no duplicate, it is another pull.
        frame(ad("2026-11-20", "facebook", "9", 1_000_000_000, "KRW")),
    ]
    together = build_spend_each(frames, FX)
    assert len(together) == len(frames)
    for got, alone in zip(together, (build_spend([f], FX) for f in frames), strict=True):
        pd.testing.assert_frame_equal(got, alone)
    assert list(zip(together[0]["ad_id"], together[0]["date"], strict=True)) == [
        ("1", "2026-11-20"), ("9", "2026-11-20"), ("9", "2026-11-19")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="ad 9 of facebook appears twice on 2026-11-20"):
        build_spend_each([frames[1], pd.concat([frames[0], frames[3]])], FX)


def test_missing_rate_names_currency_and_day() -> None:
    df = frame(ad("2026-11-21", "facebook", "1", 1_000_000, "KRW"))

    with pytest.raises(MissingFxRate, match="KRW on 2026-11-21"):
        build_spend([df], FX)


def test_an_ad_twice_on_one_day_is_refused() -> None:
    row = ad("2026-11-20", "facebook", "1", 1)
    with pytest.raises(ValueError, match="appears twice"):
        build_spend([frame(row), frame(row)], FX)


# -- restatement ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lookback", "expected_first", "expected_last"),
    [(28, "2026-11-17", "2026-11-20"), (14, "2026-11-03", "2026-11-20")],
)
def test_pull_days_cover_the_window_with_the_latest_pulls(
    lookback: int, expected_first: str, expected_last: str
) -> None:
    day = dt.date(2026, 11, 20)

    days = pull_days_for(day, 31, lookback)

    assert days[0].isoformat() == expected_first and days[-1].isoformat() == expected_last
    assert len(days) == 31 - lookback + 1  # consecutive: one pull per report day
    # Every day of the 31 is covered by a pull in the list (its window: lookback days).
    covered = {p - dt.timedelta(days=i) for p in days for i in range(lookback)}
    assert {day - dt.timedelta(days=i) for i in range(31)} <= covered
    assert window_first(day, lookback) == day - dt.timedelta(days=lookback - 1)


def test_later_pull_wins_and_nothing_is_counted_twice() -> None:
    old = pull(
        "facebook",
        "2026-11-19",
        "2026-11-17",
        ad("2026-11-17", "facebook", "1", 5_000_000),
        ad("2026-11-18", "facebook", "1", 7_000_000),
        ad("2026-11-19", "facebook", "1", 9_000_000),
    )
    new = pull(
        "facebook",
        "2026-11-20",
        "2026-11-18",
        ad("2026-11-18", "facebook", "1", 7_500_000),  # restated
        # 2026-11-19: no row any more (the platform took the spend back)
        ad("2026-11-20", "facebook", "1", 3_000_000),
    )

    latest = build_latest(convert_pulls([old, new], FX), "2026-11-16", "2026-11-20")

    to_table(latest, SPEND)
    by_day = dict(zip(latest["date"], latest["spend_micros"], strict=True))
    # 11-17 only in the old pull; 11-18 and 11-19 from the new one (which covers them).
    assert by_day == {"2026-11-17": 5_000_000, "2026-11-18": 7_500_000, "2026-11-20": 3_000_000}
    assert not latest.duplicated(["date", "platform", "ad_id"]).any()


def test_latest_spend_converts_only_the_rows_kept_and_equals_converting_every_pull() -> None:
    pulls = [
        pull(
            "facebook",
            "2026-11-19",
            "2026-11-17",
            ad("2026-11-17", "facebook", "2", 4_000_000, "KRW"),  # no rate for 11-17: unused
            ad("2026-11-19", "facebook", "2", 2 * 10**10, "KRW"),
            ad("2026-11-19", "facebook", "1", 9_000_000),
        ),
        pull(
            "facebook",
            "2026-11-20",
            "2026-11-19",
            ad("2026-11-20", "facebook", "1", 3_000_000),
            ad("2026-11-19", "facebook", "1", 7_500_000),  # restated, after a later day's row
            ad("2026-11-19", "facebook", "3", 10**10, "KRW"),
        ),
        pull("google_ads", "2026-11-19", "2026-11-19", ad("2026-11-19", "google_ads", "9", 1)),
        pull("google_ads", "2026-11-20", "2026-11-20", ad("2026-11-20", "google_ads", "9", 2)),
    ]

    latest = build_latest_spend(pulls, "2026-11-19", "2026-11-20", FX)

    # As converting every pull first (the 11-17 KRW row has no rate: that one left out).
    kept = [
        Pull(p.platform, p.pulled, p.first, p.last, p.rows[p.rows["date"] >= "2026-11-19"])
        for p in pulls
    ]
    expected = build_latest(convert_pulls(kept, FX), "2026-11-19", "2026-11-20")
    pd.testing.assert_frame_equal(latest, expected, check_exact=True)
    assert list(zip(latest["date"], latest["ad_id"], latest["spend_micros"], strict=True)) == [
        ("2026-11-19", "1", 7_500_000),  # the later pull's figure
        ("2026-11-19", "3", 7_000_000),  # 10,000 won at 11-19's rate
        ("2026-11-19", "9", 1),
        ("2026-11-20", "1", 3_000_000),
        ("2026-11-20", "9", 2),
    ]
    assert build_latest_spend([], "2026-11-19", "2026-11-20", FX).columns.tolist() == SPEND.columns


def test_restatements_list_each_changed_day_with_previous_latest_and_delta() -> None:
    rows_before = [
        ad("2026-11-18", "facebook", "1", 100_000_000),
        ad("2026-11-19", "facebook", "1", 50_000_000),
        ad("2026-11-19", "google_ads", "9", 20_000_000),
    ]
    rows_after = [
        ad("2026-11-18", "facebook", "1", 112_400_000),  # +12.40
        ad("2026-11-19", "facebook", "1", 50_000_000),  # unchanged
        ad("2026-11-20", "facebook", "1", 70_000_000),  # the new day: not a restatement
    ]
    pulls = [
        pull("facebook", "2026-11-19", "2026-11-18", *rows_before[:2]),
        pull("facebook", "2026-11-20", "2026-11-18", *rows_after),
        pull("google_ads", "2026-11-19", "2026-11-19", rows_before[2]),
        pull("google_ads", "2026-11-20", "2026-11-19"),  # google took all of 11-19 back
    ]

    df = build_day_restatements("2026-11-20", convert_pulls(pulls, FX))

    assert df.to_dict("records") == [
        {
            "date": "2026-11-20",
            "restated_date": "2026-11-18",
            "platform": "facebook",
            "previous_micros": 100_000_000,
            "latest_micros": 112_400_000,
            "delta_micros": 12_400_000,
        },
        {
            "date": "2026-11-20",
            "restated_date": "2026-11-19",
            "platform": "google_ads",
            "previous_micros": 20_000_000,
            "latest_micros": 0,
            "delta_micros": -20_000_000,
        },
    ]


def test_restated_krw_day_is_compared_at_its_own_days_rate() -> None:
    pulls = [
        pull(
            "facebook", "2026-11-19", "2026-11-19", ad("2026-11-19", "facebook", "1", 10**10, "KRW")
        ),
        pull(
            "facebook",
            "2026-11-20",
            "2026-11-19",
            ad("2026-11-19", "facebook", "1", 2 * 10**10, "KRW"),
            ad("2026-11-20", "facebook", "1", 10**10, "KRW"),
        ),
    ]

    (row,) = build_day_restatements("2026-11-20", convert_pulls(pulls, FX)).to_dict("records")

    # 10,000 won more on 11-19 at 11-19's rate (0.0007), not 11-20's.
    assert row["delta_micros"] == 7_000_000


def test_no_previous_pull_or_no_change_gives_an_empty_frame_with_columns() -> None:
    only = [pull("facebook", "2026-11-20", "2026-11-20", ad("2026-11-20", "facebook", "1", 1))]

    df = build_day_restatements("2026-11-20", convert_pulls(only, FX))

    assert (
        len(df) == 0 and "delta_micros" in df.columns and str(df["delta_micros"].dtype) == "int64"
    )


def test_rows_in_windows_keeps_each_platforms_own_window() -> None:
    rows = frame(
        ad("2026-11-06", "google_ads", "1", 1),
        ad("2026-11-07", "google_ads", "1", 1),
        ad("2026-11-06", "facebook", "2", 1),
    )

    kept = rows_in_windows(
        rows, {"google_ads": ("2026-11-07", "2026-11-20"), "facebook": ("2026-10-24", "2026-11-20")}
    )

    assert sorted(zip(kept["platform"], kept["date"], strict=True)) == [
        ("facebook", "2026-11-06"),
        ("google_ads", "2026-11-07"),
    ]


def test_fx_table_from_a_csv(tmp_path: Path) -> None:
    from adperf.fx import load_rates

    (tmp_path / "fx.csv").write_text("date,currency,rate\n2026-11-20,KRW,0.00072463768\n")
    fx = load_rates(tmp_path / "fx.csv", "USD")
    df = build_spend([frame(ad("2026-11-20", "facebook", "1", 150_000_000_000, "KRW"))], fx)
    assert df["spend_micros"].tolist() == [108_695_652]


def test_first_spend_dates_skip_days_without_spend() -> None:
    from adperf.transform.spend import first_spend_dates

    spend = pd.DataFrame(
        {
            "date": ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-02", "2026-11-03"],
            "platform": ["facebook", "facebook", "facebook", "tiktok", "tiktok"],
            "campaign_id": ["c1", "c1", "c1", "c1", "c2"],
            "adset_id": ["s1", "s2", "s1", "s3", "s4"],
            "spend_micros": [0, 5, 7, 1, 0],
        }
    )
    # A campaign's first day is its first day with spend, per platform (ids may repeat across
    # platforms); a campaign that never spent has none.
    assert first_spend_dates(spend) == {
        ("facebook", "c1"): "2026-11-02",
        ("tiktok", "c1"): "2026-11-02",
    }
    assert first_spend_dates(spend, "adset_id") == {
        ("facebook", "s1"): "2026-11-03",
        ("facebook", "s2"): "2026-11-02",
        ("tiktok", "s3"): "2026-11-02",
    }
