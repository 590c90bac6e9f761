"""The sandbox's fixed cast: ad accounts, campaigns, adsets, ads, true economics, legacy users.

Two Facebook ad accounts (USD, KRW) and one Google Ads customer (USD), each with the profile's
campaigns, then a TikTok advertiser (KRW) and an Apple Ads org (USD) with up to two campaigns
each (drawn from a generator of their own, after the others). The Google customer's first
campaign is an App campaign, which Google Ads reports at campaign level only (no ad-level rows).
As at a global app company, the accounts keep days in different zones: the USD ad account in
America/Los_Angeles (behind the default report zone, with DST), the Google customer in
Australia/Sydney (ahead, with DST), the KRW accounts and the Apple Ads org in the report's zone.
Each account's delivery is simulated per day of its own calendar.

Everything here depends on (seed, profile) only, never on the world's dates, so extending a
world in time never changes who is in it.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from adperf.errors import ConfigError
from adperf.platforms import APPLE_ADS, FACEBOOK, GOOGLE_ADS, TIKTOK
from adperf.sandbox.process import REFUND_RATE, PayerTruth, expected_purchases_and_revenue
from adperf.sandbox.profiles import PlantedCampaign, Profile

TRUTH_HORIZON_DAYS = 180.0
LONG_TRUTH_HORIZON_DAYS = 365.0  # the second truth horizon: [ltv] horizon_days' default
KRW_PER_USD_BASE = 1380.0
# Digits after the decimal point of each account currency (Facebook's "offset" of the currency).
CURRENCY_DIGITS = {"USD": 2, "KRW": 0}

# Where the USD account's campaigns (and non-KR organic users) are.
USD_COUNTRIES = ("US", "JP", "GB", "CA", "AU", "TW")
USD_COUNTRY_WEIGHTS = (0.5, 0.2, 0.1, 0.08, 0.07, 0.05)
_OBJECTIVES = (
    "AEO_Purchase",
    "MAI_Installs",
    "VO_Value",
    "Broad_25-44",
    "LAL_Payers_1pct",
    "Interest_Dating",
    "AEO_Subscribe",
    "Broad_18-34",
)
_AUDIENCES = (
    "Lookalike_1pct",
    "Lookalike_3pct",
    "Interest_Dating",
    "Interest_Travel",
    "Broad",
    "Advantage_Plus",
)
_AGES = ("18-24", "18-34", "25-34", "25-44", "35-54")
_FORMATS = ("Video15s", "Video6s", "Static", "Carousel", "Playable", "UGC")
_THEMES = ("CoupleCafe", "FirstMatch", "NightOut", "Testimonial", "Premium", "Onboarding")
_TIER_ROAS = {"good": (1.6, 2.6), "mid": (0.8, 1.2), "bad": (0.15, 0.45)}
_TIER_PAYER_RATE = {"good": (0.07, 0.12), "mid": (0.05, 0.08), "bad": (0.03, 0.05)}


def rng_for(seed: int, key: int, purpose: str) -> np.random.Generator:
    """A generator seeded by (seed, key, purpose): each day's or item's randomness is its own."""
    return np.random.default_rng([seed, key, zlib.crc32(purpose.encode("ascii"))])


@dataclass(frozen=True)
class Account:
    """An ad account: a Facebook ad account or a Google Ads customer."""

    account_id: str
    name: str
    currency: str
    platform: str = FACEBOOK
    timezone: str = ""  # IANA zone of the account's days; "" = the world's report zone


@dataclass(frozen=True)
class Campaign:
    """A campaign and its true economics (CPI in the account currency, payer behaviour)."""

    index: int
    campaign_id: str
    name: str
    account_id: str
    currency: str
    country: str
    os: str  # 'ios' | 'android'
    tier: str  # 'good' | 'mid' | 'bad': how profitable it was made to be
    true_cpi: float  # account currency
    true_cpi_usd: float
    truth: PayerTruth
    purchases_per_payer_180d: float
    revenue_per_payer_180d_usd: float
    platform: str = FACEBOOK  # a registered platform (adperf.platforms)
    app_campaign: bool = False  # a Google App campaign: reported at campaign level only


@dataclass(frozen=True)
class Ad:
    """An ad, its adset, and its delivery economics in the account currency."""

    index: int
    campaign_index: int
    adset_id: str
    adset_name: str
    ad_id: str
    ad_name: str
    daily_budget: float
    cpm: float
    ctr: float
    pause_rate: float  # chance of a zero-delivery day


@dataclass(frozen=True)
class Organic:
    """Organic installs: their share of all installs and their payer behaviour."""

    share: float
    kr_share: float
    truth: PayerTruth
    purchases_per_payer_180d: float
    revenue_per_payer_180d_usd: float


@dataclass(frozen=True)
class Legacy:
    """Users who installed before the world's start (not in the MMP) and still pay now and then."""

    user_key: npt.NDArray[np.uint64]
    country: npt.NDArray[np.str_]
    os: npt.NDArray[np.str_]
    days_before_start: npt.NDArray[np.int64]
    nu: npt.NDArray[np.float64]  # Gamma-Gamma rate, with the organic truth's p
    weight: npt.NDArray[np.float64]  # how often each pays, normalized


