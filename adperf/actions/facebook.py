"""Facebook adsets for `adperf actions apply`: read status and daily budget, pause, set a budget.

Through the real facebook-business SDK, with the session set up as the Insights client does
(adperf.sources.facebook): the token in an `Authorization` header, never in a URL or a message;
non-JSON answers refused; errors retried or named by that module's `GraphCaller`.

https://developers.facebook.com/docs/marketing-api/reference/ad-campaign/ (an adset's fields;
`POST /{adset_id}` with `status` / `daily_budget` answers `{"success": true}`). `daily_budget`
is an integer in the minor unit of the ad account's currency (cents; whole won for KRW).

An `expand` is `POST /{adset_id}/copies` (the SDK's `AdSet.create_copy`) with `deep_copy`
(the adset's ads too) and `status_option` PAUSED or ACTIVE; it answers `{"copied_adset_id",
"ad_object_ids": [{"ad_object_type", "source_id", "copied_id"}, ...]}`
(https://developers.facebook.com/docs/marketing-api/reference/ad-campaign/copies/). A
synchronous deep copy is refused past 3 objects (adset + ads): such adsets need an async batch
and are copied by hand.
"""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.campaign import Campaign
from facebook_business.exceptions import FacebookRequestError

from adperf.actions import (
    COPIES,
    PAUSED,
    STATUS,
    ZERO_DECIMAL_CURRENCIES,
    Change,
    Recommendation,
    Target,
    assign_to_adsets,
)
from adperf.errors import ConfigError, SourceError
from adperf.sources import facebook as fb

PLATFORM = "facebook"
ADSET_FIELDS = ["name", "status", "daily_budget", "campaign_id", "account_id"]
BUDGET_FIELD = "daily_budget"


