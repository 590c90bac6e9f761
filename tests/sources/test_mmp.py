"""fetch_installs against the local fake AppsFlyer endpoint and against hand-written CSV bodies."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from adperf.errors import (
    ConfigError,
    DataNotReady,
    QuotaExhausted,
    SourceError,
    TransientSourceError,
)
from adperf.pseudonym import pseudonymize_one
from adperf.sandbox.fake_mmp import CSV_COLUMNS, FakeMmp
from adperf.schema import INSTALLS, to_table
from adperf.sources.mmp import expected_min_installs, fetch_installs

TOKEN = "af-token-5f1c9e0b-SECRET"
KEY = b"test-hmac-key"
DAY = datetime.date(2026, 11, 27)
TZ = "Asia/Seoul"
APP = "com.example.demo"
FB_CAMPAIGN_ID = "120212345678901234"  # 18 digits: exact only as a string
FB_AD_ID = "120298765432109877"
FB_CAMPAIGN = '봄 세일, 2026 "특가"'
FB_ADSET = "타깃: 20대\n여성"


def _kst(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=TZ).tz_convert("UTC")


def _install(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "appsflyer_id": "1732000000000-1111111",
        "customer_user_id": "user-001",
        "install_time": _kst("2026-11-27 12:00:00"),
        "app_id": APP,
        "media_source": "Facebook Ads",
        "campaign": FB_CAMPAIGN,
        "campaign_id": FB_CAMPAIGN_ID,
        "adset": FB_ADSET,
        "adset_id": "120255555555555555",
        "ad": "영상 A",
        "ad_id": FB_AD_ID,
        "country_code": "KR",
        "platform": "ios",
    }
    row.update(overrides)
    return row


ORGANIC = {"campaign": None, "campaign_id": None, "adset": None, "adset_id": None,
           "ad": None, "ad_id": None, "media_source": "organic"}  # fmt: skip


@pytest.fixture()
def world() -> pd.DataFrame:
    rows = [
        # 23:30 in Seoul is 14:30 UTC the same day: it belongs to DAY.
        _install(appsflyer_id="af-fb-late", customer_user_id="user-001",
                 install_time=_kst("2026-11-27 23:30:00")),
        # 00:05 in Seoul is the previous day in UTC: still DAY.
        _install(appsflyer_id="af-gg-early", customer_user_id=None,
                 install_time=_kst("2026-11-27 00:05:00"), media_source="googleadwords_int",
                 campaign="검색 캠페인", campaign_id="20000000001", adset="키워드",
                 adset_id="20000000002", ad="텍스트", ad_id="20000000003", platform="android"),
        _install(appsflyer_id="af-org", customer_user_id="user-003", platform="android",
                 country_code="US", **ORGANIC),
        _install(appsflyer_id="af-tiktok", customer_user_id="user-004",
                 media_source="tiktokglobal_int", campaign="tt", campaign_id="7000000000000000001"),
        # Outside DAY in Seoul although on DAY in UTC (and the reverse): must not come back.
        _install(appsflyer_id="af-next", customer_user_id="user-005",
                 install_time=_kst("2026-11-28 00:10:00")),
        _install(appsflyer_id="af-prev", customer_user_id="user-006",
                 install_time=_kst("2026-11-26 23:50:00")),
        # Another app, asked for separately.
        _install(appsflyer_id="af-app2", customer_user_id="user-007", app_id="id123456789"),
    ]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture()
def fake(world: pd.DataFrame) -> Iterator[FakeMmp]:
    server = FakeMmp(installs=world, api_token=TOKEN)
    server.base_url = server.start()  # type: ignore[attr-defined]
    yield server
    server.stop()


def _fetch(base_url: str, **overrides: Any) -> pd.DataFrame:
    kwargs: dict[str, Any] = {
        "base_url": base_url,
        "app_ids": [APP],
        "api_token": TOKEN,
        "day": DAY,
        "timezone": TZ,
        "hmac_key": KEY,
        "sleep": lambda s: None,
    }
    kwargs.update(overrides)
    return fetch_installs(**kwargs)


def _by_device(df: pd.DataFrame, raw_device_id: str) -> pd.Series:
    rows = df[df["device_pid"] == pseudonymize_one(raw_device_id, KEY)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_round_trip_through_fake(fake: FakeMmp) -> None:
    df = _fetch(fake.base_url)  # type: ignore[attr-defined]

    assert list(df.columns) == INSTALLS.columns
    to_table(df, INSTALLS)  # passes the lake schema check
    assert sorted(df["device_pid"]) == sorted(
        pseudonymize_one(d, KEY) for d in ("af-fb-late", "af-gg-early", "af-org", "af-tiktok")
    )
    assert set(df["date"]) == {"2026-11-27"}

    fb = _by_device(df, "af-fb-late")
    assert fb["install_time"] == pd.Timestamp("2026-11-27 14:30:00", tz="UTC")
    assert fb["user_pid"] == pseudonymize_one("user-001", KEY)
    assert fb["platform"] == "facebook"
    assert fb["media_source"] == "Facebook Ads"
    assert fb["campaign_name"] == FB_CAMPAIGN
    assert fb["adset_name"] == FB_ADSET
    assert fb["campaign_id"] == FB_CAMPAIGN_ID
    assert fb["ad_id"] == FB_AD_ID
    assert fb["ad_name"] == "영상 A"
    assert fb["country"] == "KR"
    assert fb["device_os"] == "ios"
    assert fb["app_id"] == APP

    gg = _by_device(df, "af-gg-early")
    assert gg["install_time"] == pd.Timestamp("2026-11-26 15:05:00", tz="UTC")
    assert gg["platform"] == "google_ads"
    assert gg["campaign_name"] == "검색 캠페인"
    assert gg["device_os"] == "android"

    other = _by_device(df, "af-tiktok")
    assert other["platform"] == "other"
    assert other["campaign_id"] == "7000000000000000001"


def test_unmatched_install_kept_with_null_user(fake: FakeMmp) -> None:
    df = _fetch(fake.base_url)  # type: ignore[attr-defined]
    gg = _by_device(df, "af-gg-early")
    assert gg["user_pid"] is None or pd.isna(gg["user_pid"])
    assert to_table(df, INSTALLS).column("user_pid").null_count == 1


def test_organic_rows(fake: FakeMmp) -> None:
    df = _fetch(fake.base_url)  # type: ignore[attr-defined]
    org = _by_device(df, "af-org")
    assert org["platform"] == "organic"
    assert org["media_source"] == "organic"
    assert org["user_pid"] == pseudonymize_one("user-003", KEY)
    for column in ("campaign_id", "campaign_name", "adset_id", "adset_name", "ad_id", "ad_name"):
        assert pd.isna(org[column]), column
    assert org["country"] == "US"


def test_media_source_map_is_configurable(fake: FakeMmp) -> None:
    df = _fetch(fake.base_url, media_source_map={"tiktokglobal_int": "tiktok"})  # type: ignore[attr-defined]
    assert _by_device(df, "af-tiktok")["platform"] == "tiktok"
    assert _by_device(df, "af-fb-late")["platform"] == "other"


def test_requests_use_header_token_and_timezone(fake: FakeMmp) -> None:
    _fetch(fake.base_url, app_ids=[APP, "id123456789"])  # type: ignore[attr-defined]
    paths = [r["path"] for r in fake.requests_seen]
    assert paths == [
        f"/api/raw-data/export/app/{APP}/installs_report/v5",
        f"/api/raw-data/export/app/{APP}/organic_installs_report/v5",
        "/api/raw-data/export/app/id123456789/installs_report/v5",
        "/api/raw-data/export/app/id123456789/organic_installs_report/v5",
    ]
    for seen in fake.requests_seen:
        assert seen["authorized"] is True
        assert seen["query"] == {
            "from": "2026-11-27",
            "to": "2026-11-27",
            "timezone": TZ,
            "maximum_rows": "1000000",
        }
        assert TOKEN not in seen["target"]


def test_second_app_is_fetched(fake: FakeMmp) -> None:
    df = _fetch(fake.base_url, app_ids=[APP, "id123456789"])  # type: ignore[attr-defined]
    assert _by_device(df, "af-app2")["app_id"] == "id123456789"
    assert len(df) == 5


def test_no_raw_id_or_token_in_output_or_debug_logs(
    fake: FakeMmp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    df = _fetch(fake.base_url)  # type: ignore[attr-defined]
    dumped = df.to_csv(index=False)
    assert "urllib3" in caplog.text or "127.0.0.1" in caplog.text  # DEBUG logging was captured
    for raw in ("user-001", "user-003", "af-fb-late", "af-gg-early", "af-org", TOKEN):
        assert raw not in dumped
        assert raw not in caplog.text


def test_429_then_success_with_injected_sleep(fake: FakeMmp) -> None:
    fake.inject_errors([{"status": 429}, {"status": 503}, {"status": 429, "retry_after": 7}])
    waits: list[float] = []
    df = _fetch(fake.base_url, sleep=waits.append)  # type: ignore[attr-defined]
    assert waits == [1.0, 2.0, 7.0]  # exponential, and Retry-After honoured when longer
    assert len(df) == 4
    assert len(fake.requests_seen) == 5


def test_dropped_connection_is_retried(fake: FakeMmp) -> None:
    fake.inject_errors([{"drop": True}])
    waits: list[float] = []
    df = _fetch(fake.base_url, sleep=waits.append)  # type: ignore[attr-defined]
    assert waits == [1.0]
    assert len(df) == 4


def test_persistent_5xx_gives_up_after_bounded_retries(fake: FakeMmp) -> None:
    fake.inject_errors([{"status": 502}] * 10)
    waits: list[float] = []
    with pytest.raises(TransientSourceError) as info:
        _fetch(fake.base_url, sleep=waits.append, max_retries=3)  # type: ignore[attr-defined]
    assert waits == [1.0, 2.0, 4.0]
    assert len(fake.requests_seen) == 4
    assert "HTTP 502" in str(info.value)
    assert info.value.day == "2026-11-27"


def test_backoff_is_capped(fake: FakeMmp) -> None:
    fake.inject_errors([{"status": 500}] * 9)
    waits: list[float] = []
    _fetch(fake.base_url, sleep=waits.append, max_retries=9)  # type: ignore[attr-defined]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_report_not_ready_retries_then_data_not_ready(fake: FakeMmp) -> None:
    not_ready = {"status": 404, "body": "Raw Data reports are not available yet"}
    fake.inject_errors([not_ready] * 3)
    waits: list[float] = []
    with pytest.raises(DataNotReady) as info:
        _fetch(fake.base_url, sleep=waits.append, max_retries=2)  # type: ignore[attr-defined]
    assert len(waits) == 2
    assert "not ready" in str(info.value)


def test_report_not_ready_then_ready(fake: FakeMmp) -> None:
    fake.inject_errors([{"status": 400, "body": "The report is not ready, try again later"}])
    assert len(_fetch(fake.base_url)) == 4  # type: ignore[attr-defined]


def test_other_client_error_is_permanent(fake: FakeMmp) -> None:
    fake.inject_errors([{"status": 404, "body": "App not found"}])
    with pytest.raises(SourceError) as info:
        _fetch(fake.base_url)  # type: ignore[attr-defined]
    assert not isinstance(info.value, (DataNotReady, TransientSourceError))
    assert len(fake.requests_seen) == 1
    assert "App not found" in str(info.value) and "[mmp] app_ids" in str(info.value)


def test_bad_token_is_a_clear_error_without_the_token(fake: FakeMmp) -> None:
    wrong = "wrong-token-DO-NOT-LEAK"
    with pytest.raises(SourceError) as info:
        _fetch(fake.base_url, api_token=wrong)  # type: ignore[attr-defined]
    message = str(info.value)
    assert "ADPERF_MMP_TOKEN" in message
    assert "HTTP 401" in message
    assert wrong not in message and TOKEN not in message
    assert len(fake.requests_seen) == 1  # not retried


def test_day_range_dates_each_install_by_its_local_day(fake: FakeMmp) -> None:
    df = _fetch(
        fake.base_url,  # type: ignore[attr-defined]
        day=datetime.date(2026, 11, 26),
        last_day=datetime.date(2026, 11, 28),
    )
    assert fake.requests_seen[0]["query"]["from"] == "2026-11-26"
    assert fake.requests_seen[0]["query"]["to"] == "2026-11-28"
    assert _by_device(df, "af-prev")["date"] == "2026-11-26"
    assert _by_device(df, "af-fb-late")["date"] == "2026-11-27"
    # 00:10 on the 28th in Seoul is still the 27th in UTC: the local day wins.
    nxt = _by_device(df, "af-next")
    assert nxt["date"] == "2026-11-28"
    assert nxt["install_time"] == pd.Timestamp("2026-11-27 15:10:00", tz="UTC")
    assert len(df) == 6


def test_report_at_the_row_limit_is_split_into_smaller_time_ranges(fake: FakeMmp) -> None:
    # Three attributed installs on DAY (00:05, 12:00, 23:30); AppsFlyer would silently cut the
    # report at the limit, so a report of exactly max_rows rows is pulled again in halves.
    whole = _fetch(fake.base_url, max_rows=4)  # type: ignore[attr-defined]
    fake.requests_seen.clear()
    split = _fetch(fake.base_url, max_rows=2)  # type: ignore[attr-defined]
    key = ["device_pid", "install_time"]
    assert to_table(split.sort_values(key), INSTALLS).equals(
        to_table(whole.sort_values(key), INSTALLS)
    )
    assert len(split) == 4 and not split["device_pid"].duplicated().any()
    spans = [(r["query"]["from"], r["query"]["to"]) for r in fake.requests_seen]
    assert spans[0] == ("2026-11-27", "2026-11-27")
    # Halves meet at 12:00 without overlap (both ends included, as for dates): the installs at
    # exactly 12:00 come in the later half only.
    assert ("2026-11-27 00:00", "2026-11-27 11:59") in spans
    assert ("2026-11-27 12:00", "2026-11-27 23:59") in spans


def test_row_limit_within_one_minute_is_a_clear_error(world: pd.DataFrame) -> None:
    same_minute = [
        _install(appsflyer_id=f"af-{i}", install_time=_kst("2026-11-27 09:30:00")) for i in (1, 2)
    ]
    server = FakeMmp(installs=pd.DataFrame(same_minute), api_token=TOKEN)
    url = server.start()
    try:
        with pytest.raises(SourceError) as info:
            _fetch(url, max_rows=2)
    finally:
        server.stop()
    assert "2-row limit within one minute (2026-11-27 09:30)" in str(info.value)
    assert "Fix: raise max_rows" in str(info.value)


def test_an_empty_day_after_a_busy_week_is_not_ready(fake: FakeMmp) -> None:
    empty_day = datetime.date(2026, 1, 1)
    with pytest.raises(DataNotReady, match="mmp for 2026-01-01: no install at all.*at least 25"):
        _fetch(fake.base_url, day=empty_day, expected_min=25)  # type: ignore[attr-defined]
    assert len(_fetch(fake.base_url, day=empty_day, expected_min=0)) == 0  # type: ignore[attr-defined]
    # Only a day with no install at all is suspicious: a quiet day is data.
    assert len(_fetch(fake.base_url, expected_min=1000)) == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("previous", "expected"),
    [
        ([30, 40, 25, 50, 60, 33, 41], 25),  # a busy week: at least its quietest day
        ([5, 30, 40, 25, 50, 60, 33, 41], 25),  # only the last 7 days count
        ([30, 40, 25, 50, 60, 33], 0),  # less than a week of history
        ([30, 40, 25, 50, 60, 33, 3], 0),  # a quiet day in the week: an empty day is plausible
        ([], 0),
    ],
)
def test_expected_min_installs(previous: list[int], expected: int) -> None:
    assert expected_min_installs(previous) == expected


def test_app_ids_must_be_strings() -> None:
    with pytest.raises(ConfigError) as info:
        _fetch("http://mmp.test", app_ids=[{"app_id": APP}])
    assert "[mmp] app_ids" in str(info.value)


def test_empty_reports_give_an_empty_frame(fake: FakeMmp) -> None:
    df = _fetch(fake.base_url, day=datetime.date(2026, 1, 1))  # type: ignore[attr-defined]
    assert len(df) == 0
    assert list(df.columns) == INSTALLS.columns


# --- hand-written bodies through a requests adapter -------------------------------------------


class CsvAdapter(BaseAdapter):
    """Answers each report URL with a fixed body, like a server sending text/csv without charset."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        super().__init__()
        self.bodies = bodies
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        report = "organic_installs_report" if "/organic_" in str(request.url) else "installs_report"
        response = requests.Response()
        response.status_code = 200
        response._content = self.bodies[report]
        response.headers = CaseInsensitiveDict({"Content-Type": "text/csv"})
        # What requests' HTTPAdapter does: text/* without charset is guessed as ISO-8859-1.
        response.encoding = get_encoding_from_headers(response.headers)
        response.url = str(request.url)
        response.request = request
        return response

    def close(self) -> None:
        pass


