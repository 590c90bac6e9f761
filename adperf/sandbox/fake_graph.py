"""A local fake of the Graph API's ad account and Insights endpoints, for the sandbox and tests.

It answers the way the public Marketing API documents, so the real facebook-business SDK can
talk to it unchanged (only `FacebookSession.GRAPH` points here):

- `GET /{version}/act_{id}?fields=...` — the ad account node;
- `GET /{version}/act_{id}/insights` — sync Insights, level=ad, time_increment=1, cursor paging
  (https://developers.facebook.com/docs/graph-api/results); with
  `breakdowns=hourly_stats_aggregated_by_advertiser_time_zone` one row per ad, day and hour of the
  account's zone, the hour as `"13:00:00 - 13:59:59"` (the day split by
  `adperf.sandbox.hourly`; https://developers.facebook.com/docs/marketing-api/insights/breakdowns);
- `POST /{version}/act_{id}/insights` → `{"report_run_id"}`, `GET /{version}/{report_run_id}`
  (async_status, async_percent_completion) and `GET /{version}/{report_run_id}/insights` —
  async report runs (https://developers.facebook.com/docs/marketing-api/insights/best-practices),
  which can be scripted to end in Job Failed / Job Skipped or to stall;
- `X-Business-Use-Case-Usage` / `X-Ad-Account-Usage` headers on every account answer
  (https://developers.facebook.com/docs/graph-api/overview/rate-limiting);
- `GET /{version}/{adset_id}?fields=status,daily_budget,name,campaign_id,account_id` and
  `POST /{version}/{adset_id}` with form fields `status` / `daily_budget` → `{"success": true}`
  (https://developers.facebook.com/docs/marketing-api/reference/ad-campaign/#Updating);
  `GET /{version}/{campaign_id}` and `GET /{version}/{campaign_id}/adsets` (cursor paging), over
  editable objects kept in a JSON state file (`adperf.sandbox.ad_objects`);
- `POST /{version}/{adset_id}/copies` (`deep_copy`, `status_option`, `campaign_id`) → the new
  adset (in the same state file, `copy_of` its source) as `{"copied_adset_id", "ad_object_ids":
  [{"ad_object_type", "source_id", "copied_id"}]}`
  (https://developers.facebook.com/docs/marketing-api/reference/ad-campaign/copies/);
- Insights reads over `max_insights_limit` rows a page or `max_insights_days` days answer
  HTTP 500 code 1 "Please reduce the amount of data you're asking for, then retry your request";
- errors as `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`
  (https://developers.facebook.com/docs/graph-api/guides/error-handling; Insights codes:
  https://developers.facebook.com/documentation/ads-commerce/marketing-api/insights/error-codes).

Every number is a JSON string, as the real Insights API sends them; `actions`/`action_values`
are lists of `{"action_type", "value"}` and are left out of a row when all of them are zero.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import logging
import re
import secrets
import socket
import threading
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import pandas as pd

from adperf.sandbox import hourly, loopback
from adperf.sandbox.ad_objects import JsonState
from adperf.sandbox.day_index import DayIndex

log = logging.getLogger(__name__)

AD_ROW_COLUMNS = (
    "date",
    "account_id",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "ad_id",
    "ad_name",
    "impressions",
    "clicks",
    "installs_reported",
    "purchases_reported",
    "spend",
    "purchase_value",
)
ACCOUNT_KEYS = ("account_id", "name", "currency", "timezone_name")

HOURLY_BREAKDOWN = "hourly_stats_aggregated_by_advertiser_time_zone"
INSTALL_ACTION = "mobile_app_install"
PURCHASE_ACTION = "app_custom_event.fb_mobile_purchase"

# Async report states as the AdReportRun node reports them, in order.
ASYNC_NOT_STARTED = "Job Not Started"
ASYNC_RUNNING = "Job Running"
ASYNC_COMPLETED = "Job Completed"
ASYNC_FAILED = "Job Failed"
ASYNC_SKIPPED = "Job Skipped"
# Adset statuses a client may set (https://developers.facebook.com/docs/marketing-api/reference/ad-campaign/).
ADSET_STATUSES = ("ACTIVE", "PAUSED", "DELETED", "ARCHIVED")
PAUSED_STATUS = "PAUSED"
COPY_STATUS_OPTIONS = ("ACTIVE", "PAUSED", "INHERITED_FROM_SOURCE")
ADSET_FIELDS = ("id", "name", "status", "daily_budget", "campaign_id", "account_id")
# What an async report run does, as scripted by `async_outcomes`.
OUTCOMES = ("completed", "failed", "skipped", "stalled")

_VERSION = re.compile(r"^v\d+\.\d+$")


class FakeGraphApi(loopback.LoopbackFake):
    """A fake Graph API on 127.0.0.1 serving ad accounts and their ad-level daily Insights."""

    def __init__(
        self,
        *,
        accounts: list[dict[str, str]],
        ad_rows: pd.DataFrame,
        access_token: str,
        page_size: int = 25,
        async_polls_until_done: int = 2,
        failing_async_runs: int = 0,
        async_outcomes: list[str] | None = None,
        objects: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        objects_path: Path | None = None,
        max_insights_limit: int | None = None,
        max_insights_days: int | None = None,
    ) -> None:
        missing = [c for c in AD_ROW_COLUMNS if c not in ad_rows.columns]
        if missing:
            raise ValueError(f"ad_rows is missing columns {missing}")
        for account in accounts:
            absent = [k for k in ACCOUNT_KEYS if k not in account]
            if absent:
                raise ValueError(f"account {account!r} is missing keys {absent}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._accounts = {_strip_act(a["account_id"]): dict(a) for a in accounts}
        self._rows = DayIndex(_rows_as_records(ad_rows), account="account_id")
        outcomes = ["failed"] * failing_async_runs + list(async_outcomes or [])
        unknown = [o for o in outcomes if o not in OUTCOMES]
        if unknown:
            raise ValueError(f"async_outcomes {unknown} are not among {OUTCOMES}")
        # Outcomes of the next async report runs, in order; runs past the script complete.
        self._async_outcomes: deque[str] = deque(outcomes)
        # (since, until) of every async report run started, in order.
        self.report_run_ranges: list[tuple[str, str]] = []
        # Editable campaigns and adsets ({"campaigns": {...}, "adsets": {...}}); with a path,
        # kept in that file (created from `objects` when missing) and shared with other processes.
        self._objects = JsonState(objects or {"campaigns": {}, "adsets": {}}, objects_path)
        self._read_only: set[str] = set()
        self._token = access_token
        self._page_size = page_size
        self._async_polls_until_done = async_polls_until_done
        # Insights reads asking for more rows a page / more days than these are refused as too
        # big (TOO_MUCH_DATA), as the real API refuses heavy requests.
        self._max_insights_limit = max_insights_limit
        self._max_insights_days = max_insights_days
        self._lock = threading.Lock()
        self._errors: deque[dict[str, Any]] = deque()
        self._report_runs: dict[str, dict[str, Any]] = {}
        self.base_url = ""
        # (path, params without the token) of every request, in arrival order.
        self.requests_seen: list[tuple[str, dict[str, str]]] = []
        # Where each request carried its token: 'header', 'query', 'body' or 'missing'.
        self.token_locations: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; return the base URL."""
        if self._server is not None:
            return self.base_url
        self._server, self._thread, self.base_url = loopback.serve(
            _make_handler(self), "fake-graph-api"
        )
        return self.base_url

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------------------------

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Queue errors: each next request, whatever its route, answers with the next one.

        Keys: `status` (HTTP, default 400), `code`, `error_subcode`, `message`, `type`,
        `is_transient`, `headers` (dict); or `body` (raw text, e.g. a proxy's HTML page);
        or `json` (an answer sent as is with `status`, e.g. a recorded Insights page);
        or `drop: True` to close the connection without answering. `after_requests: n` lets
        n requests through normally first (e.g. to fail the second Insights page).
        """
        with self._lock:
            self._errors.extend(dict(e) for e in errors)

    def deny_writes(self, object_ids: list[str]) -> None:
        """POSTs to these objects answer a permission error (code 200), as for a token without
        ads_management on their ad account."""
        with self._lock:
            self._read_only.update(object_ids)

    def objects(self) -> dict[str, Any]:
        """The editable campaigns and adsets as they are now."""
        return self._objects.read()

    def set_rows(self, ad_rows: pd.DataFrame) -> None:
        """Replace the delivery served (e.g. the platform restating recent days)."""
        missing = [c for c in AD_ROW_COLUMNS if c not in ad_rows.columns]
        if missing:
            raise ValueError(f"ad_rows is missing columns {missing}")
        rows = DayIndex(_rows_as_records(ad_rows), account="account_id")
        with self._lock:
            self._rows = rows

    # -- request handling (called from the handler threads) ---------------------------------

    def _handle(self, method: str, raw_path: str, body: bytes, headers: dict[str, str]) -> _Reply:
        parts = urlsplit(raw_path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if method == "POST":
            params.update(dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
        token, where = _find_token(headers, parts.query, body if method == "POST" else b"")
        params.pop("access_token", None)
        with self._lock:
            self.requests_seen.append((parts.path, dict(params)))
            self.token_locations.append(where)
            injected = None
            if self._errors:
                head = self._errors[0]
                if head.get("after_requests", 0) > 0:
                    head["after_requests"] -= 1
                else:
                    injected = self._errors.popleft()
        if injected is not None:
            return _injected_reply(injected)
        if token is None:
            # https://developers.facebook.com/docs/graph-api/guides/error-handling (code 104)
            return _error(400, 104, "An access token is required to request this resource.")
        if token != self._token:
            return _error(400, 190, "Invalid OAuth access token - Cannot parse access token")

        segments = [s for s in parts.path.split("/") if s]
        if len(segments) < 2 or not _VERSION.match(segments[0]):
            return _error(400, 2500, "Unknown path components", error_type="OAuthException")
        version, node, edge = segments[0], segments[1], "/".join(segments[2:])
        if node.startswith("act_"):
            return self._account_route(method, version, node, edge, params)
        if node in self._report_runs:
            return self._report_run_route(method, version, node, edge, params)
        objects = self._objects.read()
        if node in objects["adsets"]:
            return self._adset_route(method, node, edge, params)
        if node in objects["campaigns"]:
            return self._campaign_route(method, version, node, edge, params, objects)
        return _unsupported(method, node)

    def _adset_route(self, method: str, node: str, edge: str, params: dict[str, str]) -> _Reply:
        if edge == "copies" and method == "POST":
            return self._copy_adset(node, params)
        if edge:
            return _unsupported(method, f"{node}/{edge}")
        if method == "GET":
            adset = self._objects.read()["adsets"][node]
            return _ok(_node(node, adset, params))
        with self._lock:
            denied = node in self._read_only
        if denied:
            # https://developers.facebook.com/docs/marketing-api/error-reference (code 200)
            return _error(
                403, 200, "(#200) Requires ads_management permission to manage the object"
            )
        update: dict[str, Any] = {}
        if "status" in params:
            if params["status"] not in ADSET_STATUSES:
                return _error(
                    400,
                    100,
                    f"(#100) Param status must be one of {{{', '.join(ADSET_STATUSES)}}}",
                )
            update["status"] = params["status"]
        if "daily_budget" in params:
            raw = params["daily_budget"]
            if not raw.isdigit() or int(raw) < 1:
                return _error(400, 100, "(#100) Param daily_budget must be a positive integer")
            update["daily_budget"] = int(raw)
        unknown = set(params) - {"status", "daily_budget"}
        if unknown or not update:
            return _error(400, 100, f"(#100) Invalid parameter {sorted(unknown) or 'none'}")
        self._objects.update(lambda doc: doc["adsets"][node].update(update))
        return _ok({"success": True})

    def _copy_adset(self, node: str, params: dict[str, str]) -> _Reply:
        """`POST /{adset_id}/copies`: a copy of the adset under its (or the given) campaign."""
        with self._lock:
            denied = node in self._read_only
        if denied:
            return _error(
                403, 200, "(#200) Requires ads_management permission to manage the object"
            )
        allowed = {"deep_copy", "status_option", "campaign_id", "rename_options"}
        unknown = set(params) - allowed
        status = params.get("status_option", PAUSED_STATUS)  # the documented default
        if unknown or status not in COPY_STATUS_OPTIONS:
            why = f"Invalid parameter {sorted(unknown)}" if unknown else "Param status_option"
            return _error(400, 100, f"(#100) {why} must be one of {list(COPY_STATUS_OPTIONS)}")
        made: dict[str, str] = {}

        def copy(doc: dict[str, Any]) -> None:
            source = doc["adsets"][node]
            campaign = params.get("campaign_id") or source["campaign_id"]
            new_id = str(max(int(k) for k in doc["adsets"] if k.isdigit()) + 1)
            doc["adsets"][new_id] = {
                **source,
                "name": f"{source.get('name', node)} - Copy",
                "campaign_id": campaign,
                "status": source["status"] if status == "INHERITED_FROM_SOURCE" else status,
                "copy_of": node,
            }
            made["id"] = new_id

        self._objects.update(copy)
        ids = [{"ad_object_type": "ad_set", "source_id": node, "copied_id": made["id"]}]
        return _ok({"copied_adset_id": made["id"], "ad_object_ids": ids})

    def _campaign_route(
        self,
        method: str,
        version: str,
        node: str,
        edge: str,
        params: dict[str, str],
        objects: dict[str, Any],
    ) -> _Reply:
        if method != "GET":
            return _unsupported(method, f"{node}/{edge}" if edge else node)
        if edge == "":
            return _ok(_node(node, objects["campaigns"][node], params))
        if edge == "adsets":
            rows = [
                {"id": adset_id, **adset}
                for adset_id, adset in sorted(objects["adsets"].items())
                if adset["campaign_id"] == node
            ]
            page = self._page(rows, [], params, f"{version}/{node}/adsets")
            page["data"] = [_node(str(r["id"]), r, params) for r in page["data"]]
            return _ok(page)
        return _unsupported(method, f"{node}/{edge}")

    def _account_route(
        self, method: str, version: str, node: str, edge: str, params: dict[str, str]
    ) -> _Reply:
        account = self._accounts.get(_strip_act(node))
        if account is None:
            return _unsupported(method, node)
        usage = _usage_headers(account["account_id"])
        if edge == "" and method == "GET":
            return _ok(_account_node(account, params), usage)
        if edge == "insights" and method == "GET":
            query = _parse_insights_query(params)
            if isinstance(query, _Reply):
                return query
            if self._too_big(params, query):
                return _too_much_data()
            rows = self._select(account["account_id"], query)
            page = self._page(rows, query.fields, params, f"{version}/{node}/insights")
            return _ok(page, usage)
        if edge == "insights" and method == "POST":
            query = _parse_insights_query(params)
            if isinstance(query, _Reply):
                return query
            run_id = str(6_000_000_000_000_000 + secrets.randbelow(10**15))
            with self._lock:
                outcome = self._async_outcomes.popleft() if self._async_outcomes else "completed"
                self.report_run_ranges.append((query.since, query.until))
                self._report_runs[run_id] = {
                    "account_id": _strip_act(account["account_id"]),
                    "query": query,
                    "polls": 0,
                    "outcome": outcome,
                }
            return _ok({"report_run_id": run_id}, usage)
        return _unsupported(method, f"{node}/{edge}")

    def _report_run_route(
        self, method: str, version: str, run_id: str, edge: str, params: dict[str, str]
    ) -> _Reply:
        run = self._report_runs[run_id]
        query: _InsightsQuery = run["query"]
        if edge == "" and method == "GET":
            with self._lock:
                run["polls"] += 1
                polls = run["polls"]
            outcome = run["outcome"]
            done = polls > self._async_polls_until_done and outcome != "stalled"
            status = (
                ASYNC_COMPLETED if done else (ASYNC_NOT_STARTED if polls == 1 else ASYNC_RUNNING)
            )
            steps = max(1, self._async_polls_until_done)
            percent = 100 if done else min(99, 100 * (polls - 1) // steps)
            if outcome == "stalled":
                percent = min(percent, 42)  # stuck, as runs sometimes are
            node: dict[str, Any] = {
                "id": run_id,
                "account_id": run["account_id"],
                "async_status": status,
                "async_percent_completion": percent,
                "date_start": query.since,
                "date_stop": query.until,
            }
            if done and outcome == "failed":
                # Insights error -2/2490547, "report failed" (error codes page, module docstring).
                node.update(
                    async_status=ASYNC_FAILED,
                    async_percent_completion=0,
                    error_code=-2,
                    error_subcode=2490547,
                    error_message="Generating the report failed. Try again later.",
                )
            elif done and outcome == "skipped":
                node.update(async_status=ASYNC_SKIPPED, async_percent_completion=0)
            wanted = _parse_fields(params.get("fields", ""))
            if wanted:
                node = {k: v for k, v in node.items() if k in wanted or k == "id"}
            return _ok(node)
        if edge == "insights" and method == "GET":
            if run["polls"] <= self._async_polls_until_done or run["outcome"] != "completed":
                # Reading results before the job completes is an error on the real API too.
                return _error(400, 100, "Report run is not complete yet")
            if self._too_big(params, None):
                return _too_much_data()
            # A completed run's result is a snapshot: selected once, then paged.
            if "rows" not in run:
                run["rows"] = self._select(run["account_id"], query)
            rows = run["rows"]
            return _ok(self._page(rows, query.fields, params, f"{version}/{run_id}/insights"))
        return _unsupported(method, f"{run_id}/{edge}")

    def _too_big(self, params: dict[str, str], query: _InsightsQuery | None) -> bool:
        """Whether a read asks for more rows a page, or (`query`) more days, than allowed."""
        limit = params.get("limit", str(self._page_size))
        if self._max_insights_limit is not None and limit.isdigit():
            if int(limit) > self._max_insights_limit:
                return True
        if self._max_insights_days is not None and query is not None:
            days = (_date(query.until) - _date(query.since)).days + 1
            return days > self._max_insights_days
        return False

    def _select(self, account_id: str, query: _InsightsQuery) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._rows
        selected = rows.select(_strip_act(account_id), query.since, query.until)
        if not query.hourly:
            return selected
        zone = self._accounts[_strip_act(account_id)]["timezone_name"]
        return [h for r in selected for h in _hourly_records(r, zone)]

    def _page(
        self,
        rows: list[dict[str, Any]],
        fields: list[str],
        params: dict[str, str],
        path: str,
    ) -> dict[str, Any]:
        try:
            limit = int(params.get("limit", self._page_size))
        except ValueError:
            limit = self._page_size
        # `page_size` is this server's largest page: a bigger `limit` is capped, as the real
        # API shrinks pages when a response would be too large.
        size = max(1, min(limit, self._page_size))
        start = _decode_cursor(params.get("after")) if params.get("after") else 0
        chunk = rows[start : start + size]
        if path.endswith("/insights"):
            data = [_rendered(r, fields) for r in chunk]
        else:
            data = list(chunk)
        body: dict[str, Any] = {"data": data}
        if not chunk:
            return body
        end = start + len(chunk)
        paging: dict[str, Any] = {
            "cursors": {"before": _encode_cursor(start), "after": _encode_cursor(end)}
        }
        if end < len(rows):
            # Absolute URL of the next page, without any token (ours never echoes it).
            next_params = {k: v for k, v in params.items() if k != "after"}
            next_params["after"] = _encode_cursor(end)
            paging["next"] = f"{self.base_url}/{path}?{urlencode(next_params)}"
        body["paging"] = paging
        return body


class _Reply:
    """One HTTP answer: status, JSON-able body (or raw text), extra headers, or a dropped link."""

    def __init__(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        *,
        raw: bool = False,
        drop: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.raw = raw
        self.drop = drop


class _InsightsQuery:
    """The parts of an Insights request the fake honours."""

    def __init__(self, since: str, until: str, fields: list[str], hourly: bool = False) -> None:
        self.since = since
        self.until = until
        self.fields = fields
        self.hourly = hourly


def _make_handler(api: FakeGraphApi) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "FakeGraphApi/1.0"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply = api._handle(method, self.path, body, dict(self.headers.items()))
            if reply.drop:
                # Close without a status line: the client sees a dropped connection.
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = reply.body.encode("utf-8") if reply.raw else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            content_type = "text/html" if reply.raw else "application/json; charset=UTF-8"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            # The stdlib writes the request line to stderr; the query could hold a token if a
            # client sent it there, so log the path only.
            log.debug("fake graph: %s %s", self.command, urlsplit(self.path).path)

    return Handler


def _find_token(headers: dict[str, str], query: str, body: bytes) -> tuple[str | None, str]:
    """The request's access token and where it was: Authorization header, query or form body."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and value.strip():
        return value.strip(), "header"
    from_query = dict(parse_qsl(query)).get("access_token")
    if from_query:
        return from_query, "query"
    from_body = dict(parse_qsl(body.decode("utf-8"))).get("access_token") if body else None
    if from_body:
        return from_body, "body"
    return None, "missing"


def _parse_insights_query(params: dict[str, str]) -> _InsightsQuery | _Reply:
    level = params.get("level", "ad")
    if level != "ad":
        return _error(400, 100, f"(#100) the fake Graph API only serves level=ad, not {level!r}")
    if params.get("time_increment", "1") != "1":
        return _error(400, 100, "(#100) the fake Graph API only serves time_increment=1")
    try:
        time_range = json.loads(params["time_range"])
        since, until = str(time_range["since"]), str(time_range["until"])
    except (KeyError, ValueError, TypeError):
        return _error(400, 100, "(#100) time_range must be a JSON object with since and until")
    breakdowns = _parse_fields(params.get("breakdowns", ""))
    if breakdowns not in ([], [HOURLY_BREAKDOWN]):
        return _error(
            400, 100, f"(#100) the fake Graph API only serves the breakdown {HOURLY_BREAKDOWN}"
        )
    return _InsightsQuery(since, until, _parse_fields(params.get("fields", "")), bool(breakdowns))


def _parse_fields(value: str) -> list[str]:
    """`fields` as the API accepts it: comma-separated or a JSON array (the SDK's POST form)."""
    if value.startswith("["):
        try:
            return [str(f) for f in json.loads(value)]
        except ValueError:
            return []
    return [f for f in value.split(",") if f]


def _node(node_id: str, values: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """An object node with the fields asked for (id always); numbers as strings, as the API
    sends budgets (`"daily_budget": "5000"`)."""
    out: dict[str, Any] = {"id": node_id}
    for field in _parse_fields(params.get("fields", "")) or ["name"]:
        if field in values and field != "id":
            value = values[field]
            out[field] = str(value) if isinstance(value, int) else value
    return out


def _account_node(account: dict[str, str], params: dict[str, str]) -> dict[str, str]:
    node = {"id": f"act_{_strip_act(account['account_id'])}"}
    values = {**account, "account_id": _strip_act(account["account_id"])}
    for field in _parse_fields(params.get("fields", "")):
        if field in values:
            node[field] = values[field]
    return node


def _rendered(r: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """`_insights_row`, kept with the record: the overlapping windows of a cold run's pulls
    ask for each row several times (rendering was most of this fake's time)."""
    key = tuple(fields)
    cache: dict[tuple[str, ...], dict[str, Any]] = r.setdefault(_RENDERED, {})
    if key not in cache:
        cache[key] = _insights_row(r, fields)
    return cache[key]


_RENDERED = "_rendered"  # a record's key for its rendered rows (never an Insights field)


def _insights_row(r: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """One Insights row as the API sends it: strings for numbers, zero actions left out."""
    full: dict[str, Any] = {
        "account_id": r["account_id"],
        "campaign_id": r["campaign_id"],
        "campaign_name": r["campaign_name"],
        "adset_id": r["adset_id"],
        "adset_name": r["adset_name"],
        "ad_id": r["ad_id"],
        "ad_name": r["ad_name"],
        "impressions": str(r["impressions"]),
        "clicks": str(r["clicks"]),
        "spend": r["spend"],
    }
    actions = []
    if r["clicks"]:
        # Other action types come along in real responses; a client must pick the right one.
        actions.append({"action_type": "link_click", "value": str(r["clicks"])})
    if r["installs_reported"]:
        actions.append({"action_type": INSTALL_ACTION, "value": str(r["installs_reported"])})
        actions.append({"action_type": "omni_app_install", "value": str(r["installs_reported"])})
    if r["purchases_reported"]:
        actions.append({"action_type": PURCHASE_ACTION, "value": str(r["purchases_reported"])})
        actions.append({"action_type": "omni_purchase", "value": str(r["purchases_reported"])})
    if actions:
        full["actions"] = actions
    if Decimal(r["purchase_value"]) != 0:
        full["action_values"] = [
            {"action_type": PURCHASE_ACTION, "value": r["purchase_value"]},
            {"action_type": "omni_purchase", "value": r["purchase_value"]},
        ]
    out = {k: v for k, v in full.items() if k in fields}
    # date_start/date_stop come with every Insights row, asked for or not; so do breakdowns.
    out["date_start"] = r["date"]
    out["date_stop"] = r["date"]
    if "hour" in r:
        out[HOURLY_BREAKDOWN] = f"{r['hour']:02d}:00:00 - {r['hour']:02d}:59:59"
    return out


def _hourly_records(r: dict[str, Any], zone: str) -> list[dict[str, Any]]:
    """A day's record as its hours in the account's zone (hours without delivery left out)."""
    spend, spend_digits = hourly.minor_units(r["spend"])
    value, value_digits = hourly.minor_units(r["purchase_value"])
    counts = {
        "impressions": r["impressions"],
        "clicks": r["clicks"],
        "installs_reported": r["installs_reported"],
        "purchases_reported": r["purchases_reported"],
        "spend": spend,
        "purchase_value": value,
    }
    out = []
    for hour, c in hourly.by_wall_hour(r["date"], zone, counts):
        if not any(c.values()):
            continue
        base = {k: v for k, v in r.items() if k != _RENDERED}
        out.append(
            {
                **base,
                **c,
                "hour": hour,
                "spend": hourly.amount(c["spend"], spend_digits),
                "purchase_value": hourly.amount(c["purchase_value"], value_digits),
            }
        )
    return out


def _rows_as_records(ad_rows: pd.DataFrame) -> list[dict[str, Any]]:
    records = []
    for rec in ad_rows.to_dict(orient="records"):
        row: dict[str, Any] = {k: rec[k] for k in AD_ROW_COLUMNS}
        for key in ("account_id", "campaign_id", "adset_id", "ad_id"):
            row[key] = _strip_act(str(row[key]))
        for key in ("impressions", "clicks", "installs_reported", "purchases_reported"):
            row[key] = int(row[key])
        for key in ("spend", "purchase_value"):
            if not isinstance(row[key], str):
                raise TypeError(f"ad_rows.{key} must be decimal strings, got {row[key]!r}")
        row["date"] = str(row["date"])
        records.append(row)
    # A stable order, so pages are reproducible.
    records.sort(key=lambda r: (r["account_id"], r["date"], r["ad_id"]))
    return records


def _injected_reply(spec: dict[str, Any]) -> _Reply:
    if spec.get("drop"):
        return _Reply(0, None, drop=True)
    status = int(spec.get("status", 400))
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    if "body" in spec:
        return _Reply(status, str(spec["body"]), headers, raw=True)
    if "json" in spec:
        return _Reply(status, spec["json"], headers)
    reply = _error(
        status,
        int(spec.get("code", 1)),
        str(spec.get("message", "An unknown error occurred")),
        error_type=str(spec.get("type", "OAuthException")),
        subcode=spec.get("error_subcode"),
        is_transient=spec.get("is_transient"),
    )
    reply.headers.update(headers)
    return reply


def _error(
    status: int,
    code: int,
    message: str,
    *,
    error_type: str = "OAuthException",
    subcode: int | None = None,
    is_transient: bool | None = None,
) -> _Reply:
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    if subcode is not None:
        error["error_subcode"] = int(subcode)
    if is_transient is not None:
        error["is_transient"] = bool(is_transient)
    error["fbtrace_id"] = "A" + secrets.token_hex(10)
    return _Reply(status, {"error": error})


#: The Graph API's answer to a request too heavy to serve, as recorded in
#: https://github.com/facebook/facebook-python-business-sdk/issues/470: HTTP 500, code 1, no
#: subcode, no type, no is_transient.
TOO_MUCH_DATA_MESSAGE = (
    "Please reduce the amount of data you're asking for, then retry your request"
)


def _too_much_data() -> _Reply:
    return _Reply(500, {"error": {"message": TOO_MUCH_DATA_MESSAGE, "code": 1}})


def _date(iso: str) -> datetime.date:
    return datetime.date.fromisoformat(iso)


def _unsupported(method: str, node: str) -> _Reply:
    # The real API's answer for an unknown id or one the token cannot see (code 100, subcode 33).
    return _error(
        400,
        100,
        f"Unsupported {method.lower()} request. Object with ID '{node}' does not exist, cannot "
        "be loaded due to missing permissions, or does not support this operation.",
        error_type="GraphMethodException",
        subcode=33,
    )


def _ok(body: dict[str, Any], headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(200, body, headers)


def _usage_headers(account_id: str) -> dict[str, str]:
    """Usage headers as the API sends them with ad account answers (low, steady usage)."""
    acct = _strip_act(account_id)
    buc = {
        acct: [
            {
                "type": "ads_insights",
                "call_count": 3,
                "total_cputime": 2,
                "total_time": 2,
                "estimated_time_to_regain_access": 0,
            }
        ]
    }
    return {
        "X-Business-Use-Case-Usage": json.dumps(buc),
        "X-Ad-Account-Usage": json.dumps({"acc_id_util_pct": 1.5, "reset_time_duration": 0}),
    }


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return int(base64.urlsafe_b64decode(padded).decode().removeprefix("offset:"))
    except ValueError:
        return 0


def _strip_act(account_id: str) -> str:
    return account_id.removeprefix("act_")
