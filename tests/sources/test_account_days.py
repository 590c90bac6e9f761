"""Ad accounts in other zones than the report's, through the real SDKs against the fakes.

An account behind the report zone (America/Los_Angeles against Asia/Seoul, over LA's DST end on
2026-11-01: a 25-hour day) and one ahead (Australia/Sydney, over its DST start on 2026-10-04: a
23-hour day). `account` days keep each account's own calendar; `report` days re-cut the hourly
rows into Seoul days, checked against the hours the fakes split each day into (computed here
instant by instant, independently of adperf's re-cut).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from adperf.errors import ConfigError
from adperf.sandbox import hourly
from adperf.sandbox.fake_google_ads import FakeGoogleAds
from adperf.sandbox.fake_graph import FakeGraphApi
from adperf.schema import AD_SPEND, to_table
from adperf.sources.facebook import fetch_facebook_spend
from adperf.sources.google_ads import GoogleAdsCredentials, fetch_google_ads_spend

REPORT = "Asia/Seoul"
TOKEN = "EAAB-account-days-token-0123456789"
DEV_TOKEN = "devtoken-account-days"
LA = {
    "account_id": "1111111111",
    "name": "US",
    "currency": "USD",
    "timezone_name": "America/Los_Angeles",
}
SYD = {
    "account_id": "2222222222",
    "name": "AU",
    "currency": "USD",
    "timezone_name": "Australia/Sydney",
}
KRW = {"account_id": "3333333333", "name": "KR", "currency": "KRW", "timezone_name": REPORT}
# Report days around each DST change.
LA_DAYS = (dt.date(2026, 10, 30), dt.date(2026, 11, 3))
SYD_DAYS = (dt.date(2026, 10, 2), dt.date(2026, 10, 6))


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def fb_rows(account: dict[str, str], first: dt.date, last: dt.date) -> list[dict[str, Any]]:
    """Two ads' delivery on every local day from 3 days before `first` to 3 after `last`."""
    rows = []
    for n, d in enumerate(days(first - dt.timedelta(days=3), last + dt.timedelta(days=3))):
        for ad in (1, 2):
            units = 10_000 + 997 * n + 131 * ad
            spend = str(units) if account["currency"] == "KRW" else f"{units / 100:.2f}"
            rows.append(
                {
                    "date": d.isoformat(),
                    "account_id": account["account_id"],
                    "campaign_id": f"{account['account_id']}01",
                    "campaign_name": "C",
                    "adset_id": f"{account['account_id']}02",
                    "adset_name": "S",
                    "ad_id": f"{account['account_id']}{ad:04d}",
                    "ad_name": f"ad {ad}",
                    "impressions": 5_000 + 37 * n,
                    "clicks": 70 + n,
                    "installs_reported": 9 + ad,
                    "purchases_reported": 1,
                    "spend": spend,
                    "purchase_value": "4.99",
                }
            )
    return rows


