"""Apple Ads (Apple Search Ads) spend: ad-group delivery per day from the Campaign Management
API's reports (v5).

Authentication is OAuth 2 client credentials: a client secret that is a JWT signed ES256 with
the API user's private key (header `kid` = key id; claims `iss` = team id, `sub` = client id,
`aud` = https://appleid.apple.com, `iat`, `exp` at most 180 days later), exchanged at
`POST https://appleid.apple.com/auth/oauth2/token` (`grant_type=client_credentials`,
`scope=searchadsorg`) for an access token of an hour. Every call carries
`Authorization: Bearer <token>` and `X-AP-Context: orgId=<org>`.

`GET /api/v5/acls` names each org's `currency` and `timeZone`; `POST /api/v5/reports/campaigns`
lists the campaigns with delivery, `POST /api/v5/reports/campaigns/{id}/adgroups` their ad
groups, both with `granularity: DAILY`, `timeZone: ORTZ` (the org's own days) and
`selector.pagination` {offset, limit} (answer: `pagination.totalResults`). Rows are
`data.reportingDataResponse.row[]` with `metadata` and one `granularity[]` entry per day
(`impressions`, `taps`, `totalInstalls`, `localSpend` {amount, currency}).
https://developer.apple.com/documentation/apple_search_ads/get_campaign-level_reports

Apple Ads has no ad below the ad group in these reports: an ad group is both the adset and the
"ad" of AD_SPEND (`ad_id` = `adset_id`). Errors: HTTP 429 and 5xx are retried (Retry-After
honoured); 401 gets a new token once, then is a named token error; 400 / 403 / 404 are
permanent and named. The private key and tokens never reach a message or log line.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
import pandas as pd
import requests

from adperf.errors import ConfigError, SourceError, TransientSourceError
from adperf.platforms import APPLE_ADS
from adperf.schema import MICROS
from adperf.sources.ad_spend import account_ids, ad_spend_frame, check_window
from adperf.sources.retry import Backoff, Transient, log_retry, retry

log = logging.getLogger(__name__)

SOURCE = APPLE_ADS
API = "/api/v5"
AUDIENCE = "https://appleid.apple.com"
SCOPE = "searchadsorg"
PAGE_LIMIT = 1000  # the largest `limit` of a report selector
SECRET_LIFETIME_S = 3600  # the client secret is made per run: an hour is plenty
BACKOFF = Backoff(base_s=2.0, cap_s=60.0, asked_is_floor=True)
CREDENTIALS_FIX = (
    "set [apple_ads] client_id, team_id and key_id to the API user's values (Apple Ads > "
    "Account Settings > API) and ADPERF_APPLE_ADS_PRIVATE_KEY to its PEM private key"
)


@dataclass(frozen=True)
class AppleAdsCredentials:
    """The API user's identity and signing key (the key from the environment only)."""

    client_id: str
    team_id: str
    key_id: str
    private_key: str = ""  # PEM, ES256 (P-256)

    def __repr__(self) -> str:  # never print the key
        return f"AppleAdsCredentials(client_id={self.client_id!r}, key_id={self.key_id!r})"

    def client_secret(self, now: float) -> str:
        """The JWT client secret, signed ES256."""
        claims = {
            "iss": self.team_id,
            "sub": self.client_id,
            "aud": AUDIENCE,
            "iat": int(now),
            "exp": int(now) + SECRET_LIFETIME_S,
        }
        try:
            return jwt.encode(
                claims, self.private_key, algorithm="ES256", headers={"kid": self.key_id}
            )
        except (ValueError, TypeError, jwt.PyJWTError):
            # The library's message could quote key material: say only what is wrong.
            raise ConfigError(
                f"apple_ads: ADPERF_APPLE_ADS_PRIVATE_KEY is not an ES256 (P-256) private key in "
                f"PEM form. Fix: {CREDENTIALS_FIX}"
            ) from None


