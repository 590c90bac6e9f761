"""fetch_facebook_spend through the real facebook-business SDK against the local fake Graph API."""

from __future__ import annotations

import datetime
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.sandbox.fake_graph import FakeGraphApi
from adperf.schema import AD_SPEND, to_table
from adperf.sources.facebook import (
    ASYNC_POLL_CAP_S,
    RATE_LIMIT_WAIT_CAP_S,
    fetch_facebook_spend,
)

TOKEN = "EAAB-system-user-token-0123456789abcdef"
DAY = datetime.date(2026, 11, 27)
VERSION = "v21.0"
USD_ACCOUNT = {
    "account_id": "1234567890",
    "name": "Games US",
    "currency": "USD",
    "timezone_name": "America/Los_Angeles",
}
KRW_ACCOUNT = {
    "account_id": "9876543210",
    "name": "Games KR",
    "currency": "KRW",
    "timezone_name": "Asia/Seoul",
}


def ad_row(i: int, **overrides: Any) -> dict[str, Any]:
    """One ad's delivery on DAY in the fake's `ad_rows` format."""
    row: dict[str, Any] = {
        "date": DAY.isoformat(),
        "account_id": USD_ACCOUNT["account_id"],
        "campaign_id": "120200000000000001",
        "campaign_name": "Install US",
        "adset_id": "120200000000000002",
        "adset_name": "Broad 18+",
        "ad_id": f"1202000000{i:08d}",
        "ad_name": f"Video {i}",
        "impressions": 1000 + i,
        "clicks": 10 + i,
        "installs_reported": 0,
        "purchases_reported": 0,
        "spend": "1.00",
        "purchase_value": "0",
    }
    row.update(overrides)
    return row


class Sleeps:
    """An injected `sleep` that records what it was asked to wait and never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start fake Graph APIs for a test and stop them after it."""
    started: list[FakeGraphApi] = []

    def _serve(
        rows: list[dict[str, Any]],
        accounts: list[dict[str, str]] | None = None,
        page_size: int = 25,
        **options: Any,
    ) -> FakeGraphApi:
        fake = FakeGraphApi(
            accounts=accounts or [USD_ACCOUNT],
            ad_rows=pd.DataFrame(rows, columns=list(ad_row(0))),
            access_token=TOKEN,
            page_size=page_size,
            **options,
        )
        fake.start()
        started.append(fake)
        return fake

    yield _serve
    for fake in started:
        fake.stop()


def fetch(fake: FakeGraphApi, sleep: Sleeps | None = None, **kwargs: Any) -> pd.DataFrame:
    args: dict[str, Any] = {
        "graph_url": fake.base_url,
        "api_version": VERSION,
        "access_token": TOKEN,
        "account_ids": [f"act_{USD_ACCOUNT['account_id']}"],
        "day": DAY,
        "timeout": 10.0,
        "sleep": sleep or Sleeps(),
    }
    args.update(kwargs)
    return fetch_facebook_spend(**args)


def insights_requests(fake: FakeGraphApi) -> list[dict[str, str]]:
    return [params for path, params in fake.requests_seen if path.endswith("/insights")]


# -- reading ----------------------------------------------------------------------------------


def test_reads_every_page_of_a_multi_page_result(serve: Any) -> None:
    fake = serve([ad_row(i) for i in range(60)], page_size=25)

    df = fetch(fake)

    to_table(df, AD_SPEND)  # columns and types exactly as declared
    assert list(df.columns) == AD_SPEND.columns
    assert len(df) == 60
    assert sorted(df["ad_id"]) == sorted(ad_row(i)["ad_id"] for i in range(60))
    pages = insights_requests(fake)
    assert len(pages) == 3  # 25 + 25 + 10
    assert "after" not in pages[0] and pages[1]["after"] != pages[2]["after"]
    assert pages[0]["level"] == "ad" and pages[0]["time_increment"] == "1"
    assert json.loads(pages[0]["time_range"]) == {"since": "2026-11-27", "until": "2026-11-27"}
    assert set(df["date"]) == {"2026-11-27"} and set(df["platform"]) == {"facebook"}
    assert set(df["account_id"]) == {"1234567890"}  # no act_ prefix
    assert df["impressions"].sum() == sum(1000 + i for i in range(60))
    assert df["clicks"].sum() == sum(10 + i for i in range(60))