def truth_by_report_day(rows: list[dict[str, Any]], zone: str) -> dict[tuple[str, str], int]:
    """Spend micros per (report day, ad): every hour of the fakes' split, by its instant."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        units, digits = hourly.minor_units(r["spend"])
        for t, _, c in hourly.by_instant(r["date"], zone, {"spend": units}):
            report_day = t.astimezone(ZoneInfo(REPORT)).date().isoformat()
            out[(report_day, r["ad_id"])] += c["spend"] * 10 ** (6 - digits)
    return out


@pytest.fixture
def graph() -> Iterator[Any]:
    started: list[FakeGraphApi] = []

    def serve(rows: list[dict[str, Any]], accounts: list[dict[str, str]]) -> FakeGraphApi:
        fake = FakeGraphApi(
            accounts=accounts, ad_rows=pd.DataFrame(rows), access_token=TOKEN, page_size=40
        )
        fake.start()
        started.append(fake)
        return fake

    yield serve
    for fake in started:
        fake.stop()


def fb_fetch(
    fake: FakeGraphApi, accounts: list[str], first: dt.date, last: dt.date, **kw: Any
) -> pd.DataFrame:
    return fetch_facebook_spend(
        graph_url=fake.base_url,
        api_version="v21.0",
        access_token=TOKEN,
        account_ids=accounts,
        first_day=first,
        day=last,
        report_timezone=REPORT,
        timeout=10.0,
        sleep=lambda s: None,
        **kw,
    )


@pytest.mark.parametrize(("account", "window"), [(LA, LA_DAYS), (SYD, SYD_DAYS)])
def test_facebook_account_days_are_the_accounts_own(
    graph: Any, account: dict[str, str], window: tuple[dt.date, dt.date]
) -> None:
    rows = fb_rows(account, *window) + fb_rows(KRW, *window)
    fake = graph(rows, [account, KRW])

    df = fb_fetch(fake, [account["account_id"], KRW["account_id"]], *window)

    to_table(df, AD_SPEND)
    want = {
        (r["date"], r["ad_id"]): int(Decimal(r["spend"]) * 1_000_000)
        for r in rows
        if window[0].isoformat() <= r["date"] <= window[1].isoformat()
    }
    got = {(r.date, r.ad_id): r.spend_original_micros for r in df.itertuples()}
    assert got == want
    zones = df.groupby("account_id")["account_timezone"].unique().to_dict()
    assert {k: list(v) for k, v in zones.items()} == {
        account["account_id"]: [account["timezone_name"]],
        KRW["account_id"]: [REPORT],
    }
    # No hourly breakdown asked for in account days.
    assert not any("breakdowns" in p for _, p in fake.requests_seen)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(("account", "window"), [(LA, LA_DAYS), (SYD, SYD_DAYS)])
def test_facebook_report_days_recut_hourly_rows_exactly(
    graph: Any, account: dict[str, str], window: tuple[dt.date, dt.date], use_async: bool
) -> None:
    rows = fb_rows(account, *window)
    krw = fb_rows(KRW, *window)
    fake = graph(rows + krw, [account, KRW])

    df = fb_fetch(
        fake,
        [account["account_id"], KRW["account_id"]],
        *window,
        account_days="report",
        use_async=use_async,
    )

    to_table(df, AD_SPEND)
    assert set(df["date"]) == {d.isoformat() for d in days(*window)}
    truth = truth_by_report_day(rows, account["timezone_name"])
    mine = df[df["account_id"] == account["account_id"]]
    got = {(r.date, r.ad_id): r.spend_original_micros for r in mine.itertuples()}
    assert got == {k: v for k, v in truth.items() if k[0] in set(df["date"])}
    # Spend moved across days: an LA day is not a Seoul day.
    same_day = {
        (r["date"], r["ad_id"]): int(Decimal(r["spend"]) * 1_000_000)
        for r in rows
        if r["date"] in set(df["date"])
    }
    assert got != same_day
    # The account in the report zone keeps its days, unsplit.
    kr = df[df["account_id"] == KRW["account_id"]]
    assert sum(kr["spend_original_micros"]) == sum(
        int(r["spend"]) * 1_000_000 for r in krw if r["date"] in set(df["date"])
    )
    hourly_asks = [p for path, p in fake.requests_seen if "breakdowns" in p]
    assert hourly_asks, "the offset account is read by hour"


def test_facebook_refuses_a_zone_half_an_hour_apart_by_name(graph: Any) -> None:
    india = {**LA, "timezone_name": "Asia/Kolkata"}
    fake = graph(fb_rows(india, *LA_DAYS), [india])

    with pytest.raises(ConfigError, match="act_1111111111.*Asia/Kolkata.*:30.*Asia/Seoul"):
        fb_fetch(fake, [india["account_id"]], *LA_DAYS, account_days="report")
    # Its own days still work.
    assert len(fb_fetch(fake, [india["account_id"]], *LA_DAYS)) == 2 * 5


def test_facebook_refuses_a_repeated_hour_that_falls_on_two_report_days(graph: Any) -> None:
    # LA's repeated 01:00 on 2026-11-01 is 08:00 and 09:00 UTC: 23:00 and 00:00 in UTC-9.
    fake = graph(fb_rows(LA, *LA_DAYS), [LA])

    with pytest.raises(ConfigError, match="twice.*2026-10-31 and 2026-11-01.*Pacific/Gambier"):
        fetch_facebook_spend(
            graph_url=fake.base_url,
            api_version="v21.0",
            access_token=TOKEN,
            account_ids=[LA["account_id"]],
            first_day=LA_DAYS[0],
            day=LA_DAYS[1],
            report_timezone="Pacific/Gambier",
            account_days="report",
            timeout=10.0,
        )


# -- Google Ads ------------------------------------------------------------------------------


def customer(account: dict[str, str], cid: str) -> dict[str, str]:
    return {
        "customer_id": cid,
        "descriptive_name": account["name"],
        "currency_code": account["currency"],
        "time_zone": account["timezone_name"],
    }


def google_rows(cid: str, fb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same delivery as Google Ads rows, plus an App campaign (campaign-level only)."""
    out = []
    for r in fb:
        for app in (False, True):
            out.append(
                {
                    "date": r["date"],
                    "customer_id": cid,
                    "campaign_id": "901" if app else "900",
                    "campaign_name": "App" if app else "Search",
                    "channel_type": "MULTI_CHANNEL" if app else "SEARCH",
                    "ad_group_id": "800",
                    "ad_group_name": "AG",
                    "ad_id": ("5" if app else "4") + r["ad_id"][-4:],
                    "ad_name": "x",
                    "ad_level": not app,
                    "impressions": r["impressions"],
                    "clicks": r["clicks"],
                    "cost_micros": int(Decimal(r["spend"]) * 1_000_000),
                    "conversions": float(r["installs_reported"]),
                }
            )
    return out