HEADER_ONLY = ",".join(CSV_COLUMNS).encode() + b"\n"


def _session(installs: bytes, organic: bytes = HEADER_ONLY) -> requests.Session:
    session = requests.Session()
    session.mount(
        "http://mmp.test/",
        CsvAdapter({"installs_report": installs, "organic_installs_report": organic}),
    )
    return session


def test_reordered_extra_columns_bom_crlf_parsed_by_name() -> None:
    body = (
        "\ufeffPlatform,Extra Column,Ad ID,Ad,Adset ID,Adset,Campaign ID,Campaign,Media Source,"
        "Country Code,Install Time,Customer User ID,AppsFlyer ID,Event Name\r\n"
        'iOS,x,120298765432109877,광고,22,"세트, 1",120212345678901234,"캠페인\r\n둘째 줄",'
        "Facebook Ads,kr,2026-11-27 23:30:00.250,cuid-9,af-9,install\r\n"
    ).encode("utf-8")
    df = _fetch("http://mmp.test", session=_session(body))
    assert len(df) == 1
    row = df.iloc[0]
    assert row["campaign_name"] == "캠페인\r\n둘째 줄"
    assert row["adset_name"] == "세트, 1"
    assert row["ad_name"] == "광고"
    assert row["campaign_id"] == FB_CAMPAIGN_ID
    assert row["ad_id"] == FB_AD_ID
    assert row["device_pid"] == pseudonymize_one("af-9", KEY)
    assert row["user_pid"] == pseudonymize_one("cuid-9", KEY)
    assert row["install_time"] == pd.Timestamp("2026-11-27 14:30:00.250", tz="UTC")
    assert row["device_os"] == "ios"
    assert row["country"] == "KR"
    to_table(df, INSTALLS)