def test_money_sums_exactly_in_micros(serve: Any) -> None:
    rows = [
        ad_row(i, spend="0.10", purchase_value="0.01", purchases_reported=1) for i in range(999)
    ]
    rows.append(ad_row(999, spend="1234567.89", purchase_value="0.07", purchases_reported=1))
    fake = serve(rows, page_size=200)

    df = fetch(fake)

    assert df["spend_original_micros"].dtype == "int64"
    # 999 x 0.10 as floats is 99.89999999999...; in micros it is exact.
    assert int(df["spend_original_micros"].sum()) == 999 * 100_000 + 1_234_567_890_000
    assert int(df["purchase_value_original_micros"].sum()) == 999 * 10_000 + 70_000
    big = df.loc[df["ad_id"] == ad_row(999)["ad_id"]].iloc[0]
    assert big["spend_original_micros"] == 1_234_567_890_000


def test_installs_and_purchases_come_from_their_action_types(serve: Any) -> None:
    rows = [
        ad_row(1, installs_reported=7, purchases_reported=3, purchase_value="29.97"),
        ad_row(2, clicks=0, impressions=0, spend="0"),  # no actions, no action_values at all
        ad_row(3, clicks=40, installs_reported=0, purchases_reported=0),  # link_click only
    ]
    fake = serve(rows)

    df = fetch(fake).set_index("ad_id")

    first, quiet, clicks_only = (df.loc[ad_row(i)["ad_id"]] for i in (1, 2, 3))
    assert (first["installs_reported"], first["purchases_reported"]) == (7, 3)
    assert first["purchase_value_original_micros"] == 29_970_000
    assert quiet[["impressions", "clicks", "installs_reported", "purchases_reported"]].tolist() == [
        0,
        0,
        0,
        0,
    ]
    assert quiet["purchase_value_original_micros"] == 0
    assert quiet["spend_original_micros"] == 0
    # link_click (40) and omni_* duplicates must not leak into installs or purchases.
    assert (clicks_only["installs_reported"], clicks_only["purchases_reported"]) == (0, 0)


def test_eighteen_digit_ids_stay_exact_strings(serve: Any) -> None:
    ids = {
        "campaign_id": "120212345678901234",
        "adset_id": "120212345678901235",
        "ad_id": "120299999999999999",  # > 2**53: a float would round it
    }
    fake = serve([ad_row(1, **ids)])

    df = fetch(fake)

    row = df.iloc[0]
    assert {k: row[k] for k in ids} == ids
    table = to_table(df, AD_SPEND)
    assert table.column("ad_id").to_pylist() == ["120299999999999999"]


def test_each_account_keeps_its_own_currency(serve: Any) -> None:
    rows = [
        ad_row(1, spend="12.34"),
        ad_row(
            2,
            account_id=KRW_ACCOUNT["account_id"],
            spend="15000",
            purchase_value="33000",
            purchases_reported=1,
        ),
    ]
    fake = serve(rows, accounts=[USD_ACCOUNT, KRW_ACCOUNT])

    df = fetch(
        fake,
        account_ids=["act_1234567890", "9876543210"],  # with or without the act_ prefix
    ).set_index("account_id")

    assert df.loc["1234567890", "currency_original"] == "USD"
    assert df.loc["1234567890", "spend_original_micros"] == 12_340_000
    assert df.loc["9876543210", "currency_original"] == "KRW"
    assert df.loc["9876543210", "spend_original_micros"] == 15_000_000_000
    assert df.loc["9876543210", "purchase_value_original_micros"] == 33_000_000_000


def test_a_day_without_delivery_is_an_empty_frame_of_the_schema(serve: Any) -> None:
    fake = serve([ad_row(1, date="2026-11-26")])

    df = fetch(fake)

    assert len(df) == 0
    assert to_table(df, AD_SPEND, allow_empty=True).num_rows == 0