class FacebookAdsets:
    """Reads and changes Facebook adsets for one report day (a `Platform`)."""

    name = PLATFORM

    def __init__(
        self,
        *,
        graph_url: str,
        api_version: str,
        access_token: str,
        day: datetime.date,
        expand_active: bool = False,
        account_ids: list[str] | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # `account_ids` (the endpoint's) is accepted for the common interface: an adset's id
        # is enough to read and change it, whatever account holds it.
        del account_ids
        if not access_token:
            raise ConfigError("facebook: no access token; set ADPERF_FACEBOOK_TOKEN")
        self._day = day
        self._expand_active = expand_active
        self._token = access_token
        self._max_retries = max_retries
        self._sleep = sleep
        self._currencies: dict[str, str] = {}
        # The same session as the Insights client (see adperf.sources.facebook's docstring).
        self._api, self._http = fb.make_api(graph_url, api_version, access_token, timeout)

    def close(self) -> None:
        self._http.close()

    def targets(self, recommendations: Sequence[Recommendation]) -> list[Target]:
        """Each adset the recommendations change (a campaign's: all its adsets), as it is now."""
        recs = [r for r in recommendations if r.platform == PLATFORM]
        campaign_adsets: dict[str, list[str]] = {}
        failed: list[Target] = []
        for rec in recs:
            if rec.level != "campaign":
                continue
            try:
                campaign_adsets[rec.object_id] = self._adsets_of(rec.object_id)
            except SourceError as exc:
                failed.append(_target(rec, rec.object_id, "campaign", error=str(exc)))
        out: list[Target] = []
        for rec, adset_id in assign_to_adsets(recs, campaign_adsets):
            try:
                adset = AdSet(adset_id, api=self._api)
                node = self._caller(f"adset {adset_id}").call(
                    "read the adset", functools.partial(adset.api_get, fields=ADSET_FIELDS)
                )
                currency = self._currency(str(node.get("account_id") or ""))
            except SourceError as exc:
                out.append(_target(rec, adset_id, "adset", error=str(exc)))
                continue
            budget = node.get(BUDGET_FIELD)
            out.append(
                Target(
                    platform=PLATFORM,
                    level="adset",
                    object_id=adset_id,
                    object_name=str(node.get("name") or "") or None,
                    action=rec.action,
                    source=rec,
                    status=str(node.get("status") or "") or None,
                    # Absent or "0" when the campaign holds the budget (campaign budget
                    # optimization): then there is no adset budget to scale.
                    budget=int(budget) if budget not in (None, "", "0") else None,
                    budget_field=BUDGET_FIELD,
                    currency=currency,
                    per_currency_unit=1 if currency in ZERO_DECIMAL_CURRENCIES else 100,
                    budget_step=1,
                )
            )
        return failed + out

    def apply(self, change: Change) -> str | None:
        """POST the new status or daily budget to the adset node, or copy it (its id back)."""
        target = change.target
        if change.field == COPIES:
            return self._copy(target)
        if change.field == STATUS:
            params: dict[str, Any] = {"status": PAUSED}
            what = "pause the adset"
        else:
            params = {BUDGET_FIELD: int(str(change.after))}
            what = f"set the adset's daily budget from {change.before} to {change.after}"
        # Setting an absolute value is idempotent, so the caller's retries cannot double it.
        self._caller(f"adset {target.object_id}").call(
            what, lambda: AdSet(target.object_id, api=self._api).api_update(params=params)
        )
        return None

    def _copy(self, target: Target) -> str:
        """Copy the adset with its ads (deep copy); the copy's id."""
        params = {
            "deep_copy": True,
            "status_option": "ACTIVE" if self._expand_active else PAUSED,
        }
        # Not idempotent: a retry after an answer lost in transit would make a second copy, so
        # this call is never retried (a transient error fails the change; action_log then says
        # so and the person checks the adset's copies before applying again).
        caller = _ObjectCaller(self._day, f"adset {target.object_id}", self._token, 0, self._sleep)
        answer = caller.call(
            "copy the adset",
            lambda: AdSet(target.object_id, api=self._api).create_copy(params=params),
        )
        copied = answer.get("copied_adset_id") if hasattr(answer, "get") else None
        if not copied:
            raise SourceError(
                PLATFORM,
                self._day.isoformat(),
                f"copying adset {target.object_id} answered no copied_adset_id",
                "check the adset's copies in Ads Manager before applying again",
            )
        return str(copied)

    def _adsets_of(self, campaign_id: str) -> list[str]:
        caller = self._caller(f"campaign {campaign_id}")
        cursor = caller.call(
            "list the campaign's adsets",
            lambda: Campaign(campaign_id, api=self._api).get_ad_sets(
                fields=["id"], params={"limit": 200}
            ),
        )
        return [str(row["id"]) for row in fb.all_rows(cursor, caller)]

    def _currency(self, account_id: str) -> str:
        if account_id not in self._currencies:
            act = f"act_{account_id.removeprefix('act_')}"
            info = self._caller(act).call(
                "read the ad account's currency",
                lambda: AdAccount(act, api=self._api).api_get(fields=["currency"]),
            )
            self._currencies[account_id] = str(info.get("currency") or "")
        return self._currencies[account_id]

    def _caller(self, label: str) -> _ObjectCaller:
        return _ObjectCaller(self._day, label, self._token, self._max_retries, self._sleep)


class _ObjectCaller(fb.GraphCaller):
    """The Insights client's caller (retries, error classes, token scrubbing) for one object,
    with fixes for writes: they need ads_management, not ads_read."""

    def __init__(
        self,
        day: datetime.date,
        label: str,
        token: str,
        max_retries: int,
        sleep: Callable[[float], None],
    ) -> None:
        super().__init__(day, "", token, max_retries, sleep)
        self.act = label  # how messages name the object

    def _permanent(self, exc: FacebookRequestError, what: str) -> SourceError:
        code = exc.api_error_code()
        problem = f"could not {what} for {self.act}: {self.describe(exc)}"
        if code in fb.TOKEN_CODES:
            fix = (
                "generate a new system-user token with ads_management (Business Settings > "
                "System users) and set ADPERF_FACEBOOK_TOKEN"
            )
        elif code in fb.PERMISSION_CODES:
            fix = (
                f"give the token's system user ads_management on the ad account of {self.act} "
                "(Business Settings > Ad accounts > Assign people: Manage campaigns), or make "
                "this change by hand in Ads Manager; then run the apply again"
            )
        elif code == 100:
            fix = (
                f"check that {self.act} still exists and the token's system user can see it "
                "(deleted or moved objects cannot be changed); then run the apply again"
            )
        elif fb.is_transient_flag(exc) is False:
            fix = fb.NOT_TRANSIENT_FIX
        else:
            fix = "check the [facebook] settings; quote the fbtrace_id to Meta support"
        return SourceError(PLATFORM, self.day_iso, problem, fix)


def _target(rec: Recommendation, object_id: str, level: str, *, error: str) -> Target:
    return Target(
        platform=PLATFORM,
        level=level,
        object_id=object_id,
        object_name=rec.object_name if rec.object_id == object_id else None,
        action=rec.action,
        source=rec,
        budget_field=BUDGET_FIELD,
        error=error,
    )
