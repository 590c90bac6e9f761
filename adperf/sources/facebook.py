"""Facebook ad spend: ad-level daily Insights of some ad accounts over a day range, as AD_SPEND.

Goes through the real facebook-business SDK; production and sandbox differ only in `graph_url`.

One request per account covers the whole range (`time_range` since..until, `time_increment=1`),
so a re-pull of the last 28 days (Facebook restates them) costs one report, not 28. Days are the
ad account's (`timezone_name`): Insights has no parameter to report in another zone. With
`account_days="report"`, an account in another zone than `report_timezone` is read by hour
(`breakdowns=hourly_stats_aggregated_by_advertiser_time_zone`, the advertiser's hours) over the
local days that cover the report days, and summed into report days (`adperf.account_days`).
Async report runs are polled with growing waits; a run that fails, is skipped or stalls is
started again once, then its range is split in halves (a smaller report is likelier to finish),
down to single days.

The access token travels in an `Authorization: Bearer` header, never in a URL. The SDK would
put it in the query string of every request (`FacebookSession` sets it in
`requests.Session.params`), and urllib3 logs each request's URL, query included, at DEBUG
(`urllib3.connectionpool`); `FacebookRequestError`'s text repeats the request. A header keeps
the token out of URLs, so out of those logs and messages by construction, and requests drops it
on a redirect to another host. A logging filter would have to sit on every child logger
(`urllib3.connectionpool`, not `urllib3`: logger filters do not apply to records from
children) and on any future code path; the header needs neither. Our own messages are built
from the error's code and message, scrubbed, and raised `from None`.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, TypeVar

import pandas as pd
import requests
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adreportrun import AdReportRun
from facebook_business.adobjects.objectparser import ObjectParser
from facebook_business.api import Cursor, FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from adperf import account_days as days_of
from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.schema import AD_SPEND, I64, MICROS, empty_frame
from adperf.sources.ad_spend import check_window
from adperf.sources.retry import Backoff, Transient, log_retry, retry

log = logging.getLogger(__name__)

SOURCE = "facebook"
PLATFORM = "facebook"
TOKEN_FIX = (
    "generate a new system-user token with ads_read on {account} "
    "(Business Settings > System users) and set ADPERF_FACEBOOK_TOKEN"
)

ACCOUNT_FIELDS = ["currency", "timezone_name", "name"]
INSIGHTS_FIELDS = [
    "account_id",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "ad_id",
    "ad_name",
    "impressions",
    "clicks",
    "spend",
    "actions",
    "action_values",
    "date_start",
    "date_stop",
]
# https://developers.facebook.com/docs/marketing-api/insights/breakdowns: the hour of each row in
# the ad account's zone, as "13:00:00 - 13:59:59".
HOURLY_BREAKDOWN = "hourly_stats_aggregated_by_advertiser_time_zone"
# What an hourly row adds up when its hours are summed into a report day.
SUMMED = (
    "impressions",
    "clicks",
    "installs_reported",
    "purchases_reported",
    "purchase_value_original_micros",
    "spend_original_micros",
)
# https://developers.facebook.com/docs/marketing-api/reference/ads-action-stats/
INSTALL_ACTION = "mobile_app_install"
PURCHASE_ACTION = "app_custom_event.fb_mobile_purchase"

# Rows per Insights page we ask for; the API may send fewer, the cursor reads them all.
PAGE_LIMIT = 500
# The smallest page asked for after "reduce the amount of data" answers (see TooMuchData).
MIN_PAGE_LIMIT = 25
# A rate-limit wait longer than this is cut short: the next attempt tells us again.
RATE_LIMIT_WAIT_CAP_S = 15 * 60.0
# Waits between tries of a call (and between async report runs): 2 s doubling up to 2 min,
# or what a rate limit's usage headers say.
BACKOFF = Backoff(base_s=2.0, cap_s=120.0, asked_cap_s=RATE_LIMIT_WAIT_CAP_S)
# Async report runs: polls wait 2 s, 3 s, 4.5 s, ... up to 30 s; a run still unfinished after
# ASYNC_STALL_S of waiting is abandoned like a failed one. ASYNC_TRIES runs per range, then split.
ASYNC_POLL_FIRST_S = 2.0
ASYNC_POLL_FACTOR = 1.5
ASYNC_POLL_CAP_S = 30.0
ASYNC_STALL_S = 30 * 60.0
ASYNC_TRIES = 2

# https://developers.facebook.com/docs/graph-api/guides/error-handling and
# https://developers.facebook.com/docs/marketing-api/overview/rate-limiting
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
TRANSIENT_CODES = frozenset({1, 2, -2})  # -2: async report failed, "try again later"
# Code 2 is "temporary" except these Insights subcodes, which fail the same way every time:
# invalid breakdowns / invalid custom metrics
# (https://developers.facebook.com/documentation/ads-commerce/marketing-api/insights/error-codes).
PERMANENT_SUBCODES = frozenset({1504041, 1504042})
# Insights "request timed out: use a smaller range or async jobs" comes as code 100.
TIMEOUT_SUBCODES = frozenset({1504018, 1504038})
TIMED_OUT = "timed_out"  # a Transient's kind for those: the give-up error suggests async reports
TOKEN_CODES = frozenset({102, 104, 190})
# {"error": {"code": 1, "message": "Please reduce the amount of data you're asking for, then
# retry your request"}} with HTTP 500: the same request fails again, a smaller one need not
# (recorded in https://github.com/facebook/facebook-python-business-sdk/issues/470 and
# https://github.com/facebook/facebook-php-business-sdk/issues/441).
TOO_MUCH_DATA_CODE = 1
TOO_MUCH_DATA_PHRASE = "reduce the amount of data"
PERMISSION_CODES = frozenset({10, *range(200, 300)})
NOT_TRANSIENT_FIX = (
    "the Graph API marked this error as not transient (is_transient: false), so the same "
    "request would fail again: check the request's account and [facebook] settings "
    "(ad_account_ids, api_version), then run the task again; if it persists, quote the "
    "fbtrace_id to Meta support (https://developers.facebook.com/support/bugs/)"
)

ASYNC_DONE = "Job Completed"
ASYNC_FAILED = frozenset({"Job Failed", "Job Skipped"})
ASYNC_STALLED = "stalled"

_VERSION = re.compile(r"^v\d+\.\d+$")
T = TypeVar("T")


class TooMuchData(SourceError):
    """The Graph API refused a request as too big (code 1, "reduce the amount of data").

    Raised at once, never retried as is: the Insights readers ask again for half the page
    (`limit`), then for half the time range; it escapes only when one day at MIN_PAGE_LIMIT
    rows a page is still too big.
    """


def fetch_facebook_spend(
    *,
    graph_url: str,
    api_version: str,
    access_token: str,
    account_ids: list[str],
    day: datetime.date,
    first_day: datetime.date | None = None,
    report_timezone: str | None = None,
    account_days: str = days_of.ACCOUNT,
    timeout: float = 60.0,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    use_async: bool = False,
    async_stall_s: float = ASYNC_STALL_S,
) -> pd.DataFrame:
    """One row per ad, account and day from `first_day` (default `day`) to `day`, as AD_SPEND.

    Days are each account's own (`account_days="account"`), or with `account_days="report"`
    the days of `report_timezone`, re-cut from hourly rows for an account in another zone.
    Money is int64 micros in the account's currency, parsed from the API's decimal strings.
    Transient errors and rate limits are retried `max_retries` times, waiting through `sleep`;
    then `TransientSourceError`. Permanent errors raise `SourceError` naming account and fix.
    `use_async` reads Insights through async report runs (for big accounts).
    """
    if not _VERSION.match(api_version):
        raise ConfigError(f"[facebook] api_version must look like v21.0, got {api_version!r}")
    if not account_ids:
        raise ConfigError("[facebook] ad_account_ids is empty: list the ad accounts to read")
    if not access_token:
        raise ConfigError("facebook: no access token; set ADPERF_FACEBOOK_TOKEN")
    days_of.check_mode(account_days)
    if account_days == days_of.REPORT and not report_timezone:
        raise ConfigError("facebook: account_days = report needs [adperf] report_timezone")
    first = first_day or day
    check_window(SOURCE, first, day)

    api, http = make_api(graph_url, api_version, access_token, timeout)
    try:
        records: list[dict[str, Any]] = []
        # Each account once, however it is spelled: a repeat would double its spend.
        for account_id in dict.fromkeys(a.strip().removeprefix("act_") for a in account_ids):
            caller = GraphCaller(day, account_id, access_token, max_retries, sleep, first)
            caller.async_stall_s = async_stall_s
            records.extend(_fetch_account(api, caller, use_async, report_timezone, account_days))
    finally:
        http.close()

    if not records:
        return empty_frame(AD_SPEND)
    frame = pd.DataFrame.from_records(records, columns=AD_SPEND.columns)
    for name in AD_SPEND.columns:
        if AD_SPEND.schema.field(name).type == I64:
            frame[name] = frame[name].astype("int64")
    duplicated = frame.duplicated(["date", "ad_id"])
    if duplicated.any():
        first_dup = frame[duplicated].iloc[0]
        raise SourceError(
            SOURCE,
            day.isoformat(),
            f"Insights returned ad {first_dup['ad_id']} twice for {first_dup['date']}",
            "report this: paging or async splitting returned overlapping rows",
        )
    return frame.sort_values(["date", "account_id", "ad_id"]).reset_index(drop=True)


def make_api(
    graph_url: str, api_version: str, access_token: str, timeout: float
) -> tuple[FacebookAdsApi, requests.Session]:
    """An SDK api object on its own session, and that session's HTTP client (close it after).

    The token goes in a header, never in the URL (see the module docstring); a non-JSON answer
    raises before the SDK reads it (`_refuse_unreadable`). One api object per caller, never
    FacebookAdsApi.init/set_default_api (global state).
    """
    session = FacebookSession(timeout=timeout)
    session.GRAPH = graph_url.rstrip("/")  # the SDK reads it from the instance
    session.requests.params.pop("access_token", None)
    session.requests.headers["Authorization"] = f"Bearer {access_token}"
    session.requests.hooks["response"].append(_refuse_unreadable)
    return FacebookAdsApi(session, api_version=api_version), session.requests


def _fetch_account(
    api: FacebookAdsApi,
    caller: GraphCaller,
    use_async: bool,
    report_timezone: str | None,
    account_days: str = days_of.ACCOUNT,
) -> list[dict[str, Any]]:
    """AD_SPEND records of one ad account for the caller's day range."""
    account = AdAccount(f"act_{caller.account_id}", api=api)
    info = caller.call("read the ad account", lambda: account.api_get(fields=ACCOUNT_FIELDS))
    currency = str(info.get(AdAccount.Field.currency) or "")
    if not currency:
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"ad account {caller.act} has no currency",
            "check that the token's system user can read the account's settings",
        )
    # Insights reports days in the ad account's time zone (AdAccount.timezone_name,
    # https://developers.facebook.com/docs/marketing-api/reference/ad-account/).
    zone = str(info.get(AdAccount.Field.timezone_name) or "")
    if not zone:
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"ad account {caller.act} has no timezone_name",
            "check that the token's system user can read the account's settings",
        )
    hourly = account_days == days_of.REPORT and zone != report_timezone
    since, until = caller.first_day, caller.day
    if hourly and report_timezone:
        since, until = days_of.local_range(since, until, zone, report_timezone)
    if use_async:
        rows = _async_rows(account, caller, since, until, hourly)
    else:
        rows = _sync_rows(account, caller, since, until, hourly=hourly)
    window = (since.isoformat(), until.isoformat())
    records = [_to_record(row, caller, currency, zone, window, hourly) for row in rows]
    if hourly and report_timezone:
        try:
            records = days_of.recut_to_report_days(
                records,
                metrics=SUMMED,
                key=("ad_id",),
                account_zone=zone,
                report_zone=report_timezone,
                first=caller.first_day,
                last=caller.day,
                what=f"facebook ad account {caller.act}",
            )
        except ValueError as exc:
            raise SourceError(
                SOURCE,
                caller.day_iso,
                f"Insights returned an hour twice: {exc}",
                "report this: paging or async splitting returned overlapping rows",
            ) from None
    log.info(
        "facebook %s (%s, %s, %s): %d ad rows for %s..%s%s",
        caller.act,
        info.get("name"),
        zone,
        currency,
        len(records),
        caller.first_iso,
        caller.day_iso,
        f" (from hours of {window[0]}..{window[1]} in {zone})" if hourly else "",
    )
    return records