@pytest.fixture
def google() -> Iterator[Any]:
    started: list[FakeGoogleAds] = []

    def serve(rows: list[dict[str, Any]], customers: list[dict[str, str]]) -> FakeGoogleAds:
        fake = FakeGoogleAds(
            ad_rows=pd.DataFrame(rows), developer_token=DEV_TOKEN, customers=customers
        )
        fake.start()
        started.append(fake)
        return fake

    yield serve
    for fake in started:
        fake.stop()


def g_fetch(
    fake: FakeGoogleAds, cid: str, window: tuple[dt.date, dt.date], **kw: Any
) -> pd.DataFrame:
    return fetch_google_ads_spend(
        endpoint=fake.endpoint,
        credentials=GoogleAdsCredentials(developer_token=DEV_TOKEN),
        customer_ids=[cid],
        first_day=window[0],
        day=window[1],
        report_timezone=REPORT,
        insecure=True,
        timeout=10.0,
        sleep=lambda s: None,
        **kw,
    )


@pytest.mark.parametrize(("account", "window"), [(LA, LA_DAYS), (SYD, SYD_DAYS)])
def test_google_ads_both_modes(
    google: Any, account: dict[str, str], window: tuple[dt.date, dt.date]
) -> None:
    cid = "1234567890"
    rows = google_rows(cid, fb_rows(account, *window))
    fake = google(rows, [customer(account, cid)])

    own = g_fetch(fake, cid, window)
    recut = g_fetch(fake, cid, window, account_days="report")

    to_table(own, AD_SPEND)
    to_table(recut, AD_SPEND)
    in_window = [r for r in rows if window[0].isoformat() <= r["date"] <= window[1].isoformat()]
    assert sum(own["spend_original_micros"]) == sum(r["cost_micros"] for r in in_window)
    assert (
        set(own["account_timezone"]) == set(recut["account_timezone"]) == {account["timezone_name"]}
    )
    # Re-cut: every ad and the App campaign's row equal the hours of their report days.
    as_fb = [
        # The fake splits a USD day in cents.
        {"date": r["date"], "ad_id": r["ad_id"], "spend": f"{r['cost_micros'] // 10**4 / 100:.2f}"}
        for r in rows
    ]
    truth = truth_by_report_day(as_fb, account["timezone_name"])
    app_rows = recut[recut["ad_id"] == "campaign-901"]
    assert len(app_rows) == len(days(*window))  # one App-campaign row per report day
    # The App campaign's two ads come as one campaign-level row a day: its truth is their sum.
    want: dict[tuple[str, str], int] = defaultdict(int)
    for (day, ad), v in truth.items():
        if window[0].isoformat() <= day <= window[1].isoformat():
            want[(day, "campaign-901" if ad.startswith("5") else ad)] += v
    got = {(r.date, r.ad_id): r.spend_original_micros for r in recut.itertuples()}
    assert got == dict(want)
    hour_queries = [c for c in fake.calls if c[1] in ("ad_group_ad", "campaign") and c[2]]
    assert any(c[2] < window[0].isoformat() or c[3] > window[1].isoformat() for c in hour_queries)


def test_google_ads_refuses_a_zone_half_an_hour_apart_by_name(google: Any) -> None:
    cid = "1234567890"
    india = {**LA, "timezone_name": "Asia/Kolkata"}
    fake = google(google_rows(cid, fb_rows(india, *LA_DAYS)), [customer(india, cid)])

    with pytest.raises(ConfigError, match="customer 1234567890.*Asia/Kolkata"):
        g_fetch(fake, cid, LA_DAYS, account_days="report")