@dataclass(frozen=True)
class Entities:
    """Everything in the world that does not depend on dates."""

    accounts: tuple[Account, ...]
    campaigns: tuple[Campaign, ...]
    ads: tuple[Ad, ...]
    organic: Organic
    legacy: Legacy


def _fb_ids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """`n` new 18-digit ids starting with '238', like real Facebook campaign/adset/ad ids."""
    out: list[str] = []
    while len(out) < n:
        candidate = f"238{int(rng.integers(0, 10**15)):015d}"
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


def _google_ids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """`n` new 11-digit ids, like Google Ads campaign / ad group / ad ids."""
    out: list[str] = []
    while len(out) < n:
        candidate = str(int(rng.integers(10**10, 10**11)))
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


def _payer_truth(rng: np.random.Generator, payer_rate: float) -> PayerTruth:
    """Random but realistic payer parameters; `v` is a placeholder set once the mean is chosen."""
    return PayerTruth(
        payer_rate=payer_rate,
        fast_share=float(rng.uniform(0.6, 0.8)),
        fast_mean_days=float(rng.uniform(0.3, 1.0)),
        slow_mean_days=float(rng.uniform(8.0, 15.0)),
        r=float(rng.uniform(0.5, 1.2)),
        alpha=float(rng.uniform(10.0, 40.0)),
        a=float(rng.uniform(0.5, 1.0)),
        b=float(rng.uniform(2.0, 6.0)),
        p=float(rng.uniform(3.0, 6.0)),
        q=float(rng.uniform(3.0, 6.0)),
        v=1.0,
    )


def _with_mean_purchase(truth: PayerTruth, mean_usd: float) -> PayerTruth:
    """The same truth with Gamma-Gamma `v` set so that E[z] = mean_usd."""
    return PayerTruth(**{**truth.__dict__, "v": mean_usd * (truth.q - 1.0) / truth.p})


def _monte_carlo(seed: int, key: int, truth: PayerTruth, n: int) -> tuple[float, float]:
    return expected_purchases_and_revenue(
        truth, rng_for(seed, key, "truth-monte-carlo"), n, TRUTH_HORIZON_DAYS
    )