def test_missing_required_column_is_named() -> None:
    columns = [c for c in CSV_COLUMNS if c != "Install Time"]
    body = (",".join(columns) + "\n" + ",".join("secret-raw" for _ in columns) + "\n").encode()
    with pytest.raises(SourceError) as info:
        _fetch("http://mmp.test", session=_session(body))
    message = str(info.value)
    assert f"installs_report for app {APP} has no column 'Install Time'" in message
    assert "2026-11-27" in message
    assert "secret-raw" not in message


def test_ragged_row_is_an_error_that_quotes_no_cell() -> None:
    body = HEADER_ONLY + b"only,three,cells-raw-id\n"
    with pytest.raises(SourceError) as info:
        _fetch("http://mmp.test", session=_session(body))
    assert "row 2 has 3 fields" in str(info.value)
    assert "cells-raw-id" not in str(info.value)


def test_install_outside_the_day_is_an_error() -> None:
    body = (
        b"AppsFlyer ID,Customer User ID,Install Time,Media Source,Campaign,Campaign ID,Adset,"
        b"Adset ID,Ad,Ad ID,Country Code,Platform\n"
        b"af-1,u-1,2026-11-28 00:00:00,Facebook Ads,c,1,s,2,a,3,KR,android\n"
    )
    with pytest.raises(SourceError) as info:
        _fetch("http://mmp.test", session=_session(body))
    assert "outside 2026-11-27 in Asia/Seoul" in str(info.value)


