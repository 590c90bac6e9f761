"""Google Ads spend through the real google-ads SDK against the loopback fake gRPC service."""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.sandbox.fake_google_ads import FakeGoogleAds
from adperf.schema import AD_SPEND, to_table
from adperf.sources.google_ads import GoogleAdsCredentials, fetch_google_ads_spend

DEV_TOKEN = "devtoken-SECRET-abc123"
REFRESH = "1//refresh-SECRET-xyz"
DAY = dt.date(2026, 11, 27)
FIRST = DAY - dt.timedelta(days=13)
USD = {
    "customer_id": "1234567890",
    "descriptive_name": "adperf Demo (USD)",
    "currency_code": "USD",
    "time_zone": "Asia/Seoul",
}
KRW = {**USD, "customer_id": "5550001111", "currency_code": "KRW"}


def ad_row(i: int, **over: Any) -> dict[str, Any]:
    row = {
        "date": DAY.isoformat(),
        "customer_id": USD["customer_id"],
        "campaign_id": "20001",
        "campaign_name": "US_Android_Search",
        "channel_type": "SEARCH",
        "ad_group_id": "30001",
        "ad_group_name": "AG_1",
        "ad_id": str(700_000_000_000 + i),
        "ad_name": f"ad_{i}",
        "ad_level": True,
        "impressions": 1000 + i,
        "clicks": 10 + i,
        "cost_micros": 1_230_000,
        "conversions": 3.0,
    }
    row.update(over)
    return row


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture()
def serve() -> Iterator[Any]:
    started: list[FakeGoogleAds] = []

    def make(rows: list[dict[str, Any]], **kw: Any) -> FakeGoogleAds:
        kw.setdefault("customers", [USD, KRW])
        fake = FakeGoogleAds(ad_rows=pd.DataFrame(rows), developer_token=DEV_TOKEN, **kw)
        fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def fetch(fake: FakeGoogleAds, sleep: Sleeps | None = None, **kw: Any) -> pd.DataFrame:
    args: dict[str, Any] = {
        "endpoint": fake.endpoint,
        "credentials": GoogleAdsCredentials(developer_token=DEV_TOKEN, refresh_token=REFRESH),
        "customer_ids": [USD["customer_id"]],
        "first_day": FIRST,
        "day": DAY,
        "login_customer_id": "999-888-7777",
        "report_timezone": "Asia/Seoul",
        "insecure": True,
        "timeout": 5.0,
        "sleep": sleep if sleep is not None else Sleeps(),
    }
    args.update(kw)
    return fetch_google_ads_spend(**args)


def test_reads_every_row_of_the_window_in_one_stream_per_level(serve: Any) -> None:
    rows = [ad_row(i, date=(DAY - dt.timedelta(days=i % 14)).isoformat()) for i in range(30)]
    rows.append(ad_row(99, date=(FIRST - dt.timedelta(days=1)).isoformat()))  # outside
    fake = serve(rows, batch_rows=4)  # 30 rows arrive in 8 stream messages

    df = fetch(fake)

    to_table(df, AD_SPEND)
    assert list(df.columns) == AD_SPEND.columns and len(df) == 30
    assert df["ad_id"].is_unique and set(df["platform"]) == {"google_ads"}
    assert df["date"].min() == FIRST.isoformat() and df["date"].max() == DAY.isoformat()
    assert set(df["account_id"]) == {"1234567890"} and set(df["currency_original"]) == {"USD"}
    assert df["spend_original_micros"].sum() == 30 * 1_230_000
    assert (df["adset_id"] == "30001").all() and (df["installs_reported"] == 3).all()
    # One SearchStream per level and customer, over the whole window, with the manager header.
    assert fake.calls == [
        ("1234567890", "ad_group_ad", FIRST.isoformat(), DAY.isoformat(), "9998887777"),
        ("1234567890", "campaign", FIRST.isoformat(), DAY.isoformat(), "9998887777"),
    ]


def test_each_customer_keeps_its_currency_and_ids_stay_exact(serve: Any) -> None:
    big = "123456789012345678"
    rows = [
        ad_row(1, cost_micros=15_000_000_000, customer_id=KRW["customer_id"], ad_id=big),
        ad_row(2, cost_micros=990_000),
    ]
    fake = serve(rows)

    df = fetch(fake, customer_ids=["555-000-1111", USD["customer_id"]]).set_index("ad_id")

    assert df.loc[big, "currency_original"] == "KRW"
    assert df.loc[big, "spend_original_micros"] == 15_000_000_000
    assert df.loc[big, "account_id"] == "5550001111"
    assert df.loc[ad_row(2)["ad_id"], "spend_original_micros"] == 990_000