class _HttpFailure(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after


class AppleAdsClient:
    """Calls of one org, with a token kept for its hour, the shared retry loop and Apple's
    classification."""

    def __init__(
        self,
        *,
        api_url: str,
        token_url: str,
        credentials: AppleAdsCredentials,
        day: str,
        timeout: float = 60.0,
        max_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        missing = [
            k
            for k in ("client_id", "team_id", "key_id", "private_key")
            if not getattr(credentials, k)
        ]
        if missing:
            raise ConfigError(f"apple_ads: {', '.join(missing)} not set. Fix: {CREDENTIALS_FIX}")
        self.api_url = api_url.rstrip("/")
        self._token_url = token_url
        self._credentials = credentials
        self.day = day
        self._timeout, self._max_retries, self._sleep, self._clock = (
            timeout,
            max_retries,
            sleep,
            clock,
        )
        self._http = requests.Session()
        self._token: tuple[str, float] | None = None

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, org: str | None, body: Any, what: str
    ) -> dict[str, Any]:
        """The JSON answer of one call (org context when `org`), a new token once on 401."""
        try:
            return self._with_retries(method, path, org, body, what)
        except _Unauthorized:
            self._token = None
            try:
                return self._with_retries(method, path, org, body, what)
            except _Unauthorized as exc:
                raise SourceError(
                    SOURCE,
                    self.day,
                    f"could not {what}: the access token was refused ({exc})",
                    CREDENTIALS_FIX,
                ) from None

    def _with_retries(
        self, method: str, path: str, org: str | None, body: Any, what: str
    ) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            headers = {"Authorization": f"Bearer {self._access_token()}"}
            if org:
                headers["X-AP-Context"] = f"orgId={org}"
            response = self._http.request(
                method, f"{self.api_url}{path}", json=body, headers=headers, timeout=self._timeout
            )
            return _json(response)

        return retry(
            once,
            lambda exc: self._classify(exc, what),
            catch=(_HttpFailure, requests.ConnectionError, requests.Timeout),
            max_retries=self._max_retries,
            sleep=self._sleep,
            backoff=BACKOFF,
            on_retry=log_retry(log, SOURCE, what, self._max_retries),
            give_up=lambda t, tries: TransientSourceError(
                SOURCE,
                self.day,
                f"could not {what} after {tries} tries ({t.failure})",
                "nothing to change if Apple Ads is only busy: the next run pulls the day again",
            ),
        )

    def _classify(self, exc: Exception, what: str) -> Transient | Exception:
        if not isinstance(exc, _HttpFailure):
            return Transient(f"{type(exc).__name__} talking to {self.api_url}", kind="network")
        if exc.status == 429:
            return Transient(f"rate limited ({exc.message})", exc.retry_after, kind="rate limit")
        if exc.status >= 500:
            return Transient(
                f"server error {exc.status} ({exc.message})", exc.retry_after, kind="server"
            )
        if exc.status == 401:
            return _Unauthorized(exc.message)
        fix = {
            403: "check [apple_ads] org_ids: the API user needs a role (API Account Read Only or "
            "more) in each org",
            404: "check [apple_ads] org_ids and the campaign ids",
        }.get(exc.status, "check the request against the Apple Ads API docs")
        return SourceError(
            SOURCE, self.day, f"could not {what}: HTTP {exc.status} {exc.message}", fix
        )

    def _access_token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._token[1] - 60:
            return self._token[0]
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret(now),
            "scope": SCOPE,
        }
        response = self._http.post(self._token_url, data=form, timeout=self._timeout)
        if response.status_code >= 500 or response.status_code == 429:
            raise _HttpFailure(response.status_code, "token endpoint busy")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not answer.get("access_token"):
            # OAuth's own error word (invalid_client, invalid_grant): never the secret.
            raise SourceError(
                SOURCE,
                self.day,
                f"the token endpoint refused the client credentials "
                f"({answer.get('error') or response.status_code})",
                CREDENTIALS_FIX,
            )
        self._token = (str(answer["access_token"]), now + float(answer.get("expires_in") or 3600))
        return self._token[0]


class _Unauthorized(Exception):
    pass