def test_unreadable_install_time_is_an_error() -> None:
    body = (
        b"AppsFlyer ID,Customer User ID,Install Time,Media Source,Campaign,Campaign ID,Adset,"
        b"Adset ID,Ad,Ad ID,Country Code,Platform\n"
        b"af-1,u-1,27/11/2026 10:00,Facebook Ads,c,1,s,2,a,3,KR,android\n"
    )
    with pytest.raises(SourceError) as info:
        _fetch("http://mmp.test", session=_session(body))
    assert "unreadable Install Time values (first in CSV row 2" in str(info.value)
    assert "27/11/2026" not in str(info.value)  # the cell itself is not quoted


def test_repeated_dst_hour_reads_as_first_occurrence() -> None:
    body = (
        b"AppsFlyer ID,Customer User ID,Install Time,Media Source,Campaign,Campaign ID,Adset,"
        b"Adset ID,Ad,Ad ID,Country Code,Platform\n"
        b"af-1,u-1,2026-11-01 01:30:00,Facebook Ads,c,1,s,2,a,3,US,ios\n"
    )
    df = _fetch(
        "http://mmp.test",
        session=_session(body),
        day=datetime.date(2026, 11, 1),
        timezone="America/New_York",
    )
    # 01:30 happens twice that night; the first (EDT, UTC-4) is 05:30 UTC.
    assert df["install_time"].tolist() == [pd.Timestamp("2026-11-01 05:30:00", tz="UTC")]


