"""Google Ads spend: ad-level daily delivery of some customers over a day range, as AD_SPEND.

Goes through the real google-ads SDK (`GoogleAdsService.SearchStream`, GAQL); production and
sandbox differ only in the endpoint (and the sandbox's loopback fake needs no TLS or OAuth).

- Vocabulary: campaign -> ad_group -> ad maps to campaign -> adset -> ad; `metrics.cost_micros`
  is already micros of the customer's currency (`customer.currency_code`), so money is exact.
- installs_reported is `metrics.conversions`, rounded half-even per row. This assumes the
  conversion actions included in the account's "Conversions" column are app installs
  (first_open of the app), as for App campaigns optimized for installs; Google may count
  fractional conversions (data-driven attribution), hence the rounding. Purchases are not
  read from Google Ads (0): the MMP and payments are the source of revenue.
- App campaigns may have no ad-level rows: `campaign` is queried too, and whatever its totals
  exceed the ad-level rows of the same campaign and day by becomes one row with the campaign
  as its adset and ad (ad_id `campaign-<campaign id>`), so spend per campaign always equals
  the campaign-level figure.
- SearchStream has no page size: one call streams every row
  (https://developers.google.com/google-ads/api/docs/reporting/streaming). A stream that
  breaks midway is run again whole and its partial rows dropped; every call has a deadline so a
  hung stream fails instead of hanging.
- Errors (https://developers.google.com/google-ads/api/docs/best-practices/error-types):
  quota (RESOURCE_EXHAUSTED, QuotaError) waits QuotaErrorDetails.retry_delay when given, else
  backs off; transient (INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, InternalError.TRANSIENT_ERROR)
  backs off; authentication / authorization fail at once with a named error; anything else is a
  permanent error naming the customer and day.
- Secrets (developer token, OAuth refresh token or service-account key) are passed in, never
  logged: the SDK masks `developer-token` in its request logs, OAuth tokens travel as channel
  call credentials, which it does not log, and our messages never include them.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

import grpc
import pandas as pd
from google.api_core import exceptions as core_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.protobuf.message import DecodeError

from adperf import account_days as days_of
from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.schema import AD_SPEND, I64, empty_frame
from adperf.sources.ad_spend import check_window
from adperf.sources.retry import Backoff, Transient, log_retry, retry

log = logging.getLogger(__name__)

SOURCE = "google_ads"
PLATFORM = "google_ads"
API_VERSION = "v26"
DEFAULT_ENDPOINT = "googleads.googleapis.com"
# google-ads' own key for the GoogleAdsFailure in a call's trailing metadata.
FAILURE_KEY = f"google.ads.googleads.{API_VERSION}.errors.googleadsfailure-bin"
CAMPAIGN_AD_PREFIX = "campaign-"

QUOTA_WAIT_CAP_S = 15 * 60.0
# Waits between tries of a call: 2 s doubling up to 2 min, or a quota error's
# QuotaErrorDetails.retry_delay.
BACKOFF = Backoff(base_s=2.0, cap_s=120.0, asked_cap_s=QUOTA_WAIT_CAP_S)
DEADLINE_S = 600.0

AD_QUERY = """
SELECT customer.id, customer.currency_code, customer.time_zone,
  campaign.id, campaign.name, campaign.advertising_channel_type,
  ad_group.id, ad_group.name, ad_group_ad.ad.id, ad_group_ad.ad.name,
  segments.date{hour}, metrics.impressions, metrics.clicks, metrics.cost_micros,
  metrics.conversions
FROM ad_group_ad
WHERE segments.date BETWEEN '{since}' AND '{until}'
""".strip()
CAMPAIGN_QUERY = """
SELECT customer.id, customer.currency_code, customer.time_zone,
  campaign.id, campaign.name, campaign.advertising_channel_type,
  segments.date{hour}, metrics.impressions, metrics.clicks, metrics.cost_micros,
  metrics.conversions