def test_async_report_run_reads_every_page(serve: Any) -> None:
    fake = serve([ad_row(i) for i in range(60)], page_size=25)
    sleeps = Sleeps()

    df = fetch(fake, sleeps, use_async=True)

    assert len(df) == 60 and df["ad_id"].is_unique
    to_table(df, AD_SPEND)
    paths = [path for path, _ in fake.requests_seen]
    assert paths.count(f"/{VERSION}/act_1234567890/insights") == 1  # the POST that starts it
    run_pages = [p for p in paths if p.endswith("/insights") and "act_" not in p]
    assert len(run_pages) == 3
    # Two polls before it completes: waits grow (2 s, then 3 s), never a fixed interval.
    assert sleeps.calls == [2.0, 3.0]


def test_async_polls_back_off_up_to_a_cap(serve: Any) -> None:
    fake = serve([ad_row(1)], async_polls_until_done=12)
    sleeps = Sleeps()

    fetch(fake, sleeps, use_async=True)

    assert sleeps.calls[:4] == [2.0, 3.0, 4.5, 6.75]
    assert max(sleeps.calls) == ASYNC_POLL_CAP_S and len(sleeps.calls) == 12


@pytest.mark.parametrize("outcome", ["failed", "skipped", "stalled"])
def test_a_failed_skipped_or_stalled_async_report_is_started_again(
    serve: Any, outcome: str
) -> None:
    fake = serve([ad_row(i) for i in range(5)], async_outcomes=[outcome])
    sleeps = Sleeps()

    df = fetch(fake, sleeps, use_async=True, async_stall_s=60.0)

    assert len(df) == 5 and df["ad_id"].is_unique
    posts = [p for p, params in fake.requests_seen if p.endswith("act_1234567890/insights")]
    assert len(posts) == 2  # the bad run, then a new one over the same range
    assert fake.report_run_ranges == [("2026-11-27", "2026-11-27")] * 2
    if outcome == "stalled":
        # Polled until 60 s of waiting had passed, then abandoned.
        assert sum(sleeps.calls[:-3]) >= 60.0


def test_an_async_range_that_keeps_failing_is_split_in_halves(serve: Any) -> None:
    first = DAY - datetime.timedelta(days=27)
    rows = [
        ad_row(i, date=(first + datetime.timedelta(days=i % 28)).isoformat(), spend="2.50")
        for i in range(56)
    ]
    # The 28-day run fails twice, then the first half (14 days) fails twice too.
    fake = serve(rows, async_outcomes=["failed", "skipped", "failed", "failed"])

    df = fetch(fake, use_async=True, first_day=first)

    assert len(df) == 56 and not df.duplicated(["date", "ad_id"]).any()
    assert int(df["spend_original_micros"].sum()) == 56 * 2_500_000
    assert fake.report_run_ranges == [
        ("2026-10-31", "2026-11-27"),
        ("2026-10-31", "2026-11-27"),
        ("2026-10-31", "2026-11-13"),
        ("2026-10-31", "2026-11-13"),
        ("2026-10-31", "2026-11-06"),
        ("2026-11-07", "2026-11-13"),
        ("2026-11-14", "2026-11-27"),
    ]


def test_a_single_day_that_never_completes_raises_transient(serve: Any) -> None:
    fake = serve([ad_row(1)], async_outcomes=["failed", "failed"])

    with pytest.raises(TransientSourceError) as caught:
        fetch(fake, use_async=True)

    assert "single day" in caught.value.problem and "Job Failed" in caught.value.problem


def test_a_window_is_one_request_with_one_row_per_ad_and_day(serve: Any) -> None:
    first = DAY - datetime.timedelta(days=27)
    rows = [
        ad_row(i % 3, date=(first + datetime.timedelta(days=d)).isoformat(), spend=f"{d}.01")
        for d in range(28)
        for i in range(3)
    ]
    rows.append(ad_row(1, date=(first - datetime.timedelta(days=1)).isoformat()))  # outside
    fake = serve(rows, page_size=500)

    df = fetch(fake, first_day=first)

    assert len(df) == 84 and sorted(set(df["date"]))[0] == first.isoformat()
    assert len(insights_requests(fake)) == 1
    query = insights_requests(fake)[0]
    assert json.loads(query["time_range"]) == {"since": "2026-10-31", "until": "2026-11-27"}
    assert query["time_increment"] == "1"
    day5 = df[df["date"] == (first + datetime.timedelta(days=5)).isoformat()]
    assert set(day5["spend_original_micros"]) == {5_010_000}


