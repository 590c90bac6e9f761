"""A local fake of the AppsFlyer Pull API raw-data v5 installs reports, for the demo and tests.

Follows https://dev.appsflyer.com/hc/reference/raw_data_pull_api_tokenv2-overview: Bearer token
header, `from`/`to`/`timezone` query, CSV body in AppsFlyer's column order, UTF-8 without a
charset in Content-Type. With a `daily_quota`, each app's report type serves that many reports a
UTC day, then answers "Your API calls limit has been reached for report type ..." (HTTP 400, as
recorded by Airbyte's source-appsflyer; quotas per report type, app and day from 00:00 UTC:
https://support.appsflyer.com/hc/en-us/articles/207034366-Report-generation-quotas-rate-limitations).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import logging
import re
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from adperf.sandbox import loopback
from adperf.vocabulary import ORGANIC

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


class FakeMmp(loopback.LoopbackFake):
    """AppsFlyer raw-data installs endpoints on 127.0.0.1, served from a DataFrame of installs."""

    def __init__(
        self,
        *,
        installs: pd.DataFrame,
        api_token: str,
        daily_quota: int | None = None,
        quota_status: int = 400,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        missing = [c for c in INSTALLS_COLUMNS if c not in installs.columns]
        if missing:
            raise ValueError(f"FakeMmp: installs lacks columns {missing}")
        self._lock = threading.Lock()
        self._installs = _Installs.of(installs)
        self._api_token = api_token
        self._errors: list[dict[str, Any]] = []
        self._stopping = threading.Event()  # ends injected hangs at stop()
        # What each request asked for (path, query, whether it was authorized); never the token.
        self.requests_seen: list[dict[str, Any]] = []
        # Reports served per (app, report type, UTC day), against `daily_quota` (None: no quota).
        self._daily_quota = daily_quota
        self._quota_status = quota_status
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self._served: dict[tuple[str, str, datetime.date], int] = {}

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; return the base URL."""
        self._stopping.clear()
        return self._serve(_Handler, "fake-mmp")

    def stop(self) -> None:
        """Stop serving and free the port (an injected hang ends first)."""
        self._stopping.set()
        super().stop()

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Queue answers for the next requests, one each, before any normal answer.

        Keys: `status` (HTTP code), optional `body` (text), `retry_after` (seconds, sent as the
        Retry-After header), `drop: True` to close the connection without an answer, or
        `hang: seconds` to accept the request and send nothing for that long (a stuck server or
        load balancer), then close the connection.
        """
        with self._lock:
            self._errors.extend(errors)

    def set_installs(self, installs: pd.DataFrame) -> None:
        """Replace the installs served (e.g. the world extended by a day)."""
        missing = [c for c in INSTALLS_COLUMNS if c not in installs.columns]
        if missing:
            raise ValueError(f"FakeMmp: installs lacks columns {missing}")
        data = _Installs.of(installs)
        with self._lock:
            self._installs = data

    def set_daily_quota(self, reports: int | None, status: int = 400) -> None:
        """Serve at most `reports` reports per app, report type and UTC day (None: no limit);
        past it answer `status` with AppsFlyer's quota text. Counts so far are kept."""
        with self._lock:
            self._daily_quota, self._quota_status = reports, status

    def _take_quota(self, app_id: str, report: str) -> bool:
        """Count one report against the day's quota; False when the quota is used up."""
        key = (app_id, report, self._clock().astimezone(datetime.UTC).date())
        with self._lock:
            if self._daily_quota is not None and self._served.get(key, 0) >= self._daily_quota:
                return False
            self._served[key] = self._served.get(key, 0) + 1
            return True

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
        # Whole columns at a time: built row by row, a month of the bench's medium world took
        # 20 s per report (tests/sources/test_mmp.py keeps the row-by-row rendering
        # as the reference the output must equal byte for byte).
        zone = zoneinfo.ZoneInfo(tz)
        with self._lock:
            data = self._installs  # one generation of installs for the whole report
        by_time, order, local = self._local_index(data, zone)
        lo, hi = np.searchsorted(
            by_time, [np.datetime64(_range_start(start)), np.datetime64(_range_end(end))]
        )
        rows = np.sort(order[lo:hi])  # the installs' own order, as AppsFlyer's export keeps it
        df = data.frame.take(rows)
        is_organic = df["media_source"] == ORGANIC
        keep = ((df["app_id"] == app_id) & (is_organic if organic else ~is_organic)).to_numpy()
        rows = rows[keep][:max_rows]
        cells = _cells(
            data.frame.take(rows),
            local[rows],
            data.utc[rows],
            zone,
            organic=organic,
        )
        # AppsFlyer ends lines with \n and quotes only what needs quoting, like Python's csv.
        return _csv_body(cells)

    def _local_index(
        self, data: _Installs, zone: zoneinfo.ZoneInfo
    ) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.intp], npt.NDArray[np.datetime64]]:
        """Install times as wall-clock times in `zone`: (sorted, the rows in that order, all).

        Computed once per zone (and installs). Requests filter on wall-clock time, which is not
        monotonic in UTC (a DST fall-back hour repeats), hence sorted wall-clock times, not a
        UTC range.
        """
        with self._lock:
            cached = data.by_zone.get(zone.key)
        if cached is None:
            local = data.utc_series.dt.tz_convert(zone).dt.tz_localize(None).to_numpy()
            valid = np.flatnonzero(~np.isnat(local))  # no install time: in no report
            order = valid[np.argsort(local[valid], kind="stable")]
            cached = (local[order], order, local)
            with self._lock:
                data.by_zone[zone.key] = cached
        return cached