def test_app_campaign_without_ad_rows_is_reported_at_campaign_level(serve: Any) -> None:
    app = {"campaign_id": "20009", "campaign_name": "UAC_Installs", "channel_type": "MULTI_CHANNEL"}
    rows = [
        ad_row(1),
        # An App campaign: delivery only at campaign level, two ad groups' worth.
        ad_row(2, **app, ad_level=False, cost_micros=4_000_000, conversions=2.5),
        ad_row(3, **app, ad_level=False, cost_micros=1_500_000, conversions=1.0),
        # A campaign whose ad rows miss part of its total (e.g. asset-level delivery).
        ad_row(4, campaign_id="20010", cost_micros=2_000_000, conversions=1.0),
        ad_row(5, campaign_id="20010", ad_level=False, cost_micros=700_000, conversions=0.0),
    ]
    fake = serve(rows)

    df = fetch(fake)

    by_campaign = df.groupby("campaign_id")["spend_original_micros"].sum().to_dict()
    assert by_campaign == {"20001": 1_230_000, "20009": 5_500_000, "20010": 2_700_000}
    uac = df[df["campaign_id"] == "20009"].iloc[0]
    assert len(df[df["campaign_id"] == "20009"]) == 1
    assert uac["ad_id"] == uac["adset_id"] == "campaign-20009" and pd.isna(uac["ad_name"])
    assert uac["installs_reported"] == 4  # 3.5 conversions, half-even
    assert uac["impressions"] == ad_row(2)["impressions"] + ad_row(3)["impressions"]
    rest = df[df["ad_id"] == "campaign-20010"].iloc[0]
    assert rest["spend_original_micros"] == 700_000 and rest["installs_reported"] == 0
    assert df["ad_id"].is_unique


def test_fractional_conversions_round_half_even(serve: Any) -> None:
    fake = serve(
        [ad_row(1, conversions=2.5), ad_row(2, conversions=3.5), ad_row(3, conversions=0.4)]
    )

    df = fetch(fake).set_index("ad_id")

    assert [df.loc[ad_row(i)["ad_id"], "installs_reported"] for i in (1, 2, 3)] == [2, 4, 0]


def test_empty_window_is_an_empty_frame_of_the_schema(serve: Any) -> None:
    fake = serve([ad_row(1, date="2026-10-01")])

    df = fetch(fake)

    assert len(df) == 0 and to_table(df, AD_SPEND, allow_empty=True).num_rows == 0


# -- faults -----------------------------------------------------------------------------------


def test_a_stream_that_breaks_midway_is_run_again_whole(serve: Any) -> None:
    fake = serve([ad_row(i) for i in range(10)], batch_rows=3)
    fake.inject_errors(
        [{"code": "INTERNAL", "error": ("internal_error", "TRANSIENT_ERROR"), "after_rows": 6}]
    )
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 10 and df["ad_id"].is_unique  # the 6 streamed rows are not kept twice
    assert sleeps.calls == [2.0]
    assert [c[1] for c in fake.calls] == ["ad_group_ad", "ad_group_ad", "campaign"]


def test_a_hung_stream_fails_at_the_deadline_and_is_retried(serve: Any) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([{"hang": True}])
    sleeps = Sleeps()

    df = fetch(fake, sleeps, timeout=0.5)

    assert len(df) == 1 and sleeps.calls == [2.0]


def test_a_stream_hung_every_time_raises_transient_with_the_deadline(serve: Any) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([{"hang": True}] * 2)

    with pytest.raises(TransientSourceError) as caught:
        fetch(fake, timeout=0.3, max_retries=1)

    assert "DEADLINE_EXCEEDED" in caught.value.problem and "1234567890" in caught.value.problem


def test_quota_error_waits_the_retry_delay_google_gives(serve: Any) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors(
        [
            {
                "code": "RESOURCE_EXHAUSTED",
                "error": ("quota_error", "RESOURCE_TEMPORARILY_EXHAUSTED"),
                "retry_delay_s": 37,
            },
            {"code": "RESOURCE_EXHAUSTED", "error": ("quota_error", "RESOURCE_EXHAUSTED")},
        ]
    )
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 1
    assert sleeps.calls == [37.0, 4.0]  # the given delay, then backoff (second retry)


