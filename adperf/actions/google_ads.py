"""Google Ads campaigns for `adperf actions apply`: read status and budget, pause, set a budget.

Through the real google-ads SDK: the GoogleAdsService client comes from the spend source's
`_service` (same credentials, endpoint, interceptors, loopback rule), and CampaignService /
CampaignBudgetService clients share its channel. Errors are classified and retried by the spend
source's `GoogleAdsCaller`.

- Reads: GAQL `FROM campaign WHERE campaign.id IN (...)` with `campaign.status` and the
  campaign's `campaign_budget` (amount_micros, explicitly_shared), per configured customer (the
  `actions` table has no customer id: the customer that returns a campaign owns it).
- Writes (https://developers.google.com/google-ads/api/docs/mutating/overview): an `update`
  operation with a field mask naming only the field changed, so nothing else is touched:
  `CampaignService.MutateCampaigns` (status) and `CampaignBudgetService.MutateCampaignBudgets`
  (amount_micros, a multiple of the currency's minimum unit: 10,000 micros for a cent).
"""

from __future__ import annotations

import datetime
import functools
import importlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import field_mask_pb2

from adperf.actions import (
    PAUSED,
    STATUS,
    ZERO_DECIMAL_CURRENCIES,
    Change,
    Recommendation,
    Target,
)
from adperf.errors import ConfigError, SourceError
from adperf.sources import google_ads as ga

PLATFORM = "google_ads"
BUDGET_FIELD = "amount_micros"
QUERY = """
SELECT customer.id, customer.currency_code, campaign.id, campaign.name, campaign.status,
  campaign.resource_name, campaign_budget.resource_name, campaign_budget.amount_micros,
  campaign_budget.explicitly_shared
FROM campaign
WHERE campaign.id IN ({ids})
""".strip()
EXPAND_NOTE = (
    "Google Ads has no call that copies a campaign or ad group (the Facebook adset copies "
    "edge has no Google Ads counterpart): expand is a recommendation only here; duplicate it "
    "in the Google Ads UI"
)
AD_GROUP_NOTE = (
    "Google Ads has no ad group budget; ad group actions are recommendations only "
    "(its campaign's action, if any, is applied)"
)


