"""TikTok Ads spend: ad-level delivery per day from the Business API's integrated report.

`GET /open_api/v1.3/report/integrated/get/` with `report_type=BASIC`, `data_level=AUCTION_AD`,
`dimensions=["ad_id","stat_time_day"]`, list parameters JSON-encoded in the query, `page` /
`page_size` paging (`data.page_info.total_page`), the token in the `Access-Token` header (no
"Bearer" prefix). Every answer is HTTP 200 with `{"code", "message", "request_id", "data"}`:
`code` 0 is success, anything else an error, so the body is checked, never only the status.
Metrics come as strings ("12.34"), in the advertiser's currency and for the advertiser's own
calendar days, which `advertiser/info/` names (`currency`, `timezone`).

Return codes (business-api.tiktok.com/portal/docs?id=1737172488964097; third-party decoders
disagree on a few, so only these are relied on): 40100 requests too frequent (rate limit:
retried), 40001 no permission for the advertiser, 40002 a parameter or permission problem,
40102 / 40104 / 40105 access token expired, empty or invalid (permanent, named), 50000 and
other 5xxxx system errors (retried).
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import pandas as pd
import requests

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.platforms import TIKTOK
from adperf.schema import MICROS
from adperf.sources.ad_spend import account_ids, ad_spend_frame, check_window
from adperf.sources.retry import Backoff, Transient, log_retry, retry

log = logging.getLogger(__name__)

SOURCE = TIKTOK
API = "/open_api/v1.3"
REPORT_PATH = f"{API}/report/integrated/get/"
ADVERTISER_PATH = f"{API}/advertiser/info/"
PAGE_SIZE = 1000  # the largest page the report endpoint serves
MAX_DAYS = 30  # a daily (stat_time_day) report covers at most 30 days per request
#: Attribute metrics name the ad's parents; the rest are counted. `app_install` is the
#: platform's own (modelled) install count; `purchase` / `total_purchase_value` are reported
#: only for app events the advertiser tracks (absent or "-" otherwise: 0).
METRICS = (
    "campaign_id",
    "campaign_name",
    "adgroup_id",
    "adgroup_name",
    "ad_name",
    "spend",
    "impressions",
    "clicks",
    "app_install",
    "purchase",
    "total_purchase_value",
)
RATE_LIMIT = 40100
TOKEN_CODES = frozenset({40102, 40104, 40105})
PERMISSION_CODES = frozenset({40001, 40002})
BACKOFF = Backoff(base_s=2.0, cap_s=60.0)
TOKEN_FIX = (
    "set ADPERF_TIKTOK_TOKEN to a valid access token of an authorization that covers the "
    "advertiser (Business API long-term token; sent without 'Bearer')"
)


class TikTokApiError(Exception):
    """One failed answer: the body's code (or the HTTP status), message and request id."""

    def __init__(self, code: int, message: str, request_id: str = "", http_status: int = 200):
        super().__init__(f"code {code}: {message}")
        self.code, self.message, self.request_id = code, message, request_id
        self.http_status = http_status