FROM campaign
WHERE segments.date BETWEEN '{since}' AND '{until}'
""".strip()

# With [adperf] account_days = report: the customer's zone first, then rows by hour of its zone
# (https://developers.google.com/google-ads/api/fields/v21/segments#segments.hour: "Hour of day
# as a number between 0 and 23, inclusive", in the account's time zone).
CUSTOMER_QUERY = "SELECT customer.id, customer.currency_code, customer.time_zone FROM customer"
HOUR_SEGMENT = ", segments.hour"
SUMMED = ("impressions", "clicks", "installs_reported", "spend_original_micros")

TRANSIENT_STATUS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)
TRANSIENT_INTERNAL = frozenset({"INTERNAL_ERROR", "TRANSIENT_ERROR", "DEADLINE_EXCEEDED"})
CREDENTIALS_FIX = (
    "check ADPERF_GOOGLE_ADS_DEVELOPER_TOKEN and the OAuth credentials "
    "(ADPERF_GOOGLE_ADS_REFRESH_TOKEN with ADPERF_GOOGLE_ADS_CLIENT_ID / _CLIENT_SECRET, or "
    "ADPERF_GOOGLE_ADS_JSON_KEY_PATH); a revoked refresh token needs a new OAuth consent"
)
T = TypeVar("T")


@dataclass(frozen=True)
class GoogleAdsCredentials:
    """Secrets for the Google Ads API: a developer token plus OAuth (installed app or service
    account). Never logged; `repr` hides them."""

    developer_token: str
    client_id: str = ""
    client_secret: str = ""
    refresh_token: str = ""
    json_key_file_path: str = ""
    impersonated_email: str = ""

    def __repr__(self) -> str:
        return "GoogleAdsCredentials(***)"


def fetch_google_ads_spend(
    *,
    endpoint: str,
    credentials: GoogleAdsCredentials,
    customer_ids: list[str],
    first_day: datetime.date,
    day: datetime.date,
    login_customer_id: str = "",
    report_timezone: str | None = None,
    account_days: str = days_of.ACCOUNT,
    insecure: bool = False,
    timeout: float = DEADLINE_S,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> pd.DataFrame:
    """One row per ad (or App campaign) and day from `first_day` to `day`, in AD_SPEND's columns.

    Days are each customer's own (`customer.time_zone`, `account_days="account"`), or with
    `account_days="report"` the days of `report_timezone`, re-cut from `segments.hour` rows for a
    customer in another zone (adperf.account_days). `insecure` (loopback only) talks plain
    gRPC without OAuth, for the sandbox's fake. Retries transient and quota errors
    `max_retries` times through `sleep`, then raises TransientSourceError; permanent errors
    raise SourceError.
    """
    customers = list(dict.fromkeys(c.strip().replace("-", "") for c in customer_ids if c.strip()))
    if not customers:
        raise ConfigError("[google_ads] customer_ids is empty: list the customers to read")
    for cid in [*customers, *([login_customer_id.replace("-", "")] if login_customer_id else [])]:
        if not (cid.isdigit() and len(cid) == 10):
            raise ConfigError(
                f"[google_ads]: customer id {cid!r} is not 10 digits. Fix: write it as "
                "1234567890 (with or without dashes)"
            )
    check_window(SOURCE, first_day, day)
    days_of.check_mode(account_days)
    if account_days == days_of.REPORT and not report_timezone:
        raise ConfigError("google_ads: account_days = report needs [adperf] report_timezone")
    if not credentials.developer_token:
        raise ConfigError("google_ads: no developer token; set ADPERF_GOOGLE_ADS_DEVELOPER_TOKEN")

    service, channel = google_ads_service(endpoint, credentials, login_customer_id, insecure, day)
    try:
        records: list[dict[str, Any]] = []
        for cid in customers:
            caller = GoogleAdsCaller(cid, first_day, day, max_retries, sleep)
            records.extend(_fetch_customer(service, caller, timeout, report_timezone, account_days))
    finally:
        if channel is not None:
            channel.close()
    if not records:
        return empty_frame(AD_SPEND)
    frame = pd.DataFrame.from_records(records, columns=AD_SPEND.columns)
    for name in AD_SPEND.columns:
        if AD_SPEND.schema.field(name).type == I64:
            frame[name] = frame[name].astype("int64")
    return frame.sort_values(["date", "campaign_id", "adset_id", "ad_id"]).reset_index(drop=True)


def google_ads_service(
    endpoint: str,
    credentials: GoogleAdsCredentials,
    login_customer_id: str,
    insecure: bool,
    day: datetime.date,
) -> tuple[Any, grpc.Channel | None]:
    """The SDK's GoogleAdsService client, and the channel to close (insecure only).

    Shared with adperf.actions.google_ads, whose mutate services reuse this client's channel.
    """
    from google.ads.googleads.client import GoogleAdsClient

    login = login_customer_id.replace("-", "") or None
    if not insecure:
        installed_app = all(
            (credentials.client_id, credentials.client_secret, credentials.refresh_token)
        )
        if not (installed_app or credentials.json_key_file_path):
            raise ConfigError(f"google_ads: no OAuth credentials. Fix: {CREDENTIALS_FIX}")
        config: dict[str, Any] = {
            "developer_token": credentials.developer_token,
            "use_proto_plus": True,
            "endpoint": endpoint or DEFAULT_ENDPOINT,
        }
        if login:
            config["login_customer_id"] = login
        if credentials.json_key_file_path:
            config["json_key_file_path"] = credentials.json_key_file_path
            if credentials.impersonated_email:
                config["impersonated_email"] = credentials.impersonated_email
        else:
            config.update(
                client_id=credentials.client_id,
                client_secret=credentials.client_secret,
                refresh_token=credentials.refresh_token,
            )
        try:
            # load_from_dict refreshes the OAuth token at once: bad credentials fail here.
            client = GoogleAdsClient.load_from_dict(config, version=API_VERSION)
        except auth_exceptions.RefreshError:
            raise SourceError(
                SOURCE, day.isoformat(), "the OAuth token could not be refreshed", CREDENTIALS_FIX
            ) from None
        except auth_exceptions.TransportError:
            raise TransientSourceError(
                SOURCE,
                day.isoformat(),
                "could not reach Google's OAuth endpoint",
                "run the task again later; check the network",
            ) from None
        except ValueError as exc:
            # The SDK's message names the missing key, never a value.
            raise ConfigError(f"google_ads: {exc}. Fix: {CREDENTIALS_FIX}") from None
        return client.get_service("GoogleAdsService", version=API_VERSION), None

    host = endpoint.rsplit(":", 1)[0].strip("[]")
    if not _is_loopback(host):
        raise ConfigError(
            f"google_ads: insecure (plain gRPC) is only for a loopback fake, not {host!r}. "
            "Fix: leave insecure off for a real endpoint"
        )
    from google.ads.googleads.interceptors import (
        ExceptionInterceptor,
        LoggingInterceptor,
        MetadataInterceptor,
    )

    services = importlib.import_module(
        f"google.ads.googleads.{API_VERSION}.services.services.google_ads_service"
    )
    transports = importlib.import_module(
        f"google.ads.googleads.{API_VERSION}.services.services.google_ads_service.transports"
    )
    client = GoogleAdsClient(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        developer_token=credentials.developer_token,
        login_customer_id=login,
        use_proto_plus=True,
        version=API_VERSION,
    )
    # The SDK's get_service always opens a TLS channel with OAuth call credentials. For the
    # loopback fake we build the same stack by hand: the SDK's own interceptors (headers,
    # logging with the developer token masked, GoogleAdsFailure -> GoogleAdsException), its
    # transport and its service client, over a plain channel.
    raw = grpc.insecure_channel(endpoint)
    channel = grpc.intercept_channel(
        raw,
        MetadataInterceptor(client.developer_token, client.login_customer_id, None),
        LoggingInterceptor(logging.getLogger("google.ads.googleads.client"), API_VERSION, endpoint),
        ExceptionInterceptor(API_VERSION, use_proto_plus=True),
    )
    transport = transports.GoogleAdsServiceGrpcTransport(channel=channel)
    return services.GoogleAdsServiceClient(transport=transport), raw


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fetch_customer(
    service: Any,
    caller: GoogleAdsCaller,
    timeout: float,
    report_timezone: str | None,
    account_days: str = days_of.ACCOUNT,
) -> list[dict[str, Any]]:
    """AD_SPEND records of one customer: ad-level rows plus what campaign totals add."""
    window = {"since": caller.first_iso, "until": caller.day_iso, "hour": ""}
    zone = ""
    if account_days == days_of.REPORT and report_timezone:
        zone = _customer_zone(service, caller, timeout)
        if zone != report_timezone:
            first, last = days_of.local_range(
                datetime.date.fromisoformat(caller.first_iso),
                datetime.date.fromisoformat(caller.day_iso),
                zone,
                report_timezone,
            )
            window = {"since": first.isoformat(), "until": last.isoformat(), "hour": HOUR_SEGMENT}
    ad_rows = caller.call(
        "stream ad-level rows",
        lambda: stream(service, caller.customer_id, AD_QUERY.format(**window), timeout, raw=True),
    )
    campaign_rows = caller.call(
        "stream campaign-level rows",
        lambda: stream(
            service, caller.customer_id, CAMPAIGN_QUERY.format(**window), timeout, raw=True
        ),
    )
    records = [_ad_record(r, caller, window) for r in ad_rows]
    for r in [*ad_rows, *campaign_rows]:
        _check_customer(r, caller)
    records.extend(_campaign_remainders(records, campaign_rows, caller, window))
    if window["hour"] and report_timezone:
        try:
            records = days_of.recut_to_report_days(
                records,
                metrics=SUMMED,
                key=("adset_id", "ad_id"),
                account_zone=zone,
                report_zone=report_timezone,
                first=datetime.date.fromisoformat(caller.first_iso),
                last=datetime.date.fromisoformat(caller.day_iso),
                what=f"google_ads customer {caller.customer_id}",
            )
        except ValueError as exc:
            raise SourceError(
                SOURCE,
                caller.day_iso,
                f"SearchStream returned an hour twice: {exc}",
                "report this: the GAQL segments were not honoured",
            ) from None
    log.info(
        "google_ads %s: %d ad rows, %d campaign rows, %s..%s%s",
        caller.customer_id,
        len(ad_rows),
        len(campaign_rows),
        caller.first_iso,
        caller.day_iso,
        f" (hours of {window['since']}..{window['until']} in {zone})" if window["hour"] else "",
    )
    return records


def _customer_zone(service: Any, caller: GoogleAdsCaller, timeout: float) -> str:
    """The customer's time zone (`customer.time_zone`), read before its rows."""
    rows = caller.call(
        "read the customer's time zone",
        lambda: stream(service, caller.customer_id, CUSTOMER_QUERY, timeout, raw=True),
    )
    zone = str(rows[0].customer.time_zone) if rows else ""
    if not zone:
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"customer {caller.customer_id} has no customer.time_zone",
            "check that the credentials can read the customer's settings",
        )
    return zone