@dataclass
class _Installs:
    """The installs served, with their install times in UTC once and, per zone, the wall-clock
    times sorted (FakeMmp._local_index); replaced whole by FakeMmp.set_installs."""

    frame: pd.DataFrame
    utc_series: pd.Series
    utc: npt.NDArray[np.datetime64]
    by_zone: dict[
        str, tuple[npt.NDArray[np.datetime64], npt.NDArray[np.intp], npt.NDArray[np.datetime64]]
    ] = field(default_factory=dict)

    @classmethod
    def of(cls, installs: pd.DataFrame) -> _Installs:
        frame = installs.reset_index(drop=True)
        utc_series = pd.to_datetime(frame["install_time"], utc=True)
        return cls(frame, utc_series, utc_series.dt.tz_localize(None).to_numpy())


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


def _csv_quote_triggers() -> str:
    """The characters that make the csv module (QUOTE_MINIMAL, '\\n' lines) quote a field.

    Asked of the csv module itself rather than written down: which characters it quotes for
    differs between Python versions (3.11 leaves a lone '\\r' unquoted under '\\n' lines).
    """
    triggers = []
    for code in range(128):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([f"a{chr(code)}b", "c"])
        if out.getvalue().startswith('"'):
            triggers.append(chr(code))
    return "".join(triggers)


_QUOTE_TRIGGERS = _csv_quote_triggers()


def _field(value: str) -> str:
    """One CSV field as the csv module writes it (quoted only when needed)."""
    if any(c in value for c in _QUOTE_TRIGGERS):
        return '"' + value.replace('"', '""') + '"'
    return value


def _fields(values: pa.Array) -> pa.Array:
    """A column of CSV fields as the csv module writes them (quoted only when needed)."""
    needs = pc.match_substring(values, _QUOTE_TRIGGERS[0])
    for char in _QUOTE_TRIGGERS[1:]:
        needs = pc.or_(needs, pc.match_substring(values, char))
    if not pc.any(needs).as_py():
        return values
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, values)


def _csv_body(cells: dict[str, pa.Array | str]) -> bytes:
    """The header and one line per row of `cells` (CSV_COLUMNS order), each ending in '\\n'."""
    header = ",".join(_field(c) for c in CSV_COLUMNS) + "\n"
    columns = [
        pa.scalar(_field(v)) if isinstance(v, str) else _fields(v)
        for v in (cells[c] for c in CSV_COLUMNS)
    ]
    rows = pc.binary_join_element_wise(*columns, ",")
    # Every column joined is null-free; a null would drop its whole line.
    if rows.null_count:
        raise AssertionError("fake-mmp: a CSV cell is null")
    lines = pc.binary_join_element_wise(rows, "", "\n")  # row + "\n" + ""
    return header.encode("utf-8") + _concatenated(lines)


def _concatenated(values: pa.Array) -> bytes:
    """All strings of a null-free string array, one after another."""
    if len(values) == 0:
        return b""
    values = values.cast(pa.large_string())
    _, offsets, data = values.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int64)[values.offset : values.offset + len(values) + 1]
    return bytes(memoryview(data)[int(bounds[0]) : int(bounds[-1])])