class TikTokClient:
    """GETs against the Business API with the shared retry loop and TikTok's classification."""

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        day: str,
        timeout: float = 60.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        if not access_token:
            raise ConfigError(f"tiktok: no access token. Fix: {TOKEN_FIX}")
        self.base_url = base_url.rstrip("/")
        self.day = day
        self._timeout, self._max_retries, self._sleep = timeout, max_retries, sleep
        self._http = session or requests.Session()
        # The token rides in a header only: never in a URL, so never in a logged request line.
        self._http.headers["Access-Token"] = access_token

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any], what: str) -> dict[str, Any]:
        """The `data` of a GET; list and dict parameters are sent JSON-encoded."""
        query = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in params.items()}
        return self._call(
            lambda: self._http.get(self.url(path), params=query, timeout=self._timeout), what
        )

    def post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """The `data` of a POST with a JSON body."""
        return self._call(
            lambda: self._http.post(self.url(path), json=body, timeout=self._timeout), what
        )

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _call(self, send: Callable[[], requests.Response], what: str) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            return _data(send())

        return retry(
            once,
            lambda exc: self._classify(exc, what),
            catch=(TikTokApiError, requests.ConnectionError, requests.Timeout),
            max_retries=self._max_retries,
            sleep=self._sleep,
            backoff=BACKOFF,
            on_retry=log_retry(log, SOURCE, what, self._max_retries),
            give_up=lambda t, tries: TransientSourceError(
                SOURCE,
                self.day,
                f"could not {what} after {tries} tries ({t.failure})",
                "nothing to change if TikTok is only busy: the next run pulls the day again; "
                "if it persists, check https://business-api.tiktok.com status",
            ),
        )

    def _classify(self, exc: Exception, what: str) -> Transient | Exception:
        if not isinstance(exc, TikTokApiError):
            return Transient(f"{type(exc).__name__} talking to {self.base_url}", kind="network")
        said = f"{exc.message} (code {exc.code}, request_id {exc.request_id or '-'})"
        if exc.code == RATE_LIMIT or exc.http_status == 429:
            return Transient(f"rate limited: {said}", kind="rate limit")
        if exc.code >= 50000 or exc.http_status >= 500:
            return Transient(f"server error: {said}", kind="server")
        if exc.code in TOKEN_CODES:
            return SourceError(
                SOURCE,
                self.day,
                f"could not {what}: the access token was refused: {said}",
                TOKEN_FIX,
            )
        if exc.code in PERMISSION_CODES:
            return SourceError(
                SOURCE,
                self.day,
                f"could not {what}: {said}",
                "check [tiktok] advertiser_ids, and that the token's authorization grants the "
                "reporting permission for them in TikTok Business Center",
            )
        return SourceError(
            SOURCE, self.day, f"could not {what}: {said}", "check the request against the docs"
        )