def stream(
    service: Any, customer_id: str, query: str, timeout: float, *, raw: bool = False
) -> list[Any]:
    """Every row of one SearchStream call; a stream that breaks midway raises (no partial rows).

    With `raw`, the rows are the protobuf messages under proto-plus (google-ads' documented
    `type(msg).pb(msg)`): proto-plus wraps every field read in Python, which was 7 of 11 s of a
    14-day pull of 20k ad rows. Scalars read the same on both; enums are plain numbers on raw.
    """
    rows: list[Any] = []
    batches: Iterator[Any] = service.search_stream(
        customer_id=customer_id, query=query, timeout=timeout
    )
    for batch in batches:
        rows.extend(type(batch).pb(batch).results if raw else batch.results)
    return rows


def _check_customer(row: Any, caller: GoogleAdsCaller) -> None:
    if not str(row.customer.currency_code):
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"customer {caller.customer_id} returned rows without customer.currency_code",
            "report this: the Google Ads response format changed",
        )


def _base(row: Any, caller: GoogleAdsCaller, window: dict[str, str]) -> dict[str, Any]:
    day = str(row.segments.date)
    if not window["since"] <= day <= window["until"]:
        raise SourceError(
            SOURCE,
            caller.day_iso,
            f"customer {caller.customer_id} returned a row for {day!r} when asked for "
            f"{window['since']}..{window['until']}",
            "report this: the GAQL date filter was not honoured",
        )
    hour = {"hour": int(row.segments.hour)} if window["hour"] else {}
    return {
        **hour,
        "date": day,
        "platform": PLATFORM,
        "account_id": caller.customer_id,
        "campaign_id": str(row.campaign.id),
        "campaign_name": str(row.campaign.name) or None,
        "impressions": int(row.metrics.impressions),
        "clicks": int(row.metrics.clicks),
        "installs_reported": _conversions(row.metrics.conversions),
        "purchases_reported": 0,
        "purchase_value_original_micros": 0,
        "spend_original_micros": int(row.metrics.cost_micros),
        "currency_original": str(row.customer.currency_code),
        "account_timezone": str(row.customer.time_zone) or None,
    }