def _params(
    since: str, until: str, limit: int = PAGE_LIMIT, hourly: bool = False
) -> dict[str, Any]:
    """Insights parameters: ad level, one row per ad and day (and hour) over since..until."""
    params: dict[str, Any] = {
        "level": "ad",
        "time_range": {"since": since, "until": until},
        "time_increment": "1",
        "limit": limit,
    }
    if hourly:
        params["breakdowns"] = [HOURLY_BREAKDOWN]
    return params


def _sync_rows(
    account: AdAccount,
    caller: GraphCaller,
    since: datetime.date,
    until: datetime.date,
    limit: int = PAGE_LIMIT,
    hourly: bool = False,
) -> list[dict[str, Any]]:
    """Every Insights row of since..until, page by page, shrinking requests refused as too big.

    A first page refused is asked again with half the `limit` (later pages: see `all_rows`);
    at MIN_PAGE_LIMIT the range is split in halves, each read the same way, down to single
    days (the async path splits the same way). A range's rows are kept only once all of its
    pages are read, so a split never returns a row twice.
    """
    params = _params(since.isoformat(), until.isoformat(), limit, hourly)
    cursor: Cursor | None = None
    try:
        cursor = caller.call(
            "read Insights page 1",
            lambda: account.get_insights(fields=INSIGHTS_FIELDS, params=dict(params)),
        )
        return list(all_rows(cursor, caller))
    except TooMuchData:
        if cursor is not None:  # a later page: all_rows went down to MIN_PAGE_LIMIT already
            limit = int(cursor.params.get("limit", limit))
        if limit > MIN_PAGE_LIMIT:
            log.warning(
                "facebook %s: Insights %s..%s too big at limit=%d; asking again with limit=%d",
                caller.act,
                since,
                until,
                limit,
                _half_limit(limit),
            )
            return _sync_rows(account, caller, since, until, _half_limit(limit), hourly)
        if since == until:
            raise
    middle = since + (until - since) // 2
    log.warning(
        "facebook %s: Insights %s..%s too big even at limit=%d; splitting at %s",
        caller.act,
        since,
        until,
        limit,
        middle,
    )
    return _sync_rows(account, caller, since, middle, limit, hourly) + _sync_rows(
        account, caller, middle + datetime.timedelta(days=1), until, limit, hourly
    )