@pytest.mark.parametrize(
    "fault",
    [
        {"code": "UNAVAILABLE"},
        {"code": "INTERNAL", "error": ("internal_error", "INTERNAL_ERROR")},
        {"code": "DEADLINE_EXCEEDED", "error": ("internal_error", "DEADLINE_EXCEEDED")},
    ],
)
def test_transient_errors_back_off_then_give_up(serve: Any, fault: dict[str, Any]) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([fault] * 3)
    sleeps = Sleeps()

    with pytest.raises(TransientSourceError) as caught:
        fetch(fake, sleeps, max_retries=2)

    assert sleeps.calls == [2.0, 4.0]
    assert fault["code"] in caught.value.problem and "3 tries" in caught.value.problem
    assert caught.value.source == "google_ads" and caught.value.day == DAY.isoformat()


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (
            {
                "code": "UNAUTHENTICATED",
                "error": ("authentication_error", "OAUTH_TOKEN_EXPIRED"),
                "message": "Authentication failed.",
            },
            ("authentication_error.OAUTH_TOKEN_EXPIRED", "REFRESH_TOKEN"),
        ),
        (
            {
                "code": "PERMISSION_DENIED",
                "error": ("authorization_error", "USER_PERMISSION_DENIED"),
            },
            ("authorization_error.USER_PERMISSION_DENIED", "login_customer_id"),
        ),
        (
            {"code": "INVALID_ARGUMENT", "error": ("query_error", "UNRECOGNIZED_FIELD")},
            ("query_error.UNRECOGNIZED_FIELD", "customer_ids"),
        ),
    ],
)
def test_permanent_errors_are_named_and_never_retried(
    serve: Any, fault: dict[str, Any], words: tuple[str, str]
) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([fault])
    sleeps = Sleeps()

    with pytest.raises(SourceError) as caught:
        fetch(fake, sleeps)

    assert not isinstance(caught.value, TransientSourceError)
    assert sleeps.calls == [] and len(fake.calls) == 1
    assert words[0] in caught.value.problem and "1234567890" in caught.value.problem
    assert words[1] in caught.value.fix


def test_wrong_developer_token_is_an_authentication_error(serve: Any) -> None:
    fake = serve([ad_row(1)])
    wrong = GoogleAdsCredentials(developer_token="wrong-SECRET-token")

    with pytest.raises(SourceError) as caught:
        fetch(fake, credentials=wrong)

    assert "DEVELOPER_TOKEN_INVALID" in caught.value.problem
    assert "wrong-SECRET-token" not in str(caught.value)


def test_customer_in_another_timezone_keeps_its_own_days(serve: Any) -> None:
    # Once a ConfigError; now its days are its own (tests/sources/test_account_days.py).
    fake = serve([ad_row(1)], customers=[{**USD, "time_zone": "America/Los_Angeles"}])

    df = fetch(fake)

    assert df[["date", "account_timezone"]].values.tolist() == [
        [DAY.isoformat(), "America/Los_Angeles"]
    ]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"customer_ids": []}, "customer_ids is empty"),
        ({"customer_ids": ["12345"]}, "10 digits"),
        ({"endpoint": "googleads.googleapis.com:443"}, "loopback"),
        ({"first_day": DAY + dt.timedelta(days=1)}, "after the last day"),
    ],
)
def test_bad_settings_are_config_errors(serve: Any, kw: dict[str, Any], match: str) -> None:
    fake = serve([ad_row(1)])
    with pytest.raises(ConfigError, match=match):
        fetch(fake, **kw)


def test_a_real_endpoint_without_oauth_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ADPERF_GOOGLE_ADS_REFRESH_TOKEN") as caught:
        fetch_google_ads_spend(
            endpoint="googleads.googleapis.com",
            credentials=GoogleAdsCredentials(developer_token=DEV_TOKEN, refresh_token=REFRESH),
            customer_ids=[USD["customer_id"]],
            first_day=FIRST,
            day=DAY,
        )
    assert DEV_TOKEN not in str(caught.value) and REFRESH not in str(caught.value)


def test_secrets_never_reach_logs_or_messages_even_at_debug(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = serve([ad_row(i) for i in range(3)])
    fake.inject_errors([{"code": "UNAVAILABLE"}])
    df = fetch(fake)
    fake.inject_errors([{"code": "UNAVAILABLE"}] * 2)
    with pytest.raises(TransientSourceError) as transient:
        fetch(fake, max_retries=1)

    # The SDK's request log ran at DEBUG (it logs request headers, masking the token).
    assert any("developer-token" in r.getMessage() for r in caplog.records)
    texts = [caplog.text, df.to_csv(), "".join(traceback.format_exception(transient.value))]
    texts.append(repr(GoogleAdsCredentials(developer_token=DEV_TOKEN, refresh_token=REFRESH)))
    for text in texts:
        assert DEV_TOKEN not in text and REFRESH not in text
