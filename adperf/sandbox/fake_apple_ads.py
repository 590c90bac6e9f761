"""A local fake of Apple Ads' OAuth token endpoint and Campaign Management API (v5).

As documented (developer.apple.com/documentation/apple_search_ads): `POST /auth/oauth2/token`
takes `grant_type=client_credentials`, `client_id`, `scope=searchadsorg` and a `client_secret`
JWT, checked here for real (ES256 signature against the API user's public key, `kid`, `iss` =
team id, `sub` = client id, `aud` = https://appleid.apple.com, not expired), and answers
`{"access_token", "token_type": "Bearer", "expires_in": 3600}`. API calls need
`Authorization: Bearer` and `X-AP-Context: orgId=`; answers are `{"data", "pagination",
"error"}`, errors `{"error": {"errors": [{"messageCode", "message", "field"}]}}` with the HTTP
status (400, 401, 403, 404, 429, 500). Reports page with `selector.pagination` {offset, limit}
and answer `pagination` {totalResults, startIndex, itemsPerPage}; amounts are strings in
`{"amount", "currency"}`. Campaigns are editable (`PUT /api/v5/campaigns/{id}` with
`{"campaign": {"status" | "dailyBudgetAmount"}}`), kept in a JsonState.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pandas as pd

from adperf.sandbox import loopback
from adperf.sandbox.ad_objects import JsonState

log = logging.getLogger(__name__)

TOKEN_PATH = "/auth/oauth2/token"
AUDIENCE = "https://appleid.apple.com"
MAX_LIMIT = 1000
_ADGROUPS = re.compile(r"^/api/v5/reports/campaigns/(?P<cid>\d+)/adgroups$")
_CAMPAIGN = re.compile(r"^/api/v5/campaigns/(?P<cid>\d+)$")


class FakeAppleAds(loopback.LoopbackFake):
    """Apple Ads endpoints on 127.0.0.1, served from the world's Apple Ads delivery."""

    def __init__(
        self,
        *,
        orgs: list[dict[str, Any]],
        ad_rows: pd.DataFrame,
        client_id: str,
        team_id: str,
        key_id: str,
        public_key: str,
        objects: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        objects_path: Path | None = None,
    ) -> None:
        self._orgs = {str(o["orgId"]): dict(o) for o in orgs}
        self._rows = ad_rows.reset_index(drop=True)
        self._client = (client_id, team_id, key_id, public_key)
        self._tokens: set[str] = set()
        self._objects = JsonState(
            objects if objects is not None else _objects_of(ad_rows), objects_path
        )
        self._errors: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.requests_seen: list[dict[str, Any]] = []  # method, path, org; never a token

    def start(self) -> str:
        """Serve on a free loopback port; return the base URL."""
        return self._serve(_Handler, "fake-apple-ads")

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Answer the next API calls (not token requests) with these: `status`, optional
        `message_code`, `retry_after`."""
        with self._lock:
            self._errors.extend(errors)

    def expire_tokens(self) -> None:
        """Forget every issued token (as after an hour): the next call gets a 401."""
        with self._lock:
            self._tokens.clear()

    def set_rows(self, ad_rows: pd.DataFrame) -> None:
        """Replace the delivery served (e.g. the world extended by a day); objects stay."""
        rows = ad_rows.reset_index(drop=True)
        with self._lock:
            self._rows = rows

    def campaigns(self) -> dict[str, Any]:
        return dict(self._objects.read()["campaigns"])

    # ------------------------------------------------------------------ answers

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id, team_id, key_id, public_key = self._client
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "searchadsorg":
            return 400, {"error": "invalid_request"}
        if form.get("client_id") != client_id:
            return 400, {"error": "invalid_client"}
        secret = form.get("client_secret", "")
        try:
            if jwt.get_unverified_header(secret).get("kid") != key_id:
                return 400, {"error": "invalid_client"}
            claims = jwt.decode(
                secret,
                public_key,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=team_id,
                options={"require": ["exp", "iat", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError:
            return 400, {"error": "invalid_client"}
        if claims.get("sub") != client_id:
            return 400, {"error": "invalid_client"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        context = headers.get("x-ap-context", "")
        org = context.partition("orgId=")[2] if context.startswith("orgId=") else ""
        with self._lock:
            self.requests_seen.append({"method": method, "path": path, "org": org})
            error = self._errors.pop(0) if self._errors else None
            authorized = headers.get("authorization", "").removeprefix("Bearer ") in self._tokens
        if error is not None:
            extra = {"Retry-After": str(error["retry_after"])} if "retry_after" in error else {}
            return (
                int(error["status"]),
                _error(str(error.get("message_code", "ERROR")), "injected"),
                extra,
            )
        if not authorized:
            return 401, _error("UNAUTHORIZED", "Invalid or expired access token"), {}
        if method == "GET" and path == "/api/v5/acls":
            return 200, {"data": list(self._orgs.values()), "pagination": None, "error": None}, {}
        if org not in self._orgs:
            return 403, _error("FORBIDDEN", "No access to the org in X-AP-Context"), {}
        if method == "POST" and path == "/api/v5/reports/campaigns":
            return self._report(org, None, body)
        match = _ADGROUPS.match(path)
        if method == "POST" and match:
            return self._report(org, match["cid"], body)
        match = _CAMPAIGN.match(path)
        if match and method in ("GET", "PUT"):
            return self._campaign(org, match["cid"], body if method == "PUT" else None)
        return 404, _error("NOT_FOUND", f"{method} {path}"), {}

    def _report(
        self, org: str, campaign_id: str | None, body: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            first = datetime.date.fromisoformat(body["startTime"])
            last = datetime.date.fromisoformat(body["endTime"])
            page = body["selector"]["pagination"]
            offset, limit = int(page["offset"]), int(page["limit"])
        except (KeyError, TypeError, ValueError):
            return (
                400,
                _error("INVALID_INPUT", "startTime, endTime and selector.pagination are required"),
                {},
            )
        if body.get("granularity") != "DAILY" or body.get("timeZone") != "ORTZ":
            return (
                400,
                _error("INVALID_INPUT", "this fake serves granularity DAILY in timeZone ORTZ"),
                {},
            )
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return 400, _error("INVALID_INPUT", f"limit must be 1..{MAX_LIMIT}"), {}
        rows = self._rows
        rows = rows[
            (rows["account_id"] == org)
            & (rows["date"] >= first.isoformat())
            & (rows["date"] <= last.isoformat())
        ]
        currency = self._orgs[org]["currency"]
        if campaign_id is not None:
            rows = rows[rows["campaign_id"] == campaign_id]
        key = "campaign_id" if campaign_id is None else "adset_id"
        groups = sorted(rows.groupby(key, sort=False), key=lambda kv: int(str(kv[0])))
        chunk = groups[offset : offset + limit]
        out = []
        for _, g in chunk:
            daily = g.groupby("date", sort=True).agg(
                impressions=("impressions", "sum"), clicks=("clicks", "sum"),
                installs=("installs_reported", "sum"),
                spend=("spend", lambda s: str(sum((Decimal(v) for v in s), Decimal(0)))),
            )  # fmt: skip
            out.append(
                {
                    "metadata": _metadata(g.iloc[0].to_dict(), org, campaign_id is None),
                    "granularity": [
                        {
                            "date": day,
                            "impressions": int(d["impressions"]),
                            "taps": int(d["clicks"]),
                            "totalInstalls": int(d["installs"]),
                            "localSpend": {"amount": d["spend"], "currency": currency},
                        }
                        for day, d in daily.iterrows()
                    ],
                }
            )
        data = {"reportingDataResponse": {"row": out}}
        pagination = {"totalResults": len(groups), "startIndex": offset, "itemsPerPage": len(out)}
        return 200, {"data": data, "pagination": pagination, "error": None}, {}

    def _campaign(
        self, org: str, cid: str, update: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        campaigns = self._objects.read()["campaigns"]
        if cid not in campaigns or campaigns[cid]["orgId"] != org:
            return 404, _error("NOT_FOUND", f"campaign {cid}"), {}
        if update is not None:
            change = (update or {}).get("campaign") if isinstance(update, dict) else None
            if not isinstance(change, dict) or not set(change) <= {"status", "dailyBudgetAmount"}:
                return 400, _error("INVALID_INPUT", "campaign: status or dailyBudgetAmount"), {}
            if "status" in change and change["status"] not in ("ENABLED", "PAUSED"):
                return 400, _error("INVALID_INPUT", "status must be ENABLED or PAUSED"), {}
            if "dailyBudgetAmount" in change:
                amount = change["dailyBudgetAmount"]
                if amount.get("currency") != self._orgs[org]["currency"]:
                    return (
                        400,
                        _error("INVALID_INPUT", "dailyBudgetAmount.currency is not the org's"),
                        {},
                    )

            def apply(doc: dict[str, Any]) -> None:
                doc["campaigns"][cid].update(change)

            campaigns = self._objects.update(apply)["campaigns"]
        return (
            200,
            {"data": {"id": int(cid), **campaigns[cid]}, "pagination": None, "error": None},
            {},
        )


def _metadata(row: dict[Any, Any], org: str, campaign_level: bool) -> dict[str, Any]:
    """A report row's `metadata`: the campaign's, or the ad group's (ids are numbers)."""
    meta = {"campaignId": int(row["campaign_id"]), "orgId": int(org)}
    if campaign_level:
        return {**meta, "campaignName": row["campaign_name"]}
    return {**meta, "adGroupId": int(row["adset_id"]), "adGroupName": row["adset_name"]}


