"""A local fake of TikTok's Business API (v1.3): reports, advertiser info and ad groups.

As documented (business-api.tiktok.com/portal/docs): the token in an `Access-Token` header;
GET parameters with lists JSON-encoded; every answer HTTP 200 with `{"code", "message",
"request_id", "data"}` (`code` 0 = OK, else an error such as 40100 rate limit, 40105 bad token,
40002 bad parameter, 50000 system error); report metrics as strings; `page` / `page_size`
paging with `data.page_info` {page, page_size, total_number, total_page}; at most 30 days per
daily report. Ad groups are editable (`adgroup/status/update/`, `adgroup/budget/update/`), kept
in a JsonState so every process sees the same ones, and a paused ad group's later days deliver
nothing in the sandbox's report (the world's closed loop is the world's business).
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from adperf.sandbox import loopback
from adperf.sandbox.ad_objects import JsonState

log = logging.getLogger(__name__)

API = "/open_api/v1.3"
MAX_PAGE_SIZE = 1000
MAX_DAYS = 30
AD_COLUMNS = (
    "date", "account_id", "campaign_id", "campaign_name", "adset_id", "adset_name", "ad_id",
    "ad_name", "impressions", "clicks", "installs_reported", "purchases_reported",
    "purchase_value", "spend",
)  # fmt: skip


class FakeTikTok(loopback.LoopbackFake):
    """TikTok Business API endpoints on 127.0.0.1, served from the world's TikTok delivery."""

    def __init__(
        self,
        *,
        advertisers: list[dict[str, Any]],
        ad_rows: pd.DataFrame,
        access_token: str,
        objects: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        objects_path: Path | None = None,
    ) -> None:
        self._advertisers = {str(a["advertiser_id"]): dict(a) for a in advertisers}
        missing = [c for c in AD_COLUMNS if c not in ad_rows.columns]
        if missing:
            raise ValueError(f"FakeTikTok: ad rows lack columns {missing}")
        self._rows = ad_rows.reset_index(drop=True)
        self._token = access_token
        self._objects = JsonState(
            objects if objects is not None else _objects_of(ad_rows), objects_path
        )
        self._errors: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        # What each request asked for (path, query or body, authorized); never the token.
        self.requests_seen: list[dict[str, Any]] = []

    def start(self) -> str:
        """Serve on a free loopback port; return the base URL."""
        return self._serve(_Handler, "fake-tiktok")

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Answer the next requests with these, one each: `code` + `message` (HTTP 200, as the
        API does) or `status` (an HTTP error from a proxy in between)."""
        with self._lock:
            self._errors.extend(errors)

    def set_rows(self, ad_rows: pd.DataFrame) -> None:
        """Replace the delivery served (e.g. the world extended by a day); objects stay."""
        missing = [c for c in AD_COLUMNS if c not in ad_rows.columns]
        if missing:
            raise ValueError(f"FakeTikTok: ad rows lack columns {missing}")
        rows = ad_rows.reset_index(drop=True)
        with self._lock:
            self._rows = rows

    def adgroups(self) -> dict[str, Any]:
        """The ad groups as they are now (id -> status, budget, ...)."""
        return dict(self._objects.read()["adgroups"])

    # ------------------------------------------------------------------ answers

    def answer(
        self, method: str, path: str, params: dict[str, Any], token: str | None
    ) -> dict[str, Any]:
        """The JSON body for one request (always served with HTTP 200)."""
        with self._lock:
            self.requests_seen.append(
                {
                    "method": method,
                    "path": path,
                    "params": params,
                    "authorized": token == self._token,
                }
            )
            error = self._errors.pop(0) if self._errors else None
        if error is not None and "code" in error:
            return _body(int(error["code"]), str(error.get("message", "error")))
        if not token:
            return _body(40104, "Access token is empty.")
        if token != self._token:
            return _body(40105, "Access token is incorrect or has been revoked.")
        routes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
            ("GET", f"{API}/advertiser/info/"): self._advertiser_info,
            ("GET", f"{API}/report/integrated/get/"): self._report,
            ("GET", f"{API}/adgroup/get/"): self._adgroup_get,
            ("POST", f"{API}/adgroup/status/update/"): self._adgroup_status,
            ("POST", f"{API}/adgroup/budget/update/"): self._adgroup_budget,
        }
        route = routes.get((method, path))
        if route is None:
            return _body(40002, f"Unknown API {method} {path}.")
        try:
            return route(params)
        except _ParamError as exc:
            return _body(40002, str(exc))

    def _advertiser_info(self, params: dict[str, Any]) -> dict[str, Any]:
        ids = _list(params, "advertiser_ids")
        unknown = [i for i in ids if i not in self._advertisers]
        if unknown:
            return _body(40001, f"No permission to operate advertiser {unknown[0]}.")
        return _body(0, "OK", {"list": [self._advertisers[i] for i in ids]})

    def _report(self, params: dict[str, Any]) -> dict[str, Any]:
        advertiser = _required(params, "advertiser_id")
        if advertiser not in self._advertisers:
            return _body(40001, f"No permission to operate advertiser {advertiser}.")
        if params.get("report_type") != "BASIC" or params.get("data_level") != "AUCTION_AD":
            raise _ParamError("This fake serves report_type BASIC at data_level AUCTION_AD only.")
        if sorted(_list(params, "dimensions")) != ["ad_id", "stat_time_day"]:
            raise _ParamError("dimensions: this fake serves [ad_id, stat_time_day] only.")
        try:
            first = datetime.date.fromisoformat(_required(params, "start_date"))
            last = datetime.date.fromisoformat(_required(params, "end_date"))
            page, size = int(params.get("page", 1)), int(params.get("page_size", 10))
        except ValueError:
            raise _ParamError("start_date, end_date, page and page_size must be valid.") from None
        if last < first or (last - first).days >= MAX_DAYS:
            raise _ParamError(f"The time range must be within {MAX_DAYS} days for stat_time_day.")
        if not (1 <= size <= MAX_PAGE_SIZE) or page < 1:
            raise _ParamError(f"page_size must be between 1 and {MAX_PAGE_SIZE}.")
        metrics = _list(params, "metrics")
        rows = self._rows
        rows = rows[
            (rows["account_id"] == advertiser)
            & (rows["date"] >= first.isoformat())
            & (rows["date"] <= last.isoformat())
        ].sort_values(["date", "ad_id"])
        total = len(rows)
        chunk = rows.iloc[(page - 1) * size : page * size]
        items = [
            {
                "dimensions": {"ad_id": r["ad_id"], "stat_time_day": f"{r['date']} 00:00:00"},
                "metrics": {m: _metric(r, m) for m in metrics},
            }
            for r in chunk.to_dict("records")
        ]
        page_info = {
            "page": page,
            "page_size": size,
            "total_number": total,
            "total_page": -(-total // size),
        }
        return _body(0, "OK", {"list": items, "page_info": page_info})

    def _adgroup_get(self, params: dict[str, Any]) -> dict[str, Any]:
        advertiser = _required(params, "advertiser_id")
        filtering = json.loads(params.get("filtering") or "{}")
        groups = [
            {"adgroup_id": gid, **g}
            for gid, g in self._objects.read()["adgroups"].items()
            if g["advertiser_id"] == advertiser
            and (not filtering.get("adgroup_ids") or gid in filtering["adgroup_ids"])
            and (not filtering.get("campaign_ids") or g["campaign_id"] in filtering["campaign_ids"])
        ]
        for g in groups:
            g["budget"] = float(g["budget"])  # the API answers budgets as numbers
        info = {"page": 1, "page_size": len(groups), "total_number": len(groups), "total_page": 1}
        return _body(0, "OK", {"list": groups, "page_info": info})

    def _adgroup_status(self, params: dict[str, Any]) -> dict[str, Any]:
        advertiser = _required(params, "advertiser_id")
        ids = [str(i) for i in params.get("adgroup_ids") or []]
        status = params.get("operation_status")
        if status not in ("DISABLE", "ENABLE", "DELETE") or not ids:
            raise _ParamError("adgroup_ids and operation_status (ENABLE, DISABLE) are required.")
        self._check_groups(advertiser, ids)

        def change(doc: dict[str, Any]) -> None:
            for gid in ids:
                doc["adgroups"][gid]["operation_status"] = status

        self._objects.update(change)
        return _body(0, "OK", {"adgroup_ids": ids, "status": status})

    def _adgroup_budget(self, params: dict[str, Any]) -> dict[str, Any]:
        advertiser = _required(params, "advertiser_id")
        budgets = params.get("budget") or []
        try:
            new = {str(b["adgroup_id"]): str(Decimal(str(b["budget"]))) for b in budgets}
        except (KeyError, TypeError, ArithmeticError):
            raise _ParamError("budget: a list of {adgroup_id, budget} is required.") from None
        if not new:
            raise _ParamError("budget: a list of {adgroup_id, budget} is required.")
        self._check_groups(advertiser, list(new))

        def change(doc: dict[str, Any]) -> None:
            for gid, amount in new.items():
                doc["adgroups"][gid]["budget"] = amount

        self._objects.update(change)
        return _body(0, "OK", {})

    def _check_groups(self, advertiser: str, ids: list[str]) -> None:
        groups = self._objects.read()["adgroups"]
        for gid in ids:
            if gid not in groups or groups[gid]["advertiser_id"] != advertiser:
                raise _ParamError(f"Ad group {gid} does not exist in advertiser {advertiser}.")


class _ParamError(Exception):
    pass


def _body(code: int, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": uuid.uuid4().hex, "data": data or {}}


def _required(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value in (None, ""):
        raise _ParamError(f"{key}: Missing data for required field.")
    return str(value)


def _list(params: dict[str, Any], key: str) -> list[str]:
    try:
        value = json.loads(params.get(key) or "[]")
    except ValueError:
        raise _ParamError(f"{key}: must be a JSON list.") from None
    if not isinstance(value, list):
        raise _ParamError(f"{key}: must be a JSON list.")
    return [str(v) for v in value]


_METRIC_COLUMNS = {
    "campaign_id": "campaign_id",
    "campaign_name": "campaign_name",
    "adgroup_id": "adset_id",
    "adgroup_name": "adset_name",
    "ad_name": "ad_name",
    "spend": "spend",
    "impressions": "impressions",
    "clicks": "clicks",
    "app_install": "installs_reported",
    "purchase": "purchases_reported",
    "total_purchase_value": "purchase_value",
}


def _metric(row: dict[Any, Any], metric: str) -> str:
    column = _METRIC_COLUMNS.get(metric)
    # Every metric is a string in the API's answers, numbers too ("12.34", "1520").
    return "-" if column is None else str(row[column])


def _objects_of(ad_rows: pd.DataFrame) -> dict[str, Any]:
    """Ad groups as the ad rows know them (for tests without a world): enabled, budget 0."""
    groups = ad_rows.drop_duplicates("adset_id")
    return {
        "adgroups": {
            str(r["adset_id"]): {
                "advertiser_id": str(r["account_id"]),
                "campaign_id": str(r["campaign_id"]),
                "adgroup_name": str(r["adset_name"]),
                "operation_status": "ENABLE",
                "budget_mode": "BUDGET_MODE_DAY",
                "budget": "0",
            }
            for r in groups.to_dict("records")
        }
    }


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeTikTok
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake-tiktok: " + format, *args)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self._reply("GET", parts.path, params)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            params = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            params = None
        if not isinstance(params, dict):
            self._send(200, _body(40002, "The request body is not a JSON object."))
            return
        self._reply("POST", urlsplit(self.path).path, params)

    def _reply(self, method: str, path: str, params: dict[str, Any]) -> None:
        fake = self.server_fake
        with fake._lock:
            error = fake._errors[0] if fake._errors and "status" in fake._errors[0] else None
            if error is not None:
                fake._errors.pop(0)
        if error is not None:
            self._send(int(error["status"]), {"message": f"HTTP {error['status']}"})
            return
        self._send(200, fake.answer(method, path, params, self.headers.get("Access-Token")))

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def sandbox_objects(seed: int, profile: str) -> dict[str, Any]:
    """The world's TikTok ad groups as they are before anyone edits them: enabled, with a daily
    budget (the sum of their ads' budgets, as a decimal string in the advertiser's currency)."""
    from adperf.platforms import TIKTOK
    from adperf.sandbox.entities import CURRENCY_DIGITS, entities_of
    from adperf.sandbox.profiles import get_profile

    ent = entities_of(seed, get_profile(profile))
    groups: dict[str, Any] = {}
    for ad in ent.ads:
        c = ent.campaigns[ad.campaign_index]
        if c.platform != TIKTOK:
            continue
        g = groups.setdefault(
            ad.adset_id,
            {
                "advertiser_id": c.account_id,
                "campaign_id": c.campaign_id,
                "adgroup_name": ad.adset_name,
                "operation_status": "ENABLE",
                "budget_mode": "BUDGET_MODE_DAY",
                "budget": Decimal(0),
                "_digits": CURRENCY_DIGITS[c.currency],
            },
        )
        g["budget"] += Decimal(str(ad.daily_budget))
    for g in groups.values():
        g["budget"] = str(round(g.pop("budget"), g.pop("_digits")))
    return {"adgroups": groups}