def _texts(column: pd.Series) -> pa.Array:
    """Cells of a column: missing as empty, everything else as its string (ids stay exact)."""
    if isinstance(column.dtype, pd.StringDtype):
        values = pa.array(column, type=pa.string(), from_pandas=True)
    else:
        filled = column.astype(object).where(column.notna(), "")
        values = pa.array([str(v) for v in filled], type=pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.fill_null(values, "")


def _times(wall_clock: npt.NDArray[np.datetime64]) -> pa.Array:
    """'yyyy-mm-dd hh:mm:ss' of naive wall-clock times (seconds cut, as strftime does)."""
    seconds = pa.array(wall_clock.astype("datetime64[s]"))
    return pc.strftime(seconds, format="%Y-%m-%d %H:%M:%S")


def _lower(values: pa.Array) -> pa.Array:
    """str.lower() of each value (Python's, computed once per distinct value)."""
    encoded = pc.dictionary_encode(values)
    lowered = pa.array([v.lower() for v in encoded.dictionary.to_pylist()], type=pa.string())
    return lowered.take(encoded.indices)


def _cells(
    df: pd.DataFrame,
    local: npt.NDArray[np.datetime64],
    utc: npt.NDArray[np.datetime64],
    zone: zoneinfo.ZoneInfo,
    *,
    organic: bool,
) -> dict[str, pa.Array | str]:
    """Plausible AppsFlyer raw-data cells for installs: CSV_COLUMNS name -> column or constant."""
    device = _texts(df["appsflyer_id"])
    # Per-device details (touch type, city, IDs...) follow from a hash of the device id, so a
    # device always looks the same; the first 8 hex digits of its SHA-256 are the seed.
    hex_list = [hashlib.sha256(d.encode("utf-8")).hexdigest()[:8] for d in device.to_pylist()]
    hexes = pa.array(hex_list, type=pa.string())
    hex_upper = pc.ascii_upper(hexes)
    seed = np.frombuffer(bytes.fromhex("".join(hex_list)), dtype=">u4").astype(np.int64)
    os_name = _lower(_texts(df["platform"]))
    ios = pc.equal(os_name, "ios")
    install = _times(local)
    media = _texts(df["media_source"])

    def pick(condition: Any, yes: str, no: str) -> pa.Array:
        return pc.if_else(pa.array(condition, type=pa.bool_()), yes, no)

    def paid(values: pa.Array | str) -> pa.Array | str:
        return "" if organic else values

    def join(*parts: pa.Array | str) -> pa.Array:
        return pc.binary_join_element_wise(*parts, "")

    touch_time: pa.Array | str = ""
    if not organic:
        # Minus minutes in absolute time, shown on the zone's clock (as aware arithmetic does).
        touch_utc = utc - (3 + seed % 50).astype("timedelta64[m]")
        touch_local = (
            pd.DatetimeIndex(touch_utc).tz_localize("UTC").tz_convert(zone).tz_localize(None)
        )
        touch_time = _times(touch_local.to_numpy())
    return {
        "Attributed Touch Type": paid(pick(seed % 5 != 0, "click", "impression")),
        "Attributed Touch Time": touch_time,
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
        "Media Source": media,
        "Channel": paid(pick(pc.match_substring(media, "Facebook"), "Facebook", "ACI_Search")),
        "Keywords": "",
        "Campaign": paid(_texts(df["campaign"])),
        "Campaign ID": paid(_texts(df["campaign_id"])),
        "Adset": paid(_texts(df["adset"])),
        "Adset ID": paid(_texts(df["adset_id"])),
        "Ad": paid(_texts(df["ad"])),
        "Ad ID": paid(_texts(df["ad_id"])),
        "Ad Type": paid("video"),
        "Site ID": "",
        "Sub Site ID": "",
        "Cost Model": paid("CPI"),
        "Cost Value": "",
        "Cost Currency": "",
        "Region": "AS",
        "Country Code": _texts(df["country_code"]),
        "State": "11",
        "City": pick(seed % 3 != 0, "Seoul", "Busan"),
        "Postal Code": "",
        # Documentation address range (RFC 5737): plausible, never a real user's address.
        "IP": join("203.0.113.", pc.cast(pa.array(seed % 254 + 1), pa.string())),
        "WIFI": pick(seed % 2 != 0, "true", "false"),
        "Operator": pick(seed % 2 != 0, "SKTelecom", "KT"),
        "Language": "한국어",
        "AppsFlyer ID": device,
        "Advertising ID": pc.if_else(ios, "", join(hexes, "-0000-4000-8000-000000000000")),
        "IDFA": pc.if_else(ios, join(hex_upper, "-0000-4000-8000-000000000000"), ""),
        "Customer User ID": _texts(df["customer_user_id"]),
        "IDFV": pc.if_else(ios, join(hex_upper, "-1111-4000-8000-000000000000"), ""),
        "Platform": os_name,
        "Device Type": pc.if_else(ios, "iPhone15,2", "SM-S911N"),
        "Device Model": pc.if_else(ios, "iPhone 14 Pro", "Galaxy S23"),
        "OS Version": pc.if_else(ios, "17.5.1", "14"),
        "App Version": "3.12.0",
        "SDK Version": "v6.14.3",
        "App ID": _texts(df["app_id"]),
        "App Name": "Demo App",
        "Bundle ID": "com.example.demo",
        "Is Retargeting": "false",
        "Retargeting Conversion Type": "",
        "Attribution Lookback": paid("7d"),
        "Is Primary Attribution": "true",
        "User Agent": pc.if_else(ios, "CFNetwork/1496.0.7 Darwin/23.5.0", "Dalvik/2.1.0"),
        "HTTP Referrer": "",
        "Original URL": "",
    }


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
        if not fake._take_quota(unquote(match["app"]), match["report"]):
            text = f"Your API calls limit has been reached for report type {match['report']}"
            self._send(fake._quota_status, text.encode(), "text/plain")
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
        if "hang" in error:
            # Not a byte: only the client's read timeout ends this for it.
            self.server_fake._stopping.wait(float(error["hang"]))
            self.close_connection = True
            return
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