def _half_limit(limit: int) -> int:
    return max(MIN_PAGE_LIMIT, limit // 2)


def all_rows(cursor: Cursor, caller: GraphCaller) -> Iterator[dict[str, Any]]:
    """Every row of every page; a page that fails to load is retried where it stopped.

    The SDK's Cursor advances its `after` cursor only once a page has loaded, so calling
    `next()` again after an error re-reads the same page, not the whole result. A page refused
    as too big (TooMuchData) is asked again with half the `limit` through the Cursor's own
    request parameters (`Cursor.params`, sent with every page it loads), from the same `after`;
    at MIN_PAGE_LIMIT the error goes to the caller, which may split the range.
    """
    _rows_as_read(cursor)
    while True:
        try:
            row = caller.call("read the next Insights page", lambda: next(cursor))
        except StopIteration:
            return
        except TooMuchData:
            limit = int(cursor.params.get("limit") or PAGE_LIMIT)
            if limit <= MIN_PAGE_LIMIT:
                raise
            cursor.params["limit"] = _half_limit(limit)
            log.warning(
                "facebook %s: a page of %d rows was too big; reading on with limit=%d",
                caller.act,
                limit,
                cursor.params["limit"],
            )
            continue
        # The first page was parsed by the SDK before the hook: its rows are AdsInsights objects.
        yield row if isinstance(row, dict) else dict(row.export_all_data())


def _rows_as_read(cursor: Cursor) -> None:
    """Make the cursor hand over the next pages' rows as the JSON the API sent.

    The SDK turns each row into an AdsInsights object, type-checking every value on the way
    (facebook_business.typechecker): about 0.4 ms a row, 35 of 59 s of a 28-day pull of 80k
    rows. The rows are read as a mapping of the same JSON values either way. The hook is the
    Cursor's own ObjectParser (`custom_parse_method`); should a later SDK rename the attribute,
    the SDK's objects are read as before, only slower.
    """
    if hasattr(cursor, "_object_parser"):
        cursor._object_parser = ObjectParser(
            api=getattr(cursor, "_api", None), custom_parse_method=_json_row
        )


def _json_row(response: Mapping[str, Any], api: Any) -> Mapping[str, Any]:
    return response


def _async_rows(
    account: AdAccount,
    caller: GraphCaller,
    since: datetime.date,
    until: datetime.date,
    hourly: bool = False,
) -> list[dict[str, Any]]:
    """Every Insights row of since..until through async report runs, splitting when they fail.

    https://developers.facebook.com/docs/marketing-api/insights/best-practices#asynchronous
    A run that ends in Job Failed / Job Skipped or stalls is started again (ASYNC_TRIES runs in
    all); then the range is split in halves, each read the same way, down to single days.
    """
    params = _params(since.isoformat(), until.isoformat(), hourly=hourly)
    outcome = ""
    for attempt in range(ASYNC_TRIES):
        try:
            cursor, outcome = _async_run(account, caller, params)
            if cursor is not None:
                return list(all_rows(cursor, caller))
        except TooMuchData:
            if since == until:
                raise
            outcome = f"too big to read even at {MIN_PAGE_LIMIT} rows a page"
            break
        if attempt < ASYNC_TRIES - 1:
            caller.sleep(BACKOFF.wait_s(attempt))
    if since == until:
        raise TransientSourceError(
            SOURCE,
            caller.day_iso,
            f"the async Insights report of {caller.act} for {since} did not complete in "
            f"{ASYNC_TRIES} runs (last: {outcome}), even for a single day",
            "run the task again later; check https://metastatus.com",
        )
    middle = since + (until - since) // 2
    log.warning(
        "facebook %s: async report %s..%s %s; splitting into %s..%s and %s..%s",
        caller.act,
        since,
        until,
        outcome,
        since,
        middle,
        middle + datetime.timedelta(days=1),
        until,
    )
    return _async_rows(account, caller, since, middle, hourly) + _async_rows(
        account, caller, middle + datetime.timedelta(days=1), until, hourly
    )


def _async_run(
    account: AdAccount, caller: GraphCaller, params: dict[str, Any]
) -> tuple[Cursor | None, str]:
    """Start one async report run and poll it: (cursor over its results, 'Job Completed'), or
    (None, the status it ended in: 'Job Failed', 'Job Skipped' or 'stalled')."""
    run: AdReportRun = caller.call(
        "start an async Insights report",
        # get_insights_async writes `fields` into params: give it a copy.
        lambda: account.get_insights_async(fields=INSIGHTS_FIELDS, params=dict(params)),
    )
    waited, wait = 0.0, ASYNC_POLL_FIRST_S
    while True:
        run = caller.call(
            "poll the async Insights report",
            functools.partial(
                run.api_get,
                fields=["async_status", "async_percent_completion", "error_code", "error_message"],
            ),
        )
        status = str(run.get("async_status", ""))
        if status == ASYNC_DONE and int(run.get("async_percent_completion", 0)) == 100:
            return _async_first_page(run, caller), status
        if status in ASYNC_FAILED:
            # Error fields on the run node: Graph API v25.0+ (Insights error codes page).
            log.warning(
                "facebook %s: async report %s: %s (code %s: %s)",
                caller.act,
                run.get("id"),
                status,
                run.get("error_code"),
                caller.scrub(str(run.get("error_message") or "")),
            )
            return None, status
        if waited >= caller.async_stall_s:
            log.warning(
                "facebook %s: async report %s still '%s' at %s%% after %.0f s; abandoning it",
                caller.act,
                run.get("id"),
                status,
                run.get("async_percent_completion"),
                waited,
            )
            return None, ASYNC_STALLED
        caller.sleep(wait)
        waited += wait
        wait = min(ASYNC_POLL_CAP_S, wait * ASYNC_POLL_FACTOR)


def _async_first_page(run: AdReportRun, caller: GraphCaller) -> Cursor:
    """A completed run's results from page 1; a page refused as too big is asked again with
    half the `limit`, down to MIN_PAGE_LIMIT (later pages: `all_rows`)."""
    limit = PAGE_LIMIT
    while True:
        try:
            cursor: Cursor = caller.call(
                "read async Insights page 1",
                functools.partial(run.get_result, params={"limit": limit}),
            )
            return cursor
        except TooMuchData:
            if limit <= MIN_PAGE_LIMIT:
                raise
            limit = _half_limit(limit)


def _to_record(
    row: Mapping[str, Any],
    caller: GraphCaller,
    currency: str,
    zone: str,
    window: tuple[str, str],
    hourly: bool = False,
) -> dict[str, Any]:
    """One Insights row as an AD_SPEND record (with its local `hour` when `hourly`)."""
    ad_id = str(row.get("ad_id", ""))
    start, stop = row.get("date_start"), row.get("date_stop", row.get("date_start"))
    if not (isinstance(start, str) and window[0] <= start <= window[1]) or (stop != start):
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"{caller.act} returned a row for {start!r}..{stop!r} (ad {ad_id}) when asked "
            f"for single days of {window[0]}..{window[1]}",
            "report this: the Insights request's time_range / time_increment was not honoured",
        )
    actions = row.get("actions") or []
    values = row.get("action_values") or []

    def number(field: str, raw: object) -> Decimal:
        return _decimal(raw, field, ad_id, caller)

    def required(field: str) -> str:
        value = row.get(field)
        if value in (None, ""):
            raise SourceError(
                SOURCE,
                caller.day_iso,
                f"{caller.act} returned an Insights row without {field} (ad {ad_id or '?'})",
                "report this: the Insights response format changed",
            )
        return str(value)

    record = {
        "date": start,
        "platform": PLATFORM,
        "account_id": str(row.get("account_id") or caller.account_id).removeprefix("act_"),
        "campaign_id": required("campaign_id"),
        "campaign_name": row.get("campaign_name"),
        "adset_id": required("adset_id"),
        "adset_name": row.get("adset_name"),
        "ad_id": required("ad_id"),
        "ad_name": row.get("ad_name"),
        # Insights leaves a metric out rather than send zero in some rows: absent is 0.
        "impressions": _count(number("impressions", row.get("impressions", "0"))),
        "clicks": _count(number("clicks", row.get("clicks", "0"))),
        "installs_reported": _count(number("actions", _action(actions, INSTALL_ACTION))),
        "purchases_reported": _count(number("actions", _action(actions, PURCHASE_ACTION))),
        "purchase_value_original_micros": _micros(
            number("action_values", _action(values, PURCHASE_ACTION))
        ),
        "spend_original_micros": _micros(number("spend", row.get("spend", "0"))),
        "currency_original": currency,
        "account_timezone": zone,
    }
    if hourly:
        try:
            record["hour"] = days_of.hour_label(row.get(HOURLY_BREAKDOWN))
        except ValueError:
            raise SourceError(
                SOURCE,
                caller.day_iso,
                f"{caller.act} returned {HOURLY_BREAKDOWN}={row.get(HOURLY_BREAKDOWN)!r} for "
                f"ad {ad_id}, not an hour",
                "report this: the Insights response format changed",
            ) from None
    return record


