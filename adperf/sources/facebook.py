"""Facebook ad spend: one day's ad-level Insights of some ad accounts, as an AD_SPEND frame.

Goes through the real facebook-business SDK; production and sandbox differ only in `graph_url`.

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
from facebook_business.api import Cursor, FacebookAdsApi
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.schema import AD_SPEND, I64, MICROS, empty_frame

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
]
# https://developers.facebook.com/docs/marketing-api/reference/ads-action-stats/
INSTALL_ACTION = "mobile_app_install"
PURCHASE_ACTION = "app_custom_event.fb_mobile_purchase"

# Rows per Insights page we ask for; the API may send fewer, the cursor reads them all.
PAGE_LIMIT = 500
BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 120.0
# A rate-limit wait longer than this is cut short: the next attempt tells us again.
RATE_LIMIT_WAIT_CAP_S = 15 * 60.0
ASYNC_POLL_S = 10.0
ASYNC_MAX_POLLS = 180  # 30 minutes at ASYNC_POLL_S

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
TOKEN_CODES = frozenset({102, 104, 190})
PERMISSION_CODES = frozenset({10, *range(200, 300)})

ASYNC_DONE = "Job Completed"
ASYNC_FAILED = frozenset({"Job Failed", "Job Skipped"})

_VERSION = re.compile(r"^v\d+\.\d+$")
T = TypeVar("T")


def fetch_facebook_spend(
    *,
    graph_url: str,
    api_version: str,
    access_token: str,
    account_ids: list[str],
    day: datetime.date,
    timeout: float = 60.0,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    use_async: bool = False,
) -> pd.DataFrame:
    """One row per ad and account for `day` (the account's day), in AD_SPEND's columns.

    Money is int64 micros in the account's currency, parsed from the API's decimal strings.
    Transient errors and rate limits are retried `max_retries` times, waiting through `sleep`;
    then `TransientSourceError`. Permanent errors raise `SourceError` naming account and fix.
    `use_async` reads Insights through an async report run (for big accounts).
    """
    if not _VERSION.match(api_version):
        raise ConfigError(f"[facebook] api_version must look like v21.0, got {api_version!r}")
    if not account_ids:
        raise ConfigError("[facebook] ad_account_ids is empty: list the ad accounts to read")
    if not access_token:
        raise ConfigError("facebook: no access token; set ADPERF_FACEBOOK_TOKEN")

    session = FacebookSession(timeout=timeout)
    session.GRAPH = graph_url.rstrip("/")  # the SDK reads it from the instance
    # See the module docstring: the token goes in a header, never in the URL.
    session.requests.params.pop("access_token", None)
    session.requests.headers["Authorization"] = f"Bearer {access_token}"
    session.requests.hooks["response"].append(_refuse_unreadable)
    # One api object per call, never FacebookAdsApi.init/set_default_api (global state).
    api = FacebookAdsApi(session, api_version=api_version)
    try:
        records: list[dict[str, Any]] = []
        # Each account once, however it is spelled: a repeat would double its spend.
        for account_id in dict.fromkeys(a.strip().removeprefix("act_") for a in account_ids):
            caller = _Caller(day, account_id, access_token, max_retries, sleep)
            records.extend(_fetch_account(api, caller, use_async))
    finally:
        session.requests.close()

    if not records:
        return empty_frame(AD_SPEND)
    frame = pd.DataFrame.from_records(records, columns=AD_SPEND.columns)
    for name in AD_SPEND.columns:
        if AD_SPEND.schema.field(name).type == I64:
            frame[name] = frame[name].astype("int64")
    return frame


def _fetch_account(api: FacebookAdsApi, caller: _Caller, use_async: bool) -> list[dict[str, Any]]:
    """AD_SPEND records of one ad account for the caller's day."""
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
    params = {
        "level": "ad",
        "time_range": {"since": caller.day_iso, "until": caller.day_iso},
        "time_increment": "1",
        "limit": PAGE_LIMIT,
    }
    if use_async:
        cursor = _async_cursor(account, caller, params)
    else:
        cursor = caller.call(
            "read Insights page 1",
            lambda: account.get_insights(fields=INSIGHTS_FIELDS, params=dict(params)),
        )
    records = [_to_record(row, caller, currency) for row in _all_rows(cursor, caller)]
    log.info(
        "facebook %s (%s, %s, %s): %d ad rows for %s",
        caller.act,
        info.get("name"),
        info.get("timezone_name"),
        currency,
        len(records),
        caller.day_iso,
    )
    return records


def _all_rows(cursor: Cursor, caller: _Caller) -> Iterator[dict[str, Any]]:
    """Every row of every page; a page that fails to load is retried where it stopped.

    The SDK's Cursor advances its `after` cursor only once a page has loaded, so calling
    `next()` again after an error re-reads the same page, not the whole result.
    """
    while True:
        try:
            row = caller.call("read the next Insights page", lambda: next(cursor))
        except StopIteration:
            return
        yield dict(row.export_all_data())


def _async_cursor(account: AdAccount, caller: _Caller, params: dict[str, Any]) -> Cursor:
    """Run an async Insights report and return a cursor over its first page of results.

    https://developers.facebook.com/docs/marketing-api/insights/best-practices#asynchronous
    A failed or skipped job is started again, within the caller's retry budget; one still
    running after ASYNC_MAX_POLLS polls is given up on (another would likely be as slow).
    """
    for attempt in range(caller.max_retries + 1):
        run: AdReportRun = caller.call(
            "start an async Insights report",
            # get_insights_async writes `fields` into params: give it a copy.
            lambda: account.get_insights_async(fields=INSIGHTS_FIELDS, params=dict(params)),
        )
        status = ""
        for _ in range(ASYNC_MAX_POLLS):
            run = caller.call(
                "poll the async Insights report",
                functools.partial(run.api_get, fields=["async_status", "async_percent_completion"]),
            )
            status = str(run.get("async_status", ""))
            if status == ASYNC_DONE and int(run.get("async_percent_completion", 0)) == 100:
                return caller.call(
                    "read async Insights page 1",
                    functools.partial(run.get_result, params={"limit": PAGE_LIMIT}),
                )
            if status in ASYNC_FAILED:
                break
            caller.sleep(ASYNC_POLL_S)
        else:
            raise TransientSourceError(
                SOURCE,
                caller.day_iso,
                f"the async Insights report {run.get('id')} of {caller.act} was still "
                f"'{status}' after {ASYNC_MAX_POLLS * ASYNC_POLL_S / 60:.0f} minutes",
                "run the task again later",
            )
        log.warning("facebook %s: async report %s: %s", caller.act, run.get("id"), status)
        if attempt < caller.max_retries:
            caller.sleep(_backoff(attempt))
    raise TransientSourceError(
        SOURCE,
        caller.day_iso,
        f"the async Insights report of {caller.act} did not complete "
        f"in {caller.max_retries + 1} tries (last: {status})",
        "run the task again later",
    )


def _to_record(row: Mapping[str, Any], caller: _Caller, currency: str) -> dict[str, Any]:
    """One Insights row as an AD_SPEND record."""
    ad_id = str(row.get("ad_id", ""))
    if row.get("date_start") != caller.day_iso:
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"{caller.act} returned a row for {row.get('date_start')!r} (ad {ad_id}) "
            f"when asked for {caller.day_iso} only",
            "report this: the Insights request's time_range was not honoured",
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

    return {
        "date": caller.day_iso,
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
    }


def _action(entries: list[Mapping[str, Any]], action_type: str) -> object:
    """The value of one action type in an `actions`/`action_values` list, '0' if absent."""
    for entry in entries:
        if entry.get("action_type") == action_type:
            return entry.get("value", "0")
    return "0"


def _decimal(raw: object, field: str, ad_id: str, caller: _Caller) -> Decimal:
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


class _Caller:
    """Runs SDK calls for one account and day: retries transient errors, names permanent ones."""

    def __init__(
        self,
        day: datetime.date,
        account_id: str,
        token: str,
        max_retries: int,
        sleep: Callable[[float], None],
    ) -> None:
        self.day_iso = day.isoformat()
        self.account_id = account_id
        self.act = f"act_{account_id}"
        self._token = token
        self.max_retries = max_retries
        self.sleep = sleep

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried with bounded backoff on transient errors and rate limits."""
        attempt = 0
        while True:
            wait: float | None = None
            hint = ""
            try:
                return fn()
            except FacebookRequestError as exc:
                kind = _classify(exc)
                if kind == "permanent":
                    raise self._permanent(exc, what) from None
                failure = self._describe(exc)
                if exc.api_error_subcode() in TIMEOUT_SUBCODES:
                    hint = ", or read the account with async reports ([facebook] use_async)"
                if kind == "rate_limit":
                    wait = _rate_limit_wait_s(exc.http_headers())
            except _UnreadableResponse as exc:
                if not exc.transient:
                    raise SourceError(
                        SOURCE,
                        self.day_iso,
                        f"could not {what} for {self.act}: the Graph API answered {exc}",
                        "check [facebook] graph_url (e.g. https://graph.facebook.com)",
                    ) from None
                failure = str(exc)
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                failure = f"{type(exc).__name__} talking to the Graph API"
            except requests.exceptions.RequestException as exc:
                raise SourceError(
                    SOURCE,
                    self.day_iso,
                    f"could not {what} for {self.act}: {type(exc).__name__}",
                    "check [facebook] graph_url (e.g. https://graph.facebook.com)",
                ) from None
            if attempt >= self.max_retries:
                raise TransientSourceError(
                    SOURCE,
                    self.day_iso,
                    f"could not {what} for {self.act} after {attempt + 1} tries: {failure}",
                    "run the task again later; if it keeps failing, check "
                    "https://metastatus.com and the app's rate-limit usage" + hint,
                ) from None
            delay = wait if wait is not None else _backoff(attempt)
            log.warning(
                "facebook %s: could not %s (%s); try %d of %d in %.0f s",
                self.act,
                what,
                failure,
                attempt + 2,
                self.max_retries + 1,
                delay,
            )
            self.sleep(delay)
            attempt += 1

    def _describe(self, exc: FacebookRequestError) -> str:
        """The error's status, code, subcode, type and message, with no token in it."""
        parts = [f"HTTP {exc.http_status()}"]
        if exc.api_error_code() is not None:
            code = f"code {exc.api_error_code()}"
            if exc.api_error_subcode() is not None:
                code += f"/{exc.api_error_subcode()}"
            parts.append(code)
        if exc.api_error_type():
            parts.append(str(exc.api_error_type()))
        text = f"{', '.join(parts)}: {exc.api_error_message() or 'no error message'}"
        body = exc.body()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            trace = body["error"].get("fbtrace_id")
            if trace:
                text += f" (fbtrace_id {trace})"
        return self._scrub(text)

    def _permanent(self, exc: FacebookRequestError, what: str) -> SourceError:
        code = exc.api_error_code()
        problem = f"could not {what} for {self.act}: {self._describe(exc)}"
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
        else:
            fix = "check the [facebook] settings; quote the fbtrace_id to Meta support"
        return SourceError(SOURCE, self.day_iso, problem, fix)

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def _classify(exc: FacebookRequestError) -> str:
    """'rate_limit', 'transient' or 'permanent', from the error code, flags and HTTP status."""
    code = exc.api_error_code()
    subcode = exc.api_error_subcode()
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


def _rate_limit_wait_s(headers: Mapping[str, Any] | None) -> float | None:
    """How long the usage headers say to wait, capped; None when they do not say.

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
    return min(longest, RATE_LIMIT_WAIT_CAP_S) if longest > 0 else None


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


def _backoff(attempt: int) -> float:
    """Exponential backoff for the attempt-th retry (0-based), capped."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
