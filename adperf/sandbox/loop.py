"""The sandbox as a closed loop: what the fakes' editable objects do to the world's delivery.

An action applied through the fake Graph API, Google Ads, TikTok or Apple Ads (`adperf actions
apply`) changes the fake's JSON object state (`adperf.sandbox.ad_objects`'s files). When the world
is built or extended, each new day reads that state once ("controls"): an ad's budget factor is
its adset's `daily_budget` (Facebook), its campaign budget's `amount_micros` (Google Ads), its ad
group's `budget` (TikTok) or its campaign's `dailyBudgetAmount` (Apple Ads) over the budget the
world started with; 0 when the adset, its campaign, the Google or Apple campaign or the TikTok ad
group is paused. The day's spend
follows the budget, and installs follow with diminishing returns: the cost per install grows as
`factor ** CPI_ELASTICITY` (a bigger budget reaches past the audience that converts best).

The controls each day was built with are kept in the world (`controls.json`, sparse: only ads
whose factor is not 1), and an extension reuses them for the days the world already had: past
days never change. Without any edit every factor is 1 and the world is the one it always was.

Drift (`drift=True`, opt-in, stored in world.json): some campaigns' payers fade (creative
fatigue: the payer rate decays towards FATIGUE_FLOOR of itself from a day on), and some
campaigns only start delivering some days into the world (new campaigns). Both depend on
(seed, profile) and the day's offset from the world's start only, so extensions agree.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from adperf.platforms import APPLE_ADS, FACEBOOK, GOOGLE_ADS, TIKTOK
from adperf.sandbox.ad_objects import objects_path, sandbox_objects
from adperf.sandbox.entities import Entities, rng_for
from adperf.sandbox.profiles import Profile

FloatArray = npt.NDArray[np.float64]

# CPI = true CPI x factor ** CPI_ELASTICITY: doubling a budget raises its CPI by ~27%, so a
# campaign's ROAS falls as it is scaled, and scaling a winner forever stops paying.
CPI_ELASTICITY = 0.35
FATIGUE_FLOOR = 0.4  # a fatigued campaign's payer rate tends to this share of its own
CONTROLS_FILE = "controls.json"


@dataclass(frozen=True)
class Drift:
    """Per campaign: from which day offset its value fades (and how fast), from which it runs."""

    fatigue_start: FloatArray  # day offset from the world's start; inf = never fades
    fatigue_days: FloatArray  # e-folding time of the fade, days
    launch: FloatArray  # first day offset with delivery; 0 = from the start

    def fatigue(self, offset: int) -> FloatArray:
        """Per campaign: the payer-rate multiplier on day `offset` of the world."""
        past = np.maximum(offset - self.fatigue_start, 0.0)
        past = np.where(np.isfinite(self.fatigue_start), past, 0.0)
        return FATIGUE_FLOOR + (1.0 - FATIGUE_FLOOR) * np.exp(-past / self.fatigue_days)

    def launched(self, offset: int) -> npt.NDArray[np.bool_]:
        """Per campaign: delivering on day `offset`."""
        return offset >= self.launch


def build_drift(seed: int, profile: Profile, ent: Entities, enabled: bool) -> Drift:
    """The world's drift: none unless `enabled`; else a third of the campaigns fade (starting
    around the end of the default history) and a sixth start late (after it)."""
    n = len(ent.campaigns)
    never = Drift(np.full(n, np.inf), np.full(n, 30.0), np.zeros(n))
    if not enabled:
        return never
    # Its own generator: entities and every day's draws stay what they are without drift.
    rng = rng_for(seed, 0, f"drift-{profile.name}")
    order = rng.permutation(n)
    n_fade, n_late = max(1, n // 3), max(1, n // 6)
    fade, late = order[:n_fade], order[n_fade : n_fade + n_late]
    start = np.full(n, np.inf)
    start[fade] = rng.uniform(profile.days - 15, profile.days + 45, n_fade)
    days = np.full(n, 30.0)
    days[fade] = rng.uniform(20.0, 50.0, n_fade)
    launch = np.zeros(n)
    launch[late] = np.floor(rng.uniform(profile.days + 5, profile.days + 40, n_late))
    return Drift(start, days, launch)


def current_factors(world_root: Path, meta: dict[str, Any], ent: Entities) -> FloatArray:
    """Per ad: its budget factor now, from the fakes' object state files (1 where unedited)."""
    out = np.ones(len(ent.ads))
    platforms = (FACEBOOK, GOOGLE_ADS, TIKTOK, APPLE_ADS)
    paths = {p: objects_path(world_root, meta, p) for p in platforms}
    if not any(p.exists() for p in paths.values()):  # nobody edited anything
        return out
    base = _base_objects(int(meta["seed"]), str(meta["profile"]))
    now = {p: _read(path, base[p]) for p, path in paths.items()}
    for ad in ent.ads:
        c = ent.campaigns[ad.campaign_index]
        factor = _factor(c.platform, c.campaign_id, ad.adset_id, base, now)
        if factor is not None:
            out[ad.index] = factor
    return out