# --- the fake's CSV rendering against the row-by-row reference -------------------------------


def _reference_csv(
    installs: pd.DataFrame,
    *,
    app_id: str,
    organic: bool,
    start: datetime.date | datetime.datetime,
    end: datetime.date | datetime.datetime,
    tz: str,
    max_rows: int,
) -> bytes:
    """FakeMmp.render_csv as it was written first: one csv.writer row per install."""
    import csv
    import hashlib
    import io
    import math
    import zoneinfo

    from adperf.sandbox.fake_mmp import _range_end, _range_start

    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return str(value)

    fmt = "%Y-%m-%d %H:%M:%S"
    df = installs.reset_index(drop=True)
    zone = zoneinfo.ZoneInfo(tz)
    times = pd.to_datetime(df["install_time"], utc=True).dt.tz_convert(zone)
    local = times.dt.tz_localize(None)
    is_organic = df["media_source"] == "organic"
    keep = (
        (df["app_id"] == app_id)
        & (is_organic if organic else ~is_organic)
        & (local >= pd.Timestamp(_range_start(start)))
        & (local < pd.Timestamp(_range_end(end)))
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    chosen = df[keep].head(max_rows)
    for row, t in zip(chosen.to_dict("records"), times[keep].head(max_rows), strict=True):
        device = text(row["appsflyer_id"])
        seed = int(hashlib.sha256(device.encode("utf-8")).hexdigest()[:8], 16)
        os_name = text(row["platform"]).lower()
        ios = os_name == "ios"
        touch = t - pd.Timedelta(minutes=3 + seed % 50)
        install = t.strftime(fmt)
        paid = not organic
        cells = {
            "Attributed Touch Type": ("click" if seed % 5 else "impression") if paid else "",
            "Attributed Touch Time": touch.strftime(fmt) if paid else "",
            "Install Time": install, "Event Time": install, "Event Name": "install",
            "Event Value": "", "Event Revenue": "", "Event Revenue Currency": "USD",
            "Event Revenue USD": "", "Event Source": "SDK", "Is Receipt Validated": "",
            "Partner": "", "Media Source": text(row["media_source"]),
            "Channel": ("Facebook" if "Facebook" in str(row["media_source"]) else "ACI_Search")
            if paid else "",
            "Keywords": "",
            "Campaign": text(row["campaign"]) if paid else "",
            "Campaign ID": text(row["campaign_id"]) if paid else "",
            "Adset": text(row["adset"]) if paid else "",
            "Adset ID": text(row["adset_id"]) if paid else "",
            "Ad": text(row["ad"]) if paid else "",
            "Ad ID": text(row["ad_id"]) if paid else "",
            "Ad Type": "video" if paid else "", "Site ID": "", "Sub Site ID": "",
            "Cost Model": "CPI" if paid else "", "Cost Value": "", "Cost Currency": "",
            "Region": "AS", "Country Code": text(row["country_code"]), "State": "11",
            "City": "Seoul" if seed % 3 else "Busan", "Postal Code": "",
            "IP": f"203.0.113.{seed % 254 + 1}",
            "WIFI": "true" if seed % 2 else "false",
            "Operator": "SKTelecom" if seed % 2 else "KT", "Language": "한국어",
            "AppsFlyer ID": device,
            "Advertising ID": "" if ios else f"{seed:08x}-0000-4000-8000-000000000000",
            "IDFA": f"{seed:08X}-0000-4000-8000-000000000000" if ios else "",
            "Customer User ID": text(row["customer_user_id"]),
            "IDFV": f"{seed:08X}-1111-4000-8000-000000000000" if ios else "",
            "Platform": os_name,
            "Device Type": "iPhone15,2" if ios else "SM-S911N",
            "Device Model": "iPhone 14 Pro" if ios else "Galaxy S23",
            "OS Version": "17.5.1" if ios else "14", "App Version": "3.12.0",
            "SDK Version": "v6.14.3", "App ID": text(row["app_id"]), "App Name": "Demo App",
            "Bundle ID": "com.example.demo", "Is Retargeting": "false",
            "Retargeting Conversion Type": "", "Attribution Lookback": "7d" if paid else "",
            "Is Primary Attribution": "true",
            "User Agent": "Dalvik/2.1.0" if not ios else "CFNetwork/1496.0.7 Darwin/23.5.0",
            "HTTP Referrer": "", "Original URL": "",
        }  # fmt: skip
        writer.writerow([cells[c] for c in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def _tricky_world(n: int, *, string_dtype: bool) -> pd.DataFrame:
    """Installs over DST changes in New York and Seoul days, with names worth quoting."""
    import numpy as np

    rng = np.random.default_rng(11)
    names = [
        FB_CAMPAIGN, FB_ADSET, "plain", 'say "hi"', "a,b", "line\r\nbreak", "cr\ronly",
        "\ufeffbom-first", "중국어 中文 日本語", " padded ", "", None, float("nan"),
    ]  # fmt: skip
    sources = ["Facebook Ads", "googleadwords_int", "organic", "tiktok, int", None]
    # 2026-03-08 and 2026-11-01 are the US DST changes; spread over a few days around each.
    base = np.array(["2026-03-07T00:00", "2026-10-31T00:00"], dtype="datetime64[s]")
    seconds = rng.integers(0, 3 * 86400, n)
    times = base[rng.integers(0, 2, n)] + seconds.astype("timedelta64[s]")
    times = times + rng.integers(0, 1_000_000, n).astype("timedelta64[us]")

    def pick(options: list[Any]) -> list[Any]:
        return [options[i] for i in rng.integers(0, len(options), n)]

    df = pd.DataFrame(
        {
            "appsflyer_id": [f"af-{i}" if i % 17 else None for i in range(n)],
            "customer_user_id": pick(["user-1", "사용자 2", "", None, "u,3"]),
            "install_time": pd.to_datetime(times).tz_localize("UTC"),
            "app_id": pick([APP, "id123456789"]),
            "media_source": pick(sources),
            "campaign": pick(names),
            "campaign_id": pick([FB_CAMPAIGN_ID, "20000000001", None]),
            "adset": pick(names),
            "adset_id": pick(["1", "22", None]),
            "ad": pick(names),
            "ad_id": pick([FB_AD_ID, None, "3"]),
            "country_code": pick(["KR", "US", None]),
            "platform": pick(["ios", "Android", "IOS", None, "İos"]),
        }
    )
    text_columns = [c for c in df.columns if c != "install_time"]
    if string_dtype:
        df[text_columns] = df[text_columns].astype("str")  # the bench worlds' dtype
    else:
        df[text_columns] = df[text_columns].astype(object)
    return df


@pytest.mark.parametrize("string_dtype", [True, False])
def test_fake_renders_exactly_like_the_row_by_row_reference(string_dtype: bool) -> None:
    installs = _tricky_world(3000, string_dtype=string_dtype)
    fake = FakeMmp(installs=installs, api_token=TOKEN)
    day = datetime.date
    minute = datetime.datetime
    requests_ = [
        ("America/New_York", day(2026, 3, 7), day(2026, 3, 9), 1_000_000),
        ("America/New_York", day(2026, 11, 1), day(2026, 11, 1), 1_000_000),
        # The repeated 01:00-02:00 hour of the fall-back night, by minutes.
        ("America/New_York", minute(2026, 11, 1, 1, 0), minute(2026, 11, 1, 1, 59), 1_000_000),
        ("Asia/Seoul", day(2026, 10, 31), day(2026, 11, 2), 1_000_000),
        ("Asia/Seoul", minute(2026, 3, 8, 9, 30), minute(2026, 3, 8, 17, 0), 1_000_000),
        ("UTC", day(2026, 3, 1), day(2026, 11, 30), 37),  # the row cap cuts in file order
        ("UTC", day(2026, 3, 1), day(2026, 11, 30), 0),
        ("UTC", day(2026, 1, 1), day(2026, 1, 31), 1_000_000),  # no install: header only
    ]
    nonempty = 0
    for tz, start, end, max_rows in requests_:
        for app in (APP, "id123456789"):
            for organic in (False, True):
                kwargs: dict[str, Any] = {
                    "app_id": app, "organic": organic, "start": start, "end": end, "tz": tz,
                    "max_rows": max_rows,
                }  # fmt: skip
                got = fake.render_csv(**kwargs)
                assert got == _reference_csv(installs, **kwargs), kwargs
                nonempty += got.count(b"\n") > 1
    assert nonempty >= 20
    # The cases worth quoting did come out (the comparison would pass on a bland world).
    body = fake.render_csv(
        app_id=APP, organic=False, start=day(2026, 3, 1), end=day(2026, 11, 30), tz="UTC"
    )
    for quoted in (b'"a,b"', b'"say ""hi"""', b'"line\r\nbreak"', "\ufeffbom".encode()):
        assert quoted in body, quoted


# -- the daily Pull API quota ------------------------------------------------------------------

# 21:25 UTC: the quota resets at the next 00:00 UTC, 2 h 35 min later (06:25 on DAY+1 in Seoul:
# a clock in the report's zone would name the wrong moment).
QUOTA_NOW = datetime.datetime(2026, 11, 27, 21, 25, tzinfo=datetime.UTC)


@pytest.mark.parametrize("status", [400, 403])
def test_used_up_daily_quota_is_not_ready_until_midnight_utc_not_a_token_error(
    world: pd.DataFrame, status: int
) -> None:
    # The attributed report had its one report of the day; the organic one too, after it.
    server = FakeMmp(
        installs=world, api_token=TOKEN, daily_quota=1, quota_status=status,
        clock=lambda: QUOTA_NOW,
    )  # fmt: skip
    url = server.start()
    waits: list[float] = []
    try:
        first = _fetch(url, now=lambda: QUOTA_NOW)
        with pytest.raises(QuotaExhausted) as info:
            _fetch(url, sleep=waits.append, now=lambda: QUOTA_NOW)
    finally:
        server.stop()
    assert len(first) == 4
    error = info.value
    assert isinstance(error, DataNotReady)  # the pipeline's missing-data path, not a failure
    assert waits == [] and len(server.requests_seen) == 3  # asked once: retrying cannot help
    assert error.retry_at == datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC)
    assert error.source == "mmp" and error.day == DAY.isoformat()
    assert "daily Pull API quota of installs_report reports is used up" in error.problem
    assert f"HTTP {status}" in error.problem and "limit has been reached" in error.problem
    assert "2026-11-28 00:00 UTC (in 2 h 35 min)" in error.problem
    assert "ADPERF_MMP_TOKEN" not in str(error) and TOKEN not in str(error)
    assert "after 2026-11-28 00:00 UTC" in error.fix and "higher quota" in error.fix


def test_the_fake_quota_counts_per_report_type_and_resets_at_midnight_utc(
    world: pd.DataFrame,
) -> None:
    now = [QUOTA_NOW]
    server = FakeMmp(installs=world, api_token=TOKEN, daily_quota=1, clock=lambda: now[0])
    url = server.start()
    try:
        report = f"{url}/api/raw-data/export/app/{APP}/installs_report/v5"
        params = {"from": DAY.isoformat(), "to": DAY.isoformat(), "timezone": TZ}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answers = [requests.get(report, params=params, headers=auth, timeout=5)]
        answers.append(requests.get(report, params=params, headers=auth, timeout=5))
        organic = report.replace("/installs_report/", "/organic_installs_report/")
        answers.append(requests.get(organic, params=params, headers=auth, timeout=5))
        now[0] = datetime.datetime(2026, 11, 28, 0, 0, 1, tzinfo=datetime.UTC)
        answers.append(requests.get(report, params=params, headers=auth, timeout=5))
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200, 400, 200, 200]
    assert answers[1].text == (
        "Your API calls limit has been reached for report type installs_report"
    )


# -- restricted media source -------------------------------------------------------------------


def test_restricted_media_source_is_its_own_platform_with_no_ad_ids(world: pd.DataFrame) -> None:
    """A network that withholds user-level data: AppsFlyer reports the media source as
    'restricted' and leaves the attribution fields empty
    (https://support.appsflyer.com/hc/en-us/articles/360006868017)."""
    restricted = _install(
        appsflyer_id="af-restricted", customer_user_id="user-008", media_source="restricted",
        campaign=None, campaign_id=None, adset=None, adset_id=None, ad=None, ad_id=None,
    )  # fmt: skip
    server = FakeMmp(installs=pd.concat([world, pd.DataFrame([restricted])]), api_token=TOKEN)
    url = server.start()
    try:
        df = _fetch(url, media_source_map={"restricted": "facebook"})  # a map cannot claim it
    finally:
        server.stop()
    row = _by_device(df, "af-restricted")
    assert row["platform"] == "restricted" and row["media_source"] == "restricted"
    assert row["user_pid"] == pseudonymize_one("user-008", KEY)  # kept: its revenue reconciles
    for column in ("campaign_id", "campaign_name", "adset_id", "adset_name", "ad_id", "ad_name"):
        assert pd.isna(row[column]), column
    assert _by_device(df, "af-tiktok")["platform"] == "other"  # unknown networks stay 'other'
    to_table(df, INSTALLS)


def test_restricted_rows_with_null_strings_carry_no_ids() -> None:
    """AppsFlyer may fill a restricted install's attribution fields with the text 'null'."""
    cells = dict.fromkeys(CSV_COLUMNS, "")
    cells.update({
        "Install Time": "2026-11-27 10:00:00", "Media Source": "restricted",
        "Campaign": "null", "Campaign ID": "null", "Adset": "null", "Adset ID": "null",
        "Ad": "null", "Ad ID": "null", "AppsFlyer ID": "af-r", "Customer User ID": "cuid-r",
        "Country Code": "KR", "Platform": "android",
    })  # fmt: skip
    body = (",".join(CSV_COLUMNS) + "\n" + ",".join(cells.values()) + "\n").encode()
    df = _fetch("http://mmp.test", session=_session(body))
    row = df.iloc[0]
    assert row["platform"] == "restricted"
    assert all(pd.isna(row[c]) for c in ("campaign_id", "campaign_name", "adset_id", "ad_id"))