def _ad_record(row: Any, caller: GoogleAdsCaller, window: dict[str, str]) -> dict[str, Any]:
    return {
        **_base(row, caller, window),
        "adset_id": str(row.ad_group.id),
        "adset_name": str(row.ad_group.name) or None,
        "ad_id": str(row.ad_group_ad.ad.id),
        "ad_name": str(row.ad_group_ad.ad.name) or None,
    }


def _campaign_remainders(
    ad_records: list[dict[str, Any]],
    campaign_rows: list[Any],
    caller: GoogleAdsCaller,
    window: dict[str, str],
) -> list[dict[str, Any]]:
    """Rows for what campaign totals exceed their ad-level rows by (App campaigns), per day
    (and hour, when read by hour)."""
    metrics = SUMMED
    ads: dict[tuple[str, int | None, str], dict[str, int]] = {}
    for r in ad_records:
        key = (r["date"], r.get("hour"), r["campaign_id"])
        sums = ads.setdefault(key, dict.fromkeys(metrics, 0))
        for m in metrics:
            sums[m] += r[m]
    out: list[dict[str, Any]] = []
    for row in campaign_rows:
        base = _base(row, caller, window)
        key = (base["date"], base.get("hour"), base["campaign_id"])
        have = ads.get(key, dict.fromkeys(metrics, 0))
        rest = {m: base[m] - have[m] for m in metrics}
        if all(v == 0 for v in rest.values()):
            continue
        if any(v < 0 for v in rest.values()):
            log.warning(
                "google_ads %s: ad-level rows of campaign %s on %s exceed its campaign total "
                "(%s); keeping the ad-level rows",
                caller.customer_id,
                base["campaign_id"],
                base["date"],
                {m: v for m, v in rest.items() if v < 0},
            )
            rest = {m: max(0, v) for m, v in rest.items()}
            if all(v == 0 for v in rest.values()):
                continue
        synthetic = f"{CAMPAIGN_AD_PREFIX}{base['campaign_id']}"
        out.append(
            {
                **base,
                **rest,
                "adset_id": synthetic,
                "adset_name": None,
                "ad_id": synthetic,
                "ad_name": None,
            }
        )
    return out