@functools.cache
def _base_objects(seed: int, profile: str) -> dict[str, dict[str, Any]]:
    """Each platform's objects as the world started them (the base of every factor); cached:
    building them takes the entities' time, every extended day asks. Read only."""
    from adperf.sandbox import fake_apple_ads, fake_tiktok

    fb, google = sandbox_objects({"seed": seed, "profile": profile})
    return {
        FACEBOOK: fb,
        GOOGLE_ADS: google,
        TIKTOK: fake_tiktok.sandbox_objects(seed, profile),
        APPLE_ADS: fake_apple_ads.sandbox_objects(seed, profile),
    }


def _factor(
    platform: str,
    campaign_id: str,
    adset_id: str,
    base: dict[str, dict[str, Any]],
    now: dict[str, dict[str, Any]],
) -> float | None:
    """One ad's budget factor from its platform's objects (None: no such object, unchanged)."""
    if platform == FACEBOOK:
        adset = now[FACEBOOK]["adsets"].get(adset_id)
        camp = now[FACEBOOK]["campaigns"].get(campaign_id, {})
        if adset is None:
            return None
        live = adset.get("status") == "ACTIVE" and camp.get("status", "ACTIVE") == "ACTIVE"
        start = base[FACEBOOK]["adsets"][adset_id]["daily_budget"]
        return float(adset["daily_budget"]) / float(start) if live else 0.0
    if platform == GOOGLE_ADS:
        camp = now[GOOGLE_ADS]["campaigns"].get(campaign_id)
        if camp is None:
            return None
        start_budget = base[GOOGLE_ADS]["campaigns"][campaign_id]["budget_id"]
        start = base[GOOGLE_ADS]["budgets"][start_budget]["amount_micros"]
        amount = now[GOOGLE_ADS]["budgets"][camp["budget_id"]]["amount_micros"]
        return float(amount) / float(start) if camp.get("status") == "ENABLED" else 0.0
    if platform == TIKTOK:
        group = now[TIKTOK]["adgroups"].get(adset_id)
        if group is None:
            return None
        start = Decimal(base[TIKTOK]["adgroups"][adset_id]["budget"])
        live = group.get("operation_status") == "ENABLE"
        return float(Decimal(str(group["budget"])) / start) if live else 0.0
    if platform == APPLE_ADS:
        camp = now[APPLE_ADS]["campaigns"].get(campaign_id)
        if camp is None:
            return None
        start = Decimal(base[APPLE_ADS]["campaigns"][campaign_id]["dailyBudgetAmount"]["amount"])
        amount = Decimal(str(camp["dailyBudgetAmount"]["amount"]))
        return float(amount / start) if camp.get("status") == "ENABLED" else 0.0
    return None


def _read(path: Path, base: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return base
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def read_ledger(world_root: Path) -> dict[str, dict[int, float]]:
    """The controls the world's days were built with: {date: {ad index: factor != 1}}."""
    path = Path(world_root) / CONTROLS_FILE
    if not path.exists():
        return {}
    raw: dict[str, dict[str, float]] = json.loads(path.read_text(encoding="utf-8"))
    return {day: {int(k): float(v) for k, v in ads.items()} for day, ads in raw.items()}


def write_ledger(world_root: Path, ledger: dict[str, dict[int, float]]) -> None:
    """controls.json (inside a world being built: the world's swap makes it atomic)."""
    doc = {day: {str(k): v for k, v in sorted(ads.items())} for day, ads in sorted(ledger.items())}
    (Path(world_root) / CONTROLS_FILE).write_text(json.dumps(doc, indent=0) + "\n", "utf-8")


def factors_for(day: str, ledger: dict[str, dict[int, float]], now: FloatArray) -> FloatArray:
    """Per ad: the day's factors from the ledger when the day was built before, else `now`."""
    if day not in ledger:
        return now
    out = np.ones(len(now))
    for k, v in ledger[day].items():
        out[k] = v
    return out


def sparse(factors: FloatArray) -> dict[int, float]:
    """The ledger entry of one day: ads whose factor is not 1."""
    return {int(k): float(factors[k]) for k in np.flatnonzero(factors != 1.0)}


def cpi_factor(factors: FloatArray) -> FloatArray:
    """Per ad: the CPI multiplier of its budget factor (1 where paused: nothing is bought)."""
    safe = np.where(factors > 0, factors, 1.0)
    return np.asarray(safe**CPI_ELASTICITY, dtype=np.float64)