def test_an_account_in_another_timezone_keeps_its_own_days(serve: Any) -> None:
    # Once a ConfigError; now its days are its own (tests/sources/test_account_days.py).
    fake = serve([ad_row(1)])

    df = fetch(fake, report_timezone="Asia/Seoul")

    assert df[["date", "account_timezone"]].values.tolist() == [
        [DAY.isoformat(), "America/Los_Angeles"]
    ]


def test_the_fake_sends_usage_headers_with_account_answers(serve: Any) -> None:
    fake = serve([ad_row(1)])
    url = f"{fake.base_url}/{VERSION}/act_1234567890"
    answer = requests.get(
        url, params={"fields": "currency"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    usage = json.loads(answer.headers["X-Business-Use-Case-Usage"])
    assert usage["1234567890"][0]["type"] == "ads_insights"
    assert "acc_id_util_pct" in json.loads(answer.headers["X-Ad-Account-Usage"])


def test_same_account_listed_twice_is_read_once(serve: Any) -> None:
    fake = serve([ad_row(1), ad_row(2)])

    df = fetch(fake, account_ids=["act_1234567890", "1234567890 "])

    assert len(df) == 2


# -- errors -----------------------------------------------------------------------------------


def test_transient_error_is_retried_after_a_backoff(serve: Any) -> None:
    fake = serve([ad_row(i) for i in range(3)])
    fake.inject_errors(
        [
            {
                "status": 500,
                "code": 2,
                "message": "Service temporarily unavailable",
                "is_transient": True,
            }
        ]
    )
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 3
    assert sleeps.calls == [2.0]
    assert len(fake.requests_seen) == 1 + 1 + 1  # failed account read, retry, one page


def test_a_failed_later_page_is_re_read_without_duplicating_rows(serve: Any) -> None:
    fake = serve([ad_row(i) for i in range(60)], page_size=25)
    # account node and page 1 pass; page 2 fails twice (5xx, then a dropped connection).
    fake.inject_errors(
        [{"after_requests": 2, "status": 503, "body": "<html>Bad gateway</html>"}, {"drop": True}]
    )
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 60 and df["ad_id"].is_unique
    assert sleeps.calls == [2.0, 4.0]
    afters = [p.get("after") for p in insights_requests(fake)]
    assert afters[1] == afters[2] == afters[3]  # the same page asked again, not page 1


def test_rate_limit_waits_the_time_the_usage_header_gives(serve: Any) -> None:
    fake = serve([ad_row(1)])
    usage = {
        "1234567890": [
            {
                "type": "ads_insights",
                "call_count": 100,
                "total_cputime": 40,
                "total_time": 60,
                "estimated_time_to_regain_access": 3,
            }
        ]
    }
    fake.inject_errors(
        [
            {
                "status": 400,
                "code": 80000,
                "error_subcode": 2446079,
                "message": "There have been too many calls from this ad-account.",
                "headers": {"X-Business-Use-Case-Usage": json.dumps(usage)},
            }
        ]
    )
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 1
    assert sleeps.calls == [180.0]  # 3 minutes


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (  # two use cases: the longer wait wins, capped
            {
                "X-Business-Use-Case-Usage": json.dumps(
                    {
                        "1": [
                            {"type": "ads_management", "estimated_time_to_regain_access": 1},
                            {"type": "ads_insights", "estimated_time_to_regain_access": 240},
                        ]
                    }
                )
            },
            RATE_LIMIT_WAIT_CAP_S,
        ),
        (
            {"X-Ad-Account-Usage": json.dumps({"acc_id_util_pct": 100, "reset_time_duration": 45})},
            45.0,
        ),
        ({}, 2.0),  # no header: exponential backoff
        ({"X-Business-Use-Case-Usage": "not json"}, 2.0),
    ],
)
def test_rate_limit_wait_comes_from_headers_else_backoff(
    serve: Any, headers: dict[str, str], expected: float
) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors(
        [{"status": 400, "code": 17, "message": "User request limit reached", "headers": headers}]
    )
    sleeps = Sleeps()

    fetch(fake, sleeps)

    assert sleeps.calls == [expected]


