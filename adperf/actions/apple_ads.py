"""Apple Ads campaigns for `adperf actions apply`: read status and daily budget, pause, set a
budget.

Through the same client as the spend pull (adperf.sources.apple_ads: OAuth client credentials,
`X-AP-Context: orgId=`, the shared retry loop). Campaign Management API v5:
`GET /api/v5/campaigns/{id}` (`status` ENABLED / PAUSED, `dailyBudgetAmount` {amount,
currency}), `PUT /api/v5/campaigns/{id}` with `{"campaign": {"status": "PAUSED"}}` or
`{"campaign": {"dailyBudgetAmount": {...}}}`. Budgets and pauses are the campaign's: ad group
actions are refused by name (an ad group has bids and a status, no daily budget of its own).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from adperf.actions import PAUSED, STATUS, ZERO_DECIMAL_CURRENCIES, Change, Recommendation, Target
from adperf.errors import SourceError
from adperf.platforms import APPLE_ADS
from adperf.sources import apple_ads as asa
from adperf.sources.ad_spend import account_ids

PLATFORM = APPLE_ADS
BUDGET_FIELD = "dailyBudgetAmount"
REFUSED = (
    "apple_ads changes campaigns only (status, dailyBudgetAmount): an ad group has no daily "
    "budget here; act on its campaign or by hand"
)


class AppleAdsCampaigns:
    """Reads and changes Apple Ads campaigns for one report day (a `Platform`)."""

    name = PLATFORM

    def __init__(
        self,
        *,
        api_url: str,
        token_url: str,
        credentials: asa.AppleAdsCredentials,
        org_ids: list[str],
        day: datetime.date,
        timeout: float = 60.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._orgs = account_ids(org_ids, "[apple_ads] org_ids", "orgs", "change")
        self._day = day
        self._client = asa.AppleAdsClient(
            api_url=api_url,
            token_url=token_url,
            credentials=credentials,
            day=day.isoformat(),
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
        )

    def close(self) -> None:
        self._client.close()

    def targets(self, recommendations: Sequence[Recommendation]) -> list[Target]:
        """Each campaign the recommendations change, as it is now; ad groups are refused."""
        out: list[Target] = []
        for rec in recommendations:
            if rec.platform != PLATFORM:
                continue
            if rec.level != "campaign":
                out.append(_target(rec, skip=REFUSED))
                continue
            out.append(self._campaign_target(rec))
        return out

    def apply(self, change: Change) -> None:
        """PUT the new status or daily budget (an absolute value: retries cannot double it)."""
        t = change.target
        org = dict(t.refs or {})["org_id"]
        if change.field == STATUS:
            body: dict[str, Any] = {"campaign": {"status": PAUSED}}
            what = f"pause campaign {t.object_id}"
        else:
            amount = Decimal(int(str(change.after))) / t.per_currency_unit
            body = {"campaign": {BUDGET_FIELD: {"amount": str(amount), "currency": t.currency}}}
            what = f"set the daily budget of campaign {t.object_id} to {amount} {t.currency}"
        self._client.request("PUT", f"{asa.API}/campaigns/{t.object_id}", org, body, what)

    def _campaign_target(self, rec: Recommendation) -> Target:
        errors: list[str] = []
        for org in self._orgs:
            try:
                answer = self._client.request(
                    "GET", f"{asa.API}/campaigns/{rec.object_id}", org, None,
                    f"read campaign {rec.object_id}",
                )  # fmt: skip
            except SourceError as exc:
                errors.append(str(exc))
                continue
            data = answer.get("data") or {}
            budget = data.get(BUDGET_FIELD) or {}
            currency = str(budget.get("currency") or "")
            unit = 1 if currency in ZERO_DECIMAL_CURRENCIES else 100
            amount = budget.get("amount")
            return Target(
                platform=PLATFORM,
                level="campaign",
                object_id=rec.object_id,
                object_name=str(data.get("name") or "") or rec.object_name,
                action=rec.action,
                source=rec,
                status=str(data.get("status") or "") or None,
                budget=int(Decimal(str(amount)) * unit) if amount not in (None, "") else None,
                budget_field=BUDGET_FIELD,
                currency=currency,
                per_currency_unit=unit,
                budget_step=1,
                refs={"org_id": org},
            )
        why = "; ".join(errors) or f"campaign {rec.object_id} is in none of the orgs {self._orgs}"
        return _target(rec, error=why)


def _target(rec: Recommendation, *, skip: str | None = None, error: str | None = None) -> Target:
    return Target.unchanged(rec, BUDGET_FIELD, skip=skip, error=error)