@functools.lru_cache(maxsize=1024)
def revenue_per_payer_365d(seed: int, key: int, truth: PayerTruth, profile: Profile) -> float:
    """Monte Carlo gross USD revenue per payer within 365 days (the truth of `true_roas_365d`),
    on a quarter of the profile's 180-day draws (error ~1%); once per process: a closed loop
    extends its world every day."""
    _, revenue = expected_purchases_and_revenue(
        truth,
        rng_for(seed, key, "truth-monte-carlo-365"),
        max(profile.mc_payers // 4, 1),
        LONG_TRUTH_HORIZON_DAYS,
    )
    return revenue


def _planted(c: Campaign, plant: PlantedCampaign, seed: int, profile: Profile) -> Campaign:
    """The campaign at its planted true 365-day ROAS: its CPI is set, its payers stay."""
    if plant.roas_365d <= 0 or plant.volume <= 0:
        raise ConfigError(
            f"sandbox: profile {profile.name!r} plants campaign {plant.index} at ROAS "
            f"{plant.roas_365d}, volume {plant.volume}. Fix: both must be positive"
        )
    revenue = revenue_per_payer_365d(seed, c.index, c.truth, profile)
    cpi_usd = c.truth.payer_rate * revenue * (1.0 - REFUND_RATE) / plant.roas_365d
    if c.currency == "KRW":
        true_cpi = float(round(cpi_usd * KRW_PER_USD_BASE))
        return dataclasses.replace(c, true_cpi=true_cpi, true_cpi_usd=true_cpi / KRW_PER_USD_BASE)
    return dataclasses.replace(c, true_cpi=round(cpi_usd, 2), true_cpi_usd=round(cpi_usd, 2))


def _campaign(
    rng: np.random.Generator,
    seed: int,
    profile: Profile,
    index: int,
    account: Account,
    name: str,
    country: str,
    os_name: str,
    tier: str,
    new_ids: Callable[[np.random.Generator, int, set[str]], list[str]],
    taken: set[str],
    *,
    app_campaign: bool = False,
    mc_key: int | None = None,
) -> Campaign:
    """A campaign of `account` with true economics that land it on its tier's 180-day ROAS."""
    key = index if mc_key is None else mc_key
    truth = _payer_truth(rng, float(rng.uniform(*_TIER_PAYER_RATE[tier])))
    target_roas = float(rng.uniform(*_TIER_ROAS[tier]))
    cpi_usd = float(rng.uniform(1.5, 6.0)) * (1.3 if os_name == "ios" else 1.0)
    # Choose the mean purchase (then, if it had to be clamped, the CPI) so that the campaign
    # lands on its tier's 180-day ROAS: some clearly profitable, some clearly not.
    count, _ = _monte_carlo(seed, key, _with_mean_purchase(truth, 10.0), profile.mc_payers // 4)
    net_per_install_per_usd = truth.payer_rate * count * (1.0 - REFUND_RATE)
    mean_usd = float(np.clip(target_roas * cpi_usd / net_per_install_per_usd, 5.0, 30.0))
    cpi_usd = float(np.clip(net_per_install_per_usd * mean_usd / target_roas, 0.8, 12.0))
    truth = _with_mean_purchase(truth, mean_usd)
    if account.currency == "KRW":
        true_cpi = float(round(cpi_usd * KRW_PER_USD_BASE))
        cpi_usd = true_cpi / KRW_PER_USD_BASE
    else:
        true_cpi = round(cpi_usd, 2)
        cpi_usd = true_cpi
    purchases, revenue = _monte_carlo(seed, key, truth, profile.mc_payers)
    return Campaign(
        index=index,
        campaign_id=new_ids(rng, 1, taken)[0],
        name=name,
        account_id=account.account_id,
        currency=account.currency,
        country=country,
        os=os_name,
        tier=tier,
        true_cpi=true_cpi,
        true_cpi_usd=cpi_usd,
        truth=truth,
        purchases_per_payer_180d=purchases,
        revenue_per_payer_180d_usd=revenue,
        platform=account.platform,
        app_campaign=app_campaign,
    )


@functools.lru_cache(maxsize=4)
def entities_of(seed: int, profile: Profile) -> Entities:
    """build_entities, once per process: its Monte Carlo truths take seconds, and a closed loop
    asks every day (the world's extension, and each platform's base objects). Entities are
    frozen; nobody edits their arrays."""
    return build_entities(seed, profile)


def build_entities(seed: int, profile: Profile) -> Entities:
    """Accounts, campaigns, ads, organic and legacy users of the world (seed, profile)."""
    rng = rng_for(seed, 0, f"entities-{profile.name}")
    accounts = (
        Account(
            str(int(rng.integers(10**15, 10**16))),
            "adperf Demo Global (USD)",
            "USD",
            timezone="America/Los_Angeles",
        ),
        Account(str(int(rng.integers(10**14, 10**15))), "adperf Demo KR (KRW)", "KRW"),
        # A Google Ads customer id: 10 digits.
        Account(
            str(int(rng.integers(10**9, 10**10))),
            "adperf Demo Google (USD)",
            "USD",
            GOOGLE_ADS,
            timezone="Australia/Sydney",
        ),
    )
    n_campaigns = len(accounts) * profile.campaigns_per_account
    tiers = [("good", "bad", "mid")[i % 3] for i in range(n_campaigns)]
    tiers = [tiers[i] for i in rng.permutation(n_campaigns)]
    taken: set[str] = set()
    names: set[str] = set()
    campaigns: list[Campaign] = []
    for i in range(n_campaigns):
        account = accounts[i // profile.campaigns_per_account]
        google = account.platform == GOOGLE_ADS
        # The Google customer's first campaign is an App campaign (campaign-level reporting).
        app_campaign = google and i % profile.campaigns_per_account == 0
        country = (
            "KR"
            if account.currency == "KRW"
            else str(rng.choice(USD_COUNTRIES, p=USD_COUNTRY_WEIGHTS))
        )
        os_name = "ios" if rng.random() < 0.45 else "android"
        name = f"{country}_{'iOS' if os_name == 'ios' else 'Android'}_{rng.choice(_OBJECTIVES)}"
        if google:
            name = f"{'UAC' if app_campaign else 'GS'}_{name}"
        suffix = 2
        base = name
        while name in names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        names.add(name)
        new_ids = _google_ids if google else _fb_ids
        campaigns.append(
            _campaign(
                rng, seed, profile, i, account, name, country, os_name, tiers[i], new_ids, taken,
                app_campaign=app_campaign,
            )
        )  # fmt: skip

    volume = np.ones(n_campaigns)
    for plant in profile.planted:
        if not 0 <= plant.index < n_campaigns:
            raise ConfigError(
                f"sandbox: profile {profile.name!r} plants campaign {plant.index}, but its "
                f"Facebook and Google Ads cast has campaigns 0-{n_campaigns - 1}. Fix: plant one "
                "of those"
            )
        campaigns[plant.index] = _planted(campaigns[plant.index], plant, seed, profile)
        volume[plant.index] = plant.volume

    organic_share = float(rng.uniform(0.25, 0.35))
    paid_per_day = profile.installs_per_day * (1.0 - organic_share)
    per_campaign = profile.adsets_per_campaign * profile.ads_per_adset
    weights = rng.lognormal(0.0, 0.5, n_campaigns * per_campaign)
    weights /= weights.sum()
    ads: list[Ad] = []
    for c in campaigns:
        usd_per_unit = 1.0 if c.currency == "USD" else 1.0 / KRW_PER_USD_BASE
        new_ids = _google_ids if c.platform == GOOGLE_ADS else _fb_ids
        for s in range(profile.adsets_per_campaign):
            adset_id = new_ids(rng, 1, taken)[0]
            adset_name = f"{c.country}_{_AGES[s % len(_AGES)]}_{rng.choice(_AUDIENCES)}"
            for j in range(profile.ads_per_adset):
                idx = len(ads)
                pause_rate = 0.25 if rng.random() < 0.1 else 0.03
                expected_installs = paid_per_day * float(weights[idx]) * volume[c.index]
                ads.append(
                    Ad(
                        index=idx,
                        campaign_index=c.index,
                        adset_id=adset_id,
                        adset_name=adset_name,
                        ad_id=new_ids(rng, 1, taken)[0],
                        ad_name=f"{rng.choice(_FORMATS)}_{rng.choice(_THEMES)}_v{j + 1}",
                        daily_budget=expected_installs * c.true_cpi / (1.0 - pause_rate),
                        cpm=float(rng.uniform(4.0, 14.0)) / usd_per_unit,
                        ctr=float(rng.uniform(0.008, 0.025)),
                        pause_rate=pause_rate,
                    )
                )

    organic_truth = _payer_truth(rng, float(rng.uniform(0.04, 0.06)))
    organic_truth = _with_mean_purchase(organic_truth, float(rng.uniform(8.0, 15.0)))
    purchases, revenue = _monte_carlo(seed, n_campaigns, organic_truth, profile.mc_payers)
    organic = Organic(organic_share, 0.6, organic_truth, purchases, revenue)

    n = profile.legacy_users
    legacy = Legacy(
        user_key=rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True),
        country=np.where(
            rng.random(n) < 0.6, "KR", rng.choice(USD_COUNTRIES, n, p=USD_COUNTRY_WEIGHTS)
        ),
        os=np.where(rng.random(n) < 0.45, "ios", "android"),
        days_before_start=rng.integers(30, 700, size=n).astype(np.int64),
        nu=rng.gamma(organic_truth.q, 1.0 / organic_truth.v, size=n),
        weight=(w := rng.gamma(0.7, 1.0, size=n)) / w.sum(),
    )
    more = _more_platforms(seed, profile, len(campaigns), len(ads), taken, paid_per_day)
    return Entities(
        (*accounts, *more[0]), (*campaigns, *more[1]), (*ads, *more[2]), organic, legacy
    )


# The platforms added after the first three accounts: their own generator, built after every
# draw of the others, so a world of a given seed keeps its Facebook and Google Ads cast.
# TikTok buys in KRW for Korea, Apple Ads in USD; each adds about this share of paid installs.
_MORE_SHARE = 0.12


def _tiktok_ids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """`n` new 19-digit ids starting with '17', like TikTok campaign / ad group / ad ids."""
    return _new_ids(rng, n, taken, lambda: f"17{int(rng.integers(0, 10**17)):017d}")


def _apple_ids(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """`n` new 9-digit ids, like Apple Ads campaign and ad group ids."""
    return _new_ids(rng, n, taken, lambda: str(int(rng.integers(10**8, 10**9))))


def _new_ids(
    rng: np.random.Generator, n: int, taken: set[str], draw: Callable[[], str]
) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        candidate = draw()
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


def _more_platforms(
    seed: int,
    profile: Profile,
    first_campaign: int,
    first_ad: int,
    taken: set[str],
    paid_per_day: float,
) -> tuple[list[Account], list[Campaign], list[Ad]]:
    """TikTok's advertiser and Apple Ads' org with their campaigns, ad groups and ads."""
    rng = rng_for(seed, 0, f"entities-more-{profile.name}")
    accounts = [
        Account(f"7{int(rng.integers(10**17, 10**18)):018d}", "Demo TikTok (KRW)", "KRW", TIKTOK),
        Account(str(int(rng.integers(10**6, 10**7))), "Demo Apple Ads (USD)", "USD", APPLE_ADS),
    ]
    per_account = min(profile.campaigns_per_account, 2)
    campaigns: list[Campaign] = []
    ads: list[Ad] = []
    for account in accounts:
        apple = account.platform == APPLE_ADS
        new_ids = _apple_ids if apple else _tiktok_ids
        for k in range(per_account):
            index = first_campaign + len(campaigns)
            country = "KR" if account.currency == "KRW" else "US"
            os_name = "ios" if apple else ("android" if k % 2 else "ios")
            prefix = "ASA" if apple else "TT"
            name = f"{prefix}_{country}_{'iOS' if os_name == 'ios' else 'Android'}_{k + 1}"
            tier = ("good", "bad", "mid")[(index + k) % 3]
            c = _campaign(
                rng, seed, profile, index, account, name, country, os_name, tier, new_ids, taken,
                mc_key=100_000 + index,
            )  # fmt: skip
            campaigns.append(c)
            # Apple Ads reports ad groups, not ads: one "ad" per ad group, with its id.
            per_adset = 1 if apple else profile.ads_per_adset
            n_ads = profile.adsets_per_campaign * per_adset
            installs = paid_per_day * _MORE_SHARE / per_account / n_ads
            usd_per_unit = 1.0 if c.currency == "USD" else 1.0 / KRW_PER_USD_BASE
            for s in range(profile.adsets_per_campaign):
                adset_id = new_ids(rng, 1, taken)[0]
                adset_name = f"{country}_{_AGES[s % len(_AGES)]}_{rng.choice(_AUDIENCES)}"
                for j in range(per_adset):
                    pause_rate = 0.03
                    ad_id = adset_id if apple else new_ids(rng, 1, taken)[0]
                    ads.append(
                        Ad(
                            index=first_ad + len(ads),
                            campaign_index=index,
                            adset_id=adset_id,
                            adset_name=adset_name,
                            ad_id=ad_id,
                            ad_name=adset_name if apple else f"{rng.choice(_FORMATS)}_v{j + 1}",
                            daily_budget=installs * c.true_cpi / (1.0 - pause_rate),
                            cpm=float(rng.uniform(4.0, 14.0)) / usd_per_unit,
                            ctr=float(rng.uniform(0.008, 0.025)),
                            pause_rate=pause_rate,
                        )
                    )
    return accounts, campaigns, ads