def test_transient_errors_past_the_retry_budget_raise_transient_source_error(serve: Any) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([{"status": 500, "code": 1, "message": "An unknown error occurred"}] * 4)
    sleeps = Sleeps()

    with pytest.raises(TransientSourceError) as caught:
        fetch(fake, sleeps, max_retries=3)

    assert sleeps.calls == [2.0, 4.0, 8.0]
    assert len(fake.requests_seen) == 4
    message = str(caught.value)
    assert "facebook for 2026-11-27" in message and "act_1234567890" in message
    assert "code 1" in message and "4 tries" in message


def test_bad_token_is_permanent_names_the_account_and_is_not_retried(serve: Any) -> None:
    fake = serve([ad_row(1)])
    sleeps = Sleeps()

    with pytest.raises(SourceError) as caught:
        fetch(fake, sleeps, access_token="EAAB-revoked-token-99999")

    assert not isinstance(caught.value, TransientSourceError)
    assert sleeps.calls == []
    assert len(fake.requests_seen) == 1
    error = caught.value
    assert error.source == "facebook" and error.day == "2026-11-27"
    assert "act_1234567890" in error.problem and "code 190" in error.problem
    assert "ADPERF_FACEBOOK_TOKEN" in error.fix


@pytest.mark.parametrize(
    ("injected", "fix_word"),
    [
        (
            {
                "status": 403,
                "code": 200,
                "message": "(#200) Requires ads_read permission",
                "type": "OAuthException",
            },
            "access",
        ),
        (
            {"status": 400, "code": 10, "message": "(#10) Application does not have permission"},
            "access",
        ),
        (
            {"status": 400, "code": 2, "error_subcode": 1504041, "message": "Invalid breakdowns"},
            "[facebook]",
        ),
    ],
)
def test_permanent_api_errors_raise_source_error_at_once(
    serve: Any, injected: dict[str, Any], fix_word: str
) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([injected])
    sleeps = Sleeps()

    with pytest.raises(SourceError) as caught:
        fetch(fake, sleeps)

    assert not isinstance(caught.value, TransientSourceError)
    assert sleeps.calls == []
    assert f"code {injected['code']}" in caught.value.problem
    assert fix_word in caught.value.fix


def test_unknown_account_names_the_account(serve: Any) -> None:
    fake = serve([ad_row(1)])

    with pytest.raises(SourceError) as caught:
        fetch(fake, account_ids=["act_1234567890", "act_555"])

    assert "act_555" in caught.value.problem and "code 100" in caught.value.problem
    assert "ad_account_ids" in caught.value.fix


def test_bad_api_version_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="api_version"):
        fetch_facebook_spend(
            graph_url="http://127.0.0.1:9",
            api_version="21",
            access_token=TOKEN,
            account_ids=["act_1"],
            day=DAY,
        )


# -- the token never leaks --------------------------------------------------------------------


