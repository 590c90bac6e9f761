"""TikTok ad groups for `adperf actions apply`: read status and daily budget, pause, set a budget.

Through the same client as the spend pull (adperf.sources.tiktok: `Access-Token` header, codes
in the body, the shared retry loop). Budgets live on ad groups (`budget_mode` BUDGET_MODE_DAY),
as on Facebook's adsets: a campaign-level action applies to each of its ad groups without an
action of their own. Business API v1.3:
- `GET /adgroup/get/` with `filtering` {"adgroup_ids" | "campaign_ids"}: `operation_status`
  (ENABLE / DISABLE), `budget` (a number in the advertiser's currency), `budget_mode`;
- `POST /adgroup/status/update/` {advertiser_id, adgroup_ids, operation_status: DISABLE};
- `POST /adgroup/budget/update/` {advertiser_id, budget: [{adgroup_id, budget}]}.
Statuses are shown in the plan's words (ENABLE -> ENABLED, DISABLE -> PAUSED).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from adperf.actions import (
    PAUSED,
    STATUS,
    ZERO_DECIMAL_CURRENCIES,
    Change,
    Recommendation,
    Target,
    assign_to_adsets,
)
from adperf.errors import SourceError
from adperf.platforms import TIKTOK
from adperf.sources import tiktok as tt
from adperf.sources.ad_spend import account_ids

PLATFORM = TIKTOK
BUDGET_FIELD = "budget"
LEVELS = ("campaign", "adset")
_STATUS = {"ENABLE": "ENABLED", "DISABLE": PAUSED}


class TikTokAdGroups:
    """Reads and changes TikTok ad groups for one report day (a `Platform`)."""

    name = PLATFORM

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        advertiser_ids: list[str],
        day: datetime.date,
        timeout: float = 60.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._advertisers = account_ids(
            advertiser_ids, "[tiktok] advertiser_ids", "advertisers", "change"
        )
        self._day = day
        self._client = tt.TikTokClient(
            base_url=base_url,
            access_token=access_token,
            day=day.isoformat(),
            timeout=timeout,
            max_retries=max_retries,
            sleep=sleep,
        )
        self._currencies: dict[str, str] = {}

    def close(self) -> None:
        self._client.close()

    def targets(self, recommendations: Sequence[Recommendation]) -> list[Target]:
        """Each ad group the recommendations change (a campaign's: all its ad groups), as now."""
        recs = [r for r in recommendations if r.platform == PLATFORM]
        out = [_target(r, skip=_refused(r.level)) for r in recs if r.level not in LEVELS]
        recs = [r for r in recs if r.level in LEVELS]
        groups: dict[str, dict[str, Any]] = {}
        campaign_groups: dict[str, list[str]] = {}
        try:
            campaigns = [r.object_id for r in recs if r.level == "campaign"]
            adgroups = [r.object_id for r in recs if r.level == "adset"]
            for g in self._read({"campaign_ids": campaigns} if campaigns else None):
                groups[g["adgroup_id"]] = g
                campaign_groups.setdefault(g["campaign_id"], []).append(g["adgroup_id"])
            for g in self._read({"adgroup_ids": adgroups} if adgroups else None):
                groups[g["adgroup_id"]] = g
        except SourceError as exc:
            return out + [_target(r, error=str(exc)) for r in recs]
        for rec, group_id in assign_to_adsets(recs, campaign_groups):
            group = groups.get(group_id)
            if group is None:
                out.append(_target(rec, error=self._missing(group_id)))
                continue
            currency = group["_currency"]
            daily = group.get("budget_mode") == "BUDGET_MODE_DAY"
            out.append(
                Target(
                    platform=PLATFORM,
                    level="adset",
                    object_id=group_id,
                    object_name=str(group.get("adgroup_name") or "") or None,
                    action=rec.action,
                    source=rec,
                    status=_STATUS.get(
                        str(group.get("operation_status")), group.get("operation_status")
                    ),
                    budget=_minor(group.get("budget"), currency) if daily else None,
                    budget_field=BUDGET_FIELD,
                    currency=currency,
                    per_currency_unit=_per_unit(currency),
                    budget_step=1,
                    refs={"advertiser_id": group["_advertiser"]},
                )
            )
        return out

    def apply(self, change: Change) -> None:
        """POST the pause or the new daily budget (an absolute value: retries cannot double)."""
        t = change.target
        advertiser = dict(t.refs or {})["advertiser_id"]
        if change.field == STATUS:
            body: dict[str, Any] = {
                "advertiser_id": advertiser,
                "adgroup_ids": [t.object_id],
                "operation_status": "DISABLE",
            }
            self._client.post(
                f"{tt.API}/adgroup/status/update/", body, f"pause ad group {t.object_id}"
            )
            return
        amount = Decimal(int(str(change.after))) / _per_unit(t.currency)
        body = {
            "advertiser_id": advertiser,
            "budget": [{"adgroup_id": t.object_id, "budget": float(amount)}],
        }
        self._client.post(
            f"{tt.API}/adgroup/budget/update/",
            body,
            f"set the daily budget of ad group {t.object_id} to {change.after}",
        )

    def _read(self, filtering: dict[str, list[str]] | None) -> list[dict[str, Any]]:
        """The ad groups matching `filtering` in every advertiser (none when None)."""
        if filtering is None:
            return []
        found: list[dict[str, Any]] = []
        for advertiser in self._advertisers:
            data = self._client.get(
                f"{tt.API}/adgroup/get/",
                {"advertiser_id": advertiser, "filtering": filtering, "page_size": 1000},
                f"read ad groups of advertiser {advertiser}",
            )
            for g in data.get("list") or []:
                g = {k: str(v) if k.endswith("_id") else v for k, v in g.items()}
                found.append(
                    {**g, "_advertiser": advertiser, "_currency": self._currency(advertiser)}
                )
        return found

    def _currency(self, advertiser: str) -> str:
        if advertiser not in self._currencies:
            self._currencies[advertiser] = str(
                tt.advertiser_info(self._client, advertiser)["currency"]
            )
        return self._currencies[advertiser]

    def _missing(self, group_id: str) -> str:
        return (
            f"tiktok for {self._day}: ad group {group_id} is in none of the advertisers "
            f"{self._advertisers}. Fix: add its advertiser to [tiktok] advertiser_ids, or check "
            "that it was not deleted"
        )


def _refused(level: str) -> str:
    return (
        f"tiktok changes campaigns and ad groups only: a {level} has no status or budget call here"
    )


def _per_unit(currency: str) -> int:
    return 1 if currency in ZERO_DECIMAL_CURRENCIES else 100


def _minor(value: Any, currency: str) -> int | None:
    if value in (None, "", "-"):
        return None
    return int((Decimal(str(value)) * _per_unit(currency)).to_integral_value())


def _target(rec: Recommendation, *, skip: str | None = None, error: str | None = None) -> Target:
    return Target.unchanged(rec, BUDGET_FIELD, skip=skip, error=error)
