"""A local fake of the AppsFlyer Pull API raw-data v5 installs reports, for the demo and tests.

Follows https://dev.appsflyer.com/hc/reference/raw_data_pull_api_tokenv2-overview: Bearer token
header, `from`/`to`/`timezone` query, CSV body in AppsFlyer's column order, UTF-8 without a
charset in Content-Type.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import logging
import math
import re
import threading
import zoneinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from adperf.sandbox import loopback

log = logging.getLogger(__name__)

# AppsFlyer's raw-data column order (a realistic subset); the client must find columns by name.
CSV_COLUMNS: tuple[str, ...] = (
    "Attributed Touch Type",
    "Attributed Touch Time",
    "Install Time",
    "Event Time",
    "Event Name",
    "Event Value",
    "Event Revenue",
    "Event Revenue Currency",
    "Event Revenue USD",
    "Event Source",
    "Is Receipt Validated",
    "Partner",
    "Media Source",
    "Channel",
    "Keywords",
    "Campaign",
    "Campaign ID",
    "Adset",
    "Adset ID",
    "Ad",
    "Ad ID",
    "Ad Type",
    "Site ID",
    "Sub Site ID",
    "Cost Model",
    "Cost Value",
    "Cost Currency",
    "Region",
    "Country Code",
    "State",
    "City",
    "Postal Code",
    "IP",
    "WIFI",
    "Operator",
    "Language",
    "AppsFlyer ID",
    "Advertising ID",
    "IDFA",
    "Customer User ID",
    "IDFV",
    "Platform",
    "Device Type",
    "Device Model",
    "OS Version",
    "App Version",
    "SDK Version",
    "App ID",
    "App Name",
    "Bundle ID",
    "Is Retargeting",
    "Retargeting Conversion Type",
    "Attribution Lookback",
    "Is Primary Attribution",
    "User Agent",
    "HTTP Referrer",
    "Original URL",
)

INSTALLS_COLUMNS: tuple[str, ...] = (
    "appsflyer_id",
    "customer_user_id",
    "install_time",
    "app_id",
    "media_source",
    "campaign",
    "campaign_id",
    "adset",
    "adset_id",
    "ad",
    "ad_id",
    "country_code",
    "platform",
)

_PATH = re.compile(
    r"^/api/raw-data/export/app/(?P<app>[^/]+)/(?P<report>installs_report|organic_installs_report)/v5$"
)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# AppsFlyer's `maximum_rows` default for raw-data reports.
DEFAULT_MAX_ROWS = 200_000


class FakeMmp:
    """AppsFlyer raw-data installs endpoints on 127.0.0.1, served from a DataFrame of installs."""

    def __init__(self, *, installs: pd.DataFrame, api_token: str) -> None:
        missing = [c for c in INSTALLS_COLUMNS if c not in installs.columns]
        if missing:
            raise ValueError(f"FakeMmp: installs lacks columns {missing}")
        self._installs = installs.reset_index(drop=True)
        self._api_token = api_token
        self._errors: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # What each request asked for (path, query, whether it was authorized); never the token.
        self.requests_seen: list[dict[str, Any]] = []

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; return the base URL."""
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server, self._thread, base_url = loopback.serve(Handler, "fake-mmp")
        return base_url

    def stop(self) -> None:
        """Stop serving and free the port."""
        loopback.shutdown(self._server, self._thread)
        self._server, self._thread = None, None

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Queue answers for the next requests, one each, before any normal answer.

        Keys: `status` (HTTP code), optional `body` (text), `retry_after` (seconds, sent as the
        Retry-After header), or `drop: True` to close the connection without an answer.
        """
        with self._lock:
            self._errors.extend(errors)

    def _next_error(self) -> dict[str, Any] | None:
        with self._lock:
            return self._errors.pop(0) if self._errors else None

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests_seen.append(entry)

    def _authorized(self, header: str | None) -> bool:
        return header is not None and header == f"Bearer {self._api_token}"

    def render_csv(
        self,
        *,
        app_id: str,
        organic: bool,
        start: datetime.date | datetime.datetime,
        end: datetime.date | datetime.datetime,
        tz: str,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> bytes:
        """The report body: rows of `app_id` installed from `start` to `end` in `tz`.

        Dates cover whole days, both ends included; local times ('yyyy-mm-dd hh:mm') cover
        `start` to the end of the `end` minute. Like AppsFlyer, it silently stops at `max_rows`.
        """
        zone = zoneinfo.ZoneInfo(tz)
        df = self._installs
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
        # AppsFlyer ends lines with \n; csv quotes only what needs quoting (commas, newlines).
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        chosen = df[keep].head(max_rows)
        # Plain dicts, not df.loc per row: the demo's larger worlds serve 100k-row reports.
        for row, local_time in zip(
            chosen.to_dict("records"), times[keep].head(max_rows), strict=True
        ):
            writer.writerow(
                _csv_row({str(k): v for k, v in row.items()}, local_time, organic=organic)
            )
        return out.getvalue().encode("utf-8")


def _range_start(value: datetime.date | datetime.datetime) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.combine(value, datetime.time())


def _range_end(value: datetime.date | datetime.datetime) -> datetime.datetime:
    """The exclusive end of a `to` value: the next day, or the next minute."""
    if isinstance(value, datetime.datetime):
        return value + datetime.timedelta(minutes=1)
    return datetime.datetime.combine(value + datetime.timedelta(days=1), datetime.time())


def _parse_when(text: str) -> datetime.date | datetime.datetime:
    """A `from`/`to` value: 'yyyy-mm-dd' or 'yyyy-mm-dd hh:mm' (AppsFlyer raw data v5)."""
    if len(text) == 10:
        return datetime.date.fromisoformat(text)
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M")


def _text(value: Any) -> str:
    """A cell: None/NaN as empty, everything else as its string (ids stay exact)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _csv_row(row: dict[str, Any], local_time: pd.Timestamp, *, organic: bool) -> list[str]:
    """One plausible AppsFlyer raw-data row for an install."""
    device = _text(row["appsflyer_id"])
    seed = int(hashlib.sha256(device.encode("utf-8")).hexdigest()[:8], 16)
    os_name = _text(row["platform"]).lower()
    ios = os_name == "ios"
    touch = local_time - pd.Timedelta(minutes=3 + seed % 50)
    install = local_time.strftime(_TIME_FORMAT)
    app_id = _text(row["app_id"])
    cells = {
        "Attributed Touch Type": "" if organic else ("click" if seed % 5 else "impression"),
        "Attributed Touch Time": "" if organic else touch.strftime(_TIME_FORMAT),
        "Install Time": install,
        "Event Time": install,
        "Event Name": "install",
        "Event Value": "",
        "Event Revenue": "",
        "Event Revenue Currency": "USD",
        "Event Revenue USD": "",
        "Event Source": "SDK",
        "Is Receipt Validated": "",
        "Partner": "",
        "Media Source": _text(row["media_source"]),
        "Channel": ""
        if organic
        else ("Facebook" if "Facebook" in str(row["media_source"]) else "ACI_Search"),
        "Keywords": "",
        "Campaign": "" if organic else _text(row["campaign"]),
        "Campaign ID": "" if organic else _text(row["campaign_id"]),
        "Adset": "" if organic else _text(row["adset"]),
        "Adset ID": "" if organic else _text(row["adset_id"]),
        "Ad": "" if organic else _text(row["ad"]),
        "Ad ID": "" if organic else _text(row["ad_id"]),
        "Ad Type": "" if organic else "video",
        "Site ID": "",
        "Sub Site ID": "",
        "Cost Model": "" if organic else "CPI",
        "Cost Value": "",
        "Cost Currency": "",
        "Region": "AS",
        "Country Code": _text(row["country_code"]),
        "State": "11",
        "City": "Seoul" if seed % 3 else "Busan",
        "Postal Code": "",
        # Documentation address range (RFC 5737): plausible, never a real user's address.
        "IP": f"203.0.113.{seed % 254 + 1}",
        "WIFI": "true" if seed % 2 else "false",
        "Operator": "SKTelecom" if seed % 2 else "KT",
        "Language": "한국어",
        "AppsFlyer ID": device,
        "Advertising ID": "" if ios else f"{seed:08x}-0000-4000-8000-000000000000",
        "IDFA": f"{seed:08X}-0000-4000-8000-000000000000" if ios else "",
        "Customer User ID": _text(row["customer_user_id"]),
        "IDFV": f"{seed:08X}-1111-4000-8000-000000000000" if ios else "",
        "Platform": os_name,
        "Device Type": "iPhone15,2" if ios else "SM-S911N",
        "Device Model": "iPhone 14 Pro" if ios else "Galaxy S23",
        "OS Version": "17.5.1" if ios else "14",
        "App Version": "3.12.0",
        "SDK Version": "v6.14.3",
        "App ID": app_id,
        "App Name": "Demo App",
        "Bundle ID": "com.example.demo",
        "Is Retargeting": "false",
        "Retargeting Conversion Type": "",
        "Attribution Lookback": "" if organic else "7d",
        "Is Primary Attribution": "true",
        "User Agent": "Dalvik/2.1.0" if not ios else "CFNetwork/1496.0.7 Darwin/23.5.0",
        "HTTP Referrer": "",
        "Original URL": "",
    }
    return [cells[c] for c in CSV_COLUMNS]


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeMmp
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; route it to logging instead.
        log.debug("fake-mmp: " + format, *args)

    def do_GET(self) -> None:
        fake = self.server_fake
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        authorized = fake._authorized(self.headers.get("Authorization"))
        fake._record(
            {"path": parts.path, "query": query, "target": self.path, "authorized": authorized}
        )
        error = fake._next_error()
        if error is not None:
            self._answer_error(error)
            return
        if not authorized:
            self._send(401, b'{"message":"Unauthorized"}', "application/json")
            return
        match = _PATH.match(parts.path)
        if match is None:
            self._send(404, b"Not Found", "text/plain")
            return
        try:
            start = _parse_when(query["from"])
            end = _parse_when(query["to"])
            tz = query.get("timezone", "UTC")
            zoneinfo.ZoneInfo(tz)
        except (KeyError, ValueError, zoneinfo.ZoneInfoNotFoundError):
            self._send(400, b"Bad request: from, to and timezone are required", "text/plain")
            return
        try:
            max_rows = int(query.get("maximum_rows", DEFAULT_MAX_ROWS))
        except ValueError:
            self._send(400, b"Bad request: maximum_rows must be a number", "text/plain")
            return
        body = fake.render_csv(
            app_id=unquote(match["app"]),
            organic=match["report"] == "organic_installs_report",
            start=start,
            end=end,
            tz=tz,
            max_rows=max_rows,
        )
        # AppsFlyer sends text/csv with no charset: clients must know the body is UTF-8.
        self._send(200, body, "text/csv")

    def _answer_error(self, error: dict[str, Any]) -> None:
        if error.get("drop"):
            # No answer at all: the server closes the socket, the client sees a dropped connection.
            self.close_connection = True
            return
        status = int(error.get("status", 500))
        body = str(error.get("body", json.dumps({"message": f"error {status}"}))).encode()
        headers = {}
        if "retry_after" in error:
            headers["Retry-After"] = str(error["retry_after"])
        self._send(status, body, "text/plain", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