def test_token_never_appears_in_logs_messages_or_output(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = serve([ad_row(i) for i in range(30)], page_size=10)
    fake.inject_errors([{"status": 500, "code": 2, "is_transient": True, "message": "retry"}])

    df = fetch(fake)  # a full fetch with a retry and several pages
    fake.inject_errors([{"status": 500, "code": 2, "message": "down"}] * 3)
    with pytest.raises(TransientSourceError) as transient:
        fetch(fake, max_retries=2)
    wrong = "EAAB-a-wrong-token-that-must-not-leak-either"
    with pytest.raises(SourceError) as permanent:
        fetch(fake, access_token=wrong)

    # The capture really saw the HTTP layer's DEBUG lines (URLs with their query strings).
    assert any(
        r.name.startswith("urllib3") and "insights?" in r.getMessage() for r in caplog.records
    )
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    texts = [
        logged,
        df.to_csv(),
        str(transient.value),
        "".join(traceback.format_exception(transient.value)),
        "".join(traceback.format_exception(permanent.value)),
    ]
    for text in texts:
        assert TOKEN not in text
        assert wrong not in text
    assert len(df) == 30
    assert set(fake.token_locations) == {"header"}  # never in a URL or a form body


# -- the fake itself answers like the documented API ------------------------------------------


def test_fake_sends_strings_omits_zero_actions_and_ends_paging(serve: Any) -> None:
    fake = serve([ad_row(1, installs_reported=2, spend="3.50"), ad_row(2, clicks=0)], page_size=1)
    url = f"{fake.base_url}/{VERSION}/act_1234567890/insights"
    params = {
        "level": "ad",
        "time_range": json.dumps({"since": "2026-11-27", "until": "2026-11-27"}),
        "time_increment": "1",
        "fields": "ad_id,impressions,spend,actions,action_values",
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}

    first = requests.get(url, params=params, headers=auth, timeout=5).json()
    second = requests.get(first["paging"]["next"], headers=auth, timeout=5).json()
    denied = requests.get(url, params=params, headers={"Authorization": "Bearer x"}, timeout=5)

    row = first["data"][0]
    assert row["impressions"] == "1001" and row["spend"] == "3.50"
    assert {"action_type": "mobile_app_install", "value": "2"} in row["actions"]
    assert "action_values" not in row
    assert row["date_start"] == row["date_stop"] == "2026-11-27"
    assert "actions" not in second["data"][0]
    assert "next" not in second["paging"] and "after" in second["paging"]["cursors"]
    assert denied.status_code == 400
    error = denied.json()["error"]
    assert (error["code"], error["type"]) == (190, "OAuthException") and error["fbtrace_id"]


# -- the vendor's real answers: is_transient, "reduce the amount of data", recorded rows ------


@pytest.mark.parametrize(
    "injected",
    [
        {"status": 500, "code": 1, "message": "An unknown error occurred"},
        {"status": 500, "code": 2, "message": "Service temporarily unavailable"},
        {"status": 503, "code": 100, "message": "Invalid parameter"},
        {"status": 400, "code": 17, "message": "User request limit reached"},
        {"status": 400, "code": 80000, "message": "There have been too many calls"},
    ],
)
def test_is_transient_false_is_never_retried_whatever_the_code(
    serve: Any, injected: dict[str, Any]
) -> None:
    fake = serve([ad_row(1)])
    fake.inject_errors([{**injected, "is_transient": False}])
    sleeps = Sleeps()

    with pytest.raises(SourceError) as caught:
        fetch(fake, sleeps)

    assert not isinstance(caught.value, TransientSourceError)
    assert sleeps.calls == []
    assert len(fake.requests_seen) == 1  # asked once, never again
    error = caught.value
    assert f"code {injected['code']}" in error.problem and "is_transient false" in error.problem
    assert "act_1234567890" in error.problem and error.day == "2026-11-27"
    if injected["code"] == 100:
        assert "ad_account_ids" in error.fix  # a code with its own fix keeps it
    else:
        assert "is_transient: false" in error.fix and "fbtrace_id" in error.fix


@pytest.mark.parametrize("flag", [True, None])
def test_is_transient_true_or_absent_keeps_the_retry(serve: Any, flag: bool | None) -> None:
    fake = serve([ad_row(1)])
    error: dict[str, Any] = {"status": 500, "code": 2, "message": "Service temporarily unavailable"}
    if flag is not None:
        error["is_transient"] = flag
    fake.inject_errors([error, error])
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 1
    assert sleeps.calls == [2.0, 4.0]


def test_is_transient_false_from_an_action_write_names_the_fix(serve: Any) -> None:
    from adperf.actions.facebook import _ObjectCaller
    from adperf.sources.facebook import make_api

    fake = serve([ad_row(1)])
    fake.inject_errors([{"status": 500, "code": 2, "message": "x", "is_transient": False}])
    api, http = make_api(fake.base_url, VERSION, TOKEN, 10.0)
    sleeps = Sleeps()
    caller = _ObjectCaller(DAY, "adset 42", TOKEN, 3, sleeps)
    try:
        from facebook_business.adobjects.adset import AdSet

        with pytest.raises(SourceError) as caught:
            caller.call("pause the adset", lambda: AdSet("42", api=api).api_get(fields=["name"]))
    finally:
        http.close()
    assert sleeps.calls == [] and len(fake.requests_seen) == 1
    assert "is_transient: false" in caught.value.fix and "adset 42" in caught.value.problem


def test_too_much_data_halves_the_page_limit_until_it_passes(serve: Any) -> None:
    rows = [ad_row(i) for i in range(300)]
    fake = serve(rows, page_size=1000, max_insights_limit=100)
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert sorted(df["ad_id"]) == sorted(r["ad_id"] for r in rows)  # each row exactly once
    assert df["ad_id"].is_unique and df["impressions"].sum() == sum(1000 + i for i in range(300))
    limits = [int(p["limit"]) for p in insights_requests(fake)]
    # 500 and 250 and 125 refused; 62 a page from then on: 300 rows in 5 pages.
    assert limits == [500, 250, 125, 62, 62, 62, 62, 62]
    assert sleeps.calls == []  # not a retry of the same request: nothing to wait for


def test_too_much_data_on_a_later_page_shrinks_that_page_and_keeps_its_cursor(
    serve: Any,
) -> None:
    rows = [ad_row(i) for i in range(60)]
    fake = serve(rows, page_size=25)  # the server sends 25 rows a page whatever the limit
    # The account node and page 1 pass; page 2 is refused once, in the recorded shape.
    fake.inject_errors([{"after_requests": 2, "status": 500, "json": TOO_MUCH_DATA_ANSWER}])
    sleeps = Sleeps()

    df = fetch(fake, sleeps)

    assert len(df) == 60 and df["ad_id"].is_unique
    pages = insights_requests(fake)
    assert [int(p["limit"]) for p in pages] == [500, 500, 250, 250]
    assert "after" not in pages[0]
    assert pages[1]["after"] == pages[2]["after"] != pages[3]["after"]  # page 2, asked again
    assert sleeps.calls == []


def test_too_much_data_splits_the_range_once_pages_are_small(serve: Any) -> None:
    days = [DAY - datetime.timedelta(days=k) for k in range(6)]
    rows = [ad_row(i, date=d.isoformat()) for d in days for i in range(3)]
    fake = serve(rows, page_size=1000, max_insights_days=2)

    df = fetch(fake, first_day=days[-1])

    assert len(df) == 18 and not df.duplicated(["date", "ad_id"]).any()
    assert sorted(set(df["date"])) == sorted(d.isoformat() for d in days)
    ranges = [json.loads(p["time_range"]) for p in insights_requests(fake)]
    served = [(r["since"], r["until"]) for r in ranges]
    limits = [int(p["limit"]) for p in insights_requests(fake)]
    # The page limit goes down to its floor first (the refusal does not say why), then the
    # 6 days split into 3 + 3, each into 2 + 1: only ranges of at most 2 days are served.
    assert limits[:6] == [500, 250, 125, 62, 31, 25] and set(limits[6:]) == {25}
    assert served[5:] == [
        ("2026-11-22", "2026-11-27"),
        ("2026-11-22", "2026-11-24"),
        ("2026-11-22", "2026-11-23"),
        ("2026-11-24", "2026-11-24"),
        ("2026-11-25", "2026-11-27"),
        ("2026-11-25", "2026-11-26"),
        ("2026-11-27", "2026-11-27"),
    ]


def test_too_much_data_for_one_day_at_the_smallest_page_is_a_named_error(serve: Any) -> None:
    fake = serve([ad_row(1)], max_insights_limit=10)
    sleeps = Sleeps()

    with pytest.raises(SourceError) as caught:
        fetch(fake, sleeps)

    assert not isinstance(caught.value, TransientSourceError)
    assert "code 1" in caught.value.problem and "reduce the amount" in caught.value.problem
    assert "use_async" in caught.value.fix
    assert [int(p["limit"]) for p in insights_requests(fake)] == [500, 250, 125, 62, 31, 25]
    assert sleeps.calls == []


def test_too_much_data_on_async_results_shrinks_the_pages(serve: Any) -> None:
    rows = [ad_row(i) for i in range(40)]
    fake = serve(rows, page_size=1000, max_insights_limit=30)

    df = fetch(fake, use_async=True)

    assert len(df) == 40 and df["ad_id"].is_unique
    result_limits = [
        int(p["limit"])
        for path, p in fake.requests_seen
        if path.endswith("/insights") and not path.split("/")[-2].startswith("act_")
    ]
    assert result_limits == [500, 250, 125, 62, 31, 25, 25]


TOO_MUCH_DATA_ANSWER = {
    "error": {
        "message": "Please reduce the amount of data you're asking for, then retry your request",
        "code": 1,
    }
}


def recorded_row(ad: str, **extra: Any) -> dict[str, Any]:
    """An ad-level Insights row in the shape the API sends when a report asks for more than we
    do: extra fields, and per-window keys beside `value` in actions (action_attribution_windows;
    https://developers.facebook.com/docs/marketing-api/reference/ads-action-stats/)."""
    row: dict[str, Any] = {
        "account_id": USD_ACCOUNT["account_id"],
        "account_currency": "USD",
        "campaign_id": "120210000000000001",
        "campaign_name": "Install US",
        "adset_id": "120210000000000002",
        "adset_name": "Broad 18+",
        "ad_id": ad,
        "ad_name": "Video 1",
        "objective": "OUTCOME_APP_PROMOTION",
        "buying_type": "AUCTION",
        "impressions": "15234",
        "reach": "12011",
        "frequency": "1.268338",
        "clicks": "311",
        "cpm": "8.532230",
        "spend": "129.98",
        "actions": [
            {"action_type": "link_click", "value": "298", "1d_click": "298", "7d_click": "298"},
            {
                "action_type": "mobile_app_install",
                "value": "41",
                "1d_click": "33",
                "7d_click": "38",
                "28d_click": "40",
                "1d_view": "3",
            },
            {"action_type": "omni_app_install", "value": "41", "7d_click": "38", "1d_view": "3"},
            {
                "action_type": "app_custom_event.fb_mobile_purchase",
                "value": "5",
                "1d_click": "3",
                "7d_click": "4",
                "28d_click": "5",
                "1d_view": "1",
            },
        ],
        "action_values": [
            {
                "action_type": "app_custom_event.fb_mobile_purchase",
                "value": "54.95",
                "1d_click": "32.97",
                "7d_click": "43.96",
                "28d_click": "54.95",
                "1d_view": "10.99",
            }
        ],
        "cost_per_action_type": [{"action_type": "mobile_app_install", "value": "3.170244"}],
        "date_start": DAY.isoformat(),
        "date_stop": DAY.isoformat(),
    }
    row.update(extra)
    return row


@pytest.mark.parametrize("page", [1, 2])
def test_recorded_rows_with_extra_fields_and_window_keys_parse_by_value(
    serve: Any, page: int
) -> None:
    """Page 1 goes through the SDK's AdsInsights objects, page 2 is read as JSON: both parse."""
    fake = serve([])
    first = {"data": [recorded_row("120210000000000003")]}
    answers = [{"after_requests": 1, "status": 200, "json": first}]
    if page == 2:
        first["paging"] = {
            "cursors": {"before": "QVFIUm", "after": "QVFIUn"},
            "next": f"{fake.base_url}/{VERSION}/act_1234567890/insights?after=QVFIUn",
        }
        answers.append({"status": 200, "json": {"data": [recorded_row("120210000000000004")]}})
    fake.inject_errors(answers)

    df = fetch(fake)

    assert len(df) == page
    row = df.iloc[-1]
    # `value` (the account's default attribution total), never a window nor a sum of windows.
    assert row["installs_reported"] == 41 and row["purchases_reported"] == 5
    assert row["purchase_value_original_micros"] == 54_950_000
    assert row["spend_original_micros"] == 129_980_000
    assert (row["impressions"], row["clicks"]) == (15234, 311)
    to_table(df, AD_SPEND)


def test_breakdown_rows_repeat_an_ad_and_fail_by_name(serve: Any) -> None:
    """A report with a breakdown (publisher_platform) sends one row per (date, ad, platform):
    summed blindly they would look right; the (date, ad) key must stay unique."""
    fake = serve([])
    ad = "120210000000000003"
    rows = [
        recorded_row(ad, publisher_platform="facebook", spend="100.00"),
        recorded_row(ad, publisher_platform="instagram", spend="29.98"),
    ]
    fake.inject_errors([{"after_requests": 1, "status": 200, "json": {"data": rows}}])

    with pytest.raises(SourceError) as caught:
        fetch(fake)

    assert f"ad {ad} twice for {DAY.isoformat()}" in caught.value.problem
