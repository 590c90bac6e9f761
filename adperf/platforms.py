"""The ad platforms, one entry each: the only module that spells their names.

An entry says what belongs to the platform: its luigi.cfg section (the `tasks.config` class of
that name), the key listing its accounts there, its default restatement lookback, the MMP media
sources its installs arrive under, the levels its action client changes, its colour, and where
its spend fetch and action client live (modules loaded on first use: importing the registry
never imports an ad SDK). Tasks, attribution, the report, the chart, the sandbox and
`adperf actions` read this table; adding a platform is one entry here plus its source module,
its fake, its config class and its endpoint binding (tasks/resources.py).

Plain Python (no luigi): `tasks/` maps an entry to its config class by `section`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

FACEBOOK = "facebook"
GOOGLE_ADS = "google_ads"
TIKTOK = "tiktok"
APPLE_ADS = "apple_ads"


@dataclass(frozen=True)
class Platform:
    """One ad platform and what belongs to it."""

    name: str  # the `platform` value of every dataset and report table
    label: str  # how people call it (report, chart legend)
    section: str  # its luigi.cfg section, the lowercase tasks.config class of that name
    accounts_key: str  # the key of `section` that lists the accounts to read
    lookback_days: int  # default days re-pulled each run (the platform restates them)
    media_sources: tuple[str, ...]  # the MMP's "Media Source" values of its installs
    colour: str  # its brand colour in charts
    fetch: str  # "module:function" of its spend fetch (AD_SPEND rows)
    actions: str | None = None  # "module:class" of its `adperf.actions.Platform` client
    action_levels: tuple[str, ...] = ()  # levels whose objects the client changes
    priority: int = 0  # luigi priority of its pulls (the longest pulls start first)

    def load_fetch(self) -> Any:
        """The spend fetch function (imports its module, and so its SDK)."""
        return _load(self.fetch)

    def load_actions(self) -> Any:
        """The action client class; ValueError naming the platform when it has none."""
        if self.actions is None:
            raise ValueError(f"{self.name} has no action client: its objects cannot be changed")
        return _load(self.actions)


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_ENTRIES: tuple[Platform, ...] = (
    Platform(
        name=FACEBOOK,
        label="Facebook",
        section="facebook",
        accounts_key="ad_account_ids",
        lookback_days=28,
        media_sources=("Facebook Ads",),
        colour="#1877F2",
        fetch="adperf.sources.facebook:fetch_facebook_spend",
        actions="adperf.actions.facebook:FacebookAdsets",
        action_levels=("campaign", "adset"),
        # Facebook's pulls are the longest tasks of a cold run (28-day windows): started first,
        # they run beside the MMP chain instead of after it (13 s each on the large world).
        priority=20,
    ),
    Platform(
        name=GOOGLE_ADS,
        label="Google Ads",
        section="google_ads",
        accounts_key="customer_ids",
        lookback_days=14,
        media_sources=("googleadwords_int",),
        colour="#EA4335",
        fetch="adperf.sources.google_ads:fetch_google_ads_spend",
        actions="adperf.actions.google_ads:GoogleAdsCampaigns",
        action_levels=("campaign",),
    ),
    Platform(
        name=TIKTOK,
        label="TikTok Ads",
        section="tiktok",
        accounts_key="advertiser_ids",
        lookback_days=7,
        # AppsFlyer's integration id of TikTok For Business.
        media_sources=("bytedanceglobal_int",),
        colour="#25F4EE",
        fetch="adperf.sources.tiktok:fetch_tiktok_spend",
        actions="adperf.actions.tiktok:TikTokAdGroups",
        action_levels=("campaign", "adset"),
    ),
    Platform(
        name=APPLE_ADS,
        label="Apple Ads",
        section="apple_ads",
        accounts_key="org_ids",
        lookback_days=7,
        media_sources=("Apple Search Ads",),
        colour="#8E8E93",
        fetch="adperf.sources.apple_ads:fetch_apple_ads_spend",
        actions="adperf.actions.apple_ads:AppleAdsCampaigns",
        action_levels=("campaign",),
    ),
)

PLATFORMS: dict[str, Platform] = {p.name: p for p in _ENTRIES}
#: Every registered platform's name, in registry order.
NAMES: tuple[str, ...] = tuple(PLATFORMS)


def get(name: str) -> Platform:
    """The entry of `name`; ValueError listing the registered names otherwise."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown ad platform {name!r}; registered: {', '.join(NAMES)}") from None


def entries() -> tuple[Platform, ...]:
    """Every entry, in registry order."""
    return _ENTRIES


def media_source_map() -> dict[str, str]:
    """The MMP's media source -> platform name, for every registered platform."""
    return {source: p.name for p in _ENTRIES for source in p.media_sources}


def colours() -> dict[str, str]:
    """Platform name -> chart colour."""
    return {p.name: p.colour for p in _ENTRIES}


def with_actions() -> tuple[str, ...]:
    """The platforms with an action client."""
    return tuple(p.name for p in _ENTRIES if p.actions is not None)