def _action(entries: list[Mapping[str, Any]], action_type: str) -> object:
    """The value of one action type in an `actions`/`action_values` list, '0' if absent."""
    for entry in entries:
        if entry.get("action_type") == action_type:
            return entry.get("value", "0")
    return "0"


def _decimal(raw: object, field: str, ad_id: str, caller: GraphCaller) -> Decimal:
    """A number from the API, exactly: the API sends decimal strings, never parse as float."""
    try:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise InvalidOperation
        # A float would only come from a JSON number; its repr is the JSON text, so exact.
        value = Decimal(raw if isinstance(raw, str) else repr(raw))
        if not value.is_finite():
            raise InvalidOperation
        return value
    except InvalidOperation:
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"{caller.act} returned {field}={raw!r} for ad {ad_id}, not a number",
            "report this: the Insights response format changed",
        ) from None


def _micros(value: Decimal) -> int:
    # Spend comes in cents at most; anything finer than a micro is rounded half-even.
    return int((value * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def _count(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


class _UnreadableResponse(requests.exceptions.RequestException):
    """The Graph API (or a proxy before it) answered with something that is not JSON."""

    def __init__(self, status: int, service_unavailable: bool) -> None:
        super().__init__(f"HTTP {status} with a body that is not JSON")
        self.status = status
        self.transient = service_unavailable or status >= 500 or status == 429


def _refuse_unreadable(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A requests response hook: raise on a non-JSON body before the SDK reads it.

    The SDK takes a non-JSON body as success whatever the HTTP status (FacebookResponse.
    is_success), and its Cursor then marks the edge finished before failing to parse the page,
    so a proxy's 502 page in the middle of paging would silently drop the remaining pages.
    """
    if response.content.lstrip()[:1] in (b"{", b"["):
        return
    # The SDK's own test for the Graph API's "200 Service Unavailable" answer.
    raise _UnreadableResponse(response.status_code, b"Service Unavailable" in response.content)


class GraphCaller:
    """Runs SDK calls for one account and day: retries transient errors, names permanent ones.

    Subclasses (adperf.actions.facebook) override `_permanent` to name other fixes.
    """

    def __init__(
        self,
        day: datetime.date,
        account_id: str,
        token: str,
        max_retries: int,
        sleep: Callable[[float], None],
        first_day: datetime.date | None = None,
    ) -> None:
        self.day = day
        self.first_day = first_day or day
        self.day_iso = day.isoformat()
        self.first_iso = self.first_day.isoformat()
        self.async_stall_s = ASYNC_STALL_S
        self.account_id = account_id
        self.act = f"act_{account_id}"
        self._token = token
        self.max_retries = max_retries
        self.sleep = sleep

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried with bounded backoff on transient errors and rate limits."""
        return retry(
            fn,
            functools.partial(self._verdict, what),
            catch=(FacebookRequestError, requests.exceptions.RequestException),
            max_retries=self.max_retries,
            sleep=self.sleep,
            backoff=BACKOFF,
            on_retry=log_retry(log, f"facebook {self.act}", what, self.max_retries),
            give_up=functools.partial(self._give_up, what),
        )

    def _verdict(self, what: str, exc: Exception) -> Transient | SourceError:
        """A failed call's exception: a Transient to try again, or the named error to raise."""
        if isinstance(exc, FacebookRequestError):
            kind = _classify(exc)
            if kind == "permanent":
                return self._permanent(exc, what)
            if kind == "too_much_data":
                return TooMuchData(
                    SOURCE,
                    self.day_iso,
                    f"could not {what} for {self.act}: {self.describe(exc)}",
                    "read fewer days at a time ([facebook] lookback_days), or through "
                    "async reports ([facebook] use_async = true) if not already",
                )
            wait = _rate_limit_wait_s(exc.http_headers()) if kind == "rate_limit" else None
            if exc.api_error_subcode() in TIMEOUT_SUBCODES:
                kind = TIMED_OUT
            return Transient(self.describe(exc), wait, kind)
        if isinstance(exc, _UnreadableResponse):
            if exc.transient:
                return Transient(str(exc))
            return SourceError(
                SOURCE,
                self.day_iso,
                f"could not {what} for {self.act}: the Graph API answered {exc}",
                "check [facebook] graph_url (e.g. https://graph.facebook.com)",
            )
        if isinstance(
            exc,
            (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ),
        ):
            return Transient(f"{type(exc).__name__} talking to the Graph API")
        return SourceError(
            SOURCE,
            self.day_iso,
            f"could not {what} for {self.act}: {type(exc).__name__}",
            "check [facebook] graph_url (e.g. https://graph.facebook.com)",
        )

    def _give_up(self, what: str, last: Transient, tries: int) -> TransientSourceError:
        hint = ", or read the account with async reports ([facebook] use_async)"
        return TransientSourceError(
            SOURCE,
            self.day_iso,
            f"could not {what} for {self.act} after {tries} tries: {last.failure}",
            "run the task again later; if it keeps failing, check "
            "https://metastatus.com and the app's rate-limit usage"
            + (hint if last.kind == TIMED_OUT else ""),
        )

    def describe(self, exc: FacebookRequestError) -> str:
        """The error's status, code, subcode, type and message, with no token in it."""
        parts = [f"HTTP {exc.http_status()}"]
        if exc.api_error_code() is not None:
            code = f"code {exc.api_error_code()}"
            if exc.api_error_subcode() is not None:
                code += f"/{exc.api_error_subcode()}"
            parts.append(code)
        if exc.api_error_type():
            parts.append(str(exc.api_error_type()))
        if is_transient_flag(exc) is False:
            parts.append("is_transient false")
        text = f"{', '.join(parts)}: {exc.api_error_message() or 'no error message'}"
        body = exc.body()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            trace = body["error"].get("fbtrace_id")
            if trace:
                text += f" (fbtrace_id {trace})"
        return self.scrub(text)

    def _permanent(self, exc: FacebookRequestError, what: str) -> SourceError:
        code = exc.api_error_code()
        problem = f"could not {what} for {self.act}: {self.describe(exc)}"
        if code in TOKEN_CODES:
            fix = TOKEN_FIX.format(account=self.act)
        elif code in PERMISSION_CODES:
            fix = (
                f"give the token's system user access to ad account {self.act} with ads_read "
                "(Business Settings > Ad accounts > Assign people), or remove it from "
                "[facebook] ad_account_ids"
            )
        elif code == 100:
            fix = (
                f"check that {self.act} in [facebook] ad_account_ids exists and the token's "
                "system user can see it, and that [facebook] api_version is a live version"
            )
        elif is_transient_flag(exc) is False:
            fix = NOT_TRANSIENT_FIX
        else:
            fix = "check the [facebook] settings; quote the fbtrace_id to Meta support"
        return SourceError(SOURCE, self.day_iso, problem, fix)

    def scrub(self, text: str) -> str:
        """`text` with the access token masked."""
        return text.replace(self._token, "***") if self._token else text


def _classify(exc: FacebookRequestError) -> str:
    """'rate_limit', 'transient', 'too_much_data' or 'permanent', from the error's
    `is_transient` flag, code, message and HTTP status."""
    code = exc.api_error_code()
    subcode = exc.api_error_subcode()
    if is_transient_flag(exc) is False:
        # The API says this request fails again as is, whatever its code or status: retrying
        # would only burn the rate-limit budget and delay the named error.
        return "permanent"
    if (
        code == TOO_MUCH_DATA_CODE
        and TOO_MUCH_DATA_PHRASE in str(exc.api_error_message() or "").lower()
    ):
        return "too_much_data"
    if code in RATE_LIMIT_CODES:
        return "rate_limit"
    if subcode in PERMANENT_SUBCODES:
        return "permanent"
    if code in TRANSIENT_CODES or exc.api_transient_error() or subcode in TIMEOUT_SUBCODES:
        return "transient"
    status = exc.http_status()
    if isinstance(status, int) and (status >= 500 or status == 429):
        return "transient"
    return "permanent"


def is_transient_flag(exc: FacebookRequestError) -> bool | None:
    """The error body's `is_transient` (true / false), or None when the body has none.

    Graph API errors may carry `"is_transient": true|false` beside `code`
    (https://developers.facebook.com/docs/graph-api/guides/error-handling; the SDK reads it as
    FacebookRequestError.api_transient_error(), which cannot tell false from absent).
    """
    body = exc.body()
    error = body.get("error") if isinstance(body, dict) else None
    value = error.get("is_transient") if isinstance(error, dict) else None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _rate_limit_wait_s(headers: Mapping[str, Any] | None) -> float | None:
    """How long the usage headers say to wait (BACKOFF caps it); None when they do not say.

    X-Business-Use-Case-Usage: {object id: [{..., "estimated_time_to_regain_access": minutes}]};
    X-Ad-Account-Usage: {..., "reset_time_duration": seconds}
    (https://developers.facebook.com/docs/graph-api/overview/rate-limiting).
    """
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    seconds: list[float] = []
    buc = _json_header(lowered.get("x-business-use-case-usage"))
    if isinstance(buc, dict):
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    minutes = _number(entry.get("estimated_time_to_regain_access"))
                    if minutes is not None:
                        seconds.append(minutes * 60)
    account = _json_header(lowered.get("x-ad-account-usage"))
    if isinstance(account, dict):
        reset = _number(account.get("reset_time_duration"))
        if reset is not None:
            seconds.append(reset)
    longest = max(seconds, default=0.0)
    return longest if longest > 0 else None


def _json_header(value: object) -> object:
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