def _error(code: str, message: str) -> dict[str, Any]:
    return {
        "data": None,
        "pagination": None,
        "error": {"errors": [{"messageCode": code, "message": message, "field": ""}]},
    }


def _objects_of(ad_rows: pd.DataFrame) -> dict[str, Any]:
    """Campaigns as the ad rows know them (for tests without a world): enabled, budget 0."""
    first = ad_rows.drop_duplicates("campaign_id")
    return {
        "campaigns": {
            str(r["campaign_id"]): {
                "orgId": str(r["account_id"]),
                "name": str(r["campaign_name"]),
                "status": "ENABLED",
                "dailyBudgetAmount": {"amount": "0", "currency": ""},
            }
            for r in first.to_dict("records")
        }
    }


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeAppleAds
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake-apple-ads: " + format, *args)

    def do_GET(self) -> None:
        self._api("GET", None)

    def do_PUT(self) -> None:
        self._api("PUT", self._body_json())

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == TOKEN_PATH:
            raw = self._body().decode("utf-8", "replace")
            form = {k: v[-1] for k, v in parse_qs(raw).items()}
            status, body = self.server_fake.token(form)
            self._send(status, body, {})
            return
        self._api("POST", self._body_json())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _body_json(self) -> Any:
        try:
            return json.loads(self._body() or b"null")
        except ValueError:
            return None

    def _api(self, method: str, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, answer, extra = self.server_fake.answer(
            method, urlsplit(self.path).path, headers, body
        )
        self._send(status, answer, extra)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


def sandbox_objects(seed: int, profile: str) -> dict[str, Any]:
    """The world's Apple Ads campaigns as they are before anyone edits them: enabled, with a
    daily budget (the sum of their ad groups' budgets, as Apple's {amount, currency})."""
    from adperf.platforms import APPLE_ADS
    from adperf.sandbox.entities import entities_of
    from adperf.sandbox.profiles import get_profile

    ent = entities_of(seed, get_profile(profile))
    budgets: dict[str, Decimal] = {}
    out: dict[str, Any] = {}
    for ad in ent.ads:
        c = ent.campaigns[ad.campaign_index]
        if c.platform != APPLE_ADS:
            continue
        budgets[c.campaign_id] = budgets.get(c.campaign_id, Decimal(0)) + Decimal(
            str(ad.daily_budget)
        )
        out[c.campaign_id] = {
            "orgId": c.account_id,
            "name": c.name,
            "status": "ENABLED",
            "dailyBudgetAmount": {"amount": "", "currency": c.currency},
        }
    for cid, amount in budgets.items():
        out[cid]["dailyBudgetAmount"]["amount"] = str(round(amount, 2))
    return {"campaigns": out}