class GoogleAdsCampaigns:
    """Reads and changes Google Ads campaigns and their budgets for one day (a `Platform`)."""

    name = PLATFORM

    def __init__(
        self,
        *,
        endpoint: str,
        credentials: ga.GoogleAdsCredentials,
        customer_ids: list[str],
        day: datetime.date,
        login_customer_id: str = "",
        insecure: bool = False,
        timeout: float = 120.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._customers = [c.strip().replace("-", "") for c in customer_ids if c.strip()]
        if not self._customers:
            raise ConfigError("[google_ads] customer_ids is empty: list the customers to change")
        self._day = day
        self._timeout = timeout
        self._max_retries = max_retries
        self._sleep = sleep
        self._search, self._raw = ga.google_ads_service(
            endpoint, credentials, login_customer_id, insecure, day
        )
        # The GoogleAdsService client's channel carries the SDK's interceptors (developer
        # token and login-customer-id headers, GoogleAdsFailure -> GoogleAdsException): the
        # mutate services reuse it rather than build a second stack.
        channel = self._search.transport.grpc_channel
        self._campaigns = _client("campaign_service", "CampaignService", channel)
        self._budgets = _client("campaign_budget_service", "CampaignBudgetService", channel)
        self._types = importlib.import_module(
            f"google.ads.googleads.{ga.API_VERSION}.services.types.campaign_service"
        )
        self._budget_types = importlib.import_module(
            f"google.ads.googleads.{ga.API_VERSION}.services.types.campaign_budget_service"
        )

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()

    def targets(self, recommendations: Sequence[Recommendation]) -> list[Target]:
        """Each campaign the recommendations change, as it is now; ad groups are skipped."""
        recs = [r for r in recommendations if r.platform == PLATFORM]
        out: list[Target] = []
        wanted: dict[str, Recommendation] = {}
        for rec in recs:
            if rec.action == "expand":
                out.append(_target(rec, skip=EXPAND_NOTE))
            elif rec.level != "campaign":
                out.append(_target(rec, skip=AD_GROUP_NOTE))
            elif not rec.object_id.isdigit():
                out.append(
                    _target(
                        rec,
                        error=f"google_ads for {self._day}: campaign id {rec.object_id!r} is not "
                        "a Google Ads id. Fix: reload the day's report (the actions table is "
                        "corrupt)",
                    )
                )
            else:
                wanted[rec.object_id] = rec
        found: dict[str, Target] = {}
        errors: list[str] = []
        for cid in self._customers:
            if not wanted:
                break
            query = QUERY.format(ids=", ".join(sorted(set(wanted) - set(found))))
            caller = _Caller(cid, self._day, self._day, self._max_retries, self._sleep)
            try:
                rows = caller.call(
                    "read campaign status and budgets",
                    functools.partial(ga.stream, self._search, cid, query, self._timeout),
                )
            except SourceError as exc:
                errors.append(str(exc))
                continue
            for row in rows:
                campaign_id = str(row.campaign.id)
                if campaign_id in wanted and campaign_id not in found:
                    found[campaign_id] = _from_row(wanted[campaign_id], cid, row)
            if len(found) == len(wanted):
                break
        for campaign_id, rec in wanted.items():
            if campaign_id in found:
                out.append(found[campaign_id])
                continue
            why = (
                "; ".join(errors)
                if errors
                else (
                    f"google_ads for {self._day}: campaign {campaign_id} is in none of the "
                    f"customers {self._customers}. Fix: add its customer to [google_ads] "
                    "customer_ids, or check that it was not removed"
                )
            )
            out.append(_target(rec, error=why))
        return out

    def apply(self, change: Change) -> str | None:
        """One update operation with a field mask of the changed field only."""
        target = change.target
        refs = dict(target.refs or {})
        customer_id = refs["customer_id"]
        caller = _Caller(customer_id, self._day, self._day, self._max_retries, self._sleep)
        # Setting an absolute value is idempotent, so the caller's retries cannot double it.
        if change.field == STATUS:
            op = self._types.CampaignOperation(
                update={"resource_name": refs["campaign"], "status": PAUSED},
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            )
            caller.call(
                f"pause campaign {target.object_id}",
                lambda: self._campaigns.mutate_campaigns(
                    customer_id=customer_id, operations=[op], timeout=self._timeout
                ),
            )
            return None
        op = self._budget_types.CampaignBudgetOperation(
            update={"resource_name": refs["budget"], BUDGET_FIELD: int(str(change.after))},
            update_mask=field_mask_pb2.FieldMask(paths=[BUDGET_FIELD]),
        )
        caller.call(
            f"set the budget of campaign {target.object_id} from {change.before} to "
            f"{change.after} micros",
            lambda: self._budgets.mutate_campaign_budgets(
                customer_id=customer_id, operations=[op], timeout=self._timeout
            ),
        )
        return None


class _Caller(ga.GoogleAdsCaller):
    """The spend source's caller, with fixes for writes (they need more than read access)."""

    def _permanent(self, failure: str, what: str, auth: bool) -> SourceError:
        if auth:
            fix = (
                f"give the OAuth user (or service account) Standard or Admin access to customer "
                f"{self.customer_id} (read-only access cannot change campaigns), set "
                "[google_ads] login_customer_id if access comes through a manager account, and "
                f"{ga.CREDENTIALS_FIX}; or make this change by hand in Google Ads, then run the "
                "apply again"
            )
        else:
            fix = (
                f"check that the campaign still exists in customer {self.customer_id} (removed "
                "campaigns cannot be changed); quote the request-id to Google Ads support"
            )
        problem = f"could not {what} of customer {self.customer_id}: {failure}"
        return SourceError(PLATFORM, self.day_iso, problem, fix)


def _client(module: str, name: str, channel: Any) -> Any:
    base = f"google.ads.googleads.{ga.API_VERSION}.services.services.{module}"
    services = importlib.import_module(base)
    transports = importlib.import_module(f"{base}.transports")
    transport = getattr(transports, f"{name}GrpcTransport")(channel=channel)
    return getattr(services, f"{name}Client")(transport=transport)


def _from_row(rec: Recommendation, customer_id: str, row: Any) -> Target:
    currency = str(row.customer.currency_code)
    zero = currency in ZERO_DECIMAL_CURRENCIES
    shared = bool(row.campaign_budget.explicitly_shared)
    return Target(
        platform=PLATFORM,
        level="campaign",
        object_id=rec.object_id,
        object_name=str(row.campaign.name) or rec.object_name,
        action=rec.action,
        source=rec,
        status=row.campaign.status.name,
        budget=int(row.campaign_budget.amount_micros) or None,
        budget_field=BUDGET_FIELD,
        currency=currency,
        per_currency_unit=1_000_000,
        # Budgets are multiples of the currency's minimum unit (a cent; a whole won or yen).
        budget_step=1_000_000 if zero else 10_000,
        refs={
            "customer_id": customer_id,
            "campaign": str(row.campaign.resource_name),
            "budget": str(row.campaign_budget.resource_name),
        },
        skip=(
            "its budget is shared with other campaigns; scaling it would scale them too"
            if shared and rec.action in ("scale", "unscale")
            else None
        ),
    )


def _target(rec: Recommendation, *, skip: str | None = None, error: str | None = None) -> Target:
    return Target.unchanged(rec, BUDGET_FIELD, skip=skip, error=error)
