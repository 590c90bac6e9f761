"""A local fake of the Google Ads API's `GoogleAdsService.SearchStream`, for the sandbox and tests.

A real gRPC server on 127.0.0.1 speaking the SDK's own message types (the google-ads package's
generated proto-plus classes), so the real `GoogleAdsClient` talks to it unchanged:

- `SearchStream(customer_id, query)` answers GAQL over `ad_group_ad` (ad-level rows of ad-level
  campaigns), `campaign` (every campaign, App campaigns included) and `customer`, filtered by
  `segments.date BETWEEN 'a' AND 'b'`, in batches of `batch_rows` rows per response
  (https://developers.google.com/google-ads/api/docs/reporting/streaming); with `segments.hour`
  selected, one row per hour of the customer's zone (0..23; the day split by
  `adperf.sandbox.hourly`);
- errors as the real API sends them: a gRPC status plus a serialized `GoogleAdsFailure` in the
  trailing metadata key `google.ads.googleads.<version>.errors.googleadsfailure-bin`, with
  `QuotaErrorDetails.retry_delay` for quota errors
  (https://developers.google.com/google-ads/api/docs/best-practices/error-types);
- the `developer-token` request header is checked; `login-customer-id` is recorded;
- editable campaigns and budgets (`objects`, kept in a JSON state file when `objects_path` is
  given, see `adperf.sandbox.ad_objects`): GAQL `FROM campaign` without `segments.date` answers
  one row per campaign with `campaign.status` and its `campaign_budget` (`amount_micros`,
  `explicitly_shared`), optionally `WHERE campaign.id IN (...)`;
  `CampaignService.MutateCampaigns` (update `status`) and
  `CampaignBudgetService.MutateCampaignBudgets` (update `amount_micros`) with field masks, on
  resource names `customers/{cid}/campaigns/{id}` and `customers/{cid}/campaignBudgets/{id}`
  (https://developers.google.com/google-ads/api/docs/mutating/overview).

Faults are injected per call (`inject_errors`): an error status, a stream that breaks after some
rows, or a stream that hangs until the client's deadline.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, Self

import grpc
import pandas as pd

from adperf.sandbox import hourly
from adperf.sandbox.ad_objects import JsonState
from adperf.sandbox.day_index import DayIndex

API_VERSION = "v26"
SERVICE = f"google.ads.googleads.{API_VERSION}.services.GoogleAdsService"
CAMPAIGN_SERVICE = f"google.ads.googleads.{API_VERSION}.services.CampaignService"
BUDGET_SERVICE = f"google.ads.googleads.{API_VERSION}.services.CampaignBudgetService"
FAILURE_KEY = f"google.ads.googleads.{API_VERSION}.errors.googleadsfailure-bin"

_svc = importlib.import_module(
    f"google.ads.googleads.{API_VERSION}.services.types.google_ads_service"
)
_err = importlib.import_module(f"google.ads.googleads.{API_VERSION}.errors.types.errors")
_camp_svc = importlib.import_module(
    f"google.ads.googleads.{API_VERSION}.services.types.campaign_service"
)
_budget_svc = importlib.import_module(
    f"google.ads.googleads.{API_VERSION}.services.types.campaign_budget_service"
)
CAMPAIGN_STATUSES = ("ENABLED", "PAUSED")
_CAMPAIGN_RN = re.compile(r"^customers/(\d+)/campaigns/(\d+)$")
_BUDGET_RN = re.compile(r"^customers/(\d+)/campaignBudgets/(\d+)$")
_IDS = re.compile(r"campaign\.id\s+(?:IN\s*\(([^)]*)\)|=\s*(\d+))", re.IGNORECASE)

AD_ROW_COLUMNS = (
    "date",
    "customer_id",
    "campaign_id",
    "campaign_name",
    "channel_type",  # advertising_channel_type, e.g. SEARCH, MULTI_CHANNEL (App campaigns)
    "ad_group_id",
    "ad_group_name",
    "ad_id",
    "ad_name",
    "ad_level",  # False: delivery the API reports at campaign level only (App campaigns)
    "impressions",
    "clicks",
    "cost_micros",
    "conversions",
)
CUSTOMER_KEYS = ("customer_id", "descriptive_name", "currency_code", "time_zone")

_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)
_HOUR = re.compile(r"\bsegments\.hour\b", re.IGNORECASE)
_DATES = re.compile(
    r"segments\.date\s+BETWEEN\s+'(\d{4}-\d\d-\d\d)'\s+AND\s+'(\d{4}-\d\d-\d\d)'", re.IGNORECASE
)


class FakeGoogleAds:
    """A fake GoogleAdsService on a free loopback port (insecure gRPC, no OAuth)."""

    def __init__(
        self,
        *,
        customers: list[dict[str, str]],
        ad_rows: pd.DataFrame,
        developer_token: str,
        batch_rows: int = 10_000,
        objects: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        objects_path: Path | None = None,
    ) -> None:
        for customer in customers:
            absent = [k for k in CUSTOMER_KEYS if k not in customer]
            if absent:
                raise ValueError(f"customer {customer!r} is missing keys {absent}")
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self._customers = {str(c["customer_id"]): dict(c) for c in customers}
        self._developer_token = developer_token
        self._batch_rows = batch_rows
        self._lock = threading.Lock()
        self._errors: deque[dict[str, Any]] = deque()
        self._rows = DayIndex([], account="customer_id")
        self.set_rows(ad_rows)
        self._objects = JsonState(objects or {"campaigns": {}, "budgets": {}}, objects_path)
        self._read_only: set[str] = set()
        self._server: grpc.Server | None = None
        self.endpoint = ""
        # (customer_id, [update_mask paths], resource name) of every mutate operation received.
        self.mutations: list[tuple[str, list[str], str]] = []
        # (customer_id, FROM resource, since, until, login-customer-id) of every call.
        self.calls: list[tuple[str, str, str, str, str | None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Serve on 127.0.0.1 in background threads; return 'host:port'."""
        if self._server is not None:
            return self.endpoint
        stream, unary = grpc.unary_stream_rpc_method_handler, grpc.unary_unary_rpc_method_handler
        rpcs = (  # service, method, handler kind, behaviour, (request type, response type)
            (SERVICE, "SearchStream", stream, self._search_stream, _SEARCH_TYPES),
            (CAMPAIGN_SERVICE, "MutateCampaigns", unary, self._mutate_campaigns, _CAMPAIGNS.types),
            (BUDGET_SERVICE, "MutateCampaignBudgets", unary, self._mutate_budgets, _BUDGETS.types),
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        method: kind(
                            behaviour,
                            request_deserializer=types[0].deserialize,
                            response_serializer=types[1].serialize,
                        )
                    },
                )
                for service, method, kind, behaviour, types in rpcs
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.endpoint = f"127.0.0.1:{port}"
        return self.endpoint

    def stop(self) -> None:
        """Stop serving (cancelling streams still open) and release the port."""
        if self._server is None:
            return
        self._server.stop(grace=None).wait(5)
        self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------------------------

    def set_rows(self, ad_rows: pd.DataFrame) -> None:
        """Replace the delivery served (e.g. the platform restating recent days)."""
        missing = [c for c in AD_ROW_COLUMNS if c not in ad_rows.columns]
        if missing:
            raise ValueError(f"ad_rows is missing columns {missing}")
        rows: list[dict[str, Any]] = [
            {str(k): (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in ad_rows[list(AD_ROW_COLUMNS)].to_dict("records")
        ]
        index = DayIndex(rows, account="customer_id")
        with self._lock:
            self._rows = index

    def inject_errors(self, errors: list[dict[str, Any]]) -> None:
        """Queue faults: each next SearchStream call takes the next one.

        Keys: `code` (a grpc.StatusCode name, default INTERNAL), `error` (a (field, enum name)
        pair of GoogleAdsError.error_code, e.g. ('quota_error', 'RESOURCE_TEMPORARILY_EXHAUSTED');
        without it no GoogleAdsFailure is sent), `message`, `retry_delay_s` (quota errors);
        `after_rows: n` streams n rows first (a stream breaking midway); `hang: True` sends
        nothing until the client gives up (its deadline).
        """
        with self._lock:
            self._errors.extend(dict(e) for e in errors)

    def deny_mutations(self, resource_names: list[str]) -> None:
        """Mutations of these resources fail with authorization_error.ACTION_NOT_PERMITTED (a
        read-only user on the customer)."""
        with self._lock:
            self._read_only.update(resource_names)

    def objects(self) -> dict[str, Any]:
        """The editable campaigns and budgets as they are now."""
        return self._objects.read()

    # -- the RPCs --------------------------------------------------------------------------

    def _check_caller(
        self,
        context: grpc.ServicerContext,
        customer_id: str,
        fault: dict[str, Any] | None = None,
    ) -> str:
        """The request id; aborts with an injected `fault` that fails at once, on a bad
        developer token or on an unknown customer."""
        metadata = dict(context.invocation_metadata())
        request_id = uuid.uuid4().hex[:22]
        context.set_trailing_metadata((("request-id", request_id),))
        if fault is not None and not fault.get("after_rows") and not fault.get("hang"):
            _abort(context, fault, request_id)
        if metadata.get("developer-token") != self._developer_token:
            _abort(
                context,
                {
                    "code": "UNAUTHENTICATED",
                    "error": ("authentication_error", "DEVELOPER_TOKEN_INVALID"),
                    "message": "The developer token is not valid.",
                },
                request_id,
            )
        if customer_id not in self._customers:
            _abort(
                context,
                {
                    "code": "PERMISSION_DENIED",
                    "error": ("authorization_error", "USER_PERMISSION_DENIED"),
                    "message": "User doesn't have permission to access customer.",
                },
                request_id,
            )
        return request_id

    def _mutate_campaigns(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._mutate(_CAMPAIGNS, request, context)

    def _mutate_budgets(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._mutate(_BUDGETS, request, context)

    def _mutate(self, kind: _Editable, request: Any, context: grpc.ServicerContext) -> Any:
        """One Mutate<kind> call: every operation is checked before any is applied (atomic)."""
        customer_id = str(request.customer_id)
        request_id = self._check_caller(context, customer_id)

        def invalid(error: tuple[str, str], message: str) -> NoReturn:
            _abort(
                context,
                {"code": "INVALID_ARGUMENT", "error": error, "message": message},
                request_id,
            )

        currency = self._customers[customer_id]["currency_code"]
        updates: list[tuple[str, dict[str, Any]]] = []
        targets = self._objects.read()[kind.collection]  # the state file, once per request
        for op in request.operations:
            name = str(op.update.resource_name)
            paths = list(op.update_mask.paths)
            with self._lock:
                self.mutations.append((customer_id, paths, name))
            found = kind.resource_name.match(name)
            target = targets.get(found.group(2)) if found else None
            self._check_target(context, request_id, customer_id, name, found, target, paths)
            if paths != [kind.field]:
                _abort_field_mask(context, request_id, paths)
            value = kind.value(op.update, currency, invalid)
            assert found is not None
            updates.append((found.group(2), {kind.field: value}))
        if not request.validate_only:
            self._objects.update(lambda doc: _apply(doc[kind.collection], updates))
        return kind.response(
            results=[{"resource_name": str(op.update.resource_name)} for op in request.operations]
        )

    def _check_target(
        self,
        context: grpc.ServicerContext,
        request_id: str,
        customer_id: str,
        name: str,
        found: re.Match[str] | None,
        target: dict[str, Any] | None,
        paths: list[str],
    ) -> None:
        if found is None or found.group(1) != customer_id:
            _abort(
                context,
                {
                    "code": "INVALID_ARGUMENT",
                    "error": ("request_error", "RESOURCE_NAME_MALFORMED"),
                    "message": f"Resource name '{name}' is malformed for customer {customer_id}.",
                },
                request_id,
            )
        if target is None or str(target["customer_id"]) != customer_id:
            _abort(
                context,
                {
                    "code": "INVALID_ARGUMENT",
                    "error": ("mutate_error", "RESOURCE_NOT_FOUND"),
                    "message": "The requested resource was not found.",
                },
                request_id,
            )
        with self._lock:
            denied = name in self._read_only
        if denied:
            _abort(
                context,
                {
                    "code": "PERMISSION_DENIED",
                    "error": ("authorization_error", "ACTION_NOT_PERMITTED"),
                    "message": "The user does not have permission to perform this action.",
                },
                request_id,
            )
        if not paths:
            _abort_field_mask(context, request_id, paths)

    def _search_stream(self, request: Any, context: grpc.ServicerContext) -> Any:
        metadata = dict(context.invocation_metadata())
        query = str(request.query)
        found = _FROM.search(query)
        resource = found.group(1).lower() if found else ""
        dates = _DATES.search(query)
        since, until = (dates.group(1), dates.group(2)) if dates else ("", "")
        customer_id = str(request.customer_id)
        with self._lock:
            self.calls.append(
                (customer_id, resource, since, until, metadata.get("login-customer-id"))
            )
            fault = self._errors.popleft() if self._errors else None
        request_id = self._check_caller(context, customer_id, fault)
        customer = self._customers[customer_id]
        if fault is not None and fault.get("hang"):
            # A stream that never answers: wait until the client cancels (its deadline).
            while context.is_active():
                time.sleep(0.01)
            return
        rows = self._select(customer, resource, since, until, query)
        sent = 0
        limit = int(fault["after_rows"]) if fault is not None else None
        for start in range(0, max(len(rows), 1), self._batch_rows):
            batch = rows[start : start + self._batch_rows]
            if limit is not None and sent + len(batch) >= limit:
                batch = batch[: limit - sent]
                if batch:
                    yield _response(batch, request_id)
                _abort(context, fault or {}, request_id)
            sent += len(batch)
            yield _response(batch, request_id)

    def _campaign_objects(self, base: dict[str, Any], query: str) -> list[Any]:
        """One row per editable campaign of the customer (status and budget), by campaign id."""
        cid = str(base["id"])
        wanted: set[str] | None = None
        ids = _IDS.search(query)
        if ids:
            listed = ids.group(1) if ids.group(1) is not None else ids.group(2)
            wanted = {v.strip() for v in listed.split(",") if v.strip()}
        doc = self._objects.read()
        rows = []
        for campaign_id, camp in sorted(doc["campaigns"].items()):
            if str(camp["customer_id"]) != cid:
                continue
            if wanted is not None and campaign_id not in wanted:
                continue
            budget = doc["budgets"][camp["budget_id"]]
            budget_rn = f"customers/{cid}/campaignBudgets/{camp['budget_id']}"
            rows.append(
                _svc.GoogleAdsRow(
                    customer=base,
                    campaign={
                        "resource_name": f"customers/{cid}/campaigns/{campaign_id}",
                        "id": int(campaign_id),
                        "name": camp["name"],
                        "status": camp["status"],
                        "campaign_budget": budget_rn,
                    },
                    campaign_budget={
                        "resource_name": budget_rn,
                        "id": int(camp["budget_id"]),
                        "amount_micros": int(budget["amount_micros"]),
                        "explicitly_shared": bool(budget["explicitly_shared"]),
                    },
                )
            )
        return rows

    def _select(
        self, customer: dict[str, str], resource: str, since: str, until: str, query: str = ""
    ) -> list[Any]:
        cid = str(customer["customer_id"])
        base = {
            "id": int(cid),
            "descriptive_name": customer["descriptive_name"],
            "currency_code": customer["currency_code"],
            "time_zone": customer["time_zone"],
        }
        if resource == "customer":
            return [_svc.GoogleAdsRow(customer=base)]
        if resource == "campaign" and not since:
            return self._campaign_objects(base, query)
        with self._lock:
            rows = self._rows
        mine = rows.select(cid, since, until)
        by_hour = bool(_HOUR.search(query))
        if by_hour:
            mine = [h for r in mine for h in _hourly(r, customer)]
        if resource == "ad_group_ad":
            return [_ad_row(r, base) for r in mine if r["ad_level"]]
        if resource == "campaign":
            totals: dict[tuple[str, int, str], dict[str, Any]] = {}
            for r in mine:
                key = (r["date"], r.get("hour", -1), str(r["campaign_id"]))
                t = totals.setdefault(
                    key, {**r, "impressions": 0, "clicks": 0, "cost_micros": 0, "conversions": 0.0}
                )
                for m in ("impressions", "clicks", "cost_micros", "conversions"):
                    t[m] += r[m]
            return [
                _ROW_PB(
                    customer=base,
                    campaign=_campaign(t),
                    segments=_segments(t),
                    metrics=_metrics(t),
                )
                for t in totals.values()
            ]
        return []


def _hourly(r: dict[str, Any], customer: dict[str, str]) -> list[dict[str, Any]]:
    """A day's record as its hours in the customer's zone (`segments.hour`), hours without
    delivery left out; cost split in whole units of the currency (adperf.sandbox.hourly)."""
    unit = 10**6 if customer["currency_code"] in ZERO_DECIMAL_CURRENCIES else 10**4
    counts = {
        "impressions": int(r["impressions"]),
        "clicks": int(r["clicks"]),
        "cost": int(r["cost_micros"]) // unit,
        "conversions": int(r["conversions"]),
    }
    out = []
    for hour, c in hourly.by_wall_hour(r["date"], customer["time_zone"], counts):
        if any(c.values()):
            base = {k: v for k, v in r.items() if k != _BUILT}
            out.append(
                {
                    **base,
                    "hour": hour,
                    "impressions": c["impressions"],
                    "clicks": c["clicks"],
                    "cost_micros": c["cost"] * unit,
                    "conversions": float(c["conversions"]),
                }
            )
    return out


def _segments(r: dict[str, Any]) -> dict[str, Any]:
    return {"date": r["date"], "hour": r["hour"]} if "hour" in r else {"date": r["date"]}


def rows_from_ad_daily(ad_daily: pd.DataFrame, app_campaign_ids: list[str]) -> pd.DataFrame:
    """The sandbox world's Google Ads delivery (`ad_daily.parquet` rows) as this fake's rows."""
    g = ad_daily[ad_daily["platform"] == "google_ads"]
    app = g["campaign_id"].isin(set(app_campaign_ids))
    return pd.DataFrame(
        {
            "date": g["date"],
            "customer_id": g["account_id"],
            "campaign_id": g["campaign_id"],
            "campaign_name": g["campaign_name"],
            "channel_type": app.map({True: "MULTI_CHANNEL", False: "SEARCH"}),
            "ad_group_id": g["adset_id"],
            "ad_group_name": g["adset_name"],
            "ad_id": g["ad_id"],
            "ad_name": g["ad_name"],
            "ad_level": ~app,
            "impressions": g["impressions"],
            "clicks": g["clicks"],
            # The world's spend is a decimal string in the currency; cost_micros is exact.
            "cost_micros": [int(Decimal(v).scaleb(6)) for v in g["spend"]],
            "conversions": g["installs_reported"].astype("float64"),
        }
    ).reset_index(drop=True)


ZERO_DECIMAL_CURRENCIES = frozenset({"KRW", "JPY"})

# Aborts the call with INVALID_ARGUMENT and a GoogleAdsError (field, enum name), message.
_Invalid = Callable[[tuple[str, str], str], NoReturn]


def _campaign_status(update: Any, currency: str, invalid: _Invalid) -> str:
    status = str(update.status.name)
    if status not in CAMPAIGN_STATUSES:
        invalid(
            ("request_error", "INVALID_ENUM_VALUE"),
            f"Campaign status {status} cannot be set with update.",
        )
    return status


def _budget_amount(update: Any, currency: str, invalid: _Invalid) -> int:
    amount = int(update.amount_micros)
    # Budgets are multiples of the currency's minimum unit: a cent, or a whole won/yen.
    unit = 1_000_000 if currency in ZERO_DECIMAL_CURRENCIES else 10_000
    if amount <= 0 or amount % unit:
        invalid(
            ("campaign_budget_error", "NON_MULTIPLE_OF_MINIMUM_CURRENCY_UNIT"),
            "The budget amount must be a multiple of the minimum unit.",
        )
    return amount


@dataclass(frozen=True)
class _Editable:
    """An editable resource: its names, its state collection, the one field an update may set."""

    resource_name: re.Pattern[str]  # groups: customer id, object id
    collection: str
    field: str
    value: Callable[[Any, str, _Invalid], Any]  # the checked new value (update, currency)
    request: Any
    response: Any

    @property
    def types(self) -> tuple[Any, Any]:
        """(request type, response type) of its Mutate RPC."""
        return self.request, self.response


_CAMPAIGNS = _Editable(
    _CAMPAIGN_RN,
    "campaigns",
    "status",
    _campaign_status,
    _camp_svc.MutateCampaignsRequest,
    _camp_svc.MutateCampaignsResponse,
)
_BUDGETS = _Editable(
    _BUDGET_RN,
    "budgets",
    "amount_micros",
    _budget_amount,
    _budget_svc.MutateCampaignBudgetsRequest,
    _budget_svc.MutateCampaignBudgetsResponse,
)
_SEARCH_TYPES = (_svc.SearchGoogleAdsStreamRequest, _svc.SearchGoogleAdsStreamResponse)


def _apply(objects: dict[str, Any], updates: list[tuple[str, dict[str, Any]]]) -> None:
    for object_id, values in updates:
        objects[object_id].update(values)


def _abort_field_mask(context: grpc.ServicerContext, request_id: str, paths: list[str]) -> NoReturn:
    _abort(
        context,
        {
            "code": "INVALID_ARGUMENT",
            "error": ("field_mask_error", "FIELD_NOT_FOUND"),
            "message": f"The field mask {paths} names no field the fake can update.",
        },
        request_id,
    )


# Delivery rows are built as raw protobuf messages: proto-plus construction cost ~50 us a row,
# which made this fake, not the client, the slow end of a year-sized sandbox.
_ROW_PB = _svc.GoogleAdsRow.pb()


def _ad_row(r: dict[str, Any], base: dict[str, Any]) -> Any:
    """The ad-level row of a record, built once and kept with it: the overlapping windows of a
    cold run's pulls ask for each row many times."""
    row = r.get(_BUILT)
    if row is None:
        row = r[_BUILT] = _ROW_PB(
            customer=base,
            campaign=_campaign(r),
            ad_group={"id": int(r["ad_group_id"]), "name": r["ad_group_name"]},
            ad_group_ad={"ad": {"id": int(r["ad_id"]), "name": r["ad_name"] or ""}},
            segments=_segments(r),
            metrics=_metrics(r),
        )
    return row


_BUILT = "_built"  # a record's key for its built row (set_rows gives fresh records)


def _response(rows: list[Any], request_id: str) -> Any:
    """One SearchStream response of `rows` (raw or proto-plus GoogleAdsRow messages)."""
    raw = [r if isinstance(r, _ROW_PB) else _svc.GoogleAdsRow.pb(r) for r in rows]
    response = _svc.SearchGoogleAdsStreamResponse
    return response.wrap(response.pb()(results=raw, request_id=request_id))


def _campaign(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": int(r["campaign_id"]),
        "name": r["campaign_name"],
        "advertising_channel_type": r["channel_type"],
    }


def _metrics(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "impressions": int(r["impressions"]),
        "clicks": int(r["clicks"]),
        "cost_micros": int(r["cost_micros"]),
        "conversions": float(r["conversions"]),
    }


def _abort(context: grpc.ServicerContext, fault: dict[str, Any], request_id: str) -> NoReturn:
    """End the call with a status and, when given, a GoogleAdsFailure in trailing metadata."""
    code = getattr(grpc.StatusCode, str(fault.get("code", "INTERNAL")))
    message = str(fault.get("message", "Internal error encountered."))
    trailing: list[tuple[str, str | bytes]] = [("request-id", request_id)]
    if fault.get("error"):
        field, name = fault["error"]
        error: dict[str, Any] = {"error_code": {field: name}, "message": message}
        if fault.get("retry_delay_s") is not None:
            error["details"] = {
                "quota_error_details": {
                    "rate_name": "Requests per developer token per minute",
                    "retry_delay": {"seconds": int(fault["retry_delay_s"])},
                }
            }
        failure = _err.GoogleAdsFailure(errors=[error], request_id=request_id)
        trailing.append((FAILURE_KEY, _err.GoogleAdsFailure.serialize(failure)))
    context.set_trailing_metadata(tuple(trailing))
    context.abort(code, message)
    raise AssertionError("grpc's context.abort returned")  # it always raises
