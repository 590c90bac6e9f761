"""Scale profiles of the sandbox world: how many days, installs, campaigns and ads it has."""

from __future__ import annotations

from dataclasses import dataclass

from adperf.errors import ConfigError


@dataclass(frozen=True)
class PlantedCampaign:
    """A campaign of the world given a chosen truth: the clear cases a closed-loop test needs.

    `index` is the campaign's place in the cast (adperf.sandbox.entities: the first two Facebook
    ad accounts' and the Google Ads customer's campaigns, `campaigns_per_account` each, in that
    order). Its payer behaviour stays what the seed drew; its true CPI is set so that its true
    365-day ROAS (`true_roas_365d` in truth/params.json) is `roas_365d`, up to the currency's
    rounding, and its ads' budgets (so its spend and installs) are `volume` times what they
    would be.
    """

    index: int
    roas_365d: float
    volume: float = 1.0


@dataclass(frozen=True)
class Profile:
    """One scale of the simulated world (installs are totals over all campaigns + organic)."""

    name: str
    days: int  # default history length when a world is first built
    installs_per_day: int
    campaigns_per_account: int
    adsets_per_campaign: int
    ads_per_adset: int
    legacy_users: int  # paid before the world's start, never in the MMP
    legacy_purchases_per_day: float
    # Simulated payers per campaign for the Monte Carlo truth; ~0.3% standard error on
    # the 180-day revenue per install, independent of the world's size.
    mc_payers: int = 200_000
    planted: tuple[PlantedCampaign, ...] = ()  # campaigns given a chosen truth


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("tiny", 40, 60, 2, 2, 2, legacy_users=40, legacy_purchases_per_day=1.0),
        # A tiny-sized world (its own cast) with three clear cases for the closed-loop test
        # (tests/bench/test_decisions_loop):
        # a Google Ads loser worth 0.1 per dollar, a Facebook winner worth 3.5 and a Facebook
        # campaign at [rules] scale_roas' default, 1.3; each with 4x the volume, so its 14-day
        # window passes min_spend and min_installs.
        Profile(
            "tiny-planted",
            40,
            60,
            2,
            2,
            2,
            legacy_users=40,
            legacy_purchases_per_day=1.0,
            planted=(
                PlantedCampaign(index=5, roas_365d=0.1, volume=4.0),
                PlantedCampaign(index=0, roas_365d=3.5, volume=4.0),
                PlantedCampaign(index=2, roas_365d=1.3, volume=4.0),
            ),
        ),  # fmt: skip
        Profile("small", 75, 400, 3, 2, 2, legacy_users=300, legacy_purchases_per_day=4.0),
        Profile("medium", 120, 4_000, 10, 2, 2, legacy_users=3_000, legacy_purchases_per_day=40.0),
        # ~1M users over a year; 3 accounts (2 Facebook, 1 Google Ads) x 150 campaigns x
        # 2 adsets x 5 ads = 4,500 ads.
        Profile("large", 365, 2_740, 150, 2, 5, legacy_users=20_000, legacy_purchases_per_day=30.0),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called `name`, or a ConfigError listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"sandbox: unknown world profile {name!r}. Fix: use one of {sorted(PROFILES)}"
        ) from None