def _json(response: requests.Response) -> dict[str, Any]:
    if response.status_code != 200:
        retry_after = response.headers.get("Retry-After")
        try:
            errors = (response.json().get("error") or {}).get("errors") or []
            message = "; ".join(f"{e.get('messageCode')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            message = ""
        wait = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise _HttpFailure(response.status_code, message or response.reason or "", wait)
    try:
        body = response.json()
    except ValueError:
        raise _HttpFailure(502, "an answer that is not JSON") from None
    return body if isinstance(body, dict) else {}


def fetch_apple_ads_spend(
    *,
    api_url: str,
    token_url: str,
    credentials: AppleAdsCredentials,
    org_ids: list[str],
    first_day: datetime.date,
    day: datetime.date,
    report_timezone: str | None = None,
    account_days: str = "account",
    timeout: float = 60.0,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> pd.DataFrame:
    """One row per ad group and day from `first_day` to `day` (each org's own days and
    currency), in AD_SPEND's columns. The days are always the org's (`timeZone: ORTZ`);
    `account_timezone` says which zone they are in."""
    orgs = account_ids(org_ids, "[apple_ads] org_ids", "orgs")
    check_window(SOURCE, first_day, day)
    client = AppleAdsClient(
        api_url=api_url,
        token_url=token_url,
        credentials=credentials,
        day=day.isoformat(),
        timeout=timeout,
        max_retries=max_retries,
        sleep=sleep,
    )
    try:
        acls = {
            str(a.get("orgId")): a
            for a in client.request("GET", f"{API}/acls", None, None, "read the orgs (acls)").get(
                "data"
            )
            or []
        }
        records: list[dict[str, Any]] = []
        for org in orgs:
            if org not in acls:
                raise SourceError(
                    SOURCE,
                    day.isoformat(),
                    f"the API user has no access to org {org}",
                    "check [apple_ads] org_ids, or give the API user a role in that org",
                )
            records.extend(_fetch_org(client, org, acls[org], first_day, day))
    finally:
        client.close()
    return ad_spend_frame(records)


def report_body(
    first: datetime.date, last: datetime.date, order_by: str, offset: int, limit: int
) -> dict[str, Any]:
    """A ReportingRequest of daily rows in the org's zone, one page."""
    return {
        "startTime": first.isoformat(),
        "endTime": last.isoformat(),
        "granularity": "DAILY",
        "timeZone": "ORTZ",
        "returnRecordsWithNoMetrics": False,
        "returnRowTotals": False,
        "returnGrandTotals": False,
        "selector": {
            "orderBy": [{"field": order_by, "sortOrder": "ASCENDING"}],
            "pagination": {"offset": offset, "limit": limit},
        },
    }


def _rows(
    client: AppleAdsClient,
    org: str,
    path: str,
    order_by: str,
    first: datetime.date,
    last: datetime.date,
    what: str,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset, total = 0, 1
    while offset < total:
        answer = client.request(
            "POST", path, org, report_body(first, last, order_by, offset, PAGE_LIMIT), what
        )
        page = ((answer.get("data") or {}).get("reportingDataResponse") or {}).get("row") or []
        rows.extend(page)
        total = int((answer.get("pagination") or {}).get("totalResults") or 0)
        if not page:
            break
        offset += len(page)
    return rows


def _fetch_org(
    client: AppleAdsClient, org: str, acl: dict[str, Any], first: datetime.date, last: datetime.date
) -> list[dict[str, Any]]:
    currency, zone = str(acl.get("currency") or ""), str(acl.get("timeZone") or "") or None
    campaigns = _rows(
        client,
        org,
        f"{API}/reports/campaigns",
        "campaignId",
        first,
        last,
        f"read the campaign report of org {org}",
    )
    records: list[dict[str, Any]] = []
    for campaign in campaigns:
        meta = campaign.get("metadata") or {}
        cid = str(meta.get("campaignId") or "")
        groups = _rows(
            client,
            org,
            f"{API}/reports/campaigns/{cid}/adgroups",
            "adGroupId",
            first,
            last,
            f"read the ad group report of campaign {cid} (org {org})",
        )
        for group in groups:
            g = group.get("metadata") or {}
            for cell in group.get("granularity") or []:
                records.append(_record(client, org, currency, zone, meta, g, cell, first, last))
    log.info(
        "apple_ads org %s: %d ad group rows, %s..%s (%s, %s)",
        org,
        len(records),
        first,
        last,
        currency,
        zone,
    )
    return records


def _record(
    client: AppleAdsClient,
    org: str,
    currency: str,
    zone: str | None,
    campaign: dict[str, Any],
    group: dict[str, Any],
    cell: dict[str, Any],
    first: datetime.date,
    last: datetime.date,
) -> dict[str, Any]:
    day = str(cell.get("date") or "")[:10]
    if not first.isoformat() <= day <= last.isoformat():
        raise SourceError(
            SOURCE,
            client.day,
            f"org {org} returned a row for {day!r} when asked for {first}..{last}",
            "report this: the report's dates were not honoured",
        )
    spend = cell.get("localSpend") or {}
    if spend.get("currency") and currency and spend["currency"] != currency:
        raise SourceError(
            SOURCE,
            client.day,
            f"org {org} reported spend in {spend['currency']}, its currency is {currency}",
            "report this: localSpend is expected in the org's currency",
        )
    group_id = str(group.get("adGroupId") or "")
    name = str(group.get("adGroupName") or "") or None
    return {
        "date": day,
        "platform": APPLE_ADS,
        "account_id": org,
        "campaign_id": str(campaign.get("campaignId") or ""),
        "campaign_name": str(campaign.get("campaignName") or "") or None,
        "adset_id": group_id,
        "adset_name": name,
        "ad_id": group_id,  # no ad below the ad group in these reports (module docstring)
        "ad_name": name,
        "impressions": int(cell.get("impressions") or 0),
        "clicks": int(cell.get("taps") or 0),
        "installs_reported": int(cell.get("totalInstalls") or 0),
        "purchases_reported": 0,
        "purchase_value_original_micros": 0,
        "spend_original_micros": _micros(spend.get("amount"), client),
        "currency_original": currency or str(spend.get("currency") or ""),
        "account_timezone": zone,
    }


def _micros(value: Any, client: AppleAdsClient) -> int:
    try:
        return int(
            (Decimal(str(value if value not in (None, "") else 0)) * MICROS).to_integral_value()
        )
    except InvalidOperation:
        raise SourceError(
            SOURCE, client.day, f"a spend is not a number: {value!r}", "report this"
        ) from None
