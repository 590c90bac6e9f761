"""TikTok Ads spend: the client against the loopback fake of the Business API."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pandas as pd
import pytest

from adperf.errors import SourceError, TransientSourceError
from adperf.sandbox.fake_tiktok import FakeTikTok
from adperf.schema import AD_SPEND
from adperf.sources.tiktok import fetch_tiktok_spend

TOKEN = "tiktok-token-that-must-never-leak"
ADV = "7000000000000000001"
FIRST, LAST = dt.date(2026, 11, 2), dt.date(2026, 11, 8)


def rows() -> pd.DataFrame:
    out = []
    for d in range(1, 10):
        for a in range(3):
            out.append(
                {
                    "date": f"2026-11-{d:02d}",
                    "account_id": ADV,
                    "campaign_id": "1780000000000000001",
                    "campaign_name": "TT_KR",
                    "adset_id": "1780000000000000002",
                    "adset_name": "grp",
                    "ad_id": f"17800000000000001{a:02d}",
                    "ad_name": f"ad{a}",
                    "impressions": 1000 + a,
                    "clicks": 10 + d,
                    "installs_reported": a,
                    "purchases_reported": 1,
                    "purchase_value": "1500",
                    "spend": f"{d * 1000 + a}",
                }
            )
    return pd.DataFrame(out)


@pytest.fixture()
def fake() -> Iterator[tuple[FakeTikTok, str]]:
    f = FakeTikTok(
        advertisers=[{"advertiser_id": ADV, "currency": "KRW", "timezone": "Asia/Seoul"}],
        ad_rows=rows(),
        access_token=TOKEN,
    )
    url = f.start()
    try:
        yield f, url
    finally:
        f.stop()


def fetch(url: str, **kw: object) -> pd.DataFrame:
    args: dict[str, object] = {
        "base_url": url,
        "access_token": TOKEN,
        "advertiser_ids": [ADV],
        "first_day": FIRST,
        "day": LAST,
        "sleep": lambda s: None,
    }
    return fetch_tiktok_spend(**{**args, **kw})  # type: ignore[arg-type]


def test_ad_rows_of_the_window_over_pages_in_the_advertisers_currency(fake: tuple) -> None:
    f, url = fake
    df = fetch(url, page_size=5)
    assert list(df.columns) == AD_SPEND.columns
    assert len(df) == 7 * 3 and set(df["date"]) == {f"2026-11-{d:02d}" for d in range(2, 9)}
    # Won: 1000 x day + ad index, exact micros; metrics arrived as strings.
    expected = sum((d * 1000 + a) * 1_000_000 for d in range(2, 9) for a in range(3))
    assert df["spend_original_micros"].sum() == expected
    assert set(df["currency_original"]) == {"KRW"} and set(df["account_timezone"]) == {"Asia/Seoul"}
    assert df["installs_reported"].sum() == 7 * (0 + 1 + 2)
    assert df["purchase_value_original_micros"].sum() == 21 * 1500 * 1_000_000
    assert df["ad_id"].str.len().eq(19).all() and df["platform"].eq("tiktok").all()
    reports = [r for r in f.requests_seen if r["path"].endswith("/report/integrated/get/")]
    assert [r["params"]["page"] for r in reports] == ["1", "2", "3", "4", "5"]
    assert reports[0]["params"]["data_level"] == "AUCTION_AD"


@pytest.mark.parametrize("code", [40100, 50000, 51000])
def test_rate_limits_and_system_errors_are_retried(fake: tuple, code: int) -> None:
    f, url = fake
    f.inject_errors([{"code": code, "message": "busy"}, {"status": 503}])
    waits: list[float] = []
    assert len(fetch(url, sleep=waits.append)) == 21
    assert waits == [2.0, 4.0]


def test_retries_are_bounded_and_the_give_up_is_transient(fake: tuple) -> None:
    f, url = fake
    f.inject_errors([{"code": 40100, "message": "Too many requests"}] * 3)
    with pytest.raises(TransientSourceError, match="rate limited"):
        fetch(url, max_retries=2)


@pytest.mark.parametrize(
    ("code", "fix"),
    [(40105, "ADPERF_TIKTOK_TOKEN"), (40104, "ADPERF_TIKTOK_TOKEN"), (40001, "Business Center")],
)
def test_token_and_permission_codes_are_permanent_and_named(
    fake: tuple, code: int, fix: str, caplog: pytest.LogCaptureFixture
) -> None:
    f, url = fake
    f.inject_errors([{"code": code, "message": "no"}])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError) as info:
        fetch(url)
    assert not isinstance(info.value, TransientSourceError)
    assert f"code {code}" in str(info.value) and fix in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text
    assert len(f.requests_seen) == 1  # not retried


def test_a_wrong_token_is_refused_by_the_fake_as_tiktok_does(fake: tuple) -> None:
    _, url = fake
    with pytest.raises(SourceError, match="40105"):
        fetch(url, access_token="wrong")


def test_a_long_window_is_asked_in_reports_of_at_most_30_days(fake: tuple) -> None:
    f, url = fake
    df = fetch(url, first_day=LAST - dt.timedelta(days=44))
    assert len(df) == 8 * 3  # the fake holds Nov 1..9; the window ends on the 8th
    spans = [
        (r["params"]["start_date"], r["params"]["end_date"])
        for r in f.requests_seen
        if r["path"].endswith("/report/integrated/get/")
    ]
    assert spans == [("2026-09-25", "2026-10-24"), ("2026-10-25", "2026-11-08")]