def _data(response: requests.Response) -> dict[str, Any]:
    """The `data` of an answer, or TikTokApiError (code in the body, or the HTTP status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "code" not in body:
        status = response.status_code
        raise TikTokApiError(
            status * 100 if status >= 500 else status, f"HTTP {status}", "", status
        )
    code = int(body["code"])
    if code != 0:
        raise TikTokApiError(
            code,
            str(body.get("message") or ""),
            str(body.get("request_id") or ""),
            response.status_code,
        )
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def fetch_tiktok_spend(
    *,
    base_url: str,
    access_token: str,
    advertiser_ids: list[str],
    first_day: datetime.date,
    day: datetime.date,
    report_timezone: str | None = None,
    account_days: str = "account",
    timeout: float = 60.0,
    page_size: int = PAGE_SIZE,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> pd.DataFrame:
    """One row per ad and day from `first_day` to `day` (each advertiser's own days and
    currency), in AD_SPEND's columns.

    `account_days` is accepted for the common interface: the days are always the advertiser's
    own (TikTok's `stat_time_day`), and `account_timezone` says which zone they are in.
    """
    advertisers = account_ids(advertiser_ids, "[tiktok] advertiser_ids", "advertisers")
    check_window(SOURCE, first_day, day)
    client = TikTokClient(
        base_url=base_url,
        access_token=access_token,
        day=day.isoformat(),
        timeout=timeout,
        max_retries=max_retries,
        sleep=sleep,
    )
    try:
        records: list[dict[str, Any]] = []
        for advertiser in advertisers:
            records.extend(_fetch_advertiser(client, advertiser, first_day, day, page_size))
    finally:
        client.close()
    return ad_spend_frame(records)


def advertiser_info(client: TikTokClient, advertiser: str) -> dict[str, Any]:
    """The advertiser's `currency` and `timezone` (advertiser/info/)."""
    data = client.get(
        ADVERTISER_PATH,
        {
            "advertiser_ids": [advertiser],
            "fields": ["advertiser_id", "name", "currency", "timezone"],
        },
        f"read advertiser {advertiser}",
    )
    for item in data.get("list") or []:
        if str(item.get("advertiser_id")) == advertiser and item.get("currency"):
            return dict(item)
    raise SourceError(
        SOURCE,
        client.day,
        f"advertiser/info/ did not return advertiser {advertiser} with its currency",
        "check [tiktok] advertiser_ids (the token must be authorized for each)",
    )


def _fetch_advertiser(
    client: TikTokClient, advertiser: str, first: datetime.date, last: datetime.date, page_size: int
) -> list[dict[str, Any]]:
    info = advertiser_info(client, advertiser)
    currency, zone = str(info["currency"]), str(info.get("timezone") or "") or None
    records: list[dict[str, Any]] = []
    start = first
    while start <= last:
        end = min(last, start + datetime.timedelta(days=MAX_DAYS - 1))
        for item in _report_pages(client, advertiser, start, end, page_size):
            records.append(_record(item, client, advertiser, currency, zone, first, last))
        start = end + datetime.timedelta(days=1)
    log.info(
        "tiktok %s: %d ad rows, %s..%s (%s, %s)",
        advertiser,
        len(records),
        first,
        last,
        currency,
        zone,
    )
    return records


def _report_pages(
    client: TikTokClient, advertiser: str, first: datetime.date, last: datetime.date, page_size: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page, total_pages = 1, 1
    while page <= total_pages:
        data = client.get(
            REPORT_PATH,
            {
                "advertiser_id": advertiser,
                "report_type": "BASIC",
                "data_level": "AUCTION_AD",
                "dimensions": ["ad_id", "stat_time_day"],
                "metrics": list(METRICS),
                "start_date": first.isoformat(),
                "end_date": last.isoformat(),
                "page": page,
                "page_size": page_size,
            },
            f"read the ad report of advertiser {advertiser} page {page}",
        )
        items.extend(data.get("list") or [])
        total_pages = int((data.get("page_info") or {}).get("total_page") or 0)
        page += 1
    return items


def _record(
    item: dict[str, Any],
    client: TikTokClient,
    advertiser: str,
    currency: str,
    zone: str | None,
    first: datetime.date,
    last: datetime.date,
) -> dict[str, Any]:
    dims, metrics = item.get("dimensions") or {}, item.get("metrics") or {}
    # "2026-11-20 00:00:00": the advertiser's calendar day.
    day = str(dims.get("stat_time_day") or "")[:10]
    if not first.isoformat() <= day <= last.isoformat() or not dims.get("ad_id"):
        raise SourceError(
            SOURCE,
            client.day,
            f"advertiser {advertiser} returned a row for {day!r} (ad {dims.get('ad_id')!r}) when "
            f"asked for {first}..{last}",
            "report this: the report's dimensions or dates were not honoured",
        )
    return {
        "date": day,
        "platform": TIKTOK,
        "account_id": advertiser,
        "campaign_id": _text(metrics.get("campaign_id")),
        "campaign_name": _text(metrics.get("campaign_name")) or None,
        "adset_id": _text(metrics.get("adgroup_id")),
        "adset_name": _text(metrics.get("adgroup_name")) or None,
        "ad_id": str(dims["ad_id"]),
        "ad_name": _text(metrics.get("ad_name")) or None,
        "impressions": _count(metrics.get("impressions"), client),
        "clicks": _count(metrics.get("clicks"), client),
        "installs_reported": _count(metrics.get("app_install"), client),
        "purchases_reported": _count(metrics.get("purchase"), client),
        "purchase_value_original_micros": _micros(metrics.get("total_purchase_value"), client),
        "spend_original_micros": _micros(metrics.get("spend"), client),
        "currency_original": currency,
        "account_timezone": zone,
    }


def _text(value: Any) -> str:
    return "" if value in (None, "-") else str(value)


def _number(value: Any, client: TikTokClient) -> Decimal:
    if value in (None, "", "-"):  # a metric the advertiser does not track
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise SourceError(
            SOURCE, client.day, f"a metric is not a number: {value!r}", "report this"
        ) from None


def _count(value: Any, client: TikTokClient) -> int:
    return int(_number(value, client))


def _micros(value: Any, client: TikTokClient) -> int:
    return int((_number(value, client) * MICROS).to_integral_value())