def _conversions(value: float) -> int:
    return _round(Decimal(repr(float(value))))


def _round(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


class GoogleAdsCaller:
    """Runs Google Ads calls of one customer: retries transient errors, names permanent ones.

    Subclasses (adperf.actions.google_ads) override `_permanent` to name other fixes.
    """

    def __init__(
        self,
        customer_id: str,
        first_day: datetime.date,
        day: datetime.date,
        max_retries: int,
        sleep: Callable[[float], None],
    ) -> None:
        self.customer_id = customer_id
        self.first_iso = first_day.isoformat()
        self.day_iso = day.isoformat()
        self.max_retries = max_retries
        self.sleep = sleep

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried whole with bounded backoff on transient and quota errors."""
        from google.ads.googleads.errors import GoogleAdsException

        return retry(
            fn,
            functools.partial(self._verdict, what),
            catch=(
                GoogleAdsException,
                core_exceptions.GoogleAPICallError,
                auth_exceptions.RefreshError,
            ),
            max_retries=self.max_retries,
            sleep=self.sleep,
            backoff=BACKOFF,
            on_retry=log_retry(log, f"google_ads {self.customer_id}", what, self.max_retries),
            give_up=functools.partial(self._give_up, what),
        )

    def _verdict(self, what: str, exc: Exception) -> Transient | SourceError:
        """A failed call's exception: a Transient to try again, or the named error to raise."""
        from google.ads.googleads.errors import GoogleAdsException

        if isinstance(exc, GoogleAdsException):
            kind, failure, wait = _classify_failure(exc.failure, exc.error.code())
            failure = f"{failure} (request-id {exc.request_id})"
        elif isinstance(exc, core_exceptions.GoogleAPICallError):
            # The SDK leaves RESOURCE_EXHAUSTED and INTERNAL as plain gRPC errors (api-core
            # wraps them), but the GoogleAdsFailure is still in the trailing metadata.
            status = exc.grpc_status_code or grpc.StatusCode.UNKNOWN
            kind, failure, wait = _classify_failure(_failure_of(exc.response), status)
        else:  # auth_exceptions.RefreshError
            return self._permanent("the OAuth token could not be refreshed", what, True)
        if kind == "permanent" or kind == "auth":
            return self._permanent(failure, what, kind == "auth")
        return Transient(failure, wait, kind)

    def _give_up(self, what: str, last: Transient, tries: int) -> TransientSourceError:
        return TransientSourceError(
            SOURCE,
            self.day_iso,
            f"could not {what} of customer {self.customer_id} after {tries} tries: {last.failure}",
            "run the task again later; if quota errors persist, check the developer "
            "token's access level and daily operations in the API Center",
        )

    def _permanent(self, failure: str, what: str, auth: bool) -> SourceError:
        if auth:
            fix = (
                f"give the OAuth user (or service account) access to customer "
                f"{self.customer_id}, set [google_ads] login_customer_id to the manager "
                f"account above it if access comes through one, and {CREDENTIALS_FIX}"
            )
        else:
            fix = (
                f"check that customer {self.customer_id} in [google_ads] customer_ids exists "
                "and that the API version is live; quote the request-id to Google Ads support"
            )
        return SourceError(
            SOURCE, self.day_iso, f"could not {what} of customer {self.customer_id}: {failure}", fix
        )


def _classify_failure(failure: Any, status: grpc.StatusCode) -> tuple[str, str, float | None]:
    """('quota' | 'transient' | 'auth' | 'permanent', description, wait in seconds or None)."""
    codes: list[tuple[str, str]] = []
    messages: list[str] = []
    wait: float | None = None
    for error in getattr(failure, "errors", []) or []:
        field = type(error.error_code).pb(error.error_code).WhichOneof("error_code") or ""
        name = getattr(getattr(error.error_code, field, None), "name", "") if field else ""
        codes.append((field, name))
        messages.append(str(error.message))
        details = error.details.quota_error_details if "details" in error else None
        if details is not None and "retry_delay" in details:
            delay = details.retry_delay
            seconds = float(getattr(delay, "seconds", 0)) + float(getattr(delay, "nanos", 0)) / 1e9
            if seconds > 0:
                wait = max(wait or 0.0, seconds)
    text = f"gRPC {status.name}"
    if codes:
        text += ": " + ", ".join(f"{f}.{n}" for f, n in codes)
    if messages:
        text += f" ({'; '.join(messages)})"
    fields = {f for f, _ in codes}
    if fields & {"authentication_error", "authorization_error"} or status in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    ):
        return "auth", text, None
    if "quota_error" in fields or status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "quota", text, wait
    if codes and all(f == "internal_error" and n in TRANSIENT_INTERNAL for f, n in codes):
        return "transient", text, None
    if status in TRANSIENT_STATUS and not (fields - {"internal_error"}):
        return "transient", text, None
    return "permanent", text, None


def _failure_of(call: Any) -> Any:
    """The GoogleAdsFailure in a failed call's trailing metadata, or None."""
    errors = importlib.import_module(f"google.ads.googleads.{API_VERSION}.errors.types.errors")
    try:
        metadata = call.trailing_metadata() if call is not None else None
    except (AttributeError, grpc.RpcError):
        return None
    for key, value in metadata or ():
        if key == FAILURE_KEY:
            try:
                return errors.GoogleAdsFailure.deserialize(value)
            except DecodeError:  # an unparsable failure is just "no details"
                return None
    return None
